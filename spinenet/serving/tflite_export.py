"""Exports a RetinaNet or classifier as a TFLite flatbuffer (float, float16, int8).

`export_tflite(model_fn, export_dir, quantization=...)` writes
`export_dir/model_<float32|float16|int8>.tflite` and `export_dir/labels.txt`.
The network is frozen and its batch norms folded (`inference_graph.freeze`),
then converted by `tf.lite.TFLiteConverter`:

* `quantization='none'`: float32 weights and activations.
* `'float16'`: float16 weights (half the file), float32 compute (the
  interpreter dequantizes them once; GPU delegates may run in float16).
* `'int8'`: full-integer post-training quantization: uint8 image input,
  int8 weights (per channel) and activations, every network op an integer
  builtin except `TFLiteOptions.int8_float_ops` (hard swish by default: no
  int8 XNNPACK kernel here); activation ranges are calibrated on
  representative images (training records, prepared as the evaluation
  prepares them); the detection post-processing stays float32.

The contract of the file (docs/tflite.md; the constants below):

* one input `images`, `[1, H, W, 3]` RGB pixel values 0-255, the model's
  input size: float32 (`none`, `float16`) or uint8 with scale 1, zero
  point 0 (`int8`). Resizing is the caller's: scale to fit `H x W` keeping
  the aspect ratio and pad bottom and right with `PAD_PIXEL` (what the
  evaluation did), or stretch. Mean/std normalization is inside the file.
* detection: box decoding and NMS in the file, four outputs in the order of
  the TFLite detection convention (that of `TFLite_Detection_PostProcess`):
  0 `detection_boxes` float32 `[1, N, 4]` ymin, xmin, ymax, xmax normalized
  to the input's height and width (0-1, clipped to the input),
  1 `detection_classes` float32 `[1, N]` label index (line of `labels.txt`:
  model class index - 1, the background dropped), 2 `detection_scores`
  float32 `[1, N]` descending, 3 `num_detections` float32 `[1]`; rows past
  `num_detections` are 0. By default the post-processing is the
  SavedModel's (per-class NMS) built from TFLite builtins
  (`per_class_detections`); `TFLiteOptions.nms` selects the op instead.
  With `raw_outputs`, two more follow: `raw_box_deltas` `[1, A, 4]` (dy, dx,
  dh, dw per anchor, levels concatenated) and `raw_class_logits` `[1, A, K]`.
* classification: `probabilities` float32 `[1, K]` (softmax), then
  `logits` with `raw_outputs`.

A JSON description (`METADATA_NAME` entry of the flatbuffer's metadata:
task, input size and type, class index -> category id, names, post-processing
values) travels inside the file; `tflite_runtime` reads it.
"""
import dataclasses
import json
import os
import tempfile
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

import spinenet
from spinenet.data import tf_example
from spinenet.ops import anchors as anchors_lib
from spinenet.ops import box_ops
from spinenet.serving import export_lib
from spinenet.serving import export_module
from spinenet.serving import inference_graph
from spinenet.serving import preprocessing
from spinenet.serving import tflite_runtime

from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=g-direct-tensorflow-import
from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-direct-tensorflow-import

QUANTIZATIONS = ('none', 'float16', 'int8')
NMS_MODES = ('per_class', 'fast', 'regular')
FILE_NAMES = {'none': 'model_float32.tflite', 'float16': 'model_float16.tflite',
              'int8': 'model_int8.tflite'}
LABELS_FILE = 'labels.txt'
METADATA_NAME = tflite_runtime.METADATA_NAME

INPUT_NAME = 'images'
DETECTION_BOXES = 'detection_boxes'
DETECTION_CLASSES = 'detection_classes'
DETECTION_SCORES = 'detection_scores'
NUM_DETECTIONS = 'num_detections'
# The TFLite detection convention's order (TFLite_Detection_PostProcess).
DETECTION_OUTPUTS = (DETECTION_BOXES, DETECTION_CLASSES, DETECTION_SCORES, NUM_DETECTIONS)
RAW_BOX_DELTAS = 'raw_box_deltas'
RAW_CLASS_LOGITS = 'raw_class_logits'
PROBABILITIES = 'probabilities'
LOGITS = 'logits'

POSTPROCESS_OP = 'TFLite_Detection_PostProcess'
# Ops under this name scope stay float32 in the int8 file (box decoding and
# NMS need pixel precision; `convert` keeps them out of quantization).
POSTPROCESS_SCOPE = 'spinenet_postprocess'
SIGNATURE_KEY = 'serving_default'
PAD_PIXEL = tflite_runtime.PAD_PIXEL


