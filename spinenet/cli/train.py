r"""Trains and evaluates a model described by gin files.

Usage:
  spinenet-train --gin_file=experiments/coco_spinenet49_tpu.gin \
    --gin_param="TRAIN_FILE_PATTERN = 'gs://b/coco/train-*'" \
    --gin_param="EVAL_FILE_PATTERN = 'gs://b/coco/val-*'" \
    --model_dir=gs://b/runs/spinenet49 --mode=train_and_eval --tpu=my-tpu

  spinenet-train --gin_file=experiments/demo_cpu.gin \
    --gin_param="TRAIN_FILE_PATTERN = 'demo_output/records/train-*'" \
    --gin_param="EVAL_FILE_PATTERN = 'demo_output/records/val-*'" \
    --model_dir=/tmp/demo_run --mode=train_and_eval

Training resumes from the latest checkpoint in --model_dir; the parsed and
the operative gin configs are written there. See docs/training.md.
"""
from absl import app
from absl import flags

from spinenet import config
from spinenet.training import strategies
from spinenet.training import train_lib

_GIN_FILE = flags.DEFINE_multi_string(
    'gin_file', [], 'Gin file(s), applied in order (repeatable).')
_GIN_PARAM = flags.DEFINE_multi_string(
    'gin_param', [],
    "Gin binding(s) applied after the files, e.g. "
    "\"TrainerOptions.train_steps = 1000\" (repeatable).")
_MODEL_DIR = flags.DEFINE_string(
    'model_dir', None, 'Checkpoints, summaries and configs (local or gs://).')
_MODE = flags.DEFINE_enum('mode', 'train', train_lib.MODES, 'What to run.')
_TPU = flags.DEFINE_string(
    'tpu', None, "TPU name or grpc:// address ('local' on a TPU VM).")
_STRATEGY = flags.DEFINE_enum(
    'strategy', 'auto', strategies.STRATEGIES,
    'Distribution strategy; auto: tpu if --tpu, multi_worker_mirrored if '
    'TF_CONFIG lists several workers, mirrored with several GPUs, else '
    'one_device.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not _GIN_FILE.value:
    raise app.UsageError('--gin_file is required, e.g. '
                         '--gin_file=experiments/coco_spinenet49_tpu.gin')
  if not _MODEL_DIR.value:
    raise app.UsageError('--model_dir is required (a local path or gs://...).')
  try:
    config.train_from_config(
        _GIN_FILE.value, _GIN_PARAM.value, mode=_MODE.value,
        model_dir=_MODEL_DIR.value, strategy=_STRATEGY.value, tpu=_TPU.value)
  except config.ConfigError as e:
    raise app.UsageError(str(e)) from None
  except (ValueError, TypeError) as e:
    if 'In call to configurable' not in str(e):
      raise
    # A value a configurable rejected (gin adds which one and where).
    raise app.UsageError(f'Bad gin configuration: {e}') from None


def run():
  app.run(main)


if __name__ == '__main__':
  run()
