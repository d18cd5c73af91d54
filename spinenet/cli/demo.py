r"""spinenet-demo: generated data -> training -> evaluation (-> SavedModel), on a CPU.

  spinenet-demo --output_dir=demo_output            (what `make demo` runs)
  spinenet-demo --task=maskrcnn --output_dir=demo_maskrcnn   (make demo-maskrcnn)
  spinenet-demo --task=classification --output_dir=demo_classification

--task=retinanet (default):
1. generates the built-in "shapes" dataset (JPEGs + COCO JSON) and converts
   it with the `spinenet-create-coco-tfrecord` library function,
2. trains a small SpineNet-49S RetinaNet with experiments/demo_cpu.gin through
   the function `spinenet-train` calls, evaluating on the validation split
   (pycocotools, the JSON as ground truth),
3. exports the model as a SavedModel, predicts the validation image with the
   most objects through it and draws the detections (`prediction.png`),
4. prints the COCO AP and AP50.

--task=maskrcnn: the same steps with instance masks:
1. the built-in shapes dataset with each shape's exact mask, converted with
   `--include_masks`,
2. trains a small SpineNet-49S Mask R-CNN with experiments/demo_maskrcnn_cpu.gin,
   evaluating boxes and masks on the validation split (pycocotools bbox and
   segm),
3. exports it, predicts the busiest validation image and draws boxes and
   masks (`prediction.png`),
4. prints the box and mask AP and AP50.

--task=classification:
1. generates the built-in shapes classification dataset (8 classes, 96 px,
   ImageNet-format TFRecords),
2. trains a small SpineNet-49S classifier (64 px) with
   experiments/demo_classification_cpu.gin the same way,
3. prints top-1 / top-5 accuracy against chance (1/8), and the
   `spinenet-export` / `spinenet-predict` commands for the trained model and
   a few validation images it writes to `<output_dir>/samples`.

Re-running reuses the dataset and resumes (or skips) training.
"""
import math
import os
import time

from absl import app
from absl import flags

from spinenet import config
from spinenet.cli import demo_lib
from spinenet.data import builtin_classification

TASKS = ('retinanet', 'maskrcnn', 'classification')
# Per task: output directory, training and validation images.
_DEFAULTS = {'retinanet': ('demo_output', 400, 100),
             'maskrcnn': ('demo_maskrcnn', 400, 100),
             'classification': ('demo_classification', 2000, 400)}
MIN_SCORE = 0.3  # detections drawn and listed

_TASK = flags.DEFINE_enum('task', 'retinanet', TASKS, 'Which demo to run.')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Where the data, records and model go (default: '
    'demo_output; demo_maskrcnn for --task=maskrcnn, demo_classification for '
    '--task=classification).')
_GIN_PARAM = flags.DEFINE_multi_string(
    'gin_param', [], 'Extra gin bindings for the demo\'s experiment file '
    f'({demo_lib.DETECTION_GIN}, {demo_lib.MASKRCNN_GIN} or '
    f'{demo_lib.CLASSIFICATION_GIN}).')
_NUM_TRAIN = flags.DEFINE_integer(
    'num_train', None, 'Training images (default 400; classification 2000).',
    lower_bound=1)
_SEED = flags.DEFINE_integer(
    'seed', 0, 'Seeds Python, NumPy and TensorFlow before the model is '
    'built (weight initialization); -1: unseeded. The data order and '
    'augmentation have their own seed (DataOptions.seed in the gin file).')
_NUM_VAL = flags.DEFINE_integer(
    'num_val', None, 'Validation images (default 100; classification 400).',
    lower_bound=1)


def run_retinanet(output_dir, extra_gin_params=(), num_train=400, num_val=100):
  """The detection demo; returns the COCO metrics dict of the final model."""
  start = time.monotonic()
  data = demo_lib.detection_data(output_dir, num_train, num_val)
  model_dir = os.path.join(output_dir, 'model')
  params = [f"TRAIN_FILE_PATTERN = '{data['train_pattern']}'",
            f"EVAL_FILE_PATTERN = '{data['val_pattern']}'",
            f"EVAL_ANNOTATIONS_JSON = '{data['val_json']}'",
            *extra_gin_params]
  result = demo_lib.train_and_evaluate(demo_lib.DETECTION_GIN, params, model_dir)
  metrics = result['eval']
  prediction = demo_lib.export_and_predict(
      [demo_lib.DETECTION_GIN], params, model_dir, os.path.join(output_dir, 'export'),
      demo_lib.busiest_image(data['val_json'], data['val_images']),
      os.path.join(output_dir, 'prediction.png'), min_score=MIN_SCORE)
  found = ', '.join(f'{d["name"]} {d["score"]:.2f}'
                    for d in prediction['detections'][:8]) or f'nothing above {MIN_SCORE}'
  minutes = (time.monotonic() - start) / 60
  demo_lib.print_report([
      f'SpineNet demo: {num_train} training / {num_val} validation images '
      f'of the built-in shapes dataset',
      f'trained {result["step"]} steps in {model_dir} ({minutes:.1f} min in total)',
      f'COCO box AP   = {metrics["AP"]:.3f}   (IoU 0.50:0.95)',
      f'COCO box AP50 = {metrics["AP50"]:.3f}   (IoU 0.50)',
      f'AP75 {metrics["AP75"]:.3f}  APs {metrics["APs"]:.3f}  '
      f'APm {metrics["APm"]:.3f}  APl {metrics["APl"]:.3f}  '
      f'AR@100 {metrics["ARmax100"]:.3f}',
      f'metrics: {os.path.join(model_dir, "eval", "metrics.json")}',
      f'SavedModel: {prediction["export_path"]} (serve it: spinenet-serve '
      f'--model_base_path={os.path.join(output_dir, "export")})',
      f'prediction: {prediction["output_path"]} ({found})',
  ])
  return metrics


