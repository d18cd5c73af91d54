"""Mask R-CNN losses against the Model Garden's and the authors' TF1 ones, and by hand."""
import importlib.util
import math
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from spinenet.training import maskrcnn_losses as losses

B, R, K, RM, M = 2, 16, 5, 6, 28
LEVELS = {'3': 8, '4': 4, '5': 2}  # level -> feature size
A = 3


def _random_inputs(seed=0):
  rng = np.random.default_rng(seed)
  scores = {l: rng.normal(size=[B, s, s, A]).astype(np.float32) for l, s in LEVELS.items()}
  score_targets = {l: rng.integers(-1, 2, size=[B, s, s, A]).astype(np.int32)
                   for l, s in LEVELS.items()}
  boxes = {l: rng.normal(size=[B, s, s, A * 4]).astype(np.float32) for l, s in LEVELS.items()}
  box_targets = {}
  for l, s in LEVELS.items():
    t = rng.normal(size=[B, s, s, A, 4]).astype(np.float32)
    positive = rng.random([B, s, s, A, 1]) < 0.2
    box_targets[l] = np.reshape(t * positive, [B, s, s, A * 4])
  class_targets = rng.integers(0, K, size=[B, R]).astype(np.int32)
  class_targets[:, :4] = 0  # some background
  mask_classes = rng.integers(0, K, size=[B, RM]).astype(np.int32)
  mask_classes[:, -2:] = 0  # padding rows
  outputs = {
      'rpn_scores': scores, 'rpn_boxes': boxes,
      'class_outputs': rng.normal(size=[B, R, K]).astype(np.float32),
      'box_outputs': rng.normal(size=[B, R, K * 4]).astype(np.float32),
      'class_targets': class_targets,
      'box_targets': (rng.normal(size=[B, R, 4]) *
                      (class_targets > 0)[..., None]).astype(np.float32),
      'mask_outputs': rng.normal(size=[B, RM, M, M]).astype(np.float32) * 3,
      'mask_targets': (rng.random([B, RM, M, M]) > 0.5).astype(np.float32),
      'mask_class_targets': mask_classes,
  }
  labels = {'rpn_score_targets': score_targets, 'rpn_box_targets': box_targets}
  return (tf.nest.map_structure(tf.constant, outputs),
          tf.nest.map_structure(tf.constant, labels))


def test_equals_the_model_garden_losses_on_random_inputs():
  from official.vision.losses import maskrcnn_losses as mg  # pylint: disable=g-import-not-at-top
  outputs, labels = _random_inputs()
  ours = losses.MaskRCNNLoss(losses.MaskRCNNLossOptions(rpn_score_normalizer=R))(
      outputs, labels)
  # The Model Garden's task: RpnScoreLoss(num sampled ROIs), deltas 1/9 and 1.
  want = {
      'rpn_score_loss': mg.RpnScoreLoss(R)(outputs['rpn_scores'],
                                           labels['rpn_score_targets']),
      'rpn_box_loss': mg.RpnBoxLoss(1. / 9.)(outputs['rpn_boxes'],
                                             labels['rpn_box_targets']),
      'frcnn_cls_loss': mg.FastrcnnClassLoss()(outputs['class_outputs'],
                                               outputs['class_targets']),
      'frcnn_box_loss': mg.FastrcnnBoxLoss(1.0)(
          outputs['box_outputs'], outputs['class_targets'], outputs['box_targets']),
      'mask_loss': mg.MaskrcnnLoss()(outputs['mask_outputs'], outputs['mask_targets'],
                                     outputs['mask_class_targets']),
  }
  for name, value in want.items():
    assert float(ours[name]) == pytest.approx(float(value), rel=1e-5, abs=1e-6), name
    assert float(value) > 0, name
  assert float(ours['model_loss']) == pytest.approx(sum(float(v) for v in want.values()),
                                                    rel=1e-5)


