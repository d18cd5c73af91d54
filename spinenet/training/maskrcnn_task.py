"""The Mask R-CNN task: model, COCO-style inputs with masks, losses, box and mask metrics."""
import dataclasses
from typing import Callable, Dict, Optional

import tensorflow as tf

from spinenet.data import decoder as decoder_lib
from spinenet.data import detection_parser
from spinenet.data import maskrcnn_parser
from spinenet.training import base_task
from spinenet.training import coco_evaluator
from spinenet.training import detection_model_info
from spinenet.training import detection_records
from spinenet.training import maskrcnn_losses


@dataclasses.dataclass(frozen=True)
class MaskRCNNDataOptions:
  """Where a split's records are and how they are read, augmented and labeled.

  Attributes:
    file_pattern: glob(s) of TFRecord files with instance masks
      (`spinenet-create-coco-tfrecord --include_masks`), comma-separated;
      local or `gs://`.
    global_batch_size: examples per step over all replicas.
    shuffle_buffer: training shuffle buffer.
    cache: keep serialized records in memory (small datasets).
    aug_rand_hflip: random horizontal flip (training).
    aug_scale_min, aug_scale_max: scale jitter range (training).
    rpn_match_threshold, rpn_unmatched_threshold: RPN anchor IoU thresholds
      (positive at or above the first, negative below the second).
    rpn_batch_size_per_im: RPN anchors sampled per image.
    rpn_fg_fraction: largest share of positives among them.
    max_num_instances: ground-truth objects kept per image.
    mask_crop_size: each ground-truth mask cropped to its box at this size:
      in training the model resamples it to its 28 x 28 targets; in
      evaluation without an annotation JSON it is the ground truth of mask
      AP (pasted back into the original image; `[max_num_instances, S, S]`
      float32 per image goes to the host).
    seed: optional seed of file order, shuffling and augmentation.
  """
  file_pattern: str = ''
  global_batch_size: int = 64
  shuffle_buffer: int = 10000
  cache: bool = False
  aug_rand_hflip: bool = True
  aug_scale_min: float = 1.0
  aug_scale_max: float = 1.0
  rpn_match_threshold: float = 0.7
  rpn_unmatched_threshold: float = 0.3
  rpn_batch_size_per_im: int = 256
  rpn_fg_fraction: float = 0.5
  max_num_instances: int = 100
  mask_crop_size: int = 112
  seed: Optional[int] = None

  def __post_init__(self):
    if self.global_batch_size < 1:
      raise ValueError('MaskRCNNDataOptions.global_batch_size must be >= 1. '
                       f'Received: {self.global_batch_size}')
    if not 0.0 <= self.rpn_unmatched_threshold <= self.rpn_match_threshold <= 1.0:
      raise ValueError(
          'MaskRCNNDataOptions: need 0 <= rpn_unmatched_threshold <= '
          'rpn_match_threshold <= 1. Received: rpn_unmatched_threshold='
          f'{self.rpn_unmatched_threshold}, rpn_match_threshold='
          f'{self.rpn_match_threshold}')


