r"""Accuracy of our export variants: COCO AP of each on a validation split.

Exports a trained model (gin files + checkpoint) in every variant of
`benchmarks._serving_exports.VARIANTS` (`float32`: the Keras variables as
they are; `float32_folded`; `bfloat16_folded`), runs each SavedModel's
`serve_bytes` signature over the images of a COCO JSON
(`benchmarks._saved_model_eval`) and prints the AP of each and its difference
from the plain float32 export in AP points. The last line is one JSON object:
`AP`, `AP50` and `ap_delta_points` per variant, and `env` (machine, CPU flags).

`benchmarks/serving.py` times the same variants against the Model Garden.

Usage (from the repository root):
  .venv/bin/python -m benchmarks.serving_accuracy \
    --gin_file=experiments/demo_cpu.gin --checkpoint=demo_output/model \
    --val_images=demo_output/shapes/val --val_json=demo_output/shapes/annotations/val.json
"""
import json
import os
import shutil
import tempfile
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging

from benchmarks import _machine
from benchmarks import _saved_model_eval
from benchmarks import _serving_exports
from spinenet.config import entry_points

_GIN_FILE = flags.DEFINE_multi_string('gin_file', [], 'Gin file(s) of the trained model.')
_GIN_PARAM = flags.DEFINE_multi_string('gin_param', [], 'Extra gin bindings.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Checkpoint prefix or model_dir.')
_VAL_IMAGES = flags.DEFINE_string('val_images', None, 'Directory of the validation images.')
_VAL_JSON = flags.DEFINE_string('val_json', None, 'COCO JSON of the validation split.')


def ap_deltas(metrics, reference='float32'):
  """AP, AP50 and AP difference in points (x100) from `reference` per variant.

  Args:
    metrics: `{variant: {'AP': float, 'AP50': float, ...}}`, in [0, 1].
    reference: the variant the differences are taken from; the first
      variant when it is absent.

  Returns:
    `{'AP': {variant: AP}, 'AP50': {...}, 'ap_delta_points': {...}}`, rounded.
  """
  base = metrics.get(reference, next(iter(metrics.values())))['AP']
  return {'AP': {n: round(m['AP'], 4) for n, m in metrics.items()},
          'AP50': {n: round(m['AP50'], 4) for n, m in metrics.items()},
          'ap_delta_points': {n: round(100 * (m['AP'] - base), 2) for n, m in metrics.items()}}


def accuracy(gin_files: Sequence[str], gin_params: Sequence[str], checkpoint: str,
             image_dir: str, annotation_json: str, work_dir: Optional[str] = None,
             variants: Sequence[str] = tuple(_serving_exports.VARIANTS)):
  """COCO AP of each export variant of a trained model on a COCO split.

  Returns:
    `ap_deltas` of the metrics of each variant.
  """
  own_dir = work_dir is None
  work_dir = work_dir or tempfile.mkdtemp(prefix='serving_accuracy_')
  metrics = {}
  try:
    for name in variants:
      result = entry_points.export_from_config(
          gin_files, gin_params, os.path.join(work_dir, name), checkpoint=checkpoint,
          options=_serving_exports.VARIANTS[name])
      metrics[name] = _saved_model_eval.evaluate_saved_model(
          result.path, image_dir, annotation_json)
      logging.info('%s: AP %.4f AP50 %.4f', name, metrics[name]['AP'], metrics[name]['AP50'])
  finally:
    if own_dir:
      shutil.rmtree(work_dir, ignore_errors=True)
  return ap_deltas(metrics)


def main(argv):
  del argv
  missing = [f'--{f.name}' for f in (_CHECKPOINT, _VAL_IMAGES, _VAL_JSON) if not f.value]
  if not _GIN_FILE.value:
    missing.insert(0, '--gin_file')
  if missing:
    raise app.UsageError(f'benchmarks.serving_accuracy needs {", ".join(missing)}.')
  try:
    variants = _serving_exports.check_variants(_serving_exports.VARIANT_NAMES.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  result = accuracy(_GIN_FILE.value, _GIN_PARAM.value, _CHECKPOINT.value, _VAL_IMAGES.value,
                    _VAL_JSON.value, _serving_exports.WORK_DIR.value, variants)
  result['env'] = _machine.env_summary()
  print(json.dumps(result), flush=True)


def run():
  app.run(main)


if __name__ == '__main__':
  run()
