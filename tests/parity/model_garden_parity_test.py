"""Numerical parity with the TensorFlow Model Garden through converted checkpoints.

For every model id, randomized Model Garden RetinaNet and classification models
(random weights and batch-norm statistics) are saved, converted with
`spinenet.training.checkpoint_converter` and run on the same random images in
inference mode at 128 px: every output level must match to within
`TOLERANCE` x (max abs of the Model Garden output). The harness lives in
`benchmarks/_parity_harness.py` (on the recipe table of
`benchmarks/_model_garden.py`); `benchmarks/parity.py` prints the same
comparison as a table.
"""
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import _parity_harness as harness

# Detection check: candidates above the 0.05 score threshold per image, from a
# few (fewer than 100 detections) to more than pre_nms_top_k (5000).
_CANDIDATES = (40, 400, 12000)


@pytest.mark.slow
@pytest.mark.parametrize('model_id', harness.IDS)
def test_converted_model_matches_model_garden(model_id, tmp_path):
  diffs, _ = harness.model_parity(model_id, str(tmp_path))
  for task, levels in diffs.items():
    for level, diff in levels.items():
      assert diff <= harness.TOLERANCE, (
          f'{model_id} {task} level {level}: relative difference {diff:.3g} > '
          f'{harness.TOLERANCE}')


@pytest.mark.slow
def test_detections_match_model_garden_generator(tmp_path):
  """Ours vs MG's MultilevelDetectionGenerator (task defaults: NMS v2)."""
  _, state = harness.retinanet_parity('mobile-49XS', str(tmp_path))
  assert state['task_config'].model.detection_generator.nms_version == 'v2'
  counts = []
  for candidates in _CANDIDATES:
    shift = harness.shift_to_candidates(state['raw'][0], state['num_classes'], candidates)
    report = harness.detection_parity(state, shift)
    ours, theirs = report['num_detections']
    assert ours == theirs, (candidates, report)
    assert report['anchors'] == 0.0, report
    assert report['classes_equal'], report
    assert report['boxes'] <= 1e-4, report
    assert report['scores'] <= 1e-5, report
    counts.append(min(theirs))
  # The three regimes really differ: some, then the full 100 detections.
  assert 0 < counts[0] < 100 and counts[-1] == 100, counts


def test_relative_difference_is_scaled_by_the_reference():
  reference = tf.constant([[-4.0, 2.0], [1.0, 0.5]])
  assert harness.relative_difference(reference, reference) == 0.0
  assert np.isclose(harness.relative_difference(reference + 0.004, reference), 1e-3)
  with pytest.raises(ValueError, match='shape'):
    harness.relative_difference(reference[0], reference)
