"""Tests of the Model Garden checkpoint converter on a real MG checkpoint.

A randomized Model Garden Mobile SpineNet-49XS RetinaNet (the cheapest id) is
saved once; broken variants are made by rewriting that checkpoint object by
object (`_rewrite`), so every refusal is tested on otherwise genuine input.
Numerical parity of every id lives in tests/parity.
"""
import json
import os
import shutil
import tempfile

from absl import app
from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from benchmarks import _parity_harness as harness  # noqa: E402  (builds the MG model)

from spinenet.cli import convert as convert_cli  # noqa: E402
from spinenet.modeling import classifier as classifier_lib  # noqa: E402
from spinenet.modeling import heads  # noqa: E402
from spinenet.modeling import registry  # noqa: E402
from spinenet.training import checkpoint_converter as converter  # noqa: E402

from tensorflow.core.protobuf import trackable_object_graph_pb2  # noqa: E402

MODEL_ID = 'mobile-49XS'
NUM_CLASSES = 5


def _rewrite(src, dst, drop=(), reshape=None, rename=None, add=None):
  """Rewrites checkpoint `src` into `dst` with the same object graph, edited.

  Args:
    src, dst: checkpoint prefixes.
    drop: checkpoint keys of variables to leave out.
    reshape: `{key: shape}` variables replaced by zeros of another shape.
    rename: `{key: full name}` variables saved under another full name.
    add: `{object path (tuple of names): {name: value}}` extra variables.
  """
  reshape, rename, add = reshape or {}, rename or {}, add or {}
  reader = tf.train.load_checkpoint(src)
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor('_CHECKPOINTABLE_OBJECT_GRAPH'))
  made, extras = {}, {}
  for path, variables in add.items():
    node = 0
    for name in path:
      node = {c.local_name: c.node_id for c in graph.nodes[node].children}[name]
    extras[node] = variables

  def make(i):
    variables = [a for a in graph.nodes[i].attributes if a.name == 'VARIABLE_VALUE']
    if variables:
      key, name = variables[0].checkpoint_key, variables[0].full_name
      if key in drop:
        return None
      value = reader.get_tensor(key)
      if key in reshape:
        value = np.zeros(reshape[key], value.dtype)
      return tf.Variable(value, name=rename.get(key, name))
    children = {}
    for c in graph.nodes[i].children:
      if c.node_id not in made:
        made[c.node_id] = make(c.node_id)
      if made[c.node_id] is not None:
        children[c.local_name] = made[c.node_id]
    for name, value in extras.get(i, {}).items():
      children[name] = tf.Variable(value, name=name)
    return tf.train.Checkpoint(**children)

  return make(0).write(dst)


class RequestTest(tf.test.TestCase):
  """Refusals and checkpoint lookup that need no Model Garden model."""

  def test_refuses_an_unknown_task_and_a_non_spinenet_id(self):
    out = os.path.join(self.get_temp_dir(), 'out')
    with self.assertRaisesRegex(converter.ConversionError,
                                "--task='detection' is not supported"):
      converter.convert('unused', MODEL_ID, 'detection', out)
    with self.assertRaisesRegex(converter.ConversionError,
                                '--model=resnet50-fpn: only SpineNet ids'):
      converter.convert('unused', 'resnet50-fpn', 'retinanet', out)
    self.assertFalse(os.path.exists(out))

  def test_reads_the_latest_checkpoint_of_a_directory_or_a_saved_model(self):
    root = self.get_temp_dir()
    train_dir = os.path.join(root, 'train')
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(v=tf.Variable(1.0)), train_dir, max_to_keep=2)
    manager.save()
    latest = manager.save()
    self.assertEqual(converter._checkpoint_prefix(train_dir), latest)  # pylint: disable=protected-access
    self.assertEqual(converter._checkpoint_prefix(latest), latest)  # pylint: disable=protected-access
    export_dir = os.path.join(root, 'export')
    os.makedirs(export_dir)
    open(os.path.join(export_dir, 'saved_model.pb'), 'wb').close()
    self.assertEqual(converter._checkpoint_prefix(export_dir),  # pylint: disable=protected-access
                     os.path.join(export_dir, 'variables', 'variables'))