@dataclasses.dataclass(frozen=True)
class TFLiteOptions:
  """How the TFLite file is made.

  Attributes:
    quantization: one of `QUANTIZATIONS`.
    calibration_images: int8: representative images read for calibration.
    nms: detection post-processing, one of `NMS_MODES`:
      'per_class' (default): the SavedModel's post-processing built from
      TFLite builtins (TOPK_V2, GATHER, NON_MAX_SUPPRESSION_V5; per-class NMS
      by offsetting each class's boxes to its own region of the plane), so
      the file's detections are the SavedModel's; 'fast': the
      `TFLite_Detection_PostProcess` op's class-agnostic NMS (each anchor
      keeps its best class; other detections than the SavedModel's);
      'regular': that op's per-class NMS (the LiteRT 2.3.0 interpreter of
      this environment drops every detection of label 2 in it, see
      docs/tflite.md).
    raw_outputs: also output the network's raw outputs (parity checks;
      standard detection APIs expect exactly the four detection outputs).
    int8_float_ops: int8: TFLite builtin op names left float32 between a
      DEQUANTIZE and a QUANTIZE. Default HARD_SWISH: the XNNPACK of this
      LiteRT has no int8 hard swish, so int8 HARD_SWISH ops run as builtin
      kernels and cut the XNNPACK graph into dozens of partitions (58 for
      mobile-49S, int8 ~3x slower than float); float hard swish and the
      conversions are delegated. The others are post-processing op types:
      with them float the levels are concatenated in float32 (each level's
      head output dequantized with its own scale) and top-k ranks float
      logits, not int8 ones with ties. `()` quantizes every op outside the
      post-processing scope.
  """
  quantization: str = 'none'
  calibration_images: int = 200
  nms: str = 'per_class'
  raw_outputs: bool = False
  int8_float_ops: Tuple[str, ...] = (
      'HARD_SWISH', 'TOPK_V2', 'UNPACK', 'PACK', 'GATHER', 'EXP', 'MINIMUM', 'MAXIMUM',
      'SELECT_V2', 'FLOOR_DIV', 'CONCATENATION', 'STRIDED_SLICE')

  def __post_init__(self):
    if self.quantization not in QUANTIZATIONS:
      raise ValueError(f'`quantization` must be one of {QUANTIZATIONS}. Received: '
                       f'quantization={self.quantization!r}')
    if self.nms not in NMS_MODES:
      raise ValueError(f'`nms` must be one of {NMS_MODES}. Received: nms={self.nms!r}')
    if self.calibration_images < 1:
      raise ValueError('`calibration_images` must be >= 1. Received: '
                       f'calibration_images={self.calibration_images}')


@dataclasses.dataclass(frozen=True)
class TFLiteExportResult:
  """Where a TFLite export went and what it holds."""
  path: str
  labels_path: str
  info: dict


# === Graph ===
def center_size_anchors(anchors, input_size):
  """Corner anchors in pixels -> normalized `ycenter, xcenter, height, width`.

  Args:
    anchors: float32 `[N, 4]` ymin, xmin, ymax, xmax in pixels of the input.
    input_size: `(H, W)` of the input.

  Returns:
    float32 `[N, 4]`, the layout `TFLite_Detection_PostProcess` reads, in
    units of the input's height (y, h) and width (x, w).
  """
  anchors = np.asarray(anchors, np.float64)
  height, width = float(input_size[0]), float(input_size[1])
  return np.stack([(anchors[:, 0] + anchors[:, 2]) / (2 * height),
                   (anchors[:, 1] + anchors[:, 3]) / (2 * width),
                   (anchors[:, 2] - anchors[:, 0]) / height,
                   (anchors[:, 3] - anchors[:, 1]) / width], axis=1).astype(np.float32)


# Smallest encoded log-size: boxes clipped to (almost) nothing keep e^-6 of
# their anchor (a degenerate box, as the zero-area box of the SavedModel).
MIN_LOG_SIZE = -6.0


def clipped_encodings(deltas, anchors, input_size):
  """Re-encodes the decoded boxes clipped to the input, against the same anchors.

  The SavedModel clips boxes to the image before NMS; the TFLite op decodes
  and suppresses without clipping. Decoding here (`box_ops.decode_boxes`),
  clipping to the input and encoding back makes the op decode exactly the
  clipped boxes, so its NMS compares the boxes ours compares.

  Args:
    deltas: float32 `[1, N, 4]` dy, dx, dh, dw.
    anchors: float32 `[1, N, 4]` ymin, xmin, ymax, xmax in input pixels.
    input_size: `(H, W)`.

  Returns:
    float32 `[1, N, 4]`, encodings of the clipped boxes (log-sizes at least
    `MIN_LOG_SIZE`).
  """
  boxes = box_ops.clip_boxes(box_ops.decode_boxes(deltas, anchors),
                             [float(input_size[0]), float(input_size[1])])
  encoded = box_ops.encode_boxes(boxes, anchors)
  return tf.concat([encoded[..., :2], tf.maximum(encoded[..., 2:], MIN_LOG_SIZE)], -1)


