"""Building blocks of SpineNet: residual, bottleneck and MBConv blocks.

Every block takes the same normalization / initialization options
(`BlockOptions`), so a backbone builds them from one place. Blocks are
channels-last and keep the input's spatial size unless `strides` > 1.
"""
import dataclasses
from typing import Any, Optional

import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import activations
from spinenet.modeling import batch_norm
from spinenet.modeling import winograd_conv


def new_initializer(spec):
  """A Keras initializer of its own for one layer, from a name, config or instance.

  An instance is copied: Keras gives every layer that shares one unseeded
  initializer instance the same initial values.
  """
  initializer = keras.initializers.get(spec)
  if initializer is spec:
    initializer = type(spec).from_config(spec.get_config())
  return initializer


@dataclasses.dataclass(frozen=True)
class BlockOptions:
  """Options shared by every conv / norm / activation in a backbone.

  Attributes:
    activation: name in `activations.ACTIVATIONS`.
    use_sync_bn: synchronize batch statistics across replicas.
    norm_momentum: moving-average momentum of batch norm.
    norm_epsilon: batch norm epsilon.
    kernel_initializer: Keras initializer name or object for conv kernels.
    kernel_regularizer: optional Keras regularizer for conv kernels.
    winograd_min_size: 3x3 stride-1 convs run as Winograd convolutions on
      inputs at least this large (`winograd_conv.WinogradConv2D`); 0 never.
    fixed_padding: strided convs pad by their kernel size alone
      (`FixedPaddingConv2D`), as the authors' TF1 code does; False (default):
      Keras 'same' padding, as the Model Garden does. Same variables.
  """
  activation: str = 'relu'
  use_sync_bn: bool = False
  norm_momentum: float = 0.99
  norm_epsilon: float = 1e-3
  kernel_initializer: Any = 'VarianceScaling'
  kernel_regularizer: Optional[Any] = None
  winograd_min_size: int = 0
  fixed_padding: bool = False

  def conv(self, filters, kernel_size, strides=1, name=None, **kwargs):
    if self.fixed_padding and strides not in (1, (1, 1)):
      return FixedPaddingConv2D(
          filters, kernel_size, strides=strides, use_bias=False,
          kernel_initializer=new_initializer(self.kernel_initializer),
          kernel_regularizer=self.kernel_regularizer, name=name, **kwargs)
    return winograd_conv.conv2d(
        filters, kernel_size, strides, self.winograd_min_size, use_bias=False,
        kernel_initializer=new_initializer(self.kernel_initializer),
        kernel_regularizer=self.kernel_regularizer, name=name, **kwargs)

  def depthwise_conv(self, kernel_size, strides=1, name=None):
    if self.fixed_padding and strides not in (1, (1, 1)):
      return FixedPaddingDepthwiseConv2D(
          kernel_size, strides=strides, use_bias=False,
          depthwise_initializer=new_initializer(self.kernel_initializer),
          depthwise_regularizer=self.kernel_regularizer, name=name)
    return keras.layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding='same', use_bias=False,
        depthwise_initializer=new_initializer(self.kernel_initializer),
        depthwise_regularizer=self.kernel_regularizer, name=name)

  def norm(self, name=None):
    return batch_norm.BatchNormalization(
        momentum=self.norm_momentum, epsilon=self.norm_epsilon,
        synchronized=self.use_sync_bn, name=name)

  def act(self):
    return activations.get(self.activation)

  def to_dict(self):
    d = dataclasses.asdict(self)
    d['kernel_initializer'] = keras.initializers.serialize(
        keras.initializers.get(self.kernel_initializer))
    d['kernel_regularizer'] = (keras.regularizers.serialize(self.kernel_regularizer)
                               if self.kernel_regularizer else None)
    return d

  @classmethod
  def from_dict(cls, d):
    d = dict(d)
    d['kernel_initializer'] = keras.initializers.get(d['kernel_initializer'])
    if d.get('kernel_regularizer'):
      d['kernel_regularizer'] = keras.regularizers.get(d['kernel_regularizer'])
    return cls(**d)


