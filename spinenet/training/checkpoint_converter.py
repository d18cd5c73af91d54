"""Converts TensorFlow Model Garden (tf-models-official) SpineNet checkpoints.

Reads only the checkpoint (`tf.train.load_checkpoint`: object graph, shapes,
saved variable names), never the Model Garden code. Matching (docs/convert.md):

* The MG model is the root's `model` child (or the root of a Keras
  `save_weights`); its backbone the `_backbone` child, its head `_head`.
* Backbone: MG's functional SpineNet names layers `layer_with_weights-N` in
  graph-depth order; their creation order is recovered from the saved names,
  which Keras numbers as it creates layers (`conv2d_17`, `batch_normalization_9`,
  `bottleneck_block_3`). Within each kind (conv, depthwise conv, norm,
  bottleneck / residual / MBConv block) they pair, in that order, with ours
  listed in MG's creation order (`backbone_units`); inside a block MG's
  attributes map by name (`_BLOCK_ATTRS`). MG's unused 16th SpineNet-49 block
  is not in the functional model, hence not in checkpoints.
* Heads by object path: RetinaNet `_cls_convs/i`, `_cls_norms/<level - min
  level>/i`, `_classifier` and the `_box_*` twins; classifier: the `Dense`;
  Mask R-CNN (`MaskRCNNModel`, whose backbone is the `backbone` child)
  `rpn_head/{_convs/i, _norms/<level - min level>/i, _classifier,
  _box_regressor}`, `detection_head/0/{_convs/i, _conv_norms/i, _fcs/i,
  _fc_norms/i, _classifier, _box_regressor}` and `mask_head/{_convs/i,
  _conv_norms/i, _deconv, _deconv_bn, _mask_regressor}`.
* Every pair must agree in shape, every MG model variable must be used and
  every one of ours filled, else `ConversionError` lists all problems. Objects
  outside the model (optimizer, slots, counters, EMA) are ignored and counted.
"""
import collections
import dataclasses
import json
import os
import re
import time
from typing import Dict, List, Optional, Tuple

from absl import logging
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import registry
from spinenet.training import object_graph


TASKS = ('retinanet', 'maskrcnn', 'classification', 'backbone')
_BLOCK_ATTRS = {
    'bottleneck': {'_shortcut': 'shortcut_conv', '_norm0': 'shortcut_norm',
                   '_conv1': 'conv1', '_norm1': 'norm1', '_conv2': 'conv2',
                   '_norm2': 'norm2', '_conv3': 'conv3', '_norm3': 'norm3'},
    'residual': {'_shortcut': 'shortcut_conv', '_norm0': 'shortcut_norm',
                 '_conv1': 'conv1', '_norm1': 'norm1', '_conv2': 'conv2',
                 '_norm2': 'norm2'},
    'mbconv': {'_conv0': 'expand_conv', '_norm0': 'expand_norm',
               '_conv1': 'depthwise', '_norm1': 'depthwise_norm',
               '_conv2': 'project_conv', '_norm2': 'project_norm'},
}


class ConversionError(ValueError):
  """The checkpoint does not fit the requested model; lists every problem."""


@dataclasses.dataclass
class ConversionResult:
  """What `convert` wrote.

  Attributes:
    checkpoint_path: prefix of the written `tf.train.Checkpoint`.
    model: our model holding the converted weights.
    mapping: `(our variable name, Model Garden checkpoint key)` pairs.
    ignored: counts of skipped non-model tensors by group.
  """
  checkpoint_path: str
  model: tf.Module
  mapping: List[Tuple[str, str]]
  ignored: Dict[str, int]


# ====================== The Model Garden checkpoint ======================


def _read_graph(path):
  """The checkpoint's `ObjectGraph`; a name-based one is refused by name."""
  try:
    return object_graph.ObjectGraph(path)
  except object_graph.NameBasedCheckpointError:
    raise ConversionError(
        f'--model_garden_checkpoint={path} is a name-based (TF1) checkpoint '
        'without an object graph; expected a TF2 checkpoint written by the '
        'Model Garden (tf.train.Checkpoint or Keras save_weights).') from None


