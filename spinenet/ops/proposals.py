"""Region proposals from RPN outputs: per-level top-k, decode, clip, NMS, merge."""
import tensorflow as tf

from spinenet.ops import box_ops


def _nms_padded(boxes, scores, max_output, iou_threshold):
  """Greedy NMS of one image's sorted boxes, padded to `max_output` rows.

  Args:
    boxes: float32 `[N, 4]`.
    scores: float32 `[N]`; boxes with a negative score are left out.
    max_output: int.
    iou_threshold: float.

  Returns:
    `(boxes [max_output, 4], scores [max_output])`, best first; padding rows
    are zero boxes with score 0.
  """
  selected, num_valid = tf.raw_ops.NonMaxSuppressionV4(
      boxes=boxes, scores=scores, max_output_size=max_output,
      iou_threshold=iou_threshold, score_threshold=-0.5,
      pad_to_max_output_size=True)
  valid = tf.range(max_output) < num_valid
  return (tf.where(valid[:, None], tf.gather(boxes, selected), 0.0),
          tf.where(valid, tf.gather(scores, selected), 0.0))


def generate_proposals(rpn_scores, rpn_boxes, anchors, image_shape, *,
                       pre_nms_top_k=2000, nms_iou_threshold=0.7,
                       num_proposals=1000, box_coding='standard'):
  """Turns RPN outputs into a fixed number of proposals per image.

  For each level: sigmoid scores, the level's best `pre_nms_top_k` anchors,
  their boxes decoded and clipped to the image, greedy NMS keeping at most
  `num_proposals`; then the best `num_proposals` over all levels. A box
  clipped to the all-zero box (decoded wholly above and left of the image)
  is dropped before NMS, as the reference implementations' padded NMS (the
  Model Garden's and the authors' TF1 code) treats an all-zero box as
  padding. Shapes are static: a level or image with fewer boxes pads with
  zero boxes of score 0 (they sort last).

  Args:
    rpn_scores: dict `{str(level): float [B, H_l, W_l, A]}` logits.
    rpn_boxes: dict `{str(level): float [B, H_l, W_l, A * 4]}`, dy, dx, dh, dw
      (`box_ops.encode_boxes` with unit weights).
    anchors: dict `{str(level): float [H_l, W_l, A * 4]}` in input pixels
      (`anchors.multilevel_anchors`).
    image_shape: float `[B, 2]`, height and width to clip to (the scaled image
      inside the padded input).
    pre_nms_top_k: int, candidates per level before NMS.
    nms_iou_threshold: float.
    num_proposals: int, proposals per image (also the cap per level after NMS).
    box_coding: 'standard' or 'tf1', the pixel convention of decoding and
      clipping (`box_ops`); 'tf1' reproduces the authors' TF1 proposals.

  Returns:
    `(boxes, scores)`: float32 `[B, P, 4]` ymin, xmin, ymax, xmax in input
    pixels and float32 `[B, P]` sigmoid scores in descending order, with
    `P = min(num_proposals, sum over levels of min(H_l W_l A, pre_nms_top_k,
    num_proposals))`.
  """
  levels = sorted(rpn_scores, key=int)
  image_shape = tf.cast(image_shape, tf.float32)
  batch = rpn_scores[levels[0]].shape[0]
  all_boxes, all_scores = [], []
  for level in levels:
    scores = tf.cast(rpn_scores[level], tf.float32)
    _, h, w, a = scores.shape.as_list()
    n = h * w * a
    scores = tf.reshape(scores, [-1, n])
    deltas = tf.reshape(tf.cast(rpn_boxes[level], tf.float32), [-1, n, 4])
    level_anchors = tf.reshape(tf.cast(anchors[level], tf.float32), [n, 4])
    k = min(n, pre_nms_top_k)
    top_scores, top_index = tf.math.top_k(scores, k=k, sorted=True)
    boxes = box_ops.decode_boxes(tf.gather(deltas, top_index, batch_dims=1),
                                 tf.gather(level_anchors, top_index), coding=box_coding)
    boxes = box_ops.clip_boxes(boxes, image_shape[:, None, :], coding=box_coding)
    top_scores = tf.where(tf.reduce_any(boxes > 0.0, -1), tf.sigmoid(top_scores), -1.0)
    keep = min(k, num_proposals)

    def nms_one(args, keep=keep):
      return _nms_padded(args[0], args[1], keep, nms_iou_threshold)

    if batch is not None:
      per_image = [nms_one((boxes[i], top_scores[i])) for i in range(batch)]
      level_boxes = tf.stack([p[0] for p in per_image])
      level_scores = tf.stack([p[1] for p in per_image])
    else:
      level_boxes, level_scores = tf.map_fn(
          nms_one, (boxes, top_scores),
          fn_output_signature=(tf.TensorSpec([keep, 4], tf.float32),
                               tf.TensorSpec([keep], tf.float32)))
    all_boxes.append(level_boxes)
    all_scores.append(level_scores)
  boxes = tf.concat(all_boxes, 1)
  scores = tf.concat(all_scores, 1)
  k = min(boxes.shape[1], num_proposals)
  scores, index = tf.math.top_k(scores, k=k, sorted=True)
  return tf.gather(boxes, index, batch_dims=1), scores
