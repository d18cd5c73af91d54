"""RetinaNet post-processing: score threshold, top-k, box decoding, class-aware NMS."""
import math

import tensorflow as tf

from spinenet.ops import anchors as anchors_lib
from spinenet.ops import box_ops


def _logit(p):
  """log(p / (1 - p)): -inf for p <= 0 (keep every score), +inf for p >= 1."""
  if p <= 0.0:
    return -math.inf
  if p >= 1.0:
    return math.inf
  return math.log(p / (1.0 - p))


def _per_image(fn, elems, output_signature):
  """`fn` on every image of `elems` (a nest of `[B, ...]` tensors), stacked.

  A Python loop when the batch size is static (slicing along the batch keeps
  the buffers, where `tf.map_fn` would copy every image's logits), else
  `tf.map_fn`.
  """
  batch = tf.nest.flatten(elems)[0].shape[0]
  if batch is None:
    return tf.map_fn(fn, elems, fn_output_signature=output_signature)
  results = [fn(tf.nest.map_structure(lambda t, i=i: t[i], elems)) for i in range(batch)]
  return tf.nest.map_structure(lambda *r: tf.stack(r), *results)


def _keep_best_rows(rows, candidates, k, skip_background):
  """Keeps the candidate rows whose best reported logit is among the `k` best.

  With `M` the `k`-th largest best reported logit of a row, `k` distinct
  pairs score `>= M`, so every pair of the top `k` does too: dropping the rows
  whose best reported logit is below `M` keeps the top `k` and their order.

  Args:
    rows: list of int64 `[R_l]` anchor indices per level, `sum(R_l) > k`.
    candidates: list of float32 `[R_l, K]`, their logits.
    k: int.
    skip_background: bool. Class 0 is never reported.

  Returns:
    `(rows, candidates)`, the same lists with fewer rows (at least `k`).
  """
  first = 1 if skip_background else 0
  best = [tf.reduce_max(c[:, first:], axis=-1) for c in candidates]
  floor = tf.math.top_k(tf.concat(best, 0), k=k, sorted=True).values[k - 1]
  keep = [tf.where(b >= floor)[:, 0] for b in best]
  return ([tf.gather(r, i) for r, i in zip(rows, keep)],
          [tf.gather(c, i) for c, i in zip(candidates, keep)])


def _top_candidates(level_logits, threshold, class_thresholds, k, skip_background):
  """The best `k` (anchor, class) pairs of one image with logits above threshold.

  Exactly the first `k` entries of `tf.math.top_k` over all reported logits
  (flattened level by level, anchor-major) restricted to those above the
  threshold, ties going to the lower flat index; computed without sorting or
  copying all `N * K` logits: anchors whose best logit (background included:
  a superset) passes are found with one max over classes; if more than `k`
  pass, those that cannot hold a top-`k` pair are dropped
  (`_keep_best_rows`); the remaining rows are thresholded per class,
  compacted in flat order and sorted.

  Args:
    level_logits: list of float32 `[N_l, K]`, levels in increasing order.
    threshold: float. Logit threshold (strictly greater passes).
    class_thresholds: float32 `[K]`: `threshold` per class, `+inf` for
      classes never reported (the background).
    k: int. Candidates returned.
    skip_background: bool. Class 0 is never reported.

  Returns:
    `(logits, anchor_index, class_index, num_valid)`: float32 `[k]` sorted
    descending, int32 `[k]` index into the levels' concatenated anchors,
    int32 `[k]` class, int32 scalar. Entries past `num_valid` hold the
    lowest float32, anchor 0 and class 0.
  """
  rows = [tf.where(tf.reduce_max(x, axis=-1) > threshold)[:, 0] for x in level_logits]
  candidates = [tf.gather(x, r) for x, r in zip(level_logits, rows)]  # [R_l, K]
  if sum(x.shape[0] or math.inf for x in level_logits) > k:
    num_rows = tf.add_n([tf.size(r) for r in rows])
    rows, candidates = tf.cond(
        num_rows > k, lambda: _keep_best_rows(rows, candidates, k, skip_background),
        lambda: (rows, candidates))
  values, anchor_index, class_index = [], [], []
  offset = 0
  for x, r, c in zip(level_logits, rows, candidates):
    # Row-major: increasing anchor, then class, i.e. flat order.
    hits = tf.where(c > class_thresholds)  # [n, 2]: row, class
    values.append(tf.gather_nd(c, hits))
    anchor_index.append(tf.cast(tf.gather(r, hits[:, 0]), tf.int32) + offset)
    class_index.append(tf.cast(hits[:, 1], tf.int32))
    offset += x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
  values = tf.concat(values, 0)
  num_valid = tf.minimum(tf.size(values), k)
  top_values, order = tf.math.top_k(values, k=num_valid, sorted=True)
  padding = [[0, k - num_valid]]
  return (tf.pad(top_values, padding, constant_values=tf.float32.min),
          tf.pad(tf.gather(tf.concat(anchor_index, 0), order), padding),
          tf.pad(tf.gather(tf.concat(class_index, 0), order), padding),
          num_valid)


