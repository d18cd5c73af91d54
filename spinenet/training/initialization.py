"""Initializes a new model from a checkpoint, by parts (fine-tuning).

A checkpoint of this project holds `tf.train.Checkpoint(model=...)`: a
training checkpoint (`model` and `optimizer`), `spinenet-convert`'s output
(`model` only) or a backbone-only conversion (`model` with just `backbone`).
`initialize_from_checkpoint` restores the parts of a model that
`TrainerOptions.init_checkpoint_parts` names:

  'all'                        every variable (today's default)
  'backbone'                   the backbone; the head starts fresh
  'backbone_and_head_towers'   the backbone and the RetinaNet class and box
                               towers (convs and norms); both predictors
                               start fresh

Variables pair by object path, the way `tf.train.Checkpoint` restores: the
model's attribute names (`backbone`, `head/class_convs/0/kernel`, ...) are
followed in our model and in the checkpoint's object graph at once.

When the class count differs (a COCO checkpoint, 91 classes, starting a
3-class model), the class predictor cannot be restored: it is re-initialized
(RetinaNet: kernel N(0, 1e-5), bias at the focal-loss prior
-log((1 - 0.01) / 0.01) = -4.595) and reported. Any other shape difference,
or a variable of a selected part missing from the checkpoint, is an error
listing every such variable: the model was built differently from the one
that wrote the checkpoint (model id, `head_convs`, `head_filters`, anchors).

What was restored, re-initialized, left at initialization and skipped (with
the reason) is logged (one summary line, then one line per group) and
returned as an `InitReport`.
"""
import collections
import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple

from absl import logging
import tensorflow as tf

from spinenet.training import object_graph


PARTS = ('all', 'backbone', 'backbone_and_head_towers')
# Variable groups of a model, in report order.
BACKBONE, TOWERS, CLASS_PREDICTOR, BOX_PREDICTOR, OTHER = (
    'backbone', 'head towers', 'class predictor', 'box predictor', 'other')
GROUPS = (BACKBONE, TOWERS, CLASS_PREDICTOR, BOX_PREDICTOR, OTHER)
_PART_GROUPS = {
    'all': frozenset(GROUPS),
    'backbone': frozenset({BACKBONE}),
    'backbone_and_head_towers': frozenset({BACKBONE, TOWERS}),
}
# (variable attribute, initializer attribute) of Keras conv and dense layers.
_INITIALIZED = (('kernel', 'kernel_initializer'), ('bias', 'bias_initializer'),
                ('depthwise_kernel', 'depthwise_initializer'),
                ('pointwise_kernel', 'pointwise_initializer'))


class InitializationError(ValueError):
  """The checkpoint does not fit the model; the message lists every problem."""


@dataclasses.dataclass
class InitReport:
  """What `initialize_from_checkpoint` did.

  Attributes:
    checkpoint: the checkpoint prefix read.
    parts: the `PARTS` value.
    restored: `{group: [(variable name, checkpoint key)]}`.
    reinitialized: `{group: [(variable name, shape, checkpoint shape)]}` and
      `reinitialized_reason` `{group: text}`: variables the checkpoint has
      with another shape (the class predictor when the class count differs),
      set to their initializers' values.
    not_selected: `{group: [variable name]}`: our variables outside `parts`,
      left as the model was built.
    skipped: `{reason: [checkpoint key]}`: checkpoint variables not used.
  """
  checkpoint: str
  parts: str
  restored: Dict[str, List[Tuple[str, str]]] = dataclasses.field(default_factory=dict)
  reinitialized: Dict[str, List[Tuple[str, tuple, tuple]]] = dataclasses.field(
      default_factory=dict)
  reinitialized_reason: Dict[str, str] = dataclasses.field(default_factory=dict)
  not_selected: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
  skipped: Dict[str, List[str]] = dataclasses.field(default_factory=dict)

  def _count(self, d):
    return sum(len(v) for v in d.values())

  def summary(self) -> str:
    """One line: counts of each outcome."""
    return (f'init_checkpoint {self.checkpoint} (parts={self.parts!r}): '
            f'restored {self._count(self.restored)} variables, re-initialized '
            f'{self._count(self.reinitialized)}, left at initialization '
            f'{self._count(self.not_selected)}; skipped '
            f'{self._count(self.skipped)} checkpoint variables')

  def details(self) -> List[str]:
    """One line per group: what, how many, which layers, why."""
    lines = []
    for group, pairs in self.restored.items():
      lines.append(f'  restored        {group}: {len(pairs)} variables '
                   f'({_layers_text([n for n, _ in pairs])})')
    for group, rows in self.reinitialized.items():
      shapes = ', '.join(f'{n} {list(s)} (checkpoint {list(c)})' for n, s, c in rows)
      lines.append(f'  re-initialized  {group}: {self.reinitialized_reason[group]}: '
                   f'{shapes}')
    for group, names in self.not_selected.items():
      lines.append(f'  initialized     {group}: {len(names)} variables, not in '
                   f'parts={self.parts!r} ({_layers_text(names)})')
    for reason, keys in self.skipped.items():
      lines.append(f'  skipped         {len(keys)} checkpoint variables: {reason}'
                   f' ({_layers_text([_key_path(k) for k in keys])})')
    return lines

  def log(self):
    logging.info('%s', self.summary())
    for line in self.details():
      logging.info('%s', line)

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)

  def write_json(self, path: str):
    """Writes `as_dict()` as JSON (every variable, for the record)."""
    with tf.io.gfile.GFile(path, 'w') as f:
      json.dump(self.as_dict(), f, indent=1, default=list)


