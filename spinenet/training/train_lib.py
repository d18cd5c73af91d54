"""Runs an experiment: build under a strategy, train and/or evaluate with orbit.

`run_experiment` is what `spinenet-train` calls (and the demo and tests):

  model_dir/
    ckpt-<step>.*, checkpoint     training checkpoints (model + optimizer)
    train/, eval/                 TensorBoard summaries
    eval/metrics.json             latest evaluation, also metrics-<step>.json
                                  (eval/ also holds a few drawn validation
                                  predictions as image summaries)
    config.gin, operative_config.gin   written by the CLI

Training resumes from the latest checkpoint in `model_dir`; it saves every
`checkpoint_interval` steps, at the end, and when the process receives
SIGTERM (a preemption notice), after which it stops. A NaN or infinite loss
stops the run before the bad weights are saved.
"""
import dataclasses
import json
import os
import signal
import threading
import time
from typing import Callable, Optional

from absl import logging
import orbit
import tensorflow as tf
import tf_keras as keras

from spinenet.training import base_task
from spinenet.training import coco_evaluator
from spinenet.training import freezing
from spinenet.training import image_summaries
from spinenet.training import initialization
from spinenet.training import optimization
from spinenet.training import strategies
from spinenet.training import trainer as trainer_lib

MODES = ('train', 'eval', 'train_and_eval', 'continuous_eval')


@dataclasses.dataclass(frozen=True)
class TrainerOptions:
  """How long to train and how often to save, summarize and evaluate.

  Attributes:
    train_steps: total optimizer steps.
    steps_per_loop: steps per host round trip (one `tf.function` call).
    checkpoint_interval: save every this many steps (rounded up to a loop).
    max_checkpoints: checkpoints kept.
    eval_interval: `train_and_eval` evaluates every this many steps (None:
      only at the end).
    eval_steps: evaluation batches (-1: the whole split).
    eval_timeout: `continuous_eval` stops after this many seconds without a
      new checkpoint (None: waits until `train_steps` is reached).
    eval_image_summaries: after each evaluation, this many validation images
      with their predictions drawn (boxes, masks) are written as TensorBoard
      image summaries to `model_dir/eval` (detection tasks; 0: none).
    init_checkpoint: optional checkpoint (a prefix, or a directory: its
      latest) whose `model` initializes a new run (ignored when `model_dir`
      has a checkpoint): a training checkpoint of this project or
      `spinenet-convert` output.
    init_checkpoint_parts: what `init_checkpoint` restores
      (`initialization.PARTS`): 'all' (default), 'backbone' or
      'backbone_and_head_towers'. A class predictor whose class count differs
      from the checkpoint's is re-initialized (focal-loss prior bias); the
      log and `model_dir/init_checkpoint.json` list what was restored,
      re-initialized and skipped.
    freeze_backbone: train the head only: the backbone's weights and
      batch-norm statistics stay fixed (batch norms in inference mode,
      stochastic depth off; `freezing.freeze_backbone`).
    precision: 'float32', 'mixed_bfloat16' (TPU, CPU) or 'mixed_float16'
      (GPU, with loss scaling).
    jit_compile: compile the train step with XLA (static shapes; TPUs
      always compile).
  """
  train_steps: int = 231000
  steps_per_loop: int = 100
  checkpoint_interval: int = 1000
  max_checkpoints: int = 5
  eval_interval: Optional[int] = None
  eval_steps: int = -1
  eval_timeout: Optional[float] = None
  eval_image_summaries: int = 4
  init_checkpoint: str = ''
  init_checkpoint_parts: str = 'all'
  freeze_backbone: bool = False
  precision: str = 'float32'
  jit_compile: bool = False

  def __post_init__(self):
    for name in ('train_steps', 'steps_per_loop', 'checkpoint_interval',
                 'max_checkpoints'):
      if getattr(self, name) < 1:
        raise ValueError(f'TrainerOptions.{name} must be >= 1. Received: '
                         f'{name}={getattr(self, name)}')
    if self.precision not in optimization.PRECISIONS:
      raise ValueError(f'TrainerOptions.precision must be one of '
                       f'{optimization.PRECISIONS}. Received: {self.precision!r}')
    if self.init_checkpoint_parts not in initialization.PARTS:
      raise ValueError('TrainerOptions.init_checkpoint_parts must be one of '
                       f'{initialization.PARTS}. Received: '
                       f'{self.init_checkpoint_parts!r}')
    if self.eval_image_summaries < 0:
      raise ValueError('TrainerOptions.eval_image_summaries must be >= 0. '
                       f'Received: {self.eval_image_summaries}')
    if self.eval_interval is not None and self.eval_interval < 1:
      raise ValueError('TrainerOptions.eval_interval must be >= 1 or None. '
                       f'Received: {self.eval_interval}')


