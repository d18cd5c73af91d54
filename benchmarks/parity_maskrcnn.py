r"""Mask R-CNN parity table: our converted model vs the Model Garden's `MaskRCNNModel`.

A randomized Model Garden Mask R-CNN (random weights and batch-norm
statistics; SpineNet backbone, the id's Mask R-CNN recipe heads) is saved,
converted by `spinenet-convert`'s library (task 'maskrcnn') and both run in
inference mode on the same random images. Prints per output the worst
absolute difference, max |reference| and their ratio (pass: <= 1e-4): RPN
scores and boxes per level, proposals from the same RPN outputs, RoIAlign
features, box head and mask head outputs for the same proposals. The last
line is one JSON object.

Usage:
  .venv/bin/python -m benchmarks.parity_maskrcnn [--model=49] [--size=256] [--narrow]
"""
import json
import sys
import tempfile
import time

from absl import app
from absl import flags

try:
  from benchmarks import _machine
  from benchmarks import _maskrcnn_parity as parity
except ModuleNotFoundError as e:
  if e.name != 'benchmarks':
    raise
  sys.exit('benchmarks/parity_maskrcnn.py: run it as a module from the repository root: '
           '.venv/bin/python -m benchmarks.parity_maskrcnn')

_MODEL = flags.DEFINE_string('model', '49', 'SpineNet model id (49S, 49, 96, 143, 190).')
_SIZE = flags.DEFINE_integer('size', 256, 'Input size (multiple of 128).', lower_bound=128)
_CLASSES = flags.DEFINE_integer('num_classes', 91, 'Classes, background included.')
_NARROW = flags.DEFINE_bool('narrow', False, 'Narrow heads (32 filters, FC 64), as the test.')


def main(argv):
  del argv
  start = time.time()
  overrides = (dict(rpn_filters=32, box_filters=32, fc_dims=64, mask_filters=32)
               if _NARROW.value else None)
  with tempfile.TemporaryDirectory() as workdir:
    mg, ours, result = parity.converted_pair(_MODEL.value, _SIZE.value, workdir,
                                             _CLASSES.value, overrides)
    rows = parity.compare(mg, ours, _SIZE.value)
  print(f'Mask R-CNN SpineNet-{_MODEL.value}, {_SIZE.value} px, {_CLASSES.value} classes, '
        f'{len(result.mapping)} variables converted; tolerance {parity.TOLERANCE:g}')
  print(parity.format_rows(rows))
  passed = all(r[2] <= parity.TOLERANCE for r in rows.values())
  print(f'{"all pass" if passed else "FAILED"} ({time.time() - start:.0f} s)')
  print(json.dumps({'model': _MODEL.value, 'size': _SIZE.value, 'passed': passed,
                    'tolerance': parity.TOLERANCE,
                    'rows': {k: dict(max_abs_diff=d, max_abs_ref=s, ratio=r)
                             for k, (d, s, r) in rows.items()},
                    'env': _machine.env_summary()}, sort_keys=True))


if __name__ == '__main__':
  app.run(main)
