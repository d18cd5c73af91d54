"""Converts the SpineNet authors' TF1 model-zoo checkpoints into ours.

The zoo (tensorflow/tpu `models/official/detection/MODEL_ZOO.md`) holds
name-based TF1 checkpoints (`tf.compat.v1.train.Saver`): RetinaNet
SpineNet-49S/49/96/143/190 (ReLU, and the swish "-best" recipe), SpineNetMB-49,
Mask R-CNN and ImageNet classifiers. Only the checkpoint is read
(`tf.train.load_checkpoint`: names and shapes); the authors' code is not
imported. Matching (docs/convert.md):

* A variable name is `<scope>/<layer>/<leaf>`. The authors' graph gives scopes
  by structure: `spinenet` (`spinenet_mbconv` for SpineNet-MBConv) holds the
  stem, the stem blocks and the endpoint convs; `spinenet/sub_policy<k>/
  resample_with_alpha_resample_<k>_<j>` (`resample_with_sepconv_...` for
  MBConv) the resampling of parent `j` of block spec `k`, and
  `spinenet/sub_policy<k>/scale_permuted_block_<2 + k>` its block group.
  Inside a scope, `tf.layers` numbers layers of one class in creation order
  (`conv2d`, `conv2d_1`, ...; `batch_normalization_N`, `depthwise_conv2d_N`).
* Our model's layers are listed per scope and class in the authors' creation
  order (`backbone_units`) and paired with theirs sorted by that number. The
  heads have explicit names: `retinanet/class_net/class-<i>` (shared convs),
  `class-<i>-<level>` (per-level norms), `class-predict`, the `box_net`
  twins; `classification_head/dense`; Mask R-CNN `rpn_head/rpn` (shared conv,
  `rpn-<i>` for further ones), `rpn_head/rpn-l<level>-bn` (per-level norms),
  `rpn-class`, `rpn-box`; `fast_rcnn_head/conv_<i>`, `fc6`, `class-predict`,
  `box-predict` with unnamed batch norms in creation order (convs', then the
  FC's); `mask_head/mask-conv-l<i>`, `conv5-mask` (the deconv),
  `mask_fcn_logits`, unnamed batch norms likewise.
* `global_step`, optimizer slots (`<variable>/Momentum`) and moving-average
  shadows (`<variable>/ExponentialMovingAverage`: `use_ema` picks them where
  they exist) are bookkeeping. Every other variable must pair with one of ours
  in shape, and every one of ours must be filled, or `ConversionError` lists
  all problems.

The converted model reproduces the authors' numerics only when built with
their options (`tf1_build_args`): strided convs padded by kernel size, their
resampling rule and batch-norm epsilon (1e-4 detection, 1e-5 classification),
and the checkpoint's activation (swish "-best", relu otherwise: the
checkpoint does not record it). `conversion.json` records those arguments.
"""
import collections
import dataclasses
import os
import re
import time
from typing import Dict, List, Optional, Tuple

from absl import logging
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import registry
from spinenet.training import checkpoint_converter
from spinenet.training import object_graph

ConversionError = checkpoint_converter.ConversionError
ConversionResult = checkpoint_converter.ConversionResult

TASKS = ('retinanet', 'maskrcnn', 'classification', 'backbone')
# Our task of each authors' model (`_MODEL_SCOPES` values).
_TASK_OF_MODEL = {'retinanet': 'retinanet', 'classification': 'classification',
                  'mask_rcnn': 'maskrcnn'}
# Top-level scopes of the authors' Mask R-CNN heads.
MASKRCNN_SCOPES = ('rpn_head', 'fast_rcnn_head', 'mask_head')
# Slots of the TF1 optimizers (`<variable>/<slot>`); the zoo used Momentum.
SLOT_NAMES = ('Momentum', 'Adam', 'Adam_1', 'RMSProp', 'RMSProp_1')
EMA_SUFFIX = 'ExponentialMovingAverage'
STEP_NAMES = ('global_step',)
# Batch-norm epsilon of the authors' configs, by model (base_config.py 1e-4;
# the classification yamls set 1e-5, the Mask R-CNN yamls 1e-3), and the
# top-level scope that marks each model's checkpoint.
TF1_NORM_EPSILON = {'retinanet': 1e-4, 'classification': 1e-5, 'mask_rcnn': 1e-3}
_MODEL_SCOPES = {'retinanet': 'retinanet', 'classification_head': 'classification',
                 'rpn_head': 'mask_rcnn'}
