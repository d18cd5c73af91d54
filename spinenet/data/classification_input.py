"""Image classification input: TFDS or ImageNet-format TFRecords -> batches.

Sources:
  - TFDS: `tfds.load(tfds_name, split=tfds_split, data_dir=tfds_data_dir)`,
    e.g. `imagenet2012` (1000 classes) or `i_naturalist2017` (5089 classes),
    prepared beforehand (`tfds build`). Images are read still encoded.
  - TFRecords of `tf.Example`s in the standard ImageNet format:
    `image/encoded` (JPEG/PNG bytes) and `image/class/label` (int64).
    The files written by the usual ImageNet conversion scripts
    (`imagenet_to_gcs.py`) number classes 1..1000: use `label_offset=-1` for
    a 1000-way model (or 1001 classes, as the Model Garden does).

Preprocessing (the Inception / ResNet recipe the SpineNet paper trains with):
  - training: a random crop of 8%-100% of the image area with aspect ratio in
    [3/4, 4/3] (a center crop when no sample fits), decoded from just that
    region of the JPEG, bilinearly resized to `S x S`; random horizontal
    flip; optional RandAugment (`randaugment.py`).
  - evaluation: the center square of side `crop_fraction * min(H, W)`
    (224/256 of the shorter side by default), resized to `S x S`.
  - then `(x - mean) / std` with the ImageNet statistics (x255), as the
    detection input, and a cast to the image dtype (bfloat16 halves what is
    fed to a TPU).

Batches: `(images [B, S, S, 3], {'label': int32 [B]})`, all shapes static,
from `pipeline.build_dataset` (the input path of every task): evaluation
reads the split once and pads its last batch with zero images whose
`labels['valid']` is False; a record that fails to decode is skipped and
counted.
"""
import dataclasses
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from spinenet.data import decoder as decoder_lib
from spinenet.data import pipeline
from spinenet.data import preprocess
from spinenet.data import randaugment as randaugment_lib


# tf.Example keys of the standard ImageNet TFRecords.
IMAGE_ENCODED = 'image/encoded'
CLASS_LABEL = 'image/class/label'
# How `file_pattern` is named in error messages.
_FILE_PATTERN_NAME = 'ClassificationDataOptions.file_pattern'


@dataclasses.dataclass(frozen=True)
class ClassificationDataOptions:
  """Where one split comes from and how it is augmented.

  Exactly one source: `file_pattern` (TFRecords) if set, else `tfds_name`.

  Attributes:
    tfds_name: TFDS dataset, e.g. 'imagenet2012', 'i_naturalist2017'.
    tfds_split: TFDS split, e.g. 'train', 'validation', 'train[:90%]'.
    tfds_data_dir: TFDS data directory (None: TFDS's default).
    file_pattern: glob(s) of TFRecord files, comma-separated.
    label_offset: added to every label (-1 for 1..1000 ImageNet TFRecords).
    global_batch_size: examples per step over all replicas.
    shuffle_buffer: training shuffle buffer, in examples.
    cache: keep the encoded records in memory (small datasets).
    aug_rand_hflip: random horizontal flip (training).
    aug_crop_area_range: random crop area as a fraction of the image.
    aug_crop_aspect_ratio_range: random crop width / height.
    randaugment_num_layers: RandAugment ops per image (0: off).
    randaugment_magnitude: RandAugment magnitude, 0..10.
    eval_crop_fraction: evaluation center crop side / shorter image side.
    seed: seed of the file order, shuffling and augmentation (None: random,
      and records read in parallel in any order).
  """
  tfds_name: str = ''
  tfds_split: str = 'train'
  tfds_data_dir: Optional[str] = None
  file_pattern: str = ''
  label_offset: int = 0
  global_batch_size: int = 256
  shuffle_buffer: int = 10000
  cache: bool = False
  aug_rand_hflip: bool = True
  aug_crop_area_range: Tuple[float, float] = (0.08, 1.0)
  aug_crop_aspect_ratio_range: Tuple[float, float] = (3 / 4, 4 / 3)
  randaugment_num_layers: int = 0
  randaugment_magnitude: float = 10.0
  eval_crop_fraction: float = 0.875
  seed: Optional[int] = None

  def __post_init__(self):
    if not self.file_pattern and not self.tfds_name:
      raise ValueError(
          'ClassificationDataOptions needs a source: set `tfds_name` (e.g. '
          "'imagenet2012') or `file_pattern` (TFRecords). Received neither.")
    if self.global_batch_size < 1:
      raise ValueError('`global_batch_size` must be >= 1. Received: '
                       f'global_batch_size={self.global_batch_size}')
    lo, hi = self.aug_crop_area_range
    if not 0 < lo <= hi <= 1:
      raise ValueError('`aug_crop_area_range` must satisfy 0 < min <= max <= 1. '
                       f'Received: {tuple(self.aug_crop_area_range)}')
    if not 0 < self.eval_crop_fraction <= 1:
      raise ValueError('`eval_crop_fraction` must be in (0, 1]. Received: '
                       f'{self.eval_crop_fraction}')
    if not 0 <= self.randaugment_magnitude <= randaugment_lib.MAX_MAGNITUDE:
      raise ValueError(
          f'`randaugment_magnitude` must be in [0, '
          f'{randaugment_lib.MAX_MAGNITUDE}]. Received: '
          f'{self.randaugment_magnitude}')

  @property
  def source(self) -> str:
    """'tfrecord' or 'tfds'."""
    return 'tfrecord' if self.file_pattern else 'tfds'


