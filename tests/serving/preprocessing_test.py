"""serving.preprocessing: header sizes, refusals that name the input, fit and crop."""
import io
import struct
import zlib

import numpy as np
from PIL import Image
import tensorflow as tf

from spinenet.serving import preprocessing

_MEAN = np.array([0.485, 0.456, 0.406]) * 255
_STD = np.array([0.229, 0.224, 0.225]) * 255


def _image(height, width, seed=0):
  """uint8 `[H, W, 3]` noise."""
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _png_header(height, width):
  """The first 33 bytes of a PNG claiming `height` x `width`."""
  ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  chunk = b'IHDR' + ihdr
  return (b'\x89PNG\r\n\x1a\n' + struct.pack('>I', len(ihdr)) + chunk +
          struct.pack('>I', zlib.crc32(chunk)))


def _tf_example(encoded):
  return tf.train.Example(features=tf.train.Features(feature={
      'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
  })).SerializeToString()


def _encode(pixels, fmt):
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format=fmt)
  return buf.getvalue()


class EncodedImageSizeTest(tf.test.TestCase):

  def test_reads_height_and_width_from_every_header(self):
    pixels = _image(37, 53)
    for fmt in ('JPEG', 'PNG', 'GIF', 'BMP'):
      size = preprocessing.encoded_image_size(tf.constant(_encode(pixels, fmt)))
      self.assertEqual(size.dtype, tf.int64)
      self.assertAllEqual(size, [37, 53], msg=fmt)

  def test_top_down_bmp_has_a_negative_height(self):
    data = bytearray(_encode(_image(6, 9), 'BMP'))
    data[22:26] = struct.pack('<i', -6)
    self.assertAllEqual(preprocessing.encoded_image_size(tf.constant(bytes(data))), [6, 9])

  def test_empty_and_unknown_inputs_are_refused_by_name(self):
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r'photo\[2\]: the image is empty'):
      preprocessing.encoded_image_size(tf.constant(b''), name='photo[2]')
    with self.assertRaisesRegex(
        tf.errors.InvalidArgumentError,
        r'image_bytes: not an image.*got 10 bytes starting with "plain te"'):
      preprocessing.encoded_image_size(tf.constant(b'plain text'))
    # A PNG signature without its header is too short to hold a size.
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, 'not an image'):
      preprocessing.encoded_image_size(tf.constant(b'\x89PNG\r\n\x1a\n1234'))


class DecodeTest(tf.test.TestCase):

  def test_decodes_to_rgb(self):
    pixels = _image(20, 30)
    image = preprocessing.decode(tf.constant(_encode(pixels, 'PNG')))
    self.assertEqual(image.dtype, tf.uint8)
    self.assertAllEqual(image, pixels)
    gray = preprocessing.decode(tf.constant(_encode(pixels[..., 0], 'PNG')))
    self.assertEqual(gray.shape, (20, 30, 3))
    self.assertAllEqual(gray[..., 2], pixels[..., 0])

  def test_a_decompression_bomb_is_refused_from_its_header(self):
    bomb = _png_header(100_000, 100_000)  # 33 bytes, no pixel data
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                'image_bytes: the image is 100000 x 100000 pixels; '
                                'at most 1000 pixels'):
      preprocessing.decode(tf.constant(bomb), max_pixels=1000)

  def test_check_size_bounds(self):
    preprocessing.check_size(tf.constant([10, 10]), 100, 'x')  # exactly the limit
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, 'x: the image is 10 x 11'):
      preprocessing.check_size(tf.constant([10, 11]), 100, 'x')
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, 'at least 1'):
      preprocessing.check_size(tf.constant([0, 5]), 100, 'x')


class FitToSizeTest(tf.test.TestCase):

  def test_no_resize_when_the_image_already_fits_its_long_side(self):
    pixels = _image(64, 128)
    inputs, image_size, scale, valid = preprocessing.fit_to_size(tf.constant(pixels), (128, 128))
    self.assertEqual(inputs.shape, (128, 128, 3))
    self.assertAllClose(inputs[:64], (pixels - _MEAN) / _STD, atol=1e-4)
    self.assertFalse(inputs[64:].numpy().any())
    self.assertAllClose(image_size, [64, 128])
    self.assertAllClose(scale, [1, 1])
    self.assertAllClose(valid, [64, 128])

  def test_resizes_keeping_the_aspect_ratio(self):
    pixels = _image(100, 50)
    inputs, image_size, scale, valid = preprocessing.fit_to_size(tf.constant(pixels), (64, 64))
    self.assertAllClose(valid, [64, 32])
    self.assertAllClose(scale, [0.64, 0.64])
    self.assertAllClose(image_size, [100, 50])
    resized = tf.image.resize(pixels.astype(np.float32), [64, 32]).numpy()
    self.assertAllClose(inputs[:, :32], (resized - _MEAN) / _STD, atol=1e-4)
    self.assertFalse(inputs[:, 32:].numpy().any())

  def test_a_batch_gives_each_image_what_it_gets_alone(self):
    batch = np.stack([_image(48, 80, seed=s) for s in range(2)])
    inputs, *_ = preprocessing.fit_to_size(tf.constant(batch), (64, 64))
    self.assertEqual(inputs.shape, (2, 64, 64, 3))
    for i in range(2):
      alone, *_ = preprocessing.fit_to_size(tf.constant(batch[i]), (64, 64))
      self.assertAllClose(inputs[i], alone)

  def test_static_output_shape_in_a_graph(self):
    fn = tf.function(lambda x: preprocessing.fit_to_size(x, (64, 96))[0])
    spec = tf.TensorSpec([None, None, None, 3], tf.uint8)
    self.assertEqual(fn.get_concrete_function(spec).output_shapes.as_list(),
                     [None, 64, 96, 3])


class CenterCropTest(tf.test.TestCase):

  def test_central_square_of_the_short_side(self):
    pixels = _image(8, 12)
    out = preprocessing.center_crop_and_resize(tf.constant(pixels), (4, 4), fraction=0.5)
    # Side 4 of the short side 8, offsets (8 - 4) / 2 = 2 and (12 - 4) / 2 = 4.
    self.assertAllClose(out, (pixels[2:6, 4:8] - _MEAN) / _STD, atol=1e-4)

  def test_whole_short_side_and_batches(self):
    batch = np.stack([_image(10, 16, seed=s) for s in range(2)])
    out = preprocessing.center_crop_and_resize(tf.constant(batch), (10, 10), fraction=1.0)
    self.assertEqual(out.shape, (2, 10, 10, 3))
    self.assertAllClose(out, (batch[:, :, 3:13] - _MEAN) / _STD, atol=1e-4)


class ParseExamplesTest(tf.test.TestCase):

  def test_image_encoded_or_empty(self):
    with_image = _tf_example(b'abc')
    without = tf.train.Example().SerializeToString()
    self.assertAllEqual(preprocessing.parse_examples(tf.constant([with_image, without])),
                        [b'abc', b''])


if __name__ == '__main__':
  tf.test.main()
