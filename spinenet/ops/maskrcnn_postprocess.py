"""Mask R-CNN second-stage post-processing: per-class boxes, per-class NMS."""
import tensorflow as tf

from spinenet.ops import box_ops
from spinenet.ops import roi_sampler


def decode_per_class(box_outputs, rois, image_shape, weights=roi_sampler.BOX_WEIGHTS,
                     box_coding='standard'):
  """Per-class boxes of every ROI.

  Args:
    box_outputs: float `[B, R, K * 4]`, dy, dx, dh, dw per class.
    rois: float `[B, R, 4]`, ymin, xmin, ymax, xmax in input pixels.
    image_shape: float `[B, 2]`, height and width to clip to.
    weights: the coding weights.
    box_coding: 'standard' or 'tf1' (`box_ops`: the authors' "+1 pixel" sizes).

  Returns:
    float32 `[B, R, K, 4]`, clipped.
  """
  batch = tf.shape(box_outputs)[0]
  num_rois = box_outputs.shape[1]
  deltas = tf.reshape(tf.cast(box_outputs, tf.float32), [batch, num_rois, -1, 4])
  boxes = box_ops.decode_boxes(deltas, tf.cast(rois, tf.float32)[:, :, None, :], weights,
                               coding=box_coding)
  return box_ops.clip_boxes(boxes, tf.cast(image_shape, tf.float32)[:, None, None, :],
                            coding=box_coding)


def generate_detections(class_outputs, box_outputs, rois, image_shape, *,
                        score_threshold=0.05, pre_nms_top_k=5000,
                        nms_iou_threshold=0.5, max_detections=100,
                        weights=roi_sampler.BOX_WEIGHTS, box_coding='standard'):
  """Final detections from the box head's outputs on the proposals.

  Scores are the softmax over classes; every (ROI, class) pair but the
  background whose score exceeds `score_threshold` is a candidate with that
  class's decoded box; the best `pre_nms_top_k` candidates go through greedy
  NMS within each class (boxes of different classes never suppress each
  other) and the best `max_detections` survivors are kept.

  Args:
    class_outputs: float `[B, R, K]` logits (class 0 background).
    box_outputs: float `[B, R, K * 4]`.
    rois: float `[B, R, 4]`, the proposals the head ran on.
    image_shape: float `[B, 2]`, height and width to clip boxes to.
    score_threshold, pre_nms_top_k, nms_iou_threshold, max_detections: as said.
    weights: the box coding weights.
    box_coding: 'standard' or 'tf1', the pixel convention of decoding and
      clipping (`box_ops`).

  Returns:
    dict with `detection_boxes` float32 `[B, N, 4]`, `detection_scores`
    float32 `[B, N]` (descending), `detection_classes` int32 `[B, N]`,
    `num_detections` int32 `[B]`, `N = max_detections`; rows past
    `num_detections` are zeros.
  """
  scores = tf.nn.softmax(tf.cast(class_outputs, tf.float32), axis=-1)[:, :, 1:]
  boxes = decode_per_class(box_outputs, rois, image_shape, weights,
                           box_coding)[:, :, 1:, :]
  num_rois, num_classes = scores.shape[1], scores.shape[2]  # classes w/o background
  total = num_rois * num_classes
  k = min(pre_nms_top_k, total)
  scores = tf.reshape(scores, [-1, total])
  boxes = tf.reshape(boxes, [-1, total, 4])
  extent = tf.reduce_max(tf.cast(image_shape, tf.float32)) + 1.0

  def one_image(args):
    s, b = args
    keep = tf.where(s > score_threshold)[:, 0]  # flat order
    s_kept = tf.gather(s, keep)
    n = tf.minimum(tf.size(s_kept), k)
    top, order = tf.math.top_k(s_kept, k=n, sorted=True)
    index = tf.gather(keep, order)
    cand_boxes = tf.gather(b, index)
    cand_classes = tf.cast(index % num_classes, tf.int32) + 1
    # Classes apart on the plane: one NMS is per-class NMS.
    shifted = cand_boxes + tf.cast(cand_classes, tf.float32)[:, None] * extent
    selected, _ = tf.image.non_max_suppression_with_scores(
        shifted, top, max_output_size=max_detections,
        iou_threshold=nms_iou_threshold)
    count = tf.shape(selected)[0]
    pad = [[0, max_detections - count]]
    return (tf.ensure_shape(tf.pad(tf.gather(cand_boxes, selected), pad + [[0, 0]]),
                            [max_detections, 4]),
            tf.ensure_shape(tf.pad(tf.gather(top, selected), pad), [max_detections]),
            tf.ensure_shape(tf.pad(tf.gather(cand_classes, selected), pad),
                            [max_detections]), count)

  batch = class_outputs.shape[0]
  if batch is not None:
    results = [one_image((scores[i], boxes[i])) for i in range(batch)]
    out = [tf.stack([r[j] for r in results]) for j in range(4)]
  else:
    out = tf.map_fn(one_image, (scores, boxes), fn_output_signature=(
        tf.TensorSpec([max_detections, 4], tf.float32),
        tf.TensorSpec([max_detections], tf.float32),
        tf.TensorSpec([max_detections], tf.int32), tf.TensorSpec([], tf.int32)))
  return {'detection_boxes': out[0], 'detection_scores': out[1],
          'detection_classes': out[2], 'num_detections': out[3]}
