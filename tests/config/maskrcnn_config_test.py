"""Mask R-CNN from gin: the task file picks MaskRCNNTask; builder typos are refused."""
import pytest

from spinenet import config
from spinenet.config import parsing
from spinenet.training import maskrcnn_task

PARAMS = ["TRAIN_FILE_PATTERN = '/data/train-*'", "EVAL_FILE_PATTERN = '/data/val-*'",
          "EVAL_ANNOTATIONS_JSON = '/data/val.json'"]


def test_a_maskrcnn_experiment_builds_the_task_with_its_options():
  task, _, _ = config.load_experiment(['experiments/coco_spinenet49_mrcnn_tpu.gin'],
                                      PARAMS + ['MaskRCNNLossOptions.mask_weight = 2.0',
                                                'train/MaskRCNNDataOptions.seed = 3'])
  assert isinstance(task, maskrcnn_task.MaskRCNNTask)
  assert task.loss_options.mask_weight == 2.0
  assert task.train_data.seed == 3 and task.train_data.file_pattern == '/data/train-*'
  assert task.eval_data.file_pattern == '/data/val-*'
  assert task.annotation_json == '/data/val.json'


def test_unknown_maskrcnn_argument_names_file_and_line(tmp_path):
  path = tmp_path / 'exp.gin'
  path.write_text("include 'experiments/coco_spinenet49_mrcnn_tpu.gin'\n"
                  'build_maskrcnn.mask_filterz = 8\n')
  with pytest.raises(parsing.ConfigError) as e:
    parsing.parse_config([str(path)], PARAMS)
  message = str(e.value)
  assert "build_maskrcnn has no argument(s) ['mask_filterz']" in message
  assert 'mask_filters' in message  # the known ones are listed
  assert f'{path}:2: build_maskrcnn.mask_filterz = 8' in message


def test_the_annotation_json_is_required():
  with pytest.raises(parsing.ConfigError, match='EVAL_ANNOTATIONS_JSON'):
    config.load_experiment(['experiments/coco_spinenet49_mrcnn_tpu.gin'], PARAMS[:2])