# Model Garden block classes, by their Keras auto-name.
_BLOCK_CLASSES = {'bottleneck_block': 'bottleneck', 'residual_block': 'residual',
                  'inverted_bottleneck_block': 'mbconv'}


def _mg_kind(graph, node, name):
  """Kind of a Model Garden layer: by class name for blocks, else structure."""
  if name and name[0] in _BLOCK_CLASSES:
    return _BLOCK_CLASSES[name[0]]
  names = graph.children(node)
  if '_conv1' in names:
    if 'depthwise_kernel' in graph.children(names['_conv1']):
      return 'mbconv'
    return 'bottleneck' if '_conv3' in names else 'residual'
  if 'depthwise_kernel' in names:
    return 'depthwise'
  if 'moving_mean' in names:
    return 'norm'
  if 'kernel' in names:
    return 'dense' if len(graph.shape(names['kernel'])) == 2 else 'conv'
  return 'unknown'


def _creation_name(graph, node):
  """`(class name, counter)` of a Keras layer from its variables' full names."""
  for var, path in sorted(graph.variables_under(node).items(), key=lambda x: len(x[1])):
    parts = graph.variable[var][1].split('/')
    if len(parts) > len(path):
      match = re.fullmatch(r'(.+?)(?:_(\d+))?', parts[-len(path) - 1])
      return match.group(1), int(match.group(2) or 0)
  return None


def _mg_units(graph, parent, exclude=()):
  """Weighted layers of a functional Keras model, by kind, in creation order."""
  nodes = sorted({n for name, n in graph.children(parent).items()
                  if name.startswith('layer_with_weights-') and n not in exclude})
  by_kind, problems = collections.defaultdict(list), []
  for node in nodes:
    name = _creation_name(graph, node)
    by_kind[_mg_kind(graph, node, name)].append((name, node))
  for kind, units in by_kind.items():
    classes = {name[0] if name else None for name, _ in units}
    if None in classes or len(classes) != 1:
      problems.append(
          f'cannot order the {len(units)} {kind} layers of the checkpoint: their '
          f'saved variable names give layer classes {sorted(map(str, classes))}; '
          'expected Keras auto-names of one class (e.g. conv2d_N).')
    by_kind[kind] = [n for _, n in sorted(units, key=lambda u: u[0] or ('', 0))]
  return dict(by_kind), problems


# ======================= Our model, in MG's order =======================


def _layer_vars(layer, prefix=()):
  """`{prefix + (leaf name,): variable}` for a Keras layer's own weights."""
  return {prefix + (w.name.split('/')[-1].split(':')[0],): w for w in layer.weights}


def _conv_norm(label, cna):
  return [('depthwise' if cna.depthwise else 'conv', f'{label}/conv',
           _layer_vars(cna.conv)),
          ('norm', f'{label}/norm', _layer_vars(cna.norm))]


def _block(label, block):
  kind = {'BottleneckBlock': 'bottleneck', 'ResidualBlock': 'residual',
          'MBConvBlock': 'mbconv'}[type(block).__name__]
  variables = {}
  for theirs, ours in _BLOCK_ATTRS[kind].items():
    if getattr(block, ours, None) is not None:
      variables.update(_layer_vars(getattr(block, ours), (theirs,)))
  if getattr(block, 'se', None) is not None:
    variables.update(_layer_vars(block.se.reduce, ('_squeeze_excitation', '_se_reduce')))
    variables.update(_layer_vars(block.se.expand, ('_squeeze_excitation', '_se_expand')))
  return (kind, f'{label}/{block.name}', variables)


