"""A 3x3 `Conv2D` that runs as a Winograd convolution on large feature maps.

Same variables, same config and same results (to float rounding) as
`keras.layers.Conv2D(filters, 3, padding='same')`, so checkpoints move freely
between the two. Only the arithmetic differs: on feature maps of at least
`min_size` x `min_size` in float32, the convolution is computed by
`spinenet.ops.winograd.conv2d_3x3` in an XLA cluster; smaller maps, other
dtypes (bfloat16, float16: the transforms cost too much precision) and
`min_size=0` take the direct convolution.
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
            and min(height, width) >= self.min_size)

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
