"""Activation functions by name, as the SpineNet recipes use them."""
import tensorflow as tf


def hard_sigmoid(x):
  """`relu6(x + 3) / 6`, the MobileNetV3 gate (not Keras' `0.2 x + 0.5`)."""
  return tf.nn.relu6(x + tf.cast(3.0, x.dtype)) * tf.cast(1.0 / 6.0, x.dtype)


def hard_swish(x):
  """`x * relu6(x + 3) / 6` (MobileNetV3)."""
  return x * hard_sigmoid(x)


_ACTIVATIONS = {
    'relu': tf.nn.relu,
    'relu6': tf.nn.relu6,
    'swish': tf.nn.silu,
    'hard_swish': hard_swish,
    'sigmoid': tf.math.sigmoid,
    'hard_sigmoid': hard_sigmoid,
    'linear': tf.identity,
}

ACTIVATIONS = tuple(_ACTIVATIONS)


def get(name):
  """Returns the activation function called `name` (one of `ACTIVATIONS`)."""
  if callable(name):
    return name
  try:
    return _ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f'Unknown activation {name!r}; expected one of '
                     f'{sorted(_ACTIVATIONS)}. Received: activation={name!r}') from None
