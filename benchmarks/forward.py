r"""Inference speed of SpineNet RetinaNet, ours vs the Model Garden, in one run.

Batch 1, float32, one random image, both models measured in the same process
and interleaved round by round (`_model_garden.time_interleaved`), medians:

* raw: the network's head outputs (ours: `model(images, training=False)`;
  the Model Garden: backbone -> decoder -> head in inference mode), each in a
  `tf.function`.
* end to end: raw outputs + box decoding + NMS (ours: `model.detect`; the
  Model Garden: its `RetinaNetModel` call with `training=False`, detection
  generator included), each in one `tf.function`, with and without
  `jit_compile=True` (ours: on the network only, as XLA cannot compile our
  NMS). Ratios compare against the faster variant of each side.
* post-processing only, on synthetic logits with thousands of (anchor, class)
  pairs above the score threshold (`--postprocess_check`): untrained weights
  give no detections at all, so this row shows what a busy trained-model
  image costs.

The last line printed is one JSON object:
`{"ours_raw_ms", "mg_raw_ms", "ours_e2e_ms", "mg_e2e_ms", "mg_e2e_xla_ms",
"ratio_raw", "ratio_end_to_end", ..., "precision", "env"}`, ratios ours /
Model Garden, both sides in float32; `env` names the machine (CPU model,
AVX-512 / AVX512-BF16 / AMX, versions, load).

Usage (from the repository root):
  .venv/bin/python -m benchmarks.forward [--model=49] [--size=640] [--iters=10]
"""
import json
import os
import sys

if __package__ in (None, ''):  # Run as a script: make `benchmarks` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from benchmarks import _model_garden as mg  # noqa: E402  (sets TF env defaults)
from benchmarks import _machine  # noqa: E402
from benchmarks import _timing  # noqa: E402
import tensorflow as tf  # noqa: E402

from spinenet.modeling import registry  # noqa: E402

# Synthetic "busy image" logits: N(-7, 1.3) leaves ~0.1% of all (anchor, class)
# pairs above logit(0.05) = -2.944, about 6k pairs at 640 px.
_BUSY_LOGIT_MEAN = -7.0
_BUSY_LOGIT_STDDEV = 1.3
# Timed iterations of the Model Garden's busy post-processing without XLA.
_SLOW_ITERS = 3


def _host(nest):
  return tf.nest.map_structure(lambda t: t.numpy(), nest)


def _ours_variants(model):
  """`{name: (callable, description)}` of our raw and end-to-end paths."""
  def raw(images):
    return model(images, training=False)

  network_xla = tf.function(raw, jit_compile=True)

  def detect_network_xla(images):
    outputs = network_xla(images)
    return model.postprocess(outputs, tuple(images.shape[1:3]))

  return {
      'ours_raw': (tf.function(raw), 'model(images, training=False)'),
      'ours_e2e': (tf.function(model.detect), 'model.detect, one tf.function'),
      # `tf.function(model.detect, jit_compile=True)` cannot compile: XLA has no
      # NonMaxSuppressionV5 and no data-dependent shapes (tf.where); trying it
      # crashed the process at 640 px. The XLA variant compiles the network only.
      'ours_e2e_net_xla': (tf.function(detect_network_xla),
                           'network jit-compiled, post-processing not; one tf.function'),
  }


def _mg_variants(model):
  e2e = mg.mg_end_to_end_fn(model)
  return {
      'mg_raw': (tf.function(mg.mg_raw_fn(model)), 'backbone -> decoder -> head'),
      'mg_e2e': (tf.function(e2e), 'RetinaNetModel(images, training=False)'),
      'mg_e2e_xla': (tf.function(e2e, jit_compile=True),
                     'the same, tf.function(jit_compile=True)'),
  }


