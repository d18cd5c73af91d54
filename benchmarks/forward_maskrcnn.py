r"""Inference speed of SpineNet Mask R-CNN, ours vs the Model Garden, in one run.

Batch 1, one random image, both models built with the id's Mask
R-CNN recipe (`registry.build_maskrcnn`; the Model Garden's
`maskrcnn_spinenet_coco` overridden to the same heads,
`benchmarks/_model_garden_maskrcnn.py`) and timed interleaved round by round
in one process (`_timing.time_interleaved`), medians:

* raw: backbone + RPN head (ours: `model.features` + `model.rpn_head`; the
  Model Garden: `backbone` + `rpn_head`), each in a `tf.function`.
* end to end: the inference call, i.e. raw + proposals (per-level top-k, NMS)
  + RoIAlign + box head on the proposals + per-class decoding and NMS + mask
  head on the detections (ours: `model(features, training=False)`; the Model
  Garden: `MaskRCNNModel(images, image_shape, training=False)`), each in one
  `tf.function`; the Model Garden also with `jit_compile=True` if it
  compiles (`--mg_xla`). The ratio compares against the faster Model
  Garden variant. Ours as built by default: in float32 on a CPU its box and
  mask head convs run as Winograd convolutions, each head's conv stack one
  XLA cluster (`registry.build_maskrcnn(head_winograd_min_size=7)`).
* end to end, direct convolutions (`--direct`, default on): ours built with
  `head_winograd_min_size=0`, the plain convolutions a SavedModel export
  runs (`ours_e2e_direct`).

Precisions: every variant above in float32, and (`--bfloat16`, default on)
the raw and end-to-end ones again with both models built under the Keras
policy `mixed_bfloat16` (`*_mixed_bfloat16`; same weights; fast only on
CPUs with AVX512-BF16 or AMX), whose ratios compare best against best at
that precision, as `benchmarks/train_step.py` does. Winograd is float32
only: in bfloat16 the heads run direct convolutions.

Both models have their initial (untrained) weights; the same number of
proposals (1000) and detections (100, padded) flow through both second
stages whatever the weights, but an untrained box head scores every class
near 1/91, below the 0.05 threshold, so NMS has nothing to do on either side.

The last line printed is one JSON object: `{"ours_raw_ms", "mg_raw_ms",
"ours_e2e_ms", "mg_e2e_ms", "mg_e2e_xla_ms", "ours_e2e_direct_ms",
"ratio_raw", "ratio_end_to_end", "ratio_end_to_end_direct", the same
`*_mixed_bfloat16` keys and ratios, "precision", "env"}` (ratios ours /
Model Garden, float32 unless suffixed).

Usage (from the repository root):
  .venv/bin/python -m benchmarks.forward_maskrcnn [--model=49] [--size=640] [--iters=5]
"""
import json
import os
import sys

if __package__ in (None, ''):  # Run as a script: make `benchmarks` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from benchmarks import _machine  # noqa: E402
from benchmarks import _model_garden_maskrcnn as mg_maskrcnn  # noqa: E402
from benchmarks import _timing  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from spinenet.modeling import registry  # noqa: E402


def _host(nest):
  return tf.nest.map_structure(lambda t: t.numpy(), nest)


def _e2e_fn(model):
  def e2e(images, image_shape):
    info = tf.stack([image_shape, image_shape, tf.ones_like(image_shape),
                     tf.zeros_like(image_shape)], axis=1)
    return model({'images': images, 'image_info': info}, training=False)
  return e2e


_MG_KEYS = ('detection_boxes', 'detection_scores', 'detection_classes', 'num_detections',
            'detection_masks')


def _variants(ours, mg_model, mg_xla, ours_direct=None, suffix=''):
  """`{name: (callable of (images, image_shape), description)}`; `suffix` is
  appended to every name (e.g. '_mixed_bfloat16')."""
  def ours_raw(images, image_shape):
    del image_shape
    return ours.rpn_head(ours.features(images, training=False), training=False)

  def mg_raw(images, image_shape):
    del image_shape
    return mg_model.rpn_head(mg_model.backbone(images, training=False), training=False)

  def mg_e2e(images, image_shape):
    outputs = mg_model(images, image_shape, training=False)
    return {k: outputs[k] for k in _MG_KEYS}

  variants = {
      'ours_raw': (tf.function(ours_raw), 'backbone + RPN head'),
      'mg_raw': (tf.function(mg_raw), 'backbone + RPN head'),
      'ours_e2e': (tf.function(_e2e_fn(ours)), 'model(features, training=False)'),
      'mg_e2e': (tf.function(mg_e2e), 'MaskRCNNModel(images, image_shape, training=False)'),
  }
  if ours_direct is not None:
    variants['ours_e2e_direct'] = (tf.function(_e2e_fn(ours_direct)),
                                   'the same, direct head convs (as exported)')
  if mg_xla:
    variants['mg_e2e_xla'] = (tf.function(mg_e2e, jit_compile=True),
                              'the same, tf.function(jit_compile=True)')
  return {name + suffix: v for name, v in variants.items()}