# === Decoding ===
def decode_tf_example(serialized):
  """Serialized ImageNet-format `tf.Example` -> `{'image': string, 'label': int32}`."""
  features = tf.io.parse_single_example(serialized, {
      IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
      CLASS_LABEL: tf.io.FixedLenFeature([], tf.int64),
  })
  return {'image': features[IMAGE_ENCODED],
          'label': tf.cast(features[CLASS_LABEL], tf.int32)}


def build_example(encoded_image: bytes, label: int) -> tf.train.Example:
  """An ImageNet-format `tf.train.Example` (what `decode_tf_example` reads)."""
  return tf.train.Example(features=tf.train.Features(feature={
      IMAGE_ENCODED: tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[encoded_image])),
      CLASS_LABEL: tf.train.Feature(
          int64_list=tf.train.Int64List(value=[int(label)])),
  }))


# === Crop windows ===
def random_crop_window(image_size, seed, area_range=(0.08, 1.0),
                       aspect_ratio_range=(3 / 4, 4 / 3), max_attempts=10):
  """A random crop window (Inception-style), or the center crop if none fits.

  Args:
    image_size: int32 `[2]`, `(height, width)`.
    seed: int `[2]`, stateless seed.
    area_range: crop area as a fraction of the image area.
    aspect_ratio_range: crop width / height.
    max_attempts: samples tried before falling back to the center crop.

  Returns:
    offset: int32 `[2]`, `(y, x)` of the top-left corner.
    size: int32 `[2]`, `(height, width)` of the window.
  """
  image_size = tf.cast(image_size, tf.int32)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([image_size, [3]], 0), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed, min_object_covered=0.1,
      aspect_ratio_range=list(aspect_ratio_range), area_range=list(area_range),
      max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
  offset, size = begin[:2], size[:2]
  # The sampler returns the whole image when no attempt fits.
  failed = tf.reduce_all(tf.equal(size, image_size))
  center_offset, center_size = center_crop_window(image_size, 0.875)
  return (tf.where(failed, center_offset, offset),
          tf.where(failed, center_size, size))


def center_crop_window(image_size, crop_fraction=0.875):
  """The center square of side `crop_fraction * min(height, width)`.

  Args:
    image_size: int32 `[2]`, `(height, width)`.
    crop_fraction: float in (0, 1].

  Returns:
    offset: int32 `[2]`; size: int32 `[2]` (both sides equal, >= 1).
  """
  image_size = tf.cast(image_size, tf.int32)
  side = tf.cast(crop_fraction * tf.cast(tf.reduce_min(image_size), tf.float32),
                 tf.int32)
  side = tf.maximum(side, 1)
  offset = (image_size - side) // 2  # as the exported models crop
  return offset, tf.stack([side, side])


