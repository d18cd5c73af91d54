"""Box arithmetic.

Every box here is float `[..., 4]` in `ymin, xmin, ymax, xmax` order, in pixels
of the (padded) model input unless a function says otherwise. Encoded boxes are
`dy, dx, dh, dw` relative to an anchor (the Faster R-CNN / RetinaNet coding).

`coding` selects the pixel convention of `decode_boxes` and `clip_boxes`:
'standard' (the Model Garden's: a box's height is `ymax - ymin`, boxes are
clipped to `[0, height] x [0, width]`) or 'tf1' (the legacy one of the SpineNet
authors' TF1 code: height `ymax - ymin + 1`, a decoded box's max corner is
`min + size - 1`, boxes clipped to `[0, height - 1] x [0, width - 1]`).
"""
import math

import tensorflow as tf

# exp(dh) is capped at 1000/16 so a wild regression cannot overflow.
BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)
_EPSILON = 1e-8
BOX_CODINGS = ('standard', 'tf1')


def _pixel_offset(coding):
  """1.0 for the 'tf1' "+1 pixel" convention, 0.0 for 'standard'."""
  if coding not in BOX_CODINGS:
    raise ValueError(f'box coding {coding!r} is not one of {BOX_CODINGS}.')
  return 1.0 if coding == 'tf1' else 0.0


def _centers_and_sizes(boxes, offset=0.0):
  ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
  h = ymax - ymin + offset
  w = xmax - xmin + offset
  return ymin + 0.5 * h, xmin + 0.5 * w, h, w


def encode_boxes(boxes, anchors, weights=None):
  """Encodes boxes against anchors.

  Args:
    boxes: float `[..., 4]`, ymin, xmin, ymax, xmax.
    anchors: float `[..., 4]` broadcastable to `boxes`, same order and units.
    weights: optional 4 floats multiplying dy, dx, dh, dw.

  Returns:
    float `[..., 4]`: dy, dx, dh, dw.
  """
  boxes = tf.cast(boxes, anchors.dtype)
  yc, xc, h, w = _centers_and_sizes(boxes)
  ayc, axc, ah, aw = _centers_and_sizes(anchors)
  ah += _EPSILON
  aw += _EPSILON
  deltas = [(yc - ayc) / ah, (xc - axc) / aw,
            tf.math.log((h + _EPSILON) / ah), tf.math.log((w + _EPSILON) / aw)]
  if weights:
    deltas = [d * wt for d, wt in zip(deltas, weights)]
  return tf.stack(deltas, axis=-1)


def decode_boxes(deltas, anchors, weights=None, coding='standard'):
  """Inverse of `encode_boxes` (for `coding='standard'`).

  Args:
    deltas: float `[..., 4]`: dy, dx, dh, dw.
    anchors: float `[..., 4]` broadcastable to `deltas`: ymin, xmin, ymax, xmax.
    weights: optional 4 floats that divided dy, dx, dh, dw at encoding.
    coding: 'standard' or 'tf1' (the authors' "+1 pixel" sizes; module doc).

  Returns:
    float `[..., 4]`: ymin, xmin, ymax, xmax, in the anchors' units.
  """
  deltas = tf.cast(deltas, anchors.dtype)
  dy, dx, dh, dw = tf.unstack(deltas, 4, axis=-1)
  if weights:
    dy, dx, dh, dw = dy / weights[0], dx / weights[1], dh / weights[2], dw / weights[3]
  dh = tf.minimum(dh, BBOX_XFORM_CLIP)
  dw = tf.minimum(dw, BBOX_XFORM_CLIP)
  offset = _pixel_offset(coding)
  ayc, axc, ah, aw = _centers_and_sizes(anchors, offset)
  yc = dy * ah + ayc
  xc = dx * aw + axc
  h = tf.exp(dh) * ah
  w = tf.exp(dw) * aw
  ymin = yc - 0.5 * h
  xmin = xc - 0.5 * w
  return tf.stack([ymin, xmin, ymin + h - offset, xmin + w - offset], axis=-1)


def clip_boxes(boxes, image_shape, coding='standard'):
  """Clips boxes to `[0, height] x [0, width]` ('tf1': to `height - 1`, `width - 1`).

  Args:
    boxes: float `[..., 4]`, ymin, xmin, ymax, xmax in pixels.
    image_shape: `(height, width)`, a float `[..., 2]` tensor broadcastable to
      the boxes' leading dims (e.g. `[B, 1, 2]` for boxes `[B, N, 4]`), or two
      numbers.
    coding: 'standard' or 'tf1' (module doc).

  Returns:
    float `[..., 4]`.
  """
  image_shape = tf.cast(image_shape, boxes.dtype)
  if image_shape.shape.rank == 1:
    height, width = image_shape[0], image_shape[1]
  else:
    height, width = image_shape[..., 0], image_shape[..., 1]
  offset = _pixel_offset(coding)
  height, width = height - offset, width - offset
  ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
  zero = tf.zeros([], boxes.dtype)
  return tf.stack([tf.clip_by_value(ymin, zero, height),
                   tf.clip_by_value(xmin, zero, width),
                   tf.clip_by_value(ymax, zero, height),
                   tf.clip_by_value(xmax, zero, width)], axis=-1)


def box_area(boxes):
  """float `[..., 4]` -> float `[...]` (negative extents count as zero)."""
  ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
  return tf.maximum(ymax - ymin, 0.0) * tf.maximum(xmax - xmin, 0.0)


def pairwise_iou(boxes_a, boxes_b):
  """IoU of every box in `boxes_a` with every box in `boxes_b`.

  Args:
    boxes_a: float `[..., N, 4]`, ymin, xmin, ymax, xmax.
    boxes_b: float `[..., M, 4]`, same order and units.

  Returns:
    float `[..., N, M]`; 0 where the union is empty.
  """
  a = tf.expand_dims(boxes_a, -2)  # [..., N, 1, 4]
  b = tf.expand_dims(boxes_b, -3)  # [..., 1, M, 4]
  inter_h = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
  inter_w = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
  inter = inter_h * inter_w
  union = box_area(a) + box_area(b) - inter
  return tf.math.divide_no_nan(inter, union)
