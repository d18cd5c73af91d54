r"""Serving latency: our SavedModel exports vs the Model Garden's, in one run.

One 640x640 uint8 image, batch 1, through the `serving_default` signature of
each SavedModel loaded in this process, SpineNet-49 RetinaNet (91 classes):

* the Model Garden's export (`export_saved_model_lib.export_inference_graph(
  input_type='image_tensor')`, its own preprocessing, network and detection
  generator), built by `_model_garden.build_mg_retinanet`: `model_garden`
  (float32) and, with `--mg_bfloat16`, `model_garden_bfloat16` (the same
  export under the `mixed_bfloat16` Keras policy, as its trainer sets it
  from `runtime.mixed_precision_dtype`: its export has no precision option);
* ours (`spinenet.serving.export_lib`), the model built as our recipe trains
  it (synchronized batch norm, as the Model Garden's): `float32` (the Keras
  model's variables as they are), `float32_folded` (frozen, batch norms
  folded into the convolutions), `bfloat16_folded`.

Both sides run THE SAME WEIGHTS: the Model Garden model is built, its class
predictor is set so that about 0.1% of the (anchor, class) pairs of the image
pass the 0.05 score threshold (what a busy image gives a trained model;
untrained weights give no candidates and would make post-processing free),
it is saved and exported, and our model is made from that checkpoint with
`spinenet.training.checkpoint_converter`. The detections of the two exports
are compared as a check.

Timing: the exports are called in alternation, round by round
(`_model_garden.time_interleaved`), medians. The throughput the model FLOPs
are compared with is measured in the same run: best of several 2048^3
`tf.matmul`s in bfloat16 (and float32, reported too).

The last line is one JSON object: `ours_ms` (the fastest of our exports,
named by `ours_variant`), `mg_ms`, `ratio` (best against best: our fastest
export / the Model Garden's fastest, named by `mg_variant`),
`ratio_<precision>` (our fastest export at a precision / the Model Garden's
at the same precision, for each precision both sides exported: float32,
and bfloat16 with `--mg_bfloat16`), `mfu` (`mfu_convention` says how it is
computed), the per-variant medians, the detections check and `env` (machine,
CPU flags).

The COCO AP of each export variant of a trained model is
`benchmarks/serving_accuracy.py` (`--mode=accuracy` here still runs it).

Usage (from the repository root):
  .venv/bin/python -m benchmarks.serving [--iters=5] [--work_dir=/tmp/serving_bench]
"""
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

if __package__ in (None, ''):  # Run as a script: make `benchmarks` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from benchmarks import _model_garden as mg  # noqa: E402  (sets TF env defaults)
from benchmarks import _machine  # noqa: E402
from benchmarks import _ratios  # noqa: E402
from benchmarks import _serving_exports  # noqa: E402
from benchmarks import _timing  # noqa: E402
from benchmarks import serving_accuracy  # noqa: E402  (--mode=accuracy)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from spinenet.data import builtin_dataset  # noqa: E402
from spinenet.data import preprocess  # noqa: E402
from spinenet.modeling import profile  # noqa: E402
from spinenet.modeling import registry  # noqa: E402
from spinenet.ops import box_ops  # noqa: E402
from spinenet.serving import export_lib  # noqa: E402
from spinenet.training import checkpoint_converter  # noqa: E402

# The class logits of the benchmark image spread with this standard deviation
# and this fraction of (anchor, class) pairs above the score threshold.
_BUSY_LOGIT_STDDEV = 1.3
_BUSY_FRACTION = 0.001
_SCORE_THRESHOLD = 0.05
_VARIANTS = _serving_exports.VARIANTS
# The Model Garden's exports: name -> the Keras policy it is exported under,
# and the precision it computes in (compared with ours at that precision).
_MG_EXPORTS = {'model_garden': ('float32', 'float32'),
               'model_garden_bfloat16': ('mixed_bfloat16', 'bfloat16')}


def benchmark_image(size, seed=0):
  """A shapes-dataset scene at `size` x `size`, uint8 `[size, size, 3]`."""
  pixels, _ = builtin_dataset.render_image(np.random.default_rng(seed), size)
  return pixels


