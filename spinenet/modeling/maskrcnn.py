"""Mask R-CNN: backbone, region proposals, RoIAlign, box and mask heads.

Training (`training=True`) samples ROIs among the proposals and builds their
targets inside the model, so the losses read everything from the outputs;
inference decodes per-class boxes, runs per-class NMS and predicts the mask
of each detection's class. All shapes are static.
"""
import dataclasses

import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import retinanet
from spinenet.ops import anchors as anchors_lib
from spinenet.ops import maskrcnn_postprocess
from spinenet.ops import proposals as proposals_lib
from spinenet.ops import roi_align
from spinenet.ops import roi_sampler


# RPN anchors per location: the RetinaNet's config; Mask R-CNN's default has
# one octave scale (3 anchors per location).
AnchorConfig = retinanet.AnchorConfig
_DEFAULT_ANCHORS = AnchorConfig(num_scales=1)


@dataclasses.dataclass(frozen=True)
class ProposalConfig:
  """Proposal generation (per level top-k, NMS, total kept), train and test.

  `box_coding`: 'standard' or 'tf1' (the SpineNet authors' "+1 pixel" box
  sizes and clipping to `size - 1`, `ops.box_ops`); the TF1 checkpoint
  import sets 'tf1'.
  """
  pre_nms_top_k: int = 2000
  nms_iou_threshold: float = 0.7
  num_proposals: int = 1000
  test_pre_nms_top_k: int = 1000
  test_nms_iou_threshold: float = 0.7
  test_num_proposals: int = 1000
  box_coding: str = 'standard'


@dataclasses.dataclass(frozen=True)
class ROISamplerConfig:
  """Second-stage training ROIs and mask rows."""
  num_sampled_rois: int = 512
  foreground_fraction: float = 0.25
  foreground_iou_threshold: float = 0.5
  background_iou_high_threshold: float = 0.5
  background_iou_low_threshold: float = 0.0
  mix_gt_boxes: bool = True
  num_sampled_masks: int = 128


@dataclasses.dataclass(frozen=True)
class DetectionConfig:
  """Inference post-processing and RoIAlign.

  `roi_align_method`: 'auto' (gathers under a TPU strategy, else
  crop_and_resize), 'gather' (XLA-compilable: choose it to jit-compile the
  whole model) or 'crop_and_resize' (fast on CPU); see `ops.roi_align`.
  `box_coding`: 'standard' or 'tf1', the pixel convention of decoding the
  final boxes (as `ProposalConfig.box_coding`).
  """
  score_threshold: float = 0.05
  pre_nms_top_k: int = 5000
  nms_iou_threshold: float = 0.5
  max_detections: int = 100
  box_crop_size: int = 7
  mask_crop_size: int = 14
  roi_align_method: str = 'auto'
  box_coding: str = 'standard'


_CONFIGS = {'anchor_config': AnchorConfig, 'proposal_config': ProposalConfig,
            'roi_sampler_config': ROISamplerConfig, 'detection_config': DetectionConfig}


