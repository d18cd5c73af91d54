"""RetinaNet losses: sigmoid focal loss for classes, Huber loss for boxes.

The values follow the RetinaNet / SpineNet recipe (and the Model Garden's
RetinaNet task): every class column is a binary sigmoid target, 1 only in
the matched class's column of a positive anchor (background and ignored
anchors have all-zero targets; column 0 is never positive); the box loss is
the Huber loss averaged over the 4 coordinates; both are summed over anchors
and divided by the number of positive anchors plus one.

Which positives normalize is `LossOptions.normalizer_scope`: 'replica'
(default; the authors' TF1 code and the Model Garden) counts each replica's
own positives, so the training loss is the mean over replicas of per-replica
losses; 'global' counts the positives of the whole global batch (summed over
replicas), so a loss computed on N replicas equals the one computed on one
device with the same global batch (`RetinaNetLoss.__call__`'s
`num_positives` argument; `RetinaNetTask.build_losses` does the all-reduce).

Levels are handled one at a time (no concatenation of all anchors), which
avoids copying the largest tensors of the step.
"""
import dataclasses

import tensorflow as tf

NORMALIZER_SCOPES = ('replica', 'global')


@dataclasses.dataclass(frozen=True)
class LossOptions:
  """RetinaNet loss options (recipe values by default).

  Attributes:
    focal_loss_alpha: weight of positive class targets (1 - alpha for
      negatives).
    focal_loss_gamma: focusing exponent.
    huber_loss_delta: Huber transition point, in encoded box units.
    box_loss_weight: multiplies the box loss in the total.
    normalizer_scope: whose positive anchors divide the sums: 'replica'
      (each replica's own, as both references) or 'global' (the global
      batch's, independent of the number of replicas).
  """
  focal_loss_alpha: float = 0.25
  focal_loss_gamma: float = 1.5
  huber_loss_delta: float = 0.1
  box_loss_weight: float = 50.0
  normalizer_scope: str = 'replica'

  def __post_init__(self):
    if self.normalizer_scope not in NORMALIZER_SCOPES:
      raise ValueError(
          f'`LossOptions.normalizer_scope` must be one of {NORMALIZER_SCOPES}. '
          f'Received: normalizer_scope={self.normalizer_scope!r}')
    if not 0.0 <= self.focal_loss_alpha <= 1.0:
      raise ValueError('`focal_loss_alpha` must be in [0, 1]. Received: '
                       f'focal_loss_alpha={self.focal_loss_alpha}')
    if self.focal_loss_gamma < 0 or self.huber_loss_delta <= 0:
      raise ValueError(
          'need `focal_loss_gamma` >= 0 and `huber_loss_delta` > 0. Received: '
          f'focal_loss_gamma={self.focal_loss_gamma}, '
          f'huber_loss_delta={self.huber_loss_delta}')


def _modulator(one_minus_pt, gamma):
  """`(1 - p_t) ** gamma`, with the recipe's gamma = 1.5 done as x * sqrt(x)."""
  if gamma == 0.0:
    return tf.ones_like(one_minus_pt)
  if gamma == 1.0:
    return one_minus_pt
  if gamma == 1.5:
    return one_minus_pt * tf.sqrt(one_minus_pt)
  if gamma == 2.0:
    return tf.square(one_minus_pt)
  return tf.pow(one_minus_pt, gamma)


def focal_loss(logits, targets, alpha=0.25, gamma=1.5):
  """Element-wise sigmoid focal loss (Lin et al., 2017).

  Args:
    logits: float `[...]`, class logits.
    targets: float `[...]`, 0 or 1, same shape.
    alpha: float. Weight of positive targets.
    gamma: float. Focusing exponent.

  Returns:
    float32 `[...]`: `alpha_t * (1 - p_t) ** gamma * cross_entropy`.
  """
  logits = tf.cast(logits, tf.float32)
  targets = tf.cast(targets, tf.float32)
  cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(
      labels=targets, logits=logits)
  probs = tf.sigmoid(logits)
  # 1 - p_t = p for negatives, 1 - p for positives.
  one_minus_pt = probs + targets * (1.0 - 2.0 * probs)
  alpha_t = (1.0 - alpha) + targets * (2.0 * alpha - 1.0)
  return alpha_t * _modulator(one_minus_pt, gamma) * cross_entropy


