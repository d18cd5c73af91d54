"""Mask R-CNN parsers: a decoded example -> `(features, labels)`, static shapes.

`MaskRCNNTrainParser` applies the RetinaNet parser's augmentation (the same
`preprocess.train_window`: random horizontal flip, scale jitter, random
crop, pad) to the image, the boxes and the instance masks, labels the RPN
anchors (`spinenet.ops.rpn_targets`) and hands the model its ground truth
(boxes, classes and each instance mask cropped to its box), padded to a
fixed number of instances: the model samples its RoIs and builds the box
and mask head targets itself.

`MaskRCNNEvalParser` is `detection_parser.EvalParser` with its image and
`image_info` as the features; with `mask_size` its ground truth also holds
each instance mask over its box (mask AP without the annotation JSON).

Input: the dict of `decoder.DetectionDecoder(decode_masks=True).decode`
(`image` or `encoded_image`, and `groundtruth_instance_masks`).
"""
from typing import Optional, Sequence

import tensorflow as tf

from spinenet.data import anchor_labeler as anchor_labeler_lib
from spinenet.data import detection_parser
from spinenet.data import preprocess
from spinenet.ops import rpn_targets


class MaskRCNNTrainParser:
  """Training parser of Mask R-CNN.

  Args:
    output_size: int or `(height, width)`, the model input size; multiples
      of `2**max_level`.
    min_level: int, smallest anchor level.
    max_level: int, largest anchor level.
    num_scales: int, anchor octave scales per level (the SpineNet Mask R-CNN
      recipe: 1).
    aspect_ratios: anchor widths / heights (recipe: `(0.5, 1.0, 2.0)`).
    anchor_size: anchor size in strides (recipe: 3).
    rpn_match_threshold: IoU at or above which an anchor is positive.
    rpn_unmatched_threshold: IoU below which an anchor is negative.
    rpn_batch_size_per_im: anchors sampled per image for the RPN loss.
    rpn_fg_fraction: largest share of positives among them.
    aug_rand_hflip: random horizontal flip.
    aug_scale_min: smallest random scale of `output_size` (1.0: no jitter).
    aug_scale_max: largest random scale.
    max_num_instances: ground-truth rows in the output (more are cut).
    mask_crop_size: side of the per-instance mask crops.
    include_mask: if False, no masks are read and there is no `gt_masks`.
    dtype: image dtype, `'float32'` or `'bfloat16'`.

  Crowd annotations are left out (as the Model Garden's
  `skip_crowd_during_training` and the authors' TF1 code do); so are boxes
  that the crop leaves empty.

  Call arguments:
    data: dict of `DetectionDecoder(decode_masks=include_mask).decode`.
    seed: optional int `[2]`; with it, augmentation and the RPN anchor
      sampling are stateless functions of it.

  Returns:
    features: dict, M = `max_num_instances`:
      images: `[S_h, S_w, 3]` of `dtype`, normalized as the RetinaNet
        parser does (ImageNet mean/std x 255, zero padding).
      image_info: float32 `[4, 2]`, as `detection_parser.TrainParser`'s.
      gt_boxes: float32 `[M, 4]`, ymin, xmin, ymax, xmax in model-input
        pixels (after jitter and flip); padding rows -1.
      gt_classes: int32 `[M]`, category ids; padding -1.
      gt_masks: float32 `[M, mask_crop_size, mask_crop_size]` in [0, 1]:
        each instance mask over its gt box, resampled bilinearly (flipped
        with the image); padding 0.
    labels: dict:
      rpn_score_targets: `{level: int32 [H_l, W_l, A]}`: 1 sampled
        positive, 0 sampled negative, -1 not sampled or ignored.
      rpn_box_targets: `{level: float32 [H_l, W_l, A * 4]}`, dy, dx, dh, dw
        (`box_ops.encode_boxes`, weights 1) of every positive anchor's box,
        0 elsewhere.
      image_info: float32 `[4, 2]`, the same as in `features`.
    Levels are `'min_level'..'max_level'`, `A = num_scales *
    len(aspect_ratios)`.

  Example:
    ```python
    parser = MaskRCNNTrainParser(256, 3, 7, 1, (0.5, 1.0, 2.0), 3.0,
                                 aug_scale_min=0.5, aug_scale_max=2.0)
    decoder = DetectionDecoder(decode_image=False, decode_masks=True)
    features, labels = parser(decoder.decode(serialized))
    features['gt_masks'].shape  # [100, 112, 112]
    ```
  """

  def __init__(self,
               output_size,
               min_level: int = 3,
               max_level: int = 7,
               num_scales: int = 1,
               aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
               anchor_size: float = 3.0,
               rpn_match_threshold: float = 0.7,
               rpn_unmatched_threshold: float = 0.3,
               rpn_batch_size_per_im: int = 256,
               rpn_fg_fraction: float = 0.5,
               aug_rand_hflip: bool = True,
               aug_scale_min: float = 1.0,
               aug_scale_max: float = 1.0,
               max_num_instances: int = 100,
               mask_crop_size: int = 112,
               include_mask: bool = True,
               dtype: str = 'float32'):
    self.output_size = detection_parser.check_output_size(
        output_size, max_level, 'MaskRCNNTrainParser')
    if not 0 < aug_scale_min <= aug_scale_max:
      raise ValueError(
          'MaskRCNNTrainParser: need 0 < `aug_scale_min` <= `aug_scale_max`. '
          f'Received: aug_scale_min={aug_scale_min}, '
          f'aug_scale_max={aug_scale_max}')
    if rpn_unmatched_threshold > rpn_match_threshold:
      raise ValueError(
          'MaskRCNNTrainParser: `rpn_unmatched_threshold` must be <= '
          f'`rpn_match_threshold`. Received: {rpn_unmatched_threshold} > '
          f'{rpn_match_threshold}')
    # The anchors (computed once) and their per-level layout.
    self.anchors = anchor_labeler_lib.AnchorLabeler(
        self.output_size, min_level, max_level, num_scales, aspect_ratios,
        anchor_size)
    self._rpn_args = dict(match_threshold=rpn_match_threshold,
                          unmatched_threshold=rpn_unmatched_threshold,
                          batch_size_per_im=rpn_batch_size_per_im,
                          fg_fraction=rpn_fg_fraction)
    self._hflip = aug_rand_hflip
    self._scale_range = (aug_scale_min, aug_scale_max)
    self._max_instances = max_num_instances
    self._mask_crop_size = mask_crop_size
    self._include_mask = include_mask
    self._dtype = tf.dtypes.as_dtype(dtype)

  def __call__(self, data, seed=None):
    seed_window = seed_rpn = None
    if seed is not None:
      seed_window, seed_rpn = tf.unstack(
          tf.random.experimental.stateless_split(seed, 2))
    source, image_size = detection_parser.image_and_size(data)
    window = preprocess.train_window(image_size, self.output_size,
                                     *self._scale_range, self._hflip,
                                     seed_window)
    image = preprocess.resize(
        preprocess.decode_region(source, window.lo, window.hi, window.flip),
        window.size)
    image = preprocess.normalize_and_pad(image, self.output_size)

    boxes = preprocess.transform_boxes(data['groundtruth_boxes'], image_size,
                                       window)
    keep = tf.logical_and(preprocess.non_empty(boxes),
                          tf.logical_not(data['groundtruth_is_crowd']))
    boxes = tf.boolean_mask(boxes, keep)
    classes = tf.boolean_mask(data['groundtruth_classes'], keep)

    rpn = rpn_targets.assign_rpn_targets(
        tf.constant(self.anchors.anchors), boxes, seed=seed_rpn,
        **self._rpn_args)
    image_info = detection_parser.train_image_info(image_size, window)
    labels = {
        'rpn_score_targets': self.anchors.unpack(rpn['score_targets']),
        'rpn_box_targets': self.anchors.unpack(rpn['box_targets'], 4),
        'image_info': image_info,
    }

    m = self._max_instances
    features = {
        'images': tf.cast(image, self._dtype),
        'image_info': image_info,
        'gt_boxes': detection_parser.pad_rows(boxes, m, -1.0),
        'gt_classes': detection_parser.pad_rows(
            tf.cast(classes, tf.int32), m, -1),
    }
    if self._include_mask:
      masks = tf.boolean_mask(data['groundtruth_instance_masks'], keep)
      # Only the first M instances are kept: crop no more than those.
      masks, kept_boxes = masks[:m], boxes[:m]
      crops = preprocess.crop_masks_to_boxes(
          tf.cast(masks, tf.float32), kept_boxes, window, self._mask_crop_size)
      features['gt_masks'] = detection_parser.pad_rows(crops, m, 0.0)
    return features, labels


