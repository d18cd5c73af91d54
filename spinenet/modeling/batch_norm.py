"""Batch normalization for SpineNet models.

`BatchNormalization` is Keras' layer with one specialization: synchronized
training on a single replica computes its statistics with the fused kernel.
"""
import tensorflow as tf
import tf_keras as keras


class BatchNormalization(keras.layers.BatchNormalization):
  """`keras.layers.BatchNormalization` whose synchronized training uses the
  fused kernel when there is nothing to synchronize.

  Synchronized batch statistics over a single replica (one CPU or one GPU,
  no strategy or a one-device one) are that replica's own statistics, so the
  layer then computes them with TensorFlow's fused batch norm kernel instead
  of the unfused cross-replica ops: the same outputs, gradients and
  moving-average updates as Keras' synchronized layer (the biased batch
  variance, as it uses; to float rounding), in fewer passes over the
  activations. With more than one replica in sync, and in inference (where
  nothing is synchronized, and the graph keeps the plain ops the export's
  batch-norm folding matches), it is the Keras layer unchanged.
  Same arguments, variables and config as `keras.layers.BatchNormalization`.
  """

  def build_from_config(self, config):
    # Keras builds a layer it rebuilds from a config outside the layer's name
    # scope; a call builds it inside. Build it inside here too, so that the
    # variables keep their names ('<layer name>/gamma:0', ...).
    with tf.name_scope(self._name_scope()):
      super().build_from_config(config)

  def _fusable(self, inputs, training, mask):
    # Keras' own reading of `training` (False for a frozen layer).
    return (self.synchronized and self._get_training_value(training) is True
            and mask is None
            and inputs.shape.rank == 4 and self.axis == [3]
            and self.virtual_batch_size is None and not self.renorm
            and self.adjustment is None
            and tf.distribute.get_strategy().num_replicas_in_sync == 1)

  def call(self, inputs, training=None, mask=None):
    if not self._fusable(inputs, training, mask):
      return super().call(inputs, training=training, mask=mask)
    inputs = tf.cast(inputs, self.compute_dtype)
    channels = inputs.shape[-1]
    gamma = self.gamma if self.scale else tf.ones([channels], self._param_dtype)
    beta = self.beta if self.center else tf.zeros([channels], self._param_dtype)
    outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, gamma, beta, epsilon=self.epsilon, is_training=True,
        data_format='NHWC')
    # The kernel returns the Bessel-corrected variance; the synchronized
    # layer averages the biased one into its moving variance.
    count = tf.cast(tf.size(inputs, out_type=tf.int64) // channels, variance.dtype)
    variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
    self.add_update(lambda: self._assign_moving_average(
        self.moving_mean, mean, self.momentum, None))
    self.add_update(lambda: self._assign_moving_average(
        self.moving_variance, variance, self.momentum, None))
    return outputs
