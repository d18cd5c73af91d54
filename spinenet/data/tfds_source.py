"""TFDS detection datasets (`coco/2017`, `voc/2007`, ...) as an input source.

Beside TFRecords from `spinenet-create-coco-tfrecord`, a detection task can
read a prepared TensorFlow Datasets dataset (`tfds build coco/2017` or
`tfds.builder(name).download_and_prepare()` first). `load` returns this
pipeline's share of examples (images left encoded) and `TfdsDetectionDecoder`
turns each into the dict `decoder.DetectionDecoder` gives, so the same
parsers, pipeline and evaluation run on it.

Class indices are category ids, as in the records path:

* `coco/*`: TFDS numbers COCO's 80 categories 0..79 in the annotation
  file's order; they are mapped back to COCO's category ids (1..90 with
  gaps), so a COCO model keeps `num_classes = 91` and the ids of converted
  COCO records and COCO checkpoints.
* any other dataset (e.g. `voc/2007`): label `i` becomes category id
  `i + 1` (0 is background), as a COCO JSON of it numbers them, so
  `num_classes = number of labels + 1` (VOC: 21).

Objects marked `is_crowd` (COCO) or `is_difficult` (VOC) are crowd boxes:
dropped in training (or ignored, `crowd_as_ignore`) and ignored by the COCO
evaluation, as VOC's own evaluation ignores difficult objects.
"""
import os
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from spinenet.data import decoder as decoder_lib

# COCO 2017's 80 category ids in the annotation files' order (TFDS labels 0..79).
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
    23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64,
    65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88,
    89, 90)


def category_ids(name: str, num_labels: int) -> np.ndarray:
  """int32 `[num_labels]`: the category id of each TFDS label index.

  Args:
    name: TFDS name, e.g. 'coco/2017' or 'voc/2007'.
    num_labels: the dataset's `objects/label` class count.

  Raises:
    ValueError: a `coco/*` dataset without COCO's 80 labels.
  """
  if name.split('/')[0].split(':')[0] == 'coco':
    if num_labels != len(COCO_CATEGORY_IDS):
      raise ValueError(f'tfds_name={name!r}: expected COCO\'s 80 labels, the '
                       f'dataset has {num_labels}.')
    return np.array(COCO_CATEGORY_IDS, np.int32)
  return np.arange(1, num_labels + 1, dtype=np.int32)


def _label_feature(builder):
  features = builder.info.features
  if 'objects' not in features or 'bbox' not in features['objects'].keys():
    raise ValueError(
        f'tfds_name={builder.name!r} is not a detection dataset: it has no '
        f"'objects' with 'bbox' (features: {sorted(features.keys())}).")
  return features['objects']['label']


def label_map(builder) -> Dict[int, str]:
  """Category id -> name of a TFDS detection builder (see `category_ids`)."""
  label = _label_feature(builder)
  ids = category_ids(builder.info.full_name, label.num_classes)
  return {int(i): label.int2str(k) for k, i in enumerate(ids)}


class TfdsDetectionDecoder:
  """A TFDS detection example -> `decoder.DetectionDecoder`'s dict.

  Args:
    ids: the category id of each label index (`category_ids`).

  Call arguments of `decode`:
    example: dict of a TFDS detection dataset, with `image` left encoded
      (`tfds.decode.SkipDecoding()`) or decoded, and `objects` holding `bbox`
      (normalized ymin, xmin, ymax, xmax) and `label`; optional
      `objects/is_crowd`, `objects/is_difficult`, `objects/area`, `image/id`,
      `image/filename`.

  Returns of `decode`: `encoded_image` (or `image`), `source_id` (`image/id`,
  else the file name without extension), `height`, `width`,
  `groundtruth_boxes`, `groundtruth_classes` (category ids),
  `groundtruth_is_crowd`, `groundtruth_area` (pixels of the original image;
  box areas when the dataset has none).
  """

  def __init__(self, ids: Sequence[int]):
    self._ids = tf.constant(np.asarray(ids, np.int32))

  def decode(self, example):
    image = example['image']
    out = {}
    if image.dtype == tf.string:
      out['encoded_image'] = image
      hw = decoder_lib.image_shape(image)
    else:
      out['image'] = image
      hw = tf.shape(image)[:2]
    objects = example['objects']
    boxes = tf.cast(objects['bbox'], tf.float32)
    classes = tf.gather(self._ids, tf.cast(objects['label'], tf.int32))
    crowd = tf.zeros(tf.shape(classes), tf.bool)
    for key in ('is_crowd', 'is_difficult'):
      if key in objects:
        crowd = tf.logical_or(crowd, tf.cast(objects[key], tf.bool))
    hw_float = tf.cast(hw, tf.float32)
    box_area = ((boxes[:, 2] - boxes[:, 0]) * hw_float[0] *
                (boxes[:, 3] - boxes[:, 1]) * hw_float[1])
    area = tf.cast(objects['area'], tf.float32) if 'area' in objects else box_area
    if 'image/id' in example:
      source_id = tf.strings.as_string(example['image/id'])
    elif 'image/filename' in example:
      source_id = tf.strings.regex_replace(example['image/filename'], r'\.[^.]*$', '')
    else:
      source_id = tf.constant('')
    out.update(source_id=source_id, height=hw[0], width=hw[1],
               groundtruth_boxes=boxes, groundtruth_classes=classes,
               groundtruth_is_crowd=crowd, groundtruth_area=area)
    return out


def builder(name: str, data_dir: Optional[str] = None):
  """`tfds.builder(name, data_dir=...)`, with errors naming the option."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'tfds_name={name!r}: {e}') from None


def load(name: str, split: str, training: bool,
         input_context: Optional[tf.distribute.InputContext] = None,
         data_dir: Optional[str] = None, seed: Optional[int] = None):
  """This pipeline's share of a TFDS detection split, images encoded.

  Args:
    name: e.g. 'coco/2017', 'voc/2007'.
    split: e.g. 'train', 'validation', 'train[:10%]'.
    training: shuffle the files.
    input_context: `tf.distribute.InputContext` (TFDS shards the files).
    data_dir: TFDS data directory (None: TFDS's default).
    seed: file-shuffling seed.

  Returns:
    `(dataset of example dicts, TfdsDetectionDecoder, label map)`; give the
    dataset and `decoder.decode` to `pipeline.build_dataset`.

  Raises:
    ValueError: naming the dataset, if it is unknown, not prepared (run
      `tfds build NAME`), or not a detection dataset.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  b = builder(name, data_dir)
  labels = label_map(b)
  ids = category_ids(b.info.full_name, len(labels))
  read_config = tfds.ReadConfig(input_context=input_context, shuffle_seed=seed)
  try:
    dataset = b.as_dataset(split=split, shuffle_files=training,
                           decoders={'image': tfds.decode.SkipDecoding()},
                           read_config=read_config)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f'tfds_name={name!r}, split={split!r}: {e}. Prepare it first, e.g. '
        f'`tfds build {name} --data_dir={data_dir or os.path.expanduser("~/tensorflow_datasets")}`.'
    ) from None
  return dataset, TfdsDetectionDecoder(ids), labels
