"""In-process training tests: overfitting, NaN handling, XLA + bfloat16."""
import os
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras as keras

from spinenet.training import optimization
from spinenet.training import retinanet_task
from spinenet.training import strategies
from spinenet.training import train_lib
from spinenet.training import trainer
import tiny

_RECORDS = None


def _records():
  global _RECORDS
  if _RECORDS is None:
    _RECORDS = tiny.make_records(tempfile.mkdtemp())
  return _RECORDS


def _task(batch=2, **model_overrides):
  data = retinanet_task.DataOptions(_records()['train'], global_batch_size=batch,
                                    aug_rand_hflip=False, seed=0)
  return retinanet_task.RetinaNetTask(
      tiny.model_fn(init_stochastic_depth_rate=0.0, **model_overrides), data,
      retinanet_task.DataOptions(_records()['val'], global_batch_size=batch))


def _fixed_batch(task):
  return next(iter(task.build_inputs(training=True)))


class OverfitTest(tf.test.TestCase):

  def test_loss_falls_tenfold_on_a_fixed_batch(self):
    task = _task()
    strategy = tf.distribute.get_strategy()
    model = task.build_model()
    optimizer = optimization.build_optimizer(
        optimization.OptimizerOptions(momentum=0.9), 0.02)
    dataset = tf.data.Dataset.from_tensors(_fixed_batch(task)).repeat()
    runner = trainer.Runner(task, model, optimizer, strategy, dataset,
                            global_batch_size=2)
    first = float(runner.train(tf.constant(1))['total_loss'])
    losses = [first]
    for _ in range(12):
      losses.append(float(runner.train(tf.constant(25))['total_loss']))
      if losses[-1] < first / 10:
        break
    self.assertLess(losses[-1], first / 10, msg=f'losses per 25 steps: {losses}')


class NonFiniteLossTest(tf.test.TestCase):

  def test_nan_stops_the_run_and_keeps_the_last_checkpoint(self):
    model_dir = tempfile.mkdtemp()
    experiment = train_lib.build_experiment(
        _task(), 'train', model_dir, strategies.get_strategy('one_device'),
        optimization.OptimizerOptions(warmup_steps=0, learning_rate=0.01),
        train_lib.TrainerOptions(train_steps=6, steps_per_loop=2,
                                 checkpoint_interval=2))
    try:
      experiment.controller.train(2)
      self.assertEqual(os.path.basename(experiment.checkpoint_manager.latest_checkpoint),
                       'ckpt-2')
      kernel = experiment.model.trainable_variables[0]
      kernel.assign(tf.fill(kernel.shape, np.nan))
      with self.assertRaisesRegex(trainer.NonFiniteLossError, 'non-finite loss'):
        experiment.controller.train(6)
      self.assertEqual(tf.train.latest_checkpoint(model_dir),
                       os.path.join(model_dir, 'ckpt-2'))
    finally:
      experiment.close()


class XlaBfloat16Test(tf.test.TestCase):

  def test_train_step_compiles_with_jit_in_bfloat16(self):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy('mixed_bfloat16')
    try:
      task = _task()
      model = task.build_model()
      optimizer = optimization.build_optimizer(
          optimization.OptimizerOptions(), 0.01, 'mixed_bfloat16')
      batch = _fixed_batch(task)
      step = tf.function(
          lambda inputs: task.train_step(inputs, model, optimizer, weight_decay=4e-5,
                                         gradient_clip_norm=10.0),
          jit_compile=True)
      hlo = step.experimental_get_compiler_ir(batch)(stage='hlo')
      self.assertIn('bf16', hlo)
      before = [v.numpy() for v in model.trainable_variables]
      logs = step(batch)
      logs = step(batch)
      self.assertTrue(np.isfinite(float(logs['total_loss'])))
      self.assertEqual(int(optimizer.iterations), 2)
      changed = {v.name: np.any(b != v.numpy())
                 for b, v in zip(before, model.trainable_variables)}
      # Most weights moved (batch-norm scales behind the 1e-5-initialized
      # predictors get updates below float32 resolution in two steps).
      self.assertGreater(np.mean(list(changed.values())), 0.6)
      self.assertTrue(changed['retinanet_head/class_predictor/kernel:0'])
      self.assertEqual(model.trainable_variables[0].dtype, tf.float32)
    finally:
      keras.mixed_precision.set_global_policy(previous)


if __name__ == '__main__':
  tf.test.main()
