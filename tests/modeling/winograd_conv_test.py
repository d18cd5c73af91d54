"""WinogradConv2D as a drop-in Conv2D, and Winograd in the RetinaNet head."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import registry
from spinenet.modeling import winograd_conv


def _pair(min_size, filters=6, **kwargs):
  """A WinogradConv2D and a Conv2D with the same weights, built on 4 channels."""
  wino = winograd_conv.WinogradConv2D(filters, min_size, **kwargs)
  direct = keras.layers.Conv2D(filters, 3, padding='same', **kwargs)
  wino.build((None, None, None, 4))
  direct.build((None, None, None, 4))
  rng = np.random.default_rng(0)
  weights = [rng.standard_normal(w.shape).astype(np.float32) * 0.3
             for w in direct.weights]
  wino.set_weights(weights)
  direct.set_weights(weights)
  return wino, direct


def test_same_outputs_and_gradients_as_conv2d_above_min_size():
  wino, direct = _pair(8, activation='relu')
  x = tf.random.stateless_normal([2, 10, 12, 4], [7, 7])
  assert wino.uses_winograd(x.shape, x.dtype)

  def run(layer):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
      loss = tf.reduce_sum(y * y)
    return [y] + tape.gradient(loss, [x] + layer.trainable_weights)

  # Winograd's error scales with the tensor's magnitude, not each element's:
  # judge it against the largest value, as the parity tests do.
  for got, want in zip(run(wino), run(direct)):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_small_maps_and_bfloat16_take_the_direct_convolution():
  wino, direct = _pair(16)
  x = tf.random.normal([1, 12, 40, 4])  # height below min_size
  assert not wino.uses_winograd(x.shape, x.dtype)
  np.testing.assert_array_equal(wino(x), direct(x))
  assert not wino.uses_winograd((1, 64, 64, 4), tf.bfloat16)
  assert not wino.uses_winograd((1, None, 64, 4), tf.float32)
  assert not winograd_conv.WinogradConv2D(4, 0).uses_winograd((1, 64, 64, 4), tf.float32)


def test_config_round_trip_and_fixed_arguments():
  layer = winograd_conv.WinogradConv2D(5, 24, name='c', use_bias=False)
  again = winograd_conv.WinogradConv2D.from_config(layer.get_config())
  assert (again.filters, again.min_size, again.use_bias) == (5, 24, False)
  with pytest.raises(ValueError, match='strides'):
    winograd_conv.WinogradConv2D(4, 8, strides=2)
  with pytest.raises(ValueError, match='kernel_size'):
    winograd_conv.WinogradConv2D(4, 8, kernel_size=5)
  with pytest.raises(ValueError, match='min_size'):
    winograd_conv.WinogradConv2D(4, -1)


def _randomize_head(model, seed):
  """Head predictors start near zero; give every head weight a real scale."""
  rng = np.random.default_rng(seed)
  for w in model.get_layer('retinanet_head').trainable_weights:
    w.assign(rng.standard_normal(w.shape).astype(np.float32) * 0.05)


def test_retinanet_with_winograd_equals_the_direct_one():
  kwargs = dict(num_classes=4, input_size=128, head_filters=16, head_convs=2,
                endpoints_num_filters=16, filter_size_scale=0.25,
                init_stochastic_depth_rate=0.0)  # training=True: no random drops
  direct = registry.build_retinanet('49S', **kwargs)
  wino = registry.build_retinanet('49S', winograd_min_size=8, **kwargs)
  wino.set_weights(direct.get_weights())  # same variables, same order
  _randomize_head(direct, 0)
  _randomize_head(wino, 0)
  layers = [l for l in wino.submodules if isinstance(l, winograd_conv.WinogradConv2D)]
  head = [l for l in wino.get_layer('retinanet_head').submodules
          if isinstance(l, winograd_conv.WinogradConv2D)]
  assert len(head) == 2 * 3  # 2 tower convs + predictor, class and box
  assert len(layers) > len(head)  # and the backbone blocks' 3x3 stride-1 convs
  assert not any(isinstance(l, winograd_conv.WinogradConv2D)
                 for l in direct.submodules)
  images = tf.random.uniform([2, 128, 128, 3], maxval=255.0)
  got = wino(images, training=True)
  want = direct(images, training=True)
  for key in ('cls_outputs', 'box_outputs'):
    for level in ('3', '4', '5'):  # 16, 8 and 4 px: Winograd on P3 and P4 only
      np.testing.assert_allclose(got[key][level], want[key][level], rtol=1e-3,
                                 atol=1e-3)
  assert winograd_conv.use_direct_convolutions(wino) == len(layers)
  assert all(l.min_size == 0 for l in layers)


def test_separable_head_rejects_winograd():
  with pytest.raises(ValueError, match='separable'):
    registry.build_retinanet('mobile-49S', num_classes=4, input_size=128,
                             winograd_min_size=8)


def _stack(min_size, filters=(6, 5), seed=0):
  """Built WinogradConv2D (or Conv2D, min_size 0) + batch norm layers with
  random weights and moving statistics, on 4 input channels."""
  rng = np.random.default_rng(seed)
  convs, norms, channels = [], [], 4
  for i, k in enumerate(filters):
    conv = winograd_conv.conv2d(k, 3, min_size=min_size, name=f'c{i}')
    norm = keras.layers.BatchNormalization(epsilon=1e-3, name=f'n{i}')
    conv.build((None, None, None, channels))
    norm.build((None, None, None, k))
    for layer in (conv, norm):
      layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                         if 'variance' in w.name or 'gamma' in w.name
                         else rng.standard_normal(w.shape).astype(np.float32) * 0.3
                         for w in layer.weights])
    convs.append(conv)
    norms.append(norm)
    channels = k
  return convs, norms


def test_fused_inference_stack_matches_the_layers():
  convs, norms = _stack(8)
  x = tf.random.stateless_normal([3, 9, 11, 4], [5, 5])
  got = winograd_conv.fused_inference_stack(convs, norms, tf.nn.silu, x)
  want = x
  for conv, norm in zip(convs, norms):
    want = tf.nn.silu(norm(conv(want), training=False))
  assert got.shape == (3, 9, 11, 5)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_fused_inference_stack_declines_where_winograd_does_not_apply():
  convs, norms = _stack(8)
  assert winograd_conv.fused_inference_stack(
      convs, norms, tf.nn.relu, tf.zeros([1, 6, 20, 4])) is None  # below min_size
  assert winograd_conv.fused_inference_stack(
      convs, norms, tf.nn.relu, tf.zeros([1, 9, 9, 4], tf.bfloat16)) is None
  direct_convs, direct_norms = _stack(0)
  assert winograd_conv.fused_inference_stack(
      direct_convs, direct_norms, tf.nn.relu, tf.zeros([1, 9, 9, 4])) is None
  unbuilt = [winograd_conv.WinogradConv2D(6, 8)]
  assert winograd_conv.fused_inference_stack(
      unbuilt, norms[:1], tf.nn.relu, tf.zeros([1, 9, 9, 4])) is None
