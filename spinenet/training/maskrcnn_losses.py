"""Mask R-CNN losses: RPN score and box, Fast R-CNN class and box, mask.

The recipe's losses (the authors' TF1 Mask R-CNN and the Model Garden's
`maskrcnn` task agree on all but one normalizer, see `MaskRCNNLossOptions`):

* RPN score: sigmoid cross-entropy of the anchors the parser sampled
  (targets 1 / 0; -1 ignored), summed over levels and divided by
  `batch * rpn_score_normalizer` (the sampled anchors per image).
* RPN box: Huber (delta 1/9) of the positive anchors' encoded boxes; each
  level's sum is divided by that level's number of positive coordinates (an
  anchor is positive when any of its 4 targets is non-zero), and the levels'
  quotients are added.
* Fast R-CNN class: softmax cross-entropy, the mean over all sampled ROIs.
* Fast R-CNN box: Huber (delta 1) of the box predicted for each foreground
  ROI's target class (class-specific regression), summed and divided by 4 x
  the foreground ROIs.
* Mask: sigmoid cross-entropy of each foreground ROI's 28 x 28 mask (already
  the target class's mask), summed and divided by the foreground pixels
  (foreground ROIs x 28 x 28).

Counts that normalize (positive coordinates, foreground ROIs, mask pixels)
are averaged over replicas and 0.01 is added, as in the Model Garden: the
base task divides each replica's loss by the number of replicas before
summing gradients, so a loss is its global-batch sum over the global count.
Out of a replica context (plain eager calls) the local count is used.
"""
import dataclasses
from typing import Dict, Mapping

import tensorflow as tf

_EPSILON = 0.01  # added to every count that divides (no division by zero)


@dataclasses.dataclass(frozen=True)
class MaskRCNNLossOptions:
  """Mask R-CNN loss options (recipe values by default).

  Attributes:
    rpn_huber_loss_delta: Huber transition of the RPN box loss, in encoded
      box units (both references: 1/9).
    frcnn_huber_loss_delta: Huber transition of the Fast R-CNN box loss
      (both references: 1.0).
    rpn_score_normalizer: the RPN score loss is divided by `batch` times
      this. The authors' TF1 code: `rpn_batch_size_per_im` = 256 (the anchors
      the parser samples per image). The Model Garden's task passes the
      number of sampled ROIs per image instead (512 in its recipe), halving
      this loss; set 512 to train exactly as it does.
    rpn_score_weight, rpn_box_weight, frcnn_class_weight, frcnn_box_weight,
    mask_weight: weights of the five losses in `model_loss` (all 1.0 in
      both references).
  """
  rpn_huber_loss_delta: float = 1.0 / 9.0
  frcnn_huber_loss_delta: float = 1.0
  rpn_score_normalizer: float = 256.0
  rpn_score_weight: float = 1.0
  rpn_box_weight: float = 1.0
  frcnn_class_weight: float = 1.0
  frcnn_box_weight: float = 1.0
  mask_weight: float = 1.0

  def __post_init__(self):
    for name in ('rpn_huber_loss_delta', 'frcnn_huber_loss_delta',
                 'rpn_score_normalizer'):
      if getattr(self, name) <= 0:
        raise ValueError(f'MaskRCNNLossOptions.{name} must be > 0. Received: '
                         f'{name}={getattr(self, name)}')
    for name in ('rpn_score_weight', 'rpn_box_weight', 'frcnn_class_weight',
                 'frcnn_box_weight', 'mask_weight'):
      if getattr(self, name) < 0:
        raise ValueError(f'MaskRCNNLossOptions.{name} must be >= 0. Received: '
                         f'{name}={getattr(self, name)}')


def huber(predictions, targets, delta):
  """Element-wise Huber loss: `0.5 x^2` for `|x| <= delta`, else linear.

  Args:
    predictions, targets: float `[...]`, same shape.
    delta: float, the transition point.

  Returns:
    float32 `[...]`.
  """
  error = tf.abs(tf.cast(predictions, tf.float32) - tf.cast(targets, tf.float32))
  quadratic = tf.minimum(error, delta)
  return 0.5 * tf.square(quadratic) + delta * (error - quadratic)


def _replica_mean(count):
  """`count` averaged over the replicas in sync (itself with one replica)."""
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return count
  return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, count)


