"""The demos' steps: generate data once, train and evaluate, export, predict.

`spinenet-demo` (spinenet/cli/demo.py) strings them together for each task;
`export_and_predict` is also a compact example of the serving API:

  result = export_and_predict(['experiments/demo_cpu.gin'], params,
                              'demo_output/model', 'demo_output/export',
                              'demo_output/shapes/val/000001.jpg',
                              'demo_output/prediction.png')
"""
import collections
import io
import json
import os
import random
import time
from typing import Callable, Dict, Sequence

from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf

from spinenet import config
from spinenet.data import builtin_classification
from spinenet.data import builtin_dataset
from spinenet.data import classification_input
from spinenet.data import coco_converter
from spinenet.serving import client
from spinenet.serving import export_lib
from spinenet.serving import predict_lib

DETECTION_GIN = 'experiments/demo_cpu.gin'
MASKRCNN_GIN = 'experiments/demo_maskrcnn_cpu.gin'
CLASSIFICATION_GIN = 'experiments/demo_classification_cpu.gin'
DETECTION_IMAGE_SIZE = 256  # generated shapes images
CLASSIFICATION_IMAGE_SIZE = 96  # generated images; the model sees 64 px crops
_DONE = '.complete'


def seed_everything(seed: int):
  """Seeds Python's, NumPy's and TensorFlow's global generators.

  Call before the model is built: its weight initializers draw from
  TensorFlow's global seed, so a seeded demo starts from the same weights
  every run (the data order and augmentation are seeded by
  `DataOptions.seed`).
  """
  logging.info('seeding Python, NumPy and TensorFlow with %d', seed)
  random.seed(seed)
  np.random.seed(seed)
  tf.random.set_seed(seed)


def generate_once(directory: str, generate: Callable[[], None]) -> None:
  """Calls `generate()` unless an earlier call completed for `directory`.

  A marker file in `directory` records completion, so an interrupted
  generation is redone and a finished one reused.
  """
  done = os.path.join(directory, _DONE)
  if os.path.exists(done):
    return
  start = time.monotonic()
  generate()
  os.makedirs(directory, exist_ok=True)
  open(done, 'w').close()
  logging.info('dataset ready in %.0f s', time.monotonic() - start)


def detection_data(output_dir: str, num_train: int, num_val: int,
                   include_masks: bool = False) -> Dict[str, str]:
  """The built-in shapes dataset (JPEGs + COCO JSON) and its TFRecords.

  Args:
    output_dir: the demo's directory.
    num_train: training images.
    num_val: validation images.
    include_masks: write the shapes' instance masks into the records
      (`image/object/mask`, for Mask R-CNN), under `records_masks/` so the
      RetinaNet records (`records/`) stay as they are.

  Returns:
    dict with `train_pattern`, `val_pattern` (TFRecord globs), `val_json`
    (COCO ground truth) and `val_images` (directory of the JPEGs).
  """
  data_dir = os.path.join(output_dir, 'shapes')
  records = os.path.join(output_dir,
                         'records_masks' if include_masks else 'records')

  def generate():
    generated = builtin_dataset.generate(data_dir, num_train=num_train,
                                         num_val=num_val,
                                         image_size=DETECTION_IMAGE_SIZE)
    for split in ('train', 'val'):
      coco_converter.convert_coco(
          generated[f'{split}_images'], generated[f'{split}_json'],
          os.path.join(records, split), num_shards=2,
          include_masks=include_masks)

  generate_once(records, generate)
  return {'train_pattern': os.path.join(records, 'train-*.tfrecord'),
          'val_pattern': os.path.join(records, 'val-*.tfrecord'),
          'val_json': os.path.join(data_dir, 'annotations', 'val.json'),
          'val_images': os.path.join(data_dir, 'val')}


def classification_data(output_dir: str, num_train: int, num_val: int) -> Dict[str, str]:
  """The built-in shapes classification dataset as ImageNet-format TFRecords.

  Returns:
    dict with `train_pattern`, `val_pattern` and `label_map`.
  """
  data_dir = os.path.join(output_dir, 'data')
  generate_once(data_dir, lambda: builtin_classification.generate(
      data_dir, num_train=num_train, num_val=num_val,
      image_size=CLASSIFICATION_IMAGE_SIZE))
  return {'train_pattern': os.path.join(data_dir, 'train-*.tfrecord'),
          'val_pattern': os.path.join(data_dir, 'val-*.tfrecord'),
          'label_map': os.path.join(data_dir, 'val.label_map.json')}


def train_and_evaluate(gin_file: str, gin_params: Sequence[str], model_dir: str) -> dict:
  """`spinenet-train --mode=train_and_eval` on one device; its result dict."""
  return config.train_from_config([gin_file], gin_params, mode='train_and_eval',
                                  model_dir=model_dir, strategy='one_device')


def busiest_image(annotations_json: str, image_dir: str) -> str:
  """The path of the image with the most objects (the first one if tied)."""
  with open(annotations_json) as f:
    coco = json.load(f)
  counts = collections.Counter(a['image_id'] for a in coco['annotations'])
  best = min(coco['images'], key=lambda im: (-counts[im['id']], im['id']))
  return os.path.join(image_dir, best['file_name'])


def write_samples(val_pattern: str, directory: str) -> None:
  """Copies the first validation image of each class to `directory` (JPEG)."""
  os.makedirs(directory, exist_ok=True)
  records = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(val_pattern)))
  written = set()
  for record in records:
    example = classification_input.decode_tf_example(record)
    label = int(example['label'])
    if label in written:
      continue
    name = builtin_classification.CLASS_NAMES[label]
    with open(os.path.join(directory, f'{label}_{name}.jpg'), 'wb') as f:
      f.write(example['image'].numpy())
    written.add(label)
    if len(written) == len(builtin_classification.CLASS_NAMES):
      break


def export_and_predict(gin_files: Sequence[str], gin_params: Sequence[str],
                       checkpoint: str, export_dir: str, image_path: str,
                       output_path: str, *, min_score: float = 0.3,
                       options: export_lib.ExportOptions = export_lib.ExportOptions()
                       ) -> dict:
  """Exports `checkpoint` as a new version under `export_dir`, predicts one image.

  Args:
    gin_files, gin_params: the training configuration (model and data).
    checkpoint: checkpoint prefix or model_dir (latest checkpoint).
    export_dir: model base path; a new numbered version is written.
    image_path: an image file to predict.
    output_path: where the annotated image is written (PNG or JPEG by
      extension).
    min_score: detections below it are not drawn or returned.
    options: `export_lib.ExportOptions`.

  Returns:
    dict with `export_path` (the version directory), `version`,
    `output_path`, `export_info` and the prediction's summary
    (`predict_lib.annotate`): `detections` (list of `{box, class, name,
    score}`, boxes ymin, xmin, ymax, xmax in pixels of the image) or
    `classes`.
  """
  exported = config.export_from_config(gin_files, gin_params, export_dir,
                                       checkpoint=checkpoint, options=options)
  with open(image_path, 'rb') as f:
    encoded = f.read()
  [prediction] = client.LocalPredictor(exported.path).predict([encoded])
  image = np.asarray(Image.open(io.BytesIO(encoded)).convert('RGB'))
  drawn, info = predict_lib.annotate(image, prediction, min_score)
  Image.fromarray(drawn).save(output_path)
  return dict(export_path=exported.path, version=exported.version,
              output_path=output_path, export_info=exported.info, **info)


def print_report(lines: Sequence[str]) -> None:
  """Prints the closing summary between two rules."""
  print('\n'.join(['', '=' * 64, *lines, '=' * 64]))
