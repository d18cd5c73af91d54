"""The Model Garden side of our benchmarks, built the way the Model Garden trains.

Every benchmark that prints a ratio against the TensorFlow Model Garden
(tf-models-official 2.20.0) builds the reference model here, so that all our
ratios compare against one construction: the Model Garden's own experiment
factory (`retinanet_spinenet_coco` / `retinanet_mobile_coco`) overridden with
the published recipe values, then `task_factory.get_task(...).build_model()`.
The Model Garden is imported as a library; none of its code is copied.

Also here: the wall-clock timer and the environment summary every benchmark
prints, so that numbers from different scripts are measured the same way.

Example:
  >>> model = build_mg_retinanet('49S', 256)
  >>> raw = tf.function(mg_raw_fn(model))
  >>> median_ms, min_ms, all_ms = time_fn(raw, (tf.zeros([1, 256, 256, 3]),))
"""
import dataclasses
import os
import platform
import statistics
import time
from typing import Callable, Mapping, Optional, Sequence

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from official.core import exp_factory  # noqa: E402
from official.core import task_factory  # noqa: E402
from official.vision import registry_imports  # noqa: E402,F401  (registers experiments)
from official.vision.ops import anchor  # noqa: E402


@dataclasses.dataclass(frozen=True)
class MGRecipe:
  """Model Garden recipe values of one model id (REFERENCE.md, section 2).

  Attributes:
    mg_model_id: the Model Garden backbone's `model_id`.
    mobile: Mobile SpineNet (separable head, `retinanet_mobile_coco`).
    head_filters: width of the head convs.
    head_convs: convs per head subnet.
    anchor_size: base anchor size in units of the level stride.
    activation: norm-activation activation.
  """
  mg_model_id: str
  mobile: bool
  head_filters: int
  head_convs: int = 4
  anchor_size: float = 3.0
  activation: str = 'swish'


# Our model ids (as `spinenet.modeling.registry` spells them) -> recipe.
RECIPES = {
    '49S': MGRecipe('49S', False, 128),
    '49': MGRecipe('49', False, 256),
    '96': MGRecipe('96', False, 256),
    '143': MGRecipe('143', False, 256, anchor_size=4.0),
    '190': MGRecipe('190', False, 512, head_convs=7, anchor_size=4.0),
    'mobile-49': MGRecipe('49', True, 48, activation='hard_swish'),
    'mobile-49S': MGRecipe('49S', True, 40, activation='hard_swish'),
    'mobile-49XS': MGRecipe('49XS', True, 24),
}

NUM_CLASSES = 91


def get_recipe(model_id: str) -> MGRecipe:
  """The recipe of `model_id` (one of `RECIPES`)."""
  try:
    return RECIPES[model_id]
  except KeyError:
    raise ValueError(f'No Model Garden recipe for model_id={model_id!r}; expected one '
                     f'of {sorted(RECIPES)}.') from None


def make_mg_params(model_id: str, size: int, num_classes: int = NUM_CLASSES):
  """The Model Garden experiment config for RetinaNet on `model_id`.

  Args:
    model_id: one of `RECIPES`.
    size: square input size in pixels.
    num_classes: logits per anchor, background included.

  Returns:
    A validated `official.core.config_definitions.ExperimentConfig`: levels
    3-7, 3 scales x aspect ratios 0.5/1/2, identity decoder, synchronized batch
    norm 0.99/1e-3, stochastic depth 0.2, float32, and the recipe's head,
    anchor size, activation and weight decay.
  """
  r = get_recipe(model_id)
  if r.mobile:
    params = exp_factory.get_exp_config('retinanet_mobile_coco')
    backbone = {'type': 'spinenet_mobile',
                'spinenet_mobile': {'model_id': r.mg_model_id, 'se_ratio': 0.2,
                                    'stochastic_depth_drop_rate': 0.2}}
    head = {'num_convs': r.head_convs, 'num_filters': r.head_filters,
            'use_separable_conv': True}
    weight_decay = 3e-5
  else:
    params = exp_factory.get_exp_config('retinanet_spinenet_coco')
    backbone = {'type': 'spinenet',
                'spinenet': {'model_id': r.mg_model_id,
                             'stochastic_depth_drop_rate': 0.2}}
    head = {'num_convs': r.head_convs, 'num_filters': r.head_filters}
    weight_decay = 4e-5
  params.override({
      'task': {
          'losses': {'l2_weight_decay': weight_decay},
          'model': {
              'num_classes': num_classes,
              'input_size': [size, size, 3],
              'min_level': 3, 'max_level': 7,
              'anchor': {'anchor_size': r.anchor_size, 'num_scales': 3,
                         'aspect_ratios': [0.5, 1.0, 2.0]},
              'backbone': backbone,
              'decoder': {'type': 'identity'},
              'head': head,
              'norm_activation': {'activation': r.activation, 'norm_epsilon': 1e-3,
                                  'norm_momentum': 0.99, 'use_sync_bn': True},
          },
      },
      'runtime': {'mixed_precision_dtype': 'float32'},
  }, is_strict=True)
  params.validate()
  return params


def build_mg_retinanet(model_id: str, size: int, num_classes: int = NUM_CLASSES):
  """Builds the Model Garden's RetinaNet through its task factory.

  Args:
    model_id: one of `RECIPES`.
    size: square input size in pixels.
    num_classes: logits per anchor, background included.

  Returns:
    The `official.vision.modeling.retinanet_model.RetinaNetModel`, called once
    on zeros so that every weight exists (with the identity decoder the Model
    Garden builds its head lazily).
  """
  params = make_mg_params(model_id, size, num_classes)
  model = task_factory.get_task(params.task).build_model()
  model(tf.zeros([1, size, size, 3]), training=False)
  return model


