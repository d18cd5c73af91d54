r"""Converts a TensorFlow Model Garden SpineNet checkpoint into ours.

Usage:
  spinenet-convert \
    --model_garden_checkpoint=gs://bucket/retinanet_spinenet49/ckpt-231000 \
    --model=49 --task=retinanet --output_dir=converted/spinenet49 \
    [--num_classes=91]

Writes `converted/spinenet49/ckpt-0` (`tf.train.Checkpoint(model=...)`, loadable
by training as `init_checkpoint` and by export) and `conversion.json` with the
variable mapping. Refuses, listing every problem, when a variable is unmatched
or a shape differs. See docs/convert.md.
"""
from absl import app
from absl import flags
from absl import logging

from spinenet.training import checkpoint_converter

_CHECKPOINT = flags.DEFINE_string(
    'model_garden_checkpoint', None,
    'Model Garden checkpoint prefix, or a directory of checkpoints (latest is '
    'used) or a SavedModel directory.', required=True)
_MODEL = flags.DEFINE_string(
    'model', None, "Our model id, e.g. '49S', '49', '190', 'mobile-49S'.",
    required=True)
_TASK = flags.DEFINE_enum('task', 'retinanet', list(checkpoint_converter.TASKS),
                          'Which model the checkpoint holds / to convert.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None,
                                  'New or empty output directory.', required=True)
_NUM_CLASSES = flags.DEFINE_integer(
    'num_classes', None,
    'Expected number of classes (background included); default: the '
    "checkpoint's.", lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    result = checkpoint_converter.convert(
        _CHECKPOINT.value, _MODEL.value, _TASK.value, _OUTPUT_DIR.value,
        num_classes=_NUM_CLASSES.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  logging.info('Converted %d variables into %s', len(result.mapping),
               result.checkpoint_path)
  print(result.checkpoint_path)


def run():
  app.run(main)


if __name__ == '__main__':
  run()
