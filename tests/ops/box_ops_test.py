"""Box coding, clipping, areas and IoU, checked by hand and against the Model Garden."""
import numpy as np
import tensorflow as tf

from official.vision.ops import box_ops as mg_box_ops
from spinenet.ops import box_ops


def _random_boxes(rng, n, size=100.0):
  corners = rng.uniform(0.0, size, [n, 2, 2])
  lo, hi = corners.min(axis=1), corners.max(axis=1) + 1.0  # yx min, yx max
  return tf.constant(np.concatenate([lo, hi], axis=-1), tf.float32)


class BoxOpsTest(tf.test.TestCase):

  def test_decode_inverts_encode(self):
    rng = np.random.default_rng(0)
    boxes, anchors = _random_boxes(rng, 200), _random_boxes(rng, 200)
    for weights in (None, (10.0, 10.0, 5.0, 5.0)):
      deltas = box_ops.encode_boxes(boxes, anchors, weights)
      self.assertAllClose(box_ops.decode_boxes(deltas, anchors, weights), boxes,
                          atol=1e-3)

  def test_encode_by_hand(self):
    anchor = tf.constant([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), 10 x 20
    box = tf.constant([[5.0, 10.0, 25.0, 50.0]])  # centre (15, 30), 20 x 40
    want = [[10 / 10, 20 / 20, np.log(2.0), np.log(2.0)]]
    self.assertAllClose(box_ops.encode_boxes(box, anchor), want, atol=1e-6)

  def test_encode_and_decode_match_the_model_garden(self):
    rng = np.random.default_rng(1)
    boxes, anchors = _random_boxes(rng, 300), _random_boxes(rng, 300)
    for weights in (None, [10.0, 10.0, 5.0, 5.0]):
      self.assertAllClose(box_ops.encode_boxes(boxes, anchors, weights),
                          mg_box_ops.encode_boxes(boxes, anchors, weights), atol=1e-5)
      # Large dh, dw exercise the clip of exp().
      deltas = tf.constant(rng.normal(0.0, 3.0, [300, 4]), tf.float32)
      self.assertAllClose(box_ops.decode_boxes(deltas, anchors, weights),
                          mg_box_ops.decode_boxes(deltas, anchors, weights), rtol=1e-5)

  def test_clip_matches_the_model_garden(self):
    rng = np.random.default_rng(2)
    boxes = tf.constant(rng.uniform(-50.0, 150.0, [2, 50, 4]), tf.float32)
    image_shape = tf.constant([[100.0, 80.0], [60.0, 120.0]])
    got = box_ops.clip_boxes(boxes, image_shape[:, None, :])
    self.assertAllEqual(got, mg_box_ops.clip_boxes(boxes, image_shape[:, None, :]))
    self.assertAllEqual(box_ops.clip_boxes(boxes[0], (100.0, 80.0)),
                        mg_box_ops.clip_boxes(boxes[0], [100.0, 80.0]))

  def test_area_and_iou_by_hand(self):
    a = tf.constant([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = tf.constant([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    self.assertAllClose(box_ops.box_area(a), [4.0, 1.0])
    self.assertAllClose(box_ops.box_area(tf.constant([[2.0, 2.0, 1.0, 5.0]])), [0.0])
    self.assertAllClose(box_ops.pairwise_iou(a, b),
                        [[1 / 7, 0.0, 1.0], [0.0, 0.0, 0.25]])
    empty = tf.zeros([1, 4])
    self.assertAllClose(box_ops.pairwise_iou(empty, empty), [[0.0]])

  def test_iou_matches_the_model_garden(self):
    rng = np.random.default_rng(3)
    a, b = _random_boxes(rng, 40)[None], _random_boxes(rng, 30)[None]
    self.assertAllClose(box_ops.pairwise_iou(a, b), mg_box_ops.bbox_overlap(a, b),
                        atol=1e-5)

  def test_tf1_coding_by_hand(self):
    # The authors' TF1 convention: a box spans ymax - ymin + 1 pixels.
    anchor = tf.constant([[0.0, 0.0, 9.0, 19.0]])  # 10 x 20 pixels, centre (5, 10)
    self.assertAllClose(box_ops.decode_boxes(tf.zeros([1, 4]), anchor, coding='tf1'),
                        anchor, atol=1e-6)
    # Shift by one height and width, double both sizes: centre (15, 30), 20 x 40.
    deltas = tf.constant([[1.0, 1.0, np.log(2.0), np.log(2.0)]])
    self.assertAllClose(box_ops.decode_boxes(deltas, anchor, coding='tf1'),
                        [[5.0, 10.0, 24.0, 49.0]], atol=1e-5)
    # The standard coding of the same numbers differs by the pixel.
    self.assertAllClose(box_ops.decode_boxes(deltas, anchor),
                        [[4.5, 9.5, 22.5, 47.5]], atol=1e-5)
    boxes = tf.constant([[-3.0, 5.0, 70.0, 130.0]])
    self.assertAllClose(box_ops.clip_boxes(boxes, (64.0, 128.0), coding='tf1'),
                        [[0.0, 5.0, 63.0, 127.0]])
    self.assertAllClose(box_ops.clip_boxes(boxes, (64.0, 128.0)), [[0.0, 5.0, 64.0, 128.0]])
    with self.assertRaisesRegex(ValueError, 'box coding'):
      box_ops.clip_boxes(boxes, (64.0, 128.0), coding='legacy')


if __name__ == '__main__':
  tf.test.main()
