r"""TFLite exports of the mobile demo model: COCO AP and latency per variant, vs the Model Garden.

Trains (or loads, `--checkpoint`) Mobile SpineNet-49S RetinaNet on the
built-in shapes dataset with experiments/demo_mobile_cpu.gin, exports it as a
SavedModel and as float32, float16 and int8 `.tflite` files
(`spinenet-export --format=tflite`; int8 calibrated on training records),
and reports for each file:

* COCO box AP on the built-in validation split (what `spinenet-predict`
  answers: the file's NMS, boxes mapped to the image), next to the
  SavedModel's AP;
* latency per image of the TFLite interpreter (XNNPACK, `--threads` threads,
  batch 1, the recipe's 256 px input), the invoke only, median of
  `--iters` calls interleaved round by round with the Model Garden's float
  TFLite export of the same mobile id (its RetinaNet with the SpineNetMobile
  backbone, `nms_version='tflite'` with the same NMS values, converted by its
  `export_tflite_lib.convert_tflite_model`), built in the same run.

The Model Garden's model is untrained (random weights): its latency is the
network's plus an NMS with few candidates; ours is trained on the shapes
(a few dozen candidates). The NMS share of either is small (see docs/tflite.md).

The last line is JSON: `ap_float`, `ap_float16`, `ap_int8`, `ap_saved_model`,
`ms_float`, `ms_float16`, `ms_int8`, `mg_ms_float`, `ratio_float` (ours /
Model Garden), the goals (`goals`) and `env`.

Usage (from the repository root):
  .venv/bin/python -m benchmarks.tflite [--work_dir=/tmp/tflite_bench] \
    [--checkpoint=MODEL_DIR] [--iters=30] [--threads=2]
"""
import json
import os
import statistics
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from benchmarks import _machine
from benchmarks import _model_garden
from benchmarks import _saved_model_eval
import tensorflow as tf

from spinenet import config
from spinenet.cli import demo_lib
from spinenet.serving import tflite_export
from spinenet.serving import tflite_runtime
from spinenet.training import coco_evaluator

GIN_FILE = 'experiments/demo_mobile_cpu.gin'
MODEL_ID = 'mobile-49S'
INPUT_SIZE = 256
NUM_CLASSES = 5
VARIANTS = {'float': 'none', 'float16': 'float16', 'int8': 'int8'}
GOALS = {'float16_ap_drop': 0.005, 'int8_ap_drop': 0.02, 'ratio_float': 1.0}

_WORK_DIR = flags.DEFINE_string('work_dir', '/tmp/spinenet_tflite_benchmark',
                                'Data, model and exports go here (reused).')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'A trained model_dir of the recipe; default: train it into '
    'WORK_DIR/model (or reuse a finished one there).')
_GIN_PARAM = flags.DEFINE_multi_string('gin_param', [], 'Extra gin bindings.')
_ITERS = flags.DEFINE_integer('iters', 30, 'Timed invocations per file.', lower_bound=1)
_THREADS = flags.DEFINE_integer('threads', 2, 'Interpreter threads.', lower_bound=1)
_CALIBRATION_IMAGES = flags.DEFINE_integer('calibration_images', 200,
                                           'int8 calibration images.', lower_bound=1)
_NUM_TRAIN = flags.DEFINE_integer('num_train', 400, 'Training images.', lower_bound=1)
_NUM_VAL = flags.DEFINE_integer('num_val', 100, 'Validation images.', lower_bound=1)


