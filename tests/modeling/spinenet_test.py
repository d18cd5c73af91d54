"""The SpineNet builder: shapes per id, merging in the built graph, gradients."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import block_specs as bs
from spinenet.modeling import registry
from spinenet.modeling import spinenet as sn

SIZE = 128


@pytest.mark.parametrize('model_id', registry.SPINENET_IDS)
def test_each_id_builds_with_the_right_output_shapes(model_id):
  spec = registry.get_spec(model_id)
  model = registry.build_backbone(model_id, SIZE)
  feats = model(tf.random.uniform([2, SIZE, SIZE, 3]), training=False)
  assert sorted(feats) == ['3', '4', '5', '6', '7']
  for level, f in feats.items():
    stride = 2**int(level)
    assert f.shape == (2, SIZE // stride, SIZE // stride, spec.endpoints_num_filters)
    assert np.all(np.isfinite(f.numpy()))


def test_builder_runs_a_custom_spec_and_records_the_merge_in_the_graph():
  specs = (
      (3, 'bottleneck', (0, 1), False),
      (4, 'residual', (0, 2), False),
      (3, 'bottleneck', (1, 2), True),
      (4, 'residual', (2, 4), True),
      (5, 'bottleneck', (4, 5), True),
  )
  model = sn.build_spinenet(specs, input_shape=(64, 64, 3), max_level=5,
                            endpoints_num_filters=16, filter_size_scale=0.25)
  inbound = {l.name: len(tf.nest.flatten(l.input)) for l in model.layers
             if l.name.startswith('block_')}
  # block_3 (the P4 output) receives its two parents plus unconsumed block 1.
  assert inbound == {'block_0': 2, 'block_1': 2, 'block_2': 2, 'block_3': 3,
                     'block_4': 2}
  out = model(tf.zeros([1, 64, 64, 3]))
  assert {k: v.shape[1] for k, v in out.items()} == {'3': 8, '4': 4, '5': 2}


def test_stochastic_depth_rates_grow_linearly():
  model = registry.build_backbone('49', SIZE, init_stochastic_depth_rate=0.3)
  rates = {}
  for layer in model.layers:
    if layer.name.startswith('block_'):
      i = int(layer.name.split('_')[1])
      rates[i] = layer.group.blocks[0].stochastic_depth_rate
  n = len(bs.SPINENET_49)
  for i, rate in rates.items():
    assert rate == pytest.approx(0.3 * (i + 1) / n)


@pytest.mark.parametrize('model_id', ['49S', 'mobile-49XS'])
def test_gradients_reach_every_trainable_variable(model_id):
  model = registry.build_retinanet(model_id, num_classes=5, input_size=SIZE,
                                   init_stochastic_depth_rate=0.0)
  # Batch 4: at 128 px P7 is 1x1, and batch norm over only 2 values has zero
  # gradient (its output is +-1 whatever the input).
  images = tf.random.normal([4, SIZE, SIZE, 3])
  with tf.GradientTape() as tape:
    out = model(images, training=True)
    loss = sum(tf.reduce_sum(tf.square(v)) for d in out.values() for v in d.values())
  grads = tape.gradient(loss, model.trainable_variables)
  missing = [v.name for v, g in zip(model.trainable_variables, grads) if g is None]
  assert not missing
  # A squeeze-excite gate of one ReLU unit may be dead on a given batch; every
  # other variable must receive a non-zero gradient.
  zero = [v.name for v, g in zip(model.trainable_variables, grads)
          if not np.any(g.numpy()) and '/se/' not in v.name]
  assert not zero, zero


def test_mixed_bfloat16_builds_and_outputs_float32():
  keras.mixed_precision.set_global_policy('mixed_bfloat16')
  try:
    model = registry.build_retinanet('mobile-49XS', num_classes=3, input_size=SIZE)
    out = model(tf.zeros([1, SIZE, SIZE, 3]), training=False)
    assert out['cls_outputs']['3'].dtype == tf.float32
    assert model.backbone.layers[-1].compute_dtype == 'bfloat16'
  finally:
    keras.mixed_precision.set_global_policy('float32')


def test_weights_restore_at_another_input_size(tmp_path):
  small = registry.build_backbone('49S', 128, endpoints_num_filters=32)
  path = tf.train.Checkpoint(model=small).write(str(tmp_path / 'ckpt'))
  large = registry.build_backbone('49S', 256, endpoints_num_filters=32)
  tf.train.Checkpoint(model=large).read(path).assert_consumed()
  x = tf.random.normal([1, 256, 256, 3])
  a = tf.function(lambda t: small(t, training=False), input_signature=[
      tf.TensorSpec([None, None, None, 3])])
  # The small model's graph accepts only 128 px; compare at 128 through both.
  del a
  x128 = x[:, :128, :128]
  small_out = small(x128, training=False)
  large_weights_only = registry.build_backbone('49S', None, endpoints_num_filters=32)
  tf.train.Checkpoint(model=large_weights_only).read(path).assert_consumed()
  any_out = large_weights_only(x128, training=False)
  for level in small_out:
    np.testing.assert_allclose(small_out[level], any_out[level], rtol=1e-5, atol=1e-5)
  assert large(x, training=False)['7'].shape == (1, 2, 2, 32)
