r"""Train-step time: our SpineNet-49 RetinaNet vs the Model Garden's, same run.

  python -m benchmarks.train_step [--batch=2 --size=384 --iters=10]

One SGD (momentum 0.9) step on a fixed batch of random images with targets
from real boxes, recipe losses (focal 0.25 / 1.5, Huber 0.1, box weight 50,
weight decay 4e-5), synchronized batch norm and stochastic depth 0.2 in both:

* Model Garden: its own task factory (`retinanet_spinenet_coco`, recipe
  values, `benchmarks/_model_garden.py`) builds the model and its
  `RetinaNetTask.train_step` runs the step, in float32 and mixed bfloat16
  (the Keras policy set while the model is built, as its trainer does).
* ours: `registry.build_retinanet('49')` and `RetinaNetTask.train_step`
  (`spinenet/training`), in float32 and mixed bfloat16; `ours_float32_localbn`
  builds plain batch norm, which on one replica computes the same statistics
  as synchronized batch norm (the Model Garden keeps its synchronized one);
  `_winograd` runs every 3x3 stride-1 conv (head and SpineNet blocks) on
  maps of at least `--winograd_min_size` pixels as a Winograd F(4x4, 3x3)
  convolution (`build_retinanet(winograd_min_size=...)`, a CPU training
  option: same weights, same results to float rounding).

Each precision is compared with the Model Garden at the same precision. The
float32 variants are timed in alternation (so background load hits them
alike), then the mixed-bfloat16 ones, in alternation with each other (on CPUs
without AVX512-BF16 or AMX, TensorFlow emulates bfloat16 and they are ~15x
slower; `env` in the JSON says which CPU ran); medians over `--iters` steps
after `--warmup`. The last line is one JSON object: `<variant>_median_ms`,
`ratio_float32` and `ratio_mixed_bfloat16` (our fastest variant at that
precision / the Model Garden's at the same precision, where both were timed),
`ratio` (our fastest variant overall / the Model Garden's fastest, named by
`ours_best` and `mg_best`; lower is better) and `env` (machine, CPU flags).
"""
import json
import os

from absl import app
from absl import flags

import spinenet  # noqa: F401  (sets TF_USE_LEGACY_KERAS)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from benchmarks import _machine
from benchmarks import _model_garden as mg
from benchmarks import _ratios
from benchmarks import _timing
from spinenet.data import anchor_labeler
from spinenet.modeling import registry
from spinenet.training import optimization
from spinenet.training import retinanet_task

_BATCH = flags.DEFINE_integer('batch', 2, 'Images per step.')
_SIZE = flags.DEFINE_integer('size', 384, 'Square input size.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps per variant.')
_ITERS = flags.DEFINE_integer('iters', 10, 'Timed steps per variant.')
_VARIANTS = flags.DEFINE_list(
    'variants', ['mg_float32', 'ours_float32', 'ours_float32_winograd',
                 'mg_mixed_bfloat16', 'ours_mixed_bfloat16'],
    'Variants to time: mg_<float32|mixed_bfloat16>, '
    'ours_<float32|mixed_bfloat16>[_localbn]'
    '[_winograd][_xla] (_localbn: plain instead of synchronized batch norm, the '
    'same math on one replica; _winograd: Winograd 3x3 convs; _xla: jit_compile).')
_WINOGRAD_MIN_SIZE = flags.DEFINE_integer(
    'winograd_min_size', 24, 'Smallest map side whose 3x3 stride-1 convs the '
    '_winograd variants run as Winograd convolutions.')

_BF16_ITERS = flags.DEFINE_integer(
    'bf16_iters', 3, 'Timed steps of the mixed_bfloat16 variants (on CPUs '
    'without AVX512-BF16 or AMX, bfloat16 is emulated and many times slower '
    'than float32); they run after the float32 variants.')
_BF16_WARMUP = flags.DEFINE_integer(
    'bf16_warmup', 1, 'Untimed steps of the mixed_bfloat16 variants (>= 1: tracing).')

NUM_CLASSES = 91
WEIGHT_DECAY = 4e-5


def make_batch(batch, size, seed=0):
  """Random normalized images and RetinaNet targets of random boxes.

  Returns:
    `(images float32 [B, S, S, 3], labels)` in our parser's format (class 0
    = background) for SpineNet-49's anchors (levels 3-7, 3 scales x 3
    ratios, anchor size 3).
  """
  rng = np.random.default_rng(seed)
  labeler = anchor_labeler.AnchorLabeler((size, size), anchor_size=3.0)
  images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
  per_image = []
  for _ in range(batch):
    n = 6
    yx = rng.uniform(0, size * 0.7, (n, 2))
    hw = rng.uniform(24, size * 0.3, (n, 2))
    boxes = np.concatenate([yx, np.minimum(yx + hw, size)], 1).astype(np.float32)
    classes = rng.integers(1, NUM_CLASSES, n).astype(np.int32)
    per_image.append(labeler.label(tf.constant(boxes), tf.constant(classes)))
  labels = tf.nest.map_structure(lambda *x: tf.stack(x), *per_image)
  return tf.constant(images), labels


def to_model_garden_labels(labels):
  """Ours -> the Model Garden's: background and ignored anchors are class -1."""
  mg_labels = dict(labels)
  mg_labels['cls_targets'] = {
      k: tf.where(v > 0, v, -1) for k, v in labels['cls_targets'].items()}
  return mg_labels


