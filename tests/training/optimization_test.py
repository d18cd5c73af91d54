"""Tests of the learning-rate schedules, weight decay and optimizer wrapping."""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from spinenet.training import optimization


class ScheduleTest(tf.test.TestCase):

  def test_recipe_schedule(self):
    lr = optimization.build_learning_rate(optimization.OptimizerOptions(), 231000)
    self.assertAllClose(lr(0), 0.0067)
    self.assertAllClose(lr(1000), 0.0067 + (0.32 - 0.0067) * 0.5)
    self.assertAllClose(lr(2000), 0.32)
    self.assertAllClose(lr(219449), 0.32)    # 95% of 231000 = 219450
    self.assertAllClose(lr(219451), 0.032)
    self.assertAllClose(lr(226381), 0.0032)  # 98% = 226380

  def test_cosine(self):
    options = optimization.OptimizerOptions(
        learning_rate=0.1, schedule='cosine', warmup_steps=10,
        warmup_learning_rate=0.0)
    lr = optimization.build_learning_rate(options, 110)
    self.assertAllClose(lr(5), 0.05)
    self.assertAllClose(lr(10), 0.1)
    self.assertAllClose(lr(60), 0.05, atol=1e-6)
    self.assertAllClose(lr(110), 0.0, atol=1e-6)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, 'schedule'):
      optimization.OptimizerOptions(schedule='cosin')
    with self.assertRaisesRegex(ValueError, 'warmup_steps'):
      optimization.build_learning_rate(optimization.OptimizerOptions(), 100)
    with self.assertRaisesRegex(ValueError, 'precision'):
      optimization.build_optimizer(optimization.OptimizerOptions(), 0.1, 'fp8')


class WeightDecayTest(tf.test.TestCase):

  def test_decay_is_l2_gradient_on_kernels_only(self):
    layer = keras.layers.Dense(3, bias_initializer='ones')
    layer.build([None, 2])
    grads = [tf.zeros_like(v) for v in layer.trainable_variables]
    out = optimization.add_weight_decay(grads, layer.trainable_variables, 0.1, 0.5)
    with tf.GradientTape() as tape:
      l2 = 0.5 * 0.1 * tf.reduce_sum(tf.square(layer.kernel))
    expected = tape.gradient(l2, layer.kernel) * 0.5
    self.assertAllClose(out[0], expected)
    self.assertAllClose(out[1], np.zeros(3))  # the bias is not decayed

  def test_wrappers(self):
    options = optimization.OptimizerOptions(ema_decay=0.999)
    opt = optimization.build_optimizer(options, 0.1, 'mixed_float16')
    self.assertIsInstance(opt, keras.mixed_precision.LossScaleOptimizer)
    self.assertTrue(hasattr(opt.inner_optimizer, 'swap_weights'))
    self.assertAllClose(optimization.current_learning_rate(opt), 0.1)


if __name__ == '__main__':
  tf.test.main()