def backbone_units(backbone):
  """Our backbone's layers as `(kind, label, {MG path: variable})`, MG's order."""
  units = _conv_norm('stem_conv', backbone.get_layer('stem_conv'))
  names = [l.name for l in backbone.layers]
  for name in sorted((n for n in names if n.startswith('stem_block_')), key=str):
    units += [_block(name, b) for b in backbone.get_layer(name).blocks]
  blocks = sorted((n for n in names if re.fullmatch(r'block_\d+', n)),
                  key=lambda n: int(n.split('_')[1]))
  for name in blocks:
    block = backbone.get_layer(name)
    for side, resample in (('a', block.resample_a), ('b', block.resample_b)):
      label = f'{name}/resample_{side}'
      parts = [resample.reduce] + list(resample.down) + [resample.project]
      for part in parts:
        if part is not None and hasattr(part, 'conv'):
          units += _conv_norm(f'{label}/{part.name}', part)
    units += [_block(f'{name}/group', b) for b in block.group.blocks]
  endpoints = sorted((n for n in names if n.startswith('endpoint_')),
                     key=lambda n: int(n.split('_')[1]))
  for name in endpoints:
    units += _conv_norm(name, backbone.get_layer(name))
  return units


def retinanet_head_vars(head):
  """`{MG path under the head: variable}` for our `RetinaNetHead`."""
  out = {}
  for mg, convs, norms, predictor in (
      ('cls', head.class_convs, head.class_norms, head.classifier),
      ('box', head.box_convs, head.box_norms, head.box_regressor)):
    for i, conv in enumerate(convs):
      out.update(_layer_vars(conv, (f'_{mg}_convs', str(i))))
    for li, level in enumerate(head.levels):
      for i, norm in enumerate(norms[level]):
        out.update(_layer_vars(norm, (f'_{mg}_norms', str(li), str(i))))
    out.update(_layer_vars(predictor, ('_classifier' if mg == 'cls' else '_box_regressor',)))
  return out


def maskrcnn_head_vars(model):
  """`{MG path under the model: variable}` for our Mask R-CNN's three heads."""
  out = {}
  rpn = model.rpn_head
  for i, conv in enumerate(rpn.convs):
    out.update(_layer_vars(conv, ('rpn_head', '_convs', str(i))))
  for li, level in enumerate(rpn.levels):
    for i, norm in enumerate(rpn.norms[level]):
      out.update(_layer_vars(norm, ('rpn_head', '_norms', str(li), str(i))))
  out.update(_layer_vars(rpn.classifier, ('rpn_head', '_classifier')))
  out.update(_layer_vars(rpn.box_regressor, ('rpn_head', '_box_regressor')))
  box = model.box_head
  prefix = ('detection_head', '0')
  for group, layers in (('_convs', box.convs), ('_conv_norms', box.conv_norms),
                        ('_fcs', box.fcs), ('_fc_norms', box.fc_norms)):
    for i, layer in enumerate(layers):
      out.update(_layer_vars(layer, prefix + (group, str(i))))
  out.update(_layer_vars(box.classifier, prefix + ('_classifier',)))
  out.update(_layer_vars(box.box_regressor, prefix + ('_box_regressor',)))
  mask = model.mask_head
  for group, layers in (('_convs', mask.convs), ('_conv_norms', mask.conv_norms)):
    for i, layer in enumerate(layers):
      out.update(_layer_vars(layer, ('mask_head', group, str(i))))
  out.update(_layer_vars(mask.deconv, ('mask_head', '_deconv')))
  out.update(_layer_vars(mask.deconv_norm, ('mask_head', '_deconv_bn')))
  out.update(_layer_vars(mask.predictor, ('mask_head', '_mask_regressor')))
  return out


# ============================== Matching ==============================


@dataclasses.dataclass
class _Match:
  """What pairing found so far.

  Attributes:
    mapping: `(our variable, MG variable node)` pairs that agree in shape.
    used: MG variable nodes paired (in shape or not).
    problems: one line per problem, in the order found.
  """
  mapping: List[Tuple[tf.Variable, int]] = dataclasses.field(default_factory=list)
  used: set = dataclasses.field(default_factory=set)
  problems: List[str] = dataclasses.field(default_factory=list)


