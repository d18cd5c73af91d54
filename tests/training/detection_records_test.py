"""Tests of training/detection_records.py."""
import types

import pytest

from spinenet.training import detection_records


def _build(data, build_parser):
  return detection_records.build_records_dataset(
      data, task_name='MaskRCNNTask', options_name='MaskRCNNDataOptions',
      split='train_data', decode_fn=lambda x: x, build_parser=build_parser,
      num_classes=5, training=True, input_context=None,
      make_check_fn=lambda source_name: None)


@pytest.mark.parametrize('data', [None, types.SimpleNamespace(file_pattern='')])
def test_no_file_pattern_is_refused_naming_the_binding_before_the_parser_is_built(data):
  built = []
  with pytest.raises(ValueError, match=r'MaskRCNNTask\.train_data\.file_pattern is not set.*'
                     r'`train/MaskRCNNDataOptions\.file_pattern'):
    _build(data, lambda: built.append(1))
  assert not built


def test_a_pattern_matching_no_file_is_refused_naming_the_source(tmp_path):
  data = types.SimpleNamespace(file_pattern=str(tmp_path / 'none-*.tfrecord'))
  with pytest.raises(ValueError, match=r'No file matches .*MaskRCNNTask\.train_data\.file_pattern'):
    _build(data, lambda: None)
