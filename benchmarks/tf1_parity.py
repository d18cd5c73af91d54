r"""Parity table: converted TF1 model-zoo checkpoints vs the authors' TF1 code.

For each configuration, the authors' TF1 code (`make_tf1_reference.py` in the
`--tf1_reference` folder: tensorflow/tpu `models/official/detection` plus that
script) builds the zoo model, writes a checkpoint with the zoo's variable
names (random weights and batch-norm statistics) and its raw outputs on a
seeded image. We convert that checkpoint with `spinenet.training.tf1_checkpoint`
(what `spinenet-convert --tf1_checkpoint` runs), build our model at the same
size and run it on the same normalized input. Per output (RetinaNet class and
box outputs and backbone features of P3-P7; classification logits and
backbone features; Mask R-CNN RPN outputs per level, Fast R-CNN class and box
outputs on the TF1 proposals and masks on the TF1 detections, listed row by
row under its line: `benchmarks/_tf1_maskrcnn_parity.py`) the criterion is
`max |ours - theirs| <= 1e-4 * max |theirs|`.

Also checked per configuration: our input normalization
(`spinenet.data.preprocess.normalize_image`, the serving signature's) on the
reference's uint8 pixels against the TF1 input code's normalized input, and,
for RetinaNet, our anchors against theirs.

References are generated once into `--work_dir/<name>` (several minutes each
on 2 cores) and reused while their size and overrides match.

Usage:
  .venv/bin/python -m benchmarks.tf1_parity --tf1_reference=path/to/tf1_reference \
      [--work_dir=/tmp/tf1_ref_out] [--configs=spinenet49_retinanet,...]

Prints the table, then one JSON line: `worst_rel_diff` and an entry per
configuration.
"""
import dataclasses
import json
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional, Tuple

from absl import app
from absl import flags

import numpy as np

try:
  from benchmarks import _machine
  from benchmarks import _tf1_maskrcnn_parity
except ModuleNotFoundError as e:
  if e.name != 'benchmarks':
    raise
  sys.exit('benchmarks/tf1_parity.py: run it as a module from the repository root: '
           '.venv/bin/python -m benchmarks.tf1_parity --tf1_reference=DIR')

TOLERANCE = 1e-4
RELU = 'batch_norm_activation.activation=relu'


@dataclasses.dataclass(frozen=True)
class Config:
  """One comparison: a TF1 config, its overrides and size, and our id."""
  name: str
  tf1_config: str
  model_id: str
  task: str
  activation: str
  size: Tuple[int, int]

  @property
  def params_override(self) -> Optional[str]:
    return RELU if self.activation == 'relu' else None


def configs(size, classification_size, mobile_size):
  """Every configuration of the table."""
  out = []
  for act in ('swish', 'relu'):
    for mid in ('49S', '49', '96', '143', '190'):
      suffix = '_relu' if act == 'relu' else ''
      out.append(Config(f'spinenet{mid}_retinanet{suffix}', f'spinenet{mid}_retinanet',
                        mid, 'retinanet', act, (size, size)))
  out.append(Config('spinenet-mbconv49_retinanet', 'spinenet-mbconv49_retinanet', 'MB-49',
                    'retinanet', 'swish', (mobile_size, mobile_size)))
  out.append(Config('spinenet49_retinanet_256x384', 'spinenet49_retinanet', '49',
                    'retinanet', 'swish', (256, 384)))
  for mid in ('49', '96', '143', '190'):
    out.append(Config(f'spinenet{mid}_classification', f'spinenet{mid}_classification',
                      mid, 'classification', 'swish',
                      (classification_size, classification_size)))
  out.append(Config('spinenet49_classification_relu', 'spinenet49_classification', '49',
                    'classification', 'relu', (classification_size, classification_size)))
  out.append(Config('spinenet49_mrcnn', 'spinenet49_mrcnn', '49', 'backbone', 'relu',
                    (size, size)))
  out.append(Config('spinenet49_mrcnn_full', 'spinenet49_mrcnn', '49', 'maskrcnn', 'relu',
                    (size, size)))
  return out


_REFERENCE = flags.DEFINE_string(
    'tf1_reference', None,
    'Folder with make_tf1_reference.py and the authors\' detection code.', required=True)
