"""Detection parsers: a decoded example -> `(image, labels)` with static shapes.

`TrainParser` applies the paper's augmentation (random horizontal flip and
scale jitter: resize to a random scale of the output size, random crop, pad)
and labels the anchors; `EvalParser` resizes the image to fit and keeps what
is needed to map detections back to the original image.

Both take the dict of `DetectionDecoder.decode`; given `encoded_image`
instead of `image` (`DetectionDecoder(decode_image=False)`), they decode only
the part of a JPEG they keep.

Class indices are the dataset's category ids (identity map, index 0 is
background; COCO needs `num_classes=91`).
"""
from typing import Optional, Sequence, Union

import tensorflow as tf

from spinenet.data import anchor_labeler as anchor_labeler_lib
from spinenet.data import decoder as decoder_lib
from spinenet.data import preprocess

_Size = Union[int, Sequence[int]]


def check_output_size(output_size, max_level, where):
  """`[height, width]` of an int or pair, checked to be multiples of `2**max_level`."""
  size = ([output_size] * 2 if isinstance(output_size, int)
          else list(output_size))
  stride = 2**max_level
  if len(size) != 2 or any(s <= 0 or s % stride for s in size):
    fix = [max(stride, round(s / stride) * stride) for s in size]
    raise ValueError(
        f'{where}: `output_size` must be one or two positive multiples of '
        f'2**max_level={stride}; try {fix}. Received: '
        f'output_size={output_size}, max_level={max_level}')
  return size


def image_and_size(data):
  """The image (uint8 or encoded bytes) and its int32 `[2]` size."""
  if 'image' in data:
    return data['image'], tf.shape(data['image'])[:2]
  encoded = data['encoded_image']
  return encoded, decoder_lib.image_shape(encoded)


def _image_info(image_size, scaled_size, scale, offset):
  return tf.stack([tf.cast(image_size, tf.float32), scaled_size, scale,
                   offset])


def train_image_info(image_size, window: preprocess.Window):
  """float32 `[4, 2]` `image_info` of a training `preprocess.Window`."""
  return _image_info(image_size,
                     tf.cast(image_size, tf.float32) * window.scale,
                     window.scale, window.offset)


