"""spinenet-train: gin files, typos and bad flags give clear errors."""
import glob
import os
import subprocess
import sys
import tempfile

import gin
import pytest

from spinenet import config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATTERNS = ["TRAIN_FILE_PATTERN = '/data/train-*'", "EVAL_FILE_PATTERN = '/data/val-*'"]


def _gin_file(text):
  path = os.path.join(tempfile.mkdtemp(), 'exp.gin')
  with open(path, 'w') as f:
    f.write("include 'experiments/coco_spinenet49_tpu.gin'\n" + text)
  return path


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(REPO_ROOT, 'experiments', 'coco_*.gin'))))
def test_recipes_bind_the_reference_hyperparameters(path):
  task, opt, trainer = config.load_experiment([path], PATTERNS)
  name = os.path.basename(path)
  mobile = 'mobile' in name
  model_id = gin.query_parameter('build_retinanet.model_id')
  size_id = name.split('spinenet')[1].split('_')[0].upper()  # '49S', '190', ...
  assert model_id == ('mobile-' if mobile else '') + size_id
  assert task.train_data.global_batch_size == 256
  assert (task.train_data.aug_scale_min, task.train_data.aug_scale_max) == (
      (0.5, 2.0) if mobile else (0.1, 2.0))
  assert (opt.learning_rate, opt.momentum, opt.warmup_steps, opt.warmup_learning_rate) == (
      0.32, 0.9, 2000, 0.0067)
  assert opt.weight_decay == (3e-5 if mobile else 4e-5)
  assert trainer.train_steps == (277200 if mobile else 231000)
  assert trainer.precision == 'mixed_bfloat16'
  assert task.loss_options.focal_loss_gamma == 1.5
  assert gin.query_parameter('build_retinanet.use_sync_bn') is True


@pytest.mark.parametrize('binding, message', [
    ('OptimizerOptions.learning_rat = 0.1', "'OptimizerOptions' doesn't have a parameter named 'learning_rat'"),
    ('OptimizerOption.learning_rate = 0.1', "No configurable matching 'OptimizerOption'"),
    ('build_retinanet.filtr_size_scale = 0.5', "build_retinanet has no argument(s) ['filtr_size_scale']"),
])
def test_typo_in_gin_file_names_binding_and_file(binding, message):
  path = _gin_file(binding + '\n')
  with pytest.raises(config.ConfigError) as e:
    config.parse_config([path], PATTERNS)
  assert message in str(e.value)
  assert path in str(e.value)


def test_missing_required_value():
  with pytest.raises(config.ConfigError, match='FILE_PATTERN is required'):
    config.parse_config(['experiments/coco_spinenet49_tpu.gin'])


def test_cli_errors():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  typo = _gin_file('TrainerOptions.train_stpes = 5\n')
  cases = [
      (['--mode=trian', '--gin_file=x.gin', '--model_dir=/tmp/m'], "--mode"),
      ([f'--gin_file={typo}', '--model_dir=/tmp/m'] + [f'--gin_param={p}' for p in PATTERNS],
       "doesn't have a parameter named 'train_stpes'"),
  ]
  for args, message in cases:
    proc = subprocess.run([sys.executable, '-m', 'spinenet.cli.train', *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                          timeout=300)
    assert proc.returncode != 0, args
    assert message in proc.stderr + proc.stdout, (args, proc.stderr[-2000:])
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