_WORK_DIR = flags.DEFINE_string(
    'work_dir', os.path.join(tempfile.gettempdir(), 'spinenet_tf1_parity'),
    'Generated references are kept here (one folder per configuration) and reused.')
_CONFIGS = flags.DEFINE_list('configs', None, 'Configuration names (default: all).')
_SIZE = flags.DEFINE_integer('size', 256, 'Detection input size (multiple of 128).')
_CLS_SIZE = flags.DEFINE_integer('classification_size', 224,
                                 'Classification input size (> 64).')
_MOBILE_SIZE = flags.DEFINE_integer('mobile_size', 384, 'SpineNetMB-49 input size.')
_PYTHON = flags.DEFINE_string('python', sys.executable,
                              'Interpreter that runs make_tf1_reference.py.')


def _matches(summary, config):
  size = summary.get('image_size')
  size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
  return (summary.get('config') == config.tf1_config and size == config.size and
          (summary.get('params_override') or None) == config.params_override)


def _reusable(folder, config):
  """Whether `folder` holds a finished reference of `config`'s run."""
  summary = os.path.join(folder, 'summary.json')
  if not (os.path.exists(os.path.join(folder, 'reference.npz')) and os.path.exists(summary)):
    return False
  with open(summary) as f:
    return _matches(json.load(f), config)


def generate(config, reference_dir, work_dir, python=sys.executable):
  """The reference folder of `config`, generated by the authors' code if needed.

  A row of the same TF1 run (e.g. `spinenet49_mrcnn` for its backbone and
  `spinenet49_mrcnn_full` for the whole model) reuses the other's folder.
  """
  out = os.path.join(work_dir, config.name)
  for folder in (out, os.path.join(work_dir, config.tf1_config)):
    if _reusable(folder, config):
      return folder, 0.0
  shutil.rmtree(out, ignore_errors=True)
  os.makedirs(work_dir, exist_ok=True)
  cmd = [python, os.path.join(reference_dir, 'make_tf1_reference.py'), '--config',
         config.tf1_config, '--output_dir', out]
  h, w = config.size
  cmd += ['--image_size', str(h)] if h == w else ['--height', str(h), '--width', str(w)]
  if config.params_override:
    cmd += ['--params_override', config.params_override]
  start = time.time()
  log = os.path.join(work_dir, f'{config.name}.log')
  with open(log, 'w') as f:
    done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
  if done.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed (exit {done.returncode}); see {log}')
  return out, time.time() - start


def _rel(ours, theirs):
  return float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)) /
               max(float(np.max(np.abs(theirs))), 1e-30))