def fixed_pad(x, kernel_size):
  """Zero-pads `[B, H, W, C]` by `(k - 1) // 2` before and the rest after.

  The padding of the authors' TF1 code (`fixed_padding`) for strided convs:
  it depends on the kernel size only. Keras 'same' padding depends on the
  input size too: for an even input and stride 2 it puts one zero less
  before, so the taps sit one pixel lower and further right.
  """
  ks = kernel_size if isinstance(kernel_size, (tuple, list)) else (kernel_size,) * 2
  pads = [((k - 1) // 2, (k - 1) - (k - 1) // 2) for k in ks]
  return tf.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])


class FixedPaddingConv2D(keras.layers.Conv2D):
  """`Conv2D` that pads by its kernel size alone (`fixed_pad`), then 'valid'.

  The strided convs of the authors' TF1 SpineNet (`conv2d_fixed_padding`).
  Same variables as `Conv2D`; any `padding` argument is replaced by 'valid'.
  """

  def __init__(self, filters, kernel_size, **kwargs):
    kwargs['padding'] = 'valid'
    super().__init__(filters, kernel_size, **kwargs)

  def call(self, inputs):
    return super().call(fixed_pad(inputs, self.kernel_size))


class FixedPaddingDepthwiseConv2D(keras.layers.DepthwiseConv2D):
  """`DepthwiseConv2D` padded like `FixedPaddingConv2D`."""

  def __init__(self, kernel_size, **kwargs):
    kwargs['padding'] = 'valid'
    super().__init__(kernel_size, **kwargs)

  def call(self, inputs):
    return super().call(fixed_pad(inputs, self.kernel_size))


class StochasticDepth(keras.layers.Layer):
  """Drops a residual branch for a whole example with probability `rate`.

  Kept branches are scaled by `1 / (1 - rate)` so the expectation is unchanged;
  at inference the layer is the identity.
  """

  def __init__(self, rate, **kwargs):
    super().__init__(**kwargs)
    self.rate = float(rate)

  @tf.autograph.experimental.do_not_convert
  def call(self, x, training=None):
    if self.rate == 0.0 or training is None or training is False:
      return x
    if training is True:
      return self._drop(x)
    return tf.cond(tf.cast(training, tf.bool), lambda: self._drop(x), lambda: x)

  def _drop(self, x):
    keep = 1.0 - self.rate
    shape = tf.concat([tf.shape(x)[:1], tf.ones([x.shape.rank - 1], tf.int32)], 0)
    mask = tf.floor(keep + tf.random.uniform(shape, dtype=x.dtype))
    return x / tf.cast(keep, x.dtype) * mask

  def get_config(self):
    return dict(super().get_config(), rate=self.rate)


def _stochastic_depth(rate):
  return StochasticDepth(rate, name='stochastic_depth') if rate else None


class SqueezeExcite(keras.layers.Layer):
  """Squeeze-and-excitation: global pool, 1x1 reduce, 1x1 expand, gate.

  Args:
    reduced_filters: int. Width of the bottleneck of the gate.
    activation: str. Activation between the two 1x1 convs. Defaults to relu.
    gating: str. Gate activation. Defaults to sigmoid.
  """

  def __init__(self, reduced_filters, activation='relu', gating='sigmoid',
               kernel_initializer='VarianceScaling', kernel_regularizer=None,
               **kwargs):
    super().__init__(**kwargs)
    self.reduced_filters = reduced_filters
    self.activation = activation
    self.gating = gating
    self.kernel_initializer = kernel_initializer
    self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

  def build(self, input_shape):
    channels = input_shape[-1]
    conv = lambda f, name: keras.layers.Conv2D(  # noqa: E731
        f, 1, use_bias=True, name=name,
        kernel_initializer=new_initializer(self.kernel_initializer),
        kernel_regularizer=self.kernel_regularizer)
    self.reduce = conv(self.reduced_filters, 'reduce')
    self.expand = conv(channels, 'expand')
    super().build(input_shape)

  @tf.autograph.experimental.do_not_convert
  def call(self, x, training=None):  # pylint: disable=unused-argument
    s = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    s = activations.get(self.activation)(self.reduce(s))
    s = activations.get(self.gating)(self.expand(s))
    return x * s

  def get_config(self):
    return dict(super().get_config(), reduced_filters=self.reduced_filters,
                activation=self.activation, gating=self.gating,
                kernel_initializer=keras.initializers.serialize(
                    keras.initializers.get(self.kernel_initializer)),
                kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer)
                if self.kernel_regularizer else None)


def se_filters(in_filters, se_ratio):
  """Width of an SE gate: `floor(in_filters * se_ratio)`, at least 1."""
  return max(1, int(in_filters * se_ratio))


