"""Activation names map to the right functions; unknown names are refused."""
import numpy as np
import pytest
import tensorflow as tf

from spinenet.modeling import activations

_X = np.linspace(-7.0, 7.0, 141).astype(np.float32)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


# Each name's function written independently in numpy.
_EXPECTED = {
    'relu': lambda x: np.maximum(x, 0.0),
    'relu6': lambda x: np.clip(x, 0.0, 6.0),
    'swish': lambda x: x * _sigmoid(x),
    'hard_swish': lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    'sigmoid': _sigmoid,
    'hard_sigmoid': lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    'linear': lambda x: x,
}


def test_every_name_is_covered():
  assert sorted(activations.ACTIVATIONS) == sorted(_EXPECTED)


@pytest.mark.parametrize('name', sorted(_EXPECTED))
def test_name_maps_to_its_function(name):
  fn = activations.get(name)
  np.testing.assert_allclose(fn(tf.constant(_X)).numpy(), _EXPECTED[name](_X),
                             rtol=1e-5, atol=1e-6)


def test_hard_sigmoid_is_the_mobilenet_v3_gate_not_keras():
  # Keras' hard_sigmoid is 0.2 x + 0.5 (clipped); at x = 1 that is 0.7, not 4/6.
  value = float(activations.hard_sigmoid(tf.constant(1.0)))
  assert value == pytest.approx(4.0 / 6.0, rel=1e-6)


def test_hard_swish_keeps_bfloat16():
  x = tf.constant(_X, tf.bfloat16)
  y = activations.hard_swish(x)
  assert y.dtype == tf.bfloat16
  np.testing.assert_allclose(y.numpy().astype(np.float32),
                             _EXPECTED['hard_swish'](x.numpy().astype(np.float32)),
                             rtol=2e-2, atol=2e-2)


def test_callables_pass_through():
  fn = lambda x: x * 3.0  # noqa: E731
  assert activations.get(fn) is fn


def test_hard_swish_is_the_mobilenet_v3_formula():
  x = tf.linspace(-5.0, 5.0, 101)
  expected = x.numpy() * np.clip(x.numpy() + 3, 0, 6) / 6
  np.testing.assert_allclose(activations.hard_swish(x), expected, rtol=1e-6, atol=1e-6)


def test_unknown_name_is_refused_naming_the_options():
  with pytest.raises(ValueError, match="Unknown activation 'gelu2'") as info:
    activations.get('gelu2')
  for name in activations.ACTIVATIONS:
    assert repr(name) in str(info.value)
