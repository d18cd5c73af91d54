"""Initialization from a checkpoint by parts (spinenet/training/initialization.py).

Source checkpoints are written from a tiny RetinaNet with distinct random
values in every variable, so "restored" is checked value by value; targets
are filled with another constant first, so "left at initialization" and
"re-initialized" are told apart from "restored".
"""
import os
import tempfile

from absl import logging
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from spinenet.training import initialization
from spinenet.training import train_lib
import tiny

PRIOR_BIAS = -np.log((1 - 0.01) / 0.01)


def _randomize(model, seed):
  rng = np.random.default_rng(seed)
  for v in model.variables:
    v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))


def _fill(model, value):
  for v in model.variables:
    v.assign(tf.fill(v.shape, value))


def _values(variables):
  return {v.name: v.numpy().copy() for v in variables}


class InitializationTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.source = tiny.model_fn()()  # 5 classes
    _randomize(cls.source, 0)
    cls.ckpt = tf.train.Checkpoint(model=cls.source).write(
        os.path.join(cls.root, 'source', 'ckpt'))

  def _target(self, **overrides):
    model = tiny.model_fn(**overrides)()
    _fill(model, 7.0)
    return model

  def _assert_restored(self, ours, theirs, msg=''):
    for a, b in zip(ours, theirs):
      self.assertAllEqual(a, b, msg=f'{a.name} {msg}')

  def _assert_filled(self, variables, value=7.0):
    for v in variables:
      self.assertAllEqual(v, tf.fill(v.shape, value), msg=v.name)

  def test_all_with_another_class_count_reinitializes_the_class_predictor(self):
    model = self._target(num_classes=3)
    with self.assertLogs(logging.get_absl_logger(), 'INFO') as logs:
      report = initialization.initialize_from_checkpoint(model, self.ckpt, 'all')
    self._assert_restored(model.backbone.variables, self.source.backbone.variables)
    self._assert_restored(model.head.box_regressor.variables,
                          self.source.head.box_regressor.variables)
    self._assert_restored(model.head.class_convs[0].variables,
                          self.source.head.class_convs[0].variables)
    # The class predictor: fresh from its initializers, prior bias.
    self.assertAllClose(model.head.classifier.bias,
                        np.full([27], PRIOR_BIAS, np.float32), atol=1e-5)
    self.assertLess(float(tf.reduce_max(tf.abs(model.head.classifier.kernel))), 1e-3)
    self.assertEqual(sorted(report.reinitialized), ['class predictor'])
    self.assertIn('5 classes in the checkpoint, 3 here',
                  report.reinitialized_reason['class predictor'])
    restored = sum(len(v) for v in report.restored.values())
    self.assertEqual(restored, len(model.variables) - 2)
    text = '\n'.join(logs.output)
    self.assertIn('restored 316 variables, re-initialized 2', text)
    self.assertIn('re-initialized  class predictor', text)
    self.assertIn('retinanet_head/class_predictor/bias [27] (checkpoint [45])', text)

  def test_same_class_count_restores_everything(self):
    model = self._target()
    report = initialization.initialize_from_checkpoint(model, self.ckpt, 'all')
    self._assert_restored(model.variables, self.source.variables)
    self.assertEqual(report.reinitialized, {})
    self.assertEqual(report.skipped, {})

  def test_backbone_only_leaves_the_head_as_built(self):
    model = self._target()
    report = initialization.initialize_from_checkpoint(model, self.ckpt, 'backbone')
    self._assert_restored(model.backbone.variables, self.source.backbone.variables)
    self._assert_filled(model.head.variables)
    self.assertEqual(sorted(report.not_selected),
                     ['box predictor', 'class predictor', 'head towers'])
    self.assertIn("head towers: not in parts='backbone'", report.skipped)

  def test_backbone_and_towers_leave_both_predictors(self):
    model = self._target(num_classes=3)
    initialization.initialize_from_checkpoint(model, self.ckpt,
                                              'backbone_and_head_towers')
    self._assert_restored(model.backbone.variables, self.source.backbone.variables)
    for ours, theirs in ((model.head.class_convs, self.source.head.class_convs),
                         (model.head.box_convs, self.source.head.box_convs)):
      self._assert_restored(ours[0].variables, theirs[0].variables)
    self._assert_restored(model.head.class_norms['5'][0].variables,
                          self.source.head.class_norms['5'][0].variables)
    self._assert_filled(model.head.classifier.variables)
    self._assert_filled(model.head.box_regressor.variables)

  def test_training_checkpoint_skips_the_optimizer_state(self):
    source = tiny.model_fn()()
    _randomize(source, 1)
    optimizer = keras.optimizers.legacy.SGD(0.1, momentum=0.9)
    optimizer.apply_gradients(
        [(tf.ones_like(v), v) for v in source.trainable_variables])
    prefix = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=source, optimizer=optimizer),
        os.path.join(self.root, 'run'), 1).save(checkpoint_number=1)
    model = self._target(num_classes=3)
    # A directory: its latest checkpoint.
    report = initialization.initialize_from_checkpoint(
        model, os.path.join(self.root, 'run'), 'all')
    self.assertEqual(report.checkpoint, prefix)
    self._assert_restored(model.backbone.variables, source.backbone.variables)
    [reason] = [r for r in report.skipped if r.startswith('optimizer state')]
    # One momentum slot per trainable variable, plus the step and hyperparameters.
    self.assertGreaterEqual(len(report.skipped[reason]),
                            len(source.trainable_variables))

  def test_backbone_only_checkpoint(self):
    prefix = tf.train.Checkpoint(model=tf.train.Checkpoint(
        backbone=self.source.backbone)).write(os.path.join(self.root, 'bb', 'ckpt'))
    with self.assertRaisesRegex(initialization.InitializationError,
                                r"(?s)class_conv_0.*not in the checkpoint.*"
                                r"init_checkpoint_parts = 'backbone'"):
      initialization.initialize_from_checkpoint(self._target(), prefix, 'all')
    model = self._target()
    initialization.initialize_from_checkpoint(model, prefix, 'backbone')
    self._assert_restored(model.backbone.variables, self.source.backbone.variables)

  def test_other_shape_differences_are_refused_with_every_layer_named(self):
    wider = self._target(head_filters=24)
    with self.assertRaises(initialization.InitializationError) as error:
      initialization.initialize_from_checkpoint(wider, self.ckpt, 'all')
    message = str(error.exception)
    for layer in ('class_conv_0', 'box_conv_0', 'box_predictor', 'class_norm_3_0'):
      self.assertIn(f'retinanet_head/{layer}', message)
    self.assertIn('[3, 3, 16, 24] here, [3, 3, 16, 16] in the checkpoint', message)
    self._assert_filled(wider.variables)  # nothing assigned on refusal
    # The backbone alone still fits.
    initialization.initialize_from_checkpoint(wider, self.ckpt, 'backbone')
    self._assert_restored(wider.backbone.variables, self.source.backbone.variables)

  def test_bad_requests_are_named(self):
    model = self._target()
    with self.assertRaisesRegex(initialization.InitializationError, 'no such checkpoint'):
      initialization.initialize_from_checkpoint(model, os.path.join(self.root, 'nope'))
    with self.assertRaisesRegex(initialization.InitializationError,
                                'init_checkpoint_parts=.head.'):
      initialization.initialize_from_checkpoint(model, self.ckpt, 'head')
    with self.assertRaisesRegex(ValueError, 'init_checkpoint_parts'):
      train_lib.TrainerOptions(init_checkpoint_parts='towers')
    other = tf.train.Checkpoint(net=tf.Variable(1.0)).write(
        os.path.join(self.root, 'other', 'ckpt'))
    with self.assertRaisesRegex(initialization.InitializationError,
                                r"holds no `model` .*\['net'"):
      initialization.initialize_from_checkpoint(model, other)

  def test_predictors_of_another_anchor_order_are_refused(self):
    directory = os.path.join(self.root, 'reordered')
    prefix = tf.train.Checkpoint(model=self.source).write(os.path.join(directory, 'ckpt-0'))
    import json  # pylint: disable=g-import-not-at-top
    with open(os.path.join(directory, 'conversion.json'), 'w') as f:
      json.dump({'build_args': {'aspect_ratios': [1.0, 2.0, 0.5]}}, f)
    with self.assertRaisesRegex(initialization.InitializationError,
                                r'order \(1.0, 2.0, 0.5\).*\(0.5, 1.0, 2.0\)'):
      initialization.initialize_from_checkpoint(self._target(), prefix, 'all')
    model = self._target()
    initialization.initialize_from_checkpoint(model, prefix, 'backbone_and_head_towers')
    self._assert_restored(model.backbone.variables, self.source.backbone.variables)
    same = self._target(aspect_ratios=(1.0, 2.0, 0.5))
    initialization.initialize_from_checkpoint(same, prefix, 'all')
    self._assert_restored(same.variables, self.source.variables)

  def test_report_json_lists_every_variable(self):
    model = self._target(num_classes=3)
    report = initialization.initialize_from_checkpoint(model, self.ckpt, 'all')
    path = initialization.write_report(report, os.path.join(self.root, 'report'))
    import json  # pylint: disable=g-import-not-at-top
    with open(path) as f:
      record = json.load(f)
    names = {n for pairs in record['restored'].values() for n, _ in pairs}
    names |= {row[0] for rows in record['reinitialized'].values() for row in rows}
    self.assertEqual(names, {v.name.split(':')[0] for v in model.variables})