def _key_path(key):
  """'model/head/classifier/bias/.ATTRIBUTES/VARIABLE_VALUE' -> 'model/head/classifier/bias'."""
  return key.split('/.ATTRIBUTES/')[0]


def _layers_text(names, limit=6):
  """Variable names -> 'layer_a, layer_b, ... (+N more)' by their layer path."""
  layers = list(dict.fromkeys(n.rsplit('/', 1)[0] for n in names))
  text = ', '.join(layers[:limit])
  if len(layers) > limit:
    text += f', ... (+{len(layers) - limit} more layers)'
  return text


# =========================== Our model's variables ===========================


def _var_id(v):
  """Identity of a variable through Keras' mixed-precision wrapper."""
  return id(getattr(v, '_variable', v))


def variable_groups(model) -> Dict[str, list]:
  """`{group: [variables]}` of a RetinaNet or Classifier (`GROUPS` order).

  `backbone`: `model.backbone`. A `RetinaNetHead`: `head towers` (class and
  box convs and norms), `class predictor` (`head.classifier`), `box
  predictor` (`head.box_regressor`). A `ClassificationHead`: `class
  predictor`. Anything else: `other`.
  """
  groups = collections.OrderedDict((g, []) for g in GROUPS)
  seen = set()

  def add(group, variables):
    for v in variables:
      if _var_id(v) not in seen:
        seen.add(_var_id(v))
        groups[group].append(v)

  backbone = getattr(model, 'backbone', None)
  if backbone is not None:
    add(BACKBONE, backbone.variables)
  head = getattr(model, 'head', None)
  if head is not None and hasattr(head, 'box_regressor'):
    add(CLASS_PREDICTOR, head.classifier.variables)
    add(BOX_PREDICTOR, head.box_regressor.variables)
    add(TOWERS, head.variables)
  elif head is not None and hasattr(head, 'linear'):
    add(CLASS_PREDICTOR, head.linear.variables)
  add(OTHER, model.variables)
  return {g: v for g, v in groups.items() if v}


def _num_classes(model):
  head = getattr(model, 'head', None)
  if head is None:
    return None
  config = head.get_config()
  return config.get('num_classes')


def reinitialize(layers) -> List[tf.Variable]:
  """Sets the kernels and biases of Keras conv / dense `layers` to fresh
  values from their own initializers (e.g. the focal-loss prior bias).

  Returns:
    The variables set.
  """
  done = []
  for layer in layers:
    for var_attr, init_attr in _INITIALIZED:
      var, init = getattr(layer, var_attr, None), getattr(layer, init_attr, None)
      if isinstance(var, tf.Variable) and init is not None:
        var.assign(tf.cast(init(var.shape, var.dtype), var.dtype))
        done.append(var)
  return done


def _class_predictor_layers(model):
  head = getattr(model, 'head', None)
  if head is None:
    return []
  if hasattr(head, 'box_regressor'):
    return [head.classifier]
  if hasattr(head, 'linear'):
    return [head.linear]
  return []


# ========================= The checkpoint's object graph =========================


def resolve_checkpoint(path: str, where: str = 'init_checkpoint') -> str:
  """A checkpoint prefix from a prefix or a directory (its latest checkpoint)."""
  if not path:
    raise InitializationError(f'{where} is empty.')
  if tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise InitializationError(f'{where}={path!r} is a directory without a '
                                'checkpoint index file (`checkpoint`).')
    return latest
  if not tf.io.gfile.glob(path + '.index') and not tf.io.gfile.exists(path):
    raise InitializationError(
        f'{where}={path!r}: no such checkpoint (expected a prefix such as '
        "'run/ckpt-1000' with a '.index' file, or a directory of checkpoints).")
  return path