def rpn_score_loss(score_outputs: Mapping[str, tf.Tensor],
                   score_targets: Mapping[str, tf.Tensor],
                   normalizer_per_image: float = 256.0) -> tf.Tensor:
  """RPN objectness loss over the sampled anchors of every level.

  Args:
    score_outputs: `{level: float [B, H_l, W_l, A]}` logits.
    score_targets: `{level: int [B, H_l, W_l, A]}`: 1 positive, 0 negative,
      -1 ignored (not sampled).
    normalizer_per_image: the sum is divided by `B * normalizer_per_image`.

  Returns:
    float32 scalar.
  """
  total = []
  for level in sorted(score_outputs, key=int):
    logits = tf.cast(score_outputs[level], tf.float32)
    targets = score_targets[level]
    weights = tf.cast(targets >= 0, tf.float32)
    labels = tf.cast(tf.maximum(targets, 0), tf.float32)
    loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    batch = tf.cast(tf.shape(logits)[0], tf.float32)
    total.append(tf.reduce_sum(loss * weights) / (batch * normalizer_per_image))
  return tf.add_n(total)


def rpn_box_loss(box_outputs: Mapping[str, tf.Tensor],
                 box_targets: Mapping[str, tf.Tensor],
                 delta: float = 1.0 / 9.0) -> tf.Tensor:
  """RPN box regression loss of the positive anchors, per level normalized.

  An anchor counts as positive when any of its 4 encoded targets is non-zero
  (the parser writes zeros for the others). Each level's Huber sum is
  divided by its positive coordinates (+0.01) and the levels are added.

  Args:
    box_outputs: `{level: float [B, H_l, W_l, A*4]}` encoded deltas.
    box_targets: `{level: float [B, H_l, W_l, A*4]}`, `box_ops.encode_boxes`
      of each anchor's matched box (zeros for non-positive anchors).
    delta: Huber transition point.

  Returns:
    float32 scalar.
  """
  total = []
  for level in sorted(box_outputs, key=int):
    outputs = tf.cast(box_outputs[level], tf.float32)
    targets = tf.cast(box_targets[level], tf.float32)
    shape = tf.shape(targets)
    grouped = tf.reshape(targets, tf.concat([shape[:-1], [-1, 4]], 0))
    positive = tf.reduce_any(tf.abs(grouped) > 1e-6, axis=-1, keepdims=True)
    weights = tf.reshape(
        tf.cast(tf.broadcast_to(positive, tf.shape(grouped)), tf.float32), shape)
    loss = tf.reduce_sum(huber(outputs, targets, delta) * weights)
    total.append(loss / (_replica_mean(tf.reduce_sum(weights)) + _EPSILON))
  return tf.add_n(total)


def frcnn_class_loss(class_outputs: tf.Tensor, class_targets: tf.Tensor) -> tf.Tensor:
  """Softmax cross-entropy of the sampled ROIs, their mean.

  Args:
    class_outputs: float `[B, R, K]` logits (K classes, 0 = background).
    class_targets: int `[B, R]` class index of each ROI.

  Returns:
    float32 scalar.
  """
  logits = tf.cast(class_outputs, tf.float32)
  labels = tf.cast(class_targets, tf.int32)
  loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                        logits=logits)
  return tf.reduce_mean(loss)


def select_class_boxes(box_outputs: tf.Tensor, class_targets: tf.Tensor) -> tf.Tensor:
  """Each ROI's box for its target class from class-specific outputs.

  Args:
    box_outputs: float `[B, R, K*4]`, K boxes per ROI (class k at
      `[4k, 4k+4)`).
    class_targets: int `[B, R]`.

  Returns:
    float `[B, R, 4]`.
  """
  shape = tf.shape(box_outputs)
  boxes = tf.reshape(box_outputs, [shape[0], shape[1], -1, 4])
  index = tf.cast(class_targets, tf.int32)[..., tf.newaxis]
  return tf.gather(boxes, index, axis=2, batch_dims=2)[:, :, 0, :]