def make_busy(mg_model, image, seed=0):
  """Sets the class predictor so 0.1% of the pairs of `image` pass the threshold.

  Random predictor weights, scaled so the logits spread by 1.3, and a bias
  putting the 99.9th percentile at the score threshold.
  """
  normalized = preprocess.normalize_image(tf.constant(image))[tf.newaxis]
  classifier = mg_model.head._classifier  # pylint: disable=protected-access
  kernel, bias = classifier.kernel, classifier.bias
  kernel.assign(tf.random.stateless_normal(kernel.shape, [seed, 1]))
  bias.assign(tf.zeros_like(bias))
  logits, _ = mg.mg_raw_fn(mg_model)(normalized)
  flat = tf.concat([tf.reshape(v, [-1]) for v in logits.values()], 0)
  scale = _BUSY_LOGIT_STDDEV / float(tf.math.reduce_std(flat))
  threshold = float(np.log(_SCORE_THRESHOLD / (1 - _SCORE_THRESHOLD)))
  quantile = float(np.quantile(flat.numpy() * scale, 1 - _BUSY_FRACTION))
  kernel.assign(kernel * scale)
  bias.assign(tf.fill(bias.shape, float(threshold - quantile)))
  logits, _ = mg.mg_raw_fn(mg_model)(normalized)
  flat = tf.concat([tf.reshape(v, [-1]) for v in logits.values()], 0)
  passing = int(tf.reduce_sum(tf.cast(flat > threshold, tf.int32)))
  logging.info('busy image: %d of %d (anchor, class) pairs pass the score threshold',
               passing, int(tf.size(flat)))
  return passing


def export_model_garden(model_id, size, image, work_dir):
  """Builds, busies, saves and exports the Model Garden model (float32); returns paths."""
  model = mg.build_mg_retinanet(model_id, size)
  passing = make_busy(model, image)
  checkpoint = tf.train.Checkpoint(model=model).save(os.path.join(work_dir, 'mg_ckpt', 'ckpt'))
  export_dir = export_model_garden_checkpoint(model_id, size, checkpoint, work_dir,
                                              'model_garden')
  return checkpoint, export_dir, passing


def export_model_garden_checkpoint(model_id, size, checkpoint, work_dir, name):
  """The Model Garden's own export of `checkpoint` as `_MG_EXPORTS[name]`; its path."""
  from official.vision.serving import export_saved_model_lib  # pylint: disable=g-import-not-at-top
  policy, _ = _MG_EXPORTS[name]
  export_dir = os.path.join(work_dir, 'mg_export' if name == 'model_garden' else f'mg_{policy}')
  start = time.monotonic()
  with mg.keras_precision(policy):
    export_saved_model_lib.export_inference_graph(
        input_type='image_tensor', batch_size=1, input_image_size=[size, size],
        params=mg.make_mg_params(model_id, size, precision=policy),
        checkpoint_path=checkpoint, export_dir=export_dir)
  logging.info('Model Garden %s export: %.0f s', policy, time.monotonic() - start)
  return export_dir


def export_ours(model_id, size, mg_checkpoint, work_dir, variants):
  """Converts the Model Garden checkpoint and exports each variant; `{name: path}`."""
  converted = os.path.join(work_dir, 'converted')
  if not tf.train.latest_checkpoint(converted):  # Converted once, by the first variant.
    checkpoint_converter.convert(mg_checkpoint, model_id, 'retinanet', converted,
                                 num_classes=mg.NUM_CLASSES)
  # As the recipe trains it (configs/tasks/retinanet_coco.gin), like the Model
  # Garden side: synchronized batch norm, which infers unfused.
  model_fn = lambda: registry.build_retinanet(model_id, num_classes=mg.NUM_CLASSES,  # noqa: E731
                                              input_size=size, use_sync_bn=True)
  paths = {}
  for name in variants:
    start = time.monotonic()
    result = export_lib.export_saved_model(
        model_fn, os.path.join(work_dir, f'ours_{name}'), checkpoint=converted,
        options=_VARIANTS[name])
    logging.info('our %s export: %.0f s', name, time.monotonic() - start)
    paths[name] = result.path
  return paths


def matmul_gflops(dtype, n=2048, iters=5):
  """Best `n^3` matmul throughput of this process in GFLOP/s (2 n^3 flops each)."""
  a = tf.cast(tf.random.stateless_normal([n, n], [1, 2]), dtype)
  b = tf.cast(tf.random.stateless_normal([n, n], [3, 4]), dtype)
  matmul = tf.function(tf.matmul)
  matmul(a, b).numpy()
  best = float('inf')
  for _ in range(iters):
    start = time.perf_counter()
    matmul(a, b).numpy()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n**3 / best / 1e9


