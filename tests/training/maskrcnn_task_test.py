"""The Mask R-CNN task: inputs from the model, losses, training, box and mask metrics."""
import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from spinenet.training import image_summaries
from spinenet.training import maskrcnn_losses
from spinenet.training import maskrcnn_task
from spinenet.training import optimization
from spinenet.training import strategies
from spinenet.training import train_lib
from spinenet.training import trainer
import tiny_maskrcnn

_RECORDS = None


def _records():
  global _RECORDS
  if _RECORDS is None:
    _RECORDS = tiny_maskrcnn.make_records(tempfile.mkdtemp())
  return _RECORDS


def _task(batch=2, annotation_json=True, **model_overrides):
  records = _records()
  return maskrcnn_task.MaskRCNNTask(
      tiny_maskrcnn.model_fn(**model_overrides),
      maskrcnn_task.MaskRCNNDataOptions(records['train'], global_batch_size=batch,
                                        shuffle_buffer=8, aug_rand_hflip=False,
                                        seed=0),
      maskrcnn_task.MaskRCNNDataOptions(records['val'], global_batch_size=batch),
      annotation_json=records['val_json'] if annotation_json else None)


class InputsTest(tf.test.TestCase):

  def test_inputs_follow_the_model(self):
    task = _task()
    model = task.build_model()
    features, labels = next(iter(task.build_inputs(training=True)))
    self.assertEqual(features['images'].shape, (2, 128, 128, 3))
    self.assertEqual(features['gt_masks'].shape[2:], (112, 112))
    anchors = model.anchors((128, 128))
    for level, targets in labels['rpn_score_targets'].items():
      # One anchor per location and ratio: the model's RPN anchors.
      self.assertEqual(targets.shape[1:], anchors[level].shape[:2] +
                       (model.anchor_config.num_anchors,))
    self.assertGreater(int(tf.reduce_sum(tf.cast(features['gt_classes'] > 0, tf.int32))), 0)
    features, labels = next(iter(task.build_inputs(training=False)))
    self.assertEqual(set(features), {'images', 'image_info'})
    self.assertIn('source_id', labels)

  def test_inputs_before_the_model_and_missing_patterns_are_refused(self):
    task = _task()
    with self.assertRaisesRegex(RuntimeError, 'build_model'):
      task.build_inputs(training=True)
    task = maskrcnn_task.MaskRCNNTask(tiny_maskrcnn.model_fn())
    task.build_model()
    with self.assertRaisesRegex(ValueError, 'train_data.file_pattern'):
      task.build_inputs(training=True)
    with self.assertRaisesRegex(ValueError, 'rpn_unmatched_threshold'):
      maskrcnn_task.MaskRCNNDataOptions(rpn_match_threshold=0.3,
                                        rpn_unmatched_threshold=0.7)


class TrainingTest(tf.test.TestCase):

  def test_losses_are_the_five_and_fall_on_a_fixed_batch(self):
    task = _task()
    model = task.build_model()
    batch = next(iter(task.build_inputs(training=True)))
    losses = task.build_losses(model(batch[0], training=True), batch[1])
    self.assertEqual(set(losses), {'model_loss', *maskrcnn_losses.MaskRCNNLoss.NAMES})
    for name, value in losses.items():
      self.assertTrue(np.isfinite(float(value)) and float(value) > 0, name)
    optimizer = optimization.build_optimizer(
        optimization.OptimizerOptions(momentum=0.9), 0.02)
    runner = trainer.Runner(task, model, optimizer, tf.distribute.get_strategy(),
                            tf.data.Dataset.from_tensors(batch).repeat(),
                            global_batch_size=2)
    first = runner.train(tf.constant(1))
    later = runner.train(tf.constant(30))
    for name in ('total_loss', 'frcnn_cls_loss', 'mask_loss'):
      self.assertLess(float(later[name]), float(first[name]), msg=name)

  def test_train_and_eval_reports_box_and_mask_metrics_and_draws(self):
    model_dir = tempfile.mkdtemp()
    result = train_lib.run_experiment(
        _task(), 'train_and_eval', model_dir, strategies.get_strategy('one_device'),
        optimization.OptimizerOptions(warmup_steps=0, learning_rate=0.01),
        train_lib.TrainerOptions(train_steps=2, steps_per_loop=1,
                                 checkpoint_interval=2, eval_image_summaries=2))
    self.assertEqual(result['step'], 2)
    with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
      metrics = json.load(f)
    for name in ('AP', 'AP50', 'mask_AP', 'mask_AP50', 'mask_ARmax100'):
      self.assertBetween(metrics[name], -1.0, 1.0)
    events = tf.io.gfile.glob(os.path.join(model_dir, 'eval', 'events.out.tfevents.*'))
    tags = {v.tag for path in events
            for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value}
    self.assertIn(image_summaries.TAG, tags)

  def test_validation_step_outputs_box_relative_masks(self):
    task = _task()
    model = task.build_model()
    inputs = next(iter(task.build_inputs(training=False)))
    outputs = task.validation_step(inputs, model)
    self.assertEqual(outputs['detection_masks'].shape, (2, 10, 28, 28))
    self.assertNotIn('groundtruths', outputs)  # the annotation JSON is the ground truth
    self.assertNotIn('masks', inputs[1]['groundtruths'])  # nor decoded
    no_json = _task(annotation_json=False)
    no_json.build_model()
    inputs = next(iter(no_json.build_inputs(training=False)))
    groundtruths = no_json.validation_step(inputs, model)['groundtruths']
    # Without the JSON the records' masks, each over its box, are the truth.
    self.assertEqual(groundtruths['masks'].shape, (2, 100, 112, 112))
    real = tf.sequence_mask(groundtruths['num_detections'], 100)
    self.assertGreater(float(tf.reduce_min(tf.reduce_mean(
        tf.boolean_mask(groundtruths['masks'], real), [1, 2]))), 0.3)

  def test_train_and_eval_without_annotation_json_reports_mask_ap(self):
    model_dir = tempfile.mkdtemp()
    train_lib.run_experiment(
        _task(annotation_json=False), 'train_and_eval', model_dir,
        strategies.get_strategy('one_device'),
        optimization.OptimizerOptions(warmup_steps=0, learning_rate=0.01),
        train_lib.TrainerOptions(train_steps=1, steps_per_loop=1,
                                 checkpoint_interval=1, eval_image_summaries=0))
    with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
      metrics = json.load(f)
    for name in ('AP', 'mask_AP', 'mask_AP50', 'mask_ARmax100'):
      self.assertBetween(metrics[name], -1.0, 1.0)


if __name__ == '__main__':
  tf.test.main()
