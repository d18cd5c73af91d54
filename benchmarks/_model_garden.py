"""The Model Garden side of our benchmarks and parity tests: one recipe table.

Every benchmark that prints a ratio against the TensorFlow Model Garden
(tf-models-official 2.20.0), and every parity test that converts one of its
checkpoints, builds the reference model here, so that all compare against one
construction: the Model Garden's own experiment factory
(`retinanet_spinenet_coco` / `retinanet_mobile_coco` / `image_classification`)
overridden with the published recipe values of `RECIPES`, then
`task_factory.get_task(...).build_model()`. The Model Garden is imported as a
library; none of its code is copied.

`env_summary`, `time_fn` and `time_interleaved` live in `benchmarks._machine`
and `benchmarks._timing`; they are importable from here too, as the
benchmarks have always called them.

Example:
  >>> model = build_mg_retinanet('49S', 256)
  >>> raw = tf.function(mg_raw_fn(model))
  >>> median_ms, min_ms, all_ms = time_fn(raw, (tf.zeros([1, 256, 256, 3]),))
"""
import contextlib
import dataclasses
import os
from typing import Callable

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from benchmarks._machine import env_summary  # noqa: E402,F401  (re-exported)
from benchmarks._timing import time_fn  # noqa: E402,F401  (re-exported)
from benchmarks._timing import time_interleaved  # noqa: E402,F401  (re-exported)
from official.core import exp_factory  # noqa: E402
from official.core import task_factory  # noqa: E402
from official.vision import registry_imports  # noqa: E402,F401  (registers experiments)
from official.vision.modeling import factory as mg_factory  # noqa: E402
from official.vision.ops import anchor  # noqa: E402

PRECISIONS = ('float32', 'mixed_bfloat16')


@dataclasses.dataclass(frozen=True)
class MGRecipe:
  """Published Model Garden recipe values of one model id (docs/convert.md).

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


def backbone_config(recipe: MGRecipe) -> dict:
  """The `task.model.backbone` override of `recipe` (stochastic depth 0.2)."""
  kind = 'spinenet_mobile' if recipe.mobile else 'spinenet'
  inner = {'model_id': recipe.mg_model_id, 'stochastic_depth_drop_rate': 0.2}
  if recipe.mobile:
    inner['se_ratio'] = 0.2
  return {'type': kind, kind: inner}


def norm_activation_config(recipe: MGRecipe) -> dict:
  """The `task.model.norm_activation` override: synchronized batch norm 0.99/1e-3."""
  return {'activation': recipe.activation, 'norm_epsilon': 1e-3, 'norm_momentum': 0.99,
          'use_sync_bn': True}


def make_mg_params(model_id: str, size: int, num_classes: int = NUM_CLASSES,
                   precision: str = 'float32'):
  """The Model Garden experiment config for RetinaNet on `model_id`.

  Args:
    model_id: one of `RECIPES`.
    size: square input size in pixels.
    num_classes: logits per anchor, background included.
    precision: `runtime.mixed_precision_dtype`, one of `PRECISIONS` (the
      Model Garden's trainer sets the Keras policy from it before it builds
      the model; `build_mg_retinanet` does the same).

  Returns:
    A validated `official.core.config_definitions.ExperimentConfig`: levels
    3-7, 3 scales x aspect ratios 0.5/1/2, identity decoder, synchronized batch
    norm 0.99/1e-3, stochastic depth 0.2, and the recipe's head, anchor size,
    activation and weight decay.
  """
  if precision not in PRECISIONS:
    raise ValueError(f'precision={precision!r}; expected one of {PRECISIONS}.')
  r = get_recipe(model_id)
  params = exp_factory.get_exp_config(
      'retinanet_mobile_coco' if r.mobile else 'retinanet_spinenet_coco')
  params.override({
      'task': {
          'losses': {'l2_weight_decay': 3e-5 if r.mobile else 4e-5},
          'model': {
              'num_classes': num_classes,
              'input_size': [size, size, 3],
              'min_level': 3, 'max_level': 7,
              'anchor': {'anchor_size': r.anchor_size, 'num_scales': 3,
                         'aspect_ratios': [0.5, 1.0, 2.0]},
              'backbone': backbone_config(r),
              'decoder': {'type': 'identity'},
              'head': {'num_convs': r.head_convs, 'num_filters': r.head_filters,
                       'use_separable_conv': r.mobile},
              'norm_activation': norm_activation_config(r),
          },
      },
      'runtime': {'mixed_precision_dtype': precision},
  }, is_strict=True)
  params.validate()
  return params


@contextlib.contextmanager
def keras_precision(precision: str):
  """Sets the global Keras mixed-precision policy to `precision`, then restores it."""
  previous = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy(precision)
  try:
    yield
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)


def build_mg_retinanet(model_id: str, size: int, num_classes: int = NUM_CLASSES,
                       precision: str = 'float32'):
  """Builds the Model Garden's RetinaNet through its task factory.

  Args:
    model_id: one of `RECIPES`.
    size: square input size in pixels.
    num_classes: logits per anchor, background included.
    precision: one of `PRECISIONS`; the Keras policy while the model is built.

  Returns:
    The `official.vision.modeling.retinanet_model.RetinaNetModel`, called once
    on zeros so that every weight exists (with the identity decoder the Model
    Garden builds its head lazily).
  """
  params = make_mg_params(model_id, size, num_classes, precision)
  with keras_precision(precision):
    model = task_factory.get_task(params.task).build_model()
    model(tf.zeros([1, size, size, 3]), training=False)
  return model


def build_mg_classifier(model_id: str, size: int, num_classes: int, backbone=None):
  """The Model Garden's `ClassificationModel` on the SpineNet backbone of `model_id`.

  Built by `factory.build_classification_model` from the `image_classification`
  experiment (the Model Garden's only classification experiment that takes a
  SpineNet backbone), dropout 0.2, float32.

  Args:
    model_id: one of `RECIPES`.
    size: square input size in pixels.
    num_classes: logits.
    backbone: an already built Model Garden backbone to reuse, or None.

  Returns:
    `(task config, model)`.
  """
  r = get_recipe(model_id)
  params = exp_factory.get_exp_config('image_classification')
  params.override({'task': {'model': {
      'num_classes': num_classes, 'input_size': [size, size, 3],
      'backbone': backbone_config(r), 'dropout_rate': 0.2,
      'norm_activation': norm_activation_config(r)}}}, is_strict=True)
  input_specs = tf_keras.layers.InputSpec(shape=[None, size, size, 3])
  return params.task, mg_factory.build_classification_model(
      input_specs, params.task.model, backbone=backbone)


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
