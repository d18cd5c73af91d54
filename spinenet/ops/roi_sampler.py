"""Second-stage training targets of Mask R-CNN: ROI sampling, box and mask targets.

`sample_rois` matches proposals (plus, by default, the ground-truth boxes
themselves) to ground truth by IoU and draws a fixed number of them with a
fixed foreground share; `box_targets` encodes the matched boxes;
`sample_masks` takes the foreground ROIs and crops each one's ground-truth
mask to it. Static shapes everywhere.
"""
import tensorflow as tf

from spinenet.ops import box_ops

# Box coding of the second stage (Faster R-CNN): dy, dx scaled by 10, dh, dw by 5.
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _valid_gt(gt_boxes, gt_classes):
  """bool `[B, G]`: real ground truth (padding rows have class -1 / boxes -1)."""
  return tf.logical_and(gt_classes > 0, tf.reduce_max(gt_boxes, -1) >= 0.0)


def sample_rois(proposals, gt_boxes, gt_classes, *, num_samples=512,
                foreground_fraction=0.25, foreground_iou_threshold=0.5,
                background_iou_high_threshold=0.5,
                background_iou_low_threshold=0.0, mix_gt_boxes=True, seed=None):
  """Draws the ROIs the box head trains on, with their matched ground truth.

  Every candidate (the proposals, and the ground-truth boxes when
  `mix_gt_boxes`) takes the ground-truth box it overlaps most. Candidates
  with IoU >= `foreground_iou_threshold` are foreground; those with IoU in
  `[background_iou_low_threshold, background_iou_high_threshold)` and a
  non-empty box are background. Up to `round(num_samples *
  foreground_fraction)` foreground candidates are drawn uniformly at random,
  the rest of the `num_samples` slots are background drawn at random; if
  there is not enough background, the remaining foreground, then anything
  else, fills the slots (such filler rows get class 0). Sampled rows come
  foreground first.

  Args:
    proposals: float `[B, P, 4]`, ymin, xmin, ymax, xmax in input pixels.
    gt_boxes: float `[B, G, 4]`, same frame; padding rows are -1.
    gt_classes: int `[B, G]`; padding rows are -1 (0 is never a real class).
    num_samples: int, ROIs per image.
    foreground_fraction: float, share of foreground among them at most.
    foreground_iou_threshold, background_iou_high_threshold,
    background_iou_low_threshold: floats.
    mix_gt_boxes: bool, add the ground-truth boxes to the candidates.
    seed: optional int for the random draw.

  Returns:
    dict with `rois` float32 `[B, num_samples, 4]`, `class_targets` int32
    `[B, num_samples]` (0 background), `matched_gt_boxes` float32
    `[B, num_samples, 4]` (zeros for background), `matched_gt_indices` int32
    `[B, num_samples]` (row of `gt_boxes`, -1 for background).
  """
  proposals = tf.cast(proposals, tf.float32)
  gt_boxes = tf.cast(gt_boxes, tf.float32)
  gt_classes = tf.cast(gt_classes, tf.int32)
  valid_gt = _valid_gt(gt_boxes, gt_classes)
  candidates = tf.concat([proposals, gt_boxes], 1) if mix_gt_boxes else proposals
  num_candidates = candidates.shape[1]
  if num_candidates < num_samples:
    raise ValueError(
        f'sample_rois needs at least num_samples={num_samples} candidates; got '
        f'{num_candidates} (proposals + ground truth). Lower the ROI sampler\'s '
        'num_samples or raise the proposal count.')
  iou = box_ops.pairwise_iou(candidates, gt_boxes)  # [B, N, G]
  iou = tf.where(valid_gt[:, None, :], iou, -1.0)
  max_iou = tf.reduce_max(iou, -1)
  matched = tf.argmax(iou, -1, output_type=tf.int32)
  if mix_gt_boxes:
    # A padding gt row used as a candidate is not a candidate.
    candidate_ok = tf.concat(
        [tf.ones_like(proposals[..., 0], tf.bool), valid_gt], 1)
  else:
    candidate_ok = tf.ones_like(proposals[..., 0], tf.bool)
  candidate_ok = tf.logical_and(candidate_ok, box_ops.box_area(candidates) > 0.0)
  positive = tf.logical_and(candidate_ok, max_iou >= foreground_iou_threshold)
  negative = tf.logical_and(
      candidate_ok, tf.logical_and(max_iou >= background_iou_low_threshold,
                                   max_iou < background_iou_high_threshold))
  # With no valid ground truth every IoU is -1: all proposals are background.
  any_gt = tf.reduce_any(valid_gt, -1, keepdims=True)
  negative = tf.logical_or(negative, tf.logical_and(candidate_ok, tf.logical_not(any_gt)))

  num_fg = int(round(num_samples * foreground_fraction))
  noise = tf.random.uniform(tf.shape(max_iou), seed=seed)  # [B, N] in [0, 1)
  # The chosen foreground: the num_fg positives with the largest noise.
  fg_key = tf.where(positive, noise, -1.0)
  kth = tf.math.top_k(fg_key, k=min(num_fg, num_candidates)).values[:, -1:]
  chosen_fg = tf.logical_and(positive, fg_key >= tf.maximum(kth, 0.0))
  # Tiers: chosen foreground, background, other foreground, the rest.
  key = tf.where(chosen_fg, 6.0 + noise,
                 tf.where(negative, 4.0 + noise,
                          tf.where(positive, 2.0 + noise, noise)))
  _, index = tf.math.top_k(key, k=num_samples, sorted=True)

  rois = tf.gather(candidates, index, batch_dims=1)
  is_fg = tf.gather(positive, index, batch_dims=1)
  gt_index = tf.gather(matched, index, batch_dims=1)
  classes = tf.gather(gt_classes, gt_index, batch_dims=1)
  boxes = tf.gather(gt_boxes, gt_index, batch_dims=1)
  return {
      'rois': rois,
      'class_targets': tf.where(is_fg, classes, 0),
      'matched_gt_boxes': tf.where(is_fg[..., None], boxes, 0.0),
      'matched_gt_indices': tf.where(is_fg, gt_index, -1),
  }


