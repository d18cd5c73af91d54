"""Multi-level anchors: equal to the Model Garden's, in the same flat order."""
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from official.vision.ops import anchor as mg_anchor
from spinenet.ops import anchors as anchors_lib


class AnchorsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      dict(image_size=(128, 128), anchor_size=3.0, num_scales=3),
      dict(image_size=(256, 192), anchor_size=4.0, num_scales=3),
      dict(image_size=(100, 130), anchor_size=3.0, num_scales=2),  # not multiples of 128
  )
  def test_equal_the_model_garden_anchors(self, image_size, anchor_size, num_scales):
    ratios = (0.5, 1.0, 2.0)
    ours = anchors_lib.multilevel_anchors(3, 7, num_scales, ratios, anchor_size,
                                          image_size)
    theirs = mg_anchor.Anchor(3, 7, num_scales, list(ratios), anchor_size,
                              list(image_size)).multilevel_boxes
    self.assertEqual(sorted(ours), sorted(theirs))
    for level in theirs:
      self.assertEqual(ours[level].shape, theirs[level].shape)
      self.assertAllClose(ours[level], theirs[level], atol=1e-4)

  def test_boxes_by_hand(self):
    anchors = anchors_lib.multilevel_anchors(3, 3, 1, (1.0, 4.0), 2.0, (16, 16))['3']
    self.assertEqual(anchors.shape, (2, 2, 8))
    # Cell (0, 1): centre (4, 12); size 2 * 8 = 16, ratio 4 gives 8 x 32.
    self.assertAllClose(anchors[0, 1], [-4, 4, 12, 20, 0, -4, 8, 28])

  def test_flatten_follows_level_row_column_anchor_order(self):
    level_sizes = {'3': (4, 4), '4': (2, 2)}
    tensors = {l: tf.reshape(tf.range(h * w * 3 * 2, dtype=tf.float32) + 1000 * int(l),
                             [1, h, w, 3 * 2]) for l, (h, w) in level_sizes.items()}
    flat = anchors_lib.flatten_multilevel(tensors, 2)
    self.assertEqual(flat.shape, (1, 16 * 3 + 4 * 3, 2))
    expected = np.concatenate([np.arange(96).reshape(-1, 2) + 3000,
                               np.arange(24).reshape(-1, 2) + 4000])
    self.assertAllEqual(flat[0], expected)
    # Unbatched tensors (anchors) too, levels sorted numerically.
    unbatched = anchors_lib.flatten_multilevel({l: t[0] for l, t in tensors.items()}, 2)
    self.assertAllEqual(unbatched, expected)

  def test_flat_anchors_line_up_with_the_model_garden_flat_boxes(self):
    ours = anchors_lib.flatten_multilevel(
        anchors_lib.multilevel_anchors(3, 7, 3, (0.5, 1.0, 2.0), 3.0, (128, 128)), 4)
    theirs = mg_anchor.Anchor(3, 7, 3, [0.5, 1.0, 2.0], 3.0, [128, 128]).multilevel_boxes
    theirs = tf.concat([tf.reshape(theirs[str(l)], [-1, 4]) for l in range(3, 8)], 0)
    self.assertAllClose(ours, theirs, atol=1e-4)

  def test_counts_and_errors(self):
    self.assertEqual(anchors_lib.num_anchors_per_location(3, (0.5, 1.0, 2.0)), 9)
    self.assertEqual(anchors_lib.feature_size((100, 130), 3), (13, 17))
    with self.assertRaisesRegex(ValueError, 'min_level=5, max_level=3'):
      anchors_lib.multilevel_anchors(5, 3, 3, (1.0,), 3.0, (64, 64))


if __name__ == '__main__':
  tf.test.main()