def _pair(graph, node, variables, label, match):
  """Matches `{MG path: our variable}` under MG `node` into `match`."""
  for path, var in variables.items():
    ours = var.name.split(':')[0]
    src = graph.walk(node, path)
    if src is None or src not in graph.variable:
      match.problems.append(f'missing in checkpoint: {ours} {tuple(var.shape)} '
                            f'(expected at {label}/{"/".join(path)})')
    elif graph.shape(src) != tuple(var.shape):
      match.problems.append(f'shape mismatch: {ours} {tuple(var.shape)} vs '
                            f'{graph.key(src)} {graph.shape(src)}')
      match.used.add(src)
    else:
      match.mapping.append((var, src))
      match.used.add(src)


def _pair_units(graph, mg_units, our_units, match):
  """Pairs layers kind by kind, in creation order, into `match`."""
  ours_by_kind = collections.defaultdict(list)
  for kind, label, variables in our_units:
    ours_by_kind[kind].append((label, variables))
  for kind in sorted(set(ours_by_kind) | set(mg_units)):
    theirs, ours = mg_units.get(kind, []), ours_by_kind.get(kind, [])
    if len(theirs) != len(ours):
      match.problems.append(f'{kind} layers: {len(theirs)} in the checkpoint, '
                            f'{len(ours)} in our model')
    for node, (label, variables) in zip(theirs, ours):
      _pair(graph, node, variables, f'<{kind} layer paired with {label}>', match)
    for label, variables in ours[len(theirs):]:
      for var in variables.values():
        match.problems.append(
            f'missing in checkpoint: {var.name.split(":")[0]} '
            f'{tuple(var.shape)} (no {kind} layer left for {label})')


def _find(graph, node, *names):
  for name in names:
    child = graph.children(node).get(name)
    if child is not None:
      return child
  return None


def _locate(graph, task):
  """Object-graph nodes `(model, backbone)` of the Model Garden model."""
  root = 0
  model = _find(graph, root, 'model', '_model')
  if model is None and (_find(graph, root, '_backbone') is not None
                        or (task == 'maskrcnn' and _find(graph, root, 'rpn_head'))):
    model = root  # Keras save_weights of the whole model.
  backbone = _find(graph, model, '_backbone', 'backbone') if model is not None else None
  if backbone is None and task == 'backbone':
    backbone = _find(graph, root, 'backbone')
    if backbone is None and model is None and _find(graph, root, 'layer_with_weights-0'):
      backbone = root  # Keras save_weights of the backbone alone.
  return model, backbone


def _infer_head(graph, task, model_node, model_id):
  """Our builder arguments that the checkpoint determines (classes, head)."""
  spec = registry.get_spec(model_id)
  if task == 'retinanet':
    head = _find(graph, model_node, '_head', 'head')
    box = graph.walk(head, ('_box_regressor', 'bias'))
    cls = graph.walk(head, ('_classifier', 'bias'))
    convs = graph.walk(head, ('_cls_convs',))
    if None in (box, cls, convs) or box not in graph.variable:
      return {}
    anchors = graph.shape(box)[0] // 4
    args = dict(num_classes=graph.shape(cls)[0] // max(anchors, 1),
                head_convs=len(graph.children(convs)))
    first = graph.walk(convs, ('0', 'bias'))
    if first is not None:
      args['head_filters'] = graph.shape(first)[0]
    if (args['head_convs'], args.get('head_filters')) != (spec.head_convs, spec.head_filters):
      logging.info('RetinaNet head from the checkpoint: %d convs x %s filters '
                   '(model id %s defaults to %d x %d); build it that way to '
                   'restore.', args['head_convs'], args.get('head_filters'),
                   model_id, spec.head_convs, spec.head_filters)
    return args
  if task == 'maskrcnn':
    return _infer_maskrcnn_heads(graph, model_node)
  if task == 'classification':
    backbone = _find(graph, model_node, '_backbone', 'backbone')
    dense = _mg_units(graph, model_node, exclude={backbone})[0].get('dense', [])
    if len(dense) == 1 and graph.walk(dense[0], ('bias',)) is not None:
      return dict(num_classes=graph.shape(graph.walk(dense[0], ('bias',)))[0])
  return {}