def postprocess_attributes(num_classes: int, detection_config, use_regular_nms: bool) -> str:
  """The `experimental_implements` text that the converter turns into the op.

  Args:
    num_classes: reported classes (the model's, background excluded).
    detection_config: `retinanet.DetectionConfig` (threshold, IoU, count).
    use_regular_nms: per-class NMS (else class-agnostic).

  Returns:
    A NodeDef text: `TFLite_Detection_PostProcess` with its attributes.
  """
  c = detection_config
  ints = {'max_detections': c.max_detections, 'max_classes_per_detection': 1,
          'detections_per_class': c.max_detections, 'num_classes': num_classes}
  floats = {'nms_score_threshold': c.score_threshold,
            'nms_iou_threshold': c.nms_iou_threshold,
            'y_scale': 1.0, 'x_scale': 1.0, 'h_scale': 1.0, 'w_scale': 1.0}
  attrs = [f'attr {{ key: "{k}" value {{ i: {int(v)} }} }}' for k, v in ints.items()]
  attrs += [f'attr {{ key: "{k}" value {{ f: {float(v)!r} }} }}' for k, v in floats.items()]
  attrs.append('attr { key: "use_regular_nms" value { b: %s } }'
               % str(bool(use_regular_nms)).lower())
  return ' '.join([f'name: "{POSTPROCESS_OP}"', *attrs])


def _postprocess_placeholder(attributes: str):
  """A function the converter replaces by the op (its body is never run)."""
  @tf.function(experimental_implements=attributes, autograph=False)
  def placeholder(box_deltas, class_scores, anchors):
    del box_deltas, class_scores, anchors
    return tuple(tf.constant(0.0, name=n) for n in DETECTION_OUTPUTS)
  return placeholder


def _flatten_levels(outputs, levels, last_dim):
  """`{level: [1, H_l, W_l, A * last_dim]}` -> `[1, sum_l H_l W_l A, last_dim]`."""
  return tf.concat([tf.reshape(outputs[l], [1, -1, last_dim]) for l in levels], axis=1)


def _frozen_network(model):
  """`(input_size, frozen network)` of `model` at its static input size, batch 1."""
  input_size = export_module.network_input_size(model)
  if input_size is None:
    raise ValueError(f'{model.name} was built for any input size; TFLite needs a '
                     'static one (e.g. build_retinanet.input_size = 384).')
  spec = tf.TensorSpec([1, *input_size, 3], tf.float32)
  return input_size, inference_graph.freeze(lambda x: model(x, training=False),
                                            [spec])


def _tflite_task(model) -> str:
  """'detection' or 'classification' of `model`; other exportable models refused."""
  task = export_lib._task_of(model)  # pylint: disable=protected-access
  if task not in ('detection', 'classification'):
    raise ValueError(f'{model.name}: TFLite export covers RetinaNet detectors and '
                     f'classifiers, not {task} models (use --format=saved_model).')
  return task


