"""Freezes a model's backbone for fine-tuning: weights and batch-norm statistics.

`freeze_backbone(model)` sets `model.backbone.trainable = False`. Keras then
leaves the backbone's variables out of `model.trainable_variables` (the
train step's gradients, weight decay and optimizer slots cover the head
only) and runs its batch norms in inference mode even when the model is
called with `training=True`: they normalize with their moving statistics and
do not update them. Stochastic depth, the other training-only behaviour of a
SpineNet backbone, is switched off for the run (its drop rate set to 0), so
the frozen backbone computes exactly what it computes at inference.

Freeze after the model is built and before the optimizer is built (the
optimizer's EMA copy and slots then cover the trainable variables only).
"""
from typing import List

from absl import logging


def freeze_backbone(model) -> List[str]:
  """Freezes `model.backbone` (see the module doc); returns the frozen names.

  Args:
    model: a built `RetinaNet` or `Classifier` (anything with `backbone`).

  Returns:
    Names of the frozen variables (weights and batch-norm statistics).

  Raises:
    ValueError: if `model` has no `backbone`.
  """
  backbone = getattr(model, 'backbone', None)
  if backbone is None:
    raise ValueError(f'TrainerOptions.freeze_backbone: model {model.name!r} has '
                     'no `backbone` attribute.')
  backbone.trainable = False
  dropped = 0
  for layer in _all_layers(backbone):
    if type(layer).__name__ == 'StochasticDepth' and getattr(layer, 'rate', 0):
      layer.rate = 0.0
      dropped += 1
  names = [v.name for v in backbone.variables]
  logging.info('froze the backbone: %d variables (%d parameters; batch norms in '
               'inference mode%s); %d trainable variables left',
               len(names), sum(int(v.shape.num_elements()) for v in backbone.variables),
               f', stochastic depth off in {dropped} blocks' if dropped else '',
               len(model.trainable_variables))
  return names


def _all_layers(layer):
  """`layer` and every layer nested in it (Keras' own tracking)."""
  found = getattr(layer, '_flatten_layers', None)
  return list(found(include_self=True, recursive=True)) if found else [layer]
