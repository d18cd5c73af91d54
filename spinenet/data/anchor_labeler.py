"""Per-level RetinaNet training targets for a fixed input size."""
import numpy as np
import tensorflow as tf

from spinenet.ops import anchors as anchors_lib
from spinenet.ops import target_assigner


class AnchorLabeler:
  """Labels the anchors of one input size with ground-truth boxes.

  The anchors are computed once, at construction, for `image_size`; labels
  have static shapes.

  Args:
    image_size: `(height, width)` of the model input in pixels.
    min_level: int. Smallest level (stride `2**min_level`). Defaults to 3.
    max_level: int. Largest level. Defaults to 7.
    num_scales: int. Octave scales per level. Defaults to 3.
    aspect_ratios: floats, width / height. Defaults to `(0.5, 1.0, 2.0)`.
    anchor_size: float. Anchor size in units of the level's stride.
      Defaults to 4.0.
    match_threshold: float. IoU at or above which an anchor is positive.
      Defaults to 0.5.
    unmatched_threshold: float. IoU below which an anchor is negative.
      Defaults to 0.5.
    force_match: bool. Each box also claims its best anchor, as the Model
      Garden's `AnchorLabeler` does. Defaults to True.
    box_coder_weights: optional 4 floats scaling dy, dx, dh, dw.

  Example:
    ```python
    labeler = AnchorLabeler((256, 256), anchor_size=3.0)
    labels = labeler.label(boxes, classes)  # boxes: float32 [N, 4] pixels
    labels['cls_targets']['3']  # int32 [32, 32, 9]
    ```
  """

  def __init__(self, image_size, min_level=3, max_level=7, num_scales=3,
               aspect_ratios=(0.5, 1.0, 2.0), anchor_size=4.0,
               match_threshold=0.5, unmatched_threshold=0.5, force_match=True,
               box_coder_weights=None):
    with tf.init_scope():  # eager even when built inside a tf.function
      multilevel = anchors_lib.multilevel_anchors(
          min_level, max_level, num_scales, aspect_ratios, anchor_size,
          image_size)
      multilevel = {l: v.numpy() for l, v in multilevel.items()}
    self.levels = [str(l) for l in range(min_level, max_level + 1)]
    self.num_anchors_per_location = anchors_lib.num_anchors_per_location(
        num_scales, aspect_ratios)
    self.level_shapes = {
        l: tuple(multilevel[l].shape[:2]) for l in self.levels}
    self.multilevel_anchors = {l: multilevel[l] for l in self.levels}
    self.anchors = np.concatenate(
        [self.multilevel_anchors[l].reshape(-1, 4) for l in self.levels])
    self._split_sizes = [
        h * w * self.num_anchors_per_location
        for h, w in self.level_shapes.values()]
    self._match_args = dict(match_threshold=match_threshold,
                            unmatched_threshold=unmatched_threshold,
                            force_match=force_match,
                            box_coder_weights=box_coder_weights)

  @property
  def total_anchors(self):
    return self.anchors.shape[0]

  def unpack(self, flat, values_per_anchor=1):
    """`[total_anchors, ...]` -> `{level: [H_l, W_l, A * values_per_anchor]}`."""
    parts = tf.split(flat, self._split_sizes, axis=0)
    a = self.num_anchors_per_location * values_per_anchor
    return {l: tf.reshape(p, [*self.level_shapes[l], a])
            for l, p in zip(self.levels, parts)}

  def label(self, boxes, classes, is_crowd=None):
    """Targets for one image.

    Args:
      boxes: float32 `[N, 4]`, ymin, xmin, ymax, xmax in input pixels.
      classes: int `[N]`, class indices (0 is background).
      is_crowd: optional bool `[N]`; crowd boxes only make anchors ignored.

    Returns:
      dict:
        cls_targets: `{level: int32 [H_l, W_l, A]}`, class index, 0 for
          background and ignored anchors.
        box_targets: `{level: float32 [H_l, W_l, A * 4]}`, dy, dx, dh, dw,
          0 where not positive.
        cls_weights: float32 `[total_anchors]`, 0 for ignored anchors.
        box_weights: float32 `[total_anchors]`, 1 for positives.
        num_positives: float32 scalar.
      The `[total_anchors]` order is `anchors.flatten_multilevel`'s.
    """
    targets = target_assigner.assign_targets(
        tf.constant(self.anchors), boxes, classes, is_crowd,
        **self._match_args)
    targets['cls_targets'] = self.unpack(targets['cls_targets'])
    targets['box_targets'] = self.unpack(targets['box_targets'], 4)
    return targets
