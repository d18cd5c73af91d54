"""Instance masks: box-relative masks pasted into an image frame.

A Mask R-CNN predicts each detection's mask as a small `M x M` grid over the
detection's own box. `paste_masks` resamples it into a frame of pixels (the
model input, or the caller's image), bilinearly, as two small matrix products
per mask, so shapes are static (the frame size may be a tensor) and the op
runs inside a SavedModel, on TPU and on CPU without a Python loop.

Geometry (pixel centres): pixel `(y, x)` of the frame covers `[y, y + 1) x
[x, x + 1)`; its value is the mask sampled at its centre `(y + 0.5, x + 0.5)`.
Mask cell `(i, j)` of a box `ymin, xmin, ymax, xmax` has its centre at
`ymin + (i + 0.5) * (ymax - ymin) / M`, `xmin + (j + 0.5) * (xmax - xmin) / M`.
Outside the grid the mask is 0, and sampling between the outer cells and that
zero border is bilinear too: a mask of ones fades to 0.5 exactly on the box
edge, so `> 0.5` keeps the pixels whose centres lie inside the box (the
effect of the one-cell zero padding Detectron and the Model Garden apply
before resizing).
"""
import tensorflow as tf

MASK_THRESHOLD = 0.5


def _axis_weights(low, high, cells, size):
  """float32 `[N, size, cells]`: bilinear weights of each cell for each pixel.

  Args:
    low, high: float32 `[N]`, the box's extent along the axis (pixels).
    cells: int, mask cells along the axis (static).
    size: int or int32 scalar, frame pixels along the axis.

  Returns:
    `w[n, p, c] = max(0, 1 - |u - c|)` where `u` is the centre of pixel `p` in
    cell units of box `n` (`u = c` at cell `c`'s centre); all zero for an empty
    box (`high <= low`).
  """
  extent = high - low
  empty = extent <= 0.0
  cell_size = tf.where(empty, tf.ones_like(extent), extent) / float(cells)
  centers = tf.cast(tf.range(size), tf.float32) + 0.5  # [size]
  u = (centers[tf.newaxis, :] - low[:, tf.newaxis]) / cell_size[:, tf.newaxis] - 0.5
  index = tf.range(cells, dtype=tf.float32)
  weights = tf.nn.relu(1.0 - tf.abs(u[:, :, tf.newaxis] - index))
  return tf.where(empty[:, tf.newaxis, tf.newaxis], tf.zeros_like(weights), weights)


def paste_masks(masks, boxes, height, width):
  """Pastes box-relative masks into a `height x width` frame.

  Args:
    masks: float `[N, Mh, Mw]` (e.g. the 28 x 28 mask probabilities of a
      Mask R-CNN, or 0/1 masks), each over its own box; `Mh`, `Mw` static.
    boxes: float `[N, 4]`, ymin, xmin, ymax, xmax in pixels of the target
      frame. Boxes may reach outside the frame (the part inside is pasted);
      empty boxes (`ymax <= ymin` or `xmax <= xmin`) give all-zero masks.
    height, width: ints or int32 scalars, the frame size.

  Returns:
    float32 `[N, height, width]`: each mask resampled bilinearly into its box
    (pixel-centre geometry, see the module docstring), 0 outside the box
    (values fade to 0 across the half cell around the box edge).

  Example:
    ```python
    pasted = paste_masks(detection_masks[0], detection_boxes[0], 480, 640)
    binary = pasted > MASK_THRESHOLD
    ```
  """
  masks = tf.convert_to_tensor(masks)
  masks = tf.cast(masks, tf.float32)
  boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
  if masks.shape.rank != 3:
    raise ValueError(f'`masks` must be [N, Mh, Mw]. Received: shape {masks.shape}')
  cells_h, cells_w = masks.shape[1], masks.shape[2]
  if cells_h is None or cells_w is None:
    raise ValueError('`masks` needs a static mask size [N, Mh, Mw]. Received: '
                     f'shape {masks.shape}')
  ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
  rows = _axis_weights(ymin, ymax, cells_h, height)  # [N, H, Mh]
  cols = _axis_weights(xmin, xmax, cells_w, width)  # [N, W, Mw]
  return tf.matmul(tf.matmul(rows, masks), cols, transpose_b=True)


def binarize(masks, threshold=MASK_THRESHOLD):
  """uint8 0/1 masks: 1 where `masks > threshold`."""
  return tf.cast(masks > threshold, tf.uint8)
