"""RetinaNetHead and ClassificationHead.

RetinaNetHead: shapes per level, one set of convs shared by every level with
per-level batch norms, the class prior, the separable variant, and its output
against a convolution computed by hand. ClassificationHead(fusion='average')
equals the authors' TF1 head fusion. The fusion oracle is written here from the TF1 code's behaviour, in numpy: starting
from the top level, the running sum is resized to the next level's size with
TF1's `resize_nearest_neighbor` (legacy: source row `floor(i * in / out)`,
`align_corners=False`, no half-pixel centres) and that level is added; the
lowest-level sum is divided by the number of levels and averaged over space.
"""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import heads

NUM_CLASSES, CHANNELS, BATCH = 6, 8, 2


def _numpy_tf1_resize(x, out_h, out_w):
  """Nearest resize of `[B, H, W, C]` as TF1's legacy kernel, in numpy."""
  _, h, w, _ = x.shape
  rows = [min(int(np.floor(np.float32(i) * (np.float32(h) / np.float32(out_h)))), h - 1)
          for i in range(out_h)]
  cols = [min(int(np.floor(np.float32(j) * (np.float32(w) / np.float32(out_w)))), w - 1)
          for j in range(out_w)]
  return x[:, rows][:, :, cols]


def _numpy_tf1_pool(features):
  levels = sorted(features, key=int)
  total = features[levels[-1]]
  for level in reversed(levels[:-1]):
    h, w = features[level].shape[1:3]
    total = _numpy_tf1_resize(total, h, w) + features[level]
  return (total / len(levels)).mean(axis=(1, 2))


def _features(sizes, seed):
  rng = np.random.default_rng(seed)
  return {str(level): rng.normal(size=(BATCH, s, s, CHANNELS)).astype(np.float32)
          for level, s in zip(range(3, 8), sizes)}