def compare_detections(ours, theirs, top=20):
  """How well our top detections are found among the Model Garden's.

  The two generators keep different candidate sets on a busy image (ours:
  the best 5000 (anchor, class) pairs overall; the Model Garden's: per class),
  so detections are matched, not compared rank by rank: each of our `top`
  best is paired with the Model Garden detection of the same class that
  overlaps it most.
  """
  n = min(int(ours['num_detections'][0]), top)
  m = int(theirs['num_detections'][0])
  ious, score_gaps = [], []
  for i in range(n):
    same = np.flatnonzero(theirs['detection_classes'][0, :m] == ours['detection_classes'][0, i])
    if not same.size:
      ious.append(0.0)
      continue
    iou = box_ops.pairwise_iou(
        tf.constant(ours['detection_boxes'][0, i:i + 1], tf.float32),
        tf.constant(theirs['detection_boxes'][0, same], tf.float32)).numpy()[0]
    best = int(np.argmax(iou))
    ious.append(float(iou[best]))
    score_gaps.append(abs(float(ours['detection_scores'][0, i]) -
                          float(theirs['detection_scores'][0, same[best]])))
  return {
      'num_detections': [int(ours['num_detections'][0]), m],
      'top': n,
      'matched_iou_0.9': sum(iou >= 0.9 for iou in ious),
      'median_score_gap': float(np.median(score_gaps)) if score_gaps else None,
  }


def _export_step(step, model_id, size, work_dir):
  """One export step, run in its own child process; writes `<step>.json`.

  Steps: 'model_garden' (build, busy, save, export), 'ours_<variant>'
  (convert the Model Garden checkpoint once, export the variant), 'flops'
  (multiply-adds of our network). A process per step keeps the memory of
  the Keras models and traced graphs of one step from adding up (the four
  exports in one process reached 13 GB and were killed).
  """
  if step == 'model_garden':
    checkpoint, export_dir, passing = export_model_garden(
        model_id, size, benchmark_image(size), work_dir)
    result = {'checkpoint': checkpoint, 'export': export_dir, 'busy_pairs': passing}
  elif step in _MG_EXPORTS:
    with open(os.path.join(work_dir, 'model_garden.json')) as f:
      checkpoint = json.load(f)['checkpoint']
    result = {'export': export_model_garden_checkpoint(model_id, size, checkpoint, work_dir,
                                                       step)}
  elif step.startswith('ours_'):
    with open(os.path.join(work_dir, 'model_garden.json')) as f:
      checkpoint = json.load(f)['checkpoint']
    name = step[len('ours_'):]
    result = {'export': export_ours(model_id, size, checkpoint, work_dir, [name])[name]}
  else:
    model = registry.build_retinanet(model_id, num_classes=mg.NUM_CLASSES, input_size=size)
    result = {'madds': profile.count_flops(lambda x: model(x, training=False),
                                           (1, size, size, 3))}
  with open(os.path.join(work_dir, f'{step}.json'), 'w') as f:
    json.dump(result, f)


def export_all(model_id, size, work_dir, variants, mg_exports=('model_garden',)):
  """Exports both sides and counts the network's FLOPs; writes `exports.json`.

  Each step runs in a child process (`_export_step`), so the Keras models it
  builds are freed before anything is timed; steps whose `<step>.json` is in
  `work_dir` (an earlier, interrupted run) are not redone.
  """
  steps = (['model_garden'] + [n for n in mg_exports if n != 'model_garden'] +
           [f'ours_{name}' for name in variants] + ['flops'])
  for step in steps:
    if os.path.exists(os.path.join(work_dir, f'{step}.json')):
      logging.info('export step %s: reusing %s.json', step, step)
      continue
    if step.startswith('ours_'):  # A half-written export of an interrupted run.
      shutil.rmtree(os.path.join(work_dir, step), ignore_errors=True)
    elif step != 'model_garden' and step in _MG_EXPORTS:
      shutil.rmtree(os.path.join(work_dir, f'mg_{_MG_EXPORTS[step][0]}'), ignore_errors=True)
    child = multiprocessing.get_context('spawn').Process(
        target=_export_step, args=(step, model_id, size, work_dir))
    child.start()
    child.join()
    if child.exitcode != 0:
      raise RuntimeError(f'export step {step} failed (exit code {child.exitcode}'
                         f'{"; -9 is usually the out-of-memory killer" if child.exitcode == -9 else ""}).')
  results = {}
  for step in steps:
    with open(os.path.join(work_dir, f'{step}.json')) as f:
      results[step] = json.load(f)
  with open(os.path.join(work_dir, 'exports.json'), 'w') as f:
    json.dump({'model_garden': results['model_garden']['export'],
               'model_garden_exports': {n: results[n]['export'] for n in mg_exports},
               'ours': {name: results[f'ours_{name}']['export'] for name in variants},
               'busy_pairs': results['model_garden']['busy_pairs'],
               'madds': results['flops']['madds']}, f)


