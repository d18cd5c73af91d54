"""Folds inference batch norms into the convolutions that feed them.

A graph transform on a frozen inference `GraphDef` (variables already turned
into constants): every

  conv(x, W) [+ b] [-> Cast] -> batch norm [-> Cast]

becomes `conv(x, W * s) + (b * s + t)`, where the batch norm is the affine
map `y = x * s + t` with `s = gamma / sqrt(var + eps)` and
`t = beta - mean * s`. Both forms Keras emits are recognized: the fused op
(`FusedBatchNormV3` with `is_training=False`) and the unfused one
(`Mul(x, s) -> AddV2(., t)` or `Sub(., -t)`, what `BatchNormalization(
synchronized=True)` and `tf.nn.batch_normalization` produce). `conv` is
`Conv2D` or `DepthwiseConv2dNative` (NHWC) with a constant filter; a conv
whose filter is shared by several convs (the RetinaNet head's towers run on
every level with per-level batch norms) gets one folded filter per use.

In exact arithmetic the result equals the input graph; in floating point the
outputs agree to rounding (the folded filter is rounded once to the conv's
dtype, e.g. bfloat16). Besides removing two elementwise passes per batch
norm, the result is `Conv2D -> BiasAdd [-> activation]`, which TensorFlow's
CPU graph optimizer fuses into one oneDNN convolution.
"""
import collections
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tensorflow.core.framework import attr_value_pb2  # pylint: disable=g-direct-tensorflow-import
from tensorflow.core.framework import graph_pb2  # pylint: disable=g-direct-tensorflow-import
from tensorflow.core.framework import node_def_pb2  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.eager import wrap_function  # pylint: disable=g-direct-tensorflow-import

_CONVS = ('Conv2D', 'DepthwiseConv2dNative')
_FUSED_NORMS = ('FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3')
_ADDS = ('AddV2', 'Add', 'BiasAdd')
_NON_CONSTANT = ('Placeholder', 'PlaceholderWithDefault', 'VarHandleOp',
                 'ReadVariableOp', 'VariableV2', 'RandomUniform',
                 'RandomStandardNormal', 'TruncatedNormal')


@dataclasses.dataclass
class FoldReport:
  """What `fold_batch_norms` did.

  Attributes:
    folded: names of the batch-norm nodes folded away (the last node of each
      replaced chain).
    skipped: `{node name: reason}` of batch norms left in place.
  """
  folded: List[str] = dataclasses.field(default_factory=list)
  skipped: Dict[str, str] = dataclasses.field(default_factory=dict)


def _node_name(tensor_name):
  return tensor_name.lstrip('^').split(':')[0]


def _output_index(tensor_name):
  parts = tensor_name.split(':')
  return int(parts[1]) if len(parts) > 1 else 0


class _Graph:
  """Index of a GraphDef: nodes by name, consumers, constness."""

  def __init__(self, graph_def):
    self.graph_def = graph_def
    self.nodes = {n.name: n for n in graph_def.node}
    self.consumers = collections.defaultdict(list)  # name -> [(node, input str)]
    for node in graph_def.node:
      for inp in node.input:
        self.consumers[_node_name(inp)].append((node, inp))
    self._constant = {}

  def is_constant(self, name):
    """True if `name` depends on no placeholder, variable or random op."""
    stack = [name]
    while stack:
      current = stack[-1]
      if current in self._constant:
        stack.pop()
        continue
      node = self.nodes[current]
      if node.op in _NON_CONSTANT or node.op.startswith('Stateful'):
        self._constant[current] = False
        stack.pop()
        continue
      pending = [_node_name(i) for i in node.input
                 if _node_name(i) not in self._constant]
      if pending:
        stack.extend(pending)
        continue
      self._constant[current] = all(self._constant[_node_name(i)] for i in node.input)
      stack.pop()
    return self._constant[name]

  def sole_consumer(self, name):
    """The node consuming `name:0` if it is the only use of `name`, else None."""
    uses = self.consumers.get(name, [])
    if len(uses) != 1:
      return None
    node, inp = uses[0]
    if inp.startswith('^') or _output_index(inp) != 0:
      return None
    return node


def _dtype(node, attr='T'):
  return tf.dtypes.as_dtype(node.attr[attr].type)


@dataclasses.dataclass
class _Chain:
  conv: object
  bias: Optional[str] = None         # tensor name of a constant conv bias
  scale: Optional[object] = None     # ('tensor', name) or ('fused', node)
  shift: Optional[Tuple[str, float]] = None  # (tensor name, sign)
  end: object = None                 # last node replaced


def _channel_vector(array, channels):
  """`array` as a `[channels]` vector if it broadcasts along the last axis only."""
  if array.size == 1:
    return np.full([channels], float(array.reshape(())))
  if array.size == channels and array.shape[-1] == channels:
    return array.reshape([channels])
  return None


