"""The Model Garden's Mask R-CNN (tf-models-official 2.20.0) for our benchmarks and tests.

Built by its own experiment factory (`maskrcnn_spinenet_coco`) and task,
overridden with the SpineNet Mask R-CNN recipe of a model id (the authors'
`spinenet*_mrcnn` configs: head widths, anchor size, activation), so that the
architecture matches `spinenet.modeling.registry.build_maskrcnn`. Imported
as a library; none of its code is copied.

  >>> model = build_mg_maskrcnn('49', 640)
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402

from benchmarks import _model_garden  # noqa: E402
from official.core import exp_factory  # noqa: E402
from official.core import task_factory  # noqa: E402
from official.vision import registry_imports  # noqa: E402,F401  (registers experiments)
from spinenet.modeling import registry  # noqa: E402

NUM_CLASSES = 91


def make_mg_maskrcnn_params(model_id, size, num_classes=NUM_CLASSES, overrides=None,
                            stochastic_depth=0.0):
  """The Model Garden experiment config of Mask R-CNN on SpineNet `model_id`.

  Args:
    model_id: a SpineNet id with a Model Garden backbone ('49S', '49', '96',
      '143', '190').
    size: square input size.
    num_classes: classes, background included.
    overrides: optional dict of `MaskRCNNSpec` fields (as `build_maskrcnn`).
    stochastic_depth: the backbone's stochastic depth rate.

  Returns:
    A validated `ExperimentConfig` (levels 3-7, identity decoder, 1 scale x
    aspect ratios 0.5/1/2, synchronized batch norm 0.99/1e-3).
  """
  recipe = registry.get_maskrcnn_spec(model_id)
  if overrides:
    import dataclasses  # pylint: disable=g-import-not-at-top
    recipe = dataclasses.replace(recipe, **overrides)
  mg_id = _model_garden.get_recipe(registry.resolve(model_id)).mg_model_id
  params = exp_factory.get_exp_config('maskrcnn_spinenet_coco')
  params.override({
      'task': {
          'model': {
              'num_classes': num_classes,
              'input_size': [size, size, 3],
              'min_level': 3, 'max_level': 7,
              'anchor': {'anchor_size': recipe.anchor_size, 'num_scales': 1,
                         'aspect_ratios': [0.5, 1.0, 2.0]},
              'backbone': {'type': 'spinenet', 'spinenet': {
                  'model_id': mg_id, 'min_level': 3, 'max_level': 7,
                  'stochastic_depth_drop_rate': stochastic_depth}},
              'decoder': {'type': 'identity'},
              'rpn_head': {'num_convs': recipe.rpn_convs, 'num_filters': recipe.rpn_filters},
              'detection_head': {'num_convs': recipe.box_convs,
                                 'num_filters': recipe.box_filters, 'num_fcs': 1,
                                 'fc_dims': recipe.fc_dims},
              'mask_head': {'num_convs': recipe.mask_convs,
                            'num_filters': recipe.mask_filters},
              'norm_activation': {'activation': recipe.activation, 'norm_epsilon': 1e-3,
                                  'norm_momentum': 0.99, 'use_sync_bn': True},
          },
      },
      'runtime': {'mixed_precision_dtype': 'float32'},
  }, is_strict=True)
  params.validate()
  return params


def build_mg_maskrcnn(model_id, size, num_classes=NUM_CLASSES, overrides=None,
                      stochastic_depth=0.0, precision='float32'):
  """The Model Garden's `MaskRCNNModel`, built by its task and called once on zeros.

  `precision`: the Keras policy during the build ('float32' or
  'mixed_bfloat16'), as its trainer sets it from `runtime.mixed_precision_dtype`.
  """
  params = make_mg_maskrcnn_params(model_id, size, num_classes, overrides, stochastic_depth)
  with _model_garden.keras_precision(precision):
    model = task_factory.get_task(params.task).build_model()
    model(tf.zeros([1, size, size, 3]), tf.constant([[size, size]], tf.float32),
          training=False)
  return model