def benchmark(model_id='49', size=640, iters=5, warmup=1, work_dir=None,
              variants=tuple(_VARIANTS), mg_exports=tuple(_MG_EXPORTS)):
  """Exports (in child processes), loads and times everything; returns the report.

  `mg_exports` names the Model Garden exports to time (keys of `_MG_EXPORTS`;
  `model_garden`, the float32 one, is always made: it is the reference of the
  detections check and its checkpoint is converted into ours).
  """
  env = _machine.env_summary()
  own_dir = work_dir is None
  work_dir = work_dir or tempfile.mkdtemp(prefix='serving_bench_')
  try:
    mg_exports = ('model_garden',) + tuple(n for n in mg_exports if n != 'model_garden')
    # Steps already done (their <step>.json in work_dir) are reused.
    export_all(model_id, size, work_dir, tuple(variants), mg_exports)
    with open(os.path.join(work_dir, 'exports.json')) as f:
      exports = json.load(f)
    ours = {name: exports['ours'][name] for name in variants}

    fns, load_s = {}, {}
    for name, path in exports['model_garden_exports'].items():
      start = time.monotonic()
      fn = tf.saved_model.load(path).signatures['serving_default']
      load_s[name] = time.monotonic() - start
      fns[name] = lambda x, fn=fn: fn(inputs=x)
    for name, path in ours.items():
      start = time.monotonic()
      fn = tf.saved_model.load(path).signatures['serving_default']
      load_s[name] = time.monotonic() - start
      fns[name] = lambda x, fn=fn: fn(images=x)
    images = tf.constant(benchmark_image(size)[np.newaxis])

    outputs = {name: {k: v.numpy() for k, v in fn(images).items()} for name, fn in fns.items()}
    checks = {name: compare_detections(outputs[name], outputs['model_garden'])
              for name in fns if name != 'model_garden'}
    peaks = {'bfloat16': matmul_gflops(tf.bfloat16), 'float32': matmul_gflops(tf.float32)}

    def progress(i, times):
      logging.info('round %d/%d | %s | load %.2f', i + 1, iters,
                   ' '.join(f'{n}: {t:.0f} ms' for n, t in times.items()),
                   os.getloadavg()[0])

    timed = _timing.time_interleaved(fns, (images,), warmup=warmup, iters=iters,
                                     on_round=progress)
    peaks_after = {'bfloat16': matmul_gflops(tf.bfloat16), 'float32': matmul_gflops(tf.float32)}
    peaks = {k: max(peaks[k], peaks_after[k]) for k in peaks}
  finally:
    if own_dir:
      shutil.rmtree(work_dir, ignore_errors=True)

  medians = {name: t[0] for name, t in timed.items()}
  ratios = _ratios.compare(
      {n: (_serving_exports.precision_of(n), medians[n]) for n in ours},
      {n: (_MG_EXPORTS[n][1], medians[n]) for n in exports['model_garden_exports']},
      digits=4)
  fastest = ratios['ours_best']
  flops = 2.0 * exports['madds']
  env['load_average_at_end'] = tuple(round(x, 2) for x in os.getloadavg())
  return {
      'env': env, 'model': model_id, 'size': size, 'iters': iters,
      'medians_ms': medians, 'min_ms': {n: t[1] for n, t in timed.items()},
      'load_s': load_s, 'detections_vs_model_garden': checks,
      'busy_pairs': exports['busy_pairs'],
      'ours_ms': medians[fastest], 'ours_variant': fastest,
      'mg_ms': medians[ratios['mg_best']], 'mg_variant': ratios['mg_best'],
      'ratio': medians[fastest] / medians[ratios['mg_best']],
      'ratios_per_precision': {k: v for k, v in ratios.items() if k.startswith('ratio_')},
      'pairs': ratios['pairs'],
      'model_gflop': flops / 1e9,
      'bf16_matmul_gflops': peaks['bfloat16'], 'f32_matmul_gflops': peaks['float32'],
      'mfu': flops / (medians[fastest] / 1e3) / (peaks['bfloat16'] * 1e9),
      'mfu_vs_best_matmul': flops / (medians[fastest] / 1e3) / (max(peaks.values()) * 1e9),
  }


