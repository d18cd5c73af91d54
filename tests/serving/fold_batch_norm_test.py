"""Batch-norm folding keeps the network's outputs, for every conv/norm layout."""
from absl.testing import parameterized
import tensorflow as tf
import tf_keras as keras

from spinenet.serving import fold_batch_norm
from spinenet.serving import inference_graph

import serving_testing


def _random_batch_norms(model, seed=0):
  return serving_testing.randomize(model, seed)


def _ops(graph_def):
  return [n.op for n in graph_def.node]


class FoldLayersTest(tf.test.TestCase, parameterized.TestCase):
  """Small Keras graphs with each pattern, checked op by op."""

  def _model(self, synchronized):
    inputs = keras.Input([16, 16, 3])
    norm = lambda: keras.layers.BatchNormalization(synchronized=synchronized)  # noqa: E731
    a = norm()(keras.layers.Conv2D(8, 3, padding='same', use_bias=False)(inputs))
    b = norm()(keras.layers.Conv2D(8, 3, padding='same', use_bias=True)(a))  # bias folded too
    c = norm()(keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding='same')(b))
    shared = keras.layers.Conv2D(4, 1, use_bias=False)  # one filter, two norms
    d = norm()(shared(c)) + norm()(shared(c * 2.0))
    branch = keras.layers.Conv2D(4, 1)(d)  # two consumers: not folded
    out = norm()(branch) + branch
    model = keras.Model(inputs, out)
    return _random_batch_norms(model)

  @parameterized.named_parameters(('fused', False), ('unfused', True))
  def test_folds_every_norm_and_keeps_outputs(self, synchronized):
    model = self._model(synchronized)
    spec = [tf.TensorSpec([None, 16, 16, 3])]
    folded = inference_graph.freeze(lambda x: model(x, training=False), spec)
    ops = _ops(folded.graph_def)
    # Five of the six norms follow a conv that feeds nothing else; the last
    # conv also feeds the residual sum, so its norm stays.
    self.assertLen(folded.fold_report.folded, 5)
    self.assertEqual(ops.count('FusedBatchNormV3'), 0 if synchronized else 1)
    self.assertEqual(ops.count('Rsqrt'), 1 if synchronized else 0)
    x = tf.random.stateless_uniform([2, 16, 16, 3], [1, 2], -2, 2)
    expected = model(x, training=False)
    self.assertAllClose(folded(x), expected, rtol=1e-4, atol=1e-4)
    self.assertGreater(float(tf.math.reduce_std(expected)), 0.1)

  def test_shared_filter_gets_one_folded_copy_per_use(self):
    model = self._model(False)
    folded = inference_graph.freeze(lambda x: model(x, training=False),
                                    [tf.TensorSpec([1, 16, 16, 3])])
    names = [n.name for n in folded.graph_def.node if n.name.endswith('folded_filter')]
    self.assertLen(names, 5)
    shared = [n for n in names if '/conv2d_2/' in n]
    self.assertLen(shared, 2)

  def test_training_mode_norm_is_left_alone(self):
    inputs = keras.Input([8, 8, 3])
    out = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs),
                                            training=True)
    model = keras.Model(inputs, out)
    frozen = inference_graph.freeze(lambda x: model(x), [tf.TensorSpec([2, 8, 8, 3])])
    self.assertEmpty(frozen.fold_report.folded)
    self.assertIn('FusedBatchNormV3', _ops(frozen.graph_def))


class FoldRetinaNetTest(tf.test.TestCase, parameterized.TestCase):
  """Whole detectors: SpineNet and Mobile SpineNet, float32 and bfloat16."""

  @parameterized.named_parameters(
      ('spinenet_sync_bn', dict(use_sync_bn=True), 'float32'),
      ('mobile_fused_bn', dict(use_sync_bn=False, activation='hard_swish',
                               se_ratio=0.2, block_specs=serving_testing.MOBILE_BLOCK_SPECS,
                               separable_head=True), 'float32'),
      ('spinenet_bfloat16', dict(use_sync_bn=True), 'mixed_bfloat16'))
  def test_outputs_match_the_keras_model(self, overrides, policy):
    if 'block_specs' in overrides:
      build = lambda: serving_testing.registry.build_retinanet(  # noqa: E731
          'mobile-49XS', **dict(serving_testing.MODEL_ARGS, **overrides))
    else:
      build = lambda: serving_testing.registry.build_retinanet(  # noqa: E731
          '49S', **dict(serving_testing.MODEL_ARGS, **overrides))
    keras.mixed_precision.set_global_policy(policy)
    try:
      model = serving_testing.randomize(build())
    finally:
      keras.mixed_precision.set_global_policy('float32')
    size = serving_testing.INPUT_SIZE
    folded = inference_graph.freeze(lambda x: model(x, training=False),
                                    [tf.TensorSpec([None, size, size, 3])])
    num_norms = sum(isinstance(l, keras.layers.BatchNormalization)
                    for l in model.submodules)
    # Every norm is folded; the head's norms once per level they run on.
    self.assertGreaterEqual(len(folded.fold_report.folded), num_norms)
    self.assertEmpty(folded.fold_report.skipped)
    ops = _ops(folded.graph_def)
    self.assertNotIn('FusedBatchNormV3', ops)
    self.assertNotIn('Rsqrt', ops)
    x = tf.random.stateless_normal([2, size, size, 3], [5, 6])
    expected = model(x, training=False)
    got = folded(x)
    # bfloat16 keeps 8 bits of mantissa; the folded filter is rounded once more.
    tolerance = 1e-3 if policy == 'float32' else 0.1
    for key in ('cls_outputs', 'box_outputs'):
      for level in expected[key]:
        scale = float(tf.reduce_max(tf.abs(expected[key][level])))
        self.assertAllClose(got[key][level] / scale, expected[key][level] / scale,
                            atol=tolerance, rtol=0)


class NotFoldableTest(tf.test.TestCase):

  def test_non_nhwc_or_variable_filters_are_reported(self):
    graph = tf.Graph()
    with graph.as_default():
      x = tf.compat.v1.placeholder(tf.float32, [1, 4, 4, 2], name='x')
      w = tf.compat.v1.placeholder(tf.float32, [1, 1, 2, 2], name='w')
      y = tf.nn.conv2d(x, w, 1, 'SAME')
      tf.identity(y * tf.constant([2.0, 3.0]) + 1.0, name='out')
    folded, report = fold_batch_norm.fold_batch_norms(graph.as_graph_def(), ['out'])
    self.assertEmpty(report.folded)
    self.assertIn('filter is not constant', report.skipped.values())
    self.assertIn('Mul', _ops(folded))


if __name__ == '__main__':
  tf.test.main()
