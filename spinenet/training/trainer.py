"""The orbit trainer and evaluator that run a `Task` under a strategy.

`Runner` implements `orbit.StandardTrainer` (the inner loop of
`steps_per_loop` steps runs inside one `tf.function`, as a `tf.while_loop`,
so a TPU runs it without returning to the host) and `orbit.StandardEvaluator`
(one `tf.function` per evaluation batch; the task's host-side evaluator
accumulates the outputs).
"""
import dataclasses
import math
import time

from absl import logging
import numpy as np
import orbit
import tensorflow as tf
import tf_keras as keras

from spinenet.training import optimization


class NonFiniteLossError(RuntimeError):
  """Raised when a training loop produced a NaN or infinite loss."""


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """What the train step applies besides the optimizer.

  Attributes:
    weight_decay: L2 decay of kernels.
    gradient_clip_norm: global-norm clipping (0: off).
    jit_compile: compile the train step with XLA.
  """
  weight_decay: float = 0.0
  gradient_clip_norm: float = 0.0
  jit_compile: bool = False


class Runner(orbit.StandardTrainer, orbit.StandardEvaluator):
  """Runs a task's train and validation steps under a strategy.

  Args:
    task: a `base_task.Task`.
    model: the task's model, built in `strategy.scope()`.
    optimizer: its optimizer (`optimization.build_optimizer`).
    strategy: the `tf.distribute.Strategy`.
    train_dataset: distributed training dataset (or None).
    eval_dataset: distributed evaluation dataset (or None).
    global_batch_size: training examples per step, for `examples_per_second`.
    step_options: `StepOptions`.
  """

  def __init__(self, task, model, optimizer, strategy, train_dataset=None,
               eval_dataset=None, global_batch_size=1,
               step_options=StepOptions()):
    self.task, self.model, self.optimizer = task, model, optimizer
    self.strategy = strategy
    self.global_batch_size = global_batch_size
    self.step_options = step_options
    with strategy.scope():
      self.train_metrics = {
          name: keras.metrics.Mean(name, dtype=tf.float32)
          for name in tuple(task.loss_names) + ('total_loss', 'gradient_norm')}
    self._evaluator = None
    self._loop_start = None
    self._loop_step = None
    self._step_fn = self._make_step_fn()
    if train_dataset is not None:
      orbit.StandardTrainer.__init__(
          self, train_dataset,
          options=orbit.StandardTrainerOptions(use_tf_while_loop=True))
    if eval_dataset is not None:
      orbit.StandardEvaluator.__init__(
          self, eval_dataset,
          options=orbit.StandardEvaluatorOptions(use_tf_function=True))

  @property
  def global_step(self):
    return self.optimizer.iterations

  @property
  def ema(self):
    """Whether the optimizer keeps moving averages of the weights."""
    return hasattr(self.optimizer, 'swap_weights')

  # === Training ===
  def _make_step_fn(self):
    o = self.step_options

    def step_fn(inputs):
      logs = self.task.train_step(
          inputs, self.model, self.optimizer, weight_decay=o.weight_decay,
          gradient_clip_norm=o.gradient_clip_norm)
      return logs

    if o.jit_compile:
      step_fn = tf.function(step_fn, jit_compile=True)
    return step_fn

  def train_loop_begin(self):
    for metric in self.train_metrics.values():
      metric.reset_states()
    self._loop_start = time.perf_counter()
    self._loop_step = int(self.global_step.numpy())

  def train_step(self, iterator):
    """Runs one step on every replica (cross-replica context, in tf.function)."""

    def replica_fn(inputs):
      logs = self._step_fn(inputs)
      for name, metric in self.train_metrics.items():
        metric.update_state(logs[name])

    self.strategy.run(replica_fn, args=(next(iterator),))

  def train_loop_end(self):
    logs = {name: m.result() for name, m in self.train_metrics.items()}
    values = {name: float(v.numpy()) for name, v in logs.items()}
    steps = int(self.global_step.numpy()) - self._loop_step
    if not math.isfinite(values['total_loss']):
      raise NonFiniteLossError(
          f'non-finite loss at step {int(self.global_step.numpy())}: '
          f'{ {k: v for k, v in values.items()} }. The last checkpoint is kept '
          '(this loop was not saved). Try a lower learning rate, a longer '
          'warmup, `gradient_clip_norm`, or float32.')
    elapsed = max(time.perf_counter() - self._loop_start, 1e-9)
    logs['learning_rate'] = optimization.current_learning_rate(self.optimizer)
    logs['examples_per_second'] = steps * self.global_batch_size / elapsed
    logs['steps_per_second'] = steps / elapsed
    return logs

  # === Evaluation ===
  def eval_begin(self):
    if self._evaluator is None:
      self._evaluator = self.task.build_evaluator()
    self._evaluator.reset()
    self._swap_ema_weights()
    self._eval_start = time.perf_counter()
    self._eval_batches = 0

  def eval_step(self, iterator):
    """Runs one evaluation batch on every replica (in tf.function)."""
    return self.strategy.run(self.task.validation_step,
                             args=(next(iterator), self.model))

  def eval_reduce(self, state=None, step_outputs=None):
    """Hands one global batch to the task's evaluator (on host)."""
    del state
    outputs = tf.nest.map_structure(
        lambda v: np.concatenate([np.asarray(p) for p in
                                  self.strategy.experimental_local_results(v)]),
        step_outputs)
    self._evaluator.update(outputs)
    self._eval_batches += 1
    if self._eval_batches % 50 == 0:
      logging.info('eval | %d batches (%.1f batches/s)', self._eval_batches,
                   self._eval_batches / (time.perf_counter() - self._eval_start))
    return None

  def eval_end(self, *args):
    del args
    self._swap_ema_weights()
    return self._evaluator.result()

  def _swap_ema_weights(self):
    """Evaluates the moving averages: swaps them in (and back out)."""
    if self.ema:
      with self.strategy.scope():
        self.optimizer.swap_weights()