class Preempted(Exception):
  """Raised inside the loop after the preemption checkpoint is saved."""


class _SaveOnSignal:
  """Train action: after SIGTERM, saves a checkpoint and stops the run.

  The handler only sets a flag; the checkpoint is written between loops,
  where the state is consistent.
  """

  def __init__(self, manager, step, signals=(signal.SIGTERM,)):
    self._manager, self._step = manager, step
    self._received = None
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for s in signals:
        self._previous[s] = signal.signal(s, self._handler)
    else:
      logging.warning('not the main thread: preemption signals not handled')

  def _handler(self, signum, frame):
    del frame
    logging.warning('received signal %d: saving a checkpoint after this loop',
                    signum)
    self._received = signum

  def __call__(self, train_output):
    del train_output
    if self._received is not None:
      path = self._manager.save(checkpoint_number=self._step.numpy(),
                                check_interval=False)
      logging.warning('preemption checkpoint saved: %s', path)
      raise Preempted(path)

  def close(self):
    for s, handler in self._previous.items():
      signal.signal(s, handler)


class _ProgressLog:
  """Train action: one line per loop with step, losses, rate and ETA."""

  def __init__(self, step, train_steps):
    self._step, self._total = step, train_steps
    self._start_time = self._start_step = None

  def __call__(self, out):
    step = int(self._step.numpy())
    if self._start_time is None:
      # The first loop includes tracing and compilation: the rate is its own.
      self._start_time, self._start_step = time.monotonic(), step
      rate = float(out['steps_per_second'])
    else:
      elapsed = time.monotonic() - self._start_time
      rate = (step - self._start_step) / max(elapsed, 1e-9)
    eta = (self._total - step) / rate if rate > 0 else float('inf')
    eta_text = time.strftime('%H:%M:%S', time.gmtime(eta)) if eta < 8.6e6 else '?'
    losses = ' '.join(f'{k.replace("_loss", "")} {float(v):.4f}'
                      for k, v in out.items() if k.endswith('_loss')
                      and k not in ('total_loss', 'model_loss'))
    logging.info(
        'train | step %*d/%d | loss %.4f (%s) | lr %.5f | grad norm %.3f | '
        '%.2f steps/s %.1f examples/s | ETA %s', len(str(self._total)), step,
        self._total, float(out['total_loss']), losses,
        float(out['learning_rate']), float(out['gradient_norm']),
        float(out['steps_per_second']), float(out['examples_per_second']),
        eta_text)


class _WriteMetrics:
  """Eval action: writes the metrics as JSON into `directory`."""

  def __init__(self, directory, step):
    self._dir, self._step = directory, step

  def __call__(self, metrics):
    step = int(self._step.numpy())
    tf.io.gfile.makedirs(self._dir)
    values = {k: float(v) for k, v in metrics.items()}
    for name in (f'metrics-{step}.json', 'metrics.json'):
      coco_evaluator.write_metrics(os.path.join(self._dir, name), values, step)
    logging.info('eval | step %d | %s', step, json.dumps(
        {k: round(v, 4) for k, v in values.items()}))


def _preemption_action(strategy, manager, step):
  """Orbit's coordinated handler on TPU / multi-worker, else a SIGTERM hook."""
  if isinstance(strategy, (tf.distribute.TPUStrategy,
                           tf.distribute.MultiWorkerMirroredStrategy)):
    try:
      return orbit.actions.SaveCheckpointIfPreempted(
          strategy.cluster_resolver, manager, step)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('coordinated preemption handling unavailable (%s); '
                      'handling SIGTERM locally', e)
  return _SaveOnSignal(manager, step)


