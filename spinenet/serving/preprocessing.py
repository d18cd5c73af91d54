"""In-graph input handling of the exported signatures.

Detection: the image is scaled (aspect ratio kept) to fit the model's input
size, normalized with the ImageNet mean and std and zero-padded bottom and
right, exactly the geometry of the evaluation parser
(`spinenet.data.detection_parser.EvalParser`), so an export scores what the
evaluation measured. Classification: a central square of
`center_crop_fraction` of the short side, resized to the input size (the
ImageNet evaluation crop).

Encoded images are checked before they are decoded: empty strings, unknown
formats and images of more than `max_pixels` pixels (read from the JPEG, PNG,
GIF or BMP header, so a small file that would decode to gigabytes is refused
first) raise `InvalidArgumentError` naming the input and the limit.
"""
import tensorflow as tf

from spinenet.data import decoder as decoder_lib
from spinenet.data import preprocess
from spinenet.data import tf_example

DEFAULT_MAX_PIXELS = 1 << 25  # 33.5 megapixels, e.g. 8192 x 4096
CENTER_CROP_FRACTION = 0.875  # 224 / 256, the ImageNet evaluation crop

_PNG = b'\x89PNG\r\n\x1a\n'


def _bytes_at(encoded, start, length):
  """int64 `[length]`: bytes `[start, start + length)` of a string scalar."""
  return tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, start, length),
                                  tf.uint8), tf.int64)


def _big_endian(b):
  return tf.reduce_sum(b * tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64))


def _little_endian(b, length):
  weights = tf.constant([1, 1 << 8, 1 << 16, 1 << 24][:length], tf.int64)
  return tf.reduce_sum(b * weights)


def _message(name, *parts):
  """A string scalar `name: parts...` (`name` may be a tensor)."""
  return tf.strings.join([tf.strings.as_string(p) if not isinstance(p, str) and
                          p.dtype != tf.string else p for p in (name, ': ', *parts)])


def encoded_image_size(encoded, name='image_bytes'):
  """`(height, width)` of an encoded image from its header, without decoding.

  Args:
    encoded: string scalar, a JPEG, PNG, GIF or BMP file.
    name: string (or string scalar tensor), what the input is called in
      error messages.

  Returns:
    int64 `[2]`.

  Raises:
    InvalidArgumentError (when run): empty input, or not one of those formats.
  """
  length = tf.strings.length(encoded)
  check = tf.debugging.Assert(length > 0, [_message(
      name, 'the image is empty (0 bytes); send the bytes of a JPEG or PNG file.')])
  with tf.control_dependencies([check]):
    magic = tf.strings.substr(encoded, 0, 8)

  def jpeg():
    return tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)

  def png():
    return tf.stack([_big_endian(_bytes_at(encoded, 20, 4)),
                     _big_endian(_bytes_at(encoded, 16, 4))])

  def gif():
    return tf.stack([_little_endian(_bytes_at(encoded, 8, 2), 2),
                     _little_endian(_bytes_at(encoded, 6, 2), 2)])

  def bmp():
    height = _little_endian(_bytes_at(encoded, 22, 4), 4)
    height = tf.where(height >= 1 << 31, (1 << 32) - height, height)  # top-down
    return tf.stack([height, _little_endian(_bytes_at(encoded, 18, 4), 4)])

  def unknown():
    fail = tf.debugging.Assert(False, [_message(
        name, 'not an image: expected the bytes of a JPEG, PNG, GIF or BMP file, '
        'got ', tf.strings.as_string(length), ' bytes starting with "',
        tf.strings.substr(encoded, 0, 8), '".')])
    with tf.control_dependencies([fail]):
      return tf.zeros([2], tf.int64)

  is_gif = tf.strings.substr(magic, 0, 4) == b'GIF8'
  is_bmp = tf.logical_and(tf.strings.substr(magic, 0, 2) == b'BM', length >= 26)
  return tf.case([(tf.io.is_jpeg(encoded), jpeg),
                  (tf.logical_and(magic == _PNG, length >= 24), png),
                  (tf.logical_and(is_gif, length >= 10), gif),
                  (is_bmp, bmp)], default=unknown, exclusive=False)


