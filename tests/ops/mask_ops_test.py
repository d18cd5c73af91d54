"""paste_masks against a per-pixel NumPy reference and the Model Garden's paste."""
import numpy as np
import tensorflow as tf

from official.vision.ops import mask_ops as mg_mask_ops
from spinenet.ops import mask_ops


def _reference(masks, boxes, height, width):
  """Per pixel: the mask's bilinear value (zero outside the grid) at the pixel centre."""
  n, mh, mw = masks.shape
  out = np.zeros((n, height, width), np.float64)
  for k in range(n):
    ymin, xmin, ymax, xmax = boxes[k]
    if ymax <= ymin or xmax <= xmin:
      continue
    padded = np.pad(masks[k].astype(np.float64), 1)  # zero border
    for y in range(height):
      u = (y + 0.5 - ymin) / (ymax - ymin) * mh - 0.5 + 1  # +1: padded index
      for x in range(width):
        v = (x + 0.5 - xmin) / (xmax - xmin) * mw - 0.5 + 1
        i0, j0 = int(np.floor(u)), int(np.floor(v))
        fu, fv = u - i0, v - j0
        total = 0.0
        for i, wi in ((i0, 1 - fu), (i0 + 1, fu)):
          for j, wj in ((j0, 1 - fv), (j0 + 1, fv)):
            if 0 <= i < mh + 2 and 0 <= j < mw + 2:
              total += wi * wj * padded[i, j]
        out[k, y, x] = total
  return out