def _level_sizes(image):
  sizes, s = [], image
  for _ in range(7):
    s = -(-s // 2)  # stride-2 'same' convs
    sizes.append(s)
  return sizes[2:]


def _logits(head, pooled):
  kernel, bias = head.linear.get_weights()
  return pooled @ kernel + bias


def test_level_sizes_at_224_have_a_non_integer_factor():
  assert _level_sizes(224) == [28, 14, 7, 4, 2]
  # 4 -> 7 rows read 0,0,1,1,2,2,3: the last source row counts once, not twice.
  np.testing.assert_array_equal(heads.tf1_resize_indices(4, 7), [0, 0, 1, 1, 2, 2, 3])


@pytest.mark.parametrize('image', [224, 256, 320, 384, 200])
def test_average_fusion_equals_numpy_tf1_head(image):
  features = _features(_level_sizes(image), seed=image)
  head = heads.ClassificationHead(NUM_CLASSES, fusion='average')
  logits = head({k: tf.constant(v) for k, v in features.items()}, training=False)
  expected = _logits(head, _numpy_tf1_pool(features))
  np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_tf1_resize_oracle_agrees_with_tf_v1_kernel():
  # The numpy oracle and TensorFlow's legacy kernel read the same rows.
  x = np.random.default_rng(0).normal(size=(1, 4, 2, 3)).astype(np.float32)
  ref = tf.compat.v1.image.resize_nearest_neighbor(x, [7, 4]).numpy()
  np.testing.assert_array_equal(_numpy_tf1_resize(x, 7, 4), ref)


def test_level_mean_differs_at_224_and_agrees_at_256():
  for image, differs in ((224, True), (256, False)):
    features = {k: tf.constant(v) for k, v in _features(_level_sizes(image), 1).items()}
    average = heads.ClassificationHead(NUM_CLASSES, fusion='average')
    average(features)
    level_mean = heads.ClassificationHead(NUM_CLASSES, fusion='level_mean')
    level_mean(features)
    level_mean.set_weights(average.get_weights())
    gap = np.abs(average(features).numpy() - level_mean(features).numpy()).max()
    assert (gap > 1e-4) == differs, (image, gap)


def test_bad_fusion_is_named():
  with pytest.raises(ValueError, match="fusion.*'mean'"):
    heads.ClassificationHead(3, fusion='mean')


# RetinaNetHead ---------------------------------------------------------------

_LEVEL_SIZES = {'3': 16, '4': 8, '5': 4}


def _level_features(channels=8, batch=2, seed=0):
  g = tf.random.Generator.from_seed(seed)
  return {l: g.normal([batch, s, s, channels]) for l, s in _LEVEL_SIZES.items()}


def _small_head(**kwargs):
  kwargs = dict(dict(num_convs=2, num_filters=8), **kwargs)
  return heads.RetinaNetHead(3, 5, num_classes=3, num_anchors=2, **kwargs)


def test_retinanet_head_shapes_per_level():
  head = _small_head()
  classes, boxes = head(_level_features(), training=False)
  assert sorted(classes) == sorted(boxes) == ['3', '4', '5']
  for level, size in _LEVEL_SIZES.items():
    assert classes[level].shape == (2, size, size, 2 * 3)
    assert boxes[level].shape == (2, size, size, 2 * 4)


def test_retinanet_head_shares_convs_and_keeps_one_norm_per_level():
  head = _small_head()
  x = tf.random.normal([1, 8, 8, 8])
  head({'3': x, '4': x, '5': x}, training=False)
  # The predictors start near zero (stddev 1e-5); make them visible.
  for predictor in (head.classifier, head.box_regressor):
    predictor.kernel.assign(tf.random.normal(predictor.kernel.shape, stddev=0.1))
  classes, boxes = head({'3': x, '4': x, '5': x}, training=False)
  # Same input at every level: same output (shared convs, equal fresh norms).
  np.testing.assert_allclose(classes['3'], classes['5'], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(boxes['3'], boxes['4'], rtol=1e-6, atol=1e-6)
  # Conv kernels exist once; norms once per level, subnet and conv.
  kernels = [w for w in head.weights if 'kernel' in w.name]
  assert len(kernels) == 2 * (2 + 1)
  gammas = [w for w in head.weights if 'gamma' in w.name]
  assert len(gammas) == 2 * 3 * 2
  # A level's own norm changes that level only.
  norm = head.class_norms['4'][0]
  norm.beta.assign(tf.fill(norm.beta.shape, 0.5))
  moved, _ = head({'3': x, '4': x, '5': x}, training=False)
  np.testing.assert_allclose(moved['3'], classes['3'], rtol=1e-6, atol=1e-6)
  assert not np.allclose(moved['4'], classes['4'])


def test_retinanet_head_parameter_count_does_not_grow_with_levels():
  def trainable_conv_params(head):
    return sum(int(np.prod(w.shape)) for w in head.trainable_weights
               if 'norm' not in w.name)
  three = _small_head()
  three(_level_features(), training=False)
  two = heads.RetinaNetHead(3, 4, 3, 2, num_convs=2, num_filters=8)
  two({k: v for k, v in _level_features().items() if k != '5'}, training=False)
  assert trainable_conv_params(three) == trainable_conv_params(two)
  # By hand: 2 subnets x 2 convs (3*3*8*8 + 8), predictors 3*3*8*6 + 6 and 3*3*8*8 + 8.
  assert trainable_conv_params(three) == 2 * 2 * (9 * 64 + 8) + (9 * 48 + 6) + (9 * 64 + 8)


def _np_conv3x3(x, kernel, bias):
  """'same' 3x3 conv of `[B, H, W, C]` written as a sum of shifted products."""
  b, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((b, h, w, kernel.shape[-1]), np.float64)
  for dy in range(3):
    for dx in range(3):
      out += padded[:, dy:dy + h, dx:dx + w, :] @ kernel[dy, dx]
  return out + bias


def test_retinanet_head_class_output_equals_a_hand_computed_tower():
  head = _small_head(num_convs=1, activation='relu', norm_epsilon=1e-3)
  features = _level_features(seed=4)
  head(features, training=False)
  # Random weights everywhere (the predictor starts near zero).
  rng = np.random.default_rng(0)
  for w in head.weights:
    if 'moving_variance' in w.name:
      w.assign(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))
    else:
      w.assign(rng.normal(0, 0.3, w.shape).astype(np.float32))
  classes, _ = head(features, training=False)
  x = features['4'].numpy().astype(np.float64)
  conv = head.class_convs[0]
  norm = head.class_norms['4'][0]
  y = _np_conv3x3(x, conv.kernel.numpy(), conv.bias.numpy())
  y = ((y - norm.moving_mean.numpy()) / np.sqrt(norm.moving_variance.numpy() + 1e-3)
       * norm.gamma.numpy() + norm.beta.numpy())
  y = np.maximum(y, 0.0)
  expected = _np_conv3x3(y, head.classifier.kernel.numpy(), head.classifier.bias.numpy())
  np.testing.assert_allclose(classes['4'].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_retinanet_head_biases_start_at_the_class_prior_and_zero_boxes():
  head = _small_head()
  head(_level_features(), training=False)
  bias = head.classifier.bias.numpy()
  np.testing.assert_allclose(1 / (1 + np.exp(-bias)), 0.01, rtol=1e-5)
  np.testing.assert_array_equal(head.box_regressor.bias.numpy(), 0.0)


def test_separable_head_uses_separable_convs():
  head = _small_head(use_separable_conv=True)
  classes, boxes = head(_level_features(), training=False)
  convs = head.class_convs + head.box_convs + [head.classifier, head.box_regressor]
  assert all(isinstance(c, keras.layers.SeparableConv2D) for c in convs)
  assert classes['5'].shape == (2, 4, 4, 6) and boxes['5'].shape == (2, 4, 4, 8)
  # depthwise 3*3*8 + pointwise 8*out + bias out per conv.
  params = lambda out: 9 * 8 + 8 * out + out  # noqa: E731
  expected = 4 * params(8) + params(6) + params(8)
  assert sum(int(np.prod(w.shape)) for c in convs for w in c.weights) == expected
