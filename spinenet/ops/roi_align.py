"""Multi-level RoIAlign: fixed-size features of boxes on a feature pyramid.

Each box reads one level, chosen by its size as in the FPN paper (Lin et al.
2017, Eq. 1): `floor(log2(sqrt(area) / 224)) + 4`, clamped to the available
levels. On that level the box is divided into `output_size x output_size`
bins and each bin reads one bilinear sample, at the bin's centre by default
(`sample_offset=0.5`).

Coordinates: a box in input pixels is divided by the level's stride `2**l`;
feature pixel `(i, j)` of a level sits at coordinate `(i, j)` (the Model
Garden's and the authors' TF1 convention). A sample's two neighbouring rows
are `y0 = clip(floor(y), 0, H_l - 1)` and `min(y0 + 1, H_l - 1)`, weighted
`1 - (y - y0)` and `y - y0` (likewise for columns), so samples beyond the
last row read the last row and samples above the first row extrapolate from
the first two, as those implementations do.

Two implementations, same results for boxes inside the image (every box the
model aligns: proposals, sampled ROIs and detections are clipped to it):

* `method='gather'`: the levels are flattened into one table and every
  sample is four gathers from it; plain TF ops that XLA compiles (TPU), and
  exactly the rule above for any box, including the extrapolation.
* `method='crop_and_resize'`: the levels are laid out on one canvas per
  image, each with a replicated last row and column, and one
  `tf.image.crop_and_resize` samples every box; an order of magnitude faster
  on CPU (no XLA kernel, so not for TPUs). Samples above or left of a level
  (boxes outside the image) read the first row instead of extrapolating.

Static shapes in both.
"""
import tensorflow as tf

_CANONICAL_SIZE = 224.0
_CANONICAL_LEVEL = 4


def assign_levels(boxes, min_level, max_level):
  """FPN level of each box.

  Args:
    boxes: float `[..., 4]`, ymin, xmin, ymax, xmax in input pixels.
    min_level, max_level: ints, the levels available.

  Returns:
    int32 `[...]` in `[min_level, max_level]`.
  """
  boxes = tf.cast(boxes, tf.float32)
  height = boxes[..., 2] - boxes[..., 0]
  width = boxes[..., 3] - boxes[..., 1]
  # An inverted box (negative area; the authors' TF1 proposals keep them)
  # counts as empty instead of giving a NaN level.
  size = tf.sqrt(tf.maximum(height * width, 0.0))
  # floor(log(s / 224) / log 2), computed as the reference implementations do
  # so that sizes at exact powers of two fall on the same side; an empty box
  # (log 0 = -inf) lands on the lowest level.
  level = tf.math.floordiv(tf.math.log(tf.math.divide_no_nan(size, _CANONICAL_SIZE)),
                           tf.math.log(2.0)) + _CANONICAL_LEVEL
  level = tf.clip_by_value(level, float(min_level), float(max_level))
  return tf.cast(level, tf.int32)


def _sample_grid(start, length, size, output_size, sample_offset):
  """Sample coordinates along one axis and their two neighbours and weights.

  Args:
    start, length: float `[B, R]`, box start and extent in level pixels.
    size: float `[B, R]`, the level's extent along this axis (pixels).
    output_size: int.
    sample_offset: float in [0, 1].

  Returns:
    `(low, high, w_low, w_high)`: int32 `[B, R, S]` indices and float32
    `[B, R, S]` weights.
  """
  steps = (tf.range(output_size, dtype=tf.float32) + sample_offset) / output_size
  coord = start[..., None] + steps * length[..., None]  # [B, R, S]
  last = size[..., None] - 1.0
  low = tf.minimum(tf.maximum(tf.floor(coord), 0.0), last)
  high = tf.minimum(low + 1.0, last)
  frac = coord - low
  return tf.cast(low, tf.int32), tf.cast(high, tf.int32), 1.0 - frac, frac


METHODS = ('gather', 'crop_and_resize', 'auto')


def resolve_method(method):
  """'auto' -> 'gather' under a TPU strategy, else 'crop_and_resize'."""
  if method not in METHODS:
    raise ValueError(f'RoIAlign method must be one of {METHODS}. Received: method={method!r}')
  if method != 'auto':
    return method
  strategy = tf.distribute.get_strategy()
  tpu = isinstance(strategy, (tf.distribute.TPUStrategy,
                              tf.distribute.experimental.TPUStrategy))
  return 'gather' if tpu else 'crop_and_resize'