def mg_raw_fn(model) -> Callable:
  """`images -> (class logits, box deltas)`: backbone, decoder, head, inference mode.

  The result is the Model Garden's raw forward pass, without anchor generation
  or its detection generator. Wrap it in `tf.function` to time it.
  """
  def raw(images):
    features = model.backbone(images, training=False)
    if model.decoder is not None:
      features = model.decoder(features, training=False)
    class_logits, box_deltas, _ = model.head(features, training=False)
    return class_logits, box_deltas
  return raw


def mg_end_to_end_fn(model) -> Callable:
  """`images -> detections`: the model's inference call with its detection generator."""
  def end_to_end(images):
    outputs = model(images, training=False)
    return {k: outputs[k] for k in ('detection_boxes', 'detection_scores',
                                    'detection_classes', 'num_detections')}
  return end_to_end


def mg_postprocess_fn(model, size: int) -> Callable:
  """`(class_logits, box_deltas) -> detections` with the model's detection generator.

  Anchors come from the Model Garden's `Anchor` for a `size` x `size` input,
  as its `RetinaNetModel` makes them; the clip shape is the full input.
  """
  config = model.get_config()
  anchor_boxes = anchor.Anchor(
      min_level=config['min_level'], max_level=config['max_level'],
      num_scales=config['num_scales'], aspect_ratios=config['aspect_ratios'],
      anchor_size=config['anchor_size'], image_size=(size, size)).multilevel_boxes

  def postprocess(class_logits, box_deltas):
    batch = tf.shape(next(iter(class_logits.values())))[0]
    boxes = {l: tf.tile(b[None], [batch, 1, 1, 1]) for l, b in anchor_boxes.items()}
    image_shape = tf.tile(tf.constant([[size, size]], tf.float32), [batch, 1])
    outputs = model.detection_generator(box_deltas, class_logits, boxes, image_shape)
    return {k: outputs[k] for k in ('detection_boxes', 'detection_scores',
                                    'detection_classes', 'num_detections')}
  return postprocess


def time_fn(fn: Callable, args: Sequence, warmup: int = 3, iters: int = 10,
            on_iteration: Optional[Callable[[int, float], None]] = None):
  """Wall-clock time of `fn(*args)`, results copied to the host.

  Args:
    fn: callable returning a nest of tensors.
    args: positional arguments of `fn`.
    warmup: untimed calls first (tracing, compilation, caches).
    iters: timed calls.
    on_iteration: optional `f(i, ms)` called after each timed call (progress).

  Returns:
    `(median_ms, min_ms, all_ms)`.
  """
  for _ in range(warmup):
    tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
  times = []
  for i in range(iters):
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
    times.append((time.perf_counter() - start) * 1e3)
    if on_iteration is not None:
      on_iteration(i, times[-1])
  return statistics.median(times), min(times), times


def time_interleaved(fns: Mapping[str, Callable], args: Sequence, warmup: int = 3,
                     iters: int = 10,
                     on_round: Optional[Callable[[int, Mapping[str, float]], None]] = None,
                     iters_per_fn: Optional[Mapping[str, int]] = None,
                     warmup_per_fn: Optional[Mapping[str, int]] = None):
  """Times several callables in alternation, so load drift hits them alike.

  Every callable gets `warmup` untimed calls, then each round calls every
  callable once (in the given order) until each has `iters` timed calls. On a
  shared machine this keeps a change in background load from favouring
  whichever variant happened to run in the quiet minute.

  Args:
    fns: `{name: callable}`, each returning a nest of tensors.
    args: positional arguments of every callable.
    warmup: untimed calls per callable.
    iters: timed calls per callable.
    on_round: optional `f(round_index, {name: ms})` after each round.
    iters_per_fn: optional `{name: iters}` overriding `iters` for some
      callables (e.g. a very slow variant); a callable with fewer iterations
      takes part in the first rounds only, still interleaved with the others.
    warmup_per_fn: optional `{name: warmup}` overriding `warmup` likewise.

  Returns:
    `{name: (median_ms, min_ms, all_ms)}`.
  """
  iters_of = {name: (iters_per_fn or {}).get(name, iters) for name in fns}
  for name, fn in fns.items():
    for _ in range((warmup_per_fn or {}).get(name, warmup)):
      tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
  times = {name: [] for name in fns}
  for i in range(max(iters_of.values(), default=0)):
    this_round = {}
    for name, fn in fns.items():
      if i >= iters_of[name]:
        continue
      start = time.perf_counter()
      tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
      this_round[name] = (time.perf_counter() - start) * 1e3
      times[name].append(this_round[name])
    if on_round is not None:
      on_round(i, this_round)
  return {name: (statistics.median(t), min(t), t) for name, t in times.items()}


def env_summary() -> dict:
  """Versions, cores, thread pools and load average, for benchmark reports."""
  return {
      'tensorflow': tf.__version__,
      'tf_keras': tf_keras.__version__,
      'python': platform.python_version(),
      'cpus': os.cpu_count(),
      'intra_op_threads': tf.config.threading.get_intra_op_parallelism_threads(),
      'inter_op_threads': tf.config.threading.get_inter_op_parallelism_threads(),
      'onednn': os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset: TF enables it only on CPUs with AVX512-VNNI, AVX512-BF16 or AMX)'),
      'load_average': tuple(round(x, 2) for x in os.getloadavg()),
  }