def huber_loss(predictions, targets, delta=0.1):
  """Element-wise Huber loss: `0.5 x^2` for `|x| <= delta`, else linear.

  Args:
    predictions, targets: float `[...]`, same shape.
    delta: float.

  Returns:
    float32 `[...]`.
  """
  error = tf.abs(tf.cast(predictions, tf.float32) - tf.cast(targets, tf.float32))
  quadratic = tf.minimum(error, delta)
  return 0.5 * tf.square(quadratic) + delta * (error - quadratic)


class RetinaNetLoss:
  """Class and box losses of RetinaNet on one replica's batch.

  Args:
    num_classes: int. Class logits per anchor, background (index 0) included.
    options: `LossOptions`.

  Call arguments:
    outputs: dict of `RetinaNet.call`: `cls_outputs` `{level: float
      [B, H_l, W_l, A * K]}`, `box_outputs` `{level: float [B, H_l, W_l,
      A * 4]}`.
    labels: dict of the train parser, batched: `cls_targets` `{level: int32
      [B, H_l, W_l, A]}`, `box_targets` `{level: float32 [B, H_l, W_l,
      A * 4]}`, `cls_weights` and `box_weights` float32 `[B, total_anchors]`
      (anchor order of `anchors.flatten_multilevel`).
    num_positives: float32 scalar, positives of the normalizing batch (sum of
      `box_weights`). Pass the global batch's sum (all replicas) for losses
      that do not depend on how the batch is split; None uses this batch's.

  Returns:
    dict of float32 scalars: `cls_loss`, `box_loss` (each a sum over this
    batch divided by `num_positives + 1`) and `model_loss` = `cls_loss +
    box_loss_weight * box_loss`.
  """

  def __init__(self, num_classes, options=LossOptions()):
    self.num_classes = int(num_classes)
    self.options = options

  def __call__(self, outputs, labels, num_positives=None):
    o = self.options
    if num_positives is None:
      num_positives = tf.reduce_sum(labels['box_weights'])
    normalizer = tf.cast(num_positives, tf.float32) + 1.0
    levels = sorted(outputs['cls_outputs'], key=int)
    cls_losses, box_losses = [], []
    offset = 0
    for level in levels:
      logits = outputs['cls_outputs'][level]
      deltas = outputs['box_outputs'][level]
      batch = tf.shape(logits)[0]
      h, w = logits.shape[1], logits.shape[2]
      count = h * w * (logits.shape[-1] // self.num_classes)
      cls_w = tf.reshape(labels['cls_weights'][:, offset:offset + count],
                         [batch, h, w, -1, 1])
      box_w = tf.reshape(labels['box_weights'][:, offset:offset + count],
                         [batch, h, w, -1, 1])
      offset += count
      logits = tf.reshape(logits, [batch, h, w, -1, self.num_classes])
      # Background (0) and ignored anchors have all-zero class targets.
      cls_targets = labels['cls_targets'][level]
      targets = tf.one_hot(tf.where(cls_targets > 0, cls_targets, -1),
                           self.num_classes, dtype=tf.float32)
      cls = focal_loss(logits, targets, o.focal_loss_alpha, o.focal_loss_gamma)
      cls_losses.append(tf.reduce_sum(cls * cls_w))
      deltas = tf.reshape(deltas, [batch, h, w, -1, 4])
      box_targets = tf.reshape(labels['box_targets'][level], [batch, h, w, -1, 4])
      box = huber_loss(deltas, box_targets, o.huber_loss_delta)
      # Mean over the 4 coordinates (as Keras' Huber reduces the last axis).
      box_losses.append(tf.reduce_sum(box * box_w) * 0.25)
    cls_loss = tf.add_n(cls_losses) / normalizer
    box_loss = tf.add_n(box_losses) / normalizer
    return {'cls_loss': cls_loss, 'box_loss': box_loss,
            'model_loss': cls_loss + o.box_loss_weight * box_loss}