class OtherSourcesTest(tf.test.TestCase):

  @pytest.mark.slow  # builds and converts a Model Garden model (~40 s)
  def test_converted_model_garden_checkpoint_with_another_class_count(self):
    from benchmarks import _parity_harness as harness  # pylint: disable=g-import-not-at-top
    from spinenet.modeling import registry  # pylint: disable=g-import-not-at-top
    from spinenet.training import checkpoint_converter  # pylint: disable=g-import-not-at-top
    root = tempfile.mkdtemp()
    _, mg = harness.mg_retinanet('mobile-49XS', 91)
    harness.randomize(mg, 0)
    mg_ckpt = tf.train.Checkpoint(model=mg).write(os.path.join(root, 'mg', 'ckpt'))
    converted = checkpoint_converter.convert(mg_ckpt, 'mobile-49XS', 'retinanet',
                                             os.path.join(root, 'converted'))
    model = registry.build_retinanet('mobile-49XS', num_classes=4, input_size=128)
    report = initialization.initialize_from_checkpoint(
        model, os.path.join(root, 'converted'), 'all')
    self.assertIn('91 classes in the checkpoint, 4 here',
                  report.reinitialized_reason['class predictor'])
    self._assert_restored(model.backbone.variables,
                          converted.model.backbone.variables)
    self._assert_restored(model.head.box_regressor.variables,
                          converted.model.head.box_regressor.variables)
    restored = sum(len(v) for v in report.restored.values())
    self.assertEqual(restored + len(model.head.classifier.variables),
                     len(model.variables))

  def _assert_restored(self, ours, theirs):
    for a, b in zip(ours, theirs):
      self.assertAllEqual(a, b, msg=a.name)

  def test_classifier_head_is_the_class_predictor(self):
    from spinenet.modeling import registry  # pylint: disable=g-import-not-at-top
    args = dict(input_size=64, filter_size_scale=0.25, block_specs=tiny.BLOCK_SPECS)
    source = registry.build_classifier('49S', num_classes=10, **args)
    _randomize(source, 2)
    prefix = tf.train.Checkpoint(model=source).write(
        os.path.join(tempfile.mkdtemp(), 'ckpt'))
    model = registry.build_classifier('49S', num_classes=3, **args)
    _fill(model, 7.0)
    report = initialization.initialize_from_checkpoint(model, prefix, 'all')
    self._assert_restored(model.backbone.variables, source.backbone.variables)
    self.assertEqual(list(report.reinitialized), ['class predictor'])
    self.assertIn('10 classes in the checkpoint, 3 here',
                  report.reinitialized_reason['class predictor'])
    self.assertAllEqual(model.head.linear.bias, np.zeros([3]))  # Dense's zeros
    self.assertLess(float(tf.reduce_max(tf.abs(model.head.linear.kernel))), 1.0)
