"""Tests of training/detection_model_info.py."""
import types

import pytest

from spinenet.training import detection_model_info


def _model(input_shape):
  anchors = types.SimpleNamespace(num_scales=1, aspect_ratios=[0.5, 1.0, 2.0],
                                  anchor_size=3.0)
  return types.SimpleNamespace(
      backbone=types.SimpleNamespace(input_shape=input_shape), min_level=3,
      max_level=7, anchor_config=anchors)


def test_info_follows_the_model():
  info = detection_model_info.model_info(_model((None, 256, 192, 3)), 5, 'Task')
  assert info.input_size == (256, 192)
  assert (info.min_level, info.max_level) == (3, 7)
  assert info.aspect_ratios == (0.5, 1.0, 2.0)
  assert (info.num_scales, info.anchor_size, info.num_classes) == (1, 3.0, 5)


def test_a_model_without_a_fixed_size_is_refused_naming_the_task():
  with pytest.raises(ValueError, match='MaskRCNNTask needs a model built for a fixed input size'):
    detection_model_info.model_info(_model((None, None, None, 3)), 5, 'MaskRCNNTask')
