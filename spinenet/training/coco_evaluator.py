"""COCO box and mask metrics with pycocotools, on host.

Detections arrive in pixels of the model input; `update` maps them back to
the original image (divide by `image_info[2]`, the resize scale), converts
to COCO `[x, y, width, height]` and the dataset's category ids. Ground truth
is the annotation JSON when given, or else rebuilt from the evaluation
labels (the boxes, classes, crowd flags and areas the TFRecords hold).

With `include_mask`, each detection's box-relative mask (`detection_masks`,
a Mask R-CNN's `[M, M]` probabilities over its box) is pasted into the
original image frame (`ops.mask_ops.paste_masks` over the box in original
pixels), thresholded at 0.5 and run-length encoded; `result` then adds the
`segm` metrics under `mask_<name>` (`mask_AP`, `mask_AP50`, ...) beside the
unchanged box metrics.
"""
import contextlib
import io
import json
from typing import Dict, Optional

from absl import logging
import numpy as np
from pycocotools import coco
from pycocotools import cocoeval
from pycocotools import mask as mask_api

from spinenet.ops import mask_ops
from spinenet.training import base_task

# COCOeval.stats order.
METRIC_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
                'ARmax1', 'ARmax10', 'ARmax100', 'ARs', 'ARm', 'ARl')
MASK_PREFIX = 'mask_'
_PASTE_CHUNK = 16  # masks pasted at once on host
MASK_METRIC_NAMES = tuple(MASK_PREFIX + name for name in METRIC_NAMES)


def detections_to_coco(image_ids, boxes, scores, classes, num_detections,
                       scales, class_to_category=None):
  """Model detections of a batch -> COCO result dicts in original pixels.

  Args:
    image_ids: int `[B]`.
    boxes: float `[B, N, 4]`, ymin, xmin, ymax, xmax in model-input pixels.
    scores: float `[B, N]`.
    classes: int `[B, N]`, class indices.
    num_detections: int `[B]`.
    scales: float `[B, 2]`, `(y_scale, x_scale)` from original to input.
    class_to_category: optional dict class index -> category id (default:
      the identity).

  Returns:
    list of `{'image_id', 'category_id', 'bbox': [x, y, w, h], 'score'}`.
  """
  results = []
  for i, image_id in enumerate(image_ids):
    n = int(num_detections[i])
    if not n:
      continue
    b = np.asarray(boxes[i, :n], np.float64) / np.tile(scales[i], 2)
    for box, score, cls in zip(b, scores[i, :n], classes[i, :n]):
      ymin, xmin, ymax, xmax = box
      category = int(cls) if class_to_category is None else class_to_category[int(cls)]
      results.append({
          'image_id': int(image_id), 'category_id': category,
          'bbox': [float(xmin), float(ymin), float(xmax - xmin), float(ymax - ymin)],
          'score': float(score)})
  return results


def encode_masks(binary_masks):
  """COCO run-length encodings of 0/1 masks.

  Args:
    binary_masks: uint8 or bool `[N, H, W]`.

  Returns:
    list of N `{'size': [H, W], 'counts': str}` (JSON-serializable).
  """
  masks = np.asarray(binary_masks, np.uint8)
  if not len(masks):
    return []
  encoded = mask_api.encode(np.asfortranarray(np.transpose(masks, [1, 2, 0])))
  for rle in encoded:
    rle['counts'] = rle['counts'].decode('ascii')
  return encoded


def paste_to_original(masks, boxes, height, width):
  """Box-relative masks -> 0/1 masks of the original image.

  Args:
    masks: float `[N, M, M]` probabilities, each over its box.
    boxes: float `[N, 4]`, ymin, xmin, ymax, xmax in ORIGINAL image pixels.
    height, width: the original image size.

  Returns:
    uint8 `[N, height, width]`, 1 where the pasted probability > 0.5.
  """
  masks = np.asarray(masks, np.float32)
  boxes = np.asarray(boxes, np.float32)
  binary = np.zeros([len(masks), int(height), int(width)], np.uint8)
  # In chunks: 100 float32 masks of a 640 x 640 image would be 164 MB at once.
  for start in range(0, len(masks), _PASTE_CHUNK):
    end = start + _PASTE_CHUNK
    pasted = mask_ops.paste_masks(masks[start:end], boxes[start:end],
                                  int(height), int(width))
    binary[start:end] = mask_ops.binarize(pasted).numpy()
  return binary


