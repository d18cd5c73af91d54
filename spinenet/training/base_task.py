"""The task interface: what a model family trains on and how, for one replica.

The runner (`trainer.Runner`) owns the loop, the strategy, checkpoints and
summaries; a task owns one replica's math: model -> losses -> gradients, and
what evaluation computes. `RetinaNetTask` is the detection task; a
classification task implements the same five methods (`build_model`,
`build_inputs`, `build_losses`, `validation_step`, `build_evaluator`).
"""
import abc
from typing import Any, Dict

import tensorflow as tf
import tf_keras as keras

from spinenet.training import optimization


class Evaluator(abc.ABC):
  """Accumulates host-side evaluation outputs and turns them into metrics.

  Runs on host: `update` receives NumPy arrays (one global batch of
  `Task.validation_step`'s outputs, replicas concatenated).
  """

  @abc.abstractmethod
  def reset(self):
    """Clears the accumulated state."""

  @abc.abstractmethod
  def update(self, outputs: Dict[str, Any]):
    """Adds one batch of outputs."""

  @abc.abstractmethod
  def result(self) -> Dict[str, float]:
    """Metrics of everything added since `reset`."""


class Task(abc.ABC):
  """One replica's math for a model family.

  Subclasses implement `build_model`, `build_inputs`, `build_losses`,
  `validation_step` and `build_evaluator`; `train_step` is shared.
  """

  #: Names of the losses `build_losses` returns, for metrics and summaries.
  loss_names = ('model_loss',)

  @abc.abstractmethod
  def build_model(self) -> keras.Model:
    """Builds the model (called inside the strategy's scope)."""

  @abc.abstractmethod
  def build_inputs(self, training: bool,
                   input_context: tf.distribute.InputContext = None
                   ) -> tf.data.Dataset:
    """Dataset of `(features, labels)` batched per replica (runs on host)."""

  @abc.abstractmethod
  def build_losses(self, outputs, labels) -> Dict[str, tf.Tensor]:
    """Losses of one replica's batch; must contain `model_loss` (on device).

    `model_loss` must be this replica's share scaled so that its mean over
    replicas is the loss of the global batch.
    """

  @abc.abstractmethod
  def validation_step(self, inputs, model) -> Dict[str, tf.Tensor]:
    """Outputs of one replica's evaluation batch for the evaluator (on device)."""

  @abc.abstractmethod
  def build_evaluator(self) -> Evaluator:
    """The host-side evaluator of `validation_step`'s outputs."""

  def train_step(self, inputs, model, optimizer, weight_decay=0.0,
                 gradient_clip_norm=0.0) -> Dict[str, tf.Tensor]:
    """One optimizer step on one replica's batch (runs on device).

    Gradients are summed over replicas here (the per-replica loss is scaled by
    `1 / num_replicas` first, as all-reduce sums), so the gradient norm and
    clipping see the global gradient; weight decay is added after.

    Args:
      inputs: `(features, labels)` of one replica.
      model: the Keras model.
      optimizer: a Keras legacy optimizer (maybe EMA- or loss-scale-wrapped).
      weight_decay: float. L2 decay of kernels (`optimization.add_weight_decay`).
      gradient_clip_norm: float. Clip to this global norm (0: off).

    Returns:
      dict of float32 scalars: the losses of `build_losses`, `total_loss`
      and `gradient_norm` (global, before clipping).
    """
    features, labels = inputs
    ctx = tf.distribute.get_replica_context()
    num_replicas = ctx.num_replicas_in_sync
    loss_scaling = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
    with tf.GradientTape() as tape:
      outputs = model(features, training=True)
      losses = self.build_losses(outputs, labels)
      scaled = losses['model_loss'] / num_replicas
      if loss_scaling:
        scaled = optimizer.get_scaled_loss(scaled)
    variables = model.trainable_variables
    grads = tape.gradient(scaled, variables)
    if loss_scaling:
      grads = optimizer.get_unscaled_gradients(grads)
    if num_replicas > 1:
      grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    grads = optimization.add_weight_decay(grads, variables, weight_decay)
    grad_norm = tf.linalg.global_norm(grads)
    if gradient_clip_norm:
      grads, _ = tf.clip_by_global_norm(grads, gradient_clip_norm,
                                        use_norm=grad_norm)
    _apply_reduced_gradients(optimizer, list(zip(grads, variables)))
    logs = dict(losses)
    logs['total_loss'] = losses['model_loss']
    logs['gradient_norm'] = grad_norm
    return logs


def _apply_reduced_gradients(optimizer, grads_and_vars):
  """Applies gradients already summed over replicas (no second all-reduce)."""
  inner = getattr(optimizer, '_optimizer', None)
  if inner is not None and hasattr(optimizer, 'update_average'):
    # EMA wrapper: its apply_gradients would aggregate again.
    inner.apply_gradients(grads_and_vars, experimental_aggregate_gradients=False)
    ema_update(optimizer)
    return
  optimizer.apply_gradients(grads_and_vars,
                            experimental_aggregate_gradients=False)


def ema_update(optimizer):
  """Updates the moving averages of an EMA optimizer (replica context)."""
  from official.modeling.optimization import ema_optimizer  # pylint: disable=g-import-not-at-top
  ema_optimizer.maybe_merge_call(optimizer.update_average,
                                 tf.distribute.get_strategy())
