"""Blocks of spinenet.modeling.layers: shapes, strides, stochastic depth, SE, upsampling."""
import numpy as np
import pytest
import tensorflow as tf

from spinenet.modeling import layers as layers_lib


@pytest.mark.parametrize('cls, filters, out_channels', [
    (layers_lib.ResidualBlock, 8, 8),
    (layers_lib.BottleneckBlock, 4, 16),
    (layers_lib.MBConvBlock, 8, 8),
])
@pytest.mark.parametrize('strides', [1, 2])
def test_block_output_shape_and_stride(cls, filters, out_channels, strides):
  block = cls(filters, strides=strides, use_projection=True)
  y = block(tf.random.normal([2, 12, 12, 6]), training=False)
  assert y.shape == (2, 12 // strides, 12 // strides, out_channels)


def test_residual_block_without_projection_adds_the_input():
  # Zeroed branch (norm2's gamma = 0): the block is relu(x), the identity shortcut.
  block = layers_lib.ResidualBlock(4)
  x = tf.random.normal([1, 6, 6, 4])
  block(x)
  block.norm2.gamma.assign(tf.zeros_like(block.norm2.gamma))
  np.testing.assert_allclose(block(x, training=False), tf.nn.relu(x), atol=1e-6)


def test_mbconv_shortcut_only_when_width_and_size_are_kept():
  same = layers_lib.MBConvBlock(6, expand_ratio=2)
  same(tf.zeros([1, 8, 8, 6]))
  wider = layers_lib.MBConvBlock(8, expand_ratio=2)
  wider(tf.zeros([1, 8, 8, 6]))
  strided = layers_lib.MBConvBlock(6, strides=2, expand_ratio=2)
  strided(tf.zeros([1, 8, 8, 6]))
  assert same.has_shortcut and not wider.has_shortcut and not strided.has_shortcut
  # Hidden width is in_filters * expand_ratio.
  assert same.expand_conv.filters == 12


@pytest.mark.parametrize('cls', [layers_lib.ResidualBlock, layers_lib.BottleneckBlock,
                                 layers_lib.MBConvBlock])
def test_stochastic_depth_only_in_training(cls):
  block = cls(4, stochastic_depth_rate=0.5, use_projection=cls is not layers_lib.MBConvBlock)
  x = tf.random.normal([64, 4, 4, 16 if cls is layers_lib.BottleneckBlock else 4])
  block(x)
  assert isinstance(block.drop, layers_lib.StochasticDepth)
  a, b = block(x, training=False), block(x, training=False)
  np.testing.assert_array_equal(a, b)
  tf.random.set_seed(3)
  t1 = block(x, training=True)
  t2 = block(x, training=True)
  assert not np.allclose(t1, t2), 'training calls draw new masks'


def test_no_stochastic_depth_layer_at_rate_zero():
  block = layers_lib.ResidualBlock(4)
  block(tf.zeros([1, 4, 4, 4]))
  assert block.drop is None


def test_stochastic_depth_drops_whole_examples_and_keeps_the_mean():
  layer = layers_lib.StochasticDepth(0.5)
  x = tf.ones([4000, 2, 2, 1])
  y = layer(x, training=True).numpy()
  per_example = y.reshape(4000, -1)
  assert set(np.unique(per_example)) <= {0.0, 2.0}
  assert np.all(per_example.min(1) == per_example.max(1))
  assert abs(per_example.mean() - 1.0) < 0.1
  np.testing.assert_array_equal(layer(x, training=False), x)


def test_stochastic_depth_with_a_tensor_training_flag():
  layer = layers_lib.StochasticDepth(0.5)
  x = tf.ones([200, 1, 1, 1])
  off = layer(x, training=tf.constant(False))
  np.testing.assert_array_equal(off, x)
  on = layer(x, training=tf.constant(True)).numpy()
  assert set(np.unique(on)) <= {0.0, 2.0} and 0 < on.sum() < 400


def test_squeeze_excite_equals_numpy():
  se = layers_lib.SqueezeExcite(2, activation='relu', gating='sigmoid')
  x = tf.random.normal([2, 5, 5, 6], seed=1)
  y = se(x).numpy()
  wr, br = se.reduce.get_weights()
  we, be = se.expand.get_weights()
  xn = x.numpy()
  s = xn.mean(axis=(1, 2))  # [B, C]
  s = np.maximum(s @ wr[0, 0] + br, 0.0)
  s = 1.0 / (1.0 + np.exp(-(s @ we[0, 0] + be)))
  np.testing.assert_allclose(y, xn * s[:, None, None, :], rtol=1e-5, atol=1e-5)
  assert wr.shape == (1, 1, 6, 2) and we.shape == (1, 1, 2, 6)


def test_se_width_and_where_blocks_put_it():
  assert layers_lib.se_filters(64, 0.25) == 16
  assert layers_lib.se_filters(10, 0.25) == 2
  assert layers_lib.se_filters(3, 0.1) == 1
  res = layers_lib.ResidualBlock(8, se_ratio=0.25, use_projection=True)
  res(tf.zeros([1, 4, 4, 3]))
  assert res.se.reduced_filters == 2  # from the block's output width 8
  mb = layers_lib.MBConvBlock(8, se_ratio=0.5, expand_ratio=2)
  mb(tf.zeros([1, 4, 4, 6]))
  assert mb.se.reduced_filters == 3 and mb.se.gating == 'hard_sigmoid'  # from in_filters 6


@pytest.mark.parametrize('scale', [1, 2, 4])
def test_nearest_upsample_repeats_pixels(scale):
  x = tf.random.normal([2, 3, 5, 4])
  expected = np.repeat(np.repeat(x.numpy(), scale, axis=1), scale, axis=2)
  np.testing.assert_array_equal(layers_lib.nearest_upsample(x, scale), expected)


def test_unshared_initializers_give_different_kernels():
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  opts = layers_lib.BlockOptions(kernel_initializer=keras.initializers.HeNormal())
  a, b = opts.conv(4, 3, name='a'), opts.conv(4, 3, name='b')
  a.build([None, 6, 6, 4])
  b.build([None, 6, 6, 4])
  assert not np.allclose(a.kernel.numpy(), b.kernel.numpy())


def test_block_layers_round_trip_their_config():
  opts = layers_lib.BlockOptions(activation='swish', norm_momentum=0.9)
  for cls, kwargs in [(layers_lib.BottleneckBlock, dict(use_projection=True)),
                      (layers_lib.ResidualBlock, dict(se_ratio=0.25)),
                      (layers_lib.MBConvBlock, dict(se_ratio=0.2, expand_ratio=4))]:
    block = cls(8, options=opts, stochastic_depth_rate=0.1, **kwargs)
    clone = cls.from_config(block.get_config())
    x = tf.random.normal([1, 8, 8, 8])
    block(x)
    clone(x)
    assert [w.shape for w in block.weights] == [w.shape for w in clone.weights]
    assert clone.options.activation == 'swish'
    assert clone.options.norm_momentum == 0.9