def tflite_function(model, options: TFLiteOptions = TFLiteOptions()):
  """The `tf.function` converted to TFLite: pixels `[1, H, W, 3]` -> outputs.

  The network is frozen with its batch norms folded; normalization and (for
  detection) the post-processing placeholder surround it.

  Args:
    model: a built spinenet RetinaNet or Classifier (float32, static input
      size).
    options: `TFLiteOptions`.

  Returns:
    `(concrete function, output names in contract order)`.
  """
  task = _tflite_task(model)
  input_size, network = _frozen_network(model)
  input_spec = tf.TensorSpec([1, *input_size, 3], tf.float32, name=INPUT_NAME)
  if task == 'classification':
    names = (PROBABILITIES, LOGITS) if options.raw_outputs else (PROBABILITIES,)

    def classify(images):
      logits = tf.cast(network(tflite_runtime.normalize(images)), tf.float32)
      outputs = {PROBABILITIES: tf.nn.softmax(logits, axis=-1)}
      if options.raw_outputs:
        outputs[LOGITS] = logits
      return outputs

    return tf.function(classify, input_signature=[input_spec],
                       autograph=False).get_concrete_function(), names

  num_classes = int(model.head.get_config()['num_classes'])
  if num_classes < 2:
    raise ValueError(f'{model.name} has {num_classes} class output; detection needs '
                     'the background (index 0) and at least one class.')
  levels = [str(l) for l in range(model.min_level, model.max_level + 1)]
  flat_anchors = anchors_lib.flatten_multilevel(model.anchors(input_size), 4).numpy()
  names = DETECTION_OUTPUTS + ((RAW_BOX_DELTAS, RAW_CLASS_LOGITS)
                               if options.raw_outputs else ())
  if options.nms == 'per_class':
    def postprocess(deltas, logits):
      return per_class_detections(deltas, logits, flat_anchors, input_size,
                                  model.detection_config)
  else:
    placeholder = _postprocess_placeholder(postprocess_attributes(
        num_classes - 1, model.detection_config, options.nms == 'regular'))
    corner_anchors = tf.constant(flat_anchors[np.newaxis])
    anchors = tf.constant(center_size_anchors(flat_anchors, input_size))

    def postprocess(deltas, logits):
      # Class 0 (background) is passed too: the op skips the first
      # `K - num_classes` columns (its label offset).
      encodings = clipped_encodings(deltas, corner_anchors, input_size)
      return placeholder(encodings, tf.sigmoid(logits), anchors)

  def detect(images):
    raw = network(tflite_runtime.normalize(images))
    deltas = _flatten_levels(raw['box_outputs'], levels, 4)
    logits = _flatten_levels(raw['cls_outputs'], levels, num_classes)
    with tf.name_scope(POSTPROCESS_SCOPE):
      detections = postprocess(deltas, logits)
    outputs = dict(zip(DETECTION_OUTPUTS, detections))
    if options.raw_outputs:
      outputs.update({RAW_BOX_DELTAS: deltas, RAW_CLASS_LOGITS: logits})
    return outputs

  return tf.function(detect, input_signature=[input_spec],
                     autograph=False).get_concrete_function(), names


def raw_network_function(model):
  """The network alone as converted: pixels `[1, H, W, 3]` -> raw outputs.

  What `tflite_function` puts before the post-processing (normalization,
  frozen folded network, levels flattened), for timing the network of a
  `.tflite` file (benchmarks/tflite.py).

  Args:
    model: a built spinenet RetinaNet (float32, static input size).

  Returns:
    A concrete function returning `{RAW_BOX_DELTAS: [1, A, 4],
    RAW_CLASS_LOGITS: [1, A, K]}`.
  """
  input_size, network = _frozen_network(model)
  levels = [str(l) for l in range(model.min_level, model.max_level + 1)]
  num_classes = int(model.head.get_config()['num_classes'])

  def raw(images):
    outputs = network(tflite_runtime.normalize(images))
    return {RAW_BOX_DELTAS: _flatten_levels(outputs['box_outputs'], levels, 4),
            RAW_CLASS_LOGITS: _flatten_levels(outputs['cls_outputs'], levels, num_classes)}

  return tf.function(raw, input_signature=[tf.TensorSpec([1, *input_size, 3], tf.float32,
                                                         name=INPUT_NAME)],
                     autograph=False).get_concrete_function()


