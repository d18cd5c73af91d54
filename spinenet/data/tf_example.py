"""tf.Example keys for detection data, and a builder for one example.

The keys are the ones the TF Object Detection API and the Model Garden read,
so shards written here can be fed to either. Boxes in a tf.Example are
normalized to `[0, 1]` by the image height and width; everywhere else in the
library they are pixels.
"""
from typing import Optional, Sequence

import tensorflow as tf

# === Image ===
IMAGE_ENCODED = 'image/encoded'
IMAGE_FORMAT = 'image/format'
IMAGE_HEIGHT = 'image/height'
IMAGE_WIDTH = 'image/width'
IMAGE_SOURCE_ID = 'image/source_id'
IMAGE_FILENAME = 'image/filename'

# === Objects (one value per box) ===
BBOX_YMIN = 'image/object/bbox/ymin'
BBOX_XMIN = 'image/object/bbox/xmin'
BBOX_YMAX = 'image/object/bbox/ymax'
BBOX_XMAX = 'image/object/bbox/xmax'
CLASS_LABEL = 'image/object/class/label'
CLASS_TEXT = 'image/object/class/text'
IS_CROWD = 'image/object/is_crowd'
AREA = 'image/object/area'
# One PNG per object: single-channel uint8, 0/1, at the full image size.
MASK = 'image/object/mask'

BOX_KEYS = (BBOX_YMIN, BBOX_XMIN, BBOX_YMAX, BBOX_XMAX)


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(values):
  return tf.train.Feature(
      float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _ints(values):
  return tf.train.Feature(
      int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def build_detection_example(encoded_image: bytes,
                            image_format: str,
                            height: int,
                            width: int,
                            source_id: str,
                            boxes: Sequence[Sequence[float]] = (),
                            classes: Sequence[int] = (),
                            is_crowd: Optional[Sequence[int]] = None,
                            areas: Optional[Sequence[float]] = None,
                            class_names: Optional[Sequence[str]] = None,
                            filename: str = '',
                            masks: Optional[Sequence[bytes]] = None):
  """Builds a detection `tf.train.Example`.

  Args:
    encoded_image: bytes of a JPEG or PNG file with 3 channels.
    image_format: `'jpeg'` or `'png'`.
    height: image height in pixels.
    width: image width in pixels.
    source_id: image id as a string (for COCO the decimal image id).
    boxes: N boxes `(ymin, xmin, ymax, xmax)` normalized to `[0, 1]`.
    classes: N dataset category ids.
    is_crowd: N 0/1 flags. Defaults to all 0.
    areas: N object areas in pixels of the original image (COCO's `area`).
      Defaults to the box areas.
    class_names: N category names, written as `image/object/class/text`.
    filename: the image's file name, for humans.
    masks: optional N instance masks, each the bytes of a single-channel
      8-bit PNG of the full image size holding 0 and 1 (`coco_masks.
      encode_png`), written as `image/object/mask`. None: no mask key.

  Returns:
    `tf.train.Example`.

  Raises:
    ValueError: if the per-box lists disagree in length.
  """
  n = len(boxes)
  if is_crowd is None:
    is_crowd = [0] * n
  if areas is None:
    areas = [(b[2] - b[0]) * height * (b[3] - b[1]) * width for b in boxes]
  lengths = {'boxes': n, 'classes': len(classes), 'is_crowd': len(is_crowd),
             'areas': len(areas)}
  if class_names is not None:
    lengths['class_names'] = len(class_names)
  if masks is not None:
    lengths['masks'] = len(masks)
  if len(set(lengths.values())) != 1:
    raise ValueError(
        f'source_id={source_id}: per-box lists must have one entry per box. '
        f'Received lengths: {lengths}')
  feature = {
      IMAGE_ENCODED: _bytes([encoded_image]),
      IMAGE_FORMAT: _bytes([image_format.encode()]),
      IMAGE_HEIGHT: _ints([height]),
      IMAGE_WIDTH: _ints([width]),
      IMAGE_SOURCE_ID: _bytes([str(source_id).encode()]),
      IMAGE_FILENAME: _bytes([filename.encode()]),
      CLASS_LABEL: _ints(classes),
      IS_CROWD: _ints(is_crowd),
      AREA: _floats(areas),
  }
  for i, key in enumerate(BOX_KEYS):
    feature[key] = _floats([b[i] for b in boxes])
  if class_names is not None:
    feature[CLASS_TEXT] = _bytes([c.encode() for c in class_names])
  if masks is not None:
    feature[MASK] = _bytes(masks)
  return tf.train.Example(features=tf.train.Features(feature=feature))
