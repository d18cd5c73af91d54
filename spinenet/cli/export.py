r"""Exports a trained model as a TF Serving SavedModel version, or as TFLite.

Usage:
  spinenet-export --gin_file=experiments/demo_cpu.gin \
    --checkpoint=demo_output/model --export_dir=exports/shapes [--version=N] \
    [--precision=float32|bfloat16] [--nofold_batch_norm] [--label_map=FILE] \
    [--mask_format=dense|png]
  spinenet-export --format=tflite --quantization=none|float16|int8 \
    --gin_file=experiments/demo_mobile_cpu.gin --gin_param=... \
    --checkpoint=MODEL_DIR --export_dir=exports/shapes_tflite \
    [--calibration_file_pattern=...] [--calibration_images=200]

--format=saved_model (default) writes EXPORT_DIR/<version>/ (tag `serve`;
signatures serving_default (uint8 images), serve_bytes (encoded images),
serve_tf_example; the label map as an asset; Mask R-CNN models add
detection_masks, or detection_masks_png_bytes with --mask_format=png). Serve
it with TF Serving (`--model_base_path=EXPORT_DIR`) or `spinenet-serve`; see
docs/serving.md.

--format=tflite writes EXPORT_DIR/model_<float32|float16|int8>.tflite and
EXPORT_DIR/labels.txt: batch 1, box decoding and NMS inside the file
(TFLite_Detection_PostProcess), int8 calibrated on the training records; see
docs/tflite.md.
"""
import json

from absl import app
from absl import flags

from spinenet import config
from spinenet.serving import export_lib
from spinenet.serving import preprocessing
from spinenet.serving import signatures as sig
from spinenet.serving import tflite_export

FORMATS = ('saved_model', 'tflite')

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
_MASK_FORMAT = flags.DEFINE_enum(
    'mask_format', 'dense', sig.MASK_FORMATS,
    'Mask R-CNN: dense (detection_masks uint8 [B, N, H, W], 0/1 in the caller\'s '
    'pixels) or png (detection_masks_png_bytes string [B, N], one PNG per detection: '
    'REST responses of kilobytes instead of megabytes); see docs/serving.md.')
_FORMAT = flags.DEFINE_enum('format', 'saved_model', FORMATS,
                            'saved_model (TF Serving) or tflite (mobile).')
_QUANTIZATION = flags.DEFINE_enum(
    'quantization', 'none', tflite_export.QUANTIZATIONS,
    'tflite: none (float32), float16 (weights) or int8 (full integer, uint8 input, '
    'calibrated on the training records).')
_CALIBRATION_FILE_PATTERN = flags.DEFINE_string(
    'calibration_file_pattern', None,
    'tflite int8: TFRecords of representative images (default: the training records '
    'of the gin files).')
_CALIBRATION_IMAGES = flags.DEFINE_integer(
    'calibration_images', tflite_export.TFLiteOptions.calibration_images,
    'tflite int8: images used for calibration.', lower_bound=1)
_TFLITE_NMS = flags.DEFINE_enum(
    'tflite_nms', 'per_class', tflite_export.NMS_MODES,
    'tflite detection post-processing: per_class (default; the SavedModel\'s per-class '
    'NMS from TFLite builtins, same detections), fast (the TFLite_Detection_PostProcess '
    'op, class-agnostic) or regular (that op\'s per-class NMS; drops label 2 in LiteRT '
    '2.3.0, see docs/tflite.md).')
_TFLITE_INT8_FLOAT_OPS = flags.DEFINE_list(
    'tflite_int8_float_ops', list(tflite_export.TFLiteOptions.int8_float_ops),
    'tflite int8: builtin ops left float32 (default HARD_SWISH: XNNPACK has no int8 hard '
    'swish here and would leave those ops to slow builtin kernels); empty: quantize all.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not _GIN_FILE.value:
    raise app.UsageError('--gin_file is required (the gin file(s) the model was '
                         'trained with).')
  if _FORMAT.value == 'tflite':
    _export_tflite()
    return
  options = export_lib.ExportOptions(
      precision=_PRECISION.value, fold_batch_norm=_FOLD_BATCH_NORM.value,
      max_image_pixels=_MAX_IMAGE_PIXELS.value, top_k=_TOP_K.value,
      mask_format=_MASK_FORMAT.value)
  try:
    result = config.export_from_config(
        _GIN_FILE.value, _GIN_PARAM.value, _EXPORT_DIR.value,
        checkpoint=_CHECKPOINT.value, version=_VERSION.value,
        label_map_path=_LABEL_MAP.value, options=options)
  except (config.ConfigError, ValueError) as e:
    raise app.UsageError(str(e)) from None
  print(f'exported {result.task} model to {result.path}')
  print(json.dumps(result.info, indent=1, sort_keys=True))


def _export_tflite():
  """--format=tflite."""
  refused = [f'--{name}' for name, flag in (
      ('precision', _PRECISION), ('fold_batch_norm', _FOLD_BATCH_NORM),
      ('version', _VERSION), ('mask_format', _MASK_FORMAT)) if flag.present]
  if refused:
    raise app.UsageError(f'{", ".join(refused)} apply to --format=saved_model only: '
                         'a TFLite file is float32 (--quantization=none), float16 or '
                         'int8, always folded, and not versioned.')
  options = tflite_export.TFLiteOptions(
      quantization=_QUANTIZATION.value, calibration_images=_CALIBRATION_IMAGES.value,
      nms=_TFLITE_NMS.value,
      int8_float_ops=tuple(op.strip().upper() for op in _TFLITE_INT8_FLOAT_OPS.value
                           if op.strip()))
  try:
    result = config.export_tflite_from_config(
        _GIN_FILE.value, _GIN_PARAM.value, _EXPORT_DIR.value,
        checkpoint=_CHECKPOINT.value, label_map_path=_LABEL_MAP.value,
        calibration_file_pattern=_CALIBRATION_FILE_PATTERN.value, options=options)
  except (config.ConfigError, ValueError, TypeError) as e:
    raise app.UsageError(str(e)) from None
  print(f'exported {result.info["task"]} model to {result.path} (labels: '
        f'{result.labels_path})')
  print(json.dumps(result.info, indent=1, sort_keys=True))


def run():
  app.run(main)


if __name__ == '__main__':
  run()