class TrainParser:
  """Training parser: augmentation, resize/crop/pad, normalization, targets.

  Args:
    output_size: int or `(height, width)`, the model input size; multiples
      of `2**max_level`.
    min_level: int. Defaults to 3.
    max_level: int. Defaults to 7.
    num_scales: int. Anchor octave scales per level. Defaults to 3.
    aspect_ratios: floats, anchor width / height. Defaults to
      `(0.5, 1.0, 2.0)`.
    anchor_size: float. Anchor size in strides. Defaults to 4.0.
    match_threshold: float. Defaults to 0.5.
    unmatched_threshold: float. Defaults to 0.5.
    force_match: bool. Each box also claims its best anchor (the Model
      Garden's default). Defaults to True.
    box_coder_weights: optional 4 floats scaling dy, dx, dh, dw.
    aug_rand_hflip: bool. Random horizontal flip. Defaults to True.
    aug_scale_min: float. Smallest random scale of `output_size`.
      Defaults to 1.0 (no jitter).
    aug_scale_max: float. Largest random scale. Defaults to 1.0.
    crowd_as_ignore: bool. If True crowd boxes make overlapping anchors
      ignored; if False they are dropped (the authors' TF1 code's and the
      Model Garden's behaviour, and the default of `RetinaNetTask`'s
      `DataOptions`). Defaults to True.
    dtype: image dtype, `'float32'` or `'bfloat16'`. Defaults to float32.

  Call arguments:
    data: dict of `DetectionDecoder.decode` (with `image` or
      `encoded_image`).
    seed: optional int `[2]`; if given, all random choices are stateless
      functions of it (reproducible augmentation).

  Returns:
    image: float32 `[S_h, S_w, 3]`, `(rgb - mean) / std` with the ImageNet
      mean `(0.485, 0.456, 0.406) * 255` and std `(0.229, 0.224, 0.225) *
      255`; padding is 0.
    labels: dict:
      cls_targets: `{level: int32 [H_l, W_l, A]}`, class index; 0 for
        background and ignored anchors.
      box_targets: `{level: float32 [H_l, W_l, A * 4]}`, dy, dx, dh, dw of
        the matched box; 0 where not positive.
      cls_weights: float32 `[total_anchors]`, 1 for positives and
        negatives, 0 for ignored anchors.
      box_weights: float32 `[total_anchors]`, 1 for positives.
      num_positives: float32 scalar.
      image_info: float32 `[4, 2]`, rows `[original h, w]`, `[scaled h, w]`
        (the whole scaled image, before the crop), `[y_scale, x_scale]`,
        `[y_offset, x_offset]`: original `(y, x)` maps to
        `(y * y_scale - y_offset, x * x_scale - x_offset)` of the output
        (before a flip, which mirrors the covered width). These are the
        values applied (see `preprocess`), within a pixel of the drawn ones.
    The `[total_anchors]` order is `anchors.flatten_multilevel`'s (levels
    ascending, then row, column, anchor).

  Example:
    ```python
    parser = TrainParser(256, anchor_size=3.0, aug_scale_min=0.5,
                         aug_scale_max=2.0)
    image, labels = parser(DetectionDecoder().decode(serialized))
    labels['cls_targets']['3'].shape  # [32, 32, 9]
    ```
  """

  def __init__(self,
               output_size: _Size,
               min_level: int = 3,
               max_level: int = 7,
               num_scales: int = 3,
               aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
               anchor_size: float = 4.0,
               match_threshold: float = 0.5,
               unmatched_threshold: float = 0.5,
               force_match: bool = True,
               box_coder_weights: Optional[Sequence[float]] = None,
               aug_rand_hflip: bool = True,
               aug_scale_min: float = 1.0,
               aug_scale_max: float = 1.0,
               crowd_as_ignore: bool = True,
               dtype: str = 'float32'):
    self.output_size = check_output_size(output_size, max_level, 'TrainParser')
    if not 0 < aug_scale_min <= aug_scale_max:
      raise ValueError(
          'TrainParser: need 0 < `aug_scale_min` <= `aug_scale_max`. '
          f'Received: aug_scale_min={aug_scale_min}, '
          f'aug_scale_max={aug_scale_max}')
    self.labeler = anchor_labeler_lib.AnchorLabeler(
        self.output_size, min_level, max_level, num_scales, aspect_ratios,
        anchor_size, match_threshold, unmatched_threshold, force_match,
        box_coder_weights)
    self._hflip = aug_rand_hflip
    self._scale_range = (aug_scale_min, aug_scale_max)
    self._crowd_as_ignore = crowd_as_ignore
    self._dtype = tf.dtypes.as_dtype(dtype)

  def __call__(self, data, seed=None):
    source, image_size = image_and_size(data)
    window = preprocess.train_window(image_size, self.output_size,
                                     *self._scale_range, self._hflip, seed)
    image = preprocess.resize(
        preprocess.decode_region(source, window.lo, window.hi, window.flip),
        window.size)
    boxes = preprocess.transform_boxes(data['groundtruth_boxes'], image_size,
                                       window)
    keep = preprocess.non_empty(boxes)
    is_crowd = data['groundtruth_is_crowd']
    if not self._crowd_as_ignore:
      keep = tf.logical_and(keep, tf.logical_not(is_crowd))
    boxes = tf.boolean_mask(boxes, keep)
    classes = tf.boolean_mask(data['groundtruth_classes'], keep)
    is_crowd = tf.boolean_mask(is_crowd, keep)

    image = preprocess.normalize_and_pad(image, self.output_size)
    labels = self.labeler.label(
        boxes, classes, is_crowd if self._crowd_as_ignore else None)
    labels['image_info'] = train_image_info(image_size, window)
    return tf.cast(image, self._dtype), labels


def source_id_to_int(source_id):
  """string scalar -> int64: the number for decimal ids (COCO), else a hash."""
  numeric = tf.strings.regex_full_match(source_id, r'-?[0-9]{1,18}')
  return tf.cond(numeric,
                 lambda: tf.strings.to_number(source_id, tf.int64),
                 lambda: tf.strings.to_hash_bucket_fast(source_id, 2**62))


def pad_rows(tensor, length, value):
  """The first `length` rows of `tensor`, padded with `value` to exactly `length`."""
  tensor = tensor[:length]
  pad = length - tf.shape(tensor)[0]
  paddings = [[0, pad]] + [[0, 0]] * (tensor.shape.rank - 1)
  padded = tf.pad(tensor, paddings, constant_values=value)
  return tf.ensure_shape(padded, [length] + tensor.shape.as_list()[1:])


