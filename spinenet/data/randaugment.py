"""RandAugment (Cubuk et al., 2020): N random image ops of one magnitude M.

The 14 ops of the paper: identity, auto-contrast, equalize, rotate, solarize,
color, posterize, contrast, brightness, sharpness, shear x / y, translate x /
y. Pure TensorFlow on one uint8 `[H, W, 3]` image; the shape is unchanged, so
a static shape stays static. Randomness is stateless: the same `seed` gives
the same result.

Magnitude `M` in `[0, MAX_MAGNITUDE]` (10, as the paper's ImageNet runs)
sets every op's strength, and 0 means the identity for every op:

| op | at magnitude M |
|---|---|
| rotate | +-30 * M/10 degrees |
| shear x, y | +-0.3 * M/10 (shear factor) |
| translate x, y | +-0.45 * M/10 of the image side (100 px at 224) |
| color, contrast, brightness, sharpness | blend factor 1 +- 0.9 * M/10 |
| solarize | invert pixels >= 256 - 256 * M/10 |
| posterize | keep 8 - round(4 * M/10) bits |
| auto-contrast, equalize, identity | (no magnitude) |

Signs are random. The ranges are the paper's; unlike its reference code
(whose enhance factor is `0.1 + 1.8 * M/10`, i.e. strongest at M = 0, and whose
posterize keeps `4 - 4 * M/10` bits), every op here grows with M. Areas
uncovered by geometric ops are filled with gray (128).
"""
import math
from typing import Sequence

import tensorflow as tf

MAX_MAGNITUDE = 10.0
FILL_VALUE = 128

OPS = ('identity', 'auto_contrast', 'equalize', 'rotate', 'solarize', 'color',
       'posterize', 'contrast', 'brightness', 'sharpness', 'shear_x', 'shear_y',
       'translate_x', 'translate_y')


# === Colour ops (uint8 [H, W, 3] in, uint8 out) ===
def blend(image, degenerate, factor):
  """`degenerate + factor * (image - degenerate)`, as PIL's ImageEnhance does.

  Args:
    image: uint8 `[H, W, 3]`.
    degenerate: float32 broadcastable to `image`, the factor-0 image.
    factor: float32 scalar; 1 returns `image`, 0 `degenerate`, > 1
      extrapolates away from it.

  Returns:
    uint8 `[H, W, 3]`, rounded and clipped to 0..255.
  """
  x = tf.cast(image, tf.float32)
  out = degenerate + factor * (x - degenerate)
  return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)


def _grayscale(image):
  """float32 `[H, W, 1]` luma (ITU-R 601-2, as PIL's 'L' mode)."""
  return tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))


def color(image, factor):
  """Saturation: blends with the grayscale image."""
  return blend(image, _grayscale(image), factor)


def contrast(image, factor):
  """Contrast: blends with the mean gray level."""
  return blend(image, tf.reduce_mean(_grayscale(image)), factor)


def brightness(image, factor):
  """Brightness: blends with black."""
  return blend(image, tf.zeros([], tf.float32), factor)


def sharpness(image, factor):
  """Sharpness: blends with a 3x3 smoothed image (border pixels unchanged)."""
  x = tf.cast(image, tf.float32)
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  kernel = tf.tile(kernel[:, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(x[tf.newaxis], kernel, [1, 1, 1, 1],
                                  padding='VALID')[0]
  smooth = tf.round(smooth)
  # Keep the one-pixel border of the original, as PIL's SMOOTH filter does.
  inner = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  border = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
  degenerate = border * inner + (1.0 - border) * x
  return blend(image, degenerate, factor)


def solarize(image, threshold):
  """Inverts the pixels >= `threshold` (an int or float32 scalar)."""
  threshold = tf.cast(threshold, tf.int32)
  x = tf.cast(image, tf.int32)
  return tf.cast(tf.where(x >= threshold, 255 - x, x), tf.uint8)


def posterize(image, bits):
  """Keeps the `bits` (int32 scalar, 1..8) most significant bits."""
  shift = tf.cast(8 - bits, tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def auto_contrast(image):
  """Stretches each channel to 0..255 (channels with one value unchanged).

  Values are truncated, as PIL's `ImageOps.autocontrast` does.
  """
  x = tf.cast(image, tf.float32)
  lo = tf.reduce_min(x, axis=[0, 1])
  hi = tf.reduce_max(x, axis=[0, 1])
  scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
  offset = tf.where(hi > lo, lo, 0.0)
  out = (x - offset) * scale
  return tf.cast(tf.clip_by_value(tf.floor(out + 1e-3), 0.0, 255.0), tf.uint8)


def _equalize_channel(channel):
  """Histogram equalization of one uint8 `[H, W]` channel (PIL's algorithm)."""
  values = tf.cast(tf.reshape(channel, [-1]), tf.int32)
  hist = tf.math.bincount(values, minlength=256, maxlength=256)
  last = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)))
  step = (tf.reduce_sum(hist) - tf.reshape(last, [])) // 255

  def equalized():
    lut = (tf.cumsum(hist) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    return tf.cast(tf.gather(lut, values), tf.uint8)

  flat = tf.cond(step > 0, equalized, lambda: tf.cast(values, tf.uint8))
  return tf.reshape(flat, tf.shape(channel))


def equalize(image):
  """Equalizes the histogram of each channel."""
  return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], -1)