def generate_detections(class_logits, box_deltas, anchors, image_shape, *,
                        score_threshold=0.05, pre_nms_top_k=5000,
                        nms_iou_threshold=0.5, max_detections=100,
                        skip_background=True):
  """Turns raw RetinaNet outputs into final detections.

  Candidates are (anchor, class) pairs whose sigmoid score exceeds
  `score_threshold`; the best `pre_nms_top_k` of them (ties: lower anchor,
  then lower class first) are decoded and reduced with greedy NMS within each
  class (a box never suppresses a box of another class), keeping the best
  `max_detections`.

  Cost: thresholding happens on logits, anchors without any passing class are
  dropped by one max over classes, and only the surviving candidates are
  sorted, decoded and suppressed; nothing of size `num_anchors * num_classes`
  is copied or sorted.

  Args:
    class_logits: dict `{str(level): float [B, H_l, W_l, A * K]}`.
    box_deltas: dict `{str(level): float [B, H_l, W_l, A * 4]}`, dy, dx, dh, dw.
    anchors: dict `{str(level): float [H_l, W_l, A * 4]}`, ymin, xmin, ymax,
      xmax in pixels of the model input (`anchors.multilevel_anchors`).
    image_shape: float `[B, 2]` (height, width) to clip boxes to, in the same
      pixels (the valid, unpadded part of the input).
    score_threshold: float. Minimum sigmoid score (strictly greater passes).
    pre_nms_top_k: int. Candidates kept before NMS (over all classes).
    nms_iou_threshold: float. Same-class boxes overlapping more are suppressed.
    max_detections: int. Detections per image.
    skip_background: bool. Ignore class 0 (background).

  Returns:
    dict with `detection_boxes` float32 `[B, max_detections, 4]` (ymin, xmin,
    ymax, xmax, clipped), `detection_scores` float32 `[B, max_detections]`
    (descending), `detection_classes` int32 `[B, max_detections]` (class
    indices), `num_detections` int32 `[B]`; rows past `num_detections` are 0.
  """
  levels = sorted(class_logits, key=int)
  num_anchors = anchors[levels[0]].shape[-1] // 4
  num_classes = class_logits[levels[0]].shape[-1] // num_anchors
  logits = [tf.cast(class_logits[l], tf.float32) for l in levels]
  # [B, N_l, K] views of the logits, one per level (no copy).
  logits = [tf.reshape(x, [tf.shape(x)[0], -1, num_classes]) for x in logits]
  deltas = anchors_lib.flatten_multilevel(
      {k: tf.cast(v, tf.float32) for k, v in box_deltas.items()}, 4)
  flat_anchors = anchors_lib.flatten_multilevel(anchors, 4)  # [N, 4]

  threshold = _logit(score_threshold)
  class_thresholds = tf.constant(
      [math.inf if (c == 0 and skip_background) else threshold
       for c in range(num_classes)], tf.float32)
  reported_classes = num_classes - (1 if skip_background else 0)
  total = flat_anchors.shape[0] * reported_classes if flat_anchors.shape[0] else None
  k = min(pre_nms_top_k, total or pre_nms_top_k)
  top_logits, anchor_index, classes, _ = _per_image(
      lambda x: _top_candidates(x, threshold, class_thresholds, k, skip_background),
      logits,
      (tf.TensorSpec([k], tf.float32), tf.TensorSpec([k], tf.int32),
       tf.TensorSpec([k], tf.int32), tf.TensorSpec([], tf.int32)))

  top_deltas = tf.gather(deltas, anchor_index, batch_dims=1)
  boxes = box_ops.decode_boxes(top_deltas, tf.gather(flat_anchors, anchor_index))
  boxes = box_ops.clip_boxes(boxes, tf.cast(image_shape, tf.float32)[:, None, :])
  scores = tf.sigmoid(top_logits)
  valid = top_logits > threshold
  scores = tf.where(valid, scores, tf.zeros_like(scores))

  # Class-aware NMS in one pass: shift each class to its own region of the
  # plane so boxes of different classes never overlap.
  extent = tf.reduce_max(tf.cast(image_shape, tf.float32)) + 1.0
  offsets = tf.cast(classes, tf.float32)[..., None] * extent
  shifted = boxes + offsets

  def nms_one(args):
    b, s, n_valid = args
    selected, _ = tf.image.non_max_suppression_with_scores(
        b[:n_valid], s[:n_valid], max_output_size=max_detections,
        iou_threshold=nms_iou_threshold)
    count = tf.shape(selected)[0]
    return tf.pad(selected, [[0, max_detections - count]]), count

  n_valid = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
  selected, num = tf.map_fn(
      nms_one, (shifted, scores, n_valid),
      fn_output_signature=(tf.TensorSpec([max_detections], tf.int32),
                           tf.TensorSpec([], tf.int32)))
  mask = tf.sequence_mask(num, max_detections)
  maskf = tf.cast(mask, tf.float32)
  return {
      'detection_boxes': tf.gather(boxes, selected, batch_dims=1) * maskf[..., None],
      'detection_scores': tf.gather(scores, selected, batch_dims=1) * maskf,
      'detection_classes': tf.where(mask, tf.gather(classes, selected, batch_dims=1), 0),
      'num_detections': num,
  }
