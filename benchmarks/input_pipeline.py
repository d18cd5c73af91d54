r"""Training-input throughput: the training input path vs the Model Garden's parser.

Both read the same COCO-style TFRecords (built-in shapes at 640 px, written
once by `spinenet-create-coco-tfrecord`'s library function) and produce
training batches for a 640x640 input with SpineNet-49's anchors (levels 3-7,
3 scales, aspect ratios 0.5/1/2, anchor size 3), random flip and scale jitter
in the same range. Ours is exactly what training runs:
`RetinaNetTask.build_inputs(training=True)` of a SpineNet-49 task, i.e.
`pipeline.build_dataset` with the `TrainParser` the task builds from its
model (skip-bad-records machinery and per-example seeds included). The Model
Garden side is its `TfExampleDecoder` + `retinanet_input.Parser` (anchors
taken from the same task) in the pipeline its `InputReader` builds (parallel
interleave, shuffle, parallel map, batch, prefetch). Rounds alternate
between the two so a busy machine hurts both; each round runs a fresh
iterator (warm-up batches untimed) and stops it, so neither side works in
the background during the other's round.

Usage:
  python -m benchmarks.input_pipeline [--num_images=256] [--rounds=2]

The last line printed is one JSON object:
  {"ours_images_per_s": ..., "model_garden_images_per_s": ..., "ratio": ...,
   "ours_rounds": [...], "model_garden_rounds": [...], "env": {...}}
with `env` from `benchmarks._model_garden.env_summary()` (CPU model,
AVX-512 / AVX512-BF16 / AMX, threads, load average).
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

from benchmarks import _model_garden
from spinenet.data import builtin_dataset
from spinenet.data import coco_converter
from spinenet.modeling import registry
from spinenet.training import retinanet_task

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

_MODEL_ID = '49'
_NUM_CLASSES = 91


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


def _task(pattern):
  """The RetinaNet task training would run on `pattern`, its model built."""
  data = retinanet_task.DataOptions(
      file_pattern=pattern, global_batch_size=_BATCH_SIZE.value,
      aug_rand_hflip=True, aug_scale_min=_SCALE_MIN.value,
      aug_scale_max=_SCALE_MAX.value)
  task = retinanet_task.RetinaNetTask(
      lambda: registry.build_retinanet(_MODEL_ID, num_classes=_NUM_CLASSES,
                                       input_size=_OUTPUT_SIZE.value),
      train_data=data)
  task.build_model()  # the parser follows the model's size and anchors
  return task


def _our_dataset(task):
  return task.build_inputs(training=True)


def _model_garden_dataset(task):
  # Imported here: the Model Garden is a reference, not a dependency of ours.
  from official.vision.dataloaders import retinanet_input  # pylint: disable=g-import-not-at-top
  from official.vision.dataloaders import tf_example_decoder  # pylint: disable=g-import-not-at-top
  info, data = task.info, task.train_data
  decoder = tf_example_decoder.TfExampleDecoder()
  parser = retinanet_input.Parser(
      output_size=list(info.input_size), min_level=info.min_level,
      max_level=info.max_level, num_scales=info.num_scales,
      aspect_ratios=list(info.aspect_ratios), anchor_size=info.anchor_size,
      aug_rand_hflip=data.aug_rand_hflip, aug_scale_min=data.aug_scale_min,
      aug_scale_max=data.aug_scale_max, dtype='float32')
  parse = parser.parse_fn(is_training=True)
  files = sorted(tf.io.gfile.glob(data.file_pattern))
  ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files)).repeat()
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=len(files),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  ds = ds.shuffle(data.shuffle_buffer)
  ds = ds.map(lambda s: parse(decoder.decode(s)),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  return ds.batch(_BATCH_SIZE.value, drop_remainder=True).prefetch(
      tf.data.AUTOTUNE)


def _time(dataset):
  """Images/s of `dataset` after warm-up, on a fresh iterator.

  Each round starts its own iterator and drops it when done: an iterator
  left alive keeps filling its prefetch and parallel-map buffers in the
  background, which would steal the CPU from the other side's round and
  hand its own next round batches made earlier.
  """
  iterator = iter(dataset)
  for _ in range(_WARMUP.value):
    next(iterator)
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(iterator)
  rate = _BATCHES.value * _BATCH_SIZE.value / (time.perf_counter() - start)
  del iterator
  return rate


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    pattern = _write_records(_DATA_DIR.value or tmp)
    task = _task(pattern)
    rates = {'ours': [], 'model_garden': []}
    datasets = {'ours': _our_dataset(task),
                'model_garden': _model_garden_dataset(task)}
    for r in range(_ROUNDS.value):
      for name in ('ours', 'model_garden'):
        rates[name].append(_time(datasets[name]))
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
                    'ratio': round(ours / mg, 3),
                    'ours_rounds': [round(x, 2) for x in rates['ours']],
                    'model_garden_rounds': [round(x, 2)
                                            for x in rates['model_garden']],
                    'env': _model_garden.env_summary()}))

if __name__ == '__main__':
  app.run(main)
