"""ClassificationHead(fusion='average') equals the authors' TF1 head fusion.

The oracle is written here from the TF1 code's behaviour, in numpy: starting
from the top level, the running sum is resized to the next level's size with
TF1's `resize_nearest_neighbor` (legacy: source row `floor(i * in / out)`,
`align_corners=False`, no half-pixel centres) and that level is added; the
lowest-level sum is divided by the number of levels and averaged over space.
"""
import numpy as np
import pytest
import tensorflow as tf

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