class MaskRCNN(keras.Model):
  """Mask R-CNN over a multi-level backbone.

  Args:
    backbone: Keras model, images `[B, H, W, 3]` -> `{str(level): features}`.
    rpn_head: `maskrcnn_heads.RPNHead`.
    box_head: `maskrcnn_heads.BoxHead`.
    mask_head: `maskrcnn_heads.MaskHead`.
    min_level, max_level: int, the levels used.
    anchor_config, proposal_config, roi_sampler_config, detection_config:
      the dataclasses above.

  Call arguments:
    features: dict with `images` float `[B, H, W, 3]` (static H, W) and
      `image_info` float `[B, 4, 2]` (row 1: scaled image size, to clip to);
      in training also `gt_boxes` `[B, G, 4]` (input pixels, padding -1),
      `gt_classes` int `[B, G]` (padding -1) and `gt_masks` `[B, G, M, M]`
      (each mask cropped to its box).
    training: bool.

  Returns:
    dict; see the contract in the class attribute `OUTPUTS`.
  """

  OUTPUTS = {
      'train': ('rpn_scores', 'rpn_boxes', 'class_outputs', 'box_outputs',
                'class_targets', 'box_targets', 'mask_outputs', 'mask_targets',
                'mask_class_targets'),
      'inference': ('rpn_scores', 'rpn_boxes', 'detection_boxes', 'detection_scores',
                    'detection_classes', 'num_detections', 'detection_masks'),
  }

  def __init__(self, backbone, rpn_head, box_head, mask_head, min_level=3, max_level=7,
               anchor_config=_DEFAULT_ANCHORS, proposal_config=ProposalConfig(),
               roi_sampler_config=ROISamplerConfig(),
               detection_config=DetectionConfig(), **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone
    self.rpn_head = rpn_head
    self.box_head = box_head
    self.mask_head = mask_head
    self.min_level, self.max_level = min_level, max_level
    self.anchor_config = anchor_config
    self.proposal_config = proposal_config
    self.roi_sampler_config = roi_sampler_config
    self.detection_config = detection_config

  def get_config(self):
    config = {'name': self.name, 'trainable': self.trainable,
              'min_level': self.min_level, 'max_level': self.max_level}
    for key in ('backbone', 'rpn_head', 'box_head', 'mask_head'):
      config[key] = keras.layers.serialize(getattr(self, key))
    for key in _CONFIGS:
      config[key] = dataclasses.asdict(getattr(self, key))
    return config

  @classmethod
  def from_config(cls, config, custom_objects=None):
    """Rebuilds the model; `custom_objects` as `keras_objects.custom_objects()`."""
    config = dict(config)
    for key in ('backbone', 'rpn_head', 'box_head', 'mask_head'):
      config[key] = keras.layers.deserialize(config[key], custom_objects=custom_objects)
    for key, config_cls in _CONFIGS.items():
      values = dict(config[key])
      if 'aspect_ratios' in values:
        values['aspect_ratios'] = tuple(values['aspect_ratios'])
      config[key] = config_cls(**values)
    return cls(**config)

  def anchors(self, image_size):
    """RPN anchors `{str(level): [H_l, W_l, A * 4]}` for an `(H, W)` input."""
    a = self.anchor_config
    return anchors_lib.multilevel_anchors(
        self.min_level, self.max_level, a.num_scales, a.aspect_ratios,
        a.anchor_size, image_size)

  def features(self, images, training=None):
    """Backbone features `{str(level): ...}` of the levels used."""
    features = self.backbone(images, training=training)
    return {str(l): features[str(l)] for l in range(self.min_level, self.max_level + 1)}

  def proposals(self, rpn_scores, rpn_boxes, image_size, image_shape, training):
    """`(boxes [B, P, 4], scores [B, P])` from RPN outputs (no gradient)."""
    p = self.proposal_config
    return proposals_lib.generate_proposals(
        tf.nest.map_structure(tf.stop_gradient, rpn_scores),
        tf.nest.map_structure(tf.stop_gradient, rpn_boxes),
        self.anchors(image_size), image_shape,
        pre_nms_top_k=p.pre_nms_top_k if training else p.test_pre_nms_top_k,
        nms_iou_threshold=p.nms_iou_threshold if training else p.test_nms_iou_threshold,
        num_proposals=p.num_proposals if training else p.test_num_proposals,
        box_coding=p.box_coding)

  def box_outputs(self, features, rois, training=None):
    """Box head on `rois` `[B, R, 4]`: `(class_outputs, box_outputs)` float32."""
    c = self.detection_config
    roi_features = roi_align.multilevel_roi_align(
        features, rois, c.box_crop_size, method=c.roi_align_method)
    class_outputs, box_outputs = self.box_head(roi_features, training=training)
    return tf.cast(class_outputs, tf.float32), tf.cast(box_outputs, tf.float32)

  def mask_outputs(self, features, rois, classes, training=None):
    """Mask logits `[B, R, 28, 28]` float32 of `rois` for `classes`."""
    c = self.detection_config
    roi_features = roi_align.multilevel_roi_align(
        features, rois, c.mask_crop_size, method=c.roi_align_method)
    return tf.cast(self.mask_head(roi_features, classes, training=training), tf.float32)

  def call(self, features, training=None):
    images = features['images']
    image_size = tuple(int(d) for d in images.shape[1:3])
    image_shape = tf.cast(features['image_info'], tf.float32)[:, 1, :]
    feats = self.features(images, training=training)
    rpn_scores, rpn_boxes = self.rpn_head(feats, training=training)
    cast = lambda d: {k: tf.cast(v, tf.float32) for k, v in d.items()}  # noqa: E731
    outputs = {'rpn_scores': cast(rpn_scores), 'rpn_boxes': cast(rpn_boxes)}
    rois, _ = self.proposals(rpn_scores, rpn_boxes, image_size, image_shape, training)
    if training:
      outputs.update(self._train_second_stage(feats, rois, features))
    else:
      outputs.update(self._detect(feats, rois, image_shape))
    return outputs

  def _train_second_stage(self, feats, proposals, features):
    s = self.roi_sampler_config
    sampled = roi_sampler.sample_rois(
        proposals, features['gt_boxes'], features['gt_classes'],
        num_samples=s.num_sampled_rois, foreground_fraction=s.foreground_fraction,
        foreground_iou_threshold=s.foreground_iou_threshold,
        background_iou_high_threshold=s.background_iou_high_threshold,
        background_iou_low_threshold=s.background_iou_low_threshold,
        mix_gt_boxes=s.mix_gt_boxes)
    rois = tf.stop_gradient(sampled['rois'])
    class_outputs, box_outputs = self.box_outputs(feats, rois, training=True)
    masks = roi_sampler.sample_masks(
        rois, sampled['class_targets'], sampled['matched_gt_boxes'],
        sampled['matched_gt_indices'], features['gt_masks'],
        num_masks=s.num_sampled_masks,
        output_size=self.detection_config.mask_crop_size * self.mask_head.upsample_factor)
    mask_outputs = self.mask_outputs(feats, masks['mask_rois'],
                                     masks['mask_class_targets'], training=True)
    return {
        'class_outputs': class_outputs, 'box_outputs': box_outputs,
        'class_targets': sampled['class_targets'],
        'box_targets': tf.stop_gradient(roi_sampler.box_targets(
            rois, sampled['matched_gt_boxes'], sampled['class_targets'])),
        'mask_outputs': mask_outputs, 'mask_targets': masks['mask_targets'],
        'mask_class_targets': masks['mask_class_targets'],
    }

  def _detect(self, feats, proposals, image_shape):
    c = self.detection_config
    class_outputs, box_outputs = self.box_outputs(feats, proposals, training=False)
    detections = maskrcnn_postprocess.generate_detections(
        class_outputs, box_outputs, proposals, image_shape,
        score_threshold=c.score_threshold, pre_nms_top_k=c.pre_nms_top_k,
        nms_iou_threshold=c.nms_iou_threshold, max_detections=c.max_detections,
        box_coding=c.box_coding)
    mask_logits = self.mask_outputs(feats, detections['detection_boxes'],
                                    detections['detection_classes'], training=False)
    detections['detection_masks'] = tf.sigmoid(mask_logits)
    return detections
