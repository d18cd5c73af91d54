"""`python -m spinenet.demo` (what `make demo` runs), end to end at a tiny scale.

Data generation, conversion, training, COCO evaluation, export and one drawn
prediction all run for real; only the sizes are cut (8 training images, 2
steps), so the numbers it prints are not the demo's.
"""
import json
import os
import subprocess
import sys
import tempfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_demo_runs_every_step_and_reports():
  out = os.path.join(tempfile.mkdtemp(), 'demo')
  params = ['TrainerOptions.train_steps = 2', 'TrainerOptions.steps_per_loop = 1',
            'TrainerOptions.checkpoint_interval = 2', 'TRAIN_BATCH_SIZE = 2',
            'EVAL_BATCH_SIZE = 2', 'OptimizerOptions.warmup_steps = 1']
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2')
  done = subprocess.run(
      [sys.executable, '-m', 'spinenet.demo', f'--output_dir={out}', '--num_train=8',
       '--num_val=4'] + [f'--gin_param={p}' for p in params],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'COCO box AP50 = ' in done.stdout
  assert 'trained 2 steps' in done.stdout
  with open(os.path.join(out, 'model', 'eval', 'metrics.json')) as f:
    metrics = json.load(f)
  assert 0.0 <= metrics['AP50'] <= 1.0
  assert os.path.exists(os.path.join(out, 'export', '1', 'saved_model.pb'))
  assert os.path.getsize(os.path.join(out, 'prediction.png')) > 0
  # A flag the demo does not have is refused by name.
  bad = subprocess.run([sys.executable, '-m', 'spinenet.demo', '--output_dri=x'],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0
  assert 'output_dri' in bad.stderr
