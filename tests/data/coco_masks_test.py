"""COCO segmentations -> masks: equal to pycocotools' annToMask, bad input named."""
import io
import math

from absl.testing import parameterized
import numpy as np
from PIL import Image
from pycocotools import coco as coco_api
from pycocotools import mask as mask_api
import tensorflow as tf

from spinenet.data import coco_masks

_H, _W = 37, 53


def _ann_to_mask(segmentation, iscrowd=0, height=_H, width=_W):
  """pycocotools' own rasterization of one annotation (the oracle)."""
  coco = coco_api.COCO()
  coco.dataset = {
      'images': [{'id': 1, 'height': height, 'width': width}],
      'categories': [{'id': 1, 'name': 'a'}],
      'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1,
                       'iscrowd': iscrowd, 'bbox': [0, 0, 1, 1], 'area': 1,
                       'segmentation': segmentation}]}
  coco.createIndex()
  return coco.annToMask(coco.anns[1])


def _blob(seed, height=_H, width=_W):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:height, :width]
  cy, cx = rng.uniform(5, height - 5), rng.uniform(5, width - 5)
  return (((yy - cy) / 9)**2 + ((xx - cx) / 14)**2 < 1).astype(np.uint8)


def _runs(mask):
  """Uncompressed COCO counts of a mask (column-major runs, 0s first)."""
  flat = np.asarray(mask).flatten(order='F')
  changes = np.flatnonzero(np.diff(flat)) + 1
  bounds = np.concatenate([[0], changes, [flat.size]])
  runs = np.diff(bounds).tolist()
  return ([0] + runs) if flat[0] else runs


class SegmentationToMaskTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('polygon', [[3.5, 4, 30, 2.5, 41, 30, 8, 33]], 0),
      ('two_polygons', [[3, 4, 20, 4, 12, 20], [30, 10, 50, 12, 44, 35.5]], 0),
      ('flat_single_polygon', [3.5, 4, 30, 2.5, 41, 30, 8, 33], 0),
  )
  def test_polygons_equal_ann_to_mask(self, segmentation, iscrowd):
    mask, degenerate = coco_masks.segmentation_to_mask(segmentation, _H, _W)
    nested = (segmentation if isinstance(segmentation[0], list)
              else [segmentation])
    expected = _ann_to_mask(nested, iscrowd)
    self.assertEqual(mask.dtype, np.uint8)
    self.assertEqual(mask.shape, (_H, _W))
    self.assertGreater(expected.sum(), 50)
    self.assertAllEqual(mask, expected)
    self.assertEqual(degenerate, 0)

  def test_uncompressed_crowd_rle_equals_ann_to_mask(self):
    blob = _blob(1)
    segmentation = {'size': [_H, _W], 'counts': _runs(blob)}
    mask, _ = coco_masks.segmentation_to_mask(segmentation, _H, _W)
    self.assertAllEqual(mask, _ann_to_mask(segmentation, iscrowd=1))
    self.assertAllEqual(mask, blob)

  def test_mask_starting_with_object_pixel(self):
    blob = np.zeros((_H, _W), np.uint8)
    blob[:5, :7] = 1
    segmentation = {'size': [_H, _W], 'counts': _runs(blob)}
    self.assertEqual(segmentation['counts'][0], 0)
    mask, _ = coco_masks.segmentation_to_mask(segmentation, _H, _W)
    self.assertAllEqual(mask, blob)

  def test_compressed_rle_equals_ann_to_mask(self):
    blob = _blob(2)
    rle = mask_api.encode(np.asfortranarray(blob))
    segmentation = {'size': rle['size'], 'counts': rle['counts'].decode()}
    mask, _ = coco_masks.segmentation_to_mask(segmentation, _H, _W)
    self.assertAllEqual(mask, _ann_to_mask(segmentation))
    self.assertAllEqual(mask, blob)

  def test_rle_string_counts_are_pycocotools_runs(self):
    for seed in range(30):
      rng = np.random.default_rng(seed)
      h, w = (int(v) for v in rng.integers(1, 60, 2))
      mask = (rng.uniform(size=(h, w)) < rng.uniform()).astype(np.uint8)
      if seed % 3 == 0:
        mask = np.repeat(np.repeat(mask[:3, :3], 20, 0), 20, 1)[:h, :w]
        h, w = mask.shape
      encoded = mask_api.encode(np.asfortranarray(mask))['counts']
      runs = coco_masks.rle_string_counts(encoded)
      self.assertEqual(sum(runs), h * w)
      self.assertEqual(runs, _runs(mask))

  def test_degenerate_polygons_are_left_out_and_counted(self):
    good = [3, 4, 30, 2, 41, 30, 8, 33]
    mask, degenerate = coco_masks.segmentation_to_mask(
        [good, [10, 10, 20, 20]], _H, _W)
    self.assertEqual(degenerate, 1)
    self.assertAllEqual(mask, _ann_to_mask([good]))

  @parameterized.named_parameters(
      ('none', None, coco_masks.MISSING, 'no segmentation'),
      ('empty_list', [], coco_masks.MISSING, 'no segmentation'),
      ('odd', [[1, 2, 3, 4, 5, 6, 7]], coco_masks.MALFORMED, 'odd number'),
      ('nan', [[1, 2, 3, math.nan, 5, 6]], coco_masks.MALFORMED, 'NaN'),
      ('only_box_like', [[1, 2, 10, 20]], coco_masks.MALFORMED,
       'fewer than 3 points'),
      ('strings', [['a', 'b']], coco_masks.MALFORMED, 'list of numbers'),
      ('number', 7, coco_masks.MALFORMED, 'list of polygons or an RLE'),
      ('rle_size', {'size': [10, 10], 'counts': [100]},
       coco_masks.SIZE_MISMATCH, 'not the image size'),
      ('rle_too_long', {'size': [_H, _W], 'counts': [_H * _W, 1]},
       coco_masks.MALFORMED, 'add up to'),
      ('rle_negative', {'size': [_H, _W], 'counts': [_H * _W + 1, -1]},
       coco_masks.MALFORMED, 'negative'),
      ('rle_no_counts', {'size': [_H, _W]}, coco_masks.MALFORMED, 'counts'),
      ('rle_bad_string', {'size': [_H, _W], 'counts': 'a~\x01'},
       coco_masks.MALFORMED, 'outside the COCO format'),
      ('rle_short_string', {'size': [_H, _W], 'counts': '0P1'},
       coco_masks.MALFORMED, 'add up to'),
  )
  def test_bad_segmentations_are_named(self, segmentation, reason, text):
    with self.assertRaisesRegex(coco_masks.BadSegmentation, text) as raised:
      coco_masks.segmentation_to_mask(segmentation, _H, _W)
    self.assertEqual(raised.exception.reason, reason)

  def test_mask_pngs_encode_resize_and_report(self):
    blob = _blob(3)
    results = coco_masks.mask_pngs(
        [{'size': [_H, _W], 'counts': _runs(blob)}, None], (_H, _W),
        (2 * _H, 2 * _W))
    png = np.asarray(Image.open(io.BytesIO(results[0]['png'])))
    self.assertEqual(png.shape, (2 * _H, 2 * _W))
    self.assertEqual(set(np.unique(png)), {0, 1})
    self.assertAllEqual(png[::2, ::2], blob)
    self.assertEqual(results[0]['pixels'], int(png.sum()))
    self.assertEqual(results[1]['reason'], coco_masks.MISSING)


if __name__ == '__main__':
  tf.test.main()
