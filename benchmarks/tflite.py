r"""TFLite exports of the mobile demo model: COCO AP and latency per variant, vs the Model Garden.

Trains (or loads, `--checkpoint`) Mobile SpineNet-49S RetinaNet on the
built-in shapes dataset with experiments/demo_mobile_cpu.gin, exports it as a
SavedModel and as float32, float16 and int8 `.tflite` files
(`spinenet-export --format=tflite`; per-class NMS from TFLite builtins; int8
calibrated on training records), and reports for each file:

* COCO box AP on the built-in validation split (what `spinenet-predict`
  answers: the file's NMS, boxes mapped to the image), next to the
  SavedModel's AP;
* latency per image of the TFLite interpreter (XNNPACK, `--threads` threads,
  batch 1, the recipe's 256 px input), the invoke only, median of `--iters`
  calls interleaved round by round over every file, and the number of
  XNNPACK partitions of each file (1 = the delegate runs the network in one
  piece).

Against the Model Garden in the same run: its RetinaNet with the
SpineNetMobile backbone of the same id (`retinanet_mobile_coco`: separable
head, hard swish, SE) built by its task factory with random, non-constant
weights (random batch-norm statistics), converted from a `tf.function` with
a real `[1, 256, 256, 3]` input signature through a SavedModel (as its
`export_tflite_lib` does). Two pairs of float32 files, both checked to hold
the full network (size in MB, conv count) before timing:

* raw network, like for like: normalization, network, levels flattened
  (`raw_box_deltas`, `raw_class_logits`), ours vs theirs
  (`ms_float_raw`, `mg_ms_float_raw`, `ratio_float`);
* end to end: ours (the float file users get: per-class NMS from builtins)
  vs theirs with its TFLite post-processing (`TFLite_Detection_PostProcess`,
  per-class, same thresholds) (`ms_float`, `mg_ms_float`,
  `ratio_end_to_end`). Their untrained network scores few boxes above the
  threshold, ours dozens: the NMS share differs.

Our int8 network alone is timed too (`ms_int8_raw`, vs `ms_float_raw`): the
post-processing is the same float32 graph in both of our files, so the int8
gain of the network shows there.

The last line is JSON: `ap_float`, `ap_float16`, `ap_int8`, `ap_saved_model`,
`ms_float`, `ms_float16`, `ms_int8`, `ms_float_raw`, `ms_int8_raw`, `mg_ms_float`,
`mg_ms_float_raw` (medians), `ratio_float` (raw network, ours / Model
Garden, medians), `ratio_end_to_end`, `ratio_float_min` and `ms_min` (the
fastest invocation of each file: the least disturbed by other processes on a
shared machine), `xnnpack_partitions`, `size_mb`, the goals (`goals`) and
`env` (with the load average).

Usage (from the repository root):
  .venv/bin/python -m benchmarks.tflite [--work_dir=/tmp/tflite_bench] \
    [--checkpoint=MODEL_DIR] [--iters=60] [--threads=2]
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
_ITERS = flags.DEFINE_integer('iters', 60, 'Timed invocations per file.', lower_bound=1)
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


def _randomize_batch_norms(model, seed=0):
  """Random batch-norm statistics (in place): no layer folds to an identity."""
  rng = np.random.default_rng(seed)
  for layer in model.submodules:
    if isinstance(layer, tf.keras.layers.BatchNormalization) or (
        type(layer).__name__.endswith('BatchNormalization')):
      for weight, (low, high) in zip(
          (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance),
          ((0.5, 1.5), (-0.2, 0.2), (-0.2, 0.2), (0.5, 2.0))):
        if weight is not None:
          weight.assign(rng.uniform(low, high, weight.shape).astype(np.float32))


def _flat(outputs, last_dim):
  levels = sorted(outputs, key=int)
  return tf.concat([tf.reshape(outputs[l], [1, -1, last_dim]) for l in levels], 1)


def model_garden_tflite(work_dir):
  """The Model Garden's float TFLite files of RetinaNet + SpineNetMobile-49S.

  Returns:
    `{'raw': path, 'end_to_end': path}`.
  """
  from official.core import task_factory  # pylint: disable=g-import-not-at-top
  paths = {kind: os.path.join(work_dir, f'model_garden_{kind}_float32.tflite')
           for kind in ('raw', 'end_to_end')}
  if all(os.path.exists(p) for p in paths.values()):
    return paths
  start = time.monotonic()
  params = _model_garden.make_mg_params(MODEL_ID, INPUT_SIZE, NUM_CLASSES)
  params.override({'task': {'model': {'detection_generator': {
      'nms_version': 'tflite',
      'tflite_post_processing': {
          'max_detections': 100, 'max_classes_per_detection': 1,
          'use_regular_nms': True, 'nms_score_threshold': 0.05,
          'nms_iou_threshold': 0.5, 'detections_per_class': 100,
          'normalize_anchor_coordinates': True}}}}}, is_strict=True)
  model = task_factory.get_task(params.task).build_model()
  model(tf.zeros([1, INPUT_SIZE, INPUT_SIZE, 3]), training=False)
  _randomize_batch_norms(model)
  raw_fn = _model_garden.mg_raw_fn(model)
  spec = tf.TensorSpec([1, INPUT_SIZE, INPUT_SIZE, 3], tf.float32, name='images')

  def raw(images):
    class_logits, box_deltas = raw_fn(tflite_runtime.normalize(images))
    return {'raw_box_deltas': _flat(box_deltas, 4),
            'raw_class_logits': _flat(class_logits, NUM_CLASSES)}

  def end_to_end(images):
    outputs = model(tflite_runtime.normalize(images), training=False)
    return {k: outputs[k] for k in ('detection_boxes', 'detection_classes',
                                    'detection_scores', 'num_detections')}

  for kind, fn in (('raw', raw), ('end_to_end', end_to_end)):
    concrete = tf.function(fn, input_signature=[spec], autograph=False).get_concrete_function()
    data = tflite_export.convert(concrete, 'none', trackable=model)
    with open(paths[kind], 'wb') as f:
      f.write(data)
  logging.info('Model Garden TFLite exports in %.0f s', time.monotonic() - start)
  return paths


def our_raw_tflite(work_dir, params, checkpoint, quantization='none', calibration=None):
  """Our TFLite file of the network alone (no post-processing).

  `quantization` 'none' or 'int8' (then `calibration`: `(records pattern,
  images)`, calibrated as the export calibrates).
  """
  from spinenet.serving import export_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(work_dir, 'tflite', f'raw_{"float32" if quantization == "none" else quantization}.tflite')
  task, _, _ = config.load_experiment([GIN_FILE], params)
  model = export_lib.build_model(task.build_model, 'float32')
  export_lib.restore_weights(model, checkpoint)
  representative = None
  if quantization == 'int8':
    pattern, count = calibration
    representative = tflite_export.representative_dataset(
        tflite_export.read_record_images(pattern, count), (INPUT_SIZE, INPUT_SIZE),
        'detection', count)
  data = tflite_export.convert(tflite_export.raw_network_function(model), quantization,
                               representative,
                               float_ops=tflite_export.TFLiteOptions().int8_float_ops)
  with open(path, 'wb') as f:
    f.write(data)
  return path


def check_full_network(path, min_mb=1.0, min_convs=50):
  """Refuses a file that lost its network (e.g. outputs constant-folded)."""
  size_mb = os.path.getsize(path) / 2**20
  interpreter = tflite_runtime.make_interpreter(path, 1, use_xnnpack=False)
  convs = sum(op['op_name'] in ('CONV_2D', 'DEPTHWISE_CONV_2D')
              for op in interpreter._get_ops_details())  # pylint: disable=protected-access
  if size_mb < min_mb or convs < min_convs:
    raise ValueError(f'{path}: {size_mb:.3f} MB, {convs} convolutions: not the full '
                     'network (constant-folded?); refusing to time it.')
  return {'size_mb': round(size_mb, 2), 'convs': convs}


def time_interpreters(interpreters, inputs, iters, warmup=3):
  """`(median, minimum)` ms of `invoke()` per interpreter, interleaved round by round.

  The minimum is the run least disturbed by other processes on a shared
  machine; the median is what a user waits.
  """
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
  return ({name: statistics.median(t) for name, t in times.items()},
          {name: min(t) for name, t in times.items()})


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
  saved_metrics = _saved_model_eval.evaluate_saved_model(saved.path, data['val_images'],
                                                         data['val_json'])
  ap_saved = saved_metrics['AP']
  paths, ap, ap50 = {}, {}, {'saved_model': saved_metrics['AP50']}
  for variant, quantization in VARIANTS.items():
    result = config.export_tflite_from_config(
        [GIN_FILE], params, os.path.join(work, 'tflite'), checkpoint=checkpoint,
        options=tflite_export.TFLiteOptions(
            quantization=quantization, calibration_images=_CALIBRATION_IMAGES.value))
    paths[variant] = result.path
    metrics = evaluate_tflite(result.path, data['val_images'], data['val_json'],
                              _THREADS.value)
    ap[variant], ap50[variant] = metrics['AP'], metrics['AP50']
    logging.info('%s: AP %.4f (SavedModel %.4f)', variant, ap[variant], ap_saved)
  files = {v: p for v, p in paths.items()}
  files['float_raw'] = our_raw_tflite(work, params, checkpoint)
  files['int8_raw'] = our_raw_tflite(work, params, checkpoint, 'int8',
                                     (data['train_pattern'], _CALIBRATION_IMAGES.value))
  mg_paths = model_garden_tflite(work)
  files['mg_float'] = mg_paths['end_to_end']
  files['mg_float_raw'] = mg_paths['raw']
  shapes = {name: check_full_network(path) for name, path in files.items()}
  logging.info('files: %s', shapes)

  # Latency: one validation image, prepared as the predictor prepares it.
  with open(demo_lib.busiest_image(data['val_json'], data['val_images']), 'rb') as f:
    image = tf.io.decode_image(f.read(), channels=3).numpy()
  pixels, _, _ = tflite_runtime.prepare_pixels(image, (INPUT_SIZE, INPUT_SIZE), 'detection')
  interpreters, inputs = {}, {}
  for name, path in files.items():
    interpreter = tflite_runtime.make_interpreter(path, _THREADS.value)
    detail = interpreter.get_input_details()[0]
    if np.dtype(detail['dtype']).kind == 'f':
      inputs[name] = pixels.astype(np.float32)
    else:  # quantized as `TFLiteModel.quantize_input` (raw files carry no metadata)
      scale, zero_point = detail['quantization']
      limits = np.iinfo(detail['dtype'])
      inputs[name] = np.clip(np.round(pixels / scale + zero_point), limits.min,
                             limits.max).astype(detail['dtype'])
    interpreters[name] = interpreter
  partitions = {n: tflite_runtime.delegate_partitions(i) for n, i in interpreters.items()}
  ms, ms_min = time_interpreters(interpreters, inputs, _ITERS.value)

  report = {
      'ap_float': round(ap['float'], 4), 'ap_float16': round(ap['float16'], 4),
      'ap_int8': round(ap['int8'], 4), 'ap_saved_model': round(ap_saved, 4),
      'ap50': {k: round(v, 4) for k, v in ap50.items()},
      'ms_float': round(ms['float'], 2), 'ms_float16': round(ms['float16'], 2),
      'ms_int8': round(ms['int8'], 2), 'ms_float_raw': round(ms['float_raw'], 2),
      'ms_int8_raw': round(ms['int8_raw'], 2),
      'mg_ms_float': round(ms['mg_float'], 2),
      'mg_ms_float_raw': round(ms['mg_float_raw'], 2),
      'ratio_float': round(ms['float_raw'] / ms['mg_float_raw'], 3),
      'ratio_end_to_end': round(ms['float'] / ms['mg_float'], 3),
      'ratio_float_min': round(ms_min['float_raw'] / ms_min['mg_float_raw'], 3),
      'ms_min': {name: round(t, 2) for name, t in ms_min.items()},
      'xnnpack_partitions': partitions, 'files': shapes,
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
      'int8_network_faster_than_float': ms['int8_raw'] < ms['float_raw'],
  }
  report['minutes'] = round((time.monotonic() - start) / 60, 1)
  report['env'] = _machine.env_summary()
  for name in files:
    line = f'{name:13s} {ms[name]:7.2f} ms (min {ms_min[name]:6.2f})  ' + \
        f'{shapes[name]["size_mb"]:5.2f} MB  ' + \
        f'{partitions[name]} XNNPACK partition(s)'
    if name in ap:
      line += f'  AP {ap[name]:.4f}  AP50 {ap50[name]:.4f}'
    print(line)
  print(f'SavedModel AP {ap_saved:.4f}; ratio ours/MG raw network '
        f'{report["ratio_float"]:.3f}, end to end {report["ratio_end_to_end"]:.3f}')
  print(json.dumps(report))


if __name__ == '__main__':
  app.run(main)
