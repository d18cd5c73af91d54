"""keras_objects.custom_objects lists every Keras class of spinenet.modeling."""
import importlib
import inspect
import pkgutil

import numpy as np
import tensorflow as tf
import tf_keras as keras

import spinenet.modeling
from spinenet.modeling import batch_norm
from spinenet.modeling import keras_objects
from spinenet.modeling import layers


def _layer_classes():
  """Public Keras layer (and model) classes defined in spinenet.modeling."""
  found = {}
  for info in pkgutil.iter_modules(spinenet.modeling.__path__):
    module = importlib.import_module(f'spinenet.modeling.{info.name}')
    for name, obj in inspect.getmembers(module, inspect.isclass):
      if (issubclass(obj, keras.layers.Layer) and obj.__module__ == module.__name__
          and not name.startswith('_')):
        found[name] = obj
  return found


def test_every_layer_class_is_listed_by_its_name():
  assert keras_objects.custom_objects() == _layer_classes()


def test_batch_norm_configs_resolve_to_this_package_batch_norm():
  objects = keras_objects.custom_objects()
  ours = keras.layers.serialize(batch_norm.BatchNormalization(momentum=0.9))
  assert type(keras.layers.deserialize(ours, custom_objects=objects)) is (
      batch_norm.BatchNormalization)
  # A config that names the class only (no module) gets this package's class too.
  bare = {'class_name': 'BatchNormalization',
          'config': keras.layers.BatchNormalization(momentum=0.8).get_config()}
  layer = keras.layers.deserialize(bare, custom_objects=objects)
  assert type(layer) is batch_norm.BatchNormalization and layer.momentum == 0.8


def test_a_functional_model_of_custom_layers_reloads_from_json():
  inputs = keras.Input([8, 8, 4])
  x = layers.ResidualBlock(4, se_ratio=0.5, name='block')(inputs)
  x = layers.StochasticDepth(0.2, name='drop')(x)
  model = keras.Model(inputs, x)
  with keras.utils.custom_object_scope(keras_objects.custom_objects()):
    clone = keras.models.model_from_json(model.to_json())
  assert [type(l) for l in clone.layers] == [type(l) for l in model.layers]
  clone.set_weights(model.get_weights())
  x = tf.random.normal([2, 8, 8, 4])
  np.testing.assert_allclose(clone(x, training=False), model(x, training=False),
                             rtol=1e-6, atol=1e-6)
