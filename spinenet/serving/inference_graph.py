"""Freezes a model's inference function into a constant graph, optionally folded.

`freeze` traces `fn` once, turns every variable it reads into a constant
(`convert_variables_to_constants_v2`), optionally folds batch norms into the
convolutions (`fold_batch_norm.fold_batch_norms`) and wraps the resulting
`GraphDef` back into a callable with `fn`'s output structure. Called inside a
`tf.function`, it imports the graph (constants included) into the function
being traced, so saving that function in a SavedModel saves the frozen graph.

Why constants: folding rewrites the filters, which must be known values; and
a frozen graph is self-contained (no variables to restore), which TF Serving
loads as any other SavedModel.
"""
from typing import Callable, Sequence

from absl import logging
import tensorflow as tf

from spinenet.serving import fold_batch_norm as fold_lib

from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-direct-tensorflow-import


class FrozenFunction:
  """A frozen (and possibly folded) inference graph with `fn`'s signature.

  Attributes:
    graph_def: the final `GraphDef`.
    fold_report: `fold_batch_norm.FoldReport`, or None when not folded.
    input_signature: the `tf.TensorSpec`s it was traced for.

  Call arguments:
    *args: tensors matching `input_signature`.

  Returns:
    `fn`'s outputs (same nest structure).
  """

  def __init__(self, graph_def, input_names, output_names, structure,
               input_signature, fold_report):
    self.graph_def = graph_def
    self.fold_report = fold_report
    self.input_signature = tuple(input_signature)
    self._structure = structure
    self._input_names = list(input_names)
    self._output_names = list(output_names)
    self._eager = None

  def __call__(self, *args):
    if tf.executing_eagerly():
      if self._eager is None:
        self._eager = tf.function(self._import, input_signature=self.input_signature,
                                  autograph=False)
      return self._eager(*args)
    return self._import(*args)

  def _import(self, *args):
    """Imports the graph into the function being traced, `args` as its inputs."""
    flat = tf.graph_util.import_graph_def(
        self.graph_def, input_map=dict(zip(self._input_names, args)),
        return_elements=self._output_names, name='frozen')
    return tf.nest.pack_sequence_as(self._structure, flat)

  @property
  def num_constants(self):
    """Scalars held by the graph's constants (weights included)."""
    total = 0
    for node in self.graph_def.node:
      if node.op == 'Const':
        total += tf.TensorShape(node.attr['value'].tensor.tensor_shape).num_elements() or 0
    return total


def _frozen_graph_def(concrete, lower_control_flow=True):
  """`(GraphDef with variables as constants, names of the remaining inputs)`.

  The first half of `convert_variables_to_constants_v2`, which would also
  wrap the GraphDef into a function (seconds of pruning) that we do not need;
  the public function is the fallback if TensorFlow's internals move.
  """
  try:
    data = convert_to_constants._FunctionConverterDataInEager(  # pylint: disable=protected-access
        func=concrete, lower_control_flow=lower_control_flow,
        aggressive_inlining=False)
    graph_def, converted = convert_to_constants._replace_variables_by_constants(  # pylint: disable=protected-access
        converter_data=data)
  except AttributeError:
    frozen = convert_to_constants.convert_variables_to_constants_v2(
        concrete, lower_control_flow=lower_control_flow)
    return frozen.graph.as_graph_def(), [t.name for t in frozen.inputs]
  captures = concrete.graph.internal_captures
  converted = {id(captures[i]) for i in converted}
  return graph_def, [t.name for t in concrete.inputs if id(t) not in converted]


def freeze(fn: Callable, input_signature: Sequence[tf.TensorSpec],
           fold_batch_norm: bool = True,
           lower_control_flow: bool = True) -> FrozenFunction:
  """Traces `fn`, turns its variables into constants, optionally folds batch norms.

  Args:
    fn: callable of tensors returning a nest of tensors (e.g.
      `lambda images: model(images, training=False)`).
    input_signature: one `tf.TensorSpec` per argument; dimensions may be None
      (e.g. the batch).
    fold_batch_norm: fold inference batch norms into the preceding convs.
    lower_control_flow: lower functional `While`/`If` to v1 control flow
      (Switch/Merge frames). False keeps them functional: needed when the
      graph chains several `tf.map_fn`s (Mask R-CNN's proposals and
      post-processing), whose lowered frames TensorFlow then refuses to run
      ("has inputs from different frames"). Batch norms in the top-level
      graph fold either way.

  Returns:
    A `FrozenFunction`.

  Example:
    ```python
    frozen = freeze(lambda x: model(x, training=False),
                    [tf.TensorSpec([None, 256, 256, 3], tf.float32)])
    outputs = frozen(images)
    ```
  """
  concrete = tf.function(fn, autograph=False).get_concrete_function(*input_signature)
  graph_def, input_names = _frozen_graph_def(concrete, lower_control_flow)
  output_names = [t.name for t in concrete.outputs]
  report = None
  if fold_batch_norm:
    graph_def, report = fold_lib.fold_batch_norms(
        graph_def, sorted({n.split(':')[0] for n in output_names}))
    logging.info('folded %d batch norms into convolutions (%d left: %s)',
                 len(report.folded), len(report.skipped),
                 dict(list(report.skipped.items())[:5]))
  return FrozenFunction(graph_def, input_names, output_names,
                        concrete.structured_outputs, input_signature, report)