def frcnn_box_loss(box_outputs: tf.Tensor, class_targets: tf.Tensor,
                   box_targets: tf.Tensor, delta: float = 1.0,
                   class_agnostic: bool = False) -> tf.Tensor:
  """Huber loss of the foreground ROIs' boxes for their target class.

  Args:
    box_outputs: float `[B, R, K*4]` (or `[B, R, 4]` when `class_agnostic`).
    class_targets: int `[B, R]`; > 0 marks a foreground ROI.
    box_targets: float `[B, R, 4]` encoded targets (weights 10, 10, 5, 5).
    delta: Huber transition point.
    class_agnostic: one box per ROI instead of one per class.

  Returns:
    float32 scalar: the sum over foreground ROIs' coordinates divided by 4 x
    their number (+0.01).
  """
  if not class_agnostic:
    box_outputs = select_class_boxes(box_outputs, class_targets)
  foreground = tf.cast(class_targets > 0, tf.float32)[..., tf.newaxis]
  weights = tf.broadcast_to(foreground, tf.shape(box_targets))
  loss = tf.reduce_sum(huber(box_outputs, box_targets, delta) * weights)
  return loss / (_replica_mean(tf.reduce_sum(weights)) + _EPSILON)


def mask_loss(mask_outputs: tf.Tensor, mask_targets: tf.Tensor,
              mask_class_targets: tf.Tensor) -> tf.Tensor:
  """Sigmoid cross-entropy of the foreground ROIs' masks, per pixel averaged.

  Args:
    mask_outputs: float `[B, Rm, M, M]` logits of each ROI's target class.
    mask_targets: float `[B, Rm, M, M]` in [0, 1].
    mask_class_targets: int `[B, Rm]`; 0 marks a padding row (no loss).

  Returns:
    float32 scalar: the sum over foreground masks' pixels divided by their
    number (+0.01).
  """
  logits = tf.cast(mask_outputs, tf.float32)
  targets = tf.cast(mask_targets, tf.float32)
  foreground = tf.cast(mask_class_targets > 0, tf.float32)[..., tf.newaxis, tf.newaxis]
  weights = tf.broadcast_to(foreground, tf.shape(logits))
  loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
  return (tf.reduce_sum(loss * weights) /
          (_replica_mean(tf.reduce_sum(weights)) + _EPSILON))


class MaskRCNNLoss:
  """The five Mask R-CNN losses and their weighted sum.

  Args:
    options: `MaskRCNNLossOptions`.
    include_mask: compute the mask loss (False: Faster R-CNN; the mask loss
      is 0).

  Call arguments:
    outputs: `MaskRCNN.call(..., training=True)` outputs: `rpn_scores`,
      `rpn_boxes`, `class_outputs`, `box_outputs`, `class_targets`,
      `box_targets`, `mask_outputs`, `mask_targets`, `mask_class_targets`.
    labels: the train parser's labels: `rpn_score_targets`,
      `rpn_box_targets`.

  Returns:
    dict of float32 scalars: `rpn_score_loss`, `rpn_box_loss`,
    `frcnn_cls_loss`, `frcnn_box_loss`, `mask_loss` and `model_loss` (their
    weighted sum).
  """

  NAMES = ('rpn_score_loss', 'rpn_box_loss', 'frcnn_cls_loss',
           'frcnn_box_loss', 'mask_loss')

  def __init__(self, options: MaskRCNNLossOptions = MaskRCNNLossOptions(),
               include_mask: bool = True):
    self.options = options
    self.include_mask = include_mask

  def __call__(self, outputs: Mapping[str, tf.Tensor],
               labels: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    o = self.options
    losses = {
        'rpn_score_loss': rpn_score_loss(
            outputs['rpn_scores'], labels['rpn_score_targets'],
            o.rpn_score_normalizer),
        'rpn_box_loss': rpn_box_loss(outputs['rpn_boxes'],
                                     labels['rpn_box_targets'],
                                     o.rpn_huber_loss_delta),
        'frcnn_cls_loss': frcnn_class_loss(outputs['class_outputs'],
                                           outputs['class_targets']),
        'frcnn_box_loss': frcnn_box_loss(
            outputs['box_outputs'], outputs['class_targets'],
            outputs['box_targets'], o.frcnn_huber_loss_delta),
    }
    if self.include_mask:
      losses['mask_loss'] = mask_loss(outputs['mask_outputs'],
                                      outputs['mask_targets'],
                                      outputs['mask_class_targets'])
    else:
      losses['mask_loss'] = tf.constant(0.0, tf.float32)
    losses['model_loss'] = (
        o.rpn_score_weight * losses['rpn_score_loss'] +
        o.rpn_box_weight * losses['rpn_box_loss'] +
        o.frcnn_class_weight * losses['frcnn_cls_loss'] +
        o.frcnn_box_weight * losses['frcnn_box_loss'] +
        o.mask_weight * losses['mask_loss'])
    return losses