class MaskRCNNEvalParser:
  """Evaluation parser of Mask R-CNN: `detection_parser.EvalParser`'s output
  with the image and `image_info` as the features, and optionally each
  ground-truth mask over its box.

  Args:
    output_size: int or `(height, width)`, multiples of `2**max_level`.
    max_level: int, only to check `output_size`.
    max_num_instances: ground-truth rows of `labels['groundtruths']`.
    dtype: image dtype.
    mask_size: int; if > 0, `groundtruths['masks']` holds each instance mask
      cropped to its box at `mask_size x mask_size` (the ground truth of mask
      AP without the annotation JSON; needs `groundtruth_instance_masks` from
      `DetectionDecoder(decode_masks=True)`). 0: no masks.

  Returns of `__call__(data, seed=None)`:
    features: dict with `images` (`[S_h, S_w, 3]`, resized to fit, padded)
      and `image_info` (float32 `[4, 2]`).
    labels: dict with `image_info`, `source_id` and `groundtruths` (boxes in
      original pixels, ...), as `detection_parser.EvalParser`'s labels; with
      `mask_size`, also `groundtruths['masks']`: float32 `[M, mask_size,
      mask_size]` in [0, 1], M = `max_num_instances`: row i is instance i's
      mask (original image frame) sampled bilinearly over row i of
      `groundtruths['boxes']` (ymin, xmin, ymax, xmax in ORIGINAL pixels;
      `preprocess.crop_masks_to_pixel_boxes`, the inverse of
      `ops.mask_ops.paste_masks`); the rows are the boxes' rows (every
      instance, crowd included, in record order, the first M); padding 0.
  """

  def __init__(self, output_size, max_level: int = 7,
               max_num_instances: int = 100, dtype: str = 'float32',
               mask_size: int = 0):
    if mask_size < 0:
      raise ValueError('MaskRCNNEvalParser: `mask_size` must be >= 0 (0: no '
                       f'ground-truth masks). Received: {mask_size}')
    self._parser = detection_parser.EvalParser(
        output_size, max_level, max_num_instances, dtype)
    self.output_size = self._parser.output_size
    self._max_instances = max_num_instances
    self._mask_size = mask_size

  def __call__(self, data, seed: Optional[tf.Tensor] = None):
    image, labels = self._parser(data, seed)
    if self._mask_size:
      if 'groundtruth_instance_masks' not in data:
        raise ValueError(
            'MaskRCNNEvalParser(mask_size>0): the decoded example has no '
            '`groundtruth_instance_masks`; decode with '
            'DetectionDecoder(decode_masks=True).')
      m = self._max_instances
      gt = labels['groundtruths']
      # EvalParser keeps every instance in order: its first M boxes are the
      # first M masks' boxes.
      masks = tf.cast(data['groundtruth_instance_masks'][:m], tf.float32)
      boxes = gt['boxes'][:tf.shape(masks)[0]]
      crops = preprocess.crop_masks_to_pixel_boxes(masks, boxes,
                                                   self._mask_size)
      gt['masks'] = detection_parser.pad_rows(crops, m, 0.0)
    return {'images': image, 'image_info': labels['image_info']}, labels