def per_class_detections(deltas, logits, anchors, input_size, detection_config):
  """The SavedModel's post-processing (`ops.postprocess`) from TFLite builtins.

  The same steps as `postprocess.generate_detections` on one image: the best
  `pre_nms_top_k` (anchor, class) pairs over all reported classes (flat
  order anchor-major, so ties go to the lower anchor, then class), decoded
  and clipped to the input, then greedy NMS within each class in one
  `NON_MAX_SUPPRESSION_V5`: each class's boxes are shifted to their own
  region of the plane (class * (max(H, W) + 1)), so boxes of different
  classes never overlap; scores at most `score_threshold` are dropped by the
  NMS. Every op is a TFLite builtin (TOPK_V2, GATHER, EXP, ...,
  NON_MAX_SUPPRESSION_V5) with static shapes.

  Args:
    deltas: float32 `[1, N, 4]` dy, dx, dh, dw.
    logits: float32 `[1, N, K]`, class 0 the background (never reported).
    anchors: float32 numpy `[N, 4]` ymin, xmin, ymax, xmax in input pixels.
    input_size: `(H, W)`.
    detection_config: `retinanet.DetectionConfig`.

  Returns:
    The four outputs of the TFLite detection convention: boxes float32
    `[1, M, 4]` (ymin, xmin, ymax, xmax normalized to `H, W`), label indices
    float32 `[1, M]` (class index - 1), scores float32 `[1, M]` descending,
    count float32 `[1]`; `M = max_detections`, rows past the count are 0.
  """
  c = detection_config
  num_anchors, num_classes = int(logits.shape[1]), int(logits.shape[2])
  reported = num_classes - 1
  height, width = float(input_size[0]), float(input_size[1])
  # [N * (K - 1)], anchor-major: the flat order of the SavedModel's top-k.
  flat = tf.reshape(logits[0, :, 1:], [num_anchors * reported])
  k = min(c.pre_nms_top_k, num_anchors * reported)
  top_logits, index = tf.math.top_k(flat, k=k, sorted=True)
  anchor_index = tf.math.floordiv(index, reported)
  labels = index - anchor_index * reported
  boxes = box_ops.decode_boxes(tf.gather(deltas[0], anchor_index),
                               tf.gather(tf.constant(anchors, tf.float32), anchor_index))
  boxes = box_ops.clip_boxes(boxes, [height, width])
  scores = tf.sigmoid(top_logits)
  extent = max(height, width) + 1.0
  shifted = boxes + tf.cast(labels, tf.float32)[:, tf.newaxis] * extent
  # Zero-area boxes (clipped to nothing at the border): TF's NMS gives them
  # IoU 0 with everything and keeps each once. TFLite's NMS drops a selected
  # box from its queue only through its IoU of 1 with itself, so it selects a
  # zero-area box again and again (100 copies of one box, measured). Each one
  # is parked instead as a unit box of its own at negative y (disjoint from
  # every other box: IoU 0 with all, 1 with itself); the outputs take the
  # real boxes.
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  row = tf.range(k, dtype=tf.float32)
  parked = tf.stack([-2.0 * row - 2.0, tf.fill([k], -1.0), -2.0 * row - 1.0,
                     tf.zeros([k])], axis=1)
  shifted = tf.where((area > 0.0)[:, tf.newaxis], shifted, parked)
  selected, _, count = tf.raw_ops.NonMaxSuppressionV5(
      boxes=shifted, scores=scores, max_output_size=c.max_detections,
      iou_threshold=c.nms_iou_threshold, score_threshold=c.score_threshold,
      soft_nms_sigma=0.0, pad_to_max_output_size=True)
  valid = tf.cast(tf.range(c.max_detections) < count, tf.float32)
  scale = tf.constant([height, width, height, width], tf.float32)
  out_boxes = tf.gather(boxes, selected) / scale * valid[:, tf.newaxis]
  out_labels = tf.cast(tf.gather(labels, selected), tf.float32) * valid
  out_scores = tf.gather(scores, selected) * valid
  return (out_boxes[tf.newaxis], out_labels[tf.newaxis], out_scores[tf.newaxis],
          tf.reshape(tf.cast(count, tf.float32), [1]))


# === Calibration ===
def read_record_images(file_pattern: str, limit: int) -> Iterator[np.ndarray]:
  """Decoded images (`image/encoded`) of TFRecords, in file order.

  Args:
    file_pattern: glob(s) of TFRecord files, comma-separated.
    limit: images read at most.

  Yields:
    uint8 `[H, W, 3]`.
  """
  files = []
  for pattern in (p.strip() for p in file_pattern.split(',') if p.strip()):
    matched = sorted(tf.io.gfile.glob(pattern))
    if not matched:
      raise ValueError(f'Calibration: no file matches {pattern!r}; pass the '
                       'training records (--calibration_file_pattern).')
    files += matched
  records = tf.data.TFRecordDataset(files).take(limit)
  for encoded in records.map(_encoded_of):
    yield tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()


def _encoded_of(serialized):
  features = tf.io.parse_single_example(
      serialized, {tf_example.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string, '')})
  return features[tf_example.IMAGE_ENCODED]


def representative_dataset(images: Iterable[np.ndarray], input_size, task: str,
                           limit: int) -> Callable[[], Iterator[List[np.ndarray]]]:
  """The converter's `representative_dataset` over prepared `images`.

  The first sample gets one black and one white pixel so that the
  calibrated input range is exactly 0..255 (uint8 input with scale 1 and
  zero point 0: raw pixels, what mobile detection APIs feed).

  Args:
    images: uint8 `[H, W, 3]` images (e.g. `read_record_images`).
    input_size: `(H, W)`.
    task: 'detection' or 'classification'.
    limit: samples used at most.

  Returns:
    A no-argument callable yielding `[float32 [1, H, W, 3]]`.
  """
  def generate():
    start = time.monotonic()
    count = 0
    for count, image in enumerate(images, 1):
      pixels = tflite_runtime.prepare_pixels(image, input_size, task)[0]
      if count == 1:
        pixels = pixels.copy()
        pixels[0, 0, 0, :] = 0.0
        pixels[0, 0, 1, :] = 255.0
      yield [np.round(pixels).astype(np.float32)]
      if count % 50 == 0:
        rate = count / max(time.monotonic() - start, 1e-9)
        logging.info('calibration %d/%d images | %.1f images/s | ETA %.0f s', count,
                     limit, rate, (limit - count) / rate)
      if count >= limit:
        break
    if count == 0:
      raise ValueError('Calibration: the representative images are empty.')
  return generate


