"""spinenet-search end to end: 3 proxy trials on the built-in dataset, then
`spinenet-train` trains the best.gin it wrote, as is."""
import os
import subprocess
import sys

import pytest

from spinenet import config
from spinenet.search import trials as trials_lib

# A tiny proxy: 2 steps on 8 images, rewarded on 4 held-out images; most of a
# trial's time is building and tracing the model.
_PARAMS = [
    'TrainerOptions.train_steps = 2',
    'TrainerOptions.steps_per_loop = 1',
    'TrainerOptions.checkpoint_interval = 2',
    'OptimizerOptions.warmup_steps = 1',
    'TRAIN_BATCH_SIZE = 4',
    'EVAL_BATCH_SIZE = 4',
    'build_retinanet.head_convs = 1',
    'train/DataOptions.shuffle_buffer = 8',
    'BuiltinDataset.num_train = 8',
    'BuiltinDataset.num_val = 4',
    "SearchOptions.algorithm = 'evolution'",
    'SearchOptions.algorithm_args = {"population_size": 2, "tournament_size": 2}',
]


@pytest.mark.slow
def test_three_trial_search_then_best_gin_trains(tmp_path):
  search_dir = str(tmp_path / 'search')
  result = config.search_from_config(
      ['configs/search/proxy_builtin.gin'], _PARAMS, search_dir=search_dir,
      num_trials=3, num_workers=2)
  records = trials_lib.TrialStore(search_dir).read_trials()
  assert sorted(r['trial'] for r in records) == [0, 1, 2]
  assert {r['worker'] for r in records} == {0, 1}
  for r in records:
    assert r['status'] == 'ok', r.get('error')
    assert r['reward_metric'] == 'AP50'
    assert 0.0 <= r['reward'] <= 1.0
    assert r['reward'] == r['metrics']['AP50']
    assert r['steps'] == 2 and r['params'] > 10_000 and r['flops'] > 1_000_000
    assert r['seconds'] > 0
  best = result['best']
  assert best == max(records, key=lambda r: (r['reward'], -r['trial']))
  with open(os.path.join(search_dir, 'best.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'

  # The best architecture trains with spinenet-train's function, as is.
  model_dir = str(tmp_path / 'train')
  trained = config.train_from_config(
      [os.path.join(search_dir, 'best.gin')], mode='train', model_dir=model_dir,
      strategy='one_device')
  assert trained['step'] == 2
  with open(os.path.join(model_dir, 'operative_config.gin')) as f:
    operative = ''.join(f.read().replace('\\\n', '').split())
  specs = tuple((l, f, tuple(p), o) for l, f, p, o in best['block_specs'])
  assert 'build_retinanet.block_specs=' + ''.join(repr(specs).split()) in operative


def test_cli_reports_a_bad_binding(tmp_path):
  process = subprocess.run(
      [sys.executable, '-m', 'spinenet.cli.search',
       '--gin_file=configs/search/proxy_builtin.gin',
       "--gin_param=SearchOptions.algorithm = 'bayes'",
       f'--search_dir={tmp_path}', '--num_trials=1'],
      cwd=config.REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert process.returncode != 0
  assert "SearchOptions.algorithm must be one of ('reinforce', 'evolution', " \
         "'random'). Received: 'bayes'" in process.stderr
  assert not os.path.exists(tmp_path / 'data')  # failed before any work
