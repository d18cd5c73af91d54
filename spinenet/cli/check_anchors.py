r"""Checks a detection dataset's boxes against a model's anchors.

Usage:
  spinenet-check-anchors --gin_file=experiments/finetune_spinenet49_custom.gin \
    --coco_json=my_data/annotations/train.json
  spinenet-check-anchors --gin_file=experiments/demo_cpu.gin \
    --file_pattern='records/train-*.tfrecord'
  spinenet-check-anchors --gin_file=experiments/coco_spinenet49_tpu.gin \
    --tfds_name=coco/2017 --tfds_split=validation --max_images=2000

(also `python -m spinenet.cli.check_anchors ...`). The anchors (input size,
levels, anchor size, scales, aspect ratios) are those of the experiment's
model and the threshold its training `DataOptions.match_threshold`; `--gin_param`
bindings apply as in training. Without a source flag the experiment's own
training data is read. Prints the box-size distribution, the share of boxes
no anchor reaches at the match threshold (and why) and that share under
alternative settings; see spinenet/data/anchor_coverage.py and
docs/custom_data.md.
"""
import json
import re

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from spinenet import config
from spinenet.data import anchor_coverage
from spinenet.data import decoder as decoder_lib
from spinenet.data import pipeline
from spinenet.data import tfds_source

_GIN_FILE = flags.DEFINE_multi_string(
    'gin_file', [], 'Gin file(s) of the experiment (repeatable).')
_GIN_PARAM = flags.DEFINE_multi_string('gin_param', [], 'Gin binding(s).')
# Not --annotations_json: absl flags are process-wide, and that name belongs
# to spinenet-create-coco-tfrecord, imported beside this module by tests.
_COCO_JSON = flags.DEFINE_string('coco_json', None,
                                 'A COCO detection JSON to check.')
_FILE_PATTERN = flags.DEFINE_string('file_pattern', None,
                                    'TFRecords to check (comma-separated globs).')
_TFDS_NAME = flags.DEFINE_string('tfds_name', None,
                                 "A prepared TFDS detection dataset, e.g. 'coco/2017'.")
_TFDS_SPLIT = flags.DEFINE_string('tfds_split', 'train', 'Its split.')
_TFDS_DATA_DIR = flags.DEFINE_string('tfds_data_dir', None, 'TFDS data directory.')
_MAX_IMAGES = flags.DEFINE_integer('max_images', None,
                                   'Check at most this many images.', lower_bound=1)
_WARN_SHARE = flags.DEFINE_float('warn_share', 0.1,
                                 'Warn above this share of unreached boxes.')
_JSON = flags.DEFINE_string('json_output', None, 'Also write the report as JSON.')

# Placeholders for required macros the check does not need.
_PLACEHOLDERS = {'NUM_CLASSES': '2'}
_REQUIRED = re.compile(r'gin macro (\w+) is required but not set')


def load_task(gin_files, gin_params):
  """The experiment's task; required macros the anchors do not need get
  placeholders (file patterns, the init checkpoint, the class count)."""
  params = list(gin_params)
  for _ in range(8):
    try:
      task, _, _ = config.load_experiment(gin_files, params)
      return task
    except config.ConfigError as e:
      missing = _REQUIRED.search(str(e))
      if not missing:
        raise
      name = missing.group(1)
      params.insert(0, f"{name} = {_PLACEHOLDERS.get(name, repr(''))}")
      logging.info('%s is not set; not needed for the check', name)
  raise config.ConfigError('too many required gin macros unset')


def settings_of(task) -> anchor_coverage.AnchorSettings:
  """Anchor settings of a built `RetinaNetTask`."""
  info = task.info
  return anchor_coverage.AnchorSettings(
      tuple(info.input_size), info.min_level, info.max_level, info.num_scales,
      tuple(info.aspect_ratios), info.anchor_size,
      task.train_data.match_threshold)


def _decoded(dataset, decode, limit):
  dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
  keys = ('height', 'width', 'groundtruth_boxes', 'groundtruth_is_crowd')
  dataset = dataset.map(lambda d: {k: d[k] for k in keys})
  if limit:
    dataset = dataset.take(limit)
  return anchor_coverage.images_from_decoded(dataset.as_numpy_iterator())


def read_images(task, annotations_json=None, file_pattern=None, tfds_name=None,
                tfds_split='train', tfds_data_dir=None, max_images=None):
  """`anchor_coverage.coverage` input from the flags, else the task's train data."""
  data = task.train_data
  if not (annotations_json or file_pattern or tfds_name):
    file_pattern = data.file_pattern or None
    tfds_name, tfds_split = data.tfds_name or None, data.tfds_split
    tfds_data_dir = data.tfds_data_dir
    if not (file_pattern or tfds_name):
      raise app.UsageError('No data: pass --coco_json, --file_pattern or '
                           '--tfds_name, or bind TRAIN_FILE_PATTERN.')
  if annotations_json:
    images = anchor_coverage.images_from_coco_json(annotations_json)
    return images[:max_images] if max_images else images, annotations_json
  if file_pattern:
    files = pipeline.list_files(file_pattern, '--file_pattern')
    decoder = decoder_lib.DetectionDecoder(decode_image=False)
    return (_decoded(tf.data.TFRecordDataset(files), decoder.decode, max_images),
            file_pattern)
  dataset, decoder, _ = tfds_source.load(tfds_name, tfds_split, False,
                                         data_dir=tfds_data_dir)
  return (_decoded(dataset, decoder.decode, max_images),
          f'{tfds_name} {tfds_split}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not _GIN_FILE.value:
    raise app.UsageError('--gin_file is required (the experiment whose anchors '
                         'to check), e.g. --gin_file=experiments/demo_cpu.gin')
  try:
    task = load_task(_GIN_FILE.value, _GIN_PARAM.value)
    task.build_model()
    images, source = read_images(
        task, _COCO_JSON.value, _FILE_PATTERN.value, _TFDS_NAME.value,
        _TFDS_SPLIT.value, _TFDS_DATA_DIR.value, _MAX_IMAGES.value)
  except (config.ConfigError, ValueError) as e:
    raise app.UsageError(str(e)) from None
  report = anchor_coverage.coverage(images, settings_of(task), _WARN_SHARE.value)
  print(f'data: {source}')
  print(report.text())
  if _JSON.value:
    with tf.io.gfile.GFile(_JSON.value, 'w') as f:
      json.dump(report.as_dict(), f, indent=1)


def run():
  app.run(main)


if __name__ == '__main__':
  run()
