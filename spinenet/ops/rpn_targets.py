"""Region proposal network (RPN) training targets for one image.

Anchors are matched to ground-truth boxes by IoU with
`target_assigner.match_anchors` (the Faster R-CNN thresholds: positive at
IoU >= 0.7, negative below 0.3, ignored in between; each box also claims its
best anchor), then a fixed-size minibatch of anchors is drawn for the
objectness loss: up to `positive_fraction * batch_size` positives at random,
and negatives at random for the rest (`balanced_sample`), as the Model
Garden's `RpnAnchorLabeler` and the authors' TF1 code do.

Pure TensorFlow, static output shapes, any number of ground-truth boxes
(including none).
"""
from typing import Optional, Sequence

import tensorflow as tf

from spinenet.ops import box_ops
from spinenet.ops import target_assigner


def _uniform(shape, seed):
  if seed is None:
    return tf.random.uniform(shape)
  return tf.random.stateless_uniform(shape, seed)


def _sample(candidates, k, limit, seed):
  """bool `[A]`: up to `limit` (<= k, may be a tensor) random `candidates`."""
  scores = tf.where(candidates, _uniform(tf.shape(candidates), seed), -1.0)
  values, indices = tf.math.top_k(scores, k, sorted=True)
  take = tf.logical_and(values >= 0.0, tf.range(k) < limit)
  return tf.scatter_nd(indices[:, tf.newaxis], tf.cast(take, tf.int32),
                       tf.shape(candidates)) > 0


def balanced_sample(positive, negative, batch_size: int = 256,
                    positive_fraction: float = 0.5, seed=None):
  """Draws a minibatch of at most `batch_size` anchors, balanced.

  `min(#positive, floor(positive_fraction * batch_size))` positives are drawn
  uniformly at random, then `batch_size` minus that many negatives (or all
  negatives, if fewer).

  Args:
    positive: bool `[A]` (static A), the positive candidates.
    negative: bool `[A]`, the negative candidates (disjoint from `positive`).
    batch_size: int, anchors per image.
    positive_fraction: float in [0, 1], largest share of positives.
    seed: optional int `[2]`; with it the draw is a stateless function of
      the seed.

  Returns:
    sampled_positive: bool `[A]`.
    sampled_negative: bool `[A]`.

  Raises:
    ValueError: for a non-positive `batch_size` or a fraction outside [0, 1].
  """
  if batch_size <= 0 or not 0.0 <= positive_fraction <= 1.0:
    raise ValueError(
        '`batch_size` must be > 0 and `positive_fraction` in [0, 1]. '
        f'Received: batch_size={batch_size}, '
        f'positive_fraction={positive_fraction}')
  num_anchors = positive.shape[0]
  if num_anchors is None:
    raise ValueError('balanced_sample needs a static number of anchors. '
                     f'Received shape {positive.shape}')
  seed_pos = seed_neg = None
  if seed is not None:
    seed_pos, seed_neg = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
  max_pos = min(int(batch_size * positive_fraction), num_anchors)
  sampled_pos = _sample(positive, max_pos, max_pos, seed_pos)
  num_pos = tf.reduce_sum(tf.cast(sampled_pos, tf.int32))
  k_neg = min(batch_size, num_anchors)
  sampled_neg = _sample(negative, k_neg, batch_size - num_pos, seed_neg)
  return sampled_pos, sampled_neg


def assign_rpn_targets(anchors,
                       gt_boxes,
                       match_threshold: float = 0.7,
                       unmatched_threshold: float = 0.3,
                       batch_size_per_im: int = 256,
                       fg_fraction: float = 0.5,
                       seed=None,
                       box_coder_weights: Optional[Sequence[float]] = None):
  """RPN objectness and box targets for one image.

  Args:
    anchors: float32 `[A, 4]` (static A), ymin, xmin, ymax, xmax in pixels.
    gt_boxes: float32 `[N, 4]`, same order and units; N may be 0. Crowd
      boxes should be left out by the caller.
    match_threshold: IoU at or above which an anchor is positive.
    unmatched_threshold: IoU below which an anchor is negative.
    batch_size_per_im: anchors sampled for the objectness loss.
    fg_fraction: largest share of positives among them.
    seed: optional int `[2]` for a stateless (reproducible) draw.
    box_coder_weights: optional 4 floats multiplying dy, dx, dh, dw (None:
      1, 1, 1, 1, the RPN's coding).

  Returns:
    dict:
      score_targets: int32 `[A]`: 1 for sampled positives, 0 for sampled
        negatives, -1 for all other anchors (ignored by the loss).
      box_targets: float32 `[A, 4]`, dy, dx, dh, dw of the matched box
        (`box_ops.encode_boxes`) for EVERY positive anchor, sampled or not
        (as the Model Garden's and the TF1 code's RPN labelers), 0 elsewhere.
      match_indices: int32 `[A]`, index into `gt_boxes` of each positive's
        box, 0 elsewhere.
      positive: bool `[A]`, all positives before sampling.
  """
  anchors = tf.convert_to_tensor(anchors, tf.float32)
  gt_boxes = tf.cast(gt_boxes, tf.float32)
  match_indices, positive, ignored = target_assigner.match_anchors(
      anchors, gt_boxes, None, match_threshold, unmatched_threshold,
      force_match=True)
  negative = tf.logical_not(tf.logical_or(positive, ignored))
  sampled_pos, sampled_neg = balanced_sample(
      positive, negative, batch_size_per_im, fg_fraction, seed)
  score_targets = tf.where(sampled_pos, 1, tf.where(sampled_neg, 0, -1))
  # A zero box keeps the gather defined without ground truth.
  padded = tf.concat([gt_boxes, tf.zeros([1, 4])], 0)
  encoded = box_ops.encode_boxes(tf.gather(padded, match_indices), anchors,
                                 box_coder_weights)
  box_targets = tf.where(positive[:, tf.newaxis], encoded, 0.0)
  return {
      'score_targets': tf.cast(score_targets, tf.int32),
      'box_targets': box_targets,
      'match_indices': match_indices,
      'positive': positive,
  }
