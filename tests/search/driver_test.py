"""Search driver: parallel workers, records, resume, dead workers, failures.

The trials are cheap stand-ins (tests/search/search_fakes.py) run in real
spawned worker processes.
"""
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest

from spinenet.search import driver
from spinenet.search import space as space_lib
from spinenet.search import surrogate
from spinenet.search import trials as trials_lib
import search_fakes

_SPACE = space_lib.SearchSpace()


def _always_dies_on_trial_1(block_specs, trial_dir):
  """Trial 1's worker process dies every time (as if killed)."""
  if int(os.path.basename(trial_dir)) == 1:
    os._exit(3)  # pylint: disable=protected-access
  return search_fakes.closeness_trial(block_specs, trial_dir)


def _ignores_sigterm(block_specs, trial_dir):
  """A trial that shrugs off SIGTERM and never ends; says when it started."""
  del block_specs
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  open(os.path.join(trial_dir, 'started'), 'w').close()
  time.sleep(600)


def _records(search_dir):
  return trials_lib.TrialStore(search_dir).read_trials()


def _by_id(records):
  return {r['trial']: r for r in records}


class DriverTest(absltest.TestCase):

  def create_tempdir(self):
    path = tempfile.mkdtemp(prefix='search_test_')
    self.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path

  def test_records_every_trial_once_with_parallel_workers(self):
    search_dir = self.create_tempdir()
    bests = []
    result = driver.run_search(
        search_fakes.closeness_trial, search_dir, num_trials=6, num_workers=2,
        options=driver.SearchOptions(algorithm='random', threads_per_worker=3),
        on_best=bests.append, poll_seconds=0.2)
    records = _records(search_dir)
    self.assertEqual(sorted(r['trial'] for r in records), list(range(6)))
    self.assertEqual({r['worker'] for r in records}, {0, 1})
    for r in records:
      arch = space_lib.Architecture.from_dict(r['architecture'])
      specs = _SPACE.to_block_specs(arch)
      self.assertEqual([tuple(s[:2]) + (tuple(s[2]), s[3]) for s in r['block_specs']],
                       list(specs))
      self.assertAlmostEqual(r['reward'], surrogate.closeness(specs))
      self.assertEqual(r['status'], 'ok')
      self.assertGreaterEqual(r['seconds'], 0)
      with open(os.path.join(search_dir, 'trials', f"{r['trial']:05d}", 'ran')) as f:
        self.assertEqual(f.read(), '3')  # the worker's thread limit
    self.assertEqual(result['best'], max(records, key=lambda r: r['reward']))
    self.assertEqual(bests[-1], result['best'])
    self.assertEqual([b['reward'] for b in bests],
                     sorted(b['reward'] for b in bests))
    state, _ = trials_lib.TrialStore(search_dir).load_state()
    self.assertEqual(state['pending'], {})
    self.assertEqual(sorted(state['told']), list(range(6)))

  def test_a_tie_goes_to_the_lower_trial_id_whatever_finished_first(self):
    search_dir = self.create_tempdir()
    bests = []
    result = driver.run_search(
        search_fakes.tied_trial_first_is_slowest, search_dir, num_trials=3,
        num_workers=2, options=driver.SearchOptions(algorithm='random'),
        on_best=bests.append, poll_seconds=0.2)
    records = _records(search_dir)
    self.assertNotEqual(records[0]['trial'], 0)  # trial 0 really finished late
    self.assertEqual(result['best']['trial'], 0)
    self.assertEqual(result['best'], driver.best_trial(records))
    self.assertEqual(bests[-1]['trial'], 0)

  def test_resume_continues_the_same_search(self):
    options = driver.SearchOptions(algorithm='reinforce', seed=2)
    straight = self.create_tempdir()
    driver.run_search(search_fakes.closeness_trial, straight, 5, 1, options)
    resumed = self.create_tempdir()
    driver.run_search(search_fakes.closeness_trial, resumed, 2, 1, options)
    result = driver.run_search(search_fakes.closeness_trial, resumed, 5, 1, options)
    self.assertEqual(result['num_new'], 3)
    a, b = _by_id(_records(straight)), _by_id(_records(resumed))
    self.assertEqual(sorted(b), list(range(5)))
    for i in range(5):
      self.assertEqual(a[i]['architecture'], b[i]['architecture'])
      self.assertEqual(a[i]['reward'], b[i]['reward'])
    again = driver.run_search(search_fakes.closeness_trial, resumed, 5, 1, options)
    self.assertEqual(again['num_new'], 0)
    self.assertLen(_records(resumed), 5)

  def test_trial_of_a_dead_worker_is_rerun_with_the_same_id(self):
    options = driver.SearchOptions(algorithm='random', seed=1)
    clean = self.create_tempdir()
    driver.run_search(search_fakes.closeness_trial, clean, 3, 1, options)
    crashing = self.create_tempdir()
    driver.run_search(search_fakes.crash_once_trial, crashing, 3, 1, options,
                      poll_seconds=0.2)
    a, b = _by_id(_records(clean)), _by_id(_records(crashing))
    self.assertEqual(sorted(b), [0, 1, 2])
    self.assertEqual([b[i]['attempts'] for i in range(3)], [1, 2, 1])
    for i in range(3):
      self.assertEqual(a[i]['architecture'], b[i]['architecture'])

  def test_a_trial_whose_worker_keeps_dying_fails_after_max_attempts(self):
    search_dir = self.create_tempdir()
    result = driver.run_search(
        _always_dies_on_trial_1, search_dir, 3, 1,
        driver.SearchOptions(algorithm='random', max_attempts=3),
        poll_seconds=0.2)
    records = _by_id(_records(search_dir))
    self.assertEqual(sorted(records), [0, 1, 2])
    failed = records[1]
    self.assertEqual((failed['status'], failed['reward'], failed['attempts']),
                     ('failed', 0.0, 3))
    self.assertEqual(failed['error'], 'worker died 3 times')
    self.assertEqual([records[i]['status'] for i in (0, 2)], ['ok', 'ok'])
    self.assertEqual(result['best'], max((records[0], records[2]),
                                         key=lambda r: r['reward']))
    state, _ = trials_lib.TrialStore(search_dir).load_state()
    self.assertEqual((state['pending'], sorted(state['told'])), ({}, [0, 1, 2]))

  def test_stop_kills_a_worker_that_ignores_sigterm(self):
    ctx = multiprocessing.get_context('spawn')
    results = ctx.Queue()
    trial_dir = os.path.join(self.create_tempdir(), 'trials', '00000')
    worker = driver._Worker(ctx, 0, _ignores_sigterm, 1, results)  # pylint: disable=protected-access
    worker.tasks.put((0, (), trial_dir))
    deadline = time.monotonic() + 120
    while (not os.path.exists(os.path.join(trial_dir, 'started'))
           and time.monotonic() < deadline):
      time.sleep(0.05)
    self.assertTrue(worker.process.is_alive())
    worker.stop(timeout=0.5)
    self.assertFalse(worker.process.is_alive())
    self.assertEqual(worker.process.exitcode, -signal.SIGKILL)

  def test_stop_ends_an_idle_worker_cleanly(self):
    ctx = multiprocessing.get_context('spawn')
    results = ctx.Queue()  # referenced until the child has unpickled it
    worker = driver._Worker(ctx, 0, search_fakes.closeness_trial, 1, results)  # pylint: disable=protected-access
    worker.stop(timeout=60)
    self.assertEqual(worker.process.exitcode, 0)

  def test_an_exception_fails_the_trial_once(self):
    search_dir = self.create_tempdir()
    result = driver.run_search(search_fakes.failing_trial, search_dir, 3, 1,
                               driver.SearchOptions(algorithm='evolution'))
    failed = _by_id(result['trials'])[1]
    self.assertEqual((failed['status'], failed['reward'], failed['attempts']),
                     ('failed', 0.0, 1))
    self.assertIn('loss became NaN (fake)', failed['error'])
    self.assertLen(_records(search_dir), 3)

  def test_a_trial_finished_but_not_yet_learned_from_is_not_rerun(self):
    # As left by a crash between appending a trial and saving the state.
    search_dir = self.create_tempdir()
    options = driver.SearchOptions(algorithm='evolution', seed=0)
    driver.run_search(search_fakes.closeness_trial, search_dir, 3, 1, options)
    store = trials_lib.TrialStore(search_dir)
    meta, arrays = store.load_state()
    last = _records(search_dir)[-1]
    meta['pending'] = {str(last['trial']): {'architecture': last['architecture'],
                                            'attempts': 1}}
    meta['told'] = [t for t in meta['told'] if t != last['trial']]
    meta['algorithm']['population'] = meta['algorithm']['population'][:-1]
    store.save_state(meta, arrays)
    result = driver.run_search(search_fakes.closeness_trial, search_dir, 3, 1,
                               options)
    self.assertEqual(result['num_new'], 0)
    meta, _ = store.load_state()
    self.assertEqual((meta['pending'], sorted(meta['told'])), ({}, [0, 1, 2]))
    self.assertEqual(meta['algorithm']['population'][-1],
                     [last['architecture'], last['reward']])

  def test_refuses_to_resume_with_other_settings(self):
    search_dir = self.create_tempdir()
    driver.run_search(search_fakes.closeness_trial, search_dir, 1, 1,
                      driver.SearchOptions(algorithm='random'))
    with self.assertRaisesRegex(ValueError, 'new --search_dir'):
      driver.run_search(search_fakes.closeness_trial, search_dir, 2, 1,
                        driver.SearchOptions(algorithm='evolution'))

  def test_killed_search_resumes_without_losing_or_repeating_trials(self):
    search_dir = self.create_tempdir()
    script = (
        'import search_fakes\n'
        'from spinenet.search import driver\n'
        f'driver.run_search(search_fakes.slow_trial, {search_dir!r}, 50, 1,\n'
        '                  driver.SearchOptions(algorithm="evolution", seed=3))\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen([sys.executable, '-c', script], env=env,
                               start_new_session=True)
    trials_path = os.path.join(search_dir, trials_lib.TRIALS_FILE)
    deadline = time.monotonic() + 300
    store = trials_lib.TrialStore(search_dir)
    while time.monotonic() < deadline:  # kill while a trial is running
      if os.path.exists(trials_path) and len(_records(search_dir)) >= 2:
        finished = {r['trial'] for r in _records(search_dir)}
        saved = store.load_state()
        if saved and set(map(int, saved[0]['pending'])) - finished:
          break
      time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and its worker
    process.wait()
    before = _records(search_dir)
    self.assertGreaterEqual(len(before), 2)
    state, _ = trials_lib.TrialStore(search_dir).load_state()
    finished = {r['trial'] for r in before}
    pending = {int(k): v['architecture'] for k, v in state['pending'].items()
               if int(k) not in finished}
    self.assertLen(pending, 1)  # the trial that was running

    result = driver.run_search(search_fakes.closeness_trial, search_dir,
                               len(before) + 2, 1,
                               driver.SearchOptions(algorithm='evolution', seed=3))
    records = _records(search_dir)
    self.assertEqual(sorted(r['trial'] for r in records),
                     list(range(len(before) + 2)))
    self.assertEqual(records[:len(before)], before)
    rerun = _by_id(records)[next(iter(pending))]
    self.assertEqual(rerun['architecture'], pending[rerun['trial']])
    self.assertEqual(rerun['attempts'], 2)
    self.assertEqual(result['num_new'], 2)
    with open(trials_path) as f:
      self.assertTrue(all(json.loads(line) for line in f))


if __name__ == '__main__':
  absltest.main()
