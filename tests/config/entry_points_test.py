"""The `*_from_config` entry points: checks before work, built objects to the library."""
import json
import os
import sys

import pytest

from spinenet.config import entry_points
from spinenet.data import coco_converter
from spinenet.serving import signatures as sig

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'serving'))
import serving_testing  # pylint: disable=g-import-not-at-top,wrong-import-position

PATTERNS = ["TRAIN_FILE_PATTERN = '/nowhere/train-*'",
            "EVAL_FILE_PATTERN = '/nowhere/val-*'"]


@pytest.mark.parametrize('kwargs, message', [
    (dict(mode='trian', model_dir='/tmp/m'), "--mode='trian' is not one of"),
    (dict(strategy='gpu', model_dir='/tmp/m'), "--strategy='gpu' is not one of"),
    (dict(model_dir=''), '--model_dir is required'),
])
def test_train_refuses_bad_arguments_before_parsing(kwargs, message):
  with pytest.raises(entry_points.ConfigError, match=message):
    entry_points.train_from_config(['no_such_file.gin'], **kwargs)


def test_load_experiment_returns_the_bound_objects():
  task, optimizer_options, trainer_options = entry_points.load_experiment(
      ['experiments/demo_cpu.gin'], PATTERNS + ['TrainerOptions.train_steps = 9'])
  assert task.train_data.file_pattern == '/nowhere/train-*'
  assert trainer_options.train_steps == 9
  assert optimizer_options.learning_rate > 0


def test_search_settings_errors_name_the_binding(tmp_path):
  with pytest.raises(entry_points.ConfigError,
                     match=r"SearchOptions.algorithm must be one of .*'bayes'"):
    entry_points.search_from_config(
        ['configs/search/proxy_builtin.gin'], ["SearchOptions.algorithm = 'bayes'"],
        search_dir=str(tmp_path), num_trials=1)
  assert not os.listdir(tmp_path)  # refused before generating any data
  with pytest.raises(entry_points.ConfigError, match='--search_dir is required'):
    entry_points.search_from_config(['configs/search/proxy_builtin.gin'],
                                    search_dir='', num_trials=1)


def test_export_uses_the_given_label_map(tmp_path):
  label_map = {1: 'ring', 2: 'block', 3: 'wedge', 4: 'plus'}
  path = str(tmp_path / 'names.label_map.json')
  coco_converter.write_label_map(path, label_map)
  result = entry_points.export_from_config(
      ['experiments/demo_cpu.gin'], PATTERNS + serving_testing.GIN_PARAMS,
      str(tmp_path / 'export'), checkpoint=None, label_map_path=path)
  assert result.path == str(tmp_path / 'export' / '1')
  assert result.task == 'detection'
  assert result.info['input_size'] == [serving_testing.INPUT_SIZE] * 2
  exported = coco_converter.read_label_map(
      os.path.join(result.path, 'assets', sig.LABEL_MAP_ASSET))
  assert exported == label_map
  with open(os.path.join(result.path, 'assets', sig.EXPORT_INFO_ASSET)) as f:
    assert json.load(f)['version'] == 1
