"""Optimizer and learning-rate schedule of the SpineNet recipes.

SGD with momentum; a linear warmup into a stepwise (x `decay_rate` at given
fractions of training) or cosine decay; weight decay on conv and dense kernels
(`add_weight_decay`, gradient `weight_decay * w`, as the
Model Garden's `l2(weight_decay / 2)` regularizers give); optional global-norm
gradient clipping (applied by the task) and an exponential moving average of
the weights. The schedules and the EMA wrapper are the Model Garden's generic
ones (`official.modeling.optimization`).
"""
import dataclasses
from typing import Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from official.modeling.optimization import ema_optimizer
from official.modeling.optimization import lr_schedule

SCHEDULES = ('stepwise', 'cosine', 'constant')
PRECISIONS = ('float32', 'mixed_bfloat16', 'mixed_float16')


@dataclasses.dataclass(frozen=True)
class OptimizerOptions:
  """Optimization options (defaults: the SpineNet COCO recipe).

  Attributes:
    learning_rate: peak learning rate, after warmup.
    schedule: 'stepwise', 'cosine' or 'constant'.
    decay_fractions: stepwise only; fractions of `train_steps` at which the
      rate is multiplied by `decay_rate`.
    decay_rate: stepwise factor.
    cosine_alpha: cosine only; final rate as a fraction of the peak.
    warmup_steps: linear warmup length (0: none).
    warmup_learning_rate: rate at step 0 of the warmup.
    momentum: SGD momentum.
    nesterov: Nesterov momentum.
    weight_decay: L2 weight decay of kernels (gradient `weight_decay * w`).
    gradient_clip_norm: clip gradients to this global norm (0: off).
    ema_decay: keep an exponential moving average of the trainable weights
      with this decay and evaluate with it (None: off).
  """
  learning_rate: float = 0.32
  schedule: str = 'stepwise'
  decay_fractions: Sequence[float] = (0.95, 0.98)
  decay_rate: float = 0.1
  cosine_alpha: float = 0.0
  warmup_steps: int = 2000
  warmup_learning_rate: float = 0.0067
  momentum: float = 0.9
  nesterov: bool = False
  weight_decay: float = 4e-5
  gradient_clip_norm: float = 0.0
  ema_decay: Optional[float] = None

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f'`schedule` must be one of {SCHEDULES}. Received: '
                       f'schedule={self.schedule!r}')
    if any(not 0 < f < 1 for f in self.decay_fractions) or list(
        self.decay_fractions) != sorted(self.decay_fractions):
      raise ValueError('`decay_fractions` must be increasing fractions in '
                       f'(0, 1). Received: {tuple(self.decay_fractions)}')
    if self.learning_rate <= 0 or self.warmup_steps < 0:
      raise ValueError(
          'need `learning_rate` > 0 and `warmup_steps` >= 0. Received: '
          f'learning_rate={self.learning_rate}, '
          f'warmup_steps={self.warmup_steps}')
    if self.ema_decay is not None and not 0 < self.ema_decay < 1:
      raise ValueError('`ema_decay` must be in (0, 1) or None. Received: '
                       f'ema_decay={self.ema_decay}')


def build_learning_rate(options: OptimizerOptions, train_steps: int):
  """The learning-rate schedule of `options` for a run of `train_steps`.

  Args:
    options: `OptimizerOptions`.
    train_steps: total optimizer steps of the run.

  Returns:
    A `keras.optimizers.schedules.LearningRateSchedule` (or a float for a
    constant rate without warmup).

  Example:
    >>> lr = build_learning_rate(OptimizerOptions(), 231000)
    >>> round(float(lr(0)), 4), round(float(lr(100000)), 2)
    (0.0067, 0.32)
  """
  if train_steps <= options.warmup_steps and options.schedule != 'constant':
    raise ValueError(
        f'`train_steps` ({train_steps}) must exceed `warmup_steps` '
        f'({options.warmup_steps}); lower the warmup or train longer.')
  peak = options.learning_rate
  if options.schedule == 'stepwise':
    boundaries = [round(f * train_steps) for f in options.decay_fractions]
    values = [peak * options.decay_rate**i for i in range(len(boundaries) + 1)]
    schedule = lr_schedule.PiecewiseConstantDecayWithOffset(
        boundaries=boundaries, values=values)
  elif options.schedule == 'cosine':
    schedule = lr_schedule.CosineDecayWithOffset(
        initial_learning_rate=peak,
        decay_steps=train_steps - options.warmup_steps,
        alpha=options.cosine_alpha, offset=options.warmup_steps)
  else:
    schedule = peak
  if options.warmup_steps:
    schedule = lr_schedule.LinearWarmup(
        schedule, warmup_steps=options.warmup_steps,
        warmup_learning_rate=options.warmup_learning_rate)
  return schedule


def build_optimizer(options: OptimizerOptions, learning_rate,
                    precision: str = 'float32'):
  """SGD with momentum, wrapped for EMA and float16 loss scaling as asked.

  Args:
    options: `OptimizerOptions`.
    learning_rate: float or schedule (`build_learning_rate`).
    precision: one of `PRECISIONS`; 'mixed_float16' adds dynamic loss
      scaling.

  Returns:
    A Keras (legacy) optimizer. Its `iterations` is the global step.
  """
  if precision not in PRECISIONS:
    raise ValueError(f'`precision` must be one of {PRECISIONS}. Received: '
                     f'precision={precision!r}')
  optimizer = keras.optimizers.legacy.SGD(
      learning_rate=learning_rate, momentum=options.momentum,
      nesterov=options.nesterov)
  if options.ema_decay is not None:
    optimizer = ema_optimizer.ExponentialMovingAverage(
        optimizer, average_decay=options.ema_decay, trainable_weights_only=False)
  if precision == 'mixed_float16':
    optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
  return optimizer


def current_learning_rate(optimizer):
  """The learning rate the optimizer applies at its current step (float32)."""
  inner = optimizer
  while hasattr(inner, 'inner_optimizer') or hasattr(inner, '_optimizer'):
    inner = getattr(inner, 'inner_optimizer', None) or inner._optimizer  # pylint: disable=protected-access
  lr = inner.learning_rate
  if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
    return tf.cast(lr(optimizer.iterations), tf.float32)
  return tf.cast(lr, tf.float32)


def is_decayed(variable) -> bool:
  """Whether weight decay applies: conv / dense kernels, not biases or norms."""
  name = variable.name.split('/')[-1]
  return 'kernel' in name


def add_weight_decay(grads, variables, weight_decay, scale=1.0):
  """Adds `scale * weight_decay * w` to the gradients of decayed kernels.

  The same update as an L2 loss `0.5 * weight_decay * ||w||^2` (the Model
  Garden's `l2(weight_decay / 2)` kernel regularizers), without building that
  loss. Pass `scale = 1 / num_replicas` per replica, as the gradients are
  summed over replicas.

  Args:
    grads: list of gradients (None allowed), aligned with `variables`.
    variables: list of `tf.Variable`.
    weight_decay: float.
    scale: float.

  Returns:
    list of gradients.
  """
  if not weight_decay:
    return list(grads)
  factor = weight_decay * scale
  return [g if g is None or not is_decayed(v) else g + tf.cast(factor, g.dtype) * v
          for g, v in zip(grads, variables)]