def multilevel_roi_align(features, boxes, output_size=7, sample_offset=0.5,
                         method='gather'):
  """Crops `output_size x output_size` bilinear samples of every box.

  Args:
    features: dict `{str(level): float [B, H_l, W_l, C]}` with static
      spatial sizes and the same `C` on every level.
    boxes: float `[B, R, 4]`, ymin, xmin, ymax, xmax in input pixels.
    output_size: int, bins per side.
    sample_offset: float in [0, 1], where in its bin each sample lies (0.5:
      centre).
    method: 'gather', 'crop_and_resize' or 'auto' (see the module doc).

  Returns:
    float `[B, R, output_size, output_size, C]` in the features' dtype.
  """
  if resolve_method(method) == 'crop_and_resize':
    return _crop_and_resize_align(features, boxes, output_size, sample_offset)
  levels = sorted(features, key=int)
  min_level, max_level = int(levels[0]), int(levels[-1])
  dtype = features[levels[0]].dtype
  channels = features[levels[0]].shape[-1]
  batch = tf.shape(boxes)[0]
  num_boxes = boxes.shape[1] if boxes.shape[1] is not None else tf.shape(boxes)[1]
  heights = [int(features[l].shape[1]) for l in levels]
  widths = [int(features[l].shape[2]) for l in levels]
  offsets, total = [], 0
  for h, w in zip(heights, widths):
    offsets.append(total)
    total += h * w
  table = tf.reshape(
      tf.concat([tf.reshape(features[l], [batch, -1, channels]) for l in levels], 1),
      [-1, channels])  # [B * total, C]

  boxes = tf.cast(boxes, tf.float32)
  level = assign_levels(boxes, min_level, max_level)  # [B, R]
  index = level - min_level
  stride = tf.cast(tf.pow(2.0, tf.cast(level, tf.float32)), tf.float32)
  level_h = tf.gather(tf.constant(heights, tf.float32), index)
  level_w = tf.gather(tf.constant(widths, tf.float32), index)
  level_offset = tf.gather(tf.constant(offsets, tf.int32), index)
  scaled = boxes / stride[..., None]
  y0, y1, wy0, wy1 = _sample_grid(scaled[..., 0], scaled[..., 2] - scaled[..., 0],
                                  level_h, output_size, sample_offset)
  x0, x1, wx0, wx1 = _sample_grid(scaled[..., 1], scaled[..., 3] - scaled[..., 1],
                                  level_w, output_size, sample_offset)

  base = (tf.range(batch)[:, None] * total + level_offset)[..., None, None]  # [B, R, 1, 1]
  row_stride = tf.cast(level_w, tf.int32)[..., None]
  rows = tf.stack([y0, y1], -1) * row_stride[..., None]  # [B, R, S, 2]
  cols = tf.stack([x0, x1], -1)  # [B, R, S, 2]
  size2 = 2 * output_size
  # [B, R, 2S, 2S]: rows (sample, neighbour) x columns (sample, neighbour).
  flat_index = (base + tf.reshape(rows, [batch, num_boxes, size2, 1])
                + tf.reshape(cols, [batch, num_boxes, 1, size2]))
  gathered = tf.gather(table, flat_index)  # [B, R, 2S, 2S, C]
  weight_y = tf.reshape(tf.stack([wy0, wy1], -1), [batch, num_boxes, size2, 1])
  weight_x = tf.reshape(tf.stack([wx0, wx1], -1), [batch, num_boxes, 1, size2])
  weights = tf.cast(weight_y * weight_x, dtype)[..., None]  # [B, R, 2S, 2S, 1]
  weighted = tf.reshape(gathered * weights,
                        [batch, num_boxes, output_size, 2, output_size, 2, channels])
  return tf.reduce_sum(weighted, axis=[3, 5])


def _crop_and_resize_align(features, boxes, output_size, sample_offset):
  """`multilevel_roi_align` with one `crop_and_resize` over a canvas of levels."""
  levels = sorted(features, key=int)
  min_level, max_level = int(levels[0]), int(levels[-1])
  dtype = features[levels[0]].dtype
  width = max(int(features[l].shape[2]) for l in levels) + 1
  tiles, offsets, top = [], [], 0
  for level in levels:
    f = features[level]
    # Replicate the last row and column: samples in (H_l - 1, H_l] read row
    # H_l - 1, as the gather rule clamps them.
    f = tf.concat([f, f[:, -1:]], 1)
    f = tf.concat([f, f[:, :, -1:]], 2)
    tiles.append(tf.pad(f, [[0, 0], [0, 0], [0, width - f.shape[2]], [0, 0]]))
    offsets.append(top)
    top += int(f.shape[1])
  canvas = tf.cast(tf.concat(tiles, 1), tf.float32)  # [B, Hc, Wc, C]
  height = top

  boxes = tf.cast(boxes, tf.float32)
  batch = tf.shape(boxes)[0]
  num_boxes = boxes.shape[1] if boxes.shape[1] is not None else tf.shape(boxes)[1]
  level = assign_levels(boxes, min_level, max_level)
  stride = tf.pow(2.0, tf.cast(level, tf.float32))[..., None]
  offset = tf.gather(tf.constant(offsets, tf.float32), level - min_level)
  scaled = boxes / stride
  size_y = scaled[..., 2] - scaled[..., 0]
  size_x = scaled[..., 3] - scaled[..., 1]
  first = (sample_offset / output_size)
  last = (output_size - 1 + sample_offset) / output_size
  # crop_and_resize samples y1 (H - 1) ... y2 (H - 1), endpoints included.
  crop = tf.stack([(scaled[..., 0] + first * size_y + offset) / (height - 1),
                   (scaled[..., 1] + first * size_x) / (width - 1),
                   (scaled[..., 0] + last * size_y + offset) / (height - 1),
                   (scaled[..., 1] + last * size_x) / (width - 1)], -1)
  index = tf.repeat(tf.range(batch), num_boxes)
  out = tf.image.crop_and_resize(canvas, tf.reshape(crop, [-1, 4]), index,
                                 [output_size, output_size], method='bilinear')
  channels = canvas.shape[-1]
  return tf.cast(tf.reshape(out, [batch, num_boxes, output_size, output_size, channels]),
                 dtype)
