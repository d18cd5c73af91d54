r"""Converts a SpineNet checkpoint (Model Garden TF2 or the authors' TF1 zoo) into ours.

Usage:
  spinenet-convert \
    --model_garden_checkpoint=gs://bucket/retinanet_spinenet49/ckpt-231000 \
    --model=49 --task=retinanet --output_dir=converted/spinenet49 \
    [--num_classes=91]

  # A Model Garden Mask R-CNN (MaskRCNNModel, SpineNet backbone)
  spinenet-convert --model_garden_checkpoint=PATH --model=49 --task=maskrcnn \
    --output_dir=converted/maskrcnn49

  # The authors' TF1 model zoo (an unpacked tarball: a directory or a prefix)
  spinenet-convert --tf1_checkpoint=spinenet-49-best/ --model=49 \
    --task=retinanet --activation=swish --output_dir=converted/zoo49

  # Either format, detected (name-based TF1 or object-based TF2)
  spinenet-convert --checkpoint=PATH --model=49 --output_dir=DIR

Writes `DIR/ckpt-0` (`tf.train.Checkpoint(model=...)`, loadable by training
as `init_checkpoint` and by export) and `conversion.json` with the variable
mapping and the build arguments. Refuses, listing every problem, when a
variable is unmatched or a shape differs. See docs/convert.md.
"""
from absl import app
from absl import flags
from absl import logging

from spinenet.training import checkpoint_converter
from spinenet.training import tf1_checkpoint

_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None,
    'Checkpoint prefix or directory (local or gs://) of either format: a '
    'name-based checkpoint converts as --tf1_checkpoint, one with an object '
    'graph as --model_garden_checkpoint.')
_MG_CHECKPOINT = flags.DEFINE_string(
    'model_garden_checkpoint', None,
    'Model Garden checkpoint prefix, or a directory of checkpoints (latest is '
    'used) or a SavedModel directory.')
_TF1_CHECKPOINT = flags.DEFINE_string(
    'tf1_checkpoint', None,
    "The authors' TF1 model-zoo checkpoint: a prefix (model.ckpt-NNN) or a "
    'directory (the newest checkpoint in it), local or gs://.')
_MODEL = flags.DEFINE_string(
    'model', None, "Our model id, e.g. '49S', '49', '190', 'mobile-49S'; the TF1 "
    "zoo's SpineNetMB-49 is 'MB-49'.", required=True)
_TASK = flags.DEFINE_enum('task', 'retinanet', list(checkpoint_converter.TASKS),
                          'Which model the checkpoint holds / to convert.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None,
                                  'New or empty output directory.', required=True)
_NUM_CLASSES = flags.DEFINE_integer(
    'num_classes', None,
    'Expected number of classes (background included); default: the '
    "checkpoint's.", lower_bound=1)
_ACTIVATION = flags.DEFINE_enum(
    'activation', None, ['swish', 'relu'],
    "TF1 only: the checkpoint's activation, which it does not record: swish "
    'for the "-best" checkpoints and SpineNetMB-49, relu for the others '
    "(spinenet-49.tar.gz, ...). Default: the model id's (swish), or with "
    "--task=maskrcnn its Mask R-CNN recipe's (relu; swish for 190).")
_USE_EMA = flags.DEFINE_bool(
    'use_ema', False,
    'TF1 only: take ExponentialMovingAverage shadows where the checkpoint has '
    'them (the raw weights otherwise). Default: the raw weights.')


def _source():
  """`(format, path)` from the one checkpoint flag given."""
  given = [(f, v) for f, v in (('checkpoint', _CHECKPOINT.value),
                               ('model_garden', _MG_CHECKPOINT.value),
                               ('tf1', _TF1_CHECKPOINT.value)) if v]
  if len(given) != 1:
    raise app.UsageError('Give exactly one of --checkpoint, --model_garden_checkpoint '
                         f'and --tf1_checkpoint (got {len(given)}).')
  fmt, path = given[0]
  if fmt == 'checkpoint':
    try:
      fmt = 'tf1' if tf1_checkpoint.is_tf1_checkpoint(path) else 'model_garden'
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    logging.info('--checkpoint=%s: %s checkpoint.', path,
                 'a name-based TF1' if fmt == 'tf1' else 'an object-based (Model Garden)')
  return fmt, path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  fmt, path = _source()
  if fmt == 'model_garden' and (_ACTIVATION.value or _USE_EMA.value):
    raise app.UsageError('--activation and --use_ema apply to TF1 checkpoints; a Model '
                         'Garden checkpoint converts its raw weights into the id as '
                         'registered.')
  try:
    if fmt == 'tf1':
      result = tf1_checkpoint.convert(
          path, _MODEL.value, _TASK.value, _OUTPUT_DIR.value,
          num_classes=_NUM_CLASSES.value, activation=_ACTIVATION.value,
          use_ema=_USE_EMA.value)
    else:
      result = checkpoint_converter.convert(
          path, _MODEL.value, _TASK.value, _OUTPUT_DIR.value,
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
