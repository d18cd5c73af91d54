r"""Predicts images with an exported model and writes them with results drawn.

Usage:
  # a SavedModel in this process
  spinenet-predict --target=exports/shapes --image='photos/*.jpg' --output_dir=out
  # TF Serving (or spinenet-serve) over REST
  spinenet-predict --target=http://127.0.0.1:8501 --model_name=shapes \
    --image=photo.jpg --output_dir=out
  # TF Serving over gRPC
  spinenet-predict --target=grpc://127.0.0.1:8500 --model_name=shapes \
    --image=photo.jpg --output_dir=out
  # a .tflite file of spinenet-export --format=tflite (TFLite interpreter, XNNPACK)
  spinenet-predict --target=exports/shapes_tflite/model_int8.tflite \
    --image='photos/*.jpg' --output_dir=out [--num_threads=2] [--noxnnpack]

Writes OUTPUT_DIR/<name>.png per image and OUTPUT_DIR/predictions.json.
"""
import glob
import os

from absl import app
from absl import flags

from spinenet.data import coco_converter
from spinenet.serving import client
from spinenet.serving import predict_lib
from spinenet.serving import tflite_runtime

_TARGET = flags.DEFINE_string(
    'target', None, 'A SavedModel directory (or a base path of versions), '
    'http(s)://host:port (REST), grpc://host:port (gRPC) or a .tflite file.',
    required=True)
_MODEL_NAME = flags.DEFINE_string('model_name', 'spinenet',
                                  'Served model name (REST and gRPC).')
_VERSION = flags.DEFINE_integer('version', None, 'Model version (default: latest).')
_IMAGE = flags.DEFINE_multi_string('image', [], 'Image files or glob patterns.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where results go.',
                                  required=True)
_MIN_SCORE = flags.DEFINE_float('min_score', 0.3, 'Detections below are not drawn.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 1, 'Images per request.',
                                   lower_bound=1)
_LABEL_MAP = flags.DEFINE_string(
    'label_map', None, 'Label map JSON, for models that do not return class names.')
_TIMEOUT = flags.DEFINE_float('timeout', 60.0, 'Seconds per request.')
_NUM_THREADS = flags.DEFINE_integer('num_threads', 2, '.tflite: interpreter threads.',
                                    lower_bound=1)
_XNNPACK = flags.DEFINE_bool('xnnpack', True, '.tflite: use the XNNPACK delegate.')


def _make_predictor():
  if _TARGET.value.endswith('.tflite'):
    if not os.path.isfile(_TARGET.value):
      raise ValueError(f'--target={_TARGET.value}: no such .tflite file.')
    return tflite_runtime.TFLitePredictor(_TARGET.value, num_threads=_NUM_THREADS.value,
                                          use_xnnpack=_XNNPACK.value)
  return client.make_predictor(_TARGET.value, _MODEL_NAME.value, _VERSION.value,
                               timeout=_TIMEOUT.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  paths = []
  for pattern in _IMAGE.value:
    matches = sorted(glob.glob(pattern))
    if not matches:
      raise app.UsageError(f'--image={pattern!r} matches no file.')
    paths += matches
  label_map = coco_converter.read_label_map(_LABEL_MAP.value) if _LABEL_MAP.value else None
  try:
    predictor = _make_predictor()
    summary = predict_lib.predict_files(
        predictor, paths, _OUTPUT_DIR.value, min_score=_MIN_SCORE.value,
        batch_size=_BATCH_SIZE.value, label_map=label_map)
  except (ValueError, FileNotFoundError, client.PredictionError) as e:
    raise app.UsageError(str(e)) from None
  for item in summary:
    found = item.get('detections', item.get('classes', []))
    print(f"{item['image']} -> {item['output']}: " + ', '.join(
        f"{d['name']} {d['score']:.2f}" for d in found[:10]))


def run():
  app.run(main)


if __name__ == '__main__':
  run()
