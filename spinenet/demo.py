r"""The end-to-end demo: data -> TFRecords -> training -> COCO AP -> SavedModel.

  python -m spinenet.demo --output_dir demo_output     (what `make demo` runs)

1. generates the built-in "shapes" dataset (JPEGs + COCO JSON),
2. converts it with the `spinenet-create-coco-tfrecord` library function,
3. trains a small SpineNet-49S RetinaNet on the CPU with
   experiments/demo_cpu.gin through the same function `spinenet-train` calls,
   evaluating on the validation split (pycocotools, the JSON as ground truth),
4. exports the model as a SavedModel, predicts the validation image with the
   most objects through it and draws the detections (`prediction.png`),
5. prints the COCO AP and AP50.

Re-running reuses the dataset and resumes (or skips) training.
"""
import collections
import json
import os
import time

from absl import app
from absl import flags
from absl import logging

from spinenet import configurables
from spinenet.data import builtin_dataset
from spinenet.data import coco_converter
from spinenet.serving import demo_step

FLAGS = flags.FLAGS
DEMO_GIN = 'experiments/demo_cpu.gin'
MIN_SCORE = 0.3  # detections drawn and listed


def prepare_data(output_dir, num_train=400, num_val=100):
  """Generates the shapes dataset and its TFRecords (skipped if present).

  Returns:
    dict with `train_pattern`, `val_pattern`, `val_json`.
  """
  data_dir = os.path.join(output_dir, 'shapes')
  records = os.path.join(output_dir, 'records')
  paths = {'train_json': os.path.join(data_dir, 'annotations', 'train.json'),
           'val_json': os.path.join(data_dir, 'annotations', 'val.json')}
  done = os.path.join(records, '.complete')
  if not os.path.exists(done):
    start = time.monotonic()
    generated = builtin_dataset.generate(data_dir, num_train=num_train,
                                         num_val=num_val, image_size=256)
    for split in ('train', 'val'):
      coco_converter.convert_coco(
          generated[f'{split}_images'], generated[f'{split}_json'],
          os.path.join(records, split), num_shards=2)
    open(done, 'w').close()
    logging.info('dataset ready in %.0f s', time.monotonic() - start)
  return {'train_pattern': os.path.join(records, 'train-*.tfrecord'),
          'val_pattern': os.path.join(records, 'val-*.tfrecord'),
          'val_json': paths['val_json'],
          'val_images': os.path.join(data_dir, 'val')}


def _busiest_image(annotations_json, image_dir):
  """The validation image with the most objects (the first one if tied)."""
  with open(annotations_json) as f:
    coco = json.load(f)
  counts = collections.Counter(a['image_id'] for a in coco['annotations'])
  best = min(coco['images'], key=lambda im: (-counts[im['id']], im['id']))
  return os.path.join(image_dir, best['file_name'])


def run_demo(output_dir, extra_gin_params=(), num_train=400, num_val=100):
  """Runs the whole demo; returns the COCO metrics dict of the final model."""
  start = time.monotonic()
  data = prepare_data(output_dir, num_train, num_val)
  model_dir = os.path.join(output_dir, 'model')
  params = [f"TRAIN_FILE_PATTERN = '{data['train_pattern']}'",
            f"EVAL_FILE_PATTERN = '{data['val_pattern']}'",
            f"EVAL_ANNOTATIONS_JSON = '{data['val_json']}'",
            *extra_gin_params]
  result = configurables.train_from_config(
      [DEMO_GIN], params, mode='train_and_eval', model_dir=model_dir,
      strategy='one_device')
  metrics = result['eval']
  # Export the trained model as a SavedModel (what TF Serving loads), predict
  # one validation image through it and save the image with its boxes drawn.
  image = _busiest_image(data['val_json'], data['val_images'])
  prediction = demo_step.export_and_predict(
      [DEMO_GIN], params, model_dir, os.path.join(output_dir, 'export'), image,
      os.path.join(output_dir, 'prediction.png'), min_score=MIN_SCORE)
  found = ', '.join(f'{d["name"]} {d["score"]:.2f}'
                    for d in prediction['detections'][:8]) or f'nothing above {MIN_SCORE}'
  minutes = (time.monotonic() - start) / 60
  print('\n'.join([
      '',
      '=' * 64,
      f'SpineNet demo: {num_train} training / {num_val} validation images '
      f'of the built-in shapes dataset',
      f'trained {result["step"]} steps in {model_dir} '
      f'({minutes:.1f} min in total)',
      f'COCO box AP   = {metrics["AP"]:.3f}   (IoU 0.50:0.95)',
      f'COCO box AP50 = {metrics["AP50"]:.3f}   (IoU 0.50)',
      f'AP75 {metrics["AP75"]:.3f}  APs {metrics["APs"]:.3f}  '
      f'APm {metrics["APm"]:.3f}  APl {metrics["APl"]:.3f}  '
      f'AR@100 {metrics["ARmax100"]:.3f}',
      f'metrics: {os.path.join(model_dir, "eval", "metrics.json")}',
      f'SavedModel: {prediction["export_path"]} (serve it: spinenet-serve '
      f'--model_base_path={os.path.join(output_dir, "export")})',
      f'prediction: {prediction["output_path"]} ({found})',
      '=' * 64,
  ]))
  return metrics


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    run_demo(FLAGS.output_dir, FLAGS.gin_param, FLAGS.num_train, FLAGS.num_val)
  except configurables.ConfigError as e:
    raise app.UsageError(str(e)) from None


def define_flags():
  """The command's flags; defined when it runs, so that importing this module
  (its functions are a library too) leaves the global flag registry alone."""
  flags.DEFINE_string('output_dir', 'demo_output', 'Where the data, records and model go.')
  flags.DEFINE_multi_string('gin_param', [], 'Extra gin bindings for experiments/demo_cpu.gin.')
  flags.DEFINE_integer('num_train', 400, 'Training images.')
  flags.DEFINE_integer('num_val', 100, 'Validation images.')


def run():
  define_flags()
  app.run(main)


if __name__ == '__main__':
  run()
