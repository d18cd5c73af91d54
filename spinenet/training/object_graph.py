"""A TF2 (object-based) checkpoint's object graph: which node holds which variable.

`tf.train.Checkpoint` and Keras `save_weights` store, beside the values, a
`TrackableObjectGraph`: nodes with named children, and for each variable
node its checkpoint key. Reading it lets a checkpoint be matched to a model
by structure (attribute paths) instead of by variable names. Name-based TF1
checkpoints (`tf.compat.v1.train.Saver`) have no such graph.
"""
import collections

import tensorflow as tf

from tensorflow.core.protobuf import trackable_object_graph_pb2  # pylint: disable=g-direct-tensorflow-import

GRAPH_KEY = '_CHECKPOINTABLE_OBJECT_GRAPH'


class NameBasedCheckpointError(ValueError):
  """The checkpoint has no object graph (a name-based TF1 checkpoint)."""


def is_name_based(variable_to_shape_map) -> bool:
  """Whether a reader's `get_variable_to_shape_map()` lacks an object graph."""
  return GRAPH_KEY not in variable_to_shape_map


class ObjectGraph:
  """A checkpoint's reader, variable shapes and object graph.

  Attributes:
    reader: `tf.train.load_checkpoint(prefix)`.
    shapes: `{checkpoint key: shape}` of every tensor.
    proto: the `TrackableObjectGraph`; node 0 is the root.
    variable: `{node id: (checkpoint key, variable name without ':0')}` for
      every node holding a variable value.
  """

  def __init__(self, prefix: str):
    """Raises `NameBasedCheckpointError` when `prefix` has no object graph."""
    self.reader = tf.train.load_checkpoint(prefix)
    self.shapes = self.reader.get_variable_to_shape_map()
    if is_name_based(self.shapes):
      raise NameBasedCheckpointError(prefix)
    self.proto = trackable_object_graph_pb2.TrackableObjectGraph()
    self.proto.ParseFromString(self.reader.get_tensor(GRAPH_KEY))
    self.variable = {}
    for i, node in enumerate(self.proto.nodes):
      for a in node.attributes:
        if a.name == 'VARIABLE_VALUE':
          self.variable[i] = (a.checkpoint_key, a.full_name.split(':')[0])

  def children(self, node):
    """`{local name: child node id}` of `node`."""
    return {c.local_name: c.node_id for c in self.proto.nodes[node].children}

  def walk(self, node, path):
    """The node at `path` (attribute names) below `node`, or None."""
    for name in path:
      node = self.children(node).get(name) if node is not None else None
    return node

  def key(self, node):
    """Checkpoint key of a variable node."""
    return self.variable[node][0]

  def shape(self, node):
    """Shape (tuple) of a variable node."""
    return tuple(self.shapes[self.key(node)])

  def variables_under(self, node):
    """`{variable node: path from node}` for every variable reachable from node."""
    found, queue, seen = {}, collections.deque([(node, ())]), {node}
    while queue:
      n, path = queue.popleft()
      if n in self.variable:
        found[n] = path
      for name, child in sorted(self.children(n).items()):
        if child not in seen:
          seen.add(child)
          queue.append((child, path + (name,)))
    return found
