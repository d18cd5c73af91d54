"""RetinaNet post-processing: score threshold, top-k, box decoding, class-aware NMS."""
import math

import tensorflow as tf

from spinenet.ops import anchors as anchors_lib
from spinenet.ops import box_ops


def _logit(p):
  return math.log(p / (1.0 - p))


def generate_detections(class_logits, box_deltas, anchors, image_shape, *,
                        score_threshold=0.05, pre_nms_top_k=5000,
                        nms_iou_threshold=0.5, max_detections=100,
                        skip_background=True):
  """Turns raw RetinaNet outputs into final detections.

  Candidates are (anchor, class) pairs whose sigmoid score exceeds
  `score_threshold`; the best `pre_nms_top_k` of them are decoded and reduced
  with greedy NMS within each class (a box never suppresses a box of another
  class), keeping the best `max_detections`. Only the kept candidates' boxes
  are decoded, and thresholding happens on logits, so the cost is dominated
  by one top-k over `num_anchors * num_classes` logits.

  Args:
    class_logits: dict `{str(level): float [B, H_l, W_l, A * K]}`.
    box_deltas: dict `{str(level): float [B, H_l, W_l, A * 4]}`, dy, dx, dh, dw.
    anchors: dict `{str(level): float [H_l, W_l, A * 4]}`, ymin, xmin, ymax,
      xmax in pixels of the model input (`anchors.multilevel_anchors`).
    image_shape: float `[B, 2]` (height, width) to clip boxes to, in the same
      pixels (the valid, unpadded part of the input).
    score_threshold: float. Minimum sigmoid score.
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
  num_classes = None
  for level in class_logits:
    num_anchors = anchors[level].shape[-1] // 4
    num_classes = class_logits[level].shape[-1] // num_anchors
    break
  logits = anchors_lib.flatten_multilevel(
      {k: tf.cast(v, tf.float32) for k, v in class_logits.items()}, num_classes)
  deltas = anchors_lib.flatten_multilevel(
      {k: tf.cast(v, tf.float32) for k, v in box_deltas.items()}, 4)
  flat_anchors = anchors_lib.flatten_multilevel(anchors, 4)  # [N, 4]
  if skip_background:
    logits = logits[:, :, 1:]
  classes_per_anchor = logits.shape[-1]
  batch = tf.shape(logits)[0]
  flat_logits = tf.reshape(logits, [batch, -1])  # [B, N * K']
  k = min(pre_nms_top_k, flat_logits.shape[-1] or pre_nms_top_k)
  top_logits, top_index = tf.math.top_k(flat_logits, k=k, sorted=True)
  anchor_index = top_index // classes_per_anchor
  classes = top_index % classes_per_anchor + (1 if skip_background else 0)
  top_deltas = tf.gather(deltas, anchor_index, batch_dims=1)
  boxes = box_ops.decode_boxes(top_deltas, tf.gather(flat_anchors, anchor_index))
  boxes = box_ops.clip_boxes(boxes, tf.cast(image_shape, tf.float32)[:, None, :])
  scores = tf.sigmoid(top_logits)
  valid = top_logits > _logit(score_threshold)
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