def _compiles(name, fn, args):
  """Calls `fn` once; False (and logs why) if it cannot be traced or compiled."""
  try:
    _host(fn(*args))
    return True
  except (tf.errors.OpError, ValueError, TypeError) as e:
    logging.warning('%s does not run: %s', name, str(e).splitlines()[0][:200])
    return False


def _busy_outputs(model, size, seed=7):
  """Synthetic raw outputs of `model` at `size` with ~0.1% of pairs passing."""
  cls_outputs, box_outputs = {}, {}
  num_anchors = model.anchor_config.num_anchors
  num_classes = model.head.get_config()['num_classes']
  for level in range(model.min_level, model.max_level + 1):
    h = -(-size // 2**level)
    cls_outputs[str(level)] = tf.random.stateless_normal(
        [1, h, h, num_anchors * num_classes], [seed, level],
        mean=_BUSY_LOGIT_MEAN, stddev=_BUSY_LOGIT_STDDEV)
    box_outputs[str(level)] = tf.random.stateless_normal(
        [1, h, h, num_anchors * 4], [seed, 100 + level], stddev=0.3)
  return cls_outputs, box_outputs


def _postprocess_variants(ours, mg_model, size):
  """`{name: (callable of (cls, box), description)}` of post-processing only."""
  def ours_post(cls_outputs, box_outputs):
    return ours.postprocess({'cls_outputs': cls_outputs, 'box_outputs': box_outputs},
                            (size, size))

  mg_post = mg.mg_postprocess_fn(mg_model, size)
  return {
      'ours_post_busy': (tf.function(ours_post), 'model.postprocess'),
      'mg_post_busy': (tf.function(mg_post), 'detection generator'),
      'mg_post_busy_xla': (tf.function(mg_post, jit_compile=True),
                           'detection generator, jit_compile=True'),
  }


def benchmark(model_id='49', size=640, iters=10, warmup=3, postprocess_check=True):
  """Measures every variant; returns the report dict (see the module docstring).

  Args:
    model_id: our registry id; the Model Garden side uses the same recipe.
    size: square input size in pixels.
    iters: timed calls per variant (medians reported).
    warmup: untimed calls per variant first.
    postprocess_check: also time post-processing alone on busy synthetic logits.

  Returns:
    dict with `env`, `variants` (`{name: {median_ms, min_ms, all_ms,
    description}}`), `skipped` (`{name: description}` of variants that do not
    compile) and the summary keys of the final JSON line.
  """
  env = _machine.env_summary()
  logging.info('Building ours (%s @ %d) and the Model Garden\'s.', model_id, size)
  ours = registry.build_retinanet(model_id, input_size=size)
  mg_model = mg.build_mg_retinanet(model_id, size)
  images = tf.random.stateless_normal([1, size, size, 3], [2020, 6])

  candidates = {**_ours_variants(ours), **_mg_variants(mg_model)}
  runnable, skipped = {}, {}
  for name, (fn, description) in candidates.items():
    logging.info('Tracing %s.', name)
    if _compiles(name, fn, (images,)):
      runnable[name] = (fn, description)
    else:
      skipped[name] = description

  def progress(i, times):
    logging.info('round %d/%d | %s | load %.2f', i + 1, iters,
                 ' '.join(f'{n}: {t:.0f}' for n, t in times.items()), os.getloadavg()[0])

  timed = _timing.time_interleaved({n: f for n, (f, _) in runnable.items()}, (images,),
                                   warmup=warmup - 1, iters=iters, on_round=progress)
  descriptions = {n: d for n, (_, d) in runnable.items()}
  logging.info('medians so far (ms): %s', {n: round(m) for n, (m, _, _) in timed.items()})

  if postprocess_check:
    post = _postprocess_variants(ours, mg_model, size)
    busy = _busy_outputs(ours, size)
    # The Model Garden's detection generator without XLA takes many seconds
    # per busy image on this CPU: few iterations for it, still interleaved.
    slow = {'mg_post_busy': min(iters, _SLOW_ITERS)}
    timed.update(_timing.time_interleaved({n: f for n, (f, _) in post.items()}, busy,
                                          warmup=warmup, iters=iters, on_round=progress,
                                          iters_per_fn=slow,
                                          warmup_per_fn={'mg_post_busy': 1}))
    descriptions.update({n: d for n, (_, d) in post.items()})
    detections = _host(post['ours_post_busy'][0](*busy))['num_detections']
    logging.info('busy synthetic logits: ours keeps %s detections', detections)

  variants = {n: dict(median_ms=m, min_ms=lo, all_ms=all_ms, description=descriptions[n])
              for n, (m, lo, all_ms) in timed.items()}
  median = lambda n: variants[n]['median_ms'] if n in variants else None  # noqa: E731
  ours_e2e_name = min((n for n in variants if n.startswith('ours_e2e')), key=median)
  mg_e2e_best = min(m for m in (median('mg_e2e'), median('mg_e2e_xla')) if m is not None)
  summary = {
      'ours_raw_ms': median('ours_raw'),
      'mg_raw_ms': median('mg_raw'),
      'ours_e2e_ms': median(ours_e2e_name),
      'ours_e2e_variant': ours_e2e_name,
      'mg_e2e_ms': median('mg_e2e'),
      'mg_e2e_xla_ms': median('mg_e2e_xla'),
      'ratio_raw': median('ours_raw') / median('mg_raw'),
      'ratio_end_to_end': median(ours_e2e_name) / mg_e2e_best,
  }
  if postprocess_check:
    summary['ours_post_busy_ms'] = median('ours_post_busy')
    summary['mg_post_busy_ms'] = min(median('mg_post_busy'), median('mg_post_busy_xla'))
  env['load_average_at_end'] = tuple(round(x, 2) for x in os.getloadavg())
  return dict(env=env, model=model_id, size=size, iters=iters, variants=variants,
              skipped=skipped, **summary)


def format_report(report):
  """The human-readable table printed above the JSON line."""
  lines = [f"SpineNet-{report['model']} RetinaNet, {report['size']}x{report['size']}, "
           f"batch 1, float32, {report['iters']} timed iterations (medians)",
           'env: ' + ', '.join(f'{k}={v}' for k, v in report['env'].items())]
  lines += _timing.variant_table(report['variants'], report['skipped'], 18)
  lines.append(f"ratio raw (ours / MG): {report['ratio_raw']:.3f}   "
               f"ratio end to end (ours {report['ours_e2e_variant']} / faster MG): "
               f"{report['ratio_end_to_end']:.3f}")
  return '\n'.join(lines)


FLAGS = flags.FLAGS
flags.DEFINE_string('model', '49', 'Model id (spinenet.modeling.registry).')
flags.DEFINE_integer('size', 640, 'Square input size in pixels.')
flags.DEFINE_integer('iters', 10, 'Timed iterations per variant.')
flags.DEFINE_integer('warmup', 3, 'Untimed iterations per variant.')
flags.DEFINE_bool('postprocess_check', True,
                  'Also time post-processing alone on busy synthetic logits.')


def main(argv):
  del argv
  report = benchmark(FLAGS.model, FLAGS.size, FLAGS.iters, FLAGS.warmup,
                     FLAGS.postprocess_check)
  print(format_report(report))
  keys = ('ours_raw_ms', 'mg_raw_ms', 'ours_e2e_ms', 'mg_e2e_ms', 'mg_e2e_xla_ms',
          'ratio_raw', 'ratio_end_to_end', 'ours_e2e_variant', 'ours_post_busy_ms',
          'mg_post_busy_ms')
  summary = {k: (round(report[k], 3) if isinstance(report[k], float) else report[k])
             for k in keys if k in report}
  summary.update(precision='float32', env=report['env'])
  print(json.dumps(summary), flush=True)


def run():
  app.run(main)


if __name__ == '__main__':
  run()
