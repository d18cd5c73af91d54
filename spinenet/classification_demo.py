r"""The classification demo: generated images -> TFRecords -> training -> top-1.

  python -m spinenet.classification_demo --output_dir demo_classification

1. generates the built-in shapes classification dataset (8 classes, 96 px,
   ImageNet-format TFRecords; `spinenet/data/builtin_classification.py`),
2. trains a small SpineNet-49S classifier (64 px) on the CPU with
   experiments/demo_classification_cpu.gin through the function
   `spinenet-train` calls, evaluating on the validation split,
3. prints top-1 / top-5 accuracy against chance (1/8).

Re-running reuses the dataset and resumes (or skips) training. The trained
model is in `<output_dir>/model`, ready for `spinenet-export`, and a few
validation images in `<output_dir>/samples` for `spinenet-predict` (the
commands are printed; see docs/classification.md).
"""
import math
import os
import time

from absl import app
from absl import flags
from absl import logging

import tensorflow as tf

from spinenet import configurables
from spinenet.data import builtin_classification
from spinenet.data import classification_input

FLAGS = flags.FLAGS
DEMO_GIN = 'experiments/demo_classification_cpu.gin'
IMAGE_SIZE = 96  # generated images; the model sees 64 px crops


def prepare_data(output_dir, num_train=2000, num_val=400):
  """Generates the TFRecords once (skipped when present); returns their paths."""
  data_dir = os.path.join(output_dir, 'data')
  done = os.path.join(data_dir, '.complete')
  paths = {'train_pattern': os.path.join(data_dir, 'train-*.tfrecord'),
           'val_pattern': os.path.join(data_dir, 'val-*.tfrecord'),
           'label_map': os.path.join(data_dir, 'val.label_map.json')}
  if not os.path.exists(done):
    start = time.monotonic()
    paths = builtin_classification.generate(
        data_dir, num_train=num_train, num_val=num_val, image_size=IMAGE_SIZE)
    open(done, 'w').close()
    logging.info('dataset ready in %.0f s', time.monotonic() - start)
  return paths


def write_samples(val_pattern, directory):
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


def run_demo(output_dir, extra_gin_params=(), num_train=2000, num_val=400):
  """Runs the whole demo; returns the evaluation metrics of the final model."""
  start = time.monotonic()
  data = prepare_data(output_dir, num_train, num_val)
  model_dir = os.path.join(output_dir, 'model')
  params = [f"TRAIN_FILE_PATTERN = '{data['train_pattern']}'",
            f"EVAL_FILE_PATTERN = '{data['val_pattern']}'",
            *extra_gin_params]
  result = configurables.train_from_config(
      [DEMO_GIN], params, mode='train_and_eval', model_dir=model_dir,
      strategy='one_device')
  metrics = result['eval']
  samples = os.path.join(output_dir, 'samples')
  write_samples(data['val_pattern'], samples)
  num_classes = len(builtin_classification.CLASS_NAMES)
  chance = 1.0 / num_classes
  minutes = (time.monotonic() - start) / 60
  print('\n'.join([
      '',
      '=' * 64,
      f'SpineNet classification demo: {num_train} training / '
      f'{int(metrics["num_examples"])} validation images, {num_classes} '
      'classes of the built-in shapes dataset',
      f'trained {result["step"]} steps in {model_dir} '
      f'({minutes:.1f} min in total)',
      f'top-1 accuracy = {metrics["top_1_accuracy"]:.3f}   '
      f'(chance {chance:.3f}: {metrics["top_1_accuracy"] / chance:.1f}x)',
      f'top-5 accuracy = {metrics["top_5_accuracy"]:.3f}   '
      f'(chance {5 * chance:.3f})',
      f'validation cross-entropy = {metrics["validation_loss"]:.3f}   '
      f'(chance ln {num_classes} = {math.log(num_classes):.3f})',
      f'metrics: {os.path.join(model_dir, "eval", "metrics.json")}',
      'export and predict:',
      f'  spinenet-export --gin_file={DEMO_GIN} ' +
      ' '.join(f'--gin_param="{p}"' for p in params[:2]) +
      f' --checkpoint={model_dir} --export_dir={output_dir}/export',
      f"  spinenet-predict --target={output_dir}/export --image='{samples}/*.jpg'"
      f' --output_dir={output_dir}/predictions',
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
  flags.DEFINE_string('output_dir', 'demo_classification', 'Where the data and the model go.')
  flags.DEFINE_multi_string('gin_param', [], 'Extra gin bindings for experiments/demo_classification_cpu.gin.')
  flags.DEFINE_integer('num_train', 2000, 'Training images.')
  flags.DEFINE_integer('num_val', 400, 'Validation images.')


def run():
  define_flags()
  app.run(main)


if __name__ == '__main__':
  run()