CLASSIFICATION_INPUT_SIZE = 224
# Anchor aspect ratios of the authors' detection configs, in their order: the
# class and box predictors' channels are anchor-major in this order (ours
# default to (0.5, 1.0, 2.0)).
TF1_ASPECT_RATIOS = (1.0, 2.0, 0.5)

_LAYER_NAME = re.compile(r'(.+?)(?:_(\d+))?')
_STEP_IN_NAME = re.compile(r'-(\d+)\.index$')


# ============================ The TF1 checkpoint ============================


def checkpoint_prefix(path: str) -> str:
  """The checkpoint prefix for `path`: a prefix, or a directory's newest.

  A directory's `checkpoint` file names the newest; without one (a zoo
  tarball unpacked), the `*.index` file with the highest `-<step>` is taken.
  Works for local and `gs://` paths.

  Raises:
    ConversionError: a directory without checkpoints.
  """
  if not tf.io.gfile.isdir(path):
    return path
  latest = tf.train.latest_checkpoint(path)
  if latest:
    return latest
  indexes = tf.io.gfile.glob(os.path.join(path, '*.index'))
  if not indexes:
    raise ConversionError(f'--tf1_checkpoint={path}: the directory holds no '
                          'checkpoint (no `checkpoint` file and no *.index file).')

  def step(p):
    m = _STEP_IN_NAME.search(p)
    return (int(m.group(1)) if m else -1, p)
  return max(indexes, key=step)[:-len('.index')]


def is_tf1_checkpoint(path: str, flag: str = '--checkpoint') -> bool:
  """Whether `path` (prefix or directory) is a name-based TF1 checkpoint.

  Raises:
    ConversionError: naming `flag`, when no checkpoint can be read there.
  """
  return object_graph.is_name_based(
      _reader(checkpoint_prefix(path), flag).get_variable_to_shape_map())


def _reader(prefix, flag):
  try:
    return tf.train.load_checkpoint(prefix)
  except (tf.errors.OpError, ValueError) as e:
    raise ConversionError(f'{flag}={prefix}: cannot read a checkpoint there '
                          f'({type(e).__name__}: {str(e).splitlines()[0]}).') from None


@dataclasses.dataclass
class _Checkpoint:
  """A TF1 checkpoint's variables, split by role.

  Attributes:
    reader: `tf.train.load_checkpoint` reader.
    shapes: `{name: shape tuple}` of every tensor.
    model: names of model variables (everything not below).
    slots: `{slot name: variable}` optimizer slots.
    ema: `{variable: shadow name}` moving-average shadows.
    steps: bookkeeping counters present (`global_step`).
  """
  reader: object
  shapes: Dict[str, Tuple[int, ...]]
  model: List[str]
  slots: Dict[str, str]
  ema: Dict[str, str]
  steps: List[str]

  @classmethod
  def read(cls, prefix, flag='--tf1_checkpoint'):
    reader = _reader(prefix, flag)
    shapes = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()}
    if not object_graph.is_name_based(shapes):
      raise ConversionError(
          f'{flag}={prefix} is an object-based TF2 checkpoint (it has an object '
          'graph); convert it with --model_garden_checkpoint.')
    names = set(shapes)
    model, slots, ema, steps = [], {}, {}, []
    for name in sorted(names):
      base, _, last = name.rpartition('/')
      if name in STEP_NAMES:
        steps.append(name)
      elif last == EMA_SUFFIX and base in names:
        ema[base] = name
      elif last in SLOT_NAMES and base in names:
        slots[name] = base
      else:
        model.append(name)
    return cls(reader, shapes, model, slots, ema, steps)


def _parse(name):
  """`(scope, layer class or explicit name, creation number, leaf)` of a name."""
  parts = name.split('/')
  if len(parts) < 2:
    return '', name, 0, ''
  match = _LAYER_NAME.fullmatch(parts[-2])
  return '/'.join(parts[:-2]), match.group(1), int(match.group(2) or 0), parts[-1]


def _tf1_layers(names):
  """`{(scope, layer class): [{leaf: name}, ...]}` in creation order."""
  grouped = collections.defaultdict(lambda: collections.defaultdict(dict))
  for name in names:
    scope, kind, number, leaf = _parse(name)
    grouped[(scope, kind)][number][leaf] = name
  return {key: [layers[n] for n in sorted(layers)] for key, layers in grouped.items()}


