"""TrialStore: append-only trials, crash-cut lines, atomic state."""
import json
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np

from spinenet.search import trials as trials_lib


class TrialStoreTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)
    self.dir = os.path.join(self.root, 'search', 'nested')

  def test_creates_the_directory_and_names_trial_dirs(self):
    store = trials_lib.TrialStore(self.dir)
    self.assertTrue(os.path.isdir(self.dir))
    self.assertEqual(store.trial_dir(7), os.path.join(self.dir, 'trials', '00007'))
    self.assertEqual(store.read_trials(), [])
    self.assertIsNone(store.load_state())

  def test_trials_round_trip_in_order_one_json_line_each(self):
    store = trials_lib.TrialStore(self.dir)
    records = [{'id': 2, 'reward': 0.5, 'arch': [[3, 'bottleneck']]},
               {'id': 0, 'reward': None, 'error': 'diverged'}]
    for record in records:
      store.append_trial(record)
    self.assertEqual(store.read_trials(), records)
    with open(os.path.join(self.dir, trials_lib.TRIALS_FILE)) as f:
      lines = f.read().splitlines()
    self.assertEqual([json.loads(l) for l in lines], records)
    self.assertEqual(trials_lib.TrialStore(self.dir).read_trials(), records)

  def test_a_line_cut_by_a_crash_is_dropped_on_open(self):
    store = trials_lib.TrialStore(self.dir)
    store.append_trial({'id': 0})
    with open(store.trials_path, 'a') as f:
      f.write('{"id": 1, "rew')
    with self.assertLogs('absl', level='WARNING') as logs:
      reopened = trials_lib.TrialStore(self.dir)
    self.assertIn('dropping an unfinished last line (14 bytes)', logs.output[0])
    self.assertEqual(reopened.read_trials(), [{'id': 0}])
    reopened.append_trial({'id': 1})
    self.assertEqual(reopened.read_trials(), [{'id': 0}, {'id': 1}])

  def test_a_cut_first_line_leaves_an_empty_file(self):
    os.makedirs(self.dir)
    with open(os.path.join(self.dir, trials_lib.TRIALS_FILE), 'w') as f:
      f.write('{"id"')
    store = trials_lib.TrialStore(self.dir)
    self.assertEqual(os.path.getsize(store.trials_path), 0)
    self.assertEqual(store.read_trials(), [])

  def test_a_corrupt_complete_line_is_an_error_naming_the_line(self):
    store = trials_lib.TrialStore(self.dir)
    store.append_trial({'id': 0})
    with open(store.trials_path, 'a') as f:
      f.write('not json\n\n')
    store.append_trial({'id': 2})
    with self.assertRaisesRegex(ValueError, r'trials.jsonl:2: not a JSON line'):
      store.read_trials()

  def test_state_round_trip_replaces_the_old_state(self):
    store = trials_lib.TrialStore(self.dir)
    store.save_state({'next_id': 3, 'pending': [1, 2]},
                     {'rng': np.arange(4, dtype=np.uint32), 'w': np.ones((2, 3))})
    store.save_state({'next_id': 5, 'pending': []},
                     {'rng': np.array([9], np.uint32)})
    meta, arrays = trials_lib.TrialStore(self.dir).load_state()
    self.assertEqual(meta, {'next_id': 5, 'pending': []})
    self.assertEqual(sorted(arrays), ['rng'])
    np.testing.assert_array_equal(arrays['rng'], [9])
    self.assertEqual(arrays['rng'].dtype, np.uint32)
    self.assertEqual(sorted(os.listdir(self.dir)), [trials_lib.STATE_FILE])


if __name__ == '__main__':
  absltest.main()
