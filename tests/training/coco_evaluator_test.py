"""Tests of the COCO evaluator: coordinates, ground truth from JSON or labels."""
import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from spinenet.training import coco_evaluator

# Two images of 200 x 100 (h x w) scaled by 0.64 into the model input.
SCALE = 0.64
GT = {  # image id -> [(category, [x, y, w, h])]
    7: [(1, [10.0, 20.0, 30.0, 40.0]), (2, [50.0, 100.0, 40.0, 60.0])],
    9: [(3, [5.0, 5.0, 80.0, 150.0])],
}


def _annotation_json(path):
  images = [{'id': i, 'file_name': f'{i}.jpg', 'height': 200, 'width': 100} for i in GT]
  anns = [{'id': k + 1, 'image_id': i, 'category_id': c, 'bbox': b,
           'area': b[2] * b[3], 'iscrowd': 0}
          for k, (i, c, b) in enumerate((i, c, b) for i in GT for c, b in GT[i])]
  cats = [{'id': c, 'name': f'c{c}'} for c in (1, 2, 3)]
  with open(path, 'w') as f:
    json.dump({'images': images, 'annotations': anns, 'categories': cats}, f)


def _batch(perfect=True, with_groundtruth=True, pad=1):
  """Detections in model-input pixels, as the eval step outputs them."""
  ids = list(GT)
  n = len(ids) + pad
  boxes = np.zeros([n, 5, 4], np.float32)
  scores = np.zeros([n, 5], np.float32)
  classes = np.zeros([n, 5], np.int32)
  num = np.zeros([n], np.int32)
  gt = {'boxes': -np.ones([n, 4, 4], np.float32), 'classes': -np.ones([n, 4], np.int32),
        'is_crowd': np.zeros([n, 4], bool), 'areas': -np.ones([n, 4], np.float32),
        'num_detections': np.zeros([n], np.int32), 'height': np.full([n], 200),
        'width': np.full([n], 100)}
  for i, image_id in enumerate(ids):
    for j, (c, (x, y, w, h)) in enumerate(GT[image_id]):
      yxyx = np.array([y, x, y + h, x + w], np.float32)
      shift = 0 if perfect else 0.3 * h
      boxes[i, j] = (yxyx + [shift, 0, shift, 0]) * SCALE
      scores[i, j] = 0.9
      classes[i, j] = c
      gt['boxes'][i, j] = yxyx
      gt['classes'][i, j] = c
      gt['areas'][i, j] = w * h
    num[i] = gt['num_detections'][i] = len(GT[image_id])
  info = np.tile(np.array([[200, 100], [128, 64], [SCALE, SCALE], [0, 0]],
                          np.float32), [n, 1, 1])
  out = {'source_id': np.array(ids + [0] * pad), 'image_info': info,
         'valid': np.array([True] * len(ids) + [False] * pad),
         'detection_boxes': boxes, 'detection_scores': scores,
         'detection_classes': classes, 'num_detections': num}
  if with_groundtruth:
    out['groundtruths'] = gt
  return out


class CocoEvaluatorTest(tf.test.TestCase):

  def test_perfect_detections_from_json(self):
    path = os.path.join(tempfile.mkdtemp(), "val.json")
    _annotation_json(path)
    evaluator = coco_evaluator.CocoEvaluator(path)
    evaluator.update(_batch(with_groundtruth=False))
    metrics = evaluator.result()
    self.assertAllClose(metrics['AP'], 1.0)
    self.assertAllClose(metrics['AP50'], 1.0)
    self.assertEqual(set(coco_evaluator.METRIC_NAMES), set(metrics))
    # Boxes are back in original pixels, COCO [x, y, w, h].
    first = evaluator.detections[0]
    self.assertAllClose(first['bbox'], GT[7][0][1], atol=1e-4)

  def test_groundtruth_rebuilt_from_labels_matches_json(self):
    path = os.path.join(tempfile.mkdtemp(), "val.json")
    _annotation_json(path)
    for perfect in (True, False):
      from_json = coco_evaluator.CocoEvaluator(path)
      from_labels = coco_evaluator.CocoEvaluator(None, per_category=True)
      from_json.update(_batch(perfect, with_groundtruth=False))
      from_labels.update(_batch(perfect))
      a, b = from_json.result(), from_labels.result()
      for name in coco_evaluator.METRIC_NAMES:
        self.assertAllClose(a[name], b[name], msg=name)
      self.assertIn('AP/3', b)
    # Boxes shifted by 0.3 h have IoU 0.54 (0.7 / 1.3): counted at 0.5 only.
    self.assertAllClose(a['AP50'], 1.0)
    self.assertAllClose(a['AP75'], 0.0)

  def test_reset_and_empty(self):
    evaluator = coco_evaluator.CocoEvaluator()
    with self.assertRaisesRegex(ValueError, 'no evaluation image'):
      evaluator.result()
    batch = _batch()
    batch['num_detections'][:] = 0
    evaluator.update(batch)
    self.assertAllClose(evaluator.result()['AP'], 0.0)