# ===================== Our model, in the authors' layout =====================


def _leaves(layer):
  """`{leaf name: variable}` of a Keras layer's own weights."""
  return {w.name.split('/')[-1].split(':')[0]: w for w in layer.weights}


def _conv_kind(layer):
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    return 'depthwise_conv2d'
  return 'conv2d'


def _conv_norm(scope, label, conv_norm_act):
  return [(scope, _conv_kind(conv_norm_act.conv), f'{label}/conv',
           _leaves(conv_norm_act.conv)),
          (scope, 'batch_normalization', f'{label}/norm', _leaves(conv_norm_act.norm))]


_RESIDUAL = (('shortcut_conv', 'shortcut_norm'), ('conv1', 'norm1'), ('conv2', 'norm2'))
_BOTTLENECK = _RESIDUAL + (('conv3', 'norm3'),)
_MBCONV = (('expand_conv', 'expand_norm'), ('depthwise', 'depthwise_norm'), ('se', None),
           ('project_conv', 'project_norm'))


def _block_units(scope, label, block):
  """A residual / bottleneck / MBConv block's layers in the authors' order.

  Creation order: shortcut projection first (residual, bottleneck), then the
  convs in call order; MBConv: expansion, depthwise, squeeze-excite reduce and
  expand, projection.
  """
  pairs = {'ResidualBlock': _RESIDUAL, 'BottleneckBlock': _BOTTLENECK,
           'MBConvBlock': _MBCONV}[type(block).__name__]
  units = []
  for conv_name, norm_name in pairs:
    if conv_name == 'se':
      if block.se is not None:
        units += [(scope, 'conv2d', f'{label}/se/{part}', _leaves(getattr(block.se, part)))
                  for part in ('reduce', 'expand')]
      continue
    conv, norm = getattr(block, conv_name, None), getattr(block, norm_name, None)
    if conv is None:  # no shortcut projection, or no MBConv expansion
      continue
    units.append((scope, _conv_kind(conv), f'{label}/{conv_name}', _leaves(conv)))
    units.append((scope, 'batch_normalization', f'{label}/{norm_name}', _leaves(norm)))
  return units


def backbone_units(backbone, mobile: bool):
  """Our backbone's layers as `(scope, layer class, label, {leaf: variable})`.

  In the authors' creation order within each scope (see the module doc).
  """
  root = 'spinenet_mbconv' if mobile else 'spinenet'
  resample_scope = 'resample_with_sepconv' if mobile else 'resample_with_alpha'
  names = [l.name for l in backbone.layers]
  units = _conv_norm(root, 'stem_conv', backbone.get_layer('stem_conv'))
  stems = sorted((n for n in names if n.startswith('stem_block_')), key=str)
  for name in stems:
    for block in backbone.get_layer(name).blocks:
      units += _block_units(root, f'{name}/{block.name}', block)
  blocks = sorted((n for n in names if re.fullmatch(r'block_\d+', n)),
                  key=lambda n: int(n.split('_')[1]))
  for name in blocks:
    k = int(name.split('_')[1])
    layer = backbone.get_layer(name)
    for j, resample in enumerate((layer.resample_a, layer.resample_b)):
      scope = f'{root}/sub_policy{k}/{resample_scope}_resample_{k}_{j}'
      parts = [resample.reduce] + list(resample.down) + [resample.project]
      for part in parts:
        if part is not None and hasattr(part, 'conv'):
          units += _conv_norm(scope, f'{name}/{resample.name}/{part.name}', part)
    scope = f'{root}/sub_policy{k}/scale_permuted_block_{len(stems) + k}'
    for block in layer.group.blocks:
      units += _block_units(scope, f'{name}/group/{block.name}', block)
  endpoints = sorted((n for n in names if n.startswith('endpoint_')),
                     key=lambda n: int(n.split('_')[1]))
  for name in endpoints:
    units += _conv_norm(root, name, backbone.get_layer(name))
  return units