@pytest.mark.slow  # builds a Model Garden model and two of ours (~1 min CPU)
class CheckpointConverterTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    _, cls.mg = harness.mg_retinanet(MODEL_ID, NUM_CLASSES)
    harness.randomize(cls.mg, 0)
    cls.mg_ckpt = tf.train.Checkpoint(model=cls.mg).write(os.path.join(cls.root, 'mg', 'ckpt'))
    cls.ours = registry.build_retinanet(MODEL_ID, num_classes=NUM_CLASSES, input_size=128)
    result = converter.convert(cls.mg_ckpt, MODEL_ID, 'retinanet',
                               os.path.join(cls.root, 'reference'), model=cls.ours)
    cls.our_name = {key: ours for ours, key in result.mapping}  # MG key -> ours

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _tmp(self, *parts):
    return os.path.join(tempfile.mkdtemp(dir=self.root), *parts)

  def _out(self):
    return self._tmp('out')

  def _refusal(self, checkpoint, **kwargs):
    out = self._out()
    with self.assertRaises(converter.ConversionError) as error:
      converter.convert(checkpoint, MODEL_ID, 'retinanet', out, model=self.ours, **kwargs)
    self.assertIsNone(tf.train.latest_checkpoint(out) if os.path.isdir(out) else None)
    return str(error.exception)

  def _key(self, fragment):
    """The MG checkpoint key containing `fragment` (first in sorted order)."""
    return sorted(k for k in self.our_name if fragment in k)[0]

  def test_written_checkpoint_restores_into_a_fresh_model(self):
    out = self._out()
    result = converter.convert(self.mg_ckpt, MODEL_ID, 'retinanet', out)
    self.assertLen(result.mapping, len(self.mg.weights))
    self.assertLen(result.mapping, len(result.model.weights))
    self.assertEqual(result.model.head._config['num_classes'], NUM_CLASSES)
    self.assertEqual(tf.train.latest_checkpoint(out), result.checkpoint_path)
    fresh = self.ours  # built apart from the converter's model
    for w in fresh.weights:
      w.assign(tf.zeros_like(w))
    tf.train.Checkpoint(model=fresh).read(
        result.checkpoint_path).assert_existing_objects_matched()
    reader = tf.train.load_checkpoint(self.mg_ckpt)
    by_name = {w.name.split(':')[0]: w for w in fresh.weights}
    for ours, key in result.mapping:
      self.assertAllEqual(by_name[ours], reader.get_tensor(key), msg=ours)
    with open(os.path.join(out, 'conversion.json')) as f:
      record = json.load(f)
    self.assertEqual(record['task'], 'retinanet')
    self.assertEqual([tuple(p) for p in record['mapping']], result.mapping)

  def test_backbone_checkpoint_initializes_the_backbone_of_a_detector(self):
    for name, checkpoint in (
        ('model', self.mg_ckpt),
        ('root backbone', tf.train.Checkpoint(backbone=self.mg.backbone).write(
            self._tmp('bb', 'ckpt')))):
      result = converter.convert(checkpoint, MODEL_ID, 'backbone', self._out(),
                                 model=self.ours.backbone)
      self.assertLen(result.mapping, len(self.mg.backbone.weights), msg=name)
      for w in self.ours.backbone.weights:
        w.assign(tf.zeros_like(w))
      head_before = [w.numpy() for w in self.ours.head.weights]
      tf.train.Checkpoint(model=self.ours).read(result.checkpoint_path).expect_partial()
      reader = tf.train.load_checkpoint(checkpoint)
      by_name = {w.name.split(':')[0]: w for w in self.ours.weights}
      for ours, key in result.mapping:
        self.assertAllEqual(by_name[ours], reader.get_tensor(key), msg=ours)
      for before, w in zip(head_before, self.ours.head.weights):
        self.assertAllEqual(before, w)

  def test_training_checkpoint_ignores_optimizer_state_and_counts_it(self):
    optimizer = tf_keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(self.mg.trainable_variables)
    checkpoint = tf.train.Checkpoint(
        model=self.mg, optimizer=optimizer, global_step=tf.Variable(7, dtype=tf.int64),
        backbone=self.mg.backbone, head=self.mg.head).write(
            self._tmp('train', 'ckpt-7'))
    with self.assertLogs('absl', level='INFO') as logs:
      result = converter.convert(checkpoint, MODEL_ID, 'retinanet', self._out(),
                                 model=self.ours)
    self.assertLen(result.mapping, len(self.mg.weights))
    # Keras 2.11+ optimizers track slots as their own variables (MG trains with them).
    self.assertGreaterEqual(result.ignored['optimizer'], len(self.mg.trainable_variables))
    self.assertEqual(result.ignored['global_step'], 1)
    self.assertTrue(any('Ignoring' in line and 'non-model' in line for line in logs.output))

  def test_refuses_listing_every_missing_variable(self):
    keys = [self._key('_conv1/depthwise_kernel'), self._key('_cls_norms/2/1/gamma')]
    broken = _rewrite(self.mg_ckpt, self._tmp('missing', 'ckpt'),
                      drop=keys)
    message = self._refusal(broken)
    self.assertEqual(message.count('missing in checkpoint'), 2, message)
    for key in keys:
      self.assertIn(f'missing in checkpoint: {self.our_name[key]} ', message)

  def test_refuses_listing_every_shape_mismatch(self):
    keys = [self._key('_conv2/kernel'), self._key('_box_regressor/bias')]
    broken = _rewrite(self.mg_ckpt, self._tmp('shape', 'ckpt'),
                      reshape={k: (3,) for k in keys})
    message = self._refusal(broken)
    self.assertEqual(message.count('shape mismatch'), 2, message)
    for key in keys:
      self.assertIn(f'shape mismatch: {self.our_name[key]} ', message)
    self.assertEqual(message.count(' (3,)\n') + message.endswith(' (3,)'), 2, message)

  def test_refuses_listing_every_unmatched_checkpoint_variable(self):
    backbone = ('model', '_backbone')
    broken = _rewrite(
        self.mg_ckpt, self._tmp('extra', 'ckpt'),
        add={backbone: {'extra_scale': np.ones([4], np.float32)},
             ('model', '_head'): {'extra_bias': np.zeros([2], np.float32)}})
    message = self._refusal(broken)
    self.assertEqual(message.count('unmatched checkpoint variable'), 2, message)
    self.assertIn('extra_scale', message)
    self.assertIn('extra_bias', message)

  def test_refuses_when_layers_cannot_be_ordered_by_name(self):
    key = self._key('layer_with_weights-0/kernel')
    broken = _rewrite(self.mg_ckpt, self._tmp('names', 'ckpt'),
                      rename={key: 'stem/kernel'})
    self.assertIn('cannot order the', self._refusal(broken))

  def test_refuses_the_wrong_task_listing_the_head_variables(self):
    classifier = classifier_lib.Classifier(
        self.ours.backbone, heads.ClassificationHead(NUM_CLASSES, fusion='top'))
    classifier(tf.zeros([1, 128, 128, 3]))
    with self.assertRaises(converter.ConversionError) as error:
      converter.convert(self.mg_ckpt, MODEL_ID, 'classification', self._out(),
                        model=classifier)
    message = str(error.exception)
    self.assertIn('dense layers: 0 in the checkpoint, 1 in our model', message)
    self.assertRegex(message, r'missing in checkpoint: \S*classification_head/logits/kernel ')
    head_keys = [k for k in self.our_name if '/_head/' in k]
    self.assertEqual(message.count('unmatched checkpoint variable'), len(head_keys))

  def test_refuses_an_output_dir_that_holds_a_checkpoint(self):
    out = self._out()
    tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), out, 1).save()
    with self.assertRaisesRegex(converter.ConversionError, 'output_dir'):
      converter.convert(self.mg_ckpt, MODEL_ID, 'retinanet', out, model=self.ours)

  def test_cli_turns_refusals_into_usage_errors(self):
    out = self._out()
    tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), out, 1).save()
    flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver(model_garden_checkpoint=self.mg_ckpt, model=MODEL_ID,
                             task='retinanet', output_dir=out):
      with self.assertRaisesRegex(app.UsageError, 'already holds a checkpoint'):
        convert_cli.main(['spinenet-convert'])


if __name__ == '__main__':
  tf.test.main()