def format_report(report):
  lines = [f"SpineNet-{report['model']} RetinaNet SavedModels, {report['size']}x"
           f"{report['size']} uint8, batch 1, serving_default, {report['iters']} timed "
           'calls each (medians), same weights on both sides',
           'env: ' + ', '.join(f'{k}={v}' for k, v in report['env'].items()),
           f"busy image: {report['busy_pairs']} (anchor, class) pairs above the score "
           'threshold',
           f"{'export':<22} {'median ms':>10} {'min ms':>9} {'load s':>7}  detections vs MG"]
  for name, median in report['medians_ms'].items():
    check = report['detections_vs_model_garden'].get(name)
    lines.append(f"{name:<22} {median:>10.1f} {report['min_ms'][name]:>9.1f} "
                 f"{report['load_s'][name]:>7.1f}  {json.dumps(check) if check else ''}")
  lines.append(f"matmul 2048^3: bfloat16 {report['bf16_matmul_gflops']:.1f} GFLOP/s, "
               f"float32 {report['f32_matmul_gflops']:.1f} GFLOP/s; network "
               f"{report['model_gflop']:.1f} GFLOP (2 x multiply-adds)")
  lines.append(f"ratio (ours {report['ours_variant']} / Model Garden "
               f"{report['mg_variant']}, best against best): {report['ratio']:.3f}; "
               f"mfu {report['mfu']:.2f}")
  for precision, (mine, theirs) in report['pairs'].items():
    lines.append(f"ratio_{precision} (ours {mine} / {theirs}): "
                 f"{report['ratios_per_precision'][f'ratio_{precision}']:.3f}")
  return '\n'.join(lines)


FLAGS = flags.FLAGS
flags.DEFINE_string('model', '49', 'Model id (spinenet.modeling.registry).')
flags.DEFINE_integer('size', 640, 'Square input size in pixels.')
flags.DEFINE_integer('iters', 5, 'Timed calls per export.')
flags.DEFINE_integer('warmup', 1, 'Untimed calls per export first.')
flags.DEFINE_bool('mg_bfloat16', True,
                  'Also export and time the Model Garden under the mixed_bfloat16 Keras '
                  'policy (model_garden_bfloat16), so our bfloat16 export is compared with '
                  'the Model Garden in bfloat16 too.')
flags.DEFINE_enum('mode', 'latency', ['latency', 'accuracy'],
                  'latency: time the exports against the Model Garden. accuracy: the '
                  'same as python -m benchmarks.serving_accuracy (its flags apply).')


def main(argv):
  if FLAGS.mode == 'accuracy':
    logging.info('--mode=accuracy: running python -m benchmarks.serving_accuracy')
    serving_accuracy.main(argv)
    return
  try:
    variants = _serving_exports.check_variants(_serving_exports.VARIANT_NAMES.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  mg_exports = tuple(_MG_EXPORTS) if FLAGS.mg_bfloat16 else ('model_garden',)
  report = benchmark(FLAGS.model, FLAGS.size, FLAGS.iters, FLAGS.warmup,
                     _serving_exports.WORK_DIR.value, variants, mg_exports)
  print(format_report(report))
  summary = {k: report[k] for k in ('ours_ms', 'ours_variant', 'mg_ms', 'mg_variant',
                                    'ratio', 'mfu',
                                    'mfu_vs_best_matmul', 'model_gflop',
                                    'bf16_matmul_gflops', 'f32_matmul_gflops')}
  summary = {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}
  summary['medians_ms'] = {k: round(v, 1) for k, v in report['medians_ms'].items()}
  summary['mfu_convention'] = (
      'mfu = 2 * multiply-adds of the network (spinenet.modeling.profile.count_flops, '
      'pre/post-processing not counted) / median end-to-end latency of our fastest '
      'export / bfloat16 2048^3 tf.matmul FLOP/s measured in this run')
  summary.update(report['ratios_per_precision'], pairs=report['pairs'])
  summary['load_average'] = report['env']['load_average_at_end']
  summary['env'] = report['env']
  print(json.dumps(summary), flush=True)


def run():
  app.run(main)


if __name__ == '__main__':
  run()
