"""spinenet-train: gin files, typos and bad flags give clear errors."""
import os
import subprocess
import sys
import tempfile

import pytest

from spinenet import config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATTERNS = ["TRAIN_FILE_PATTERN = '/data/train-*'", "EVAL_FILE_PATTERN = '/data/val-*'"]


def _gin_file(text):
  path = os.path.join(tempfile.mkdtemp(), 'exp.gin')
  with open(path, 'w') as f:
    f.write("include 'experiments/coco_spinenet49_tpu.gin'\n" + text)
  return path


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
