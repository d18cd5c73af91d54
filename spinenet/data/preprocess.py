"""Image and box transforms shared by the detection parsers.

The geometry is the RetinaNet/SpineNet recipe: scale the image (keeping its
aspect ratio) so it fits a square of `random_scale * output_size` pixels,
crop a random `output_size` window out of it when it is larger, and pad the
rest with zeros (after normalization, i.e. the mean colour).

The image is resampled once, from just the region of the original that the
window shows: `tf.io.decode_and_crop_jpeg` decodes only that region and one
bilinear resize (half-pixel centres, as `tf.image.resize`) maps it onto the
output. Zooming in 2x therefore never builds the 2x image. The region's
edges are rounded to whole source pixels, so the scale and offset applied
differ from the drawn ones by at most one source pixel over the window (at
2x zoom and 640 output pixels, 0.3% in size); the parsers report, and apply
to the boxes, the transform actually used, so boxes and pixels agree: an original point `(y, x)` lands at
`(y * y_scale - y_offset, x * x_scale - x_offset)`. Without a crop (no
jitter, evaluation, zooming out) it is exactly `tf.image.resize` to the
scaled size, as the Model Garden does.
"""
from typing import NamedTuple, Optional

import tensorflow as tf

from spinenet.data import decoder as decoder_lib

# ImageNet statistics in 0..255 RGB, as the Model Garden normalizes.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def random_uniform(shape, minval=0.0, maxval=1.0, seed=None):
  """`tf.random.uniform`, or its stateless version when `seed` (int `[2]`) is given."""
  if seed is None:
    return tf.random.uniform(shape, minval, maxval)
  return tf.random.stateless_uniform(shape, seed, minval, maxval)


def normalize_image(image):
  """uint8 or float `[..., 3]` RGB in 0..255 -> float32 `(x - mean) / std`."""
  image = tf.cast(image, tf.float32)
  return (image - MEAN_RGB) * [1.0 / s for s in STDDEV_RGB]


def scale_window(image_size, output_size, scale_min=1.0, scale_max=1.0,
                 seed=None):
  """Picks the scale and crop offset of the RetinaNet resize-and-crop.

  Args:
    image_size: int or float `[2]`, original `(height, width)`.
    output_size: `(height, width)` ints, the model input size.
    scale_min: smallest random scale of `output_size` (1.0: no jitter).
    scale_max: largest random scale of `output_size`.
    seed: optional int `[2]` for stateless random numbers.

  Returns:
    scale: float32 `[2]`, `(y_scale, x_scale)` = scaled size / image size.
    scaled_size: float32 `[2]`, the size of the whole scaled image (>= 1).
    offset: float32 `[2]`, `(y_offset, x_offset)` of the crop in the scaled
      image; whole numbers, 0 without jitter.
  """
  image_size = tf.cast(image_size, tf.float32)
  out = tf.constant(output_size, tf.float32)
  jitter = scale_min != 1.0 or scale_max != 1.0
  if seed is not None:
    seed_scale, seed_offset = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
  else:
    seed_scale = seed_offset = None
  target = out
  if jitter:
    target = tf.round(random_uniform([], scale_min, scale_max, seed_scale) * out)
  scale = tf.minimum(target[0] / image_size[0], target[1] / image_size[1])
  scaled_size = tf.maximum(tf.round(image_size * scale), 1.0)
  if jitter:
    max_offset = tf.maximum(scaled_size - out, 0.0)
    offset = tf.floor(max_offset * random_uniform([2], seed=seed_offset))
  else:
    offset = tf.zeros([2])
  return scaled_size / image_size, scaled_size, offset


def visible_size(output_size, scaled_size, offset):
  """int32 `[2]`: rows and columns of the output that the image covers."""
  return tf.cast(tf.minimum(tf.constant(output_size, tf.float32),
                            scaled_size - offset), tf.int32)


def source_window(image_size, scale, offset, size):
  """The whole-pixel region of the original shown by an output window.

  Args:
    image_size: int `[2]`, original `(height, width)`.
    scale: float32 `[2]`, drawn `(y_scale, x_scale)`.
    offset: float32 `[2]`, drawn crop offset in the scaled image.
    size: int32 `[2]`, output window `(height, width)`.

  Returns:
    lo: int32 `[2]`, first row and column of the region.
    hi: int32 `[2]`, one past the last (`hi > lo`).
    scale: float32 `[2]`, the scale applied: `size / (hi - lo)`.
    offset: float32 `[2]`, the offset applied: `lo * scale`.
  """
  image_size = tf.cast(image_size, tf.int32)
  first = offset / scale
  last = (offset + tf.cast(size, tf.float32)) / scale
  lo = tf.clip_by_value(tf.cast(tf.round(first), tf.int32), 0, image_size - 1)
  hi = tf.clip_by_value(tf.cast(tf.round(last), tf.int32), lo + 1, image_size)
  applied = tf.cast(size, tf.float32) / tf.cast(hi - lo, tf.float32)
  return lo, hi, applied, tf.cast(lo, tf.float32) * applied