class _Block(keras.layers.Layer):
  """Common constructor and config of the blocks below."""

  def __init__(self, filters, strides=1, use_projection=False,
               stochastic_depth_rate=0.0, se_ratio=None, options=None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.strides = strides
    self.use_projection = use_projection
    self.stochastic_depth_rate = stochastic_depth_rate
    self.se_ratio = se_ratio
    if isinstance(options, dict):
      options = BlockOptions.from_dict(options)
    self.options = options or BlockOptions()
    self._act = self.options.act()

  def get_config(self):
    return dict(super().get_config(), filters=self.filters, strides=self.strides,
                use_projection=self.use_projection,
                stochastic_depth_rate=self.stochastic_depth_rate,
                se_ratio=self.se_ratio, options=self.options.to_dict())

  def _shortcut(self, out_filters):
    if not self.use_projection:
      return None, None
    return (self.options.conv(out_filters, 1, self.strides, name='shortcut_conv'),
            self.options.norm('shortcut_norm'))

  def _se(self, out_filters):
    if self.se_ratio and 0 < self.se_ratio <= 1:
      return SqueezeExcite(se_filters(out_filters, self.se_ratio),
                           kernel_initializer=self.options.kernel_initializer,
                           kernel_regularizer=self.options.kernel_regularizer,
                           name='se')
    return None

  def _residual_out(self, x, inputs, training):
    shortcut = inputs
    if self.use_projection:
      shortcut = self.shortcut_norm(self.shortcut_conv(inputs), training=training)
    if self.se is not None:
      x = self.se(x)
    if self.drop is not None:
      x = self.drop(x, training=training)
    return self._act(x + shortcut)


class ResidualBlock(_Block):
  """Two 3x3 convs with a shortcut (ResNet "basic" block); outputs `filters`.

  Args:
    filters: int. Output width.
    strides: int. Stride of the first conv and the projection.
    use_projection: bool. 1x1 conv + norm on the shortcut (needed when width or
      stride changes).
    stochastic_depth_rate: float. Drop rate of the residual branch in training.
    se_ratio: optional float. Squeeze-excite on the branch.
    options: `BlockOptions`.

  Call arguments:
    inputs: float `[B, H, W, C]`.
    training: bool.

  Returns:
    float `[B, H / strides, W / strides, filters]`.
  """

  def build(self, input_shape):
    o = self.options
    self.shortcut_conv, self.shortcut_norm = self._shortcut(self.filters)
    self.conv1 = o.conv(self.filters, 3, self.strides, name='conv1')
    self.norm1 = o.norm('norm1')
    self.conv2 = o.conv(self.filters, 3, name='conv2')
    self.norm2 = o.norm('norm2')
    self.se = self._se(self.filters)
    self.drop = _stochastic_depth(self.stochastic_depth_rate)
    super().build(input_shape)

  @tf.autograph.experimental.do_not_convert
  def call(self, inputs, training=None):
    x = self._act(self.norm1(self.conv1(inputs), training=training))
    x = self.norm2(self.conv2(x), training=training)
    return self._residual_out(x, inputs, training)


class BottleneckBlock(_Block):
  """1x1 -> 3x3 -> 1x1 convs with a shortcut; outputs `4 * filters`.

  The stride sits on the 3x3 conv (ResNet v1.5). Arguments as `ResidualBlock`.

  Returns:
    float `[B, H / strides, W / strides, 4 * filters]`.
  """

  def build(self, input_shape):
    o = self.options
    self.shortcut_conv, self.shortcut_norm = self._shortcut(4 * self.filters)
    self.conv1 = o.conv(self.filters, 1, name='conv1')
    self.norm1 = o.norm('norm1')
    self.conv2 = o.conv(self.filters, 3, self.strides, name='conv2')
    self.norm2 = o.norm('norm2')
    self.conv3 = o.conv(4 * self.filters, 1, name='conv3')
    self.norm3 = o.norm('norm3')
    self.se = self._se(4 * self.filters)
    self.drop = _stochastic_depth(self.stochastic_depth_rate)
    super().build(input_shape)

  @tf.autograph.experimental.do_not_convert
  def call(self, inputs, training=None):
    x = self._act(self.norm1(self.conv1(inputs), training=training))
    x = self._act(self.norm2(self.conv2(x), training=training))
    x = self.norm3(self.conv3(x), training=training)
    return self._residual_out(x, inputs, training)


class MBConvBlock(_Block):
  """Inverted bottleneck (MobileNetV2/V3, EfficientNet) used by Mobile SpineNet.

  1x1 expansion to `expand_ratio * in_filters`, 3x3 depthwise, optional
  squeeze-excite (width from `in_filters * se_ratio`, hard-sigmoid gate), 1x1
  projection to `filters` with no activation. A shortcut is added only when
  the width and size are unchanged.

  Args:
    filters: int. Output width.
    expand_ratio: int. Expansion of the hidden width. Defaults to 6.
    se_gating: str. Gate of the squeeze-excite. Defaults to hard_sigmoid.
    se_activation: str. Activation between the squeeze-excite's two 1x1
      convs. Defaults to relu (the Model Garden; the authors' TF1 code: swish
      with a sigmoid gate).
    Other arguments as `ResidualBlock` (`use_projection` is unused).

  Returns:
    float `[B, H / strides, W / strides, filters]`.
  """

  def __init__(self, filters, expand_ratio=6, se_gating='hard_sigmoid',
               se_activation='relu', **kwargs):
    super().__init__(filters, **kwargs)
    self.expand_ratio = expand_ratio
    self.se_gating = se_gating
    self.se_activation = se_activation

  def get_config(self):
    return dict(super().get_config(), expand_ratio=self.expand_ratio,
                se_gating=self.se_gating, se_activation=self.se_activation)

  def build(self, input_shape):
    o = self.options
    in_filters = int(input_shape[-1])
    hidden = in_filters * self.expand_ratio
    self.in_filters = in_filters
    if self.expand_ratio > 1:
      self.expand_conv = o.conv(hidden, 1, name='expand_conv')
      self.expand_norm = o.norm('expand_norm')
    self.depthwise = o.depthwise_conv(3, self.strides, name='depthwise_conv')
    self.depthwise_norm = o.norm('depthwise_norm')
    self.se = None
    if self.se_ratio and 0 < self.se_ratio <= 1:
      self.se = SqueezeExcite(se_filters(in_filters, self.se_ratio),
                              activation=self.se_activation,
                              gating=self.se_gating,
                              kernel_initializer=o.kernel_initializer,
                              kernel_regularizer=o.kernel_regularizer, name='se')
    self.project_conv = o.conv(self.filters, 1, name='project_conv')
    self.project_norm = o.norm('project_norm')
    self.has_shortcut = in_filters == self.filters and self.strides == 1
    self.drop = (_stochastic_depth(self.stochastic_depth_rate)
                 if self.has_shortcut else None)
    super().build(input_shape)

  @tf.autograph.experimental.do_not_convert
  def call(self, inputs, training=None):
    x = inputs
    if self.expand_ratio > 1:
      x = self._act(self.expand_norm(self.expand_conv(x), training=training))
    x = self._act(self.depthwise_norm(self.depthwise(x), training=training))
    if self.se is not None:
      x = self.se(x)
    x = self.project_norm(self.project_conv(x), training=training)
    if not self.has_shortcut:
      return x
    if self.drop is not None:
      x = self.drop(x, training=training)
    return x + inputs


BLOCKS = {
    'residual': ResidualBlock,
    'bottleneck': BottleneckBlock,
    'mbconv': MBConvBlock,
}


def nearest_upsample(x, scale):
  """Nearest-neighbour upsampling by an integer factor with reshape + broadcast.

  The broadcast is a multiplication by ones (exact): TFLite converts it to a
  MUL that XNNPACK runs, where `tf.broadcast_to` becomes BROADCAST_TO, a slow
  builtin kernel outside the delegate that splits the graph (measured on
  mobile-49S at 256 px: 5 extra XNNPACK partitions and ~1.5 ms of 5 ms).

  Args:
    x: `[B, H, W, C]`.
    scale: int.

  Returns:
    `[B, H * scale, W * scale, C]`.
  """
  if scale == 1:
    return x
  shape = tf.shape(x)
  b, h, w = shape[0], shape[1], shape[2]
  c = x.shape[-1]
  x = tf.reshape(x, [b, h, 1, w, 1, c])
  x = x * tf.ones([1, 1, scale, 1, scale, 1], x.dtype)
  return tf.reshape(x, [b, h * scale, w * scale, c])