def normalization_diff(ref):
  """Max |ours - TF1| of the normalized input: data parser's and serving's."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from spinenet.data import preprocess  # pylint: disable=g-import-not-at-top
  from spinenet.serving import preprocessing  # pylint: disable=g-import-not-at-top
  pixels = ref['input_pixels']
  parser = preprocess.normalize_image(tf.constant(pixels)).numpy()
  serving = preprocessing._normalize(tf.cast(pixels, tf.float32)).numpy()  # pylint: disable=protected-access
  return float(max(np.abs(parser - ref['input']).max(), np.abs(serving - ref['input']).max()))


def compare(config, ref_dir):
  """Converts the reference checkpoint and compares outputs; returns the entry."""
  from spinenet.training import tf1_checkpoint  # pylint: disable=g-import-not-at-top
  ref = np.load(os.path.join(ref_dir, 'reference.npz'))
  images = ref['input']
  with tempfile.TemporaryDirectory() as out:
    result = tf1_checkpoint.convert(ref_dir, config.model_id, config.task, out,
                                    activation=config.activation,
                                    input_size=tuple(images.shape[1:3]))
  model = result.model
  if config.task == 'maskrcnn':
    diffs, info, worst_anchor = _tf1_maskrcnn_parity.compare(model, ref)
    return dict(diffs=diffs, info=info, worst_rel_diff=max(diffs.values()),
                anchors_max_abs_px=worst_anchor,
                normalization_max_abs=normalization_diff(ref),
                variables=len(result.mapping))
  diffs = {}
  backbone = model if config.task == 'backbone' else model.backbone
  features = backbone(images, training=False)
  for level in range(3, 8):
    diffs[f'backbone_{level}'] = _rel(features[str(level)], ref[f'backbone_{level}'])
  entry = {}
  if config.task == 'retinanet':
    outputs = model(images, training=False)
    anchors = model.anchors(tuple(images.shape[1:3]))
    worst_anchor = 0.0
    for level in range(3, 8):
      diffs[f'cls_{level}'] = _rel(outputs['cls_outputs'][str(level)], ref[f'cls_{level}'])
      diffs[f'box_{level}'] = _rel(outputs['box_outputs'][str(level)], ref[f'box_{level}'])
      ours = np.reshape(anchors[str(level)], [-1, 4])
      worst_anchor = max(worst_anchor, float(np.abs(ours - ref[f'anchors_{level}']).max()))
    entry['anchors_max_abs_px'] = worst_anchor
  elif config.task == 'classification':
    diffs['logits'] = _rel(model(images, training=False), ref['logits'])
  entry.update(diffs=diffs, worst_rel_diff=max(diffs.values()),
               normalization_max_abs=normalization_diff(ref),
               variables=len(result.mapping))
  return entry


def _level_cells(diffs):
  by_level = {}
  for key, value in diffs.items():
    level = key.rsplit('_', 1)[-1]
    by_level[level] = max(by_level.get(level, 0.0), value)
  return ' '.join(f'{k}={v:.1e}' for k, v in by_level.items())


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel('ERROR')
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  table = configs(_SIZE.value, _CLS_SIZE.value, _MOBILE_SIZE.value)
  if _CONFIGS.value:
    known = {c.name: c for c in table}
    unknown = [n for n in _CONFIGS.value if n not in known]
    if unknown:
      raise app.UsageError(f'--configs: unknown {unknown}; expected some of {list(known)}')
    table = [known[n] for n in _CONFIGS.value]
  reference_dir = os.path.abspath(_REFERENCE.value)
  if not os.path.exists(os.path.join(reference_dir, 'make_tf1_reference.py')):
    raise app.UsageError(f'--tf1_reference={_REFERENCE.value}: no make_tf1_reference.py '
                         'there.')
  start, entries = time.time(), {}
  print(f'{"configuration":<32} {"id":<6} {"task":<14} {"act":<5} {"size":<8} '
        f'{"worst":>8}  {"ok":<4} {"norm":>7} {"anchors":>7}  per level (max over outputs), '
        f'tolerance {TOLERANCE:g} x max|TF1|', flush=True)
  for i, config in enumerate(table):
    ref_dir, gen_seconds = generate(config, reference_dir, _WORK_DIR.value, _PYTHON.value)
    entry = compare(config, ref_dir)
    tf.keras.backend.clear_session()
    entry.update(id=config.model_id, task=config.task, activation=config.activation,
                 size=list(config.size), passed=entry['worst_rel_diff'] <= TOLERANCE,
                 generate_seconds=round(gen_seconds, 1))
    entries[config.name] = entry
    size = f'{config.size[0]}x{config.size[1]}'
    anchors = entry.get('anchors_max_abs_px')
    print(f'{config.name:<32} {config.model_id:<6} {config.task:<14} '
          f'{config.activation:<5} {size:<8} {entry["worst_rel_diff"]:8.1e}  '
          f'{"pass" if entry["passed"] else "FAIL":<4} {entry["normalization_max_abs"]:7.1e} '
          f'{"-" if anchors is None else f"{anchors:.1e}":>7}  {_level_cells(entry["diffs"])}',
          flush=True)
    if config.task == 'maskrcnn':
      print('\n'.join(_tf1_maskrcnn_parity.format_rows(entry['diffs'], entry['info'])),
            flush=True)
    elapsed = time.time() - start
    print(f'  [{i + 1}/{len(table)}] {elapsed:.0f}s elapsed, ETA '
          f'{elapsed / (i + 1) * (len(table) - i - 1):.0f}s', file=sys.stderr, flush=True)
  worst = max(e['worst_rel_diff'] for e in entries.values())
  summary = dict(worst_rel_diff=worst, tolerance=TOLERANCE,
                 passed=all(e['passed'] for e in entries.values()),
                 configs=entries, seconds=round(time.time() - start, 1),
                 env=_machine.env_summary())
  print(json.dumps(summary))


if __name__ == '__main__':
  app.run(main)