class PasteMasksTest(tf.test.TestCase):

  def test_matches_the_reference_inside_outside_and_across_edges(self):
    rng = np.random.default_rng(0)
    masks = rng.uniform(0, 1, (5, 7, 6)).astype(np.float32)
    boxes = np.array([[3.0, 4.0, 20.0, 30.0],      # inside
                      [-8.0, -5.0, 10.0, 12.0],    # over the top-left corner
                      [15.0, 25.0, 40.0, 50.0],    # over the bottom-right corner
                      [2.3, 7.7, 2.9, 19.1],       # thinner than a pixel
                      [-30.0, -30.0, -2.0, -2.0]],  # entirely outside
                     np.float32)
    got = mask_ops.paste_masks(masks, boxes, 24, 32).numpy()
    self.assertEqual(got.shape, (5, 24, 32))
    self.assertEqual(got.dtype, np.float32)
    self.assertAllClose(got, _reference(masks, boxes, 24, 32), atol=1e-5)
    self.assertAllEqual(got[4], np.zeros((24, 32)))
    # Nothing beyond half a cell around the box.
    self.assertAllEqual(got[0, :2], np.zeros((2, 32)))
    self.assertAllEqual(got[0, 22:], np.zeros((2, 32)))

  def test_empty_boxes_give_zero_masks(self):
    masks = np.ones((3, 4, 4), np.float32)
    boxes = np.array([[5.0, 5.0, 5.0, 9.0], [5.0, 9.0, 8.0, 2.0], [0, 0, 0, 0]],
                     np.float32)
    got = mask_ops.paste_masks(masks, boxes, 12, 12).numpy()
    self.assertAllEqual(got, np.zeros((3, 12, 12)))
    self.assertTrue(np.all(np.isfinite(got)))

  def test_a_mask_of_ones_covers_the_pixels_centred_in_its_box(self):
    masks = np.ones((1, 28, 28), np.float32)
    boxes = np.array([[10.0, 4.0, 20.0, 30.0]], np.float32)
    got = mask_ops.binarize(mask_ops.paste_masks(masks, boxes, 32, 40)).numpy()
    want = np.zeros((32, 40), np.uint8)
    want[10:20, 4:30] = 1
    self.assertAllEqual(got[0], want)
    # The box edge samples half the mask.
    pasted = mask_ops.paste_masks(masks, np.array([[10.5, 4.5, 20.0, 30.0]],
                                                  np.float32), 32, 40).numpy()
    self.assertAllClose(pasted[0, 10, 15], 0.5, atol=1e-6)
    self.assertAllClose(pasted[0, 15, 4], 0.5, atol=1e-6)

  def test_left_right_halves_land_in_the_box_halves(self):
    masks = np.zeros((1, 28, 28), np.float32)
    masks[0, :, :14] = 1.0  # left half of the box
    boxes = np.array([[0.0, 20.0, 40.0, 60.0]], np.float32)
    got = mask_ops.binarize(mask_ops.paste_masks(masks, boxes, 40, 80)).numpy()[0]
    self.assertAllEqual(got[:, 20:40], np.ones((40, 20)))
    self.assertAllEqual(got[:, 40:], np.zeros((40, 40)))
    self.assertAllEqual(got[:, :20], np.zeros((40, 20)))

  def test_agrees_with_the_model_gardens_warp_after_thresholding(self):
    rng = np.random.default_rng(1)
    # Smooth masks (blobs), so thresholding is not decided by noise.
    yy, xx = np.mgrid[0:28, 0:28] / 27.0
    masks = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.08)
                      for cy, cx in rng.uniform(0.3, 0.7, (6, 2))]).astype(np.float32)
    corners = rng.uniform(-10, 90, (6, 2, 2))
    lo, hi = corners.min(1), corners.max(1) + 8.0
    boxes = np.concatenate([lo, hi], -1).astype(np.float32)  # ymin, xmin, ymax, xmax
    ours = mask_ops.binarize(mask_ops.paste_masks(masks, boxes, 80, 96)).numpy()
    xywh = np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1],
                     boxes[:, 2] - boxes[:, 0]], -1)
    theirs = mg_mask_ops.paste_instance_masks_v2(masks, xywh, 80, 96)
    for k in range(len(masks)):
      differ = np.sum(ours[k] != theirs[k])
      area = max(np.sum(theirs[k]), 1)
      self.assertLessEqual(differ, max(2, 0.03 * area), f'mask {k}: {differ} of {area}')
    self.assertGreater(np.sum(ours), 100)

  def test_static_shapes_in_a_function_with_a_tensor_frame_size(self):
    fn = tf.function(mask_ops.paste_masks, input_signature=[
        tf.TensorSpec([None, 28, 28], tf.float32), tf.TensorSpec([None, 4], tf.float32),
        tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    masks = np.random.default_rng(2).uniform(0, 1, (3, 28, 28)).astype(np.float32)
    boxes = np.array([[1, 2, 10, 12], [0, 0, 5, 5], [3, 3, 3, 3]], np.float32)
    got = fn(masks, boxes, tf.constant(14), tf.constant(16)).numpy()
    self.assertAllClose(got, _reference(masks, boxes, 14, 16), atol=1e-5)
    static = mask_ops.paste_masks(tf.zeros([4, 28, 28]), tf.zeros([4, 4]), 20, 30)
    self.assertEqual(static.shape.as_list(), [4, 20, 30])

  def test_compiles_with_xla(self):
    masks = np.random.default_rng(3).uniform(0, 1, (4, 28, 28)).astype(np.float32)
    boxes = np.array([[1, 2, 10, 12], [-3, 0, 5, 25], [3, 3, 3, 3], [0, 0, 16, 20]],
                     np.float32)
    fn = tf.function(lambda m, b: mask_ops.paste_masks(m, b, 16, 20), jit_compile=True)
    self.assertAllClose(fn(masks, boxes), _reference(masks, boxes, 16, 20), atol=1e-5)

  def test_rejects_masks_without_a_static_size(self):
    with self.assertRaisesRegex(ValueError, r'\[N, Mh, Mw\]'):
      mask_ops.paste_masks(tf.zeros([2, 28]), tf.zeros([2, 4]), 8, 8)


if __name__ == '__main__':
  tf.test.main()
