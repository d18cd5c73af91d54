"""A run killed with SIGKILL mid-training resumes from its last checkpoint."""
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf

from spinenet import config
from spinenet.training import strategies
from spinenet.training import train_lib
import tiny

GIN_FILES = ['experiments/demo_cpu.gin']


def _momentum_norms_in_checkpoint(path):
  reader = tf.train.load_checkpoint(path)
  keys = [k for k in reader.get_variable_to_shape_map()
          if '.OPTIMIZER_SLOT' in k and 'momentum' in k]
  return sorted(float(np.linalg.norm(reader.get_tensor(k))) for k in keys)


@pytest.mark.slow
def test_sigkill_then_resume_with_same_step_and_optimizer_state():
  root = tempfile.mkdtemp()
  records = tiny.make_records(root)
  model_dir = os.path.join(root, 'model')
  params = tiny.gin_params(records, train_steps=10000, steps_per_loop=2,
                           checkpoint_interval=2, max_checkpoints=2)
  command = [sys.executable, '-m', 'spinenet.cli.train', '--mode=train',
             '--strategy=one_device', f'--model_dir={model_dir}',
             *[f'--gin_file={f}' for f in GIN_FILES],
             *[f'--gin_param={p}' for p in params]]
  log_path = os.path.join(root, 'train.log')
  with open(log_path, 'w') as log:
    child = subprocess.Popen(command, cwd=tiny.REPO_ROOT, stdout=log,
                             stderr=subprocess.STDOUT, env=tiny.subprocess_env())
  try:
    deadline = time.monotonic() + 600
    while True:
      latest = tf.train.latest_checkpoint(model_dir)
      if latest and int(latest.rsplit('-', 1)[1]) >= 6:
        break
      assert child.poll() is None, open(log_path).read()[-3000:]
      assert time.monotonic() < deadline, 'no checkpoint at step 6 in time'
      time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
  finally:
    if child.poll() is None:
      child.kill()
    child.wait()
  assert child.returncode == -signal.SIGKILL

  latest = tf.train.latest_checkpoint(model_dir)
  step = int(latest.rsplit('-', 1)[1])
  with open(os.path.join(model_dir, 'operative_config.gin')) as f:
    assert "build_retinanet.model_id = '49S'" in f.read()
  assert os.path.exists(os.path.join(model_dir, 'config.gin'))
  saved_momentum = _momentum_norms_in_checkpoint(latest)
  assert len(saved_momentum) > 50 and max(saved_momentum) > 0

  task, optimizer_options, trainer_options = config.load_experiment(
      GIN_FILES, params + [f'TrainerOptions.train_steps = {step + 2}'])
  experiment = train_lib.build_experiment(
      task, 'train', model_dir, strategies.get_strategy('one_device'),
      optimizer_options, trainer_options)
  try:
    assert experiment.global_step == step
    optimizer = experiment.optimizer
    # Slots are created lazily; creating them completes the deferred restore.
    optimizer._create_all_weights(experiment.model.trainable_variables)  # pylint: disable=protected-access
    restored = sorted(float(np.linalg.norm(optimizer.get_slot(v, 'momentum').numpy()))
                      for v in experiment.model.trainable_variables)
    np.testing.assert_allclose(restored, saved_momentum, rtol=1e-6)
    result = train_lib.run(experiment, 'train')
  finally:
    experiment.close()
  assert result['step'] == step + 2
  assert tf.train.latest_checkpoint(model_dir).endswith(f'ckpt-{step + 2}')
