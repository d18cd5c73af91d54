"""The anchor coverage check (spinenet/data/anchor_coverage.py)."""
import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from spinenet.data import anchor_coverage
from spinenet.ops import anchors as anchors_lib


def _brute_force(boxes, s):
  """Best IoU of each box over every anchor `ops.anchors` generates."""
  grid = anchors_lib.multilevel_anchors(s.min_level, s.max_level, s.num_scales,
                                        s.aspect_ratios, s.anchor_size,
                                        s.input_size)
  a = np.concatenate([v.numpy().reshape(-1, 4) for v in grid.values()]).astype(np.float64)
  b = boxes[:, None, :]
  iy = np.clip(np.minimum(b[..., 2], a[:, 2]) - np.maximum(b[..., 0], a[:, 0]), 0, None)
  ix = np.clip(np.minimum(b[..., 3], a[:, 3]) - np.maximum(b[..., 1], a[:, 1]), 0, None)
  inter = iy * ix
  area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  return (inter / (area_b + area_a - inter)).max(axis=1)


def _random_boxes(rng, n, size):
  centre = rng.uniform(0, 1, (n, 2)) * np.array(size)
  side = np.exp(rng.uniform(np.log(4), np.log(max(size)), (n, 1)))
  hw = side * np.exp(rng.normal(0, 0.6, (n, 2)))
  return np.concatenate([centre - hw / 2, centre + hw / 2], axis=1)


class BestAnchorIouTest(tf.test.TestCase):

  def test_equals_brute_force_over_every_anchor(self):
    rng = np.random.default_rng(0)
    for settings in (
        anchor_coverage.AnchorSettings((128, 128), anchor_size=3.0),
        anchor_coverage.AnchorSettings((256, 384), min_level=3, max_level=6,
                                       num_scales=2, aspect_ratios=(1.0, 3.0),
                                       anchor_size=2.0),
        anchor_coverage.AnchorSettings((200, 136), anchor_size=4.0)):  # ragged grid
      boxes = _random_boxes(rng, 300, settings.input_size)
      iou, _ = anchor_coverage.best_anchor_iou(boxes, settings)
      self.assertAllClose(iou, _brute_force(boxes, settings), atol=1e-5,
                          msg=settings.text())

  def test_boxes_are_scaled_to_fit_the_input(self):
    # A 400x800 image in a 256x256 input is scaled by 0.32.
    boxes = anchor_coverage.scaled_boxes(
        [((400, 800), np.array([[0.0, 0.0, 0.5, 0.25]]))], (256, 256))
    self.assertAllClose(boxes, [[0, 0, 64, 64]])


class CoverageReportTest(tf.test.TestCase):

  def _images(self, sides, image=512):
    """Square boxes of the given sides (pixels of a 512 image), one per image."""
    out = []
    for side in sides:
      lo, hi = 100 / image, (100 + side) / image
      out.append(((image, image), np.array([[lo, lo, hi, hi]])))
    return out

  def test_small_boxes_are_reported_with_what_to_change(self):
    settings = anchor_coverage.AnchorSettings((512, 512), anchor_size=4.0)
    report = anchor_coverage.coverage(self._images([8] * 30 + [64] * 10), settings)
    # 8 px boxes against 32 px anchors: IoU 1/16 at best.
    self.assertAlmostEqual(report.unreached_share, 0.75)
    self.assertAlmostEqual(report.reasons['smaller than the anchors'], 0.75)
    changes = dict(report.alternatives)
    # No single change reaches 8 px boxes (16 px anchors at level 2: IoU
    # 0.25), and a smaller anchor never makes the share worse.
    self.assertLessEqual(changes['anchor_size 2.66667'], report.unreached_share)
    text = report.text()
    self.assertIn('75.0%', text)
    self.assertIn('WARNING', text)
    self.assertIn('lower anchor_size', text)

  def test_well_covered_boxes_pass(self):
    settings = anchor_coverage.AnchorSettings((512, 512), anchor_size=4.0)
    report = anchor_coverage.coverage(self._images([32, 64, 128, 256]), settings)
    self.assertEqual(report.unreached_share, 0.0)
    self.assertIn('OK', report.text())

  def test_a_larger_input_reaches_small_boxes(self):
    settings = anchor_coverage.AnchorSettings((256, 256), anchor_size=4.0)
    # 24 px boxes in a 512 px image: 12 px at 256 (unreached), 24 px at 512.
    report = anchor_coverage.coverage(self._images([24] * 10), settings)
    self.assertEqual(report.unreached_share, 1.0)
    self.assertLess(dict(report.alternatives)['input_size 512x512'], 1.0)

  def test_elongated_boxes(self):
    settings = anchor_coverage.AnchorSettings((512, 512), anchor_size=4.0)
    images = [((512, 512), np.array([[0.2, 0.1, 0.23, 0.6]]))] * 5  # 15 x 256
    report = anchor_coverage.coverage(images, settings)
    self.assertEqual(report.unreached_share, 1.0)
    self.assertEqual(report.reasons['too elongated'], 1.0)
    self.assertIn('add ratios', report.text())

  def test_coco_json_source_leaves_crowds_out(self):
    path = os.path.join(tempfile.mkdtemp(), 'a.json')
    with open(path, 'w') as f:
      json.dump({'images': [{'id': 1, 'file_name': 'a.jpg', 'height': 100,
                             'width': 200}],
                 'annotations': [
                     {'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0,
                      'bbox': [20, 10, 40, 30], 'area': 1200},
                     {'id': 2, 'image_id': 1, 'category_id': 1, 'iscrowd': 1,
                      'bbox': [0, 0, 100, 100], 'area': 10000}],
                 'categories': [{'id': 1, 'name': 'a'}]}, f)
    [(hw, boxes)] = anchor_coverage.images_from_coco_json(path)
    self.assertEqual(hw, (100, 200))
    self.assertAllClose(boxes, [[0.1, 0.1, 0.4, 0.3]])