def retinanet_head_units(head):
  """Our `RetinaNetHead`'s layers under the authors' explicit names."""
  units = []
  for prefix, convs, norms, predictor in (
      ('class', head.class_convs, head.class_norms, head.classifier),
      ('box', head.box_convs, head.box_norms, head.box_regressor)):
    scope = f'retinanet/{prefix}_net'
    for i, conv in enumerate(convs):
      units.append((scope, f'{prefix}-{i}', conv.name, _leaves(conv)))
    for level in head.levels:
      for i, norm in enumerate(norms[level]):
        units.append((scope, f'{prefix}-{i}-{level}', norm.name, _leaves(norm)))
    units.append((scope, f'{prefix}-predict', predictor.name, _leaves(predictor)))
  return units


def maskrcnn_head_units(model):
  """Our Mask R-CNN heads' layers under the authors' names, in creation order.

  Explicit names are their own layer class (`_parse`); `conv_<i>` of the box
  head and the unnamed `batch_normalization_<n>` pair by creation number.
  """
  rpn, box, mask = model.rpn_head, model.box_head, model.mask_head
  units = []
  for i, conv in enumerate(rpn.convs):
    units.append(('rpn_head', 'rpn' if i == 0 else f'rpn-{i}', conv.name, _leaves(conv)))
  for level in rpn.levels:
    for i, norm in enumerate(rpn.norms[level]):
      name = f'rpn-l{level}-bn' + ('' if i == 0 else f'-{i}')
      units.append(('rpn_head', name, norm.name, _leaves(norm)))
  units.append(('rpn_head', 'rpn-class', rpn.classifier.name, _leaves(rpn.classifier)))
  units.append(('rpn_head', 'rpn-box', rpn.box_regressor.name, _leaves(rpn.box_regressor)))

  scope = 'fast_rcnn_head'
  units += [(scope, 'conv', conv.name, _leaves(conv)) for conv in box.convs]
  units += [(scope, 'batch_normalization', norm.name, _leaves(norm))
            for norm in list(box.conv_norms) + list(box.fc_norms)]
  units += [(scope, f'fc{i + 6}', fc.name, _leaves(fc)) for i, fc in enumerate(box.fcs)]
  units.append((scope, 'class-predict', box.classifier.name, _leaves(box.classifier)))
  units.append((scope, 'box-predict', box.box_regressor.name, _leaves(box.box_regressor)))

  scope = 'mask_head'
  units += [(scope, f'mask-conv-l{i}', conv.name, _leaves(conv))
            for i, conv in enumerate(mask.convs)]
  units += [(scope, 'batch_normalization', norm.name, _leaves(norm))
            for norm in list(mask.conv_norms) + [mask.deconv_norm]]
  units.append((scope, 'conv5-mask', mask.deconv.name, _leaves(mask.deconv)))
  units.append((scope, 'mask_fcn_logits', mask.predictor.name, _leaves(mask.predictor)))
  return units


def classification_head_units(head):
  return [('classification_head', 'dense', 'classification_head/logits',
           _leaves(head.linear))]


# ================================ Matching ================================


@dataclasses.dataclass
class _Match:
  mapping: List[Tuple[tf.Variable, str]] = dataclasses.field(default_factory=list)
  used: set = dataclasses.field(default_factory=set)
  problems: List[str] = dataclasses.field(default_factory=list)


def _var_name(var):
  return var.name.split(':')[0]


def _pair_leaves(ckpt, ours_label, ours, theirs, match):
  for leaf, var in ours.items():
    key = theirs.get(leaf)
    if key is None:
      match.problems.append(f'missing in checkpoint: {_var_name(var)} {tuple(var.shape)} '
                            f'(no `{leaf}` beside {sorted(theirs.values())})')
    elif ckpt.shapes[key] != tuple(var.shape):
      match.problems.append(f'shape mismatch: {_var_name(var)} {tuple(var.shape)} vs '
                            f'{key} {ckpt.shapes[key]}')
      match.used.add(key)
    else:
      match.mapping.append((var, key))
      match.used.add(key)


def _match(ckpt, units, scope_roots):
  """Pairs our units with the checkpoint's layers of the same scope and class."""
  match = _Match()
  in_scope = [n for n in ckpt.model if n.split('/')[0] in scope_roots]
  theirs = _tf1_layers(in_scope)
  ours = collections.defaultdict(list)
  for scope, kind, label, leaves in units:
    ours[(scope, kind)].append((label, leaves))
  for key in sorted(set(ours) | set(theirs)):
    mine, tf1 = ours.get(key, []), theirs.get(key, [])
    if len(mine) != len(tf1):
      match.problems.append(f'{key[0]}/{key[1]}*: {len(tf1)} layers in the checkpoint, '
                            f'{len(mine)} in our model')
    for (label, leaves), layer in zip(mine, tf1):
      _pair_leaves(ckpt, label, leaves, layer, match)
    for label, leaves in mine[len(tf1):]:
      for var in leaves.values():
        match.problems.append(f'missing in checkpoint: {_var_name(var)} '
                              f'{tuple(var.shape)} (no {key[0]}/{key[1]} layer left)')
  for name in in_scope:
    if name not in match.used:
      match.problems.append(f'unmatched checkpoint variable: {name} {ckpt.shapes[name]}')
  return match, set(in_scope)