MASK = 28  # box-relative mask cells


def _half_masks(which):
  """Box-relative masks: 'left' half of the box, 'right' half or 'wide' (left 3/4)."""
  m = np.zeros([MASK, MASK], np.float32)
  if which == 'left':
    m[:, :MASK // 2] = 1.0
  elif which == 'right':
    m[:, MASK // 2:] = 1.0
  else:
    m[:, :MASK * 3 // 4] = 1.0
  return m


def _segmentation_json(path):
  """The boxes of `GT` with the LEFT half of each box as its RLE segmentation."""
  _annotation_json(path)
  with open(path) as f:
    data = json.load(f)
  for ann in data['annotations']:
    x, y, w, h = (int(v) for v in ann['bbox'])
    mask = np.zeros([200, 100], np.uint8)
    mask[y:y + h, x:x + w // 2] = 1
    [rle] = coco_evaluator.encode_masks(mask[None])
    ann['segmentation'] = rle
    ann['area'] = float(mask.sum())
  with open(path, 'w') as f:
    json.dump(data, f)


def _mask_batch(which, with_groundtruth=False):
  out = _batch(with_groundtruth=with_groundtruth)
  n = out['detection_boxes'].shape[:2]
  out['detection_masks'] = np.tile(_half_masks(which), [*n, 1, 1])
  if with_groundtruth:
    out['groundtruths']['masks'] = np.tile(_half_masks('left'), [n[0], 4, 1, 1])
    areas = out['groundtruths']['areas']
    out['groundtruths']['areas'] = np.where(areas > 0, areas / 2, areas)
  return out


class CocoMaskEvaluatorTest(tf.test.TestCase):

  def test_paste_to_original_is_the_box_half(self):
    [mask] = coco_evaluator.paste_to_original(
        _half_masks('left')[None], np.array([[20.0, 10.0, 60.0, 40.0]]), 200, 100)
    want = np.zeros([200, 100], np.uint8)
    want[20:60, 10:25] = 1
    self.assertAllEqual(mask, want)

  def test_pasting_in_chunks_equals_pasting_one_by_one(self):
    rng = np.random.default_rng(0)
    masks = rng.random([40, MASK, MASK]).astype(np.float32)
    corners = rng.uniform(0, 80, [40, 2])
    boxes = np.concatenate([corners, corners + rng.uniform(2, 40, [40, 2])], 1)
    together = coco_evaluator.paste_to_original(masks, boxes, 90, 70)
    self.assertEqual(together.shape, (40, 90, 70))
    for i in (0, 15, 16, 39):
      self.assertAllEqual(together[i], coco_evaluator.paste_to_original(
          masks[i:i + 1], boxes[i:i + 1], 90, 70)[0])
    self.assertGreater(together.sum(), 0)

  def test_perfect_masks_give_mask_ap_1_and_wrong_ones_less(self):
    path = os.path.join(tempfile.mkdtemp(), 'val.json')
    _segmentation_json(path)
    results = {}
    for which in ('left', 'wide', 'right'):
      evaluator = coco_evaluator.CocoEvaluator(path, include_mask=True)
      evaluator.update(_mask_batch(which))
      results[which] = evaluator.result()
      self.assertEqual(set(coco_evaluator.METRIC_NAMES) |
                       set(coco_evaluator.MASK_METRIC_NAMES), set(results[which]))
      # The boxes are perfect whatever the masks: box metrics unchanged.
      self.assertAllClose(results[which]['AP'], 1.0)
    self.assertAllClose(results['left']['mask_AP'], 1.0)
    self.assertAllClose(results['left']['mask_AP50'], 1.0)
    # The left 3/4 of a box has IoU ~2/3 with its left half: counted at
    # thresholds 0.5-0.65 only.
    self.assertAllClose(results['wide']['mask_AP50'], 1.0)
    self.assertAllClose(results['wide']['mask_AP75'], 0.0)
    self.assertAllClose(results['wide']['mask_AP'], 0.4)
    self.assertAllClose(results['right']['mask_AP'], 0.0)

  def test_groundtruth_masks_from_labels_match_json(self):
    path = os.path.join(tempfile.mkdtemp(), 'val.json')
    _segmentation_json(path)
    for which in ('left', 'wide'):
      from_json = coco_evaluator.CocoEvaluator(path, include_mask=True)
      from_labels = coco_evaluator.CocoEvaluator(None, include_mask=True)
      from_json.update(_mask_batch(which))
      from_labels.update(_mask_batch(which, with_groundtruth=True))
      a, b = from_json.result(), from_labels.result()
      for name in coco_evaluator.MASK_METRIC_NAMES:
        self.assertAllClose(a[name], b[name], msg=f'{which} {name}')

  def test_mask_errors_name_what_is_missing(self):
    evaluator = coco_evaluator.CocoEvaluator(None, include_mask=True)
    with self.assertRaisesRegex(ValueError, 'detection_masks'):
      evaluator.update(_batch())
    evaluator.update(dict(_batch(), detection_masks=np.zeros([3, 5, MASK, MASK])))
    with self.assertRaisesRegex(ValueError, 'EVAL_ANNOTATIONS_JSON'):
      evaluator.result()


class MaskGroundTruthFromRecordsTest(tf.test.TestCase):
  """Ground-truth masks from the evaluation parser (no annotation JSON)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    from spinenet.data import builtin_dataset  # pylint: disable=g-import-not-at-top
    from spinenet.data import coco_converter  # pylint: disable=g-import-not-at-top
    from spinenet.data import decoder  # pylint: disable=g-import-not-at-top
    from spinenet.data import maskrcnn_parser  # pylint: disable=g-import-not-at-top
    from spinenet.data import pipeline  # pylint: disable=g-import-not-at-top
    root = tempfile.mkdtemp()
    paths = builtin_dataset.generate(os.path.join(root, 'shapes'), num_train=1,
                                     num_val=4, image_size=96, seed=2)
    coco_converter.convert_coco(paths['val_images'], paths['val_json'],
                                os.path.join(root, 'val'), num_workers=0,
                                include_masks=True)
    cls.val_json = paths['val_json']
    dataset = pipeline.build_dataset(
        os.path.join(root, 'val-*'),
        decoder.DetectionDecoder(decode_image=False, decode_masks=True).decode,
        maskrcnn_parser.MaskRCNNEvalParser(128, max_num_instances=10,
                                           mask_size=112),
        global_batch_size=4, training=False)
    cls.batches = [tf.nest.map_structure(lambda t: t.numpy(), labels)
                   for _, labels in dataset]

  def _outputs(self, labels, masks):
    """The ground truth as detections (model-input pixels), with `masks`."""
    gt = labels['groundtruths']
    scale = labels['image_info'][:, 2:3, :]  # [B, 1, 2]
    return {'source_id': labels['source_id'], 'image_info': labels['image_info'],
            'valid': labels['valid'], 'groundtruths': gt,
            'detection_boxes': gt['boxes'] * np.tile(scale, [1, 1, 2]),
            'detection_scores': np.where(gt['classes'] > 0, 0.9, 0.0),
            'detection_classes': np.maximum(gt['classes'], 0),
            'num_detections': gt['num_detections'], 'detection_masks': masks}

  def _evaluate(self, annotation_json, wrong=False):
    evaluator = coco_evaluator.CocoEvaluator(annotation_json, include_mask=True)
    for labels in self.batches:
      masks = labels['groundtruths']['masks'].copy()
      if wrong:  # only the left half of each object
        masks[..., masks.shape[-1] // 2:] = 0.0
      evaluator.update(self._outputs(labels, masks))
    return evaluator.result()

  def test_perfect_detections_score_mask_ap_1_and_wrong_masks_less(self):
    self.assertGreater(sum(int(b['groundtruths']['num_detections'].sum())
                           for b in self.batches), 4)
    for annotation_json in (None, self.val_json):
      # Against the masks rebuilt from the records, and against the JSON's
      # drawn masks: the crops are aligned with the objects.
      perfect = self._evaluate(annotation_json)
      self.assertGreater(perfect['AP'], 0.99)
      self.assertGreater(perfect['mask_AP'], 0.95, annotation_json)
      wrong = self._evaluate(annotation_json, wrong=True)
      self.assertGreater(wrong['AP'], 0.99)
      self.assertLess(wrong['mask_AP'], 0.5, annotation_json)


if __name__ == '__main__':
  tf.test.main()