# === Conversion ===
def convert(concrete, quantization: str = 'none',
            representative: Optional[Callable] = None,
            float_scope: Optional[str] = POSTPROCESS_SCOPE,
            float_ops: Sequence[str] = (), trackable=None) -> bytes:
  """Runs `tf.lite.TFLiteConverter` on a concrete function.

  The function is saved as a SavedModel with one signature (`SIGNATURE_KEY`)
  and converted from it (the converter's own saving of a concrete function
  fails on graphs with custom gradients, e.g. swish, and then drops the
  signature). int8: the model is calibrated, then quantized with every op
  whose output lies under the name scope `float_scope` left in float32
  (the detection post-processing: box decoding and NMS need more than 256
  levels), so the network is integer and the post-processing float.

  Args:
    concrete: from `tflite_function`.
    quantization: one of `QUANTIZATIONS`.
    representative: int8: the `representative_dataset` callable.
    float_scope: int8: name scope kept float (None: quantize every op that
      has an integer kernel).
    float_ops: int8: builtin op names kept float (`TFLiteOptions.int8_float_ops`).
    trackable: what owns the variables `concrete` captures (e.g. the Keras
      model), saved with it; None for frozen functions (`tflite_function`).

  Returns:
    The flatbuffer bytes.

  Raises:
    ValueError: int8 without calibration data, or the converter refused the
      graph (its message included).
  """
  if quantization not in QUANTIZATIONS:
    raise ValueError(f'`quantization` must be one of {QUANTIZATIONS}. Received: '
                     f'{quantization!r}')
  if quantization == 'int8' and representative is None:
    raise ValueError('int8 quantization needs representative images for '
                     'calibration (the training records).')
  with tempfile.TemporaryDirectory() as saved_dir:
    owner = tf.Module()
    if trackable is not None:
      owner.model = trackable
    tf.saved_model.save(owner, saved_dir, signatures={SIGNATURE_KEY: concrete},
                        options=tf.saved_model.SaveOptions(
                            experimental_custom_gradients=False))
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir,
                                                         signature_keys=[SIGNATURE_KEY])
    if quantization == 'float16':
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
      converter.target_spec.supported_types = [tf.float16]
    elif quantization == 'int8':
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
      converter.representative_dataset = representative
      # Integer builtins for the network; float builtins for what stays float.
      converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                             tf.lite.OpsSet.TFLITE_BUILTINS]
      converter.inference_input_type = tf.uint8
      converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    try:
      model_bytes = converter.convert()
      if quantization == 'int8':
        model_bytes = _quantize_calibrated(model_bytes, float_scope, float_ops)
    except ValueError:
      raise
    except Exception as e:  # ConverterError and friends: one clear message.
      raise ValueError(f'The TFLite converter refused the model ({quantization}): '
                       f'{str(e)[:2000]}') from None
  return model_bytes


def _quantize_calibrated(calibrated: bytes, float_scope: Optional[str],
                         float_ops: Sequence[str] = ()) -> bytes:
  """Full-integer quantization of a calibrated model, `float_scope` left float.

  Denylisting the scope's ops is not enough: the quantizer still rounds
  every tensor that carries calibration statistics, putting a QUANTIZE /
  DEQUANTIZE pair between two float ops (measured: the decoded box
  coordinates of the demo model went through int8 with scales of 8-39
  pixels, and `num_detections` with 0.39; int8 AP 0.149 instead of float's
  0.338). So the statistics of every tensor computed from the scope's ops
  (`float_scope_tensors`) are removed first: without a range nothing is
  quantized there.

  Args:
    calibrated: the converter's output with `_experimental_calibrate_only`.
    float_scope: ops whose output tensor names contain `float_scope + '/'`,
      and everything computed from them, stay float32; None quantizes
      everything.
    float_ops: builtin op names (e.g. 'HARD_SWISH') kept float32.

  Returns:
    The quantized flatbuffer: uint8 input, float32 outputs.
  """
  from tensorflow.lite.python import convert as convert_lib  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  from tensorflow.lite.python import util as util_lib  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  denylisted = []
  if float_scope:
    model = flatbuffer_utils.read_model_from_bytearray(calibrated)
    for subgraph in model.subgraphs:
      for index in float_scope_tensors(subgraph, float_scope):
        tensor = subgraph.tensors[index]
        tensor.quantization = None  # no calibrated range: stays float32
        name = _text(tensor.name)
        if f'{float_scope}/' in name:
          denylisted.append(name)
    calibrated = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
  quantized = convert_lib.mlir_quantize(
      calibrated, disable_per_channel=False, fully_quantize=False,
      denylisted_ops=list(float_ops) or None, denylisted_nodes=denylisted or None)
  # Float input and outputs around the integer body; the input becomes uint8
  # (the int8 zero point + 128) as the converter itself does for
  # `inference_input_type = tf.uint8`.
  return util_lib.modify_model_io_type(quantized, tf.uint8, tf.float32)