def masks_to_coco(image_ids, boxes, masks, num_detections, scales, sizes):
  """Per detection the RLE of its mask pasted into the original image.

  Args:
    image_ids: int `[B]`.
    boxes: float `[B, N, 4]` model-input pixels (as `detections_to_coco`).
    masks: float `[B, N, M, M]` box-relative mask probabilities.
    num_detections: int `[B]`.
    scales: float `[B, 2]`, `(y_scale, x_scale)` from original to input.
    sizes: `[B, 2]` original `(height, width)`.

  Returns:
    list (the order of `detections_to_coco`) of RLE dicts.
  """
  encoded = []
  for i in range(len(image_ids)):
    n = int(num_detections[i])
    if not n:
      continue
    original = np.asarray(boxes[i, :n], np.float64) / np.tile(scales[i], 2)
    height, width = (int(round(float(v))) for v in sizes[i])
    encoded.extend(encode_masks(paste_to_original(masks[i, :n], original,
                                                  height, width)))
  return encoded


class CocoEvaluator(base_task.Evaluator):
  """Accumulates detections (and ground truth) and computes COCO metrics.

  Args:
    annotation_json: optional COCO annotation file of the evaluation split;
      None rebuilds the ground truth from the labels passed to `update`.
    label_map: optional dict category id -> name (names in the rebuilt
      ground truth).
    class_to_category: optional dict class index -> category id.
    per_category: also report `AP/<name>` for each category.
    include_mask: also evaluate `segm` (instance masks): `update` needs
      `detection_masks` and the ground truth needs segmentations (the
      annotation JSON, or `groundtruths['masks']`: `[B, M, S, S]` 0/1 masks
      over each ground-truth box, pasted like the detections').

  `update` takes a dict of NumPy arrays (one global batch): `source_id`
  `[B]`, `image_info` `[B, 4, 2]`, `valid` `[B]` (optional),
  `detection_boxes`, `detection_scores`, `detection_classes`,
  `num_detections`, and, without `annotation_json`, `groundtruths` (see
  `data.detection_parser.EvalParser`).
  """

  def __init__(self, annotation_json: Optional[str] = None,
               label_map: Optional[Dict[int, str]] = None,
               class_to_category: Optional[Dict[int, int]] = None,
               per_category: bool = False, include_mask: bool = False):
    self._annotation_json = annotation_json
    self._include_mask = include_mask
    self._label_map = dict(label_map or {})
    self._class_to_category = class_to_category
    self._per_category = per_category
    self._gt_api = None
    if annotation_json:
      with contextlib.redirect_stdout(io.StringIO()):
        self._gt_api = coco.COCO(annotation_json)
    self.reset()

  def reset(self):
    self._detections = []
    self._segmentations = []
    self._gt_images = {}
    self._gt_annotations = []

  @property
  def detections(self):
    """COCO result dicts accumulated so far."""
    return list(self._detections)

  def update(self, outputs):
    valid = np.asarray(outputs.get('valid', np.ones_like(outputs['source_id'], bool)),
                       bool)
    take = lambda x: np.asarray(x)[valid]  # noqa: E731
    image_ids = take(outputs['source_id'])
    info = take(outputs['image_info'])
    self._detections.extend(detections_to_coco(
        image_ids, take(outputs['detection_boxes']),
        take(outputs['detection_scores']), take(outputs['detection_classes']),
        take(outputs['num_detections']), info[:, 2, :], self._class_to_category))
    if self._include_mask:
      if 'detection_masks' not in outputs:
        raise ValueError('CocoEvaluator(include_mask=True).update: the outputs '
                         'have no `detection_masks` (is the model a Mask R-CNN?).')
      self._segmentations.extend(masks_to_coco(
          image_ids, take(outputs['detection_boxes']),
          take(outputs['detection_masks']), take(outputs['num_detections']),
          info[:, 2, :], info[:, 0, :]))
    if self._gt_api is None:
      gt = {k: take(v) for k, v in outputs['groundtruths'].items()}
      self._add_groundtruths(image_ids, gt)

  def _add_groundtruths(self, image_ids, gt):
    for i, image_id in enumerate(image_ids):
      image_id = int(image_id)
      if image_id in self._gt_images:
        continue
      self._gt_images[image_id] = {'id': image_id, 'height': int(gt['height'][i]),
                                   'width': int(gt['width'][i])}
      for j in range(int(gt['num_detections'][i])):
        ymin, xmin, ymax, xmax = (float(v) for v in gt['boxes'][i, j])
        category = int(gt['classes'][i, j])
        annotation = {
            'id': len(self._gt_annotations) + 1, 'image_id': image_id,
            'category_id': category,
            'bbox': [xmin, ymin, xmax - xmin, ymax - ymin],
            'area': float(gt['areas'][i, j]),
            'iscrowd': int(bool(gt['is_crowd'][i, j]))}
        if 'masks' in gt:
          [annotation['segmentation']] = encode_masks(paste_to_original(
              gt['masks'][i, j:j + 1], gt['boxes'][i, j:j + 1],
              gt['height'][i], gt['width'][i]))
        self._gt_annotations.append(annotation)

  def _groundtruth_api(self):
    if self._gt_api is not None:
      return self._gt_api
    categories = set(self._label_map) | {a['category_id'] for a in self._gt_annotations}
    dataset = {
        'images': list(self._gt_images.values()),
        'annotations': self._gt_annotations,
        'categories': [{'id': c, 'name': self._label_map.get(c, str(c))}
                       for c in sorted(categories)],
    }
    api = coco.COCO()
    api.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
      api.createIndex()
    return api

  def result(self) -> Dict[str, float]:
    """COCO metrics (`METRIC_NAMES`, each in [0, 1]; -1 when undefined).

    With `include_mask`, also `MASK_METRIC_NAMES` (the `segm` evaluation).
    """
    gt_api = self._groundtruth_api()
    image_ids = (sorted({d['image_id'] for d in self._detections} |
                        set(self._gt_images)) if self._gt_api is None
                 else sorted(gt_api.getImgIds()))
    if not image_ids:
      raise ValueError('CocoEvaluator.result(): no evaluation image was seen; '
                       'is the evaluation file pattern empty?')
    known = set(gt_api.getImgIds())
    keep = [d['image_id'] in known for d in self._detections]
    detections = [d for d, k in zip(self._detections, keep) if k]
    if len(detections) < len(self._detections):
      logging.warning('%d detections are for images not in the ground truth',
                      len(self._detections) - len(detections))
    metrics = self._evaluate(gt_api, detections, image_ids, 'bbox', '')
    if self._include_mask:
      if any('segmentation' not in a for a in gt_api.dataset['annotations']):
        raise ValueError(
            'CocoEvaluator(include_mask=True): the ground truth has annotations '
            'without `segmentation`; give the annotation JSON of the evaluation '
            'split (gin EVAL_ANNOTATIONS_JSON) or evaluation labels with '
            '`groundtruths.masks`.')
      segm = [{'image_id': d['image_id'], 'category_id': d['category_id'],
               'segmentation': rle, 'score': d['score']}
              for d, rle, k in zip(self._detections, self._segmentations, keep) if k]
      metrics.update(self._evaluate(gt_api, segm, image_ids, 'segm', MASK_PREFIX))
    return metrics

  def _evaluate(self, gt_api, detections, image_ids, iou_type, prefix):
    """One pycocotools evaluation; metrics named `prefix + METRIC_NAMES`."""
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
      dt_api = gt_api.loadRes(detections) if detections else coco.COCO()
      if not detections:
        dt_api.dataset = {'images': [], 'annotations': [], 'categories': []}
        dt_api.createIndex()
      evaluator = cocoeval.COCOeval(gt_api, dt_api, iouType=iou_type)
      evaluator.params.imgIds = image_ids
      evaluator.evaluate()
      evaluator.accumulate()
      evaluator.summarize()
    logging.info('COCO %s evaluation of %d images, %d detections:\n%s',
                 iou_type, len(image_ids), len(detections), log.getvalue())
    metrics = {prefix + name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats)}
    if self._per_category:
      precision = evaluator.eval['precision']  # [T, R, K, A, M]
      for k, category in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        name = gt_api.cats[category]['name']
        metrics[f'{prefix}AP/{name}'] = (float(np.mean(p[p > -1])) if np.any(p > -1)
                                         else -1.0)
    return metrics


def write_metrics(path: str, metrics: Dict[str, float], step: int):
  """Writes `{"step": ..., "AP": ...}` as JSON (local or `gs://`)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump(dict(step=int(step), **metrics), f, indent=1, sort_keys=True)
