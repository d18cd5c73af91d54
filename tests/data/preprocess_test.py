"""preprocess: the resize-crop-pad geometry and pixel transforms, checked by hand."""
import io

import numpy as np
from PIL import Image
import tensorflow as tf

from spinenet.data import preprocess

_MEAN = np.array([0.485, 0.456, 0.406]) * 255
_STD = np.array([0.229, 0.224, 0.225]) * 255


def _encode(pixels, fmt):
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format=fmt, quality=90)
  return buf.getvalue()


class PixelTest(tf.test.TestCase):

  def test_normalize_image_uses_imagenet_statistics(self):
    pixels = np.array([[[0, 128, 255], [255, 255, 255]]], np.uint8)
    out = preprocess.normalize_image(pixels)
    self.assertEqual(out.dtype, tf.float32)
    self.assertAllClose(out, (pixels - _MEAN) / _STD, atol=1e-5)

  def test_normalize_and_pad_pads_bottom_and_right_with_zeros(self):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (5, 7, 3)).astype(np.float32)
    out = preprocess.normalize_and_pad(tf.constant(image), (8, 10)).numpy()
    self.assertEqual(out.shape, (8, 10, 3))
    self.assertAllClose(out[:5, :7], (image - _MEAN) / _STD, atol=1e-4)
    self.assertFalse(out[5:].any())
    self.assertFalse(out[:, 7:].any())
    full = preprocess.normalize_and_pad(tf.constant(image), (5, 7))
    self.assertAllClose(full, (image - _MEAN) / _STD, atol=1e-4)

  def test_resize_is_bilinear_with_half_pixel_centres(self):
    row = np.array([[[0, 0, 0], [100, 100, 100]]], np.uint8)  # 1 x 2
    out = preprocess.resize(row, [1, 4]).numpy()[0, :, 0]
    # Output centres sample the input at x = -0.25, 0.25, 0.75, 1.25.
    self.assertAllClose(out, [0, 25, 75, 100])

  def test_decode_region_of_an_array_and_of_encoded_bytes(self):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    lo, hi = tf.constant([3, 8]), tf.constant([19, 33])
    expected = pixels[3:19, 8:33]
    self.assertAllEqual(preprocess.decode_region(tf.constant(pixels), lo, hi), expected)
    self.assertAllEqual(
        preprocess.decode_region(tf.constant(_encode(pixels, 'PNG')), lo, hi), expected)
    jpeg = _encode(pixels, 'JPEG')
    whole = tf.io.decode_jpeg(jpeg).numpy()
    region = preprocess.decode_region(tf.constant(jpeg), lo, hi)
    self.assertEqual(region.shape, (16, 25, 3))
    self.assertLess(np.abs(region.numpy().astype(int) - whole[3:19, 8:33]).max(), 3)
    flipped = preprocess.decode_region(tf.constant(pixels), lo, hi, flip=tf.constant(True))
    self.assertAllEqual(flipped, expected[:, ::-1])
    kept = preprocess.decode_region(tf.constant(pixels), lo, hi, flip=tf.constant(False))
    self.assertAllEqual(kept, expected)


class GeometryTest(tf.test.TestCase):

  def test_scale_window_fits_the_long_side_without_jitter(self):
    scale, scaled, offset = preprocess.scale_window([200, 100], (128, 128))
    self.assertAllClose(scale, [0.64, 0.64])
    self.assertAllClose(scaled, [128, 64])
    self.assertAllClose(offset, [0, 0])
    # Rounding the scaled size makes the two scales differ slightly.
    scale, scaled, _ = preprocess.scale_window([100, 300], (128, 128))
    self.assertAllClose(scaled, [43, 128])
    self.assertAllClose(scale, [0.43, 128 / 300])
    # A non-square output: the tighter side decides.
    _, scaled, _ = preprocess.scale_window([100, 100], (64, 128))
    self.assertAllClose(scaled, [64, 64])

  def test_scale_window_keeps_at_least_one_pixel(self):
    _, scaled, _ = preprocess.scale_window([1000, 1], (128, 128))
    self.assertAllClose(scaled, [128, 1])

  def test_jittered_window_is_seeded_and_in_range(self):
    sizes, offsets = set(), []
    for i in range(24):
      seed = tf.constant([3, i], tf.int64)
      scale, scaled, offset = preprocess.scale_window([100, 100], (128, 128), 0.5, 2.0,
                                                      seed=seed)
      again = preprocess.scale_window([100, 100], (128, 128), 0.5, 2.0, seed=seed)
      self.assertAllEqual(tf.stack([scale, scaled, offset]), tf.stack(again))
      side = float(scaled[0])
      self.assertBetween(side, 64, 256)
      self.assertEqual(side, round(side))
      self.assertAllClose(scale, [side / 100] * 2)
      off = offset.numpy()
      self.assertAllEqual(off, np.floor(off))
      self.assertTrue(np.all(off >= 0) and np.all(off <= max(side - 128, 0)))
      sizes.add(side > 128)
      offsets.append(off)
    self.assertEqual(sizes, {True, False})  # zooms in and out
    self.assertGreater(np.max(offsets), 0)

  def test_visible_size(self):
    self.assertAllEqual(preprocess.visible_size((128, 128), tf.constant([200., 64.]),
                                                tf.constant([50., 0.])), [128, 64])
    self.assertAllEqual(preprocess.visible_size((128, 128), tf.constant([200., 300.]),
                                                tf.constant([100., 250.])), [100, 50])

  def test_source_window_rounds_to_whole_source_pixels(self):
    lo, hi, scale, offset = preprocess.source_window(
        [100, 200], tf.constant([0.5, 0.5]), tf.constant([10., 20.]), [32, 64])
    self.assertAllEqual(lo, [20, 40])
    self.assertAllEqual(hi, [84, 168])
    self.assertAllClose(scale, [0.5, 0.5])
    self.assertAllClose(offset, [10, 20])
    # 0.7x from row 3: rows 4.29..18.57 round to [4, 19): 15 rows onto 10.
    lo, hi, scale, offset = preprocess.source_window(
        [100, 100], tf.constant([0.7, 0.7]), tf.constant([3., 0.]), [10, 10])
    self.assertAllEqual(lo, [4, 0])
    self.assertAllEqual(hi, [19, 14])
    self.assertAllClose(scale, [10 / 15, 10 / 14])
    self.assertAllClose(offset, [4 * 10 / 15, 0])

  def test_source_window_stays_inside_the_image_and_non_empty(self):
    lo, hi, scale, _ = preprocess.source_window(
        [100, 100], tf.constant([1.0, 1.0]), tf.constant([99., 120.]), [10, 10])
    self.assertAllEqual(lo, [99, 99])
    self.assertAllEqual(hi, [100, 100])
    self.assertAllClose(scale, [10, 10])