def _compiles(name, fn, args):
  try:
    _host(fn(*args))
    return True
  except (tf.errors.OpError, ValueError, TypeError) as e:
    logging.warning('%s does not run: %s', name, str(e).splitlines()[0][:200])
    return False


def _build_ours(model_id, size, precision, **kwargs):
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(precision)
  try:
    return registry.build_maskrcnn(model_id, input_size=size, **kwargs)
  finally:
    keras.mixed_precision.set_global_policy(previous)


def _all_variants(model_id, size, mg_xla, direct, bfloat16):
  logging.info('Building ours (%s @ %d) and the Model Garden\'s.', model_id, size)
  ours = _build_ours(model_id, size, 'float32')
  ours_direct = None
  if direct:
    ours_direct = _build_ours(model_id, size, 'float32', head_winograd_min_size=0)
    ours_direct.set_weights(ours.get_weights())
  mg_model = mg_maskrcnn.build_mg_maskrcnn(model_id, size)
  variants = _variants(ours, mg_model, mg_xla, ours_direct)
  if bfloat16:
    # Winograd is float32 only: in bfloat16 the heads' convs run directly.
    ours_bf16 = _build_ours(model_id, size, 'mixed_bfloat16')
    ours_bf16.set_weights(ours.get_weights())
    mg_bf16 = mg_maskrcnn.build_mg_maskrcnn(model_id, size, precision='mixed_bfloat16')
    mg_bf16.set_weights(mg_model.get_weights())
    variants.update(_variants(ours_bf16, mg_bf16, mg_xla, suffix=_BF16))
  return variants


_BF16 = '_mixed_bfloat16'


def _best(medians, names):
  times = [medians[n] for n in names if medians.get(n) is not None]
  return min(times) if times else None


def _ratio(a, b):
  return a / b if a is not None and b is not None else None


def benchmark(model_id='49', size=640, iters=5, warmup=2, mg_xla=True, direct=True,
              bfloat16=True):
  """Measures every variant; returns the report dict (see the module docstring)."""
  env = _machine.env_summary()
  images = tf.random.stateless_normal([1, size, size, 3], [2020, 6])
  image_shape = tf.constant([[size, size]], tf.float32)
  args = (images, image_shape)
  runnable, skipped = {}, {}
  for name, (fn, description) in _all_variants(model_id, size, mg_xla, direct,
                                               bfloat16).items():
    logging.info('Tracing %s.', name)
    if _compiles(name, fn, args):
      runnable[name] = (fn, description)
    else:
      skipped[name] = description

  def progress(i, times):
    logging.info('round %d/%d | %s | load %.2f', i + 1, iters,
                 ' '.join(f'{n}: {t:.0f}' for n, t in times.items()), os.getloadavg()[0])

  timed = _timing.time_interleaved({n: f for n, (f, _) in runnable.items()}, args,
                                   warmup=warmup - 1, iters=iters, on_round=progress)
  variants = {n: dict(median_ms=m, min_ms=lo, all_ms=all_ms, description=runnable[n][1])
              for n, (m, lo, all_ms) in timed.items()}
  medians = {n: v['median_ms'] for n, v in variants.items()}
  median = medians.get
  mg_e2e_best = _best(medians, ['mg_e2e', 'mg_e2e_xla'])
  env['load_average_at_end'] = tuple(round(x, 2) for x in os.getloadavg())
  report = dict(env=env, model=model_id, size=size, iters=iters, variants=variants,
                skipped=skipped, ours_raw_ms=median('ours_raw'), mg_raw_ms=median('mg_raw'),
                ours_e2e_ms=median('ours_e2e'), mg_e2e_ms=median('mg_e2e'),
                mg_e2e_xla_ms=median('mg_e2e_xla'),
                ours_e2e_direct_ms=median('ours_e2e_direct'),
                ratio_raw=_ratio(median('ours_raw'), median('mg_raw')),
                ratio_end_to_end=_ratio(median('ours_e2e'), mg_e2e_best),
                ratio_end_to_end_direct=_ratio(median('ours_e2e_direct'), mg_e2e_best))
  for kind in ('raw', 'e2e'):
    for side in ('ours', 'mg'):
      report[f'{side}_{kind}{_BF16}_ms'] = median(f'{side}_{kind}{_BF16}')
  report['mg_e2e_xla' + _BF16 + '_ms'] = median('mg_e2e_xla' + _BF16)
  report['ratio_raw' + _BF16] = _ratio(median('ours_raw' + _BF16), median('mg_raw' + _BF16))
  # Best against best at the same precision.
  report['ratio_end_to_end' + _BF16] = _ratio(
      median('ours_e2e' + _BF16), _best(medians, ['mg_e2e' + _BF16, 'mg_e2e_xla' + _BF16]))
  return report


