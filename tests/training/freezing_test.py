"""Fine-tuning through `train_lib`: init by parts, then a frozen backbone.

A few real training steps on the tiny model: with `freeze_backbone` every
backbone variable (weights and batch-norm moving statistics) is unchanged
while the head's weights and statistics move; without it the backbone's
statistics move too (so the check can fail).
"""
import json
import os
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras

from spinenet.training import freezing
from spinenet.training import optimization
from spinenet.training import retinanet_task
from spinenet.training import strategies
from spinenet.training import train_lib
import tiny

_STATE = {}


def _setup():
  if not _STATE:
    root = tempfile.mkdtemp()
    _STATE['records'] = tiny.make_records(root)
    source = tiny.model_fn(num_classes=3)()  # another class count
    _STATE['ckpt'] = tf.train.Checkpoint(model=source).write(
        os.path.join(root, 'source', 'ckpt'))
    _STATE['source'] = {v.name: v.numpy() for v in source.variables}
  return _STATE


def _task():
  records = _setup()['records']
  return retinanet_task.RetinaNetTask(
      tiny.model_fn(init_stochastic_depth_rate=0.2),
      retinanet_task.DataOptions(records['train'], global_batch_size=2,
                                 shuffle_buffer=4, seed=0))


def _train(model_dir, steps=3, **trainer):
  options = train_lib.TrainerOptions(
      train_steps=steps, steps_per_loop=steps, checkpoint_interval=steps,
      init_checkpoint=_setup()['ckpt'], **trainer)
  experiment = train_lib.build_experiment(
      _task(), 'train', model_dir, strategies.get_strategy('one_device'),
      optimization.OptimizerOptions(learning_rate=0.05, warmup_steps=0),
      options)
  try:
    before = {v.name: v.numpy().copy() for v in experiment.model.variables}
    trainable = len(experiment.model.trainable_variables)
    experiment.controller.train(steps)
    after = {v.name: v.numpy() for v in experiment.model.variables}
    return experiment.model, before, after, trainable
  finally:
    experiment.close()


def _changed(model_part, before, after):
  return [v.name for v in model_part.variables
          if not np.array_equal(before[v.name], after[v.name])]


class FreezeBackboneTest(tf.test.TestCase):

  def test_frozen_backbone_is_unchanged_while_the_head_trains(self):
    model_dir = tempfile.mkdtemp()
    model, before, after, trainable = _train(
        model_dir, freeze_backbone=True,
        init_checkpoint_parts='backbone_and_head_towers')
    # Initialized from the checkpoint, then frozen: exactly its values.
    source = _setup()['source']
    for v in model.backbone.variables:
      self.assertAllEqual(before[v.name], source[v.name], msg=v.name)
    self.assertEqual(_changed(model.backbone, before, after), [])
    changed = _changed(model.head, before, after)
    self.assertIn(model.head.classifier.kernel.name, changed)
    self.assertIn(model.head.box_regressor.kernel.name, changed)
    # The head's batch norms still train: their moving statistics move.
    self.assertIn(model.head.class_norms['3'][0].moving_mean.name, changed)
    self.assertEqual(trainable, len(model.head.trainable_variables))
    with open(os.path.join(model_dir, 'init_checkpoint.json')) as f:
      record = json.load(f)
    self.assertEqual(record['parts'], 'backbone_and_head_towers')
    self.assertEqual(sorted(record['restored']), ['backbone', 'head towers'])

  def test_without_freezing_the_backbone_statistics_move(self):
    model, before, after, trainable = _train(tempfile.mkdtemp())
    changed = _changed(model.backbone, before, after)
    self.assertTrue(any('moving_mean' in n for n in changed), changed)
    self.assertTrue(any('kernel' in n for n in changed), changed)
    self.assertEqual(trainable, len(model.trainable_variables))
    self.assertGreater(trainable, len(model.head.trainable_variables))

  def test_freeze_switches_off_stochastic_depth_and_names_missing_backbone(self):
    model = tiny.model_fn(init_stochastic_depth_rate=0.2)()
    rates = [l.rate for l in freezing._all_layers(model.backbone)
             if type(l).__name__ == 'StochasticDepth']
    self.assertTrue(rates and max(rates) > 0)
    names = freezing.freeze_backbone(model)
    self.assertLen(names, len(model.backbone.variables))
    self.assertEqual([l.rate for l in freezing._all_layers(model.backbone)
                      if type(l).__name__ == 'StochasticDepth'], [0.0] * len(rates))
    images = tf.random.stateless_normal([1, 128, 128, 3], [1, 2])
    features = model.backbone(images, training=True)
    reference = model.backbone(images, training=False)
    for level in features:
      self.assertAllClose(features[level], reference[level], atol=1e-5)
    with self.assertRaisesRegex(ValueError, 'no `backbone`'):
      freezing.freeze_backbone(tf_keras.Sequential(name="plain"))