def evaluate_tflite(path, image_dir, annotation_json, threads=2):
  """COCO metrics of a detection `.tflite` over a COCO split (as predicted)."""
  predictor = tflite_runtime.TFLitePredictor(path, num_threads=threads)
  with tf.io.gfile.GFile(annotation_json) as f:
    images = json.load(f)['images']
  evaluator = coco_evaluator.CocoEvaluator(annotation_json)
  start = time.monotonic()
  for done, image in enumerate(images, 1):
    with tf.io.gfile.GFile(os.path.join(image_dir, image['file_name']), 'rb') as f:
      [result] = predictor.predict([f.read()])
    num = int(result['num_detections'])
    boxes = np.zeros([1, 100, 4], np.float32)
    scores = np.zeros([1, 100], np.float32)
    classes = np.zeros([1, 100], np.int32)
    boxes[0, :num] = result['detection_boxes']
    scores[0, :num] = result['detection_scores']
    classes[0, :num] = result['detection_classes']
    info = np.zeros([1, 4, 2], np.float32)
    info[:, 2, :] = 1.0  # boxes already in the image's pixels
    evaluator.update({'source_id': np.array([image['id']]), 'image_info': info,
                      'detection_boxes': boxes, 'detection_scores': scores,
                      'detection_classes': classes, 'num_detections': np.array([num])})
    if done % 25 == 0 or done == len(images):
      rate = done / max(time.monotonic() - start, 1e-9)
      logging.info('%s: %d/%d images | %.1f images/s | ETA %.0f s',
                   os.path.basename(path), done, len(images), rate,
                   (len(images) - done) / rate)
  return evaluator.result()


def model_garden_tflite(work_dir):
  """The Model Garden's float TFLite export of RetinaNet + SpineNetMobile-49S."""
  from official.vision.serving import detection  # pylint: disable=g-import-not-at-top
  from official.vision.serving import export_tflite_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(work_dir, 'model_garden_float32.tflite')
  if os.path.exists(path):
    return path
  start = time.monotonic()
  params = _model_garden.make_mg_params(MODEL_ID, INPUT_SIZE, NUM_CLASSES)
  params.override({'task': {'model': {'detection_generator': {
      'nms_version': 'tflite',
      'tflite_post_processing': {
          'max_detections': 100, 'max_classes_per_detection': 1,
          'use_regular_nms': True, 'nms_score_threshold': 0.05,
          'nms_iou_threshold': 0.5, 'detections_per_class': 100,
          'normalize_anchor_coordinates': True}}}}}, is_strict=True)
  module = detection.DetectionModule(params, batch_size=1,
                                     input_image_size=[INPUT_SIZE, INPUT_SIZE],
                                     input_type='tflite')
  concrete = module.inference_for_tflite.get_concrete_function(
      tf.TensorSpec([1, INPUT_SIZE, INPUT_SIZE, 3], tf.float32))
  data = export_tflite_lib.convert_tflite_model(concrete_function=concrete)
  with open(path, 'wb') as f:
    f.write(data)
  logging.info('Model Garden TFLite export in %.0f s', time.monotonic() - start)
  return path


def time_interpreters(interpreters, inputs, iters, warmup=3):
  """Median ms of `invoke()` per interpreter, interleaved round by round."""
  for name, interpreter in interpreters.items():
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail['index'], inputs[name])
    for _ in range(warmup):
      interpreter.invoke()
  times = {name: [] for name in interpreters}
  start = time.monotonic()
  for i in range(iters):
    for name, interpreter in interpreters.items():
      begin = time.perf_counter()
      interpreter.invoke()
      times[name].append((time.perf_counter() - begin) * 1e3)
    if (i + 1) % 10 == 0:
      rate = (i + 1) / (time.monotonic() - start)
      logging.info('timing round %d/%d | %.2f rounds/s | ETA %.0f s | %s', i + 1, iters,
                   rate, (iters - i - 1) / rate,
                   {n: round(t[-1], 1) for n, t in times.items()})
  return {name: statistics.median(t) for name, t in times.items()}