def _read_graph(prefix):
  """The checkpoint's `ObjectGraph`; a name-based one is refused by name."""
  try:
    return object_graph.ObjectGraph(prefix)
  except object_graph.NameBasedCheckpointError:
    raise InitializationError(
        f'init_checkpoint={prefix!r} is a name-based (TF1) checkpoint without '
        'an object graph. Convert it first: `spinenet-convert` (docs/convert.md).'
    ) from None


def _pair_variables(model, graph, model_node):
  """`{our variable id: checkpoint node}`, walking both object graphs at once."""
  pairs = {}
  queue = collections.deque([(model, model_node)])
  visited = {id(model)}
  while queue:
    obj, node = queue.popleft()
    theirs = graph.children(node)
    for name, child in tf.train.TrackableView(obj).children(obj).items():
      if name not in theirs:
        continue
      if isinstance(child, tf.Variable):
        pairs.setdefault(_var_id(child), theirs[name])
        continue
      if id(child) not in visited:
        visited.add(id(child))
        queue.append((child, theirs[name]))
  return pairs


def _selected_prefixes(parts):
  """Checkpoint key prefixes inside `parts` (a variable there must fit)."""
  if parts == 'all':
    return ('model/',)
  prefixes = ('model/backbone/',)
  if parts == 'backbone_and_head_towers':
    prefixes += tuple(f'model/head/{t}/' for t in (
        'class_convs', 'class_norms', 'box_convs', 'box_norms'))
  return prefixes


def _skip_reason(key):
  if '.OPTIMIZER_SLOT' in key or key.startswith('optimizer/'):
    return 'optimizer state (slots, iterations, EMA averages), not model weights'
  if not key.startswith('model/'):
    return 'not under `model` (counters)'
  return None


# ================================ The entry point ================================


def initialize_from_checkpoint(model, checkpoint: str, parts: str = 'all',
                               ) -> InitReport:
  """Restores the `parts` of `model` from `checkpoint`; see the module doc.

  Args:
    model: a built `RetinaNet` or `Classifier` (or any Keras model; its
      variables outside `backbone` and `head` form the group `other`).
    checkpoint: a checkpoint prefix or a directory (its latest checkpoint)
      holding `tf.train.Checkpoint(model=...)`.
    parts: one of `PARTS`.

  Returns:
    `InitReport` (also logged).

  Raises:
    InitializationError: unknown `parts`, no `model` in the checkpoint, a
      selected variable missing or of another shape (other than the class
      predictor), or a checkpoint model variable of a selected part that the
      model lacks; all problems are listed.
  """
  if parts not in PARTS:
    raise InitializationError(
        f'TrainerOptions.init_checkpoint_parts={parts!r} is not one of {PARTS}.')
  prefix = resolve_checkpoint(checkpoint)
  graph = _read_graph(prefix)
  model_node = graph.children(0).get('model')
  if model_node is None:
    raise InitializationError(
        f'init_checkpoint={prefix!r} holds no `model` (its root has '
        f'{sorted(graph.children(0))}). Checkpoints of this project and '
        '`spinenet-convert` output hold one; convert Model Garden or TF1 '
        'checkpoints with `spinenet-convert` first (docs/convert.md).')
  selected = _PART_GROUPS[parts]
  _check_anchor_order(model, prefix, selected)
  groups = variable_groups(model)
  pairs = _pair_variables(model, graph, model_node)
  report = InitReport(prefix, parts)
  used, problems, assignments = set(), [], []

  for group, variables in groups.items():
    rows = []
    for v in variables:
      node = pairs.get(_var_id(v))
      name = v.name.split(':')[0]
      if node is not None:
        used.add(node)
      if group not in selected:
        report.not_selected.setdefault(group, []).append(name)
        continue
      if node is None or node not in graph.variable:
        problems.append((name, group, f'{v.shape.as_list()} not in the checkpoint'))
        continue
      key, theirs = graph.key(node), graph.shape(node)
      rows.append((v, name, key, tuple(v.shape.as_list()), theirs))
    mismatched = [r for r in rows if r[3] != r[4]]
    if mismatched and group == CLASS_PREDICTOR:
      report.reinitialized[group] = [(n, s, c) for _, n, _, s, c in mismatched]
      reason = _class_count_text(model, rows)
      report.reinitialized_reason[group] = reason
      report.skipped.setdefault(f'{group}: {reason.split(":")[0]}', []).extend(
          r[2] for r in rows)
      continue
    for v, name, key, ours, theirs in rows:
      if ours != theirs:
        problems.append((name, group, f'{list(ours)} here, {list(theirs)} in '
                         f'the checkpoint ({_key_path(key)})'))
      else:
        assignments.append((v, key))
        report.restored.setdefault(group, []).append((name, key))

  for node, (key, _) in sorted(graph.variable.items()):
    if node in used:
      continue
    reason = _skip_reason(key)
    if reason is None:
      if _key_path(key).startswith(_selected_prefixes(parts)):
        problems.append((_key_path(key), 'checkpoint',
                         f'{list(graph.shapes[key])} not in this model'))
        continue
      reason = f'outside parts={parts!r} and not in this model'
    report.skipped.setdefault(reason, []).append(key)
  for group, names in report.not_selected.items():
    # Checkpoint variables of groups left out: skipped, with that reason.
    keys = [graph.key(pairs[_var_id(v)]) for v in groups[group]
            if _var_id(v) in pairs and pairs[_var_id(v)] in graph.variable]
    if keys:
      report.skipped.setdefault(f'{group}: not in parts={parts!r}', []).extend(keys)

  if problems:
    problems = _group_problems(problems)
    hint = ''
    if any('not in the checkpoint' in p for p in problems) and parts != 'backbone':
      hint = (" If the checkpoint holds only a backbone (spinenet-convert "
              "--task=backbone), set TrainerOptions.init_checkpoint_parts = "
              "'backbone'.")
    raise InitializationError(
        f'init_checkpoint={prefix!r} does not fit the model '
        f'(parts={parts!r}); {len(problems)} problem(s):\n  ' +
        '\n  '.join(problems[:50]) +
        (f'\n  ... and {len(problems) - 50} more' if len(problems) > 50 else '') +
        '\nBuild the model as the one that wrote the checkpoint (model id, '
        'head_convs, head_filters, anchors; spinenet-convert records them in '
        'conversion.json).' + hint)

  for v, key in assignments:
    v.assign(tf.cast(graph.reader.get_tensor(key), v.dtype))
  if CLASS_PREDICTOR in report.reinitialized:
    reinitialize(_class_predictor_layers(model))
  report.log()
  return report