class BoxTest(tf.test.TestCase):

  def test_denormalize_boxes_is_yxyx(self):
    boxes = preprocess.denormalize_boxes(tf.constant([[0.5, 0.25, 1.0, 1.0]]), [100, 200])
    self.assertAllClose(boxes, [[50, 50, 100, 200]])

  def test_scale_and_crop_boxes_maps_then_clips(self):
    boxes = tf.constant([[10., 20., 50., 80.], [0., 0., 4., 10.]])
    out = preprocess.scale_and_crop_boxes(boxes, tf.constant([0.5, 2.0]),
                                          tf.constant([0., 30.]), tf.constant([100, 100]))
    # y * 0.5, x * 2 - 30, clipped to [0, 100].
    self.assertAllClose(out, [[5, 10, 25, 100], [0, 0, 2, 0]])

  def test_flip_boxes_mirrors_and_is_its_own_inverse(self):
    boxes = tf.constant([[1., 10., 5., 30.], [0., 0., 8., 100.]])
    flipped = preprocess.flip_boxes(boxes, 100)
    self.assertAllClose(flipped, [[1, 70, 5, 90], [0, 0, 8, 100]])
    self.assertAllClose(preprocess.flip_boxes(flipped, 100), boxes)

  def test_non_empty(self):
    boxes = tf.constant([[0., 0., 1., 1.], [0., 0., 0., 1.], [0., 5., 1., 5.],
                         [2., 0., 1., 1.]])
    self.assertAllEqual(preprocess.non_empty(boxes), [True, False, False, False])



def _window(scale=(1.0, 1.0), offset=(0.0, 0.0), size=(8, 10), flip=None):
  return preprocess.Window(
      tf.zeros([2], tf.int32), tf.constant(size, tf.int32),
      tf.constant(scale, tf.float32), tf.constant(offset, tf.float32),
      tf.constant(size, tf.int32), None if flip is None else tf.constant(flip))


class MaskCropTest(tf.test.TestCase):

  def test_crop_samples_cell_centres(self):
    """A box of whole pixels cropped at its own size is those pixels."""
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(2, 8, 10)).astype(np.float32)
    boxes = tf.constant([[0, 0, 8, 10], [2, 3, 6, 7]], tf.float32)
    crops = preprocess.crop_masks_to_boxes(masks, boxes, _window(), 4)
    # 4x4 crop of the 4x4-pixel box: exactly its pixels.
    self.assertAllClose(crops[1], masks[1, 2:6, 3:7], atol=1e-6)
    # The whole 8x10 mask into 4x4: tf.image.resize's (half-pixel) samples.
    self.assertAllClose(crops[0], tf.image.resize(masks[0, ..., None],
                                                  [4, 4])[..., 0], atol=1e-5)

  def test_crop_undoes_scale_offset_and_flip(self):
    rng = np.random.default_rng(1)
    masks = rng.uniform(size=(1, 8, 10)).astype(np.float32)
    # Output = original * 2 - (4, 6), seen 8 x 10 and mirrored: the output
    # box [0, 0, 8, 8] shows original rows 2..6 and, mirrored, columns 4..8
    # (output columns 2..10 before the flip).
    window = _window(scale=(2.0, 2.0), offset=(4.0, 6.0), size=(8, 10),
                     flip=True)
    crops = preprocess.crop_masks_to_boxes(
        masks, tf.constant([[0.0, 0.0, 8.0, 8.0]]), window, 4)
    self.assertAllClose(crops[0], masks[0, 2:6, 4:8][:, ::-1], atol=1e-6)

  def test_train_window_is_the_retinanet_draw(self):
    window = preprocess.train_window([100, 150], (64, 64), 0.5, 2.0, True,
                                     seed=tf.constant([1, 2]))
    again = preprocess.train_window([100, 150], (64, 64), 0.5, 2.0, True,
                                    seed=tf.constant([1, 2]))
    tf.nest.map_structure(self.assertAllEqual, tuple(window), tuple(again))
    self.assertIsNone(preprocess.train_window([100, 150], (64, 64),
                                              hflip=False).flip)


if __name__ == '__main__':
  tf.test.main()
