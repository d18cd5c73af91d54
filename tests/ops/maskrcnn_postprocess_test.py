"""Mask R-CNN post-processing: per-class decoding and per-class NMS."""
import numpy as np
import tensorflow as tf

from spinenet.ops import maskrcnn_postprocess


def test_per_class_nms_and_ordering():
  k = 4
  rois = tf.constant([[[10, 10, 50, 50], [12, 12, 52, 52], [60, 60, 100, 100]]], tf.float32)
  logits = np.full((1, 3, k), -10.0, np.float32)
  logits[0, 0, 1] = 5.0  # roi 0: class 1
  logits[0, 1, 1] = 4.0  # roi 1 overlaps roi 0, same class: suppressed
  logits[0, 1, 2] = 4.0  # ... but as class 2 it stays
  logits[0, 2, 3] = 3.0
  deltas = tf.zeros([1, 3, 4 * k])
  out = maskrcnn_postprocess.generate_detections(
      tf.constant(logits), deltas, rois, tf.constant([[90.0, 95.0]]), max_detections=5)
  n = int(out['num_detections'][0])
  assert n == 3
  # Softmax scores: roi 0 / class 1 and roi 2 / class 3 near 1, roi 1's two
  # classes share its probability (about 0.5 each).
  assert out['detection_classes'][0, :n].numpy().tolist() == [1, 3, 2]
  s = out['detection_scores'][0].numpy()
  assert np.all(np.diff(s[:n]) <= 0) and np.all(s[n:] == 0)
  np.testing.assert_allclose(out['detection_boxes'][0, :n].numpy(),
                             [[10, 10, 50, 50], [60, 60, 90, 95], [12, 12, 52, 52]],
                             atol=1e-4)  # the last one clipped


def test_decode_uses_class_deltas_and_weights():
  rois = tf.constant([[[0, 0, 10, 20]]], tf.float32)
  deltas = np.zeros((1, 1, 8), np.float32)
  deltas[0, 0, 4:] = [10.0, 0.0, 0.0, 0.0]  # class 1: shift by one roi height
  boxes = maskrcnn_postprocess.decode_per_class(tf.constant(deltas), rois,
                                                tf.constant([[100.0, 100.0]]))
  np.testing.assert_allclose(boxes[0, 0].numpy(), [[0, 0, 10, 20], [10, 0, 20, 20]],
                             atol=1e-5)


def test_tf1_box_coding_decodes_and_clips_with_the_extra_pixel():
  rois = tf.constant([[[0, 0, 9, 19]]], tf.float32)  # 10 x 20 pixels in TF1's convention
  deltas = np.zeros((1, 1, 8), np.float32)
  deltas[0, 0, 4:] = [10.0, 0.0, 0.0, 0.0]  # class 1: shift by one roi height
  boxes = maskrcnn_postprocess.decode_per_class(tf.constant(deltas), rois,
                                                tf.constant([[15.0, 100.0]]),
                                                box_coding='tf1')
  np.testing.assert_allclose(boxes[0, 0].numpy(), [[0, 0, 9, 19], [10, 0, 14, 19]],
                             atol=1e-5)