def box_targets(rois, matched_gt_boxes, class_targets, weights=BOX_WEIGHTS):
  """Encoded regression targets of sampled ROIs, zeros for background.

  Args:
    rois: float `[B, R, 4]`.
    matched_gt_boxes: float `[B, R, 4]`.
    class_targets: int `[B, R]`, 0 background.
    weights: 4 floats, the coding weights of dy, dx, dh, dw.

  Returns:
    float32 `[B, R, 4]`.
  """
  targets = box_ops.encode_boxes(matched_gt_boxes, tf.cast(rois, tf.float32), weights)
  return tf.where((class_targets > 0)[..., None], targets, 0.0)


def crop_masks(gt_masks, gt_boxes, rois, output_size=28):
  """Resamples box-cropped ground-truth masks onto other boxes.

  Pixel `k` of an `M x M` mask of box `g` is centred at `g.ymin + (k + 0.5)
  * height(g) / M` (likewise for columns); output pixel `i` of box `r` is
  sampled bilinearly at `r.ymin + (i + 0.5) * height(r) / output_size`,
  zero outside the mask.

  Args:
    gt_masks: float `[N, M, M]`, masks cropped to `gt_boxes`.
    gt_boxes: float `[N, 4]`, ymin, xmin, ymax, xmax.
    rois: float `[N, 4]`, the boxes to crop to, same frame.
    output_size: int.

  Returns:
    float32 `[N, output_size, output_size]`.
  """
  masks = tf.cast(gt_masks, tf.float32)
  size = masks.shape[-1]
  gt_boxes = tf.cast(gt_boxes, tf.float32)
  rois = tf.cast(rois, tf.float32)
  gh = tf.maximum(gt_boxes[:, 2] - gt_boxes[:, 0], 1e-8)
  gw = tf.maximum(gt_boxes[:, 3] - gt_boxes[:, 1], 1e-8)

  def first_last(start, length, g_start, g_len):
    """Mask-pixel coordinates (centre of pixel k at k) of samples 0 and S-1."""
    def at(i):
      return (start + (i + 0.5) * length / output_size - g_start) * size / g_len - 0.5
    return at(0.0), at(output_size - 1.0)

  y_first, y_last = first_last(rois[:, 0], rois[:, 2] - rois[:, 0], gt_boxes[:, 0], gh)
  x_first, x_last = first_last(rois[:, 1], rois[:, 3] - rois[:, 1], gt_boxes[:, 1], gw)
  # crop_and_resize samples y1 * (M - 1) ... y2 * (M - 1) inclusive.
  scale = float(size - 1)
  crop_boxes = tf.stack([y_first, x_first, y_last, x_last], -1) / scale
  n = tf.shape(masks)[0]
  return tf.image.crop_and_resize(
      masks[..., None], crop_boxes, tf.range(n), [output_size, output_size],
      method='bilinear', extrapolation_value=0.0)[..., 0]


def sample_masks(rois, class_targets, matched_gt_boxes, matched_gt_indices,
                 gt_masks, num_masks=128, output_size=28):
  """Mask-head training rows: the first `num_masks` foreground ROIs.

  Args:
    rois, class_targets, matched_gt_boxes, matched_gt_indices: from
      `sample_rois` (foreground first).
    gt_masks: float `[B, G, M, M]`, each ground-truth mask cropped to its box.
    num_masks: int, rows per image.
    output_size: int, target resolution.

  Returns:
    dict with `mask_rois` float32 `[B, num_masks, 4]`, `mask_class_targets`
    int32 `[B, num_masks]` (0: padding row, not foreground) and
    `mask_targets` float32 `[B, num_masks, output_size, output_size]` in
    [0, 1] (zeros on padding rows).
  """
  is_fg = tf.cast(class_targets > 0, tf.int32)
  num_masks = min(num_masks, class_targets.shape[1])
  _, index = tf.math.top_k(is_fg, k=num_masks, sorted=True)  # stable: fg first
  fg_rois = tf.gather(rois, index, batch_dims=1)
  fg_classes = tf.gather(class_targets, index, batch_dims=1)
  fg_boxes = tf.gather(matched_gt_boxes, index, batch_dims=1)
  fg_gt = tf.maximum(tf.gather(matched_gt_indices, index, batch_dims=1), 0)
  masks = tf.gather(tf.cast(gt_masks, tf.float32), fg_gt, batch_dims=1)  # [B, K, M, M]
  batch = tf.shape(masks)[0]
  m = masks.shape[-1]
  crops = crop_masks(tf.reshape(masks, [-1, m, m]), tf.reshape(fg_boxes, [-1, 4]),
                     tf.reshape(fg_rois, [-1, 4]), output_size)
  crops = tf.reshape(crops, [batch, num_masks, output_size, output_size])
  crops = tf.where((fg_classes > 0)[..., None, None], crops, 0.0)
  return {'mask_rois': fg_rois, 'mask_class_targets': fg_classes,
          'mask_targets': tf.stop_gradient(crops)}
