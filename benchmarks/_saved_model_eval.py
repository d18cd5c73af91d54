"""COCO box AP of an exported detection SavedModel, on images and a COCO JSON.

Evaluates what serving answers (decoding, resizing, the network at the
export's precision, NMS, boxes in the image's pixels, category ids) with the
training evaluator (`spinenet.training.coco_evaluator`), so an export can be
checked against the AP training reported, or two exports against each other.
It sits beside the benchmarks (`benchmarks/serving_accuracy.py` uses it), not
in `spinenet.serving`, which imports nothing from training:

  from benchmarks import _saved_model_eval
  metrics = _saved_model_eval.evaluate_saved_model(
      'exports/shapes/1', 'shapes/val', 'shapes/annotations/val.json')
  metrics['AP']
"""
import json
import os
import time
from typing import Dict

from absl import logging
import numpy as np
import tensorflow as tf

from spinenet.serving import signatures as sig
from spinenet.training import coco_evaluator


def evaluate_saved_model(export_path: str, image_dir: str, annotation_json: str,
                         batch_size: int = 8) -> Dict[str, float]:
  """Runs the `serve_bytes` signature over a COCO split and scores it.

  Args:
    export_path: a SavedModel version directory of a detection export.
    image_dir: directory of the images named in `annotation_json`.
    annotation_json: COCO annotations (ground truth and image list).
    batch_size: images per call.

  Returns:
    COCO metrics (`coco_evaluator.METRIC_NAMES`, in [0, 1]).
  """
  predict = tf.saved_model.load(export_path).signatures[sig.IMAGE_BYTES]
  with tf.io.gfile.GFile(annotation_json) as f:
    images = json.load(f)['images']
  evaluator = coco_evaluator.CocoEvaluator(annotation_json)
  start = time.monotonic()
  for first in range(0, len(images), batch_size):
    batch = images[first:first + batch_size]
    data = []
    for image in batch:
      with tf.io.gfile.GFile(os.path.join(image_dir, image['file_name']), 'rb') as f:
        data.append(f.read())
    outputs = {k: v.numpy() for k, v in
               predict(**{sig.INPUT_KEYS[sig.IMAGE_BYTES]: tf.constant(data)}).items()}
    # Boxes are already in the image's pixels and classes are category ids:
    # a scale of 1 and no class map.
    info = np.zeros([len(batch), 4, 2], np.float32)
    info[:, 2, :] = 1.0
    evaluator.update({
        'source_id': np.array([image['id'] for image in batch]),
        'image_info': info,
        'detection_boxes': outputs[sig.DETECTION_BOXES],
        'detection_scores': outputs[sig.DETECTION_SCORES],
        'detection_classes': outputs[sig.DETECTION_CLASSES],
        'num_detections': outputs[sig.NUM_DETECTIONS],
    })
    done = first + len(batch)
    rate = done / max(time.monotonic() - start, 1e-9)
    logging.info('evaluated %d/%d images | %.1f images/s | ETA %.0f s', done,
                 len(images), rate, (len(images) - done) / rate)
  return evaluator.result()