# ============================ Building our model ============================


def _backbone_root(model_id):
  return 'spinenet_mbconv' if registry.get_spec(model_id).family == 'mobile' else 'spinenet'


def tf1_build_args(model_id: str, task: str, activation: Optional[str] = None,
                   source_model: Optional[str] = None) -> Dict:
  """Builder arguments that reproduce the authors' TF1 numerics for `model_id`.

  Args:
    model_id: our id.
    task: 'retinanet', 'maskrcnn', 'classification' or 'backbone'.
    activation: the checkpoint's activation ('swish' for the "-best"
      checkpoints and SpineNetMB-49, 'relu' for the others); None: the id's
      (for 'maskrcnn' the id's Mask R-CNN recipe's: relu but for 190).
    source_model: the authors' model the weights come from, 'retinanet',
      'classification' or 'mask_rcnn' (its batch-norm epsilon); None: `task`'s
      (RetinaNet's for the backbone task).

  Returns:
    dict for `registry.build_retinanet` / `build_maskrcnn` /
    `build_classifier` / `build_backbone` (and gin's
    `build_retinanet.<name>`). RetinaNet and Mask R-CNN also get the authors'
    anchor order `aspect_ratios=(1.0, 2.0, 0.5)`: their predictors' channels
    follow it, so a model with our default order would pair each anchor with
    another anchor's outputs. Mask R-CNN's epsilon (1e-3) applies to its
    heads too, and its proposals and detections use the authors' "+1 pixel"
    box convention (`box_coding='tf1'`, `ops.box_ops`).
  """
  spec = registry.get_spec(model_id)
  args = dict(registry.TF1_BACKBONE_OPTIONS)
  args.update(spec.backbone_options)
  default_source = {'backbone': 'retinanet', 'maskrcnn': 'mask_rcnn'}.get(task, task)
  source_model = source_model or default_source
  args['norm_epsilon'] = TF1_NORM_EPSILON[source_model]
  default_activation = (registry.get_maskrcnn_spec(model_id).activation
                        if task == 'maskrcnn' else spec.activation)
  args['activation'] = activation or default_activation
  if task in ('retinanet', 'maskrcnn'):
    args['aspect_ratios'] = TF1_ASPECT_RATIOS
  if task == 'maskrcnn':
    args['box_coding'] = 'tf1'
  return args


