"""Classifier: backbone features -> ClassificationHead logits, in float32."""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import classifier as classifier_lib
from spinenet.modeling import heads
from spinenet.modeling import registry


def _toy_backbone():
  """images [B, 16, 16, 3] -> {'3': [B, 2, 2, 4], '4': [B, 1, 1, 4]}."""
  images = keras.Input([16, 16, 3])
  p3 = keras.layers.Conv2D(4, 8, strides=8, name='p3')(images)
  p4 = keras.layers.Conv2D(4, 2, strides=2, name='p4')(p3)
  return keras.Model(images, {'3': p3, '4': p4})


def test_logits_are_the_linear_layer_on_the_pooled_top_level():
  backbone = _toy_backbone()
  model = classifier_lib.Classifier(backbone, heads.ClassificationHead(5, fusion='top'))
  x = tf.random.normal([3, 16, 16, 3])
  logits = model(x, training=False)
  assert logits.shape == (3, 5) and logits.dtype == tf.float32
  top = backbone(x)['4'].numpy().mean(axis=(1, 2))
  kernel, bias = model.head.linear.get_weights()
  np.testing.assert_allclose(logits, top @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_training_flag_reaches_the_head_dropout():
  model = classifier_lib.Classifier(
      _toy_backbone(), heads.ClassificationHead(5, dropout_rate=0.9, fusion='level_mean'))
  x = tf.random.normal([4, 16, 16, 3])
  np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
  tf.random.set_seed(1)
  assert not np.allclose(model(x, training=True), model(x, training=False))


def test_logits_are_float32_under_mixed_bfloat16():
  keras.mixed_precision.set_global_policy('mixed_bfloat16')
  try:
    model = classifier_lib.Classifier(_toy_backbone(), heads.ClassificationHead(3))
    logits = model(tf.random.normal([2, 16, 16, 3]), training=False)
    assert model.backbone.get_layer('p4').compute_dtype == 'bfloat16'
  finally:
    keras.mixed_precision.set_global_policy('float32')
  assert logits.dtype == tf.float32 and logits.shape == (2, 3)


def test_classifier_average_fusion_equals_upsample_average_pool():
  size = 128
  model = registry.build_classifier('49S', num_classes=10, input_size=size,
                                    endpoints_num_filters=16, filter_size_scale=0.25,
                                    dropout_rate=0.0)
  x = tf.random.normal([2, size, size, 3])
  logits = model(x, training=False)
  assert logits.shape == (2, 10) and logits.dtype == tf.float32
  feats = model.backbone(x, training=False)
  p3 = feats['3'].shape[1]
  up = [tf.image.resize(feats[str(l)], [p3, p3], method='nearest') for l in range(3, 8)]
  pooled = tf.reduce_mean(tf.add_n(up) / 5.0, axis=[1, 2])
  np.testing.assert_allclose(model.head.linear(pooled), logits, rtol=1e-4, atol=1e-5)
