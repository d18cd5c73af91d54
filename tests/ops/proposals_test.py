"""Proposal generation: static count, order, clipping, NMS."""
import numpy as np
import tensorflow as tf

from spinenet.ops import anchors as anchors_lib
from spinenet.ops import box_ops
from spinenet.ops import proposals


def _inputs(seed=0, size=128, batch=2):
  rng = np.random.default_rng(seed)
  anchors = anchors_lib.multilevel_anchors(3, 5, 1, (0.5, 1.0, 2.0), 3.0, (size, size))
  scores = {k: tf.constant(rng.normal(size=(batch, *v.shape[:2], 3)), tf.float32)
            for k, v in anchors.items()}
  deltas = {k: tf.constant(rng.normal(scale=0.5, size=(batch, *v.shape[:2], 12)), tf.float32)
            for k, v in anchors.items()}
  return scores, deltas, anchors


def test_proposals_are_sorted_clipped_and_static():
  scores, deltas, anchors = _inputs()
  image_shape = tf.constant([[100.0, 120.0], [128.0, 90.0]])
  boxes, probs = proposals.generate_proposals(
      scores, deltas, anchors, image_shape, pre_nms_top_k=50, nms_iou_threshold=0.7,
      num_proposals=60)
  assert boxes.shape == (2, 60, 4) and probs.shape == (2, 60)
  p = probs.numpy()
  assert np.all(np.diff(p, axis=1) <= 0)
  assert np.all((p > 0) & (p < 1))
  b = boxes.numpy()
  for i, (h, w) in enumerate(image_shape.numpy()):
    assert b[i, :, [0, 2]].min() >= 0 and b[i, :, [0, 2]].max() <= h
    assert b[i, :, [1, 3]].min() >= 0 and b[i, :, [1, 3]].max() <= w


def test_single_level_is_top_k_then_nms():
  scores, deltas, anchors = _inputs(seed=1, batch=1)
  one = lambda d: {'3': d['3']}  # noqa: E731
  image_shape = tf.constant([[128.0, 128.0]])
  boxes, probs = proposals.generate_proposals(
      one(scores), one(deltas), one(anchors), image_shape, pre_nms_top_k=100,
      nms_iou_threshold=0.5, num_proposals=1000)
  # Reference: top 100 by score, decode, clip, greedy NMS.
  s = tf.reshape(scores['3'], [-1])
  top = tf.math.top_k(s, 100)
  dec = box_ops.decode_boxes(tf.gather(tf.reshape(deltas['3'], [-1, 4]), top.indices),
                             tf.gather(tf.reshape(anchors['3'], [-1, 4]), top.indices))
  dec = box_ops.clip_boxes(dec, [128.0, 128.0])
  keep = tf.image.non_max_suppression(dec, top.values, 1000, 0.5)
  n = int(tf.size(keep))
  assert boxes.shape == (1, 100, 4)  # min(16 * 16 * 3, 100, 1000) rows on this level
  np.testing.assert_allclose(boxes[0, :n].numpy(), tf.gather(dec, keep).numpy(), rtol=1e-6)
  np.testing.assert_allclose(probs[0, :n].numpy(), tf.sigmoid(tf.gather(top.values, keep)),
                             rtol=1e-6)
  assert np.all(probs[0, n:].numpy() == 0) and np.all(boxes[0, n:].numpy() == 0)


def test_box_clipped_to_zero_is_dropped():
  # One level, one location, three anchors; the best-scored one decodes wholly
  # above and left of the image, so clipping makes it the all-zero box, which
  # the reference implementations' padded NMS treats as padding.
  anchors = {'3': tf.constant([[[-30.0, -30.0, -10.0, -10.0,
                                 10.0, 10.0, 30.0, 30.0,
                                 40.0, 40.0, 60.0, 60.0]]])}
  scores = {'3': tf.constant([[[[3.0, 1.0, 2.0]]]])}
  deltas = {'3': tf.zeros([1, 1, 1, 12])}
  boxes, probs = proposals.generate_proposals(
      scores, deltas, anchors, tf.constant([[64.0, 64.0]]), pre_nms_top_k=3,
      nms_iou_threshold=0.7, num_proposals=3)
  np.testing.assert_allclose(boxes[0].numpy(), [[40, 40, 60, 60], [10, 10, 30, 30],
                                                [0, 0, 0, 0]])
  np.testing.assert_allclose(probs[0].numpy(), [*tf.sigmoid([2.0, 1.0]).numpy(), 0.0],
                             rtol=1e-6)


def test_tf1_box_coding_clips_to_size_minus_one():
  scores, deltas, anchors = _inputs(seed=3)
  deltas = {k: v * 4.0 for k, v in deltas.items()}  # wide boxes reach the border
  image_shape = tf.constant([[100.0, 120.0], [128.0, 90.0]])
  kwargs = dict(pre_nms_top_k=50, nms_iou_threshold=0.7, num_proposals=60)
  boxes, _ = proposals.generate_proposals(scores, deltas, anchors, image_shape,
                                          box_coding='tf1', **kwargs)
  standard, _ = proposals.generate_proposals(scores, deltas, anchors, image_shape, **kwargs)
  b, s = boxes.numpy(), standard.numpy()
  for i, (h, w) in enumerate(image_shape.numpy()):
    assert b[i, :, [0, 2]].max() == h - 1 and b[i, :, [1, 3]].max() == w - 1
    assert s[i, :, [0, 2]].max() == h and s[i, :, [1, 3]].max() == w