def _infer_maskrcnn_heads(graph, model_node):
  """`build_maskrcnn` arguments from a `MaskRCNNModel`'s heads (classes, depths, widths)."""
  args = {}

  def shape(*path):
    node = graph.walk(model_node, path)
    return graph.shape(node) if node is not None and node in graph.variable else None

  def count(*path):
    node = graph.walk(model_node, path)
    return len(graph.children(node)) if node is not None else None

  classes = shape('detection_head', '0', '_classifier', 'bias')
  if classes:
    args['num_classes'] = classes[0]
  for arg, path in (('rpn_convs', ('rpn_head', '_convs')),
                    ('box_convs', ('detection_head', '0', '_convs')),
                    ('mask_convs', ('mask_head', '_convs'))):
    n = count(*path)
    if n is not None:
      args[arg] = n
  for arg, path in (('rpn_filters', ('rpn_head', '_convs', '0', 'bias')),
                    ('box_filters', ('detection_head', '0', '_convs', '0', 'bias')),
                    ('fc_dims', ('detection_head', '0', '_fcs', '0', 'bias')),
                    ('mask_filters', ('mask_head', '_convs', '0', 'bias'))):
    found = shape(*path)
    if found:
      args[arg] = found[0]
  return args


def _build(task, model_id, build_args):
  if task == 'maskrcnn':
    return registry.build_maskrcnn(model_id, input_size=128, **build_args)
  if task == 'retinanet':
    return registry.build_retinanet(model_id, input_size=128, **build_args)
  if task == 'classification':
    return registry.build_classifier(model_id, input_size=128, fusion='top', **build_args)
  return registry.build_backbone(model_id, 128)


def _ignored_summary(graph, model_keys):
  counts = collections.Counter()
  for key in graph.shapes:
    if key == object_graph.GRAPH_KEY or key in model_keys:
      continue
    group = 'optimizer slots' if '.OPTIMIZER_SLOT' in key else key.split('/')[0]
    counts[group] += 1
  return dict(counts)


# ============================ Steps of `convert` ============================


def _check_request(task, model_id):
  """The resolved model id, if `task` and `model_id` can be converted."""
  if task not in TASKS:
    raise ConversionError(f'--task={task!r} is not supported; expected one of {TASKS}.')
  model_id = registry.resolve(model_id)
  if registry.get_spec(model_id).family == 'resnet_fpn':
    raise ConversionError(f'--model={model_id}: only SpineNet ids convert from '
                          f'Model Garden checkpoints; expected one of {registry.SPINENET_IDS}.')
  return model_id


def _checkpoint_prefix(path):
  """The checkpoint to read: `path`, the latest in a directory, or a SavedModel's."""
  if tf.io.gfile.isdir(path):
    if tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
      return os.path.join(path, 'variables', 'variables')
    return tf.train.latest_checkpoint(path) or path
  return path


def _check_output_dir(output_dir):
  if tf.io.gfile.isdir(output_dir) and tf.train.latest_checkpoint(output_dir):
    raise ConversionError(f'--output_dir={output_dir} already holds a checkpoint; '
                          'choose a new or empty directory.')


def _locate_or_raise(graph, task, path):
  """`_locate`, refusing a checkpoint without a Model Garden backbone."""
  model_node, backbone_node = _locate(graph, task)
  if backbone_node is None:
    raise ConversionError(
        f'--model_garden_checkpoint={path}: no Model Garden model found (the object '
        f'graph root has children {sorted(graph.children(0))}); expected a `model` '
        'with a `_backbone` (or, for --task=backbone, a root `backbone`).')
  return model_node, backbone_node


