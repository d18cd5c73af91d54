"""Multi-level anchor boxes for dense detectors.

Level `l` has stride `2**l`; at each feature-map location there are
`num_scales * len(aspect_ratios)` anchors, ordered scale-major (for each
octave scale, every aspect ratio). An anchor of scale `s` and aspect ratio `r`
(width / height) has size `anchor_size * 2**l * 2**(s / num_scales)` with
height `size / sqrt(r)` and width `size * sqrt(r)`, centred on the cell centre.
"""
import math

import tensorflow as tf


def num_anchors_per_location(num_scales, aspect_ratios):
  return num_scales * len(aspect_ratios)


def feature_size(image_size, level):
  """`(height, width)` of level `level` for an input of `image_size` pixels."""
  return (int(math.ceil(image_size[0] / 2**level)),
          int(math.ceil(image_size[1] / 2**level)))


def multilevel_anchors(min_level, max_level, num_scales, aspect_ratios,
                       anchor_size, image_size):
  """Anchor boxes for every level.

  Args:
    min_level: smallest level (stride `2**min_level`).
    max_level: largest level.
    num_scales: octave scales per level (3 in the paper).
    aspect_ratios: widths over heights, e.g. `(0.5, 1.0, 2.0)`.
    anchor_size: base anchor size in units of the level's stride.
    image_size: `(height, width)` of the model input in pixels.

  Returns:
    dict `{str(level): float32 [H_l, W_l, A * 4]}`, ymin, xmin, ymax, xmax in
    input pixels, `A = num_scales * len(aspect_ratios)`.
  """
  if min_level > max_level:
    raise ValueError(
        f'`min_level` must be <= `max_level`. Received: min_level={min_level}, '
        f'max_level={max_level}')
  anchors = {}
  for level in range(min_level, max_level + 1):
    fh, fw = feature_size(image_size, level)
    stride_y = image_size[0] / fh
    stride_x = image_size[1] / fw
    yc = (tf.range(fh, dtype=tf.float32) + 0.5) * stride_y
    xc = (tf.range(fw, dtype=tf.float32) + 0.5) * stride_x
    xv, yv = tf.meshgrid(xc, yc)  # [H, W] each
    per_anchor = []
    for scale in range(num_scales):
      size = anchor_size * 2**level * 2**(scale / num_scales)
      for ratio in aspect_ratios:
        half_h = size / math.sqrt(ratio) / 2.0
        half_w = size * math.sqrt(ratio) / 2.0
        per_anchor.append(tf.stack(
            [yv - half_h, xv - half_w, yv + half_h, xv + half_w], axis=-1))
    anchors[str(level)] = tf.concat(per_anchor, axis=-1)
  return anchors


def flatten_multilevel(tensors, last_dim):
  """Concatenates `{level: [B?, H, W, A * last_dim]}` into `[B?, sum(H*W*A), last_dim]`.

  Levels are taken in increasing numeric order; within a level the order is
  row, column, anchor, which is the order `multilevel_anchors` uses.
  """
  levels = sorted(tensors, key=int)
  flat = []
  for level in levels:
    t = tensors[level]
    shape = tf.shape(t)
    if t.shape.rank == 3:
      flat.append(tf.reshape(t, [-1, last_dim]))
    else:
      flat.append(tf.reshape(t, [shape[0], -1, last_dim]))
  return tf.concat(flat, axis=-2)