def _match(graph, conv):
  """The foldable chain starting at `conv`, or (None, reason)."""
  if conv.attr['data_format'].s not in (b'', b'NHWC'):
    return None, 'not NHWC'
  if not graph.is_constant(_node_name(conv.input[1])):
    return None, 'filter is not constant'
  chain = _Chain(conv=conv)
  current = conv
  while True:
    node = graph.sole_consumer(current.name)
    if node is None:
      break
    if node.op == 'Cast' and chain.shift is None:
      current = node
      continue
    if (node.op == 'BiasAdd' and chain.scale is None and chain.bias is None and
        node.input[0] == current.name and graph.is_constant(_node_name(node.input[1]))):
      chain.bias = node.input[1]
      current = node
      continue
    if node.op in _FUSED_NORMS and chain.scale is None:
      if node.attr['is_training'].b or _node_name(node.input[0]) != current.name:
        return None, f'{node.name}: a training-mode batch norm'
      if any(not graph.is_constant(_node_name(i)) for i in node.input[1:5]):
        return None, f'{node.name}: batch norm parameters are not constant'
      if any(_output_index(inp) != 0 for n in graph.consumers.get(node.name, [])
             for inp in [n[1]]):
        return None, f'{node.name}: uses batch statistics outputs'
      chain.scale = ('fused', node)
      chain.end = node
      current = node
      continue
    if node.op == 'Mul' and chain.scale is None:
      other = [i for i in node.input if _node_name(i) != current.name]
      if len(other) != 1 or not graph.is_constant(_node_name(other[0])):
        break
      chain.scale = ('tensor', other[0])
      chain.end = node
      current = node
      continue
    if (node.op in _ADDS + ('Sub',) and chain.scale is not None and
        chain.scale[0] == 'tensor' and chain.shift is None):
      other = [i for i in node.input if _node_name(i) != current.name]
      if len(other) != 1 or not graph.is_constant(_node_name(other[0])):
        break
      if node.op == 'Sub' and _node_name(node.input[0]) != current.name:
        break  # t - x is not an affine map of the same sign
      chain.shift = (other[0], -1.0 if node.op == 'Sub' else 1.0)
      chain.end = node
      current = node
      continue
    break
  if chain.scale is None:
    return None, 'no batch norm after the conv'
  # Trailing casts back to the conv's dtype belong to the chain too.
  while True:
    node = graph.sole_consumer(chain.end.name)
    if node is None or node.op != 'Cast':
      break
    chain.end = node
  return chain, ''


_NUMPY_OPS = {
    'Identity': lambda x: x,
    'Cast': lambda x: x,  # dtypes are applied when the folded constants are built
    'Rsqrt': lambda x: 1.0 / np.sqrt(x),
    'Sqrt': np.sqrt,
    'Reciprocal': lambda x: 1.0 / x,
    'Neg': np.negative,
    'Mul': np.multiply,
    'AddV2': np.add,
    'Add': np.add,
    'Sub': np.subtract,
    'RealDiv': np.divide,
}


def _evaluate(graph, tensor_names):
  """float64 NumPy values of constant tensors, by name.

  The batch-norm parameters are constants or small expressions of constants
  (`Rsqrt(var + eps) * gamma`, ...): these are computed in NumPy, in float64;
  anything else is run once through TensorFlow.
  """
  values, memo, others = {}, {}, []

  def numpy_value(name):
    if name in memo:
      return memo[name]
    node = graph.nodes[name]
    if node.op == 'Const':
      value = tf.make_ndarray(node.attr['value'].tensor).astype(np.float64)
    elif node.op in _NUMPY_OPS:
      args = [numpy_value(_node_name(i)) for i in node.input if not i.startswith('^')]
      value = None if any(a is None for a in args) else _NUMPY_OPS[node.op](*args)
    else:
      value = None
    memo[name] = value
    return value

  for tensor in set(tensor_names):
    value = numpy_value(_node_name(tensor)) if _output_index(tensor) == 0 else None
    if value is None:
      others.append(tensor)
    else:
      values[tensor] = value
  if others:
    names = sorted(others)
    fn = wrap_function.function_from_graph_def(
        graph.graph_def, inputs=[], outputs=[n if ':' in n else n + ':0' for n in names])
    values.update({n: np.asarray(v.numpy(), np.float64) for n, v in zip(names, fn())})
  return values


def _const_node(name, array, dtype):
  node = node_def_pb2.NodeDef()
  node.name = name
  node.op = 'Const'
  node.attr['dtype'].type = dtype.as_datatype_enum
  node.attr['value'].tensor.CopyFrom(
      tf.make_tensor_proto(np.asarray(array).astype(dtype.as_numpy_dtype)))
  return node


def _unique_name(nodes, base):
  name, i = base, 1
  while name in nodes:
    name, i = f'{base}_{i}', i + 1
  return name