def mg_step(size, precision='float32'):
  """The Model Garden's train step (its task, model and loss code) in `precision`.

  The model is built under the Keras policy `precision`, as the Model
  Garden's trainer does from `runtime.mixed_precision_dtype`; with bfloat16 it
  needs no loss scaling, so the optimizer is the same in both precisions.
  """
  from official.core import task_factory  # pylint: disable=g-import-not-at-top
  params = mg.make_mg_params('49', size, NUM_CLASSES, precision)
  task = task_factory.get_task(params.task)
  with mg.keras_precision(precision):
    model = task.build_model()
    model(tf.zeros([1, size, size, 3]), training=False)
  optimizer = keras.optimizers.legacy.SGD(0.01, momentum=0.9)

  @tf.function
  def step(images, labels):
    return task.train_step((images, labels), model, optimizer)['loss']
  return step, model


def variant_precision(name):
  """The precision of a variant name: `mg_mixed_bfloat16` -> `mixed_bfloat16`."""
  precision = name.split('_', 1)[1] if '_' in name else ''
  for suffix in ('_xla', '_localbn', '_winograd'):
    precision = precision.replace(suffix, '')
  return precision


def ours_step(size, precision, jit=False, sync_bn=True, winograd_min_size=0):
  """Our train step in `precision` (the Keras policy during the build).

  `sync_bn=False` builds plain batch norm, the same arithmetic on one replica
  (cross-replica statistics of one replica are its own), fused by TensorFlow.
  """
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(precision)
  try:
    task = retinanet_task.RetinaNetTask(
        lambda: registry.build_retinanet('49', num_classes=NUM_CLASSES,
                                         input_size=size, use_sync_bn=sync_bn,
                                         winograd_min_size=winograd_min_size))
    model = task.build_model()
    optimizer = optimization.build_optimizer(
        optimization.OptimizerOptions(), 0.01, precision)
  finally:
    keras.mixed_precision.set_global_policy(previous)

  @tf.function(jit_compile=jit)
  def step(images, labels):
    return task.train_step((images, labels), model, optimizer,
                           weight_decay=WEIGHT_DECAY)['total_loss']
  return step, model


def main(argv):
  del argv
  size, batch = _SIZE.value, _BATCH.value
  images, labels = make_batch(batch, size)
  steps, params = {}, {}
  for name in _VARIANTS.value:
    precision = variant_precision(name)
    if precision not in mg.PRECISIONS:
      raise app.UsageError(f'Unknown variant {name!r}: the precision must be one of '
                           f'{mg.PRECISIONS}')
    if name == f'mg_{precision}':
      fn, model = mg_step(size, precision)
      args = (images, to_model_garden_labels(labels))
    elif name.startswith('ours_'):
      fn, model = ours_step(
          size, precision, jit='_xla' in name, sync_bn='_localbn' not in name,
          winograd_min_size=_WINOGRAD_MIN_SIZE.value if '_winograd' in name else 0)
      args = (images, labels)
    else:
      raise app.UsageError(f'Unknown variant {name!r}')
    steps[name] = (lambda f, a: lambda: f(*a))(fn, args)
    params[name] = int(sum(int(np.prod(w.shape)) for w in model.weights))
    print(f'built {name}: {params[name]:,} weights', flush=True)

  slow = [n for n in steps if 'bfloat16' in n]
  iters_of = {n: (_BF16_ITERS.value if n in slow else _ITERS.value) for n in steps}
  warmup_of = {n: (max(1, _BF16_WARMUP.value) if n in slow else _WARMUP.value)
               for n in steps}

  def progress(total):
    return lambda i, round_ms: print(
        f'round {i + 1}/{total}: ' + ', '.join(
            f'{k} {v:.0f} ms' for k, v in round_ms.items())
        + f' | load {os.getloadavg()[0]:.2f}', flush=True)

  # The float32 variants are interleaved with each other, the bfloat16 ones
  # (ours and the Model Garden's) after them, with each other: where bfloat16
  # is emulated (~15x slower) a minute-long step then never sits between two
  # of the timings being compared.
  fast = {n: f for n, f in steps.items() if n not in slow}
  timings = _timing.time_interleaved(fast, (), warmup=_WARMUP.value,
                                     iters=_ITERS.value, on_round=progress(_ITERS.value))
  if slow:
    print(f'timing {", ".join(slow)} after the others', flush=True)
    timings.update(_timing.time_interleaved(
        {n: steps[n] for n in slow}, (), warmup=warmup_of[slow[0]],
        iters=_BF16_ITERS.value, on_round=progress(_BF16_ITERS.value)))
  print(f'\nSpineNet-49 RetinaNet train step, batch {batch} at {size}x{size} '
        f'(interleaved; warmup + timed steps per variant below)')
  print(f'{"variant":<24}{"median ms":>12}{"min ms":>10}{"steps":>8}{"weights":>14}')
  for name, (median, minimum, _) in timings.items():
    print(f'{name:<24}{median:>12.1f}{minimum:>10.1f}'
          f'{f"{warmup_of[name]}+{iters_of[name]}":>8}{params[name]:>14,}')
  result = {f'{k}_median_ms': round(v[0], 1) for k, v in timings.items()}
  result['timed_steps'] = iters_of

  def side(prefix):
    return {k: (variant_precision(k), v[0]) for k, v in timings.items()
            if k.startswith(prefix)}
  result.update(_ratios.compare(side('ours_'), side('mg_')))
  result.update(batch=batch, size=size, iters=_ITERS.value,
                loadavg_at_end=[round(x, 2) for x in os.getloadavg()],
                env=_machine.env_summary())
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