# === Parsing ===
class ClassificationParser:
  """Decoded example -> `(image, {'label': label})` for training or evaluation.

  Args:
    output_size: int `S` or `(H, W)`, the model input size.
    training: random crop, flip and RandAugment; else center crop.
    options: `ClassificationDataOptions` (augmentation and label offset).
    dtype: dtype of the output image (e.g. tf.bfloat16).

  Call arguments:
    data: dict with `image` (string scalar, encoded JPEG/PNG/GIF/BMP, or
      uint8 `[H, W, 3]`) and `label` (int scalar).
    seed: int `[2]`, stateless seed of this example's augmentation.

  Returns:
    image: `dtype` `[H, W, 3]`, normalized; labels: `{'label': int32 []}`.
  """

  def __init__(self, output_size, training: bool,
               options: ClassificationDataOptions, dtype=tf.float32):
    if isinstance(output_size, int):
      output_size = (output_size, output_size)
    self.output_size = tuple(int(s) for s in output_size)
    self.training = training
    self.options = options
    self.dtype = tf.dtypes.as_dtype(dtype)

  def __call__(self, data, seed):
    o = self.options
    image = data['image']
    if image.dtype == tf.string:
      image_size = decoder_lib.image_shape(image)
    else:
      image_size = tf.shape(image)[:2]
    seed_crop, seed_flip, seed_augment = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    if self.training:
      offset, size = random_crop_window(
          image_size, seed_crop, o.aug_crop_area_range,
          o.aug_crop_aspect_ratio_range)
    else:
      offset, size = center_crop_window(image_size, o.eval_crop_fraction)
    region = preprocess.decode_region(image, offset, offset + size)
    pixels = preprocess.resize(region, self.output_size)
    if self.training and o.aug_rand_hflip:
      flip = tf.random.stateless_uniform([], seed_flip) < 0.5
      pixels = tf.cond(flip, lambda: tf.reverse(pixels, [1]), lambda: pixels)
    if self.training and o.randaugment_num_layers > 0:
      as_uint8 = tf.cast(tf.clip_by_value(tf.round(pixels), 0, 255), tf.uint8)
      as_uint8 = randaugment_lib.randaugment(
          as_uint8, seed_augment, o.randaugment_num_layers,
          o.randaugment_magnitude)
      pixels = tf.cast(as_uint8, tf.float32)
    pixels = preprocess.normalize_image(pixels)
    pixels = tf.ensure_shape(pixels, [*self.output_size, 3])
    label = tf.cast(data['label'], tf.int32) + o.label_offset
    return tf.cast(pixels, self.dtype), {'label': label}


