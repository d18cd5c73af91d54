"""Parameter and FLOP counts of built models.

FLOPs are multiply-adds, as the SpineNet paper counts them: TensorFlow's
profiler float-op count of the model's frozen inference graph, halved.
"""
import contextlib
import io

import tensorflow as tf
from tensorflow.python.framework import convert_to_constants
from tensorflow.python.framework import graph_util
from tensorflow.python.framework import ops

from spinenet.modeling import winograd_conv

_FUSED_BATCH_NORMS = ('FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3')


def _fused_batch_norm_flops(graph, node):
  """Inference batch norm is `x * scale + offset`: 2 float ops per element."""
  shape = graph_util.tensor_shape_from_node_def_name(graph, node.input[0])
  shape.assert_is_fully_defined()
  return ops.OpStats('flops', 2 * shape.num_elements())


def _register_batch_norm_flops():
  """Teaches the profiler the cost of fused batch norm, which it counts as 0.

  Unfused batch norm (e.g. synchronized) shows up as Mul + AddV2 and is
  counted; without this the same network would count fewer FLOPs with
  fused batch norm. Registration is process-wide and happens once.
  """
  for op_type in _FUSED_BATCH_NORMS:
    try:
      ops.RegisterStatistics(op_type, 'flops')(_fused_batch_norm_flops)
    except KeyError:  # already registered in this process
      pass


def count_params(layer):
  """Parameter counts of a Keras layer or model.

  Returns:
    dict with `total` (every weight, batch-norm moving statistics included),
    `trainable` and `non_trainable`.
  """
  trainable = sum(int(tf.size(w)) for w in layer.trainable_weights)
  total = sum(int(tf.size(w)) for w in layer.weights)
  return {'total': total, 'trainable': trainable, 'non_trainable': total - trainable}


def count_flops(fn, input_shape, dtype=tf.float32):
  """Multiply-adds of `fn` on one input of `input_shape`, counted on its graph.

  Args:
    fn: callable taking one tensor (e.g. `lambda x: model(x, training=False)`).
    input_shape: full static shape, batch included, e.g. `(1, 640, 640, 3)`.
    dtype: input dtype.

  Returns:
    int: profiler float operations / 2.
  """
  _register_batch_norm_flops()
  concrete = tf.function(fn).get_concrete_function(tf.TensorSpec(input_shape, dtype))
  frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
  opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  opts['output'] = 'none'
  with contextlib.redirect_stdout(io.StringIO()):
    prof = tf.compat.v1.profiler.profile(
        graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd='op',
        options=opts)
  return int(prof.total_float_ops) // 2


def describe(model_id, image_size=None, task='retinanet', num_classes=None,
             **overrides):
  """Builds `model_id` for `task` and counts its parameters and FLOPs.

  Args:
    model_id: a registry id ('49', 'mobile-49S', 'resnet50-fpn', ...).
    image_size: int input size; defaults to the id's (224 for classification).
    task: 'retinanet', 'maskrcnn', 'classification' or 'backbone'.
    num_classes: defaults to 91 (retinanet, maskrcnn) or 1000 (classification).
    **overrides: passed to the registry builder.

  Returns:
    dict: `model`, `task`, `image_size`, `num_classes`, `params` (total, every
    weight incl. batch-norm moving statistics), `flops` (multiply-adds,
    total), and `params_detail` / `flops_detail` per part (backbone, head,
    total; params split into trainable and non-trainable). Mask R-CNN counts
    its inference graph (1000 proposals through the box head, 100 detections
    through the mask head), parts backbone, rpn_head, box_head, mask_head;
    its FLOPs split into backbone, rpn_head and the rest (`second_stage`:
    proposals, RoIAlign, box and mask heads, post-processing).

  FLOPs are the architecture's: Winograd convolutions
  (`winograd_conv.WinogradConv2D`, on by default in Mask R-CNN's heads on a
  CPU) are switched to direct ones in the returned model before counting, as
  the papers and model zoos count them.
  """
  from spinenet.modeling import registry  # pylint: disable=g-import-not-at-top
  model_id = registry.resolve(model_id)
  if task == 'retinanet':
    image_size = image_size or registry.get_spec(model_id).input_size
    num_classes = num_classes or 91
    model = registry.build_retinanet(model_id, num_classes, image_size, **overrides)
  elif task == 'maskrcnn':
    image_size = image_size or registry.get_spec(model_id).input_size
    num_classes = num_classes or 91
    model = registry.build_maskrcnn(model_id, num_classes, image_size, **overrides)
  elif task == 'classification':
    image_size = image_size or 224
    num_classes = num_classes or 1000
    model = registry.build_classifier(model_id, num_classes, image_size, **overrides)
  elif task == 'backbone':
    image_size = image_size or registry.get_spec(model_id).input_size
    num_classes = None
    model = registry.build_backbone(model_id, image_size, **overrides)
  else:
    raise ValueError("`task` must be 'retinanet', 'maskrcnn', 'classification' or "
                     f"'backbone'. Received: task={task!r}")
  winograd_conv.use_direct_convolutions(model)
  shape = (1, image_size, image_size, 3)
  if task == 'maskrcnn':
    return _describe_maskrcnn(model, model_id, image_size, num_classes, shape), model
  total_flops = count_flops(lambda x: model(x, training=False), shape)
  result = {'model': model_id, 'task': task, 'image_size': image_size,
            'num_classes': num_classes}
  if task == 'backbone':
    result['params_detail'] = {'backbone': count_params(model),
                               'total': count_params(model)}
    result['flops_detail'] = {'backbone': total_flops, 'total': total_flops}
  else:
    backbone_flops = count_flops(lambda x: model.backbone(x, training=False), shape)
    result['params_detail'] = {'backbone': count_params(model.backbone),
                               'head': count_params(model.head),
                               'total': count_params(model)}
    result['flops_detail'] = {'backbone': backbone_flops,
                              'head': total_flops - backbone_flops,
                              'total': total_flops}
  result['params'] = result['params_detail']['total']['total']
  result['flops'] = total_flops
  return result, model


def _describe_maskrcnn(model, model_id, image_size, num_classes, shape):
  """`describe`'s result for a built `maskrcnn.MaskRCNN`."""
  from spinenet.modeling import registry  # pylint: disable=g-import-not-at-top
  size = (image_size, image_size)

  def full(x):
    features = dict(registry.maskrcnn_dummy_features(size), images=x)
    return model(features, training=False)

  def first_stage(x):
    return model.rpn_head(model.features(x, training=False), training=False)

  total = count_flops(full, shape)
  backbone = count_flops(lambda x: model.backbone(x, training=False), shape)
  rpn = count_flops(first_stage, shape) - backbone
  parts = ('backbone', 'rpn_head', 'box_head', 'mask_head')
  params = {p: count_params(getattr(model, p)) for p in parts}
  params['total'] = count_params(model)
  result = {'model': model_id, 'task': 'maskrcnn', 'image_size': image_size,
            'num_classes': num_classes, 'params_detail': params,
            'flops_detail': {'backbone': backbone, 'rpn_head': rpn,
                             'second_stage': total - backbone - rpn, 'total': total}}
  result['params'] = params['total']['total']
  result['flops'] = total
  return result
