"""IoU matching of anchors to ground-truth boxes, and RetinaNet targets.

Each anchor is matched to the ground-truth box it overlaps most (IoU):

* positive if that IoU is >= `match_threshold`;
* negative (background) if it is < `unmatched_threshold`;
* ignored in between (an empty band when the two thresholds are equal).

With `force_match` (on by default, as in the Model Garden's RetinaNet
`AnchorLabeler`), each ground-truth box also claims the anchor it overlaps
most, so no box is left without a positive anchor; when several boxes pick the
same anchor, the box listed first wins. Crowd boxes never make positives: an
anchor that is not positive and whose IoU with a crowd box is >=
`unmatched_threshold` is ignored (no loss), since it may cover an unlabelled
object.

All functions here are pure TensorFlow, work on one image (no batch
dimension), and accept any number of ground-truth boxes including zero.
"""
import tensorflow as tf

from spinenet.ops import box_ops


def box_anchor_iou(gt_boxes, anchors):
  """IoU of every ground-truth box with every anchor.

  Laid out `[N, A]` (boxes by anchors): reductions over the long anchor axis
  are contiguous, which is several times faster on CPU than `[A, N]`.

  Args:
    gt_boxes: float32 `[N, 4]`, ymin, xmin, ymax, xmax in pixels.
    anchors: float32 `[A, 4]`, same order and units.

  Returns:
    float32 `[N, A]`; 0 where the union is empty.
  """
  a_ymin, a_xmin, a_ymax, a_xmax = [
      c[tf.newaxis] for c in tf.unstack(anchors, 4, axis=1)]  # [1, A]
  g_ymin, g_xmin, g_ymax, g_xmax = tf.split(gt_boxes, 4, axis=1)  # [N, 1]
  inter_h = tf.nn.relu(tf.minimum(a_ymax, g_ymax) - tf.maximum(a_ymin, g_ymin))
  inter_w = tf.nn.relu(tf.minimum(a_xmax, g_xmax) - tf.maximum(a_xmin, g_xmin))
  inter = inter_h * inter_w
  area_a = (a_ymax - a_ymin) * (a_xmax - a_xmin)
  area_g = (g_ymax - g_ymin) * (g_xmax - g_xmin)
  return tf.math.divide_no_nan(inter, (area_a + area_g) - inter)


def _check_thresholds(match_threshold, unmatched_threshold):
  if unmatched_threshold > match_threshold:
    raise ValueError(
        '`unmatched_threshold` must be <= `match_threshold`. Received: '
        f'unmatched_threshold={unmatched_threshold}, '
        f'match_threshold={match_threshold}')


def _match_sparse(anchors, gt_boxes, gt_is_crowd, match_threshold,
                  unmatched_threshold, force_match):
  """Matching, with the matches of positives only.

  Returns:
    positive: bool `[A]`.
    ignored: bool `[A]`.
    pos_index: int64 `[P, 1]`, indices of the positive anchors (ascending).
    pos_match: int32 `[P]`, index into `gt_boxes` of each positive's match.
  """
  _check_thresholds(match_threshold, unmatched_threshold)
  gt_boxes = tf.cast(gt_boxes, tf.float32)
  anchors = tf.cast(anchors, tf.float32)
  num_anchors = tf.shape(anchors)[0]
  gt_ids = tf.range(tf.shape(gt_boxes)[0], dtype=tf.int32)
  crowd_iou = None
  if gt_is_crowd is not None:
    crowd = tf.cast(gt_is_crowd, tf.bool)
    # A zero box (IoU 0 with everything) keeps reductions defined when empty.
    crowd_boxes = tf.concat([tf.boolean_mask(gt_boxes, crowd),
                             tf.zeros([1, 4])], 0)
    crowd_iou = tf.reduce_max(box_anchor_iou(crowd_boxes, anchors), axis=0)
    gt_ids = tf.boolean_mask(gt_ids, tf.logical_not(crowd))
    gt_boxes = tf.gather(gt_boxes, gt_ids)
  num_gt = tf.shape(gt_boxes)[0]
  iou = box_anchor_iou(tf.concat([gt_boxes, tf.zeros([1, 4])], 0), anchors)
  max_iou = tf.reduce_max(iou, axis=0)  # [A]
  positive = max_iou >= match_threshold
  ignored = tf.logical_and(max_iou >= unmatched_threshold,
                           tf.logical_not(positive))
  if force_match:
    # Each box's best anchor (argmax: the first of equals); where boxes share
    # one, the box listed first wins, as in the Model Garden.
    best_anchor = tf.argmax(iou[:-1], axis=1, output_type=tf.int32)  # [N]
    claimed = tf.tensor_scatter_nd_min(
        tf.fill([num_anchors], num_gt), best_anchor[:, tf.newaxis],
        tf.range(num_gt))
    forced = claimed < num_gt
    positive = tf.logical_or(positive, forced)
    ignored = tf.logical_and(ignored, tf.logical_not(forced))
  if crowd_iou is not None:
    ignored = tf.logical_or(
        ignored,
        tf.logical_and(crowd_iou >= unmatched_threshold,
                       tf.logical_not(positive)))

  pos_index = tf.where(positive)  # [P, 1]
  # Best box of each positive; argmax returns the first of equal IoUs.
  pos_iou = tf.gather(iou, pos_index[:, 0], axis=1)  # [N + 1, P]
  pos_match = tf.argmax(pos_iou, axis=0, output_type=tf.int32)
  if force_match:
    pos_claimed = tf.gather_nd(claimed, pos_index)
    pos_match = tf.where(pos_claimed < num_gt, pos_claimed, pos_match)
  # Back to indices of the caller's `gt_boxes` (crowd boxes included).
  pos_match = tf.gather(tf.concat([gt_ids, [0]], 0), pos_match)
  return positive, ignored, pos_index, pos_match


