"""Mask R-CNN parity with the Model Garden's `MaskRCNNModel` (tf-models-official).

A randomized Model Garden Mask R-CNN on SpineNet-49S (narrow heads, 128 px)
is saved, converted with `checkpoint_converter` (task 'maskrcnn') and both
models run on the same images: RPN outputs per level, proposals from the same
RPN outputs, RoIAlign features, box head and mask head outputs for the same
proposals, and detections from the same box-head outputs (our post-processing
vs its detection generator) must agree to 1e-4 x max |reference| (`benchmarks/_maskrcnn_parity.py`;
`benchmarks/parity_maskrcnn.py` prints the table).
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import _maskrcnn_parity as parity
from benchmarks import _model_garden_maskrcnn as mg_maskrcnn
from spinenet.modeling import profile
from spinenet.modeling import registry
from spinenet.training import checkpoint_converter

_NARROW = dict(rpn_filters=32, box_filters=32, fc_dims=64, mask_filters=32)


def test_converted_maskrcnn_matches_model_garden(tmp_path):
  mg, ours, result = parity.converted_pair('49S', 128, str(tmp_path), overrides=_NARROW)
  assert len(result.mapping) == len(ours.weights)
  rows = parity.compare(mg, ours, 128)
  expected = {'class_outputs', 'box_outputs', 'mask_outputs', 'roi_align/gather',
              'roi_align/crop_and_resize',
              'proposal_boxes', 'proposal_scores', 'rpn_scores/3', 'rpn_boxes/7',
              'detection_count_and_classes', 'detection_boxes', 'detection_scores'}
  assert expected <= set(rows)
  for name, (diff, scale, ratio) in rows.items():
    assert scale > 0, name  # a zero reference would make the check vacuous
    assert ratio <= parity.TOLERANCE, f'{name}: {diff:.3g} / {scale:.3g} = {ratio:.3g}'

  # Without a model given, the heads' depths, widths and classes come from the
  # checkpoint, and the weights are the same.
  prefix = os.path.join(str(tmp_path), 'mg', 'ckpt')
  inferred = checkpoint_converter.convert(prefix, '49S', 'maskrcnn',
                                          str(tmp_path / 'inferred')).model
  assert inferred.box_head.get_config()['fc_dims'] == 64
  assert inferred.box_head.get_config()['num_classes'] == 5
  images = tf.random.stateless_normal([1, 128, 128, 3], [1, 2])
  a = inferred.rpn_head(inferred.features(images, training=False), training=False)[0]
  b = ours.rpn_head(ours.features(images, training=False), training=False)[0]
  for level in a:
    np.testing.assert_array_equal(a[level].numpy(), b[level].numpy())
  # A Mask R-CNN checkpoint is not a RetinaNet one.
  with pytest.raises(checkpoint_converter.ConversionError, match='problem'):
    checkpoint_converter.convert(prefix, '49S', 'retinanet', str(tmp_path / 'wrong'))


@pytest.mark.parametrize('model_id', ['49S'])
def test_params_equal_model_garden(model_id):
  # Full recipe heads (91 classes) at a small input: every weight counted.
  mg = mg_maskrcnn.build_mg_maskrcnn(model_id, 128)
  ours = registry.build_maskrcnn(model_id, 91, 128)
  assert profile.count_params(ours)['total'] == profile.count_params(mg)['total']
  for ours_part, mg_part in (('backbone', mg.backbone), ('rpn_head', mg.rpn_head),
                             ('box_head', mg.detection_head[0]),
                             ('mask_head', mg.mask_head)):
    assert (profile.count_params(getattr(ours, ours_part))['total']
            == profile.count_params(mg_part)['total']), ours_part