def float_scope_tensors(subgraph, float_scope: str) -> List[int]:
  """Tensors of a flatbuffer subgraph (object API) computed under `float_scope`.

  The outputs of every op with an output named `float_scope/...` and,
  transitively, the outputs of every op reading one of them (e.g. the
  graph's detection outputs, renamed by the converter).

  Returns:
    Sorted tensor indices.
  """
  names = [_text(t.name) for t in subgraph.tensors]
  inside = set()
  for op in subgraph.operators:
    outputs = [int(i) for i in op.outputs]
    if any(f'{float_scope}/' in names[i] for i in outputs):
      inside.update(outputs)
  # Operators are stored in execution order: one forward pass closes the set.
  for op in subgraph.operators:
    if any(int(i) in inside for i in op.inputs if i >= 0):
      inside.update(int(i) for i in op.outputs)
  return sorted(inside)


def finalize_flatbuffer(model_bytes: bytes, output_names: Sequence[str],
                        info: dict) -> bytes:
  """Orders and names the outputs as the contract says; embeds `info`.

  The converter orders a function's outputs its own way; the TFLite
  detection convention reads them by position. The main subgraph's outputs
  (and the signature's) are put in `output_names` order, every input and
  output tensor is renamed after its signature key, and `info` is added as
  JSON metadata named `METADATA_NAME`.

  Args:
    model_bytes: a converted flatbuffer with one signature.
    output_names: the signature's output keys, in the wanted order.
    info: JSON-serializable description.

  Returns:
    The new flatbuffer bytes.
  """
  model = flatbuffer_utils.read_model_from_bytearray(model_bytes)
  if len(model.signatureDefs or []) != 1:
    raise ValueError(f'Expected one signature in the converted model, found '
                     f'{len(model.signatureDefs or [])}.')
  signature = model.signatureDefs[0]
  subgraph = model.subgraphs[signature.subgraphIndex]
  by_name = {_text(t.name): t.tensorIndex for t in signature.outputs}
  if sorted(by_name) != sorted(output_names):
    raise ValueError(f'Converted outputs {sorted(by_name)} differ from the expected '
                     f'{sorted(output_names)}.')
  signature.outputs = sorted(signature.outputs,
                             key=lambda t: list(output_names).index(_text(t.name)))
  subgraph.outputs = np.array([by_name[n] for n in output_names], np.int32)
  for tensor_map in list(signature.inputs) + list(signature.outputs):
    subgraph.tensors[tensor_map.tensorIndex].name = _text(tensor_map.name).encode()
  buffer = schema.BufferT()
  buffer.data = np.frombuffer(json.dumps(info, sort_keys=True).encode(), np.uint8)
  model.buffers.append(buffer)
  metadata = schema.MetadataT()
  metadata.name = METADATA_NAME.encode()
  metadata.buffer = len(model.buffers) - 1
  model.metadata = list(model.metadata or []) + [metadata]
  return flatbuffer_utils.convert_object_to_bytearray(model)


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def input_quantization(model_bytes: bytes):
  """`(dtype name, scale, zero point)` of the file's input, via the interpreter."""
  interpreter = tflite_runtime.make_interpreter(model_bytes, num_threads=1)
  detail = interpreter.get_input_details()[0]
  scale, zero_point = detail['quantization']
  return np.dtype(detail['dtype']).name, float(scale), int(zero_point)


# === Export ===
def labels_text(class_to_category: Sequence[int], names: Dict[int, str],
                task: str) -> str:
  """`labels.txt`: one name per output label index (detection: background dropped)."""
  categories = list(class_to_category)[1:] if task == 'detection' else list(class_to_category)
  return ''.join(f'{names.get(c, str(c))}\n' for c in categories)


