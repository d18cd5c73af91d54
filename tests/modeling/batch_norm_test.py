"""batch_norm.BatchNormalization: synchronized BN on one replica takes the fused kernel."""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import batch_norm


def _pair(**kwargs):
  """Ours and Keras' synchronized batch norm with the same weights."""
  ours = batch_norm.BatchNormalization(synchronized=True, momentum=0.9, **kwargs)
  theirs = keras.layers.BatchNormalization(synchronized=True, momentum=0.9, **kwargs)
  rng = np.random.default_rng(0)
  for layer in (ours, theirs):
    layer.build([None, 6, 5, 4])
  weights = [rng.uniform(0.5, 1.5, 4).astype(np.float32), rng.normal(size=4).astype(np.float32),
             rng.normal(size=4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)]
  ours.set_weights(weights)
  theirs.set_weights(weights)
  return ours, theirs


def _op_types(layer, x, training):
  fn = tf.function(lambda x: layer(x, training=training))
  return {op.type for op in fn.get_concrete_function(x).graph.get_operations()}


class BatchNormalizationTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, [3, 6, 5, 4]),
                         tf.float32)

  def test_training_on_one_replica_matches_keras_synchronized(self):
    ours, theirs = _pair()
    initial = ours.get_weights()
    upstream = tf.constant(np.random.default_rng(2).normal(size=self.x.shape), tf.float32)

    def run(layer):
      with tf.GradientTape() as tape:
        tape.watch(self.x)
        y = layer(self.x, training=True)
        loss = tf.reduce_sum(y * upstream)
      grads = tape.gradient(loss, [self.x, layer.gamma, layer.beta])
      return y, grads, [layer.moving_mean.numpy(), layer.moving_variance.numpy()]

    y_ours, g_ours, moving_ours = run(ours)
    y_theirs, g_theirs, moving_theirs = run(theirs)
    self.assertAllClose(y_ours, y_theirs, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_ours, g_theirs):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-5)
    # Moving statistics moved, and alike (biased variance in both).
    self.assertNotAllClose(moving_ours[0], initial[2])
    self.assertNotAllClose(moving_ours[1], initial[3])
    for a, b in zip(moving_ours, moving_theirs):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)

  def test_one_replica_training_runs_the_fused_kernel(self):
    ours, theirs = _pair()
    self.assertIn('FusedBatchNormV3', _op_types(ours, self.x, True))
    self.assertNotIn('FusedBatchNormV3', _op_types(theirs, self.x, True))

  def test_frozen_layer_runs_in_inference_mode_like_keras(self):
    ours, theirs = _pair()
    ours.trainable = theirs.trainable = False
    self.assertAllClose(ours(self.x, training=True), theirs(self.x, training=True))
    self.assertAllClose(ours.moving_mean, theirs.moving_mean)
    self.assertNotIn('FusedBatchNormV3', _op_types(ours, self.x, True))

  def test_inference_keeps_the_unfused_graph(self):
    # The export's batch-norm folding matches these ops.
    ours, theirs = _pair()
    self.assertEqual(_op_types(ours, self.x, False), _op_types(theirs, self.x, False))
    self.assertAllClose(ours(self.x, training=False), theirs(self.x, training=False))

  def test_unsynchronized_is_the_keras_layer(self):
    ours = batch_norm.BatchNormalization()
    theirs = keras.layers.BatchNormalization()
    self.assertEqual(_op_types(ours, self.x, True), _op_types(theirs, self.x, True))

  def test_mixed_bfloat16(self):
    keras.mixed_precision.set_global_policy('mixed_bfloat16')
    try:
      ours, theirs = _pair()
    finally:
      keras.mixed_precision.set_global_policy('float32')
    x = tf.cast(self.x, tf.bfloat16)
    y = ours(x, training=True)
    self.assertEqual(y.dtype, tf.bfloat16)
    self.assertAllClose(tf.cast(y, tf.float32),
                        tf.cast(theirs(x, training=True), tf.float32), rtol=0.05, atol=0.05)

  def test_rebuilt_from_a_model_config_keeps_variable_names(self):
    inputs = keras.Input((6, 5, 4))
    model = keras.Model(inputs, batch_norm.BatchNormalization(name='norm')(inputs))
    clone = keras.Model.from_config(
        model.get_config(), custom_objects={'BatchNormalization': batch_norm.BatchNormalization})
    self.assertIsInstance(clone.layers[-1], batch_norm.BatchNormalization)
    self.assertEqual([w.name for w in clone.weights], [w.name for w in model.weights])
    self.assertEqual(model.weights[0].name, 'norm/gamma:0')


if __name__ == '__main__':
  tf.test.main()