def fold_batch_norms(graph_def: graph_pb2.GraphDef,
                     output_names: Sequence[str]) -> Tuple[graph_pb2.GraphDef, FoldReport]:
  """Folds every foldable batch norm of a frozen graph into its conv.

  Args:
    graph_def: a frozen inference graph (e.g. from
      `convert_variables_to_constants_v2`), NHWC convolutions.
    output_names: node names the graph must keep computing (everything not
      needed for them is pruned).

  Returns:
    `(folded_graph_def, FoldReport)`. Node names of the graph's outputs and of
    every node kept are unchanged; the last node of each folded chain keeps
    its name and becomes a `BiasAdd` (or a `Cast` of one).
  """
  graph = _Graph(graph_def)
  report = FoldReport()
  chains = []
  for node in graph_def.node:
    if node.op in _CONVS:
      chain, reason = _match(graph, node)
      if chain is not None:
        chains.append(chain)
      elif reason != 'no batch norm after the conv':
        report.skipped[node.name] = reason
  needed = []
  for c in chains:
    needed.append(c.conv.input[1])
    if c.bias:
      needed.append(c.bias)
    if c.scale[0] == 'tensor':
      needed.append(c.scale[1])
    else:
      needed.extend(c.scale[1].input[1:5])
    if c.shift:
      needed.append(c.shift[0])
  values = _evaluate(graph, needed)

  out = graph_pb2.GraphDef()
  out.CopyFrom(graph_def)
  nodes = {n.name: n for n in out.node}
  for c in chains:
    conv = nodes[c.conv.name]
    dtype = _dtype(conv)
    kernel = values[c.conv.input[1]]
    channels = (kernel.shape[2] * kernel.shape[3] if conv.op == 'DepthwiseConv2dNative'
                else kernel.shape[3])
    if c.scale[0] == 'fused':
      bn = c.scale[1]
      gamma, beta, mean, var = (values[i] for i in bn.input[1:5])
      scale = gamma / np.sqrt(var + bn.attr['epsilon'].f)
      shift = beta - mean * scale
    else:
      scale = values[c.scale[1]]
      shift = (values[c.shift[0]] * c.shift[1] if c.shift
               else np.zeros([]))
    scale, shift = _channel_vector(scale, channels), _channel_vector(shift, channels)
    if scale is None or shift is None:
      report.skipped[c.end.name] = 'scale or shift is not per channel'
      continue
    bias = values[c.bias] if c.bias else np.zeros([channels])
    if conv.op == 'DepthwiseConv2dNative':
      folded = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
      folded = kernel * scale
    filter_name = _unique_name(nodes, conv.name + '/folded_filter')
    bias_name = _unique_name(nodes, c.end.name + '/folded_bias')
    filter_node = _const_node(filter_name, folded, dtype)
    bias_node = _const_node(bias_name, bias * scale + shift, dtype)
    out.node.extend([filter_node, bias_node])
    nodes[filter_name], nodes[bias_name] = filter_node, bias_node
    conv.input[1] = filter_name

    end = nodes[c.end.name]
    end_dtype = _dtype(end, 'DstT') if end.op == 'Cast' else (
        _dtype(end) if 'T' in end.attr else dtype)
    add_name = c.end.name if end_dtype == dtype else _unique_name(
        nodes, c.end.name + '/bias_add')
    add = node_def_pb2.NodeDef(name=add_name, op='BiasAdd', input=[conv.name, bias_name])
    add.attr['T'].type = dtype.as_datatype_enum
    add.attr['data_format'].CopyFrom(attr_value_pb2.AttrValue(s=b'NHWC'))
    replacement = [add]
    if add_name != c.end.name:
      cast = node_def_pb2.NodeDef(name=c.end.name, op='Cast', input=[add_name])
      cast.attr['SrcT'].type = dtype.as_datatype_enum
      cast.attr['DstT'].type = end_dtype.as_datatype_enum
      cast.attr['Truncate'].b = False
      replacement.append(cast)
    end.Clear()
    end.CopyFrom(replacement[-1])
    if len(replacement) > 1:
      out.node.append(add)
      nodes[add_name] = add
    report.folded.append(c.end.name)

  return _prune(out, output_names), report


def _prune(graph_def, output_names):
  """`graph_def` without the nodes `output_names` do not depend on (order kept)."""
  nodes = {n.name: n for n in graph_def.node}
  keep, stack = set(), list(output_names)
  while stack:
    name = stack.pop()
    if name in keep:
      continue
    keep.add(name)
    stack.extend(_node_name(i) for i in nodes[name].input)
  pruned = graph_pb2.GraphDef()
  pruned.versions.CopyFrom(graph_def.versions)
  pruned.library.CopyFrom(graph_def.library)
  pruned.node.extend(n for n in graph_def.node if n.name in keep)
  return pruned