def _tf1_losses():
  root = os.environ.get('SPINENET_TF1_REFERENCE')
  if not root:
    pytest.skip('SPINENET_TF1_REFERENCE is unset (path of the authors\' TF1 code)')
  path = os.path.join(root, 'detection', 'modeling', 'losses.py')
  spec = importlib.util.spec_from_file_location('tf1_losses', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_equals_the_authors_tf1_losses_on_random_inputs(monkeypatch):
  tf1 = _tf1_losses()
  outputs, labels = _random_inputs(seed=1)
  # TF1 divides by the counts themselves, we by count + 0.01 (as the Model
  # Garden): compare without the 0.01.
  monkeypatch.setattr(losses, '_EPSILON', 0.0)
  ours = losses.MaskRCNNLoss()(outputs, labels)  # defaults = the TF1 recipe
  ns = types.SimpleNamespace
  want = {
      'rpn_score_loss': tf1.RpnScoreLoss(ns(rpn_batch_size_per_im=256))(
          outputs['rpn_scores'], labels['rpn_score_targets']),
      'rpn_box_loss': tf1.RpnBoxLoss(ns(huber_loss_delta=1. / 9.))(
          outputs['rpn_boxes'], labels['rpn_box_targets']),
      'frcnn_cls_loss': tf1.FastrcnnClassLoss()(outputs['class_outputs'],
                                                outputs['class_targets']),
      'frcnn_box_loss': tf1.FastrcnnBoxLoss(ns(huber_loss_delta=1.0))(
          outputs['box_outputs'], outputs['class_targets'], outputs['box_targets']),
      'mask_loss': tf1.MaskrcnnLoss()(outputs['mask_outputs'], outputs['mask_targets'],
                                      outputs['mask_class_targets']),
  }
  for name, value in want.items():
    assert float(ours[name]) == pytest.approx(float(value), rel=1e-5), name


def test_rpn_score_loss_by_hand():
  logits = {'3': tf.zeros([1, 2, 2, 1]), '4': tf.fill([1, 1, 1, 1], 2.0)}
  targets = {'3': tf.constant([[[[1], [0]], [[-1], [-1]]]]),
             '4': tf.constant([[[[-1]]]])}
  # Two sampled anchors at logit 0 (ln 2 each); the rest ignored.
  got = losses.rpn_score_loss(logits, targets, normalizer_per_image=4.0)
  assert float(got) == pytest.approx(2 * math.log(2) / 4.0, rel=1e-6)
  targets['4'] = tf.constant([[[[1]]]])
  got = losses.rpn_score_loss(logits, targets, normalizer_per_image=4.0)
  want = (2 * math.log(2) + math.log(1 + math.exp(-2.0))) / 4.0
  assert float(got) == pytest.approx(want, rel=1e-6)


def test_rpn_box_loss_by_hand_each_level_by_its_own_positives():
  # Level 3: one positive anchor, error 1 on one coordinate (linear part),
  # 0.05 on another (quadratic part). Level 4: no positive anchor.
  targets = np.zeros([1, 1, 2, 8], np.float32)
  targets[0, 0, 0, :4] = [0.5, 0.25, 1.0, 2.0]
  outputs = targets.copy()
  outputs[0, 0, 0, 0] += 1.0
  outputs[0, 0, 0, 1] += 0.05
  outputs[0, 0, 1, :] = 7.0  # non-positive anchor: ignored
  d = 1.0 / 9.0
  got = losses.rpn_box_loss({'3': tf.constant(outputs), '4': tf.ones([1, 1, 1, 8])},
                            {'3': tf.constant(targets), '4': tf.zeros([1, 1, 1, 8])}, d)
  want = (d * (1.0 - 0.5 * d) + 0.5 * 0.05 ** 2) / (4 + 0.01)
  assert float(got) == pytest.approx(want, rel=1e-5)


def test_fast_rcnn_losses_by_hand():
  # Two ROIs, 3 classes: ROI 0 is class 2, ROI 1 background.
  logits = tf.constant([[[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]])
  classes = tf.constant([[2, 0]])
  want_cls = (math.log(3) + math.log(1 + 2 * math.exp(-5.0))) / 2
  assert float(losses.frcnn_class_loss(logits, classes)) == pytest.approx(want_cls, rel=1e-6)
  boxes = np.zeros([1, 2, 12], np.float32)
  boxes[0, 0, 8:12] = [0.5, 0, 0, 0]   # class 2's box of ROI 0: error 0.5
  boxes[0, 0, 0:4] = 9.0               # other classes' boxes do not count
  boxes[0, 1, :] = 9.0                 # background ROI does not count
  targets = tf.zeros([1, 2, 4])
  got = losses.frcnn_box_loss(tf.constant(boxes), classes, targets, delta=1.0)
  assert float(got) == pytest.approx(0.5 * 0.25 / (4 + 0.01), rel=1e-6)


def test_mask_loss_by_hand_padding_rows_do_not_count():
  outputs = np.zeros([1, 2, 4, 4], np.float32)
  outputs[0, 1] = -50.0  # padding row: would be a huge loss against target 1
  targets = np.ones([1, 2, 4, 4], np.float32)
  got = losses.mask_loss(tf.constant(outputs), tf.constant(targets), tf.constant([[3, 0]]))
  assert float(got) == pytest.approx(16 * math.log(2) / (16 + 0.01), rel=1e-6)
  # Perfect confident masks: ~0.
  outputs = np.where(targets[:, :1] > 0, 30.0, -30.0)
  got = losses.mask_loss(tf.constant(outputs), tf.constant(targets[:, :1]),
                         tf.constant([[1]]))
  assert float(got) < 1e-10


def test_weights_and_no_mask():
  outputs, labels = _random_inputs(seed=2)
  base = losses.MaskRCNNLoss()(outputs, labels)
  weighted = losses.MaskRCNNLoss(losses.MaskRCNNLossOptions(
      mask_weight=2.0, rpn_box_weight=0.0))(outputs, labels)
  want = float(base['model_loss']) + float(base['mask_loss']) - float(base['rpn_box_loss'])
  assert float(weighted['model_loss']) == pytest.approx(want, rel=1e-5)
  no_mask = losses.MaskRCNNLoss(include_mask=False)(outputs, labels)
  assert float(no_mask['mask_loss']) == 0.0
  with pytest.raises(ValueError, match='rpn_score_normalizer'):
    losses.MaskRCNNLossOptions(rpn_score_normalizer=0)


def test_gradients_reach_the_selected_class_only():
  outputs, labels = _random_inputs(seed=3)
  box_outputs = tf.Variable(outputs['box_outputs'])
  with tf.GradientTape() as tape:
    loss = losses.frcnn_box_loss(box_outputs, outputs['class_targets'],
                                 outputs['box_targets'])
  grad = tf.reshape(tape.gradient(loss, box_outputs), [B, R, K, 4]).numpy()
  classes = outputs['class_targets'].numpy()
  for b in range(B):
    for r in range(R):
      for k in range(K):
        touched = np.any(grad[b, r, k] != 0)
        if touched:
          assert k == classes[b, r] and k > 0
  assert np.any(grad != 0)
