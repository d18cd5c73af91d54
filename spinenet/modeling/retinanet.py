"""RetinaNet: a multi-level backbone + shared class/box heads + post-processing."""
import dataclasses
from typing import Sequence

import tensorflow as tf
import tf_keras as keras

from spinenet.ops import anchors as anchors_lib
from spinenet.ops import postprocess


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
  """Anchors per location: `num_scales` octave scales x `aspect_ratios`."""
  num_scales: int = 3
  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
  anchor_size: float = 3.0

  @property
  def num_anchors(self):
    return anchors_lib.num_anchors_per_location(self.num_scales, self.aspect_ratios)


@dataclasses.dataclass(frozen=True)
class DetectionConfig:
  """Post-processing options (the paper's recipe values by default)."""
  score_threshold: float = 0.05
  pre_nms_top_k: int = 5000
  nms_iou_threshold: float = 0.5
  max_detections: int = 100


class RetinaNet(keras.Model):
  """Backbone -> RetinaNet head; `detect` adds box decoding and NMS.

  Args:
    backbone: Keras model mapping images `[B, H, W, 3]` to
      `{str(level): [B, H / 2**level, W / 2**level, C]}`.
    head: `heads.RetinaNetHead`.
    min_level, max_level: int. Levels used.
    anchor_config: `AnchorConfig`.
    detection_config: `DetectionConfig`.

  Call arguments:
    images: float `[B, H, W, 3]`, normalized.
    training: bool.

  Returns (call):
    dict with `cls_outputs` `{str(level): float32 [B, H_l, W_l, A * K]}`
    logits and `box_outputs` `{str(level): float32 [B, H_l, W_l, A * 4]}`.
  """

  def __init__(self, backbone, head, min_level=3, max_level=7,
               anchor_config=AnchorConfig(), detection_config=DetectionConfig(),
               **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone
    self.head = head
    self.min_level, self.max_level = min_level, max_level
    self.anchor_config = anchor_config
    self.detection_config = detection_config

  def get_config(self):
    return {'name': self.name, 'trainable': self.trainable,
            'backbone': keras.layers.serialize(self.backbone),
            'head': keras.layers.serialize(self.head),
            'min_level': self.min_level, 'max_level': self.max_level,
            'anchor_config': dataclasses.asdict(self.anchor_config),
            'detection_config': dataclasses.asdict(self.detection_config)}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    """Rebuilds the model; `custom_objects` as `keras_objects.custom_objects()`."""
    config = dict(config)
    for key in ('backbone', 'head'):
      config[key] = keras.layers.deserialize(config[key], custom_objects=custom_objects)
    anchor = dict(config['anchor_config'])
    anchor['aspect_ratios'] = tuple(anchor['aspect_ratios'])
    config['anchor_config'] = AnchorConfig(**anchor)
    config['detection_config'] = DetectionConfig(**config['detection_config'])
    return cls(**config)

  def call(self, images, training=None):
    features = self.backbone(images, training=training)
    features = {str(l): features[str(l)]
                for l in range(self.min_level, self.max_level + 1)}
    class_logits, box_deltas = self.head(features, training=training)
    cast = lambda d: {k: tf.cast(v, tf.float32) for k, v in d.items()}  # noqa: E731
    return {'cls_outputs': cast(class_logits), 'box_outputs': cast(box_deltas)}

  def anchors(self, image_size):
    """Anchors `{str(level): [H_l, W_l, A * 4]}` for an `(H, W)` input."""
    a = self.anchor_config
    return anchors_lib.multilevel_anchors(
        self.min_level, self.max_level, a.num_scales, a.aspect_ratios,
        a.anchor_size, image_size)

  def postprocess(self, outputs, image_size, image_shape=None):
    """Decodes raw outputs of `call` into detections.

    Args:
      outputs: dict returned by `call`.
      image_size: `(H, W)` of the model input, static.
      image_shape: optional float `[B, 2]` valid (unpadded) size to clip to;
        defaults to `image_size`.

    Returns:
      dict of `detection_boxes`, `detection_scores`, `detection_classes`,
      `num_detections` (see `ops.postprocess.generate_detections`), boxes in
      pixels of the model input.
    """
    batch = tf.shape(outputs['cls_outputs'][str(self.min_level)])[0]
    if image_shape is None:
      image_shape = tf.tile(tf.constant([list(image_size)], tf.float32), [batch, 1])
    c = self.detection_config
    return postprocess.generate_detections(
        outputs['cls_outputs'], outputs['box_outputs'], self.anchors(image_size),
        image_shape, score_threshold=c.score_threshold,
        pre_nms_top_k=c.pre_nms_top_k, nms_iou_threshold=c.nms_iou_threshold,
        max_detections=c.max_detections)

  def detect(self, images, image_shape=None):
    """Inference: images `[B, H, W, 3]` (static H, W) -> detections dict."""
    outputs = self(images, training=False)
    return self.postprocess(outputs, tuple(images.shape[1:3]), image_shape)

