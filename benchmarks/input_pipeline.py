r"""Training-input throughput: spinenet's pipeline vs the Model Garden's parser.

Both read the same COCO-style TFRecords (built-in shapes at 640 px, written
once by `spinenet-create-coco-tfrecord`'s library function) and produce
training batches for a 640x640 input with SpineNet-49 anchors (levels 3-7, 3
scales, aspect ratios 0.5/1/2, anchor size 3), random flip and scale jitter
in the same range. The Model Garden side is its `TfExampleDecoder` +
`retinanet_input.Parser` in the pipeline its `InputReader` builds (parallel
interleave, shuffle, parallel map, batch, prefetch); ours is
`pipeline.build_dataset` with `TrainParser`, including its skip-bad-records
machinery. Rounds alternate between the two so a busy machine hurts both.

Usage:
  python benchmarks/input_pipeline.py [--num_images=256] [--rounds=2]

The last line printed is one JSON object:
  {"ours_images_per_s": ..., "model_garden_images_per_s": ..., "ratio": ...}
"""
import json
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

import spinenet  # noqa: F401  (sets TF_USE_LEGACY_KERAS)
import tensorflow as tf

from spinenet.data import builtin_dataset
from spinenet.data import coco_converter
from spinenet.data import detection_parser
from spinenet.data import pipeline

_NUM_IMAGES = flags.DEFINE_integer('num_images', 256, 'Images to generate.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 640,
                                   'Side of the generated images.')
_OUTPUT_SIZE = flags.DEFINE_integer('output_size', 640, 'Model input size.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Batch size.')
_WARMUP = flags.DEFINE_integer('warmup_batches', 10, 'Untimed batches.')
_BATCHES = flags.DEFINE_integer('timed_batches', 40, 'Timed batches/round.')
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Alternating rounds per side.')
_SCALE_MIN = flags.DEFINE_float('scale_min', 0.1, 'Scale jitter minimum.')
_SCALE_MAX = flags.DEFINE_float('scale_max', 2.0, 'Scale jitter maximum.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Reuse records here (written if missing); default: a '
    'temporary directory.')

_ANCHORS = dict(min_level=3, max_level=7, num_scales=3,
                aspect_ratios=[0.5, 1.0, 2.0], anchor_size=3.0)


def _write_records(data_dir):
  pattern = os.path.join(data_dir, 'records', 'train-*-of-*.tfrecord')
  if tf.io.gfile.glob(pattern):
    return pattern
  paths = builtin_dataset.generate(
      os.path.join(data_dir, 'images'), num_train=_NUM_IMAGES.value,
      num_val=0, image_size=_IMAGE_SIZE.value, seed=0)
  coco_converter.convert_coco(
      paths['train_images'], paths['train_json'],
      os.path.join(data_dir, 'records', 'train'), num_shards=4,
      num_workers=2)
  return pattern


def _ours(pattern):
  parser = detection_parser.TrainParser(
      _OUTPUT_SIZE.value, aug_rand_hflip=True,
      aug_scale_min=_SCALE_MIN.value, aug_scale_max=_SCALE_MAX.value,
      **_ANCHORS)
  return pipeline.build_dataset(
      pattern, pipeline.make_parser_fn(parser), _BATCH_SIZE.value,
      is_training=True)


def _model_garden(pattern):
  # Imported here: the Model Garden is a reference, not a dependency of ours.
  from official.vision.dataloaders import retinanet_input  # pylint: disable=g-import-not-at-top
  from official.vision.dataloaders import tf_example_decoder  # pylint: disable=g-import-not-at-top
  decoder = tf_example_decoder.TfExampleDecoder()
  parser = retinanet_input.Parser(
      output_size=[_OUTPUT_SIZE.value] * 2, aug_rand_hflip=True,
      aug_scale_min=_SCALE_MIN.value, aug_scale_max=_SCALE_MAX.value,
      dtype='float32', **_ANCHORS)
  parse = parser.parse_fn(is_training=True)
  files = sorted(tf.io.gfile.glob(pattern))
  ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files)).repeat()
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=len(files),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  ds = ds.shuffle(1000)
  ds = ds.map(lambda s: parse(decoder.decode(s)),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  return ds.batch(_BATCH_SIZE.value, drop_remainder=True).prefetch(
      tf.data.AUTOTUNE)


def _time(iterator):
  for _ in range(_WARMUP.value):
    next(iterator)
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(iterator)
  return _BATCHES.value * _BATCH_SIZE.value / (time.perf_counter() - start)


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    pattern = _write_records(_DATA_DIR.value or tmp)
    rates = {'ours': [], 'model_garden': []}
    iterators = {'ours': iter(_ours(pattern)),
                 'model_garden': iter(_model_garden(pattern))}
    for r in range(_ROUNDS.value):
      for name in ('ours', 'model_garden'):
        rates[name].append(_time(iterators[name]))
        logging.info('round %d %s: %.1f images/s', r, name, rates[name][-1])
  ours = statistics.mean(rates['ours'])
  mg = statistics.mean(rates['model_garden'])
  print(f'training input, {_OUTPUT_SIZE.value}x{_OUTPUT_SIZE.value} output, '
        f'batch {_BATCH_SIZE.value}, scale jitter [{_SCALE_MIN.value}, '
        f'{_SCALE_MAX.value}], {os.cpu_count()} CPUs')
  print(f'{"pipeline":<14}{"images/s":>10}   rounds')
  for name, value in (('ours', ours), ('model_garden', mg)):
    rounds = ', '.join(f'{x:.1f}' for x in rates[name])
    print(f'{name:<14}{value:>10.1f}   {rounds}')
  print(json.dumps({'ours_images_per_s': round(ours, 2),
                    'model_garden_images_per_s': round(mg, 2),
                    'ratio': round(ours / mg, 3)}))


if __name__ == '__main__':
  app.run(main)
