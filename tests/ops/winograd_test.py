"""Winograd F(4x4, 3x3) convolution against tf.nn.conv2d: values and gradients."""
import numpy as np
import pytest
import tensorflow as tf

from spinenet.ops import winograd


def _direct(x, w):
  return tf.nn.conv2d(x, w, strides=1, padding='SAME')


class WinogradTest(tf.test.TestCase):

  def test_matches_direct_convolution_on_any_size(self):
    rng = np.random.default_rng(0)
    # Sides that are, are not, and are smaller than multiples of the 4x4 tile.
    for shape in [(2, 16, 16, 8), (1, 13, 10, 5), (3, 3, 7, 4), (1, 1, 1, 2)]:
      x = tf.constant(rng.standard_normal(shape), tf.float32)
      w = tf.constant(rng.standard_normal([3, 3, shape[-1], 6]) * 0.2, tf.float32)
      want = _direct(x, w)
      self.assertAllClose(winograd.conv2d_3x3(x, w), want, rtol=1e-4, atol=1e-4)
      self.assertAllClose(winograd.conv2d_3x3_xla(x, w), want, rtol=1e-4, atol=1e-4)

  def test_each_output_sees_its_own_3x3_window(self):
    # One-hot input and kernel taps locate every output: a wrong transform
    # matrix or tile offset moves or spreads the response.
    x = np.zeros([1, 9, 9, 1], np.float32)
    x[0, 4, 6, 0] = 1.0
    w = np.arange(9, dtype=np.float32).reshape([3, 3, 1, 1]) + 1.0
    got = winograd.conv2d_3x3(tf.constant(x), tf.constant(w)).numpy()[0, :, :, 0]
    want = np.zeros([9, 9], np.float32)
    want[3:6, 5:8] = w[::-1, ::-1, 0, 0]  # correlation: flipped around the pixel
    self.assertAllClose(got, want, atol=1e-5)

  def test_gradients_match_direct_convolution(self):
    # The input gradient is hand-written (an overlap-add of the windows), so
    # check sizes where windows overlap the padding differently.
    rng = np.random.default_rng(1)
    for shape in [(2, 12, 9, 6), (1, 5, 7, 3), (1, 1, 2, 2), (2, 8, 8, 4)]:
      x = tf.constant(rng.standard_normal(shape), tf.float32)
      w = tf.constant(rng.standard_normal([3, 3, shape[-1], 4]) * 0.2, tf.float32)
      upstream = tf.constant(rng.standard_normal(shape[:3] + (4,)), tf.float32)

      def grads(conv):
        with tf.GradientTape() as tape:
          tape.watch([x, w])
          loss = tf.reduce_sum(conv(x, w) * upstream)
        return tape.gradient(loss, [x, w])

      want = grads(_direct)
      for conv in (winograd.conv2d_3x3, winograd.conv2d_3x3_xla):
        with self.subTest(shape=shape, conv=conv.__name__):
          for got, expected in zip(grads(conv), want):
            self.assertAllClose(got, expected, rtol=1e-4, atol=1e-4)

  def test_gradient_with_dynamic_batch(self):
    w = tf.random.normal([3, 3, 4, 3])

    @tf.function(input_signature=[tf.TensorSpec([None, 6, 10, 4])])
    def input_grad(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.square(winograd.conv2d_3x3(x, w)))
      return tape.gradient(loss, x)

    x = tf.random.normal([3, 6, 10, 4])
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(tf.square(_direct(x, w)))
    self.assertAllClose(input_grad(x), tape.gradient(loss, x), rtol=1e-4, atol=1e-4)

  def test_dynamic_batch_inside_a_function(self):
    w = tf.random.normal([3, 3, 4, 3])
    fn = tf.function(winograd.conv2d_3x3, input_signature=[
        tf.TensorSpec([None, 8, 8, 4]), tf.TensorSpec([3, 3, 4, 3])])
    x = tf.random.normal([5, 8, 8, 4])
    self.assertAllClose(fn(x, w), _direct(x, w), rtol=1e-4, atol=1e-4)

  def test_bad_shapes_are_named(self):
    with self.assertRaisesRegex(ValueError, '3x3 kernel'):
      winograd.transform_kernel(tf.zeros([5, 5, 2, 2]))
    with self.assertRaisesRegex(ValueError, 'static height'):
      tf.function(winograd.conv2d_3x3).get_concrete_function(
          tf.TensorSpec([1, None, 8, 2]), tf.TensorSpec([3, 3, 2, 2]))
    with self.assertRaisesRegex(ValueError, 'input channels'):
      winograd.conv2d_3x3(tf.zeros([1, 4, 4, 2]), tf.zeros([3, 3, 3, 2]))


def test_conv_stack_needs_one_scale_and_offset_per_kernel():
  kernels = [tf.zeros([3, 3, 2, 2])] * 2
  with pytest.raises(ValueError, match='2 kernels, 1 scales and 2 offsets'):
    winograd.conv_stack_3x3(tf.zeros([1, 4, 4, 2]), kernels, [tf.ones([2])],
                            [tf.zeros([2])] * 2, tf.nn.relu)