def main(argv):
  del argv
  start = time.monotonic()
  work = _WORK_DIR.value
  data = demo_lib.detection_data(work, _NUM_TRAIN.value, _NUM_VAL.value)
  params = [f"TRAIN_FILE_PATTERN = '{data['train_pattern']}'",
            f"EVAL_FILE_PATTERN = '{data['val_pattern']}'",
            f"EVAL_ANNOTATIONS_JSON = '{data['val_json']}'", *_GIN_PARAM.value]
  checkpoint = _CHECKPOINT.value
  if checkpoint is None:
    checkpoint = os.path.join(work, 'model')
    config.train_from_config([GIN_FILE], params, mode='train', model_dir=checkpoint,
                             strategy='one_device')
  saved = config.export_from_config([GIN_FILE], params, os.path.join(work, 'saved_model'),
                                    checkpoint=checkpoint)
  ap_saved = _saved_model_eval.evaluate_saved_model(saved.path, data['val_images'],
                                                    data['val_json'])['AP']
  paths, sizes, ap = {}, {}, {}
  for variant, quantization in VARIANTS.items():
    result = config.export_tflite_from_config(
        [GIN_FILE], params, os.path.join(work, 'tflite'), checkpoint=checkpoint,
        options=tflite_export.TFLiteOptions(
            quantization=quantization, calibration_images=_CALIBRATION_IMAGES.value))
    paths[variant], sizes[variant] = result.path, os.path.getsize(result.path)
    ap[variant] = evaluate_tflite(result.path, data['val_images'], data['val_json'],
                                  _THREADS.value)['AP']
    logging.info('%s: AP %.4f (SavedModel %.4f)', variant, ap[variant], ap_saved)
  mg_path = model_garden_tflite(work)

  # Latency: one validation image, prepared as the predictor prepares it.
  with open(demo_lib.busiest_image(data['val_json'], data['val_images']), 'rb') as f:
    image = tf.io.decode_image(f.read(), channels=3).numpy()
  pixels, _, _ = tflite_runtime.prepare_pixels(image, (INPUT_SIZE, INPUT_SIZE), 'detection')
  models = {v: tflite_runtime.TFLiteModel(p, num_threads=_THREADS.value)
            for v, p in paths.items()}
  interpreters = {v: m.interpreter for v, m in models.items()}
  inputs = {v: m.quantize_input(pixels) for v, m in models.items()}
  interpreters['model_garden'] = tflite_runtime.make_interpreter(mg_path, _THREADS.value)
  inputs['model_garden'] = tflite_runtime.normalize(tf.constant(pixels)).numpy()
  ms = time_interpreters(interpreters, inputs, _ITERS.value)

  report = {
      'ap_float': round(ap['float'], 4), 'ap_float16': round(ap['float16'], 4),
      'ap_int8': round(ap['int8'], 4), 'ap_saved_model': round(ap_saved, 4),
      'ms_float': round(ms['float'], 2), 'ms_float16': round(ms['float16'], 2),
      'ms_int8': round(ms['int8'], 2), 'mg_ms_float': round(ms['model_garden'], 2),
      'ratio_float': round(ms['float'] / ms['model_garden'], 3),
      'size_bytes': sizes, 'mg_size_bytes': os.path.getsize(mg_path),
      'model': MODEL_ID, 'input_size': INPUT_SIZE, 'threads': _THREADS.value,
      'iters': _ITERS.value, 'checkpoint': checkpoint,
  }
  report['goals'] = {
      'float16_ap_drop': round(ap['float'] - ap['float16'], 4),
      'float16_ap_drop_ok': ap['float'] - ap['float16'] <= GOALS['float16_ap_drop'],
      'int8_ap_drop': round(ap['float'] - ap['int8'], 4),
      'int8_ap_drop_ok': ap['float'] - ap['int8'] <= GOALS['int8_ap_drop'],
      'ratio_float_ok': report['ratio_float'] <= GOALS['ratio_float'],
      'int8_faster_than_float': ms['int8'] < ms['float'],
  }
  report['minutes'] = round((time.monotonic() - start) / 60, 1)
  report['env'] = _machine.env_summary()
  for variant in VARIANTS:
    print(f'{variant:8s} AP {ap[variant]:.4f}  {ms[variant]:7.2f} ms  '
          f'{sizes[variant] / 2**20:.2f} MB')
  print(f'SavedModel AP {ap_saved:.4f}; Model Garden float {ms["model_garden"]:.2f} ms '
        f'(ratio ours/MG {report["ratio_float"]:.3f})')
  print(json.dumps(report))


if __name__ == '__main__':
  app.run(main)