@dataclasses.dataclass
class Experiment:
  """Everything a run built; `run_experiment` returns its outcome."""
  task: base_task.Task
  model: keras.Model
  optimizer: object
  strategy: tf.distribute.Strategy
  runner: trainer_lib.Runner
  controller: orbit.Controller
  checkpoint_manager: tf.train.CheckpointManager
  model_dir: str
  options: TrainerOptions
  _cleanup: Callable = None

  @property
  def global_step(self):
    return int(self.optimizer.iterations.numpy())

  def close(self):
    if self._cleanup:
      self._cleanup()
      self._cleanup = None


def build_experiment(task: base_task.Task, mode: str, model_dir: str,
                     strategy: Optional[tf.distribute.Strategy] = None,
                     optimizer_options=optimization.OptimizerOptions(),
                     trainer_options=TrainerOptions()) -> Experiment:
  """Builds model, optimizer, datasets, runner and controller; restores.

  The model is restored from the latest checkpoint in `model_dir` (or
  initialized from `trainer_options.init_checkpoint`). Call `close()` when
  done (it restores the Keras precision policy and signal handlers).
  """
  if mode not in MODES:
    raise ValueError(f'Unknown mode {mode!r}; expected one of {MODES}.')
  if not model_dir:
    raise ValueError('`model_dir` is required (a local path or gs://...).')
  strategy = strategy or strategies.get_strategy('auto')
  o = trainer_options
  previous_policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(o.precision)
  try:
    with strategy.scope():
      model = task.build_model()
      if o.freeze_backbone:
        freezing.freeze_backbone(model)
      learning_rate = optimization.build_learning_rate(optimizer_options,
                                                       o.train_steps)
      optimizer = optimization.build_optimizer(optimizer_options, learning_rate,
                                               o.precision)
      if hasattr(optimizer, 'shadow_copy'):
        optimizer.shadow_copy(model)
      step = optimizer.iterations
  except Exception:
    keras.mixed_precision.set_global_policy(previous_policy)
    raise
  write_dir = strategies.worker_dir(model_dir, strategy)
  chief = strategies.is_chief(strategy)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
  init_fn = None
  if o.init_checkpoint:
    def init_fn():
      logging.info('initializing the model from %s (parts=%r)',
                   o.init_checkpoint, o.init_checkpoint_parts)
      report = initialization.initialize_from_checkpoint(
          model, o.init_checkpoint, o.init_checkpoint_parts)
      if chief:
        initialization.write_report(report, model_dir)
  manager = tf.train.CheckpointManager(
      checkpoint, write_dir, max_to_keep=o.max_checkpoints, step_counter=step,
      checkpoint_interval=o.checkpoint_interval, init_fn=init_fn)

  training = mode in ('train', 'train_and_eval')
  evaluating = mode != 'train'
  train_ds = eval_ds = None
  if training:
    train_ds = strategy.distribute_datasets_from_function(
        lambda ctx: task.build_inputs(True, ctx))
  if evaluating:
    eval_ds = strategy.distribute_datasets_from_function(
        lambda ctx: task.build_inputs(False, ctx))
  batch = getattr(getattr(task, 'train_data', None), 'global_batch_size', 1)
  runner = trainer_lib.Runner(
      task, model, optimizer, strategy, train_ds, eval_ds,
      global_batch_size=batch,
      step_options=trainer_lib.StepOptions(
          weight_decay=optimizer_options.weight_decay,
          gradient_clip_norm=optimizer_options.gradient_clip_norm,
          jit_compile=o.jit_compile))

  train_actions, eval_actions = [], []
  cleanups = [lambda: keras.mixed_precision.set_global_policy(previous_policy)]
  if training:
    train_actions.append(_ProgressLog(step, o.train_steps))
    preemption = _preemption_action(strategy, manager, step)
    train_actions.append(preemption)
    if hasattr(preemption, 'close'):
      cleanups.append(preemption.close)
  if evaluating and chief:
    eval_actions.append(_WriteMetrics(os.path.join(model_dir, 'eval'), step))
    if o.eval_image_summaries:
      eval_actions.append(image_summaries.EvalImageSummaries(
          task, model, os.path.join(model_dir, 'eval'), step,
          o.eval_image_summaries,
          swap_weights=runner._swap_ema_weights if runner.ema else None))  # pylint: disable=protected-access
  controller = orbit.Controller(
      global_step=step, trainer=runner if training else None,
      evaluator=runner if evaluating else None, strategy=strategy,
      train_actions=train_actions, eval_actions=eval_actions,
      steps_per_loop=o.steps_per_loop if training else None,
      checkpoint_manager=manager,
      summary_dir=os.path.join(model_dir, 'train') if chief else None,
      eval_summary_dir=os.path.join(model_dir, 'eval') if chief else None)

  def cleanup():
    for fn in reversed(cleanups):
      fn()

  return Experiment(task, model, optimizer, strategy, runner, controller,
                    manager, model_dir, o, cleanup)


