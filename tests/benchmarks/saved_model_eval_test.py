"""COCO AP of a SavedModel's `serve_bytes` answers, on a fake export with known boxes.

The export is a small `tf.Module` with the serving contract's signature
(`spinenet.serving.signatures`): it decodes each image and answers one box
at the centre half of the image, in the image's pixels, category id 2. The
ground truth is written from the same rule, so the AP is 1 exactly when the
evaluator pairs each answer with its image id and reads boxes and classes as
the contract says; shifting or relabelling the ground truth must lower it.
"""
import io
import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from benchmarks import _saved_model_eval
from spinenet.serving import signatures as sig

_CATEGORY = 2
_MAX_DETECTIONS = 3
# Image ids out of order and sizes all different: a wrong id-to-answer pairing
# puts boxes on the wrong image.
_IMAGES = ((7, 96, 144), (3, 128, 64), (11, 150, 150))


def _centre_box(height, width):
  return [height / 4, width / 4, 3 * height / 4, 3 * width / 4]


class _CentreBoxExport(tf.Module):
  """Answers the centre half of every image, padded to `_MAX_DETECTIONS`."""

  @tf.function(input_signature=[sig.INPUT_SPECS[sig.IMAGE_BYTES]])
  def serve_bytes(self, image_bytes):
    def one(data):
      shape = tf.cast(tf.shape(tf.io.decode_png(data, channels=3))[:2], tf.float32)
      h, w = shape[0], shape[1]
      box = tf.stack([h / 4, w / 4, 3 * h / 4, 3 * w / 4])
      return tf.concat([box[None], tf.zeros([_MAX_DETECTIONS - 1, 4])], 0)
    boxes = tf.map_fn(one, image_bytes, fn_output_signature=tf.float32)
    batch = tf.shape(image_bytes)[0]
    scores = tf.tile(tf.constant([[0.9] + [0.0] * (_MAX_DETECTIONS - 1)]), [batch, 1])
    classes = tf.fill([batch, _MAX_DETECTIONS], float(_CATEGORY))
    return {sig.DETECTION_BOXES: boxes, sig.DETECTION_SCORES: scores,
            sig.DETECTION_CLASSES: classes,
            sig.NUM_DETECTIONS: tf.ones([batch], tf.float32)}


@pytest.fixture(scope='module')
def export_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('export') / '1')
  module = _CentreBoxExport()
  tf.saved_model.save(module, path, signatures={sig.IMAGE_BYTES: module.serve_bytes})
  return path


def _write_split(directory, shift=0.0, category=_CATEGORY):
  """PNGs and a COCO JSON whose one object per image is the centre box, moved."""
  os.makedirs(os.path.join(directory, 'images'))
  images, annotations = [], []
  rng = np.random.default_rng(0)
  for image_id, height, width in _IMAGES:
    name = f'{image_id}.png'
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)).save(buffer, 'PNG')
    with open(os.path.join(directory, 'images', name), 'wb') as f:
      f.write(buffer.getvalue())
    images.append({'id': image_id, 'file_name': name, 'height': height, 'width': width})
    ymin, xmin, ymax, xmax = _centre_box(height, width)
    dy, dx = shift * (ymax - ymin), shift * (xmax - xmin)
    annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                        'category_id': category, 'iscrowd': 0,
                        'bbox': [xmin + dx, ymin + dy, xmax - xmin, ymax - ymin],
                        'area': (xmax - xmin) * (ymax - ymin)})
  path = os.path.join(directory, 'annotations.json')
  with open(path, 'w') as f:
    json.dump({'images': images, 'annotations': annotations,
               'categories': [{'id': 1, 'name': 'a'}, {'id': 2, 'name': 'b'}]}, f)
  return os.path.join(directory, 'images'), path


@pytest.mark.parametrize('batch_size', [1, 2, 8])
def test_ap_is_one_when_the_answers_are_the_ground_truth(export_dir, tmp_path, batch_size):
  image_dir, annotations = _write_split(str(tmp_path))
  metrics = _saved_model_eval.evaluate_saved_model(export_dir, image_dir, annotations,
                                                   batch_size=batch_size)
  assert metrics['AP'] == pytest.approx(1.0)
  assert metrics['AP50'] == pytest.approx(1.0)


def test_ap_drops_when_boxes_move_or_classes_differ(export_dir, tmp_path):
  image_dir, annotations = _write_split(str(tmp_path / 'shifted'), shift=0.1)
  shifted = _saved_model_eval.evaluate_saved_model(export_dir, image_dir, annotations)
  # IoU 0.81 / 1.19 = 0.68: a match at IoU 0.5-0.65, none from 0.7 on.
  assert shifted['AP50'] == pytest.approx(1.0)
  assert shifted['AP'] == pytest.approx(0.4, abs=0.01)
  image_dir, annotations = _write_split(str(tmp_path / 'other'), category=1)
  other = _saved_model_eval.evaluate_saved_model(export_dir, image_dir, annotations)
  assert other['AP'] == pytest.approx(0.0)