def run_maskrcnn(output_dir, extra_gin_params=(), num_train=400, num_val=100):
  """The instance segmentation demo; returns the COCO box and mask metrics."""
  start = time.monotonic()
  data = demo_lib.detection_data(output_dir, num_train, num_val, include_masks=True)
  model_dir = os.path.join(output_dir, 'model')
  params = [f"TRAIN_FILE_PATTERN = '{data['train_pattern']}'",
            f"EVAL_FILE_PATTERN = '{data['val_pattern']}'",
            f"EVAL_ANNOTATIONS_JSON = '{data['val_json']}'",
            *extra_gin_params]
  result = demo_lib.train_and_evaluate(demo_lib.MASKRCNN_GIN, params, model_dir)
  metrics = result['eval']
  prediction = demo_lib.export_and_predict(
      [demo_lib.MASKRCNN_GIN], params, model_dir, os.path.join(output_dir, 'export'),
      demo_lib.busiest_image(data['val_json'], data['val_images']),
      os.path.join(output_dir, 'prediction.png'), min_score=MIN_SCORE)
  found = ', '.join(
      f'{d["name"]} {d["score"]:.2f}' +
      (f' ({d["mask_area"]} px)' if 'mask_area' in d else '')
      for d in prediction['detections'][:8]) or f'nothing above {MIN_SCORE}'
  minutes = (time.monotonic() - start) / 60
  demo_lib.print_report([
      f'SpineNet Mask R-CNN demo: {num_train} training / {num_val} validation '
      'images of the built-in shapes dataset',
      f'trained {result["step"]} steps in {model_dir} ({minutes:.1f} min in total)',
      f'COCO box AP   = {metrics["AP"]:.3f}   AP50 = {metrics["AP50"]:.3f}   '
      f'AP75 = {metrics["AP75"]:.3f}',
      f'COCO mask AP  = {metrics["mask_AP"]:.3f}   AP50 = {metrics["mask_AP50"]:.3f}   '
      f'AP75 = {metrics["mask_AP75"]:.3f}',
      f'mask APs {metrics["mask_APs"]:.3f}  APm {metrics["mask_APm"]:.3f}  '
      f'APl {metrics["mask_APl"]:.3f}  AR@100 {metrics["mask_ARmax100"]:.3f}',
      f'metrics: {os.path.join(model_dir, "eval", "metrics.json")} (TensorBoard '
      f'images: {os.path.join(model_dir, "eval")})',
      f'SavedModel: {prediction["export_path"]} (serve it: spinenet-serve '
      f'--model_base_path={os.path.join(output_dir, "export")})',
      f'prediction: {prediction["output_path"]} ({found})',
  ])
  return metrics


def run_classification(output_dir, extra_gin_params=(), num_train=2000, num_val=400):
  """The classification demo; returns the evaluation metrics of the final model."""
  start = time.monotonic()
  data = demo_lib.classification_data(output_dir, num_train, num_val)
  model_dir = os.path.join(output_dir, 'model')
  params = [f"TRAIN_FILE_PATTERN = '{data['train_pattern']}'",
            f"EVAL_FILE_PATTERN = '{data['val_pattern']}'",
            *extra_gin_params]
  result = demo_lib.train_and_evaluate(demo_lib.CLASSIFICATION_GIN, params, model_dir)
  metrics = result['eval']
  samples = os.path.join(output_dir, 'samples')
  demo_lib.write_samples(data['val_pattern'], samples)
  num_classes = len(builtin_classification.CLASS_NAMES)
  chance = 1.0 / num_classes
  minutes = (time.monotonic() - start) / 60
  demo_lib.print_report([
      f'SpineNet classification demo: {num_train} training / '
      f'{int(metrics["num_examples"])} validation images, {num_classes} '
      'classes of the built-in shapes dataset',
      f'trained {result["step"]} steps in {model_dir} ({minutes:.1f} min in total)',
      f'top-1 accuracy = {metrics["top_1_accuracy"]:.3f}   '
      f'(chance {chance:.3f}: {metrics["top_1_accuracy"] / chance:.1f}x)',
      f'top-5 accuracy = {metrics["top_5_accuracy"]:.3f}   (chance {5 * chance:.3f})',
      f'validation cross-entropy = {metrics["validation_loss"]:.3f}   '
      f'(chance ln {num_classes} = {math.log(num_classes):.3f})',
      f'metrics: {os.path.join(model_dir, "eval", "metrics.json")}',
      'export and predict:',
      f'  spinenet-export --gin_file={demo_lib.CLASSIFICATION_GIN} ' +
      ' '.join(f'--gin_param="{p}"' for p in params[:2]) +
      f' --checkpoint={model_dir} --export_dir={output_dir}/export',
      f"  spinenet-predict --target={output_dir}/export --image='{samples}/*.jpg'"
      f' --output_dir={output_dir}/predictions',
  ])
  return metrics


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  output_dir, num_train, num_val = _DEFAULTS[_TASK.value]
  run = {'retinanet': run_retinanet, 'maskrcnn': run_maskrcnn,
         'classification': run_classification}[_TASK.value]
  if _SEED.value >= 0:
    demo_lib.seed_everything(_SEED.value)
  try:
    run(_OUTPUT_DIR.value or output_dir, _GIN_PARAM.value,
        _NUM_TRAIN.value or num_train, _NUM_VAL.value or num_val)
  except config.ConfigError as e:
    raise app.UsageError(str(e)) from None


def run():
  app.run(main)


if __name__ == '__main__':
  run()