def format_report(report):
  lines = [f"SpineNet-{report['model']} Mask R-CNN, {report['size']}x{report['size']}, "
           f"batch 1, float32 and mixed bfloat16, {report['iters']} timed iterations (medians)",
           'env: ' + ', '.join(f'{k}={v}' for k, v in report['env'].items())]
  lines += _timing.variant_table(report['variants'], report['skipped'], 32)
  lines.append(f"ratio raw (ours / MG): {report['ratio_raw']:.3f}   "
               f"ratio end to end (ours / faster MG): {report['ratio_end_to_end']:.3f}")
  if report['ratio_end_to_end_direct'] is not None:
    lines.append('ratio end to end, direct head convs (ours / faster MG): '
                 f"{report['ratio_end_to_end_direct']:.3f}")
  if report['ratio_end_to_end' + _BF16] is not None:
    lines.append(f"mixed bfloat16: ratio raw {report['ratio_raw' + _BF16]:.3f}   "
                 f"ratio end to end (ours / faster MG) "
                 f"{report['ratio_end_to_end' + _BF16]:.3f}")
  return '\n'.join(lines)


FLAGS = flags.FLAGS
flags.DEFINE_string('model', '49', 'SpineNet model id with a Model Garden backbone.')
flags.DEFINE_integer('size', 640, 'Square input size in pixels.')
flags.DEFINE_integer('iters', 5, 'Timed iterations per variant.')
flags.DEFINE_integer('warmup', 2, 'Untimed iterations per variant.')
flags.DEFINE_bool('mg_xla', True, "Also time the Model Garden's call with jit_compile=True.")
flags.DEFINE_bool('direct', True, 'Also time ours with direct box/mask head convs, '
                  'as a SavedModel export runs them.')
flags.DEFINE_bool('bfloat16', True, 'Also time both sides under the mixed_bfloat16 Keras '
                  'policy (fast only on CPUs with AVX512-BF16 or AMX).')


def main(argv):
  del argv
  report = benchmark(FLAGS.model, FLAGS.size, FLAGS.iters, FLAGS.warmup, FLAGS.mg_xla,
                     FLAGS.direct, FLAGS.bfloat16)
  print(format_report(report))
  keys = ('ours_raw_ms', 'mg_raw_ms', 'ours_e2e_ms', 'mg_e2e_ms', 'mg_e2e_xla_ms',
          'ours_e2e_direct_ms', 'ratio_raw', 'ratio_end_to_end',
          'ratio_end_to_end_direct', 'ours_raw' + _BF16 + '_ms', 'mg_raw' + _BF16 + '_ms',
          'ours_e2e' + _BF16 + '_ms', 'mg_e2e' + _BF16 + '_ms', 'mg_e2e_xla' + _BF16 + '_ms',
          'ratio_raw' + _BF16, 'ratio_end_to_end' + _BF16)
  summary = {k: (round(report[k], 3) if isinstance(report[k], float) else report[k])
             for k in keys}
  summary.update(model=report['model'], size=report['size'],
                 precision='float32 (ratio_raw, ratio_end_to_end[_direct]); '
                 'mixed_bfloat16 (*_mixed_bfloat16)', env=report['env'])
  print(json.dumps(summary), flush=True)


def run():
  app.run(main)


if __name__ == '__main__':
  run()