# === Sources ===
def _tfds_examples(options, training, input_context):
  """This pipeline's TFDS examples, `{'image': encoded string, 'label': int64, ...}`.

  TFDS shards the files by `input_context` and shuffles them when training;
  the images stay encoded.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  read_config = tfds.ReadConfig(
      input_context=input_context, shuffle_seed=options.seed,
      interleave_cycle_length=16, skip_prefetch=True)
  try:
    return tfds.load(
        options.tfds_name, split=options.tfds_split,
        data_dir=options.tfds_data_dir, download=False,
        shuffle_files=training, read_config=read_config,
        decoders={'image': tfds.decode.SkipDecoding()})
  except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as e:
    raise ValueError(
        f'TFDS dataset {options.tfds_name!r} (split {options.tfds_split!r}) '
        f'is not available in data_dir={options.tfds_data_dir!r}: {e}. '
        f'Prepare it first, e.g. `tfds build {options.tfds_name} --data_dir='
        f'{options.tfds_data_dir or "~/tensorflow_datasets"}` (imagenet2012 '
        'needs the ILSVRC2012 tar files in <data_dir>/downloads/manual), or '
        'read TFRecords with `file_pattern`.') from None


def decode_tfds_example(example):
  """A TFDS example -> `{'image': encoded string, 'label': int}`."""
  return {'image': example['image'], 'label': example['label']}


def _source(options, training, input_context):
  """`(source, decode_fn, source_name)` for `pipeline.build_dataset`."""
  if options.source == 'tfrecord':
    return options.file_pattern, decode_tf_example, _FILE_PATTERN_NAME
  return (_tfds_examples(options, training, input_context),
          decode_tfds_example, f'TFDS {options.tfds_name}:{options.tfds_split}')


def peek_labels(options: ClassificationDataOptions, count: int = 64):
  """The first `count` labels of the source (label offset applied), NumPy int."""
  if options.source == 'tfrecord':
    files = pipeline.list_files(options.file_pattern, _FILE_PATTERN_NAME)
    examples = pipeline.read_records(files, training=False)
    decode = decode_tf_example
  else:
    examples = _tfds_examples(options, False, None)
    decode = decode_tfds_example
  dataset = examples.take(count).map(decode)
  labels = [int(ex['label']) for ex in dataset.as_numpy_iterator()]
  return np.asarray(labels, np.int64) + options.label_offset


def check_labels(options: ClassificationDataOptions, num_classes: int,
                 count: int = 64):
  """Raises a ValueError if the first labels fall outside `[0, num_classes)`."""
  labels = peek_labels(options, count)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    where = options.file_pattern or f'TFDS {options.tfds_name}:{options.tfds_split}'
    hint = ''
    if labels.min() >= 1 and labels.max() == num_classes:
      hint = (' Labels look 1-based (ImageNet TFRecords number classes '
              '1..1000): set `label_offset = -1`, or use num_classes + 1 '
              'classes.')
    raise ValueError(
        f'{where}: labels (after label_offset={options.label_offset}) range '
        f'over [{labels.min()}, {labels.max()}] in the first {labels.size} '
        f'records; the model has num_classes={num_classes}, so they must be '
        f'in [0, {num_classes - 1}].' + hint)


def build_dataset(options: ClassificationDataOptions,
                  output_size,
                  training: bool,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  dtype=tf.float32,
                  skip_counter: Optional[tf.Variable] = None) -> tf.data.Dataset:
  """One input pipeline's batches of preprocessed images and labels.

  The options pick the source (TFRecord files, or TFDS examples already
  sharded by TFDS), `decode_tf_example` or `decode_tfds_example` and a
  `ClassificationParser`; `pipeline.build_dataset` does the rest.

  Args:
    options: `ClassificationDataOptions` of the split.
    output_size: int or `(H, W)`, the model input size.
    training: shuffle, repeat, augment, drop the last partial batch; else
      one ordered pass with a padded last batch and `labels['valid']`.
    input_context: `tf.distribute.InputContext` (None: one pipeline); the
      data is sharded by pipeline and batched per replica.
    dtype: image dtype (tf.float32 or tf.bfloat16).
    skip_counter: optional int64 `tf.Variable` counting skipped records.

  Returns:
    `tf.data.Dataset` of `(images [B, H, W, 3] dtype, {'label': int32 [B]})`
    (+ `'valid'`: bool `[B]` when not training), `B` the per-replica batch.

  Example:
    ```python
    options = ClassificationDataOptions(tfds_name='imagenet2012',
                                        tfds_split='validation',
                                        global_batch_size=1024)
    ds = build_dataset(options, 224, training=False)
    images, labels = next(iter(ds))  # [1024, 224, 224, 3], labels['label']
    ```
  """
  source, decode_fn, source_name = _source(options, training, input_context)
  parser = ClassificationParser(output_size, training, options, dtype)
  return pipeline.build_dataset(
      source, decode_fn, parser, options.global_batch_size, training,
      input_context, shuffle_buffer=options.shuffle_buffer,
      cache=options.cache, seed=options.seed, skip_counter=skip_counter,
      source_name=source_name)
