"""Model ids and their defaults, and the builders that read them.

Every id records its architecture and what its recipe uses (head depth and
width, separable heads, anchor size, activation, input size). Keyword
overrides win over those defaults:

  >>> model = build_retinanet('49S', num_classes=4, input_size=256)
  >>> outputs = model(tf.zeros([1, 256, 256, 3]))
  >>> sorted(outputs['cls_outputs'])
  ['3', '4', '5', '6', '7']
"""
import dataclasses
import fnmatch
from typing import Any, Optional, Tuple

from spinenet.modeling import block_specs
from spinenet.modeling import classifier as classifier_lib
from spinenet.modeling import heads
from spinenet.modeling import maskrcnn as maskrcnn_lib
from spinenet.modeling import maskrcnn_heads
from spinenet.modeling import resnet_fpn
from spinenet.modeling import retinanet as retinanet_lib
from spinenet.modeling import spinenet as spinenet_lib


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Architecture and recipe defaults of one model id."""
  family: str  # 'spinenet', 'mobile' or 'resnet_fpn'
  input_size: int
  endpoints_num_filters: int = 256
  filter_size_scale: float = 1.0
  resample_alpha: float = 0.5
  block_repeats: int = 1
  se_ratio: Optional[float] = None
  activation: str = 'swish'
  head_convs: int = 4
  head_filters: int = 256
  separable_head: bool = False
  anchor_size: float = 3.0
  resnet_depth: int = 0
  block_specs: Tuple[Any, ...] = block_specs.SPINENET_49
  # Further `spinenet.build_spinenet` defaults of the id, `(name, value)` pairs.
  backbone_options: Tuple[Tuple[str, Any], ...] = ()


# The authors' TF1 numerics (tensorflow/tpu models/official/detection):
# strided convs padded by kernel size, TF1's pooling and resizing in
# cross-scale connections, batch norm epsilon 1e-4 (detection configs).
TF1_BACKBONE_OPTIONS = (('fixed_padding', True), ('resample_rule', 'tf1'),
                        ('norm_epsilon', 1e-4))


MODELS = {
    '49S': ModelSpec('spinenet', 640, endpoints_num_filters=128,
                     filter_size_scale=0.65, head_filters=128),
    '49': ModelSpec('spinenet', 640),
    '96': ModelSpec('spinenet', 1024, block_repeats=2),
    '143': ModelSpec('spinenet', 1280, resample_alpha=1.0, block_repeats=3,
                     anchor_size=4.0),  # anchor size 4: 143 and 190 only
    '190': ModelSpec('spinenet', 1280, endpoints_num_filters=512,
                     filter_size_scale=1.3, resample_alpha=1.0, block_repeats=4,
                     head_convs=7, head_filters=512, anchor_size=4.0),
    'mobile-49': ModelSpec('mobile', 384, endpoints_num_filters=48, se_ratio=0.2,
                           activation='hard_swish', head_filters=48,
                           separable_head=True,
                           block_specs=block_specs.MOBILE_SPINENET_49),
    'mobile-49S': ModelSpec('mobile', 384, endpoints_num_filters=40,
                            filter_size_scale=0.65, se_ratio=0.2,
                            activation='hard_swish', head_filters=40,
                            separable_head=True,
                            block_specs=block_specs.MOBILE_SPINENET_49),
    'mobile-49XS': ModelSpec('mobile', 256, endpoints_num_filters=24,
                             filter_size_scale=0.6, se_ratio=0.2,
                             activation='swish', head_filters=24,
                             separable_head=True,
                             block_specs=block_specs.MOBILE_SPINENET_49),
    # SpineNetMB-49 of the authors' TF1 model zoo (spinenet-mbconv49_retinanet):
    # mobile-49's blocks and parameters (2,386,603; 2,337,579 trainable), but
    # swish everywhere, a swish / sigmoid squeeze-excite and TF1's padding and
    # batch norm epsilon.
    'MB-49': ModelSpec('mobile', 384, endpoints_num_filters=48, se_ratio=0.2,
                       head_filters=48, separable_head=True,
                       block_specs=block_specs.MOBILE_SPINENET_49,
                       backbone_options=TF1_BACKBONE_OPTIONS + (
                           ('mbconv_se_activation', 'swish'),
                           ('mbconv_se_gating', 'sigmoid'))),
    'resnet50-fpn': ModelSpec('resnet_fpn', 640, resnet_depth=50, activation='relu'),
    'resnet101-fpn': ModelSpec('resnet_fpn', 640, resnet_depth=101, activation='relu'),
    'resnet152-fpn': ModelSpec('resnet_fpn', 640, resnet_depth=152, activation='relu'),
}

SPINENET_IDS = ('49S', '49', '96', '143', '190', 'mobile-49', 'mobile-49S', 'mobile-49XS',
                'MB-49')


def list_models(pattern='*'):
  """Model ids matching a shell pattern, e.g. `list_models('mobile-*')`."""
  return [m for m in MODELS if fnmatch.fnmatch(m, pattern)]


def resolve(model_id):
  """Canonical id for `model_id` (case-insensitive; 'spinenet-49' works too)."""
  key = str(model_id).strip()
  for prefix in ('spinenet-', 'spinenet_', 'spinenet'):
    if key.lower().startswith(prefix):
      key = key[len(prefix):]
  key = key.replace('_', '-')
  for m in MODELS:
    if m.lower() == key.lower():
      return m
  raise ValueError(f'Unknown model id {model_id!r}; expected one of '
                   f'{list(MODELS)}. Received: model_id={model_id!r}')


def get_spec(model_id) -> ModelSpec:
  return MODELS[resolve(model_id)]


_BACKBONE_ARGS = ('min_level', 'max_level', 'endpoints_num_filters', 'resample_alpha',
                  'block_repeats', 'filter_size_scale', 'init_stochastic_depth_rate',
                  'se_ratio', 'expand_ratio', 'activation', 'use_sync_bn',
                  'norm_momentum', 'norm_epsilon', 'kernel_initializer',
                  'kernel_regularizer', 'block_specs', 'winograd_min_size',
                  'fixed_padding', 'resample_rule', 'mbconv_se_activation',
                  'mbconv_se_gating')
_NORM_ARGS = ('activation', 'use_sync_bn', 'norm_momentum', 'norm_epsilon')


def _split(overrides, allowed, what):
  unknown = set(overrides) - set(allowed)
  if unknown:
    raise TypeError(f'Unknown argument(s) {sorted(unknown)} for {what}; expected '
                    f'some of {sorted(allowed)}.')


def build_backbone(model_id, input_size=None, **overrides):
  """Builds the backbone of `model_id`.

  Args:
    model_id: one of `MODELS` (e.g. '49', 'mobile-49S', 'resnet50-fpn').
    input_size: int or `(H, W)`; None builds for any size (multiples of 128).
    **overrides: any `spinenet.build_spinenet` argument (for ResNet-FPN:
      min/max level, activation, norm and initializer options).

  Returns:
    A functional Keras model: images -> `{str(level): features}`.
  """
  model_id = resolve(model_id)
  spec = MODELS[model_id]
  _split(overrides, _BACKBONE_ARGS, f'backbone {model_id!r}')
  if input_size is None:
    shape = (None, None, 3)
  elif isinstance(input_size, int):
    shape = (input_size, input_size, 3)
  else:
    shape = (int(input_size[0]), int(input_size[1]), 3)
  name = 'spinenet_' + model_id.lower().replace('-', '_')
  if spec.family == 'resnet_fpn':
    kwargs = {k: v for k, v in overrides.items()
              if k in _NORM_ARGS + ('min_level', 'max_level', 'kernel_initializer',
                                    'kernel_regularizer', 'init_stochastic_depth_rate')}
    kwargs.setdefault('activation', spec.activation)
    return resnet_fpn.build_resnet_fpn(spec.resnet_depth, input_shape=shape, **kwargs)
  kwargs = dict(
      block_specs=spec.block_specs, endpoints_num_filters=spec.endpoints_num_filters,
      filter_size_scale=spec.filter_size_scale, resample_alpha=spec.resample_alpha,
      block_repeats=spec.block_repeats, se_ratio=spec.se_ratio,
      activation=spec.activation, init_stochastic_depth_rate=0.2)
  kwargs.update(spec.backbone_options)
  kwargs.update(overrides)
  return spinenet_lib.build_spinenet(input_shape=shape, name=name, **kwargs)


def build_retinanet(model_id, num_classes=91, input_size=None, *, head_convs=None,
                    head_filters=None, separable_head=None, num_scales=3,
                    aspect_ratios=(0.5, 1.0, 2.0), anchor_size=None,
                    detection_config=None, winograd_min_size=0, **backbone_overrides):
  """Builds RetinaNet on `model_id` with its recipe's head and anchors.

  Args:
    model_id: model id (see `MODELS`).
    num_classes: class logits per anchor, background (index 0) included;
      91 for COCO's category ids.
    input_size: int or `(H, W)`; defaults to the id's input size.
    head_convs, head_filters, separable_head, anchor_size: override the id's.
    num_scales, aspect_ratios: anchors per location.
    detection_config: `retinanet.DetectionConfig`.
    winograd_min_size: 3x3 stride-1 convs (head, and SpineNet blocks) on maps
      at least this large run as Winograd convolutions in float32
      (`heads.RetinaNetHead`, `spinenet.build_spinenet`); 0 = never. A CPU
      training option: same weights and results.
    **backbone_overrides: see `build_backbone`.

  Returns:
    A built `retinanet.RetinaNet`.
  """
  spec = get_spec(model_id)
  input_size = input_size or spec.input_size
  if winograd_min_size and spec.family != 'resnet_fpn':
    backbone_overrides = dict(backbone_overrides, winograd_min_size=winograd_min_size)
  backbone = build_backbone(model_id, input_size, **backbone_overrides)
  min_level = backbone_overrides.get('min_level', 3)
  max_level = backbone_overrides.get('max_level', 7)
  anchor_config = retinanet_lib.AnchorConfig(
      num_scales=num_scales, aspect_ratios=tuple(aspect_ratios),
      anchor_size=spec.anchor_size if anchor_size is None else anchor_size)
  norm = {k: v for k, v in spec.backbone_options if k in _NORM_ARGS}
  norm.update({k: backbone_overrides[k] for k in _NORM_ARGS if k in backbone_overrides})
  norm.setdefault('activation', spec.activation)
  head = heads.RetinaNetHead(
      min_level, max_level, num_classes, anchor_config.num_anchors,
      num_convs=spec.head_convs if head_convs is None else head_convs,
      num_filters=spec.head_filters if head_filters is None else head_filters,
      use_separable_conv=spec.separable_head if separable_head is None else separable_head,
      kernel_regularizer=backbone_overrides.get('kernel_regularizer'),
      winograd_min_size=winograd_min_size, name='retinanet_head', **norm)
  model = retinanet_lib.RetinaNet(
      backbone, head, min_level, max_level, anchor_config,
      detection_config or retinanet_lib.DetectionConfig(), name='retinanet')
  size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
  model.build((None, *size, 3))
  model(keras_zeros((1, *size, 3)), training=False)
  return model


@dataclasses.dataclass(frozen=True)
class MaskRCNNSpec:
  """Mask R-CNN recipe of a model id (heads, anchors, activation)."""
  rpn_convs: int = 1
  rpn_filters: int = 256
  box_convs: int = 4
  box_filters: int = 256
  fc_dims: int = 1024
  mask_convs: int = 4
  mask_filters: int = 256
  anchor_size: float = 3.0
  activation: str = 'relu'


# The authors' `spinenet{49s,49,96,143,190}_mrcnn.yaml` (the Model Garden's
# `maskrcnn_spinenet_coco` is the '49' row): relu except 190, anchor size 3
# except 190 (5), batch norm in every head. Ids without a Mask R-CNN recipe
# (mobile, ResNet-FPN) use their RetinaNet head width and activation.
MASKRCNN_SPECS = {
    '49S': MaskRCNNSpec(rpn_filters=128, box_filters=128, fc_dims=512, mask_filters=128),
    '49': MaskRCNNSpec(),
    '96': MaskRCNNSpec(),
    '143': MaskRCNNSpec(),
    '190': MaskRCNNSpec(rpn_convs=7, rpn_filters=384, box_convs=7, box_filters=384,
                        mask_convs=7, mask_filters=384, anchor_size=5.0,
                        activation='swish'),
}


def get_maskrcnn_spec(model_id) -> MaskRCNNSpec:
  """The Mask R-CNN recipe of `model_id` (derived from its spec if it has none)."""
  model_id = resolve(model_id)
  if model_id in MASKRCNN_SPECS:
    return MASKRCNN_SPECS[model_id]
  spec = MODELS[model_id]
  return MaskRCNNSpec(rpn_filters=spec.head_filters, box_filters=spec.head_filters,
                      mask_filters=spec.head_filters, anchor_size=spec.anchor_size,
                      activation=spec.activation)


_MASKRCNN_HEAD_ARGS = tuple(f.name for f in dataclasses.fields(MaskRCNNSpec))


def build_maskrcnn(model_id, num_classes=91, input_size=None, *, num_scales=1,
                   aspect_ratios=(0.5, 1.0, 2.0), proposal_config=None,
                   roi_sampler_config=None, detection_config=None,
                   head_winograd_min_size=7, box_coding=None, **overrides):
  """Builds Mask R-CNN on `model_id` with its recipe's heads and anchors.

  Args:
    model_id: model id (see `MODELS`).
    num_classes: classes, background (index 0) included; 91 for COCO ids.
    input_size: int or `(H, W)`; defaults to the id's input size.
    num_scales, aspect_ratios: RPN anchors per location (recipe: 1 x 3).
    proposal_config, roi_sampler_config, detection_config: the
      `maskrcnn` dataclasses; recipe defaults when None.
    head_winograd_min_size: box and mask head 3x3 convs on ROI maps at least
      this large run as Winograd convolutions in float32 on a CPU
      (`winograd_conv.WinogradConv2D`; at inference the whole conv stack is
      one fused XLA cluster): same weights, results to float rounding. The
      default 7 covers the recipes' 7x7 box and 14x14 mask ROI maps; 0 never.
      Hosts with a GPU or TPU, other precisions and SavedModel export
      (`export_lib`) take direct convolutions whatever it is.
    box_coding: None (the configs' own) or 'standard' / 'tf1': sets
      `box_coding` of the proposal and detection configs ('tf1': the SpineNet
      authors' "+1 pixel" box convention, `ops.box_ops`).
    **overrides: any `MaskRCNNSpec` field (rpn_convs, box_filters, fc_dims,
      anchor_size, activation, ...) and any `build_backbone` argument. The
      activation applies to backbone and heads alike.

  Returns:
    A built `maskrcnn.MaskRCNN`.
  """
  model_id = resolve(model_id)
  head_overrides = {k: overrides.pop(k) for k in list(overrides)
                    if k in _MASKRCNN_HEAD_ARGS}
  recipe = dataclasses.replace(get_maskrcnn_spec(model_id), **head_overrides)
  spec = MODELS[model_id]
  input_size = input_size or spec.input_size
  backbone_overrides = dict(overrides, activation=recipe.activation)
  backbone = build_backbone(model_id, input_size, **backbone_overrides)
  min_level = overrides.get('min_level', 3)
  max_level = overrides.get('max_level', 7)
  anchor_config = maskrcnn_lib.AnchorConfig(
      num_scales=num_scales, aspect_ratios=tuple(aspect_ratios),
      anchor_size=recipe.anchor_size)
  norm = {k: v for k, v in spec.backbone_options if k in _NORM_ARGS}
  norm.update({k: backbone_overrides[k] for k in _NORM_ARGS if k in backbone_overrides})
  regularizer = overrides.get('kernel_regularizer')
  rpn_head = maskrcnn_heads.RPNHead(
      min_level, max_level, anchor_config.num_anchors, num_convs=recipe.rpn_convs,
      num_filters=recipe.rpn_filters, kernel_regularizer=regularizer, name='rpn_head',
      **norm)
  box_head = maskrcnn_heads.BoxHead(
      num_classes, num_convs=recipe.box_convs, num_filters=recipe.box_filters,
      fc_dims=recipe.fc_dims, kernel_regularizer=regularizer,
      winograd_min_size=head_winograd_min_size, name='box_head', **norm)
  mask_head = maskrcnn_heads.MaskHead(
      num_classes, num_convs=recipe.mask_convs, num_filters=recipe.mask_filters,
      kernel_regularizer=regularizer, winograd_min_size=head_winograd_min_size,
      name='mask_head', **norm)
  proposal_config = proposal_config or maskrcnn_lib.ProposalConfig()
  detection_config = detection_config or maskrcnn_lib.DetectionConfig()
  if box_coding is not None:
    proposal_config = dataclasses.replace(proposal_config, box_coding=box_coding)
    detection_config = dataclasses.replace(detection_config, box_coding=box_coding)
  model = maskrcnn_lib.MaskRCNN(
      backbone, rpn_head, box_head, mask_head, min_level, max_level, anchor_config,
      proposal_config, roi_sampler_config or maskrcnn_lib.ROISamplerConfig(),
      detection_config, name='maskrcnn')
  size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
  model(maskrcnn_dummy_features(size), training=False)
  return model


def maskrcnn_dummy_features(size, batch=1):
  """Inference features of zero images of `size` `(H, W)` (e.g. to build a model)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  info = tf.constant([[list(size), list(size), [1.0, 1.0], [0.0, 0.0]]], tf.float32)
  return {'images': tf.zeros((batch, *size, 3)),
          'image_info': tf.tile(info, [batch, 1, 1])}


def build_classifier(model_id, num_classes=1000, input_size=224, *, dropout_rate=0.2,
                     fusion='average', **backbone_overrides):
  """Builds a classifier on `model_id` with the paper's head.

  Args:
    model_id: model id.
    num_classes: int.
    input_size: int or `(H, W)`. Defaults to 224.
    dropout_rate: float. Dropout before the linear layer.
    fusion: 'average' (paper; the authors' TF1 head: P7..P3 summed top-down
      with nearest resizes, then averaged), 'level_mean' (each level's global
      mean, averaged) or 'top' (top level only, as the Model Garden pools).
    **backbone_overrides: see `build_backbone`.

  Returns:
    A built `classifier.Classifier`.
  """
  backbone = build_backbone(model_id, input_size, **backbone_overrides)
  head = heads.ClassificationHead(
      num_classes, dropout_rate=dropout_rate, fusion=fusion,
      kernel_regularizer=backbone_overrides.get('kernel_regularizer'),
      name='classification_head')
  model = classifier_lib.Classifier(backbone, head, name='classifier')
  size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
  model(keras_zeros((1, *size, 3)), training=False)
  return model


def keras_zeros(shape):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.zeros(shape)