def check_size(size, max_pixels, name):
  """An op failing if `size` (`[2]` height, width) is empty or too large."""
  size = tf.cast(size, tf.int64)
  pixels = size[0] * size[1]
  return tf.debugging.Assert(
      tf.logical_and(tf.reduce_all(size > 0), pixels <= max_pixels),
      [_message(name, 'the image is ', size[0], ' x ', size[1], ' pixels; at most '
                f'{max_pixels} pixels (and at least 1) are accepted. Downscale '
                'it before sending.')])


def decode(encoded, max_pixels=DEFAULT_MAX_PIXELS, name='image_bytes'):
  """Checks the header, then decodes to uint8 `[H, W, 3]` (RGB).

  Args:
    encoded: string scalar.
    max_pixels: int. Larger images are refused before decoding.
    name: string or string scalar tensor, the input's name in error messages.

  Returns:
    uint8 `[H, W, 3]`.
  """
  size = encoded_image_size(encoded, name)
  with tf.control_dependencies([check_size(size, max_pixels, name)]):
    return decoder_lib.decode_image(tf.identity(encoded))


def _normalize(images):
  """float32 `[..., 3]` 0..255 -> `(x - mean) / std`, as the parsers do."""
  inv_std = tf.constant([1.0 / s for s in preprocess.STDDEV_RGB])
  bias = tf.constant([-m / s for m, s in zip(preprocess.MEAN_RGB, preprocess.STDDEV_RGB)])
  return images * inv_std + bias


def fit_to_size(images, output_size):
  """Scales images (aspect kept) to fit `output_size`, normalizes, pads.

  Args:
    images: uint8 `[B, H, W, 3]`, or `[H, W, 3]` for one image.
    output_size: `(height, width)` ints, the model input size.

  Returns:
    inputs: float32 `[B, out_h, out_w, 3]` (no batch axis for one image),
      normalized, padded with 0 bottom and right.
    image_size: float32 `[2]`, original `(height, width)`.
    scale: float32 `[2]`, `(y_scale, x_scale)`: model-input pixels per
      original pixel.
    valid_size: float32 `[2]`, the `(height, width)` of the scaled image
      inside `inputs` (the rest is padding).
  """
  image_size = tf.shape(images)[-3:-1]
  scale, scaled_size, _ = preprocess.scale_window(image_size, output_size)
  target = tf.cast(scaled_size, tf.int32)
  pixels = tf.cast(images, tf.float32)
  pixels = tf.cond(tf.reduce_all(target == image_size), lambda: pixels,
                   lambda: tf.image.resize(pixels, target))
  pixels = _normalize(pixels)
  pad = [[0, output_size[0] - target[0]], [0, output_size[1] - target[1]], [0, 0]]
  if images.shape.rank == 4:
    pad = [[0, 0]] + pad
  inputs = tf.pad(pixels, pad)
  inputs = tf.ensure_shape(inputs, images.shape[:-3].concatenate(
      [output_size[0], output_size[1], 3]))
  return inputs, tf.cast(image_size, tf.float32), scale, scaled_size


def center_crop_and_resize(images, output_size, fraction=CENTER_CROP_FRACTION):
  """Central square crop of `fraction` of the short side, resized, normalized.

  Args:
    images: uint8 `[B, H, W, 3]` or `[H, W, 3]`.
    output_size: `(height, width)` ints.
    fraction: float in (0, 1]. Side of the crop over the short side.

  Returns:
    float32 `[B, out_h, out_w, 3]` (or `[out_h, out_w, 3]`), normalized.
  """
  size = tf.cast(tf.shape(images)[-3:-1], tf.float32)
  side = tf.maximum(tf.floor(fraction * tf.reduce_min(size)), 1.0)
  offset = tf.cast((size - side) / 2.0, tf.int32)
  side = tf.cast(side, tf.int32)
  crop = images[..., offset[0]:offset[0] + side, offset[1]:offset[1] + side, :]
  resized = tf.image.resize(tf.cast(crop, tf.float32), list(output_size))
  return _normalize(resized)


def parse_examples(serialized):
  """string `[B]` serialized tf.Examples -> string `[B]`, their `image/encoded`.

  A missing `image/encoded` gives an empty string (refused by `decode`).
  """
  features = tf.io.parse_example(
      serialized, {tf_example.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string, '')})
  return features[tf_example.IMAGE_ENCODED]
