r"""Parity table: our converted models vs the TensorFlow Model Garden.

For every model id: a randomized Model Garden RetinaNet and classifier (random
weights and batch-norm statistics) are saved, converted by `spinenet-convert`'s
library and run on the same random images in inference mode. Prints, per id
and task, the worst relative difference `max |ours - MG| / max |MG|` of each
output level (pass: <= 1e-4), then the detection-level check (our
post-processing vs MG's MultilevelDetectionGenerator on the same raw outputs).
The last line is one JSON object.

Usage:
  .venv/bin/python -m benchmarks.parity [--ids=49S,mobile-49XS] [--size=128]
"""
import gc
import json
import sys
import tempfile
import time

from absl import app
from absl import flags

import tf_keras

try:
  from benchmarks import _machine
  from benchmarks import _parity_harness as harness
except ModuleNotFoundError as e:
  if e.name != 'benchmarks':
    raise
  sys.exit('benchmarks/parity.py: run it as a module from the repository root: '
           '.venv/bin/python -m benchmarks.parity')

_IDS = flags.DEFINE_list('ids', list(harness.IDS), 'Model ids to compare.')
_SIZE = flags.DEFINE_integer('size', harness.IMAGE_SIZE,
                             'Input size (multiple of 128).', lower_bound=128)
_DETECTION_ID = flags.DEFINE_string('detection_id', 'mobile-49XS',
                                    'Id whose raw outputs feed the detection check.')
_CANDIDATES = (40, 400, 12000)


def _row(model_id, task, levels):
  worst = max(levels.values())
  cells = ' '.join(f'{k}={v:.1e}' for k, v in levels.items())
  verdict = 'pass' if worst <= harness.TOLERANCE else 'FAIL'
  print(f'{model_id:<12} {task:<15} {worst:9.2e}  {verdict:<4}  {cells}', flush=True)
  return dict(id=model_id, task=task, worst=worst, levels=levels,
              passed=worst <= harness.TOLERANCE)


def main(argv):
  del argv
  rows, detection, start = [], [], time.time()
  print(f'{"id":<12} {"task":<15} {"worst":>9}  {"ok":<4}  per level (relative to '
        f'max |MG|), {_SIZE.value} px, tolerance {harness.TOLERANCE:g}')
  for i, model_id in enumerate(_IDS.value):
    with tempfile.TemporaryDirectory() as workdir:
      diffs, state = harness.model_parity(model_id, workdir, size=_SIZE.value)
      for task in ('retinanet', 'backbone', 'classification'):
        rows.append(_row(model_id, task, diffs[task]))
      if model_id == _DETECTION_ID.value:
        for n in _CANDIDATES:
          shift = harness.shift_to_candidates(state['raw'][0], state['num_classes'], n)
          report = harness.detection_parity(state, shift, size=_SIZE.value)
          report['candidates'] = n
          report['passed'] = (report['num_detections'][0] == report['num_detections'][1]
                              and report['classes_equal'] and report['anchors'] == 0.0
                              and report['boxes'] <= 1e-4 and report['scores'] <= 1e-5)
          detection.append(report)
    del state
    tf_keras.backend.clear_session()
    gc.collect()
    done = time.time() - start
    print(f'# {i + 1}/{len(_IDS.value)} ids, {done:.0f}s elapsed, ETA '
          f'{done / (i + 1) * (len(_IDS.value) - i - 1):.0f}s', file=sys.stderr, flush=True)
  for d in detection:
    print(f'detection ({_DETECTION_ID.value}, ~{d["candidates"]} candidates/image): '
          f'num_detections ours {d["num_detections"][0]} MG {d["num_detections"][1]}, '
          f'classes equal {d["classes_equal"]}, boxes rel {d["boxes"]:.1e}, '
          f'scores abs {d["scores"]:.1e} -> {"pass" if d["passed"] else "FAIL"}')
  passed = all(r['passed'] for r in rows) and all(d['passed'] for d in detection)
  print(json.dumps(dict(
      benchmark='model_garden_parity', size=_SIZE.value, tolerance=harness.TOLERANCE,
      worst=max(r['worst'] for r in rows), passed=passed,
      rows=[{k: r[k] for k in ('id', 'task', 'worst')} for r in rows],
      detection=[{k: d[k] for k in ('candidates', 'num_detections', 'boxes', 'scores',
                                    'passed')} for d in detection],
      seconds=round(time.time() - start, 1), env=_machine.env_summary())))


if __name__ == '__main__':
  app.run(main)
