"""Multi-level RoIAlign against a direct NumPy bilinear reference."""
import math

import numpy as np
import tensorflow as tf

from spinenet.ops import roi_align


def _reference(features, boxes, output_size, sample_offset=0.5):
  """Per-sample loops: level by FPN rule, one bilinear sample per bin."""
  levels = sorted(features, key=int)
  lo, hi = int(levels[0]), int(levels[-1])
  b, r = boxes.shape[:2]
  c = features[levels[0]].shape[-1]
  out = np.zeros([b, r, output_size, output_size, c], np.float64)
  for bi in range(b):
    for ri in range(r):
      y0, x0, y1, x1 = boxes[bi, ri].astype(np.float64)
      size = math.sqrt(max(y1 - y0, 0) * max(x1 - x0, 0))
      level = lo if size == 0 else int(math.floor(math.log2(size / 224.0))) + 4
      level = min(max(level, lo), hi)
      f = features[str(level)][bi].astype(np.float64)
      h, w = f.shape[:2]
      s = 2.0**level
      for i in range(output_size):
        y = y0 / s + (i + sample_offset) * (y1 - y0) / s / output_size
        for j in range(output_size):
          x = x0 / s + (j + sample_offset) * (x1 - x0) / s / output_size
          ya = min(max(math.floor(y), 0), h - 1)
          xa = min(max(math.floor(x), 0), w - 1)
          yb, xb = min(ya + 1, h - 1), min(xa + 1, w - 1)
          ly, lx = y - ya, x - xa
          out[bi, ri, i, j] = ((1 - ly) * (1 - lx) * f[ya, xa] + (1 - ly) * lx * f[ya, xb]
                               + ly * (1 - lx) * f[yb, xa] + ly * lx * f[yb, xb])
  return out


def test_matches_numpy_bilinear_reference():
  rng = np.random.default_rng(0)
  size = 256
  features = {str(l): rng.normal(size=(2, size // 2**l, size // 2**l, 3)).astype(np.float32)
              for l in range(3, 6)}
  # Boxes of every level, some over the image border (extrapolation and clamping).
  corners = rng.uniform(-20, size + 20, size=(2, 40, 2, 2))
  boxes = np.concatenate([corners.min(2), corners.max(2)], -1).astype(np.float32)
  boxes[:, 0] = [0, 0, 0, 0]  # empty box -> lowest level
  boxes[:, 1] = [10, 10, 10 + 224, 10 + 224]  # exactly canonical -> level 4
  got = roi_align.multilevel_roi_align(
      {k: tf.constant(v) for k, v in features.items()}, tf.constant(boxes), 7).numpy()
  want = _reference(features, boxes, 7)
  assert got.shape == (2, 40, 7, 7, 3)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_assign_levels_follows_box_size():
  boxes = tf.constant([[0, 0, 16, 16], [0, 0, 112, 112], [0, 0, 224, 224],
                       [0, 0, 500, 500], [0, 0, 2000, 2000]], tf.float32)
  np.testing.assert_array_equal(roi_align.assign_levels(boxes, 3, 7).numpy(),
                                [3, 3, 4, 5, 7])


def test_constant_feature_is_reproduced_and_compiles():
  features = {str(l): tf.fill([1, 64 // 2**l, 64 // 2**l, 2], float(l)) for l in (3, 4)}
  boxes = tf.constant([[[0, 0, 20, 20], [0, 0, 60, 60]]], tf.float32)
  fn = tf.function(lambda f, b: roi_align.multilevel_roi_align(f, b, 4), jit_compile=True)
  out = fn(features, boxes).numpy()
  assert out.shape == (1, 2, 4, 4, 2)
  np.testing.assert_allclose(out, 3.0, rtol=1e-6)  # both boxes are small: level 3


def test_crop_and_resize_method_matches_reference_inside_the_image():
  rng = np.random.default_rng(1)
  size = 256
  features = {str(l): rng.normal(size=(2, size // 2**l, size // 2**l, 3)).astype(np.float32)
              for l in range(3, 8)}
  corners = rng.uniform(0, size, size=(2, 60, 2, 2))
  boxes = np.concatenate([corners.min(2), corners.max(2)], -1).astype(np.float32)
  boxes[:, 0] = [0, 0, size, size]  # the whole image: every edge sample
  boxes[:, 1] = [size - 3, size - 40, size, size]  # thin, at the far corner
  feats = {k: tf.constant(v) for k, v in features.items()}
  for output_size in (7, 14):
    got = roi_align.multilevel_roi_align(feats, tf.constant(boxes), output_size,
                                         method='crop_and_resize').numpy()
    np.testing.assert_allclose(got, _reference(features, boxes, output_size),
                               rtol=1e-4, atol=1e-4)
  gathered = roi_align.multilevel_roi_align(feats, tf.constant(boxes), 7, method='gather')
  np.testing.assert_allclose(
      roi_align.multilevel_roi_align(feats, tf.constant(boxes), 7, method='auto'),
      gathered, atol=1e-4)