def match_anchors(anchors,
                  gt_boxes,
                  gt_is_crowd=None,
                  match_threshold=0.5,
                  unmatched_threshold=0.5,
                  force_match=True):
  """Matches anchors to ground-truth boxes by IoU.

  Args:
    anchors: float32 `[A, 4]`, ymin, xmin, ymax, xmax in pixels.
    gt_boxes: float32 `[N, 4]`, same order and units; N may be 0.
    gt_is_crowd: optional bool `[N]`; crowd boxes only make anchors ignored.
    match_threshold: IoU at or above which an anchor is positive.
    unmatched_threshold: IoU below which an anchor is negative.
    force_match: if True, every non-crowd box makes its best anchor positive.

  Returns:
    match_indices: int32 `[A]`, index into `gt_boxes` of each positive's
      match; 0 where not positive.
    positive: bool `[A]`.
    ignored: bool `[A]`, never True where `positive`.

  Raises:
    ValueError: if `unmatched_threshold > match_threshold`.
  """
  positive, ignored, pos_index, pos_match = _match_sparse(
      anchors, gt_boxes, gt_is_crowd, match_threshold, unmatched_threshold,
      force_match)
  match_indices = tf.scatter_nd(pos_index, pos_match,
                                tf.shape(positive, out_type=tf.int64))
  return match_indices, positive, ignored


def assign_targets(anchors,
                   gt_boxes,
                   gt_classes,
                   gt_is_crowd=None,
                   match_threshold=0.5,
                   unmatched_threshold=0.5,
                   force_match=True,
                   box_coder_weights=None):
  """RetinaNet classification and box targets for one image.

  Args:
    anchors: float32 `[A, 4]`, ymin, xmin, ymax, xmax in pixels.
    gt_boxes: float32 `[N, 4]`, same order and units; N may be 0.
    gt_classes: int `[N]`, class indices (> 0; 0 is background).
    gt_is_crowd: optional bool `[N]`, see `match_anchors`.
    match_threshold: see `match_anchors`.
    unmatched_threshold: see `match_anchors`.
    force_match: see `match_anchors`.
    box_coder_weights: optional 4 floats multiplying dy, dx, dh, dw.

  Returns:
    dict:
      cls_targets: int32 `[A]`, the matched class for positives, 0 for
        negatives and ignored anchors.
      box_targets: float32 `[A, 4]`, dy, dx, dh, dw of the matched box
        (`box_ops.encode_boxes`) for positives, 0 elsewhere.
      cls_weights: float32 `[A]`, 1 for positives and negatives, 0 for
        ignored anchors.
      box_weights: float32 `[A]`, 1 for positives, 0 elsewhere.
      num_positives: float32 scalar.
  """
  positive, ignored, pos_index, pos_match = _match_sparse(
      anchors, gt_boxes, gt_is_crowd, match_threshold, unmatched_threshold,
      force_match)
  num_anchors = tf.shape(positive, out_type=tf.int64)
  # Only the positives (a few hundred of ~10^5 anchors) are gathered and
  # encoded, then scattered into zeros.
  classes = tf.concat([tf.cast(gt_classes, tf.int32), [0]], 0)
  cls_targets = tf.scatter_nd(pos_index, tf.gather(classes, pos_match),
                              num_anchors)
  boxes = tf.concat([tf.cast(gt_boxes, tf.float32), tf.zeros([1, 4])], 0)
  encoded = box_ops.encode_boxes(tf.gather(boxes, pos_match),
                                 tf.gather_nd(anchors, pos_index),
                                 box_coder_weights)
  box_targets = tf.scatter_nd(pos_index, encoded,
                              tf.concat([num_anchors, [4]], 0))
  box_weights = tf.cast(positive, tf.float32)
  return {
      'cls_targets': cls_targets,
      'box_targets': box_targets,
      'cls_weights': 1.0 - tf.cast(ignored, tf.float32),
      'box_weights': box_weights,
      'num_positives': tf.reduce_sum(box_weights),
  }