def _infer_head(ckpt, task, model_id):
  """Head arguments the checkpoint determines (classes, head depth and width)."""
  spec = registry.get_spec(model_id)
  shapes = ckpt.shapes
  if task == 'retinanet':
    cls_bias = shapes.get('retinanet/class_net/class-predict/bias')
    box_bias = shapes.get('retinanet/box_net/box-predict/bias')
    if not cls_bias or not box_bias:
      return {}
    anchors = max(box_bias[0] // 4, 1)
    convs = {int(m.group(1)) for n in shapes
             for m in [re.fullmatch(r'retinanet/class_net/class-(\d+)/bias', n)] if m}
    args = dict(num_classes=cls_bias[0] // anchors, head_convs=len(convs),
                separable_head='retinanet/class_net/class-0/depthwise_kernel' in shapes)
    if 'retinanet/class_net/class-0/bias' in shapes:
      args['head_filters'] = shapes['retinanet/class_net/class-0/bias'][0]
    if (args['head_convs'], args.get('head_filters'), args['separable_head']) != (
        spec.head_convs, spec.head_filters, spec.separable_head):
      logging.info('RetinaNet head from the checkpoint: %d convs x %s filters%s (model '
                   'id %s defaults to %d x %d); build it that way to restore.',
                   args['head_convs'], args.get('head_filters'),
                   ', separable' if args['separable_head'] else '', model_id,
                   spec.head_convs, spec.head_filters)
    return args
  if task == 'classification':
    bias = shapes.get('classification_head/dense/bias')
    return dict(num_classes=bias[0]) if bias else {}
  if task == 'maskrcnn':
    return _infer_maskrcnn_heads(shapes, model_id)
  return {}


def _count(shapes, pattern):
  return len({m.group(1) for n in shapes for m in [re.fullmatch(pattern, n)] if m})


def _infer_maskrcnn_heads(shapes, model_id):
  """`build_maskrcnn` head arguments of an authors' Mask R-CNN checkpoint.

  Classes from `fast_rcnn_head/class-predict`; depths from the numbered
  convs (`rpn-<i>`, `conv_<i>`, `mask-conv-l<i>`), widths from their biases.

  Raises:
    ConversionError: a box head with other than one FC (ours has one).
  """
  cls_bias = shapes.get('fast_rcnn_head/class-predict/bias')
  if not cls_bias:
    return {}
  args = dict(num_classes=cls_bias[0])
  if 'rpn_head/rpn/bias' in shapes:
    args['rpn_convs'] = 1 + _count(shapes, r'rpn_head/rpn-(\d+)/bias')
    args['rpn_filters'] = shapes['rpn_head/rpn/bias'][0]
  args['box_convs'] = _count(shapes, r'fast_rcnn_head/conv_(\d+)/bias')
  if args['box_convs']:
    args['box_filters'] = shapes['fast_rcnn_head/conv_0/bias'][0]
  fcs = sorted(n for n in shapes if re.fullmatch(r'fast_rcnn_head/fc\d+/bias', n))
  if len(fcs) != 1:
    raise ConversionError(
        f'The checkpoint\'s Fast R-CNN head has {len(fcs)} FC layers ({fcs}); our box '
        'head (maskrcnn_heads.BoxHead via build_maskrcnn) converts one, the SpineNet '
        'recipe\'s.')
  args['fc_dims'] = shapes[fcs[0]][0]
  args['mask_convs'] = _count(shapes, r'mask_head/mask-conv-l(\d+)/bias')
  if 'mask_head/mask-conv-l0/bias' in shapes:
    args['mask_filters'] = shapes['mask_head/mask-conv-l0/bias'][0]
  recipe = registry.get_maskrcnn_spec(model_id)
  differs = {k: v for k, v in args.items() if hasattr(recipe, k) and getattr(recipe, k) != v}
  if differs:
    logging.info('Mask R-CNN heads from the checkpoint differ from %s\'s recipe: %s; '
                 'build it that way to restore.', model_id, differs)
  return args


def _build(task, model_id, build_args, input_size):
  if task == 'retinanet':
    return registry.build_retinanet(model_id, input_size=input_size or 128, **build_args)
  if task == 'maskrcnn':
    return registry.build_maskrcnn(model_id, input_size=input_size or 128, **build_args)
  if task == 'classification':
    return registry.build_classifier(
        model_id, input_size=input_size or CLASSIFICATION_INPUT_SIZE, **build_args)
  return registry.build_backbone(model_id, input_size or 128, **{
      k: v for k, v in build_args.items() if k not in ('num_classes', 'aspect_ratios')})


def _units(task, model, model_id):
  mobile = registry.get_spec(model_id).family == 'mobile'
  backbone = model if task == 'backbone' else model.backbone
  units = backbone_units(backbone, mobile)
  roots = {_backbone_root(model_id)}
  if task == 'retinanet':
    units += retinanet_head_units(model.head)
    roots.add('retinanet')
  elif task == 'maskrcnn':
    units += maskrcnn_head_units(model)
    roots.update(MASKRCNN_SCOPES)
  elif task == 'classification':
    units += classification_head_units(model.head)
    roots.add('classification_head')
  listed = {id(v) for _, _, _, leaves in units for v in leaves.values()}
  unknown = [f'no TF1 counterpart known for {_var_name(w)} {tuple(w.shape)}'
             for w in model.weights if id(w) not in listed]
  return units, roots, unknown


def _check_request(task, model_id):
  if task not in TASKS:
    raise ConversionError(f'--task={task!r} is not supported; expected one of {TASKS}.')
  model_id = registry.resolve(model_id)
  if registry.get_spec(model_id).family not in ('spinenet', 'mobile'):
    raise ConversionError(f'--model={model_id}: only SpineNet ids convert from TF1 '
                          f'checkpoints; expected one of {registry.SPINENET_IDS}.')
  return model_id


def _check_backbone_scope(ckpt, model_id, path):
  """Refuses a checkpoint whose backbone scope is not the id's family."""
  root = _backbone_root(model_id)
  roots = collections.Counter(n.split('/')[0] for n in ckpt.model)
  if roots.get(root):
    return
  hint = ''
  if roots.get('spinenet_mbconv'):
    hint = ' It holds a SpineNet-MBConv backbone: use --model=MB-49.'
  elif roots.get('spinenet'):
    hint = ' It holds a SpineNet backbone: use --model=49S, 49, 96, 143 or 190.'
  raise ConversionError(
      f'--tf1_checkpoint={path}: no `{root}/...` variables for --model={model_id} '
      f'(top-level scopes: {dict(roots)}).{hint}')


def _source_model(ckpt):
  """The authors' model of the checkpoint, from its top-level scopes, or None."""
  roots = {n.split('/')[0] for n in ckpt.model}
  found = sorted({model for scope, model in _MODEL_SCOPES.items() if scope in roots})
  if len(found) == 1:
    logging.info('TF1 checkpoint of the authors\' %s model.', found[0])
    return found[0]
  return None


def _check_task(task, source_model, path):
  """Refuses converting one authors' model as another (the backbone of any is fine)."""
  if task == 'backbone' or source_model is None:
    return
  expected = _TASK_OF_MODEL[source_model]
  if task != expected:
    raise ConversionError(
        f'--tf1_checkpoint={path} holds the authors\' {source_model} model (its scopes), '
        f'not {task}: use --task={expected}, or --task=backbone for its backbone alone.')


def _other_model_variables(ckpt, scope, task, path):
  """Model variables outside the converted scopes: ignored for the backbone task."""
  outside = [n for n in ckpt.model if n not in scope]
  if task == 'backbone' and outside:
    roots = sorted({n.split('/')[0] for n in outside})
    logging.info('--task=backbone: ignoring %d model variables outside the backbone '
                 '(scopes %s).', len(outside), roots)
    return []
  return [f'unmatched checkpoint variable: {n} {ckpt.shapes[n]} (outside the '
          f'{task} model)' for n in outside]


def _sources(ckpt, mapping, use_ema, path):
  """`(our variable, tensor name to read)`: the shadow where `use_ema` and present."""
  if use_ema and not ckpt.ema:
    raise ConversionError(f'--use_ema, but {path} holds no {EMA_SUFFIX} shadows '
                          '(the authors\' zoo checkpoints have none); convert the raw '
                          'weights.')
  if use_ema:
    used = sum(1 for _, key in mapping if key in ckpt.ema)
    logging.info('Moving averages: %d of %d variables from their %s shadow, the rest '
                 'raw (no shadow).', used, len(mapping), EMA_SUFFIX)
    return [(var, ckpt.ema.get(key, key)) for var, key in mapping]
  if ckpt.ema:
    logging.info('The checkpoint holds %d %s shadows; converting the raw weights '
                 '(--use_ema takes the shadows).', len(ckpt.ema), EMA_SUFFIX)
  return list(mapping)


def _assign(ckpt, sources):
  start, total = time.time(), len(sources)
  for i, (var, key) in enumerate(sources):
    var.assign(tf.cast(ckpt.reader.get_tensor(key), var.dtype))
    if (i + 1) % 500 == 0 or i + 1 == total:
      rate = (i + 1) / max(time.time() - start, 1e-6)
      logging.info('assigned %d/%d variables (%.0f/s, ETA %.0fs)', i + 1, total,
                   rate, (total - i - 1) / rate)


def _bookkeeping(ckpt, mapped_keys):
  """Counts of the tensors not converted (slots, shadows, counters)."""
  ignored = {'optimizer slots': len(ckpt.slots),
             f'{EMA_SUFFIX} shadows': len(ckpt.ema),
             'step counters': len(ckpt.steps)}
  orphans = [s for s, base in ckpt.slots.items() if base not in mapped_keys]
  ignored = {k: v for k, v in ignored.items() if v}
  if orphans:
    logging.info('%d optimizer slots belong to variables not converted.', len(orphans))
  logging.info('Ignoring %d bookkeeping tensors: %s', sum(ignored.values()), ignored)
  return ignored


def convert(tf1_checkpoint: str, model_id: str, task: str, output_dir: str,
            num_classes: Optional[int] = None, activation: Optional[str] = None,
            use_ema: bool = False, input_size=None,
            model: Optional[keras.Model] = None) -> ConversionResult:
  """Converts an authors' TF1 checkpoint into a checkpoint of our model.

  Steps: resolve and read the checkpoint, split bookkeeping from model
  variables; build our model with the authors' options (`tf1_build_args`)
  and the head the checkpoint implies; pair layers by scope and creation
  order and refuse with every problem listed; assign (moving averages where
  `use_ema`); save `ckpt-0` and `conversion.json`.

  Args:
    tf1_checkpoint: checkpoint prefix, or a directory (local or `gs://`).
    model_id: our id (`registry.SPINENET_IDS`; SpineNetMB-49 is 'MB-49').
    task: 'retinanet', 'maskrcnn', 'classification' or 'backbone' (the
      backbone of any of them; the rest is ignored). A checkpoint of another
      authors' model than `task` (told by its scopes) is refused.
    output_dir: new or empty directory.
    num_classes: expected class count (background included); None: the
      checkpoint's (RetinaNet and Mask R-CNN 91, ImageNet 1001).
    activation: 'swish' ("-best" checkpoints, SpineNetMB-49) or 'relu' (the
      others); None: the id's default (swish).
    use_ema: take `ExponentialMovingAverage` shadows where they exist.
    input_size: size our model is built at (default 128; classification 224).
    model: optional model of ours to fill instead (built with
      `tf1_build_args` to reproduce the authors' outputs).

  Returns:
    `ConversionResult`; `output_dir/conversion.json` also records the build
    arguments, the global step and every variable pair.

  Raises:
    ConversionError: listing every unmatched variable and shape mismatch.
  """
  model_id = _check_request(task, model_id)
  path = checkpoint_prefix(tf1_checkpoint)
  checkpoint_converter._check_output_dir(output_dir)  # pylint: disable=protected-access
  ckpt = _Checkpoint.read(path)
  _check_backbone_scope(ckpt, model_id, path)
  spec = registry.get_spec(model_id)
  if spec.family == 'mobile' and not dict(spec.backbone_options).get('fixed_padding'):
    logging.warning('--model=%s: the authors\' SpineNet-MBConv uses swish and a swish / '
                    'sigmoid squeeze-excite; --model=MB-49 reproduces it, %s keeps its '
                    'own activations.', model_id, model_id)

  source_model = _source_model(ckpt)
  _check_task(task, source_model, path)
  build_args = tf1_build_args(model_id, task, activation, source_model)
  build_args.update(_infer_head(ckpt, task, model_id))
  if num_classes is not None:
    if build_args.get('num_classes', num_classes) != num_classes:
      logging.warning('num_classes=%d but the checkpoint has %d classes.',
                      num_classes, build_args['num_classes'])
    build_args['num_classes'] = num_classes
  if model is None:
    model = _build(task, model_id, build_args, input_size)

  units, roots, problems = _units(task, model, model_id)
  match, scope = _match(ckpt, units, roots)
  problems += match.problems + _other_model_variables(ckpt, scope, task, path)
  if problems:
    raise ConversionError(
        f'Cannot convert {path} to {task} {model_id!r}: {len(problems)} problem(s) '
        f'({len(match.mapping)} variables matched). Check --model and --task.\n  '
        + '\n  '.join(problems))
  mapped_keys = {key for _, key in match.mapping}
  ignored = _bookkeeping(ckpt, mapped_keys)
  sources = _sources(ckpt, match.mapping, use_ema, path)
  _assign(ckpt, sources)

  prefix = checkpoint_converter._save(model, task, output_dir)  # pylint: disable=protected-access
  step = int(ckpt.reader.get_tensor('global_step')) if 'global_step' in ckpt.steps else None
  pairs = [(_var_name(v), key) for v, key in sources]
  checkpoint_converter._write_record(output_dir, dict(  # pylint: disable=protected-access
      source=path, format='tf1', model_id=model_id, task=task, build_args=build_args,
      use_ema=use_ema, global_step=step, checkpoint=prefix, ignored=ignored,
      mapping=pairs))
  logging.info('Wrote %s (%d variables from %s, global step %s). Build the model with '
               '%s to reproduce the authors\' outputs.', prefix, len(pairs), path, step,
               build_args)
  return ConversionResult(prefix, model, pairs, ignored)