def _build_args(graph, task, model_node, model_id, num_classes):
  """Builder arguments from the checkpoint's head, `num_classes` taking precedence."""
  build_args = _infer_head(graph, task, model_node, model_id) if task != 'backbone' else {}
  if num_classes is not None:
    if build_args.get('num_classes', num_classes) != num_classes:
      logging.warning('--num_classes=%d but the checkpoint has %d classes.',
                      num_classes, build_args['num_classes'])
    build_args['num_classes'] = num_classes
  return build_args


def _our_variables(task, model):
  """Our model's variables as MG lays them out.

  Returns:
    `(backbone units, head units, head variables)`: units as `backbone_units`
    gives them (classification head: its one dense layer); head variables
    `{MG path under the head: variable}` (RetinaNet).
  """
  backbone = model if task == 'backbone' else model.backbone
  head_units = ([('dense', 'classification_head/logits', _layer_vars(model.head.linear))]
                if task == 'classification' else [])
  head_vars = {'retinanet': retinanet_head_vars, 'maskrcnn': maskrcnn_head_vars}.get(
      task, lambda _: {})(model.head if task == 'retinanet' else model)
  return backbone_units(backbone), head_units, head_vars


def _unmapped_weights(model, units, head_vars):
  """A problem line for each weight of `model` that no unit or head path lists."""
  listed = {id(v) for _, _, vs in units for v in vs.values()}
  listed |= {id(v) for v in head_vars.values()}
  return [f'no Model Garden counterpart known for {w.name.split(":")[0]} '
          f'{tuple(w.shape)} (a layer this converter does not map)'
          for w in model.weights if id(w) not in listed]


def _match(graph, task, model, model_node, backbone_node, scope):
  """Pairs our variables with the checkpoint's; `scope`: the MG variables to use.

  Returns:
    `_Match`, its problems in this order: layers that cannot be ordered,
    our weights without a known counterpart, backbone and head pairing,
    checkpoint variables in `scope` left unpaired.
  """
  match = _Match()
  mg_backbone, order_problems = _mg_units(graph, backbone_node)
  match.problems += order_problems
  ours, head_units, head_vars = _our_variables(task, model)
  match.problems += _unmapped_weights(model, ours + head_units, head_vars)
  _pair_units(graph, mg_backbone, ours, match)
  if task == 'classification':
    mg_head, order_problems = _mg_units(graph, model_node, exclude={backbone_node})
    match.problems += order_problems
    _pair_units(graph, mg_head, head_units, match)
  elif task == 'retinanet':
    _pair(graph, _find(graph, model_node, '_head', 'head'), head_vars, '<model>/_head',
          match)
  elif task == 'maskrcnn':
    _pair(graph, model_node, head_vars, '<model>', match)
  for node in sorted(set(scope) - match.used, key=graph.key):
    match.problems.append(
        f'unmatched checkpoint variable: {graph.key(node)} {graph.shape(node)}')
  return match


def _raise_on_problems(match, path, task, model_id):
  """Raises `ConversionError` listing every problem of `match`, if any."""
  if match.problems:
    raise ConversionError(
        f'Cannot convert {path} to {task} {model_id!r}: {len(match.problems)} problem(s) '
        f'({len(match.mapping)} variables matched). Check --model and --task.\n  '
        + '\n  '.join(match.problems))


def _ignored_tensors(graph, task, model_node, scope):
  """Counts (and logs) the checkpoint's tensors that are not converted.

  Model variables outside `scope` (the head, for the backbone task) are
  logged apart and not counted.
  """
  model_keys = {graph.key(n) for n in scope}
  if task == 'backbone' and model_node is not None:
    outside = set(graph.variables_under(model_node)) - set(scope)
    if outside:
      logging.info('--task=backbone: ignoring %d model variables outside the '
                   'backbone (head).', len(outside))
    model_keys |= {graph.key(n) for n in outside}
  ignored = _ignored_summary(graph, model_keys)
  logging.info('Ignoring %d non-model tensors: %s', sum(ignored.values()), ignored)
  if any('average' in k.lower() for k in graph.shapes if k not in model_keys):
    logging.warning('The checkpoint also holds moving-average (EMA) weights; '
                    'the raw model weights were converted.')
  return ignored