def decode_region(image, lo, hi, flip=None):
  """Rows `[lo[0], hi[0])` and columns `[lo[1], hi[1])` of an image.

  Args:
    image: uint8 `[H, W, 3]`, or a string scalar of encoded bytes (a JPEG
      is decoded only over the region; other formats whole).
    lo: int32 `[2]`.
    hi: int32 `[2]`.
    flip: optional bool scalar; if True the region is mirrored left-right.

  Returns:
    uint8 `[hi[0] - lo[0], hi[1] - lo[1], 3]`.
  """
  if image.dtype == tf.string:
    window = tf.concat([lo, hi - lo], 0)
    region = tf.cond(
        tf.io.is_jpeg(image),
        lambda: tf.io.decode_and_crop_jpeg(image, window, channels=3),
        lambda: decoder_lib.decode_image(image)[lo[0]:hi[0], lo[1]:hi[1]])
  else:
    region = image[lo[0]:hi[0], lo[1]:hi[1]]
  if flip is not None:
    region = tf.cond(flip, lambda: tf.reverse(region, [1]), lambda: region)
  return region


def resize(region, size):
  """Bilinear resize (half-pixel centres) of uint8 `[h, w, 3]` to float32 `[*size, 3]`."""
  return tf.image.resize(tf.cast(region, tf.float32), size)


def normalize_and_pad(image, output_size):
  """`(image - mean) / std`, then zero-padded bottom and right.

  Args:
    image: float32 `[h, w, 3]`, RGB 0..255, `h <= output_size[0]`,
      `w <= output_size[1]`.
    output_size: `(height, width)` ints.

  Returns:
    float32 `[output_size[0], output_size[1], 3]`.
  """
  # Per-channel constants broadcast over a [h, w * 3] view: broadcasting along
  # a long inner axis is several times faster on CPU than over [h, w, 3].
  out_h, out_w = output_size
  inv_std = tf.constant([1.0 / s for s in STDDEV_RGB] * out_w)[tf.newaxis]
  bias = tf.constant([-m / s for m, s in zip(MEAN_RGB, STDDEV_RGB)] * out_w)
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  flat = tf.reshape(image, [h, w * 3])
  flat = flat * inv_std[:, :w * 3] + bias[tf.newaxis, :w * 3]
  flat = tf.pad(flat, [[0, out_h - h], [0, (out_w - w) * 3]])
  return tf.reshape(flat, [out_h, out_w, 3])


def denormalize_boxes(boxes, image_size):
  """Normalized `[N, 4]` yxyx -> pixels of an image of `image_size` `(h, w)`."""
  h, w = tf.unstack(tf.cast(image_size, tf.float32))
  return boxes * tf.stack([h, w, h, w])


def scale_and_crop_boxes(boxes, scale, offset, size):
  """Maps pixel boxes of the original into the output and clips them.

  Args:
    boxes: float32 `[N, 4]`, ymin, xmin, ymax, xmax in original pixels.
    scale: float32 `[2]` `(y_scale, x_scale)`.
    offset: float32 `[2]` `(y_offset, x_offset)`.
    size: `[2]` `(height, width)` of the visible output region.

  Returns:
    float32 `[N, 4]` in output pixels, clipped to `[0, size]`.
  """
  scale4 = tf.tile(scale, [2])
  offset4 = tf.tile(offset, [2])
  size4 = tf.tile(tf.cast(size, tf.float32), [2])
  return tf.clip_by_value(boxes * scale4 - offset4, 0.0, size4)


def flip_boxes(boxes, width):
  """Mirrors pixel boxes `[N, 4]` yxyx left-right in an image `width` wide."""
  ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
  width = tf.cast(width, boxes.dtype)
  return tf.stack([ymin, width - xmax, ymax, width - xmin], axis=-1)


def non_empty(boxes):
  """bool `[N]`: boxes with positive height and width."""
  return tf.logical_and(boxes[:, 2] > boxes[:, 0], boxes[:, 3] > boxes[:, 1])


class Window(NamedTuple):
  """The geometric transform of one training example.

  Attributes:
    lo: int32 `[2]`, first row and column of the original that is shown.
    hi: int32 `[2]`, one past the last.
    scale: float32 `[2]`, `(y_scale, x_scale)` applied.
    offset: float32 `[2]`, `(y_offset, x_offset)` applied: original `(y, x)`
      lands at `(y * y_scale - y_offset, x * x_scale - x_offset)` before the
      flip.
    size: int32 `[2]`, rows and columns of the output the image covers.
    flip: bool scalar (mirror the covered width), or None when flipping is
      off.
  """
  lo: tf.Tensor
  hi: tf.Tensor
  scale: tf.Tensor
  offset: tf.Tensor
  size: tf.Tensor
  flip: Optional[tf.Tensor]


