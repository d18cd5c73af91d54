"""ROI sampling, box targets and mask targets."""
import numpy as np
import tensorflow as tf

from spinenet.ops import box_ops
from spinenet.ops import roi_sampler


def _scene(seed=0):
  rng = np.random.default_rng(seed)
  gt = np.array([[[10, 10, 60, 50], [70, 20, 120, 100], [5, 80, 40, 125], [-1, -1, -1, -1]],
                 [[20, 30, 90, 100], [-1, -1, -1, -1], [-1, -1, -1, -1], [-1, -1, -1, -1]]],
                np.float32)
  classes = np.array([[1, 3, 2, -1], [4, -1, -1, -1]], np.int32)
  # Jittered copies of the gt boxes (many foreground) and random boxes.
  jitter = gt[:, :1].repeat(100, 1) + rng.normal(scale=4, size=(2, 100, 4))
  corners = rng.uniform(0, 128, size=(2, 200, 2, 2))
  rand = np.concatenate([corners.min(2), corners.max(2)], -1)
  proposals = np.concatenate([jitter, rand], 1).astype(np.float32)
  return tf.constant(proposals), tf.constant(gt), tf.constant(classes)


def test_sampler_invariants():
  proposals, gt, classes = _scene()
  out = roi_sampler.sample_rois(proposals, gt, classes, num_samples=64,
                                foreground_fraction=0.25, seed=3)
  rois = out['rois'].numpy()
  cls = out['class_targets'].numpy()
  assert rois.shape == (2, 64, 4) and cls.shape == (2, 64) and cls.dtype == np.int32
  fg = cls > 0
  assert np.all(fg.sum(1) == 16)  # plenty of foreground: exactly 25 %
  assert np.all(fg[:, :16]) and not np.any(fg[:, 16:])  # foreground first
  iou = box_ops.pairwise_iou(out['rois'], gt).numpy()
  best = iou.max(-1)
  assert np.all(best[fg] >= 0.5) and np.all(best[~fg] < 0.5)
  # Matched gt and classes agree with the best-overlapping ground truth.
  idx = out['matched_gt_indices'].numpy()
  np.testing.assert_array_equal(idx[fg], iou.argmax(-1)[fg])
  np.testing.assert_array_equal(cls[fg], np.take_along_axis(classes.numpy(), idx, 1)[fg])
  assert np.all(idx[~fg] == -1)
  # Targets decode back to the matched gt box.
  targets = roi_sampler.box_targets(out['rois'], out['matched_gt_boxes'], out['class_targets'])
  decoded = box_ops.decode_boxes(targets, out['rois'], roi_sampler.BOX_WEIGHTS).numpy()
  np.testing.assert_allclose(decoded[fg], out['matched_gt_boxes'].numpy()[fg], atol=1e-3)
  assert np.all(targets.numpy()[~fg] == 0)


def test_gt_boxes_are_candidates():
  # Proposals far from every object: only the mixed-in gt boxes are foreground.
  proposals = tf.tile(tf.constant([[[0, 0, 5, 5]]], tf.float32), [2, 80, 1])
  _, gt, classes = _scene()
  out = roi_sampler.sample_rois(proposals, gt, classes, num_samples=32)
  fg = out['class_targets'].numpy() > 0
  assert fg.sum(1).tolist() == [3, 1]
  rois = out['rois'].numpy()
  for b in range(2):
    got = sorted(map(tuple, rois[b][fg[b]]))
    want = sorted(map(tuple, gt.numpy()[b][classes.numpy()[b] > 0]))
    np.testing.assert_allclose(got, want)
  out = roi_sampler.sample_rois(proposals, gt, classes, num_samples=32, mix_gt_boxes=False)
  assert not np.any(out['class_targets'].numpy() > 0)


def test_crop_masks_geometry():
  rng = np.random.default_rng(0)
  mask = (rng.uniform(size=(1, 28, 28)) > 0.5).astype(np.float32)
  box = tf.constant([[10.0, 20.0, 66.0, 48.0]])
  # Same box, same size: the mask itself.
  np.testing.assert_allclose(roi_sampler.crop_masks(mask, box, box, 28).numpy(), mask,
                             atol=1e-5)
  # The box's top-left quarter at 14 px: pixels [0:14, 0:14] exactly.
  quarter = tf.constant([[10.0, 20.0, 38.0, 34.0]])
  np.testing.assert_allclose(roi_sampler.crop_masks(mask, box, quarter, 14).numpy(),
                             mask[:, :14, :14], atol=1e-5)
  # A box beside the mask reads zeros.
  away = tf.constant([[100.0, 100.0, 120.0, 120.0]])
  assert np.all(roi_sampler.crop_masks(mask, box, away, 7).numpy() == 0)


def test_sample_masks_rows():
  proposals, gt, classes = _scene()
  masks = tf.constant(np.arange(4, dtype=np.float32)[None, :, None, None]
                      * np.ones((2, 4, 16, 16), np.float32))  # mask g is constant g
  out = roi_sampler.sample_rois(proposals, gt, classes, num_samples=64)
  m = roi_sampler.sample_masks(out['rois'], out['class_targets'], out['matched_gt_boxes'],
                               out['matched_gt_indices'], masks, num_masks=20,
                               output_size=8)
  mc = m['mask_class_targets'].numpy()
  assert m['mask_targets'].shape == (2, 20, 8, 8)
  assert np.all(mc[:, :16] > 0) and np.all(mc[:, 16:] == 0)
  # Centre pixel of each foreground row carries its own gt's constant.
  idx = out['matched_gt_indices'].numpy()[:, :16]
  np.testing.assert_allclose(m['mask_targets'].numpy()[:, :16, 4, 4], idx, atol=1e-5)
  assert np.all(m['mask_targets'].numpy()[:, 16:] == 0)
