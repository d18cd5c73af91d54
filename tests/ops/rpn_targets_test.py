"""RPN targets: IoU bands, balanced sampling, box targets that decode back."""
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from spinenet.ops import anchors as anchors_lib
from spinenet.ops import box_ops
from spinenet.ops import rpn_targets


def _anchors(size=128, min_level=3, max_level=6):
  multilevel = anchors_lib.multilevel_anchors(
      min_level, max_level, 1, (0.5, 1.0, 2.0), 3.0, (size, size))
  return tf.concat([tf.reshape(v, [-1, 4]) for v in multilevel.values()], 0)


def _iou(a, b):
  """NumPy IoU `[len(a), len(b)]`."""
  ih = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) -
               np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
  iw = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) -
               np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
  inter = ih * iw
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  return inter / (area_a[:, None] + area_b[None] - inter)


_BOXES = np.array([[10, 12, 50, 40], [60, 60, 120, 110], [5, 80, 20, 126],
                   [70, 4, 76, 10]], np.float32)


class RpnTargetsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((256, 0.5), (64, 0.25), (300, 0.5))
  def test_sampling_limits_and_every_box_has_a_positive(self, batch, fraction):
    anchors = _anchors()
    out = rpn_targets.assign_rpn_targets(
        anchors, _BOXES, batch_size_per_im=batch, fg_fraction=fraction,
        seed=[3, 4])
    scores = out['score_targets'].numpy()
    self.assertEqual(scores.shape, (anchors.shape[0],))
    self.assertEqual(scores.dtype, np.int32)
    self.assertEqual(set(np.unique(scores)) - {-1, 0, 1}, set())
    num_pos, num_neg = (scores == 1).sum(), (scores == 0).sum()
    self.assertGreater(num_pos, 0)
    self.assertLessEqual(num_pos, int(batch * fraction))
    # Negatives abound here, so the minibatch is full.
    self.assertEqual(num_pos + num_neg, batch)
    # Every box is some positive's match (force match).
    positive = out['positive'].numpy()
    matched = set(out['match_indices'].numpy()[positive])
    self.assertEqual(matched, set(range(len(_BOXES))))
    # The IoU bands: sampled negatives < 0.3; sampled positives >= 0.7 unless
    # the best anchor of their box.
    iou = _iou(anchors.numpy(), _BOXES)
    self.assertTrue((iou[scores == 0].max(axis=1) < 0.3).all())
    best = iou.argmax(axis=0)
    for i in np.flatnonzero(positive):
      self.assertTrue(iou[i].max() >= 0.7 or i in best)

  def test_box_targets_decode_back_to_the_matched_box(self):
    anchors = _anchors()
    out = rpn_targets.assign_rpn_targets(anchors, _BOXES, seed=[1, 2])
    positive = out['positive'].numpy()
    targets = out['box_targets'].numpy()
    self.assertAllEqual(targets[~positive], np.zeros_like(targets[~positive]))
    decoded = box_ops.decode_boxes(targets[positive],
                                   tf.boolean_mask(anchors, positive))
    self.assertAllClose(decoded, _BOXES[out['match_indices'].numpy()[positive]],
                        atol=1e-3)
    # Box targets for every positive, sampled or not (the references' way).
    self.assertGreaterEqual(positive.sum(),
                            (out['score_targets'].numpy() == 1).sum())

  def test_positive_fraction_caps_many_positives(self):
    anchors = _anchors()
    # Many boxes equal to anchors: hundreds of positives.
    boxes = tf.gather(anchors, tf.range(0, 300, 2))
    out = rpn_targets.assign_rpn_targets(anchors, boxes, seed=[0, 1])
    scores = out['score_targets'].numpy()
    self.assertGreater(out['positive'].numpy().sum(), 128)
    self.assertEqual((scores == 1).sum(), 128)
    self.assertEqual((scores == 0).sum(), 128)

  def test_no_boxes_samples_only_negatives(self):
    anchors = _anchors()
    out = rpn_targets.assign_rpn_targets(anchors, tf.zeros([0, 4]),
                                         seed=[0, 0])
    scores = out['score_targets'].numpy()
    self.assertEqual((scores == 0).sum(), 256)
    self.assertEqual((scores == 1).sum(), 0)
    self.assertAllEqual(out['box_targets'], tf.zeros_like(out['box_targets']))

  def test_seeded_draw_is_reproducible_and_random(self):
    anchors = _anchors()
    a = rpn_targets.assign_rpn_targets(anchors, _BOXES, seed=[5, 6])
    b = rpn_targets.assign_rpn_targets(anchors, _BOXES, seed=[5, 6])
    c = rpn_targets.assign_rpn_targets(anchors, _BOXES, seed=[7, 6])
    self.assertAllEqual(a['score_targets'], b['score_targets'])
    self.assertNotAllEqual(a['score_targets'], c['score_targets'])

  def test_sampling_is_uniform_over_negatives(self):
    positive = tf.zeros([40], tf.bool)
    negative = tf.range(40) < 20
    counts = np.zeros(40)
    for i in range(200):
      _, neg = rpn_targets.balanced_sample(positive, negative, 5, 0.5,
                                           seed=[i, 0])
      counts += neg.numpy()
    self.assertEqual(counts[20:].sum(), 0)
    self.assertEqual(counts.sum(), 200 * 5)
    # Each of the 20 is drawn 50 times on average; all are drawn.
    self.assertGreater(counts[:20].min(), 20)

  def test_static_shapes_in_a_function(self):
    anchors = _anchors()
    fn = tf.function(lambda boxes: rpn_targets.assign_rpn_targets(
        anchors, boxes, seed=tf.constant([1, 1])))
    out = fn.get_concrete_function(tf.TensorSpec([None, 4])).structured_outputs
    self.assertEqual(out['score_targets'].shape, [anchors.shape[0]])
    self.assertEqual(out['box_targets'].shape, [anchors.shape[0], 4])

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'positive_fraction'):
      rpn_targets.balanced_sample(tf.zeros([4], tf.bool), tf.ones([4], tf.bool),
                                  4, 1.5)


if __name__ == '__main__':
  tf.test.main()