def _assign(graph, mapping):
  """Copies each paired checkpoint tensor into our variable, logging progress."""
  start, total = time.time(), len(mapping)
  for i, (var, node) in enumerate(mapping):
    var.assign(tf.cast(graph.reader.get_tensor(graph.key(node)), var.dtype))
    if (i + 1) % 500 == 0 or i + 1 == total:
      rate = (i + 1) / max(time.time() - start, 1e-6)
      logging.info('assigned %d/%d variables (%.0f/s, ETA %.0fs)', i + 1, total,
                   rate, (total - i - 1) / rate)


def _save(model, task, output_dir):
  """Writes `output_dir/ckpt-0` (see `convert`); returns its prefix."""
  tf.io.gfile.makedirs(output_dir)
  saved = model if task != 'backbone' else tf.train.Checkpoint(backbone=model)
  checkpoint = tf.train.Checkpoint(model=saved)
  return tf.train.CheckpointManager(checkpoint, output_dir, max_to_keep=1).save(
      checkpoint_number=0)


def _write_record(output_dir, record):
  with tf.io.gfile.GFile(os.path.join(output_dir, 'conversion.json'), 'w') as f:
    json.dump(record, f, indent=1)


def convert(model_garden_checkpoint: str, model_id: str, task: str,
            output_dir: str, num_classes: Optional[int] = None,
            model: Optional[keras.Model] = None) -> ConversionResult:
  """Converts a Model Garden checkpoint into a checkpoint of our model.

  Steps: check the request and read the checkpoint's object graph; find the
  MG model and backbone in it; build our model with the head the checkpoint
  implies; pair variables by structure (`_match`) and refuse with every
  problem listed; assign; save the checkpoint and `conversion.json`.

  Args:
    model_garden_checkpoint: checkpoint prefix, or a directory holding
      checkpoints (the latest is used) or a SavedModel.
    model_id: our model id (`registry.MODELS`), e.g. '49' or 'mobile-49S'.
    task: 'retinanet', 'maskrcnn', 'classification' or 'backbone'.
    output_dir: new or empty directory to write to.
    num_classes: expected number of classes; None takes the checkpoint's.
    model: optional model of ours to fill instead of building one from
      `model_id` (e.g. one built with non-default arguments): a `RetinaNet`,
      a `MaskRCNN`, a `Classifier`, or for the backbone task a backbone.

  Returns:
    `ConversionResult`. Writes `output_dir/ckpt-0` holding
    `tf.train.Checkpoint(model=model)` (backbone task: `model.backbone`, which
    restores into the backbone of a RetinaNet or classifier) and
    `output_dir/conversion.json` with the variable mapping.

  Raises:
    ConversionError: listing every unmatched variable and shape mismatch.
  """
  model_id = _check_request(task, model_id)
  path = _checkpoint_prefix(model_garden_checkpoint)
  _check_output_dir(output_dir)
  graph = _read_graph(path)
  model_node, backbone_node = _locate_or_raise(graph, task, path)

  build_args = _build_args(graph, task, model_node, model_id, num_classes)
  if model is None:
    model = _build(task, model_id, build_args)

  scope = graph.variables_under(backbone_node if task == 'backbone' else model_node)
  match = _match(graph, task, model, model_node, backbone_node, scope)
  _raise_on_problems(match, path, task, model_id)
  ignored = _ignored_tensors(graph, task, model_node, scope)

  _assign(graph, match.mapping)
  prefix = _save(model, task, output_dir)
  pairs = [(v.name.split(':')[0], graph.key(n)) for v, n in match.mapping]
  _write_record(output_dir, dict(source=path, model_id=model_id, task=task,
                                 build_args=build_args, checkpoint=prefix,
                                 ignored=ignored, mapping=pairs))
  logging.info('Wrote %s (%d variables from %s).', prefix, len(match.mapping), path)
  return ConversionResult(prefix, model, pairs, ignored)
