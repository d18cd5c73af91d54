"""Shared by the TF1 checkpoint tests: our variables under the authors' TF1
names (the converter's naming rule, inverted) and a name-based checkpoint of
them, as `tf.compat.v1.train.Saver` writes it."""
import tensorflow as tf


def tf1_names(units):
  """`{TF1 name: our variable}` of `tf1_checkpoint.*_units(...)` units.

  Within a scope, the n-th unit of a kind is `<kind>` (n = 0) or
  `<kind>_<n>`; the Fast R-CNN head numbers its convs from 0 (`conv_<n>`).
  """
  counters, names = {}, {}
  for scope, kind, _, leaves in units:
    n = counters.get((scope, kind), 0)
    counters[(scope, kind)] = n + 1
    if kind == 'conv' and scope == 'fast_rcnn_head':
      layer = f'conv_{n}'
    else:
      layer = kind if n == 0 else f'{kind}_{n}'
    for leaf, var in leaves.items():
      names[f'{scope}/{layer}/{leaf}'] = var
  return names


def save_tf1(prefix, tensors):
  """Writes `{name: array}` as a name-based checkpoint at `prefix`."""
  names = sorted(tensors)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[''] * len(names),
                    tensors=[tf.constant(tensors[n]) for n in names])
