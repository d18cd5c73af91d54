"""A 3x3 `Conv2D` that runs as a Winograd convolution on large feature maps.

Same variables, same config and same results (to float rounding) as
`keras.layers.Conv2D(filters, 3, padding='same')`, so checkpoints move freely
between the two. Only the arithmetic differs: on feature maps of at least
`min_size` x `min_size` in float32, the convolution is computed by
`spinenet.ops.winograd.conv2d_3x3` in an XLA cluster; smaller maps, other
dtypes (bfloat16, float16: the transforms cost too much precision),
`min_size=0` and processes that see a GPU or TPU (whose native convolutions
are faster; Winograd is a CPU algorithm here) take the direct convolution.

`fused_inference_stack` runs a whole conv + batch norm + activation stack of
these layers, at inference, as one XLA cluster.
"""
import tensorflow as tf
import tf_keras as keras

from spinenet.ops import winograd


class WinogradConv2D(keras.layers.Conv2D):
  """3x3, stride-1, 'same' `Conv2D`; Winograd F(4x4, 3x3) on large inputs.

  Args:
    filters: output channels.
    min_size: use Winograd when the input's height and width are both at
      least this (static sizes only); 0 never does.
    **kwargs: any other `keras.layers.Conv2D` argument except kernel size,
      strides, padding, dilation and groups, which are fixed.
  """

  def __init__(self, filters, min_size=0, **kwargs):
    fixed = {'kernel_size': 3, 'strides': 1, 'padding': 'same',
             'dilation_rate': 1, 'groups': 1}
    for key, value in fixed.items():
      given = kwargs.pop(key, value)
      given = tuple(given) if isinstance(given, list) else given
      if given not in (value, (value, value), str(value)):
        raise ValueError(f'WinogradConv2D {kwargs.get("name")!r}: {key} must be '
                         f'{value!r}, got {given!r}.')
    if min_size < 0:
      raise ValueError(f'min_size must be >= 0, got {min_size}.')
    super().__init__(filters, **fixed, **kwargs)
    self.min_size = int(min_size)

  def uses_winograd(self, input_shape, dtype):
    """Whether an input of `input_shape` ([B, H, W, C]) and `dtype` runs Winograd."""
    height, width = input_shape[1], input_shape[2]
    return (self.min_size > 0 and self.data_format == 'channels_last'
            and tf.as_dtype(dtype) == tf.float32
            and height is not None and width is not None
            and min(height, width) >= self.min_size
            and not accelerator_visible())

  def convolution_op(self, inputs, kernel):
    if self.uses_winograd(inputs.shape, inputs.dtype):
      # Read the variable here, in the caller's replica context: a
      # distributed variable handed to the compiled function as it is loses
      # its gradient under MirroredStrategy.
      return winograd.conv2d_3x3_xla(inputs, tf.convert_to_tensor(kernel))
    return super().convolution_op(inputs, kernel)

  def get_config(self):
    config = super().get_config()
    for key in ('kernel_size', 'strides', 'padding', 'dilation_rate', 'groups'):
      config.pop(key, None)
    config['min_size'] = self.min_size
    return config


def accelerator_visible() -> bool:
  """Whether this process sees a GPU or TPU (where models run on it)."""
  return bool(tf.config.list_logical_devices('GPU')
              or tf.config.list_logical_devices('TPU'))


def _folded_norm(conv, norm):
  """`(scale, offset)` of `norm(conv(x))` at inference: `conv'(x) * scale + offset`,
  where `conv'` is `conv` without its bias."""
  if not isinstance(norm, keras.layers.BatchNormalization):
    raise TypeError(f'{norm.name}: expected a BatchNormalization, got {type(norm).__name__}.')
  if norm.axis not in ([3], [-1]) or norm.renorm or norm.virtual_batch_size:
    raise ValueError(f'{norm.name}: only plain last-axis batch norm folds into a conv.')
  channels = conv.filters
  inv = tf.math.rsqrt(tf.convert_to_tensor(norm.moving_variance) + norm.epsilon)
  scale = inv * tf.convert_to_tensor(norm.gamma) if norm.scale else inv
  beta = tf.convert_to_tensor(norm.beta) if norm.center else tf.zeros([channels])
  bias = tf.convert_to_tensor(conv.bias) if conv.use_bias else tf.zeros([channels])
  return scale, beta + (bias - tf.convert_to_tensor(norm.moving_mean)) * scale


def fused_inference_stack(convs, norms, activation, inputs):
  """`activation(norm(conv(x)))` for each `(conv, norm)` pair, as one XLA cluster.

  The inference path of a stack of `WinogradConv2D` + batch norm +
  activation layers (the Mask R-CNN heads): batch norm and conv bias are
  folded into a per-channel scale and offset, and the stack runs as
  `winograd.conv_stack_3x3_xla`. Same results as calling the layers with
  `training=False`, to float rounding.

  Args:
    convs: list of conv layers.
    norms: list of `keras.layers.BatchNormalization`, one per conv.
    activation: a function of a tensor.
    inputs: `[B, H, W, C]`.

  Returns:
    The stack's output, or None when it does not apply (a conv that is not a
    `WinogradConv2D`, layers not built yet, or a conv that would not run
    Winograd on these inputs: small maps, not float32, `min_size=0`, a GPU or
    TPU); the caller then runs the layers one by one.
  """
  if not convs or not all(isinstance(c, WinogradConv2D) and c.activation is
                          keras.activations.linear for c in convs):
    return None
  if not all(layer.built for layer in [*convs, *norms]):
    return None  # The first call builds the layers one by one.
  if not all(c.uses_winograd(inputs.shape, inputs.dtype) for c in convs):
    return None
  kernels, scales, offsets = [], [], []
  for conv, norm in zip(convs, norms, strict=True):
    kernels.append(tf.convert_to_tensor(conv.kernel))
    scale, offset = _folded_norm(conv, norm)
    scales.append(scale)
    offsets.append(offset)
  return winograd.conv_stack_3x3_xla(inputs, kernels, scales, offsets, activation)


def conv2d(filters, kernel_size, strides=1, min_size=0, **kwargs):
  """A 'same'-padded conv: `WinogradConv2D` where it applies, else `Conv2D`.

  Winograd applies to 3x3 stride-1 convs when `min_size` > 0; every other
  argument goes to the layer as it is.
  """
  if min_size and kernel_size in (3, (3, 3)) and strides in (1, (1, 1)):
    return WinogradConv2D(filters, min_size, **kwargs)
  return keras.layers.Conv2D(filters, kernel_size, strides=strides,
                             padding='same', **kwargs)


def use_direct_convolutions(model: keras.layers.Layer) -> int:
  """Turns Winograd off in every `WinogradConv2D` of `model`; returns how many.

  For graphs that must be plain TensorFlow: SavedModel export (TF Serving, the
  batch-norm folding pass) and anything else that traces the model for
  another runtime. Call it before the model is traced.
  """
  layers = [l for l in model.submodules if isinstance(l, WinogradConv2D)]
  for layer in layers:
    layer.min_size = 0
  return len(layers)