# === Geometric ops ===
def _transform(image, matrix):
  """Applies a projective transform (output pixel -> input pixel), nearest.

  Args:
    image: uint8 `[H, W, 3]`.
    matrix: float32 `[8]`, `(a0, a1, a2, b0, b1, b2, c0, c1)`: output point
      `(x, y)` reads input `((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k)`,
      `k = c0 x + c1 y + 1`.

  Returns:
    uint8 `[H, W, 3]`; pixels mapped from outside are `FILL_VALUE`.
  """
  shape = tf.shape(image)[:2]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[tf.newaxis], transforms=matrix[tf.newaxis],
      output_shape=shape, fill_value=float(FILL_VALUE),
      interpolation='NEAREST', fill_mode='CONSTANT')
  return tf.ensure_shape(out[0], image.shape)


def rotate(image, degrees):
  """Rotates by `degrees` (float32 scalar) about the image centre."""
  h = tf.cast(tf.shape(image)[0], tf.float32)
  w = tf.cast(tf.shape(image)[1], tf.float32)
  angle = degrees * math.pi / 180.0
  cos, sin = tf.cos(angle), tf.sin(angle)
  cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
  # input = R(angle) (output - centre) + centre
  matrix = tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                     sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])
  return _transform(image, matrix)


def shear_x(image, factor):
  """Output `(x, y)` reads input `(x + factor * y, y)`."""
  return _transform(image, tf.stack([1.0, factor, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))


def shear_y(image, factor):
  """Output `(x, y)` reads input `(x, y + factor * x)`."""
  return _transform(image, tf.stack([1.0, 0.0, 0.0, factor, 1.0, 0.0, 0.0, 0.0]))


def translate_x(image, pixels):
  """Moves the content right by `pixels` (float32 scalar; left if negative)."""
  return _transform(image, tf.stack([1.0, 0.0, -pixels, 0.0, 1.0, 0.0, 0.0, 0.0]))


def translate_y(image, pixels):
  """Moves the content down by `pixels` (float32 scalar; up if negative)."""
  return _transform(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, -pixels, 0.0, 0.0]))


# === Policy ===
def apply_op(image, name, magnitude, sign=1.0):
  """Applies op `name` at `magnitude` (see the module table).

  Args:
    image: uint8 `[H, W, 3]`.
    name: one of `OPS`.
    magnitude: float32 scalar in `[0, MAX_MAGNITUDE]`.
    sign: float32 scalar, +1 or -1, the direction of signed ops.

  Returns:
    uint8 `[H, W, 3]`.
  """
  level = tf.cast(magnitude, tf.float32) / MAX_MAGNITUDE
  sign = tf.cast(sign, tf.float32)
  side = tf.cast(tf.shape(image)[:2], tf.float32)
  if name == 'identity':
    return image
  if name == 'auto_contrast':
    return auto_contrast(image)
  if name == 'equalize':
    return equalize(image)
  if name == 'rotate':
    return rotate(image, sign * 30.0 * level)
  if name == 'solarize':
    return solarize(image, tf.round(256.0 - 256.0 * level))
  if name == 'posterize':
    return posterize(image, 8 - tf.cast(tf.round(4.0 * level), tf.int32))
  if name in ('color', 'contrast', 'brightness', 'sharpness'):
    fn = {'color': color, 'contrast': contrast, 'brightness': brightness,
          'sharpness': sharpness}[name]
    return fn(image, 1.0 + sign * 0.9 * level)
  if name == 'shear_x':
    return shear_x(image, sign * 0.3 * level)
  if name == 'shear_y':
    return shear_y(image, sign * 0.3 * level)
  if name == 'translate_x':
    return translate_x(image, sign * 0.45 * level * side[1])
  if name == 'translate_y':
    return translate_y(image, sign * 0.45 * level * side[0])
  raise ValueError(f'Unknown RandAugment op {name!r}; expected one of {OPS}.')


def randaugment(image, seed, num_layers: int = 2, magnitude: float = 10.0,
                ops: Sequence[str] = OPS):
  """Applies `num_layers` ops drawn uniformly from `ops`, each at `magnitude`.

  Args:
    image: uint8 `[H, W, 3]`.
    seed: int32/int64 `[2]`, the stateless random seed.
    num_layers: N, ops applied in sequence.
    magnitude: M in `[0, MAX_MAGNITUDE]`.
    ops: names from `OPS` to draw from.

  Returns:
    uint8 `[H, W, 3]`, the same static shape.

  Example:
    >>> image = tf.zeros([32, 32, 3], tf.uint8)
    >>> randaugment(image, seed=[1, 2], num_layers=2, magnitude=9).shape
    TensorShape([32, 32, 3])
  """
  unknown = [op for op in ops if op not in OPS]
  if unknown or not ops:
    raise ValueError(f'`ops` must be a non-empty subset of {OPS}. '
                     f'Received: ops={tuple(ops)}')
  if not 0.0 <= magnitude <= MAX_MAGNITUDE:
    raise ValueError(f'`magnitude` must be in [0, {MAX_MAGNITUDE}]. '
                     f'Received: magnitude={magnitude}')
  if image.dtype != tf.uint8:
    raise TypeError(f'randaugment expects a uint8 image. Received: {image.dtype}')
  static_shape = image.shape
  seeds = tf.random.experimental.stateless_split(seed, max(num_layers, 1) * 2)
  for layer in range(num_layers):
    op_index = tf.random.stateless_uniform(
        [], seeds[2 * layer], 0, len(ops), dtype=tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], seeds[2 * layer + 1]) < 0.5,
                    -1.0, 1.0)
    branches = [lambda name=name, x=image: apply_op(x, name, magnitude, sign)
                for name in ops]
    image = tf.switch_case(op_index, branches)
    image = tf.ensure_shape(image, static_shape)
  return image