def export_tflite(model_fn: Callable, export_dir: str, *,
                  checkpoint: Optional[str] = None,
                  label_map: Optional[Dict[int, str]] = None,
                  class_to_category: Optional[Sequence[int]] = None,
                  calibration_images: Optional[Iterable[np.ndarray]] = None,
                  options: TFLiteOptions = TFLiteOptions()) -> TFLiteExportResult:
  """Builds, restores and writes `export_dir/model_<variant>.tflite` and labels.

  Args:
    model_fn: no-argument callable returning a built RetinaNet or Classifier.
    export_dir: local directory (created); an existing file of the same
      variant is replaced.
    checkpoint: checkpoint prefix or model_dir; None keeps `model_fn`'s weights.
    label_map: optional dict category id -> name.
    class_to_category: optional category id per class index (default identity).
    calibration_images: int8: uint8 `[H, W, 3]` images (e.g.
      `read_record_images(train pattern, n)`); at most
      `options.calibration_images` are used.
    options: `TFLiteOptions`.

  Returns:
    `TFLiteExportResult`.

  Raises:
    ValueError: what cannot be converted, with the reason (no static input
      size, int8 without calibration images, converter errors, bad
      checkpoint or label map).
  """
  start = time.monotonic()
  if options.quantization == 'int8' and calibration_images is None:
    raise ValueError('--quantization=int8 needs calibration images: the training '
                     'records (train_data.file_pattern of the gin files, or '
                     '--calibration_file_pattern).')
  model = export_lib.build_model(model_fn, 'float32')
  restored = export_lib.restore_weights(model, checkpoint) if checkpoint else None
  task = _tflite_task(model)
  num_classes = int(model.head.get_config()['num_classes'])
  categories = export_lib.class_mapping(num_classes, label_map, class_to_category, task)
  names = {int(k): str(v) for k, v in (label_map or {}).items()}
  concrete, output_names = tflite_function(model, options)
  input_size = export_module.network_input_size(model)
  representative = None
  if options.quantization == 'int8':
    representative = representative_dataset(calibration_images, input_size, task,
                                            options.calibration_images)
  model_bytes = convert(concrete, options.quantization, representative,
                        float_ops=options.int8_float_ops)
  dtype, scale, zero_point = input_quantization(model_bytes)
  if options.quantization == 'int8' and (abs(scale - 1.0) > 1e-3 or zero_point != 0):
    logging.warning('int8 input quantization is scale %g, zero point %d (expected 1 '
                    'and 0): feed pixels quantized with them.', scale, zero_point)
  info = dict(task=task, model=model.name, input_size=list(input_size),
              input_name=INPUT_NAME, input_dtype=dtype,
              input_quantization=[scale, zero_point], pad_pixel=list(PAD_PIXEL),
              quantization=options.quantization, outputs=list(output_names),
              int8_float_ops=(list(options.int8_float_ops)
                              if options.quantization == 'int8' else []),
              num_classes=num_classes, class_to_category=[int(c) for c in categories],
              category_names={str(k): v for k, v in names.items()},
              checkpoint=restored, spinenet_version=spinenet.__version__)
  if task == 'detection':
    info.update(detection_config=dataclasses.asdict(model.detection_config),
                nms=options.nms, label_offset=1,
                boxes='normalized ymin, xmin, ymax, xmax of the input')
  else:
    info.update(center_crop_fraction=preprocessing.CENTER_CROP_FRACTION)
  model_bytes = finalize_flatbuffer(model_bytes, output_names, info)
  os.makedirs(export_dir, exist_ok=True)
  path = os.path.join(export_dir, FILE_NAMES[options.quantization])
  _write_atomic(path, model_bytes)
  labels_path = os.path.join(export_dir, LABELS_FILE)
  _write_atomic(labels_path, labels_text(categories, names, task).encode())
  info['size_bytes'] = len(model_bytes)
  logging.info('wrote %s (%s, %s, %.2f MB) in %.0f s', path, task,
               options.quantization, len(model_bytes) / 2**20, time.monotonic() - start)
  return TFLiteExportResult(path=path, labels_path=labels_path, info=info)


def _write_atomic(path: str, data: bytes) -> None:
  """Writes `data` to a temporary file beside `path`, then renames it."""
  handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or '.',
                                       prefix='.tmp-', suffix=os.path.basename(path))
  with os.fdopen(handle, 'wb') as f:
    f.write(data)
  os.replace(temporary, path)