def run_experiment(task: base_task.Task, mode: str, model_dir: str,
                   strategy: Optional[tf.distribute.Strategy] = None,
                   optimizer_options=optimization.OptimizerOptions(),
                   trainer_options=TrainerOptions(),
                   on_built: Optional[Callable[[Experiment], None]] = None):
  """Trains and/or evaluates `task` as `mode` says.

  Args:
    task: a `base_task.Task` (e.g. `RetinaNetTask`).
    mode: 'train', 'eval' (the latest checkpoint, once), 'train_and_eval'
      or 'continuous_eval' (each new checkpoint until `train_steps`).
    model_dir: checkpoints, summaries and metrics (local or `gs://`).
    strategy: a `tf.distribute.Strategy` (default: `strategies.get_strategy()`).
    optimizer_options: `optimization.OptimizerOptions`.
    trainer_options: `TrainerOptions`.
    on_built: optional callback, called once everything is built (the CLI
      writes the operative gin config there).

  Returns:
    dict with `step` (the final global step), `eval` (the last metrics, or
    None) and `preempted` (bool).

  Raises:
    trainer.NonFiniteLossError: the loss became NaN or infinite.
  """
  experiment = build_experiment(task, mode, model_dir, strategy,
                                optimizer_options, trainer_options)
  try:
    if on_built is not None:
      on_built(experiment)
    return run(experiment, mode)
  finally:
    experiment.close()


def run(experiment: Experiment, mode: str):
  """Runs a built experiment (see `run_experiment`); returns the same dict."""
  o = experiment.options
  controller = experiment.controller
  metrics, preempted = None, False
  try:
    if mode == 'train':
      controller.train(o.train_steps)
    elif mode == 'train_and_eval':
      metrics = controller.train_and_evaluate(
          o.train_steps, eval_steps=o.eval_steps, eval_interval=o.eval_interval)
      if metrics is None:  # already trained: evaluate the final checkpoint
        metrics = controller.evaluate(o.eval_steps)
    elif mode == 'eval':
      if (experiment.checkpoint_manager.latest_checkpoint is None and
          not o.init_checkpoint):
        raise ValueError(f'mode=eval: no checkpoint in {experiment.model_dir}; '
                         'train first or set TrainerOptions.init_checkpoint.')
      metrics = controller.evaluate(o.eval_steps)
    else:
      def finished():
        return experiment.global_step >= o.train_steps
      for path in tf.train.checkpoints_iterator(
          experiment.model_dir, timeout=o.eval_timeout, timeout_fn=finished):
        controller.restore_checkpoint(path)
        metrics = controller.evaluate(o.eval_steps)
        if finished():
          break
  except Preempted as e:
    logging.warning('stopped after preemption at step %d (checkpoint %s); '
                    'run the same command again to resume.',
                    experiment.global_step, e)
    preempted = True
  return {'step': experiment.global_step, 'eval': metrics, 'preempted': preempted}