def train_window(image_size, output_size, scale_min=1.0, scale_max=1.0,
                 hflip=True, seed=None) -> Window:
  """Draws the scale jitter, crop and flip of one training example.

  Args:
    image_size: int `[2]`, original `(height, width)`.
    output_size: `(height, width)` ints, the model input size.
    scale_min: smallest random scale of `output_size` (1.0: no jitter).
    scale_max: largest random scale.
    hflip: bool, draw a horizontal flip with probability 0.5.
    seed: optional int `[2]` for stateless random numbers.

  Returns:
    `Window`: apply it with `decode_region` + `resize` to the image,
    `transform_boxes` to boxes and `crop_masks_to_boxes` to masks.
  """
  seed_window = seed_flip = None
  if seed is not None:
    seed_window, seed_flip = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
  scale, scaled_size, offset = scale_window(
      image_size, output_size, scale_min, scale_max, seed=seed_window)
  size = visible_size(output_size, scaled_size, offset)
  lo, hi, scale, offset = source_window(image_size, scale, offset, size)
  flip = None
  if hflip:
    flip = random_uniform([], seed=seed_flip) < 0.5
  return Window(lo, hi, scale, offset, size, flip)


def transform_boxes(boxes, image_size, window: Window):
  """Normalized `[N, 4]` yxyx boxes -> output pixels of `window`, clipped and flipped."""
  boxes = denormalize_boxes(boxes, image_size)
  boxes = scale_and_crop_boxes(boxes, window.scale, window.offset, window.size)
  if window.flip is not None:
    boxes = tf.cond(window.flip, lambda: flip_boxes(boxes, window.size[1]),
                    lambda: boxes)
  return boxes


def crop_masks_to_boxes(masks, boxes, window: Window, crop_size: int):
  """Each instance mask, cropped to its output box, resampled to a square.

  The box is mapped back into the original mask (undoing the flip, scale
  and crop of `window`) and cropped there by `crop_masks_to_pixel_boxes`, so
  the crop is what the box covers in the output image, at `crop_size`
  resolution; with a flip the crop is mirrored like the image.

  Args:
    masks: float32 `[N, H, W]`, in the original image frame.
    boxes: float32 `[N, 4]`, ymin, xmin, ymax, xmax in output pixels
      (`transform_boxes` of the same window), non-empty.
    window: the `Window` applied to the image.
    crop_size: int, side of the output crops.

  Returns:
    float32 `[N, crop_size, crop_size]` in [0, 1] for 0/1 masks.
  """
  if window.flip is not None:
    boxes = tf.cond(window.flip, lambda: flip_boxes(boxes, window.size[1]),
                    lambda: boxes)
  scale4 = tf.tile(window.scale, [2])
  offset4 = tf.tile(window.offset, [2])
  original = (boxes + offset4) / scale4  # continuous pixel coordinates
  crops = crop_masks_to_pixel_boxes(masks, original, crop_size)
  if window.flip is not None:
    crops = tf.cond(window.flip, lambda: tf.reverse(crops, [2]),
                    lambda: crops)
  return crops


def crop_masks_to_pixel_boxes(masks, boxes, crop_size: int):
  """Each mask cropped to its box (pixels of the mask), resampled to a square.

  The box is sampled on a `crop_size` grid of cell centres with bilinear
  interpolation (edge pixels repeated outward, as `tf.image.resize` does):
  the inverse of `ops.mask_ops.paste_masks`' geometry, so pasting the crop
  back over the same box gives the mask again (up to resampling).

  Args:
    masks: float32 `[N, H, W]`.
    boxes: float32 `[N, 4]`, ymin, xmin, ymax, xmax in continuous pixel
      coordinates of `masks` (pixel `i` spans `[i, i + 1)`).
    crop_size: int, side of the output crops.

  Returns:
    float32 `[N, crop_size, crop_size]` in [0, 1] for 0/1 masks.
  """
  # Cell centres of a crop_size grid over each box, as pixel indices of the
  # mask padded by one repeated pixel on every side (index = coordinate -
  # 0.5 + 1), in crop_and_resize's normalized form (index / (size - 1)).
  m = float(crop_size)
  y0, x0, y1, x1 = tf.unstack(boxes, 4, axis=-1)
  first_y = y0 + 0.5 * (y1 - y0) / m + 0.5
  last_y = y0 + (m - 0.5) * (y1 - y0) / m + 0.5
  first_x = x0 + 0.5 * (x1 - x0) / m + 0.5
  last_x = x0 + (m - 0.5) * (x1 - x0) / m + 0.5
  padded = tf.pad(masks, [[0, 0], [1, 1], [1, 1]], mode='SYMMETRIC')
  span = tf.cast(tf.shape(padded)[1:] - 1, tf.float32)
  normalized = tf.stack([first_y / span[0], first_x / span[1],
                         last_y / span[0], last_x / span[1]], axis=-1)
  return tf.image.crop_and_resize(
      padded[..., tf.newaxis], normalized,
      tf.range(tf.shape(masks)[0]), [crop_size, crop_size])[..., 0]
