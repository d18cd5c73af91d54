r"""Exports a trained model as a TF Serving SavedModel version.

Usage:
  spinenet-export --gin_file=experiments/demo_cpu.gin \
    --checkpoint=demo_output/model --export_dir=exports/shapes [--version=N] \
    [--precision=float32|bfloat16] [--nofold_batch_norm] [--label_map=FILE]

Writes EXPORT_DIR/<version>/ (tag `serve`; signatures serving_default (uint8
images), serve_bytes (encoded images), serve_tf_example; the label map as an
asset). Serve it with TF Serving (`--model_base_path=EXPORT_DIR`) or
`spinenet-serve`; see docs/serving.md.
"""
import json

from absl import app
from absl import flags

from spinenet import config
from spinenet.serving import export_lib
from spinenet.serving import preprocessing

_GIN_FILE = flags.DEFINE_multi_string(
    'gin_file', [], 'Gin file(s) of the trained model (repeatable).')
_GIN_PARAM = flags.DEFINE_multi_string(
    'gin_param', [], 'Gin binding(s) applied after the files (repeatable).')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'Checkpoint prefix, or a model_dir (its latest checkpoint).',
    required=True)
_EXPORT_DIR = flags.DEFINE_string(
    'export_dir', None, 'Model base path; the export goes to EXPORT_DIR/<version>.',
    required=True)
_VERSION = flags.DEFINE_integer(
    'version', None, 'Version number (default: one more than the largest present).',
    lower_bound=1)
_LABEL_MAP = flags.DEFINE_string(
    'label_map', None, 'Label map JSON (PREFIX.label_map.json of '
    'spinenet-create-coco-tfrecord); default: the one next to the records.')
_PRECISION = flags.DEFINE_enum(
    'precision', 'float32', export_lib.PRECISIONS,
    'Compute dtype of the network (bfloat16 pays off with AVX512-BF16/AMX).')
_FOLD_BATCH_NORM = flags.DEFINE_bool(
    'fold_batch_norm', True,
    'Freeze the network and fold batch norms into convolutions (faster on CPU).')
_MAX_IMAGE_PIXELS = flags.DEFINE_integer(
    'max_image_pixels', preprocessing.DEFAULT_MAX_PIXELS,
    'Larger input images are refused.', lower_bound=1)
_TOP_K = flags.DEFINE_integer('top_k', 5, 'Classification: classes reported.',
                              lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not _GIN_FILE.value:
    raise app.UsageError('--gin_file is required (the gin file(s) the model was '
                         'trained with).')
  options = export_lib.ExportOptions(
      precision=_PRECISION.value, fold_batch_norm=_FOLD_BATCH_NORM.value,
      max_image_pixels=_MAX_IMAGE_PIXELS.value, top_k=_TOP_K.value)
  try:
    result = config.export_from_config(
        _GIN_FILE.value, _GIN_PARAM.value, _EXPORT_DIR.value,
        checkpoint=_CHECKPOINT.value, version=_VERSION.value,
        label_map_path=_LABEL_MAP.value, options=options)
  except (config.ConfigError, ValueError) as e:
    raise app.UsageError(str(e)) from None
  print(f'exported {result.task} model to {result.path}')
  print(json.dumps(result.info, indent=1, sort_keys=True))


def run():
  app.run(main)


if __name__ == '__main__':
  run()