class EvalParser:
  """Evaluation parser: resize to fit, pad, keep what maps detections back.

  Args:
    output_size: int or `(height, width)`, multiples of `2**max_level`.
    max_level: int, only to check `output_size`. Defaults to 7.
    max_num_instances: int. Ground truth is padded (or truncated) to this
      many boxes. Defaults to 100.
    dtype: image dtype. Defaults to float32.

  Call arguments:
    data: dict of `DetectionDecoder.decode`.
    seed: unused (the same signature as `TrainParser`).

  Returns:
    image: float32 `[S_h, S_w, 3]`: the image scaled so it fits (aspect
      kept), normalized as in `TrainParser`, zero-padded bottom and right.
    labels: dict:
      source_id: int64 scalar, the decimal `image/source_id` (COCO image
        id); a 62-bit hash of the string for non-numeric ids.
      image_info: float32 `[4, 2]` as in `TrainParser` (offset 0); divide
        output pixels by row 2 to get original pixels.
      groundtruths: dict, M = `max_num_instances`:
        boxes: float32 `[M, 4]`, ymin, xmin, ymax, xmax in ORIGINAL image
          pixels; rows past `num_detections` are -1.
        classes: int32 `[M]`, dataset category ids; -1 padding.
        is_crowd: bool `[M]`; False padding.
        areas: float32 `[M]`, COCO `area`; -1 padding.
        num_detections: int32 scalar, number of valid rows.
        height, width: int32 scalars, original image size.
  """

  def __init__(self, output_size: _Size, max_level: int = 7,
               max_num_instances: int = 100, dtype: str = 'float32'):
    self.output_size = check_output_size(output_size, max_level, 'EvalParser')
    self._max_instances = max_num_instances
    self._dtype = tf.dtypes.as_dtype(dtype)

  def __call__(self, data, seed=None):
    del seed
    source, image_size = image_and_size(data)
    scale, scaled_size, offset = preprocess.scale_window(
        image_size, self.output_size)
    size = preprocess.visible_size(self.output_size, scaled_size, offset)
    lo, hi, scale, offset = preprocess.source_window(
        image_size, scale, offset, size)
    image = preprocess.resize(preprocess.decode_region(source, lo, hi), size)
    image = preprocess.normalize_and_pad(image, self.output_size)

    m = self._max_instances
    boxes = preprocess.denormalize_boxes(data['groundtruth_boxes'], image_size)
    groundtruths = {
        'boxes': pad_rows(boxes, m, -1.0),
        'classes': pad_rows(data['groundtruth_classes'], m, -1),
        'is_crowd': pad_rows(data['groundtruth_is_crowd'], m, False),
        'areas': pad_rows(data['groundtruth_area'], m, -1.0),
        'num_detections': tf.minimum(tf.shape(boxes)[0], m),
        'height': image_size[0],
        'width': image_size[1],
    }
    labels = {
        'source_id': source_id_to_int(data['source_id']),
        'image_info': _image_info(image_size, scaled_size, scale, offset),
        'groundtruths': groundtruths,
    }
    return tf.cast(image, self._dtype), labels


def check_class_ids(labels, num_classes: int, where: str = 'records'):
  """Fails if `labels` hold a class index outside `[0, num_classes)`.

  Out-of-range indices would otherwise train as background (their one-hot
  row is all zeros). Meant for `pipeline.build_dataset(check_fn=...)`, which
  applies it outside the skip-and-count step, so such a record stops the
  input with this message instead of being skipped.

  Args:
    labels: a `TrainParser` labels dict (`cls_targets`), an `EvalParser`
      one (`groundtruths.classes`, -1 padding), or the features of
      `maskrcnn_parser.MaskRCNNTrainParser` (`gt_classes`, -1 padding),
      batched or not.
    num_classes: the model's number of classes (gin `NUM_CLASSES`).
    where: what the records are called in the message (e.g. the option
      naming the files).

  Returns:
    `labels`, unchanged, after an assertion on the largest class index.
  """
  if 'cls_targets' in labels:
    parts = [tf.reshape(t, [-1]) for t in labels['cls_targets'].values()]
  elif 'gt_classes' in labels:
    parts = [tf.reshape(labels['gt_classes'], [-1])]
  else:
    parts = [tf.reshape(labels['groundtruths']['classes'], [-1])]
  classes = tf.cast(tf.concat(parts, 0), tf.int64)
  largest = tf.reduce_max(tf.concat([classes, [-1]], 0))
  check = tf.debugging.Assert(
      largest < num_classes,
      [f'{where}: a record has category id', largest,
       f'but the model has num_classes={num_classes} (gin NUM_CLASSES); class '
       f'indices must be < {num_classes}. Raise NUM_CLASSES or remap the '
       'category ids.'])
  with tf.control_dependencies([check]):
    return tf.nest.map_structure(tf.identity, labels)
