"""inference_graph.freeze: a constant graph with the function's outputs and structure."""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from spinenet.serving import inference_graph


def _ops(graph_def):
  return [n.op for n in graph_def.node]


def _model():
  """Conv -> batch norm (random statistics) -> relu -> dense, 8 x 8 inputs."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input([8, 8, 3])
  x = keras.layers.Conv2D(4, 3, padding='same', use_bias=False)(inputs)
  norm = keras.layers.BatchNormalization()
  x = keras.layers.ReLU()(norm(x))
  out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
  model = keras.Model(inputs, out)
  rng = np.random.default_rng(0)
  norm.moving_mean.assign(rng.normal(0, 0.3, 4))
  norm.moving_variance.assign(rng.uniform(0.5, 2.0, 4))
  norm.gamma.assign(rng.uniform(0.5, 1.5, 4))
  return model


class FreezeTest(tf.test.TestCase):

  def test_unfolded_freeze_is_the_same_graph_with_constants(self):
    model = _model()
    frozen = inference_graph.freeze(lambda x: model(x, training=False),
                                    [tf.TensorSpec([None, 8, 8, 3])],
                                    fold_batch_norm=False)
    self.assertIsNone(frozen.fold_report)
    self.assertNotIn('ReadVariableOp', _ops(frozen.graph_def))
    self.assertNotIn('VarHandleOp', _ops(frozen.graph_def))
    for batch in (1, 3):  # the batch dimension stays free
      x = tf.random.stateless_uniform([batch, 8, 8, 3], [3, batch])
      self.assertAllClose(frozen(x), model(x, training=False), rtol=1e-5, atol=1e-5)

  def test_constants_hold_every_weight_and_ignore_later_updates(self):
    model = _model()
    frozen = inference_graph.freeze(lambda x: model(x, training=False),
                                    [tf.TensorSpec([2, 8, 8, 3])], fold_batch_norm=False)
    weights = sum(int(np.prod(w.shape)) for w in model.weights)
    self.assertBetween(frozen.num_constants, weights, weights + 64)
    x = tf.random.stateless_uniform([2, 8, 8, 3], [1, 1])
    before = model(x, training=False).numpy()
    for w in model.weights:
      w.assign(w * 0.5)
    self.assertAllClose(frozen(x), before, rtol=1e-5, atol=1e-5)
    self.assertNotAllClose(model(x, training=False), before)

  def test_nested_outputs_and_several_inputs(self):
    def fn(a, b):
      return {'difference': a - 2.0 * b, 'pair': (tf.reduce_sum(a, -1), b * 3.0)}
    frozen = inference_graph.freeze(
        fn, [tf.TensorSpec([None, 2]), tf.TensorSpec([None, 2])], fold_batch_norm=False)
    self.assertLen(frozen.input_signature, 2)
    a = tf.constant([[1.0, 2.0]])
    b = tf.constant([[10.0, 20.0]])
    out = frozen(a, b)
    self.assertCountEqual(out, ['difference', 'pair'])
    self.assertAllClose(out['difference'], [[-19.0, -38.0]])
    self.assertAllClose(out['pair'][0], [3.0])
    self.assertAllClose(out['pair'][1], [[30.0, 60.0]])

  def test_called_inside_a_tf_function(self):
    model = _model()
    frozen = inference_graph.freeze(lambda x: model(x, training=False),
                                    [tf.TensorSpec([None, 8, 8, 3])])
    self.assertNotEmpty(frozen.fold_report.folded)
    x = tf.random.stateless_uniform([2, 8, 8, 3], [5, 6])
    traced = tf.function(lambda t: frozen(t) * 2.0)
    self.assertAllClose(traced(x), 2.0 * model(x, training=False), rtol=1e-4, atol=1e-4)


  def test_chained_map_fns_need_unlowered_control_flow(self):
    """Two `tf.map_fn`s in a row (Mask R-CNN's proposals, then detections)."""
    scale = tf.Variable([2.0, 3.0])

    def fn(x):
      y = tf.map_fn(lambda row: row + 1.0, x * scale)
      return {'z': tf.map_fn(lambda row: row * tf.reduce_sum(row), y)}

    x = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    frozen = inference_graph.freeze(fn, [tf.TensorSpec([None, 2])],
                                    fold_batch_norm=False, lower_control_flow=False)
    self.assertAllClose(frozen(x)['z'], fn(x)['z'])
    self.assertIn('StatelessWhile', _ops(frozen.graph_def))
    lowered = inference_graph.freeze(fn, [tf.TensorSpec([None, 2])],
                                     fold_batch_norm=False)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, 'different frames'):
      lowered(x)

if __name__ == '__main__':
  tf.test.main()