class MaskRCNNTask(base_task.Task):
  """Mask R-CNN on COCO-format TFRecords with instance masks.

  The parsers take the input size, levels and anchors from the built model,
  so the RPN targets always match its head. The model samples ROIs and
  builds the second-stage targets itself (`modeling.maskrcnn.MaskRCNN`);
  `build_losses` reads them from its outputs.

  Args:
    model_fn: no-argument callable returning a built `MaskRCNN` (e.g.
      `functools.partial(registry.build_maskrcnn, '49', num_classes=91)`).
    train_data: `MaskRCNNDataOptions` of the training split.
    eval_data: `MaskRCNNDataOptions` of the evaluation split (None: no
      evaluation).
    losses: `maskrcnn_losses.MaskRCNNLossOptions`.
    annotation_json: COCO JSON of the evaluation split (with segmentations):
      the ground truth of the box and mask metrics. Without it the ground
      truth is rebuilt from the evaluation records: boxes, and (with
      `include_mask`) each instance mask cropped to its box at
      `eval_data.mask_crop_size` by the evaluation parser, which the
      evaluator pastes back into the original image.
    label_map: optional dict category id -> name, for per-class metrics and
      drawn evaluation images.
    per_category_metrics: also report AP per category.
    include_mask: train and evaluate the masks (False: Faster R-CNN losses
      and box metrics only).
  """

  loss_names = ('model_loss',) + maskrcnn_losses.MaskRCNNLoss.NAMES

  def __init__(self, model_fn: Callable,
               train_data: MaskRCNNDataOptions = MaskRCNNDataOptions(),
               eval_data: Optional[MaskRCNNDataOptions] = None,
               losses: maskrcnn_losses.MaskRCNNLossOptions = (
                   maskrcnn_losses.MaskRCNNLossOptions()),
               annotation_json: Optional[str] = None,
               label_map: Optional[Dict[int, str]] = None,
               per_category_metrics: bool = False,
               include_mask: bool = True):
    self._model_fn = model_fn
    self.train_data = train_data
    self.eval_data = eval_data
    self.loss_options = losses
    self.annotation_json = annotation_json or None
    self.label_map = label_map
    self.per_category_metrics = per_category_metrics
    self.include_mask = include_mask
    self._loss = maskrcnn_losses.MaskRCNNLoss(losses, include_mask)
    self._info = None

  # === Model ===
  def build_model(self):
    model = self._model_fn()
    for name in ('backbone', 'rpn_head', 'box_head', 'mask_head', 'anchor_config'):
      if not hasattr(model, name):
        raise TypeError(f'MaskRCNNTask.model_fn built a {type(model).__name__} '
                        f'without `{name}`; bind it to build_maskrcnn.')
    self._info = detection_model_info.model_info(
        model, model.box_head.get_config()['num_classes'], 'MaskRCNNTask')
    return model

  @property
  def info(self):
    if self._info is None:
      raise RuntimeError('MaskRCNNTask: call `build_model()` before building '
                         'inputs (they follow the model).')
    return self._info

  # === Inputs ===
  def build_parser(self, training: bool):
    info = self.info
    data = self.train_data if training else self.eval_data
    if training:
      return maskrcnn_parser.MaskRCNNTrainParser(
          info.input_size, min_level=info.min_level, max_level=info.max_level,
          num_scales=info.num_scales, aspect_ratios=info.aspect_ratios,
          anchor_size=info.anchor_size,
          rpn_match_threshold=data.rpn_match_threshold,
          rpn_unmatched_threshold=data.rpn_unmatched_threshold,
          rpn_batch_size_per_im=data.rpn_batch_size_per_im,
          rpn_fg_fraction=data.rpn_fg_fraction,
          aug_rand_hflip=data.aug_rand_hflip, aug_scale_min=data.aug_scale_min,
          aug_scale_max=data.aug_scale_max,
          max_num_instances=data.max_num_instances,
          mask_crop_size=data.mask_crop_size, include_mask=self.include_mask)
    return maskrcnn_parser.MaskRCNNEvalParser(
        info.input_size, max_level=info.max_level,
        max_num_instances=data.max_num_instances,
        mask_size=data.mask_crop_size if self._eval_masks_from_records else 0)

  @property
  def _eval_masks_from_records(self):
    """Mask AP's ground truth comes from the records (no annotation JSON)."""
    return self.include_mask and self.annotation_json is None

  def build_inputs(self, training, input_context=None):
    data = self.train_data if training else self.eval_data
    split = 'train_data' if training else 'eval_data'
    num_classes = self.info.num_classes

    def make_check_fn(source_name):
      def check(features, labels):
        classes = (features['gt_classes'] if training
                   else labels['groundtruths']['classes'])
        detection_parser.check_class_ids({'groundtruths': {'classes': classes}},
                                         num_classes, source_name)
        return features, labels
      return check

    decode_masks = (self.include_mask if training
                    else self._eval_masks_from_records)
    decoder = decoder_lib.DetectionDecoder(decode_image=False,
                                           decode_masks=decode_masks)
    return detection_records.build_records_dataset(
        data, task_name='MaskRCNNTask', options_name='MaskRCNNDataOptions',
        split=split, decode_fn=decoder.decode, build_parser=lambda: self.build_parser(training),
        num_classes=num_classes, training=training, input_context=input_context,
        make_check_fn=make_check_fn)

  # === Losses ===
  def build_losses(self, outputs, labels):
    """This replica's five losses and `model_loss` (`MaskRCNNLoss`)."""
    return self._loss(outputs, labels)

  # === Evaluation ===
  def validation_step(self, inputs_, model):
    """Detections (and box-relative masks) of one evaluation batch.

    The masks stay `[B, N, 28, 28]` over their boxes here; the evaluator
    pastes each into its original image frame on host
    (`coco_evaluator.paste_to_original`, `ops.mask_ops.paste_masks`), so no
    `[B, N, H, W]` tensor of every image size is built on the device.
    """
    features, labels = inputs_
    outputs = model({'images': features['images'],
                     'image_info': features['image_info']}, training=False)
    keys = ['detection_boxes', 'detection_scores', 'detection_classes',
            'num_detections']
    if self.include_mask:
      keys.append('detection_masks')
    result = {k: outputs[k] for k in keys}
    result.update(source_id=labels['source_id'], image_info=labels['image_info'])
    if 'valid' in labels:
      result['valid'] = labels['valid']
    if self.annotation_json is None:
      result['groundtruths'] = labels['groundtruths']
    return result

  def build_evaluator(self):
    return coco_evaluator.CocoEvaluator(
        self.annotation_json, label_map=self.label_map,
        per_category=self.per_category_metrics, include_mask=self.include_mask)
