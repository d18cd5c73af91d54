"""What a detection task reads off its built model to build matching inputs."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """Input size, levels, anchors and class count of a built detector."""
  input_size: tuple
  min_level: int
  max_level: int
  num_scales: int
  aspect_ratios: tuple
  anchor_size: float
  num_classes: int


def model_info(model, num_classes: int, task_name: str) -> ModelInfo:
  """The `ModelInfo` of a RetinaNet or Mask R-CNN built for a fixed size.

  Args:
    model: a model with `backbone`, `min_level`, `max_level` and
      `anchor_config` (`num_scales`, `aspect_ratios`, `anchor_size`).
    num_classes: int, the model's class logits (background included).
    task_name: str, names the task in the error.

  Raises:
    ValueError: the backbone was built without a static input size.
  """
  shape = model.backbone.input_shape[1:3]
  if None in shape:
    raise ValueError(f'{task_name} needs a model built for a fixed input '
                     f'size; got input shape {model.backbone.input_shape}. '
                     'Set `input_size` of the model builder.')
  a = model.anchor_config
  return ModelInfo(tuple(int(s) for s in shape), model.min_level, model.max_level,
                   a.num_scales, tuple(a.aspect_ratios), a.anchor_size,
                   int(num_classes))