def _check_anchor_order(model, prefix, selected):
  """Refuses predictors whose anchor order differs from the checkpoint's.

  The predictors' output channels are anchor-major: restored into a model
  whose aspect ratios come in another order (the authors' TF1 checkpoints
  use 1, 2, 0.5; ours default to 0.5, 1, 2), every channel would predict for
  another anchor with the same shapes. `spinenet-convert` records the order
  in `conversion.json` beside the checkpoint.
  """
  if not selected & {CLASS_PREDICTOR, BOX_PREDICTOR}:
    return
  anchors = getattr(model, 'anchor_config', None)
  record = os.path.join(os.path.dirname(prefix), 'conversion.json')
  if anchors is None or not tf.io.gfile.exists(record):
    return
  with tf.io.gfile.GFile(record) as f:
    theirs = json.load(f).get('build_args', {}).get('aspect_ratios')
  ours = tuple(float(r) for r in anchors.aspect_ratios)
  if theirs is not None and tuple(float(r) for r in theirs) != ours:
    raise InitializationError(
        f'init_checkpoint={prefix!r}: its predictors are for aspect ratios in '
        f'the order {tuple(theirs)} ({record}), the model has {ours}; the '
        'outputs would go to the wrong anchors. Build the model with '
        f'aspect_ratios={tuple(theirs)} (build_retinanet.aspect_ratios), or '
        "restore without the predictors (init_checkpoint_parts = "
        "'backbone_and_head_towers').")


def _group_problems(problems):
  """`(variable path, group, text)` -> one line per layer and kind of problem."""
  lines = collections.OrderedDict()
  for path, group, text in problems:
    layer, _, var = path.rpartition('/')
    shape, _, reason = text.partition(' not in ')
    if reason:  # '[3, 3]' + 'the checkpoint': grouped by reason
      lines.setdefault((layer, group, 'not in ' + reason), []).append(f'{var} {shape}')
    else:
      lines.setdefault((layer, group, ''), []).append(f'{var} {text}')
  return [f'{layer} ({group}): ' + ', '.join(items) + (f': {why}' if why else '')
          for (layer, group, why), items in lines.items()]


def _class_count_text(model, rows):
  """'91 classes in the checkpoint, 4 here' from the predictor's bias shapes."""
  ours = _num_classes(model)
  for v, name, _, shape, theirs in rows:
    if name.endswith('/bias') and ours and shape[-1] % ours == 0:
      per_class = shape[-1] // ours
      if theirs[-1] % per_class == 0:
        return (f'{theirs[-1] // per_class} classes in the checkpoint, {ours} '
                'here: set to its initializers (focal-loss prior bias)')
  return 'shape differs from the checkpoint: set to its initializers'


def write_report(report: InitReport, model_dir: str,
                 name: str = 'init_checkpoint.json') -> Optional[str]:
  """Writes the report into `model_dir` (every variable); returns the path."""
  tf.io.gfile.makedirs(model_dir)
  path = os.path.join(model_dir, name)
  report.write_json(path)
  return path
