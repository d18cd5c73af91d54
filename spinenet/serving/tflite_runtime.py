"""Runs a `.tflite` file written by `tflite_export` (`spinenet-predict`, benchmarks).

`TFLiteModel` wraps the TFLite interpreter (`ai_edge_litert`, else
`tf.lite.Interpreter`), XNNPACK on by default, and reads the file's
description (`tflite_export.METADATA_NAME`). `TFLitePredictor` has the
interface of the `client` predictors: encoded images in, one dict per image
out with the SavedModel's output names and units (boxes in pixels of the
caller's image, category ids, class names):

  predictor = TFLitePredictor('exports/model_int8.tflite', num_threads=2)
  [result] = predictor.predict([open('shapes.jpg', 'rb').read()])
"""
import json
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from spinenet.data import preprocess
from spinenet.serving import preprocessing
from spinenet.serving import signatures as sig

from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=g-direct-tensorflow-import

try:  # The LiteRT package (a tf-models-official dependency); TF's copy otherwise.
  from ai_edge_litert import interpreter as _litert  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover
  _litert = None

METADATA_NAME = 'spinenet_info'  # the JSON description's metadata entry
# Padding of the input in pixels: the ImageNet mean, i.e. 0 after normalization.
PAD_PIXEL = tuple(float(m) for m in preprocess.MEAN_RGB)


def normalize(pixels):
  """float32 `[..., 3]` 0..255 -> `(x - mean) / std`, as the parsers do."""
  scale = tf.constant([1.0 / s for s in preprocess.STDDEV_RGB])
  bias = tf.constant([-m / s for m, s in zip(preprocess.MEAN_RGB, preprocess.STDDEV_RGB)])
  return pixels * scale + bias


def denormalize(inputs):
  """Inverse of `normalize`: normalized float32 `[..., 3]` -> pixel values."""
  return (inputs * tf.constant(list(preprocess.STDDEV_RGB)) +
          tf.constant(list(preprocess.MEAN_RGB)))


def prepare_pixels(image, input_size: Sequence[int], task: str,
                   center_crop_fraction: float = preprocessing.CENTER_CROP_FRACTION):
  """One image as a `.tflite` file's input expects it, as float32 pixel values.

  Detection: scaled to fit `input_size` (aspect kept) and padded bottom and
  right with `PAD_PIXEL`, the geometry of `preprocessing.fit_to_size` (and
  of the evaluation). Classification: the central crop of
  `preprocessing.center_crop_and_resize`.

  Args:
    image: uint8 `[H, W, 3]`.
    input_size: `(H, W)` of the model input.
    task: 'detection' or 'classification'.
    center_crop_fraction: classification crop.

  Returns:
    `(pixels, scale, valid_size)`: float32 `[1, H, W, 3]` in 0..255,
    `(y_scale, x_scale)` input pixels per image pixel and the `(height,
    width)` of the image inside the input (classification: 1s and the full
    size).
  """
  image = tf.convert_to_tensor(image)
  if task == 'detection':
    inputs, _, scale, valid = preprocessing.fit_to_size(image, tuple(input_size))
  else:
    inputs = preprocessing.center_crop_and_resize(image, tuple(input_size),
                                                  center_crop_fraction)
    scale, valid = tf.ones([2]), tf.constant(list(input_size), tf.float32)
  pixels = tf.clip_by_value(denormalize(inputs), 0.0, 255.0)
  return pixels.numpy()[np.newaxis], scale.numpy(), valid.numpy()


def make_interpreter(model, num_threads: int = 2, use_xnnpack: bool = True):
  """A TFLite interpreter of `model` (a path or the flatbuffer bytes), allocated.

  Args:
    model: `.tflite` path or bytes.
    num_threads: CPU threads of the interpreter (and of XNNPACK).
    use_xnnpack: apply the default XNNPACK delegate; False runs the builtin
      kernels only.
  """
  if _litert is not None:
    interpreter_class, resolver = _litert.Interpreter, _litert.OpResolverType
  else:  # pragma: no cover
    interpreter_class, resolver = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
  resolver_type = (resolver.AUTO if use_xnnpack
                   else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  source = ({'model_content': bytes(model)} if isinstance(model, (bytes, bytearray))
            else {'model_path': str(model)})
  interpreter = interpreter_class(num_threads=int(num_threads),
                                  experimental_op_resolver_type=resolver_type, **source)
  interpreter.allocate_tensors()
  return interpreter


def delegate_partitions(interpreter) -> int:
  """Delegate kernels (XNNPACK partitions) in an allocated interpreter's graph.

  1 means the delegate runs the whole graph (or one piece of it); each op
  the delegate does not support (e.g. a builtin kernel between delegated
  ops) splits the graph further. 0: no delegate applied.
  """
  return sum(op['op_name'] == 'DELEGATE' for op in interpreter._get_ops_details())  # pylint: disable=protected-access


def read_metadata(model_bytes: bytes) -> dict:
  """The JSON description embedded by `tflite_export` (raises if absent)."""
  model = schema.Model.GetRootAs(model_bytes, 0)
  for i in range(model.MetadataLength()):
    entry = model.Metadata(i)
    name = entry.Name()
    if (name.decode() if isinstance(name, bytes) else name) == METADATA_NAME:
      return json.loads(bytes(model.Buffers(entry.Buffer()).DataAsNumpy()).decode())
  raise ValueError(f'The TFLite file has no {METADATA_NAME!r} metadata; was it '
                   'written by spinenet-export --format=tflite?')


class TFLiteModel:
  """One `.tflite` file of `tflite_export` in an interpreter.

  Args:
    path: the `.tflite` file.
    num_threads: interpreter threads.
    use_xnnpack: XNNPACK delegate (default on).

  Attributes:
    info: the embedded description (task, input size and dtype, classes...).
    input_size: `(H, W)`.
  """

  def __init__(self, path: str, num_threads: int = 2, use_xnnpack: bool = True):
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
    self.path = path
    self.info = read_metadata(data)
    self.input_size = tuple(self.info['input_size'])
    self.interpreter = make_interpreter(data, num_threads, use_xnnpack)
    self._input = self.interpreter.get_input_details()[0]
    self._outputs = self.interpreter.get_output_details()
    names = [d['name'] for d in self._outputs]
    if names != list(self.info['outputs']):
      raise ValueError(f'{path}: outputs {names} do not match its description '
                       f'{self.info["outputs"]}.')

  @property
  def input_dtype(self):
    return np.dtype(self._input['dtype'])

  def quantize_input(self, pixels: np.ndarray) -> np.ndarray:
    """float pixel values `[1, H, W, 3]` -> the input's dtype (quantized if int)."""
    if self.input_dtype.kind == 'f':
      return np.asarray(pixels, self.input_dtype)
    scale, zero_point = self._input['quantization']
    info = np.iinfo(self.input_dtype)
    values = np.round(np.asarray(pixels, np.float32) / scale + zero_point)
    return np.clip(values, info.min, info.max).astype(self.input_dtype)

  def run(self, pixels: np.ndarray) -> Dict[str, np.ndarray]:
    """Invokes the file on pixel values `[1, H, W, 3]` (0-255, prepared).

    Returns:
      `{output name: array}` with the batch axis, dequantized when an
      output is an integer tensor.
    """
    self.interpreter.set_tensor(self._input['index'], self.quantize_input(pixels))
    self.interpreter.invoke()
    outputs = {}
    for detail in self._outputs:
      value = self.interpreter.get_tensor(detail['index'])
      scale, zero_point = detail['quantization']
      if np.dtype(detail['dtype']).kind in 'iu' and scale:
        value = (value.astype(np.float32) - zero_point) * scale
      outputs[detail['name']] = value
    return outputs


def detections_to_image(outputs: Dict[str, np.ndarray], info: dict, scale, valid_size,
                        image_size) -> Dict[str, np.ndarray]:
  """The file's detection outputs as the SavedModel reports them, for one image.

  Boxes: normalized input coordinates -> input pixels, clipped to the
  valid (unpadded) part, divided by the resize scale, clipped to the image;
  label indices -> category ids (`class_to_category[label + label_offset]`)
  and names.

  Args:
    outputs: `TFLiteModel.run` of a detection file (batch of 1).
    info: its description.
    scale: `(y_scale, x_scale)` input pixels per image pixel.
    valid_size: `(height, width)` of the image inside the input.
    image_size: `(height, width)` of the caller's image.

  Returns:
    dict of the `signatures` detection outputs without batch axis.
  """
  height, width = info['input_size']
  count = int(round(float(np.ravel(outputs['num_detections'])[0])))
  boxes = np.asarray(outputs['detection_boxes'][0][:count], np.float32)
  boxes = boxes * np.array([height, width, height, width], np.float32)
  valid = np.array([valid_size[0], valid_size[1]] * 2, np.float32)
  boxes = np.clip(boxes, 0.0, valid) / np.array([scale[0], scale[1]] * 2, np.float32)
  boxes = np.clip(boxes, 0.0, np.array([image_size[0], image_size[1]] * 2, np.float32))
  labels = np.round(outputs['detection_classes'][0][:count]).astype(np.int64)
  classes = np.asarray(info['class_to_category'], np.int64)[labels + info['label_offset']]
  names = info.get('category_names', {})
  return {
      sig.DETECTION_BOXES: boxes,
      sig.DETECTION_SCORES: np.asarray(outputs['detection_scores'][0][:count], np.float32),
      sig.DETECTION_CLASSES: classes.astype(np.int32),
      sig.DETECTION_CLASS_NAMES: np.array([names.get(str(c), '') for c in classes],
                                          dtype=object),
      sig.NUM_DETECTIONS: np.int32(count),
  }


def classes_to_result(outputs: Dict[str, np.ndarray], info: dict,
                      top_k: int = 5) -> Dict[str, np.ndarray]:
  """Classification outputs as the SavedModel reports them (top k, ids, names)."""
  probabilities = np.asarray(outputs['probabilities'][0], np.float32)
  order = np.argsort(-probabilities, kind='stable')[:min(top_k, probabilities.size)]
  categories = np.asarray(info['class_to_category'], np.int64)[order]
  names = info.get('category_names', {})
  return {
      sig.PROBABILITIES: probabilities,
      sig.TOP_K_CLASSES: categories.astype(np.int32),
      sig.TOP_K_SCORES: probabilities[order],
      sig.TOP_K_CLASS_NAMES: np.array([names.get(str(c), '') for c in categories],
                                      dtype=object),
  }


class TFLitePredictor:
  """Predicts encoded images with a `.tflite` file, like the `client` predictors.

  Args:
    path: the `.tflite` file of `tflite_export`.
    num_threads: interpreter threads.
    use_xnnpack: XNNPACK delegate.
    top_k: classification: classes reported.
    max_image_pixels: larger images are refused before decoding.
  """

  def __init__(self, path: str, num_threads: int = 2, use_xnnpack: bool = True,
               top_k: int = 5, max_image_pixels: int = preprocessing.DEFAULT_MAX_PIXELS):
    self.model = TFLiteModel(path, num_threads, use_xnnpack)
    self.top_k = top_k
    self.max_image_pixels = max_image_pixels

  def prepare(self, image: np.ndarray):
    """uint8 `[H, W, 3]` -> `(pixels [1, H, W, 3], scale, valid size)`."""
    return prepare_pixels(image, self.model.input_size, self.model.info['task'],
                          self.model.info.get('center_crop_fraction',
                                              preprocessing.CENTER_CROP_FRACTION))

  def predict_image(self, image: np.ndarray) -> Dict[str, np.ndarray]:
    """One decoded uint8 `[H, W, 3]` image -> result dict."""
    pixels, scale, valid = self.prepare(image)
    outputs = self.model.run(pixels)
    if self.model.info['task'] == 'detection':
      return detections_to_image(outputs, self.model.info, scale, valid, image.shape[:2])
    return classes_to_result(outputs, self.model.info, self.top_k)

  def predict(self, images: Sequence[bytes]) -> List[Dict[str, np.ndarray]]:
    results = []
    for i, encoded in enumerate(images):
      try:
        image = preprocessing.decode(tf.constant(encoded), self.max_image_pixels,
                                     name=f'image_bytes[{i}]').numpy()
      except tf.errors.InvalidArgumentError as e:
        raise ValueError(e.message.split('\n')[0]) from None
      results.append(self.predict_image(image))
    return results

  def label_map(self) -> Dict[int, str]:
    return {int(k): v for k, v in self.model.info.get('category_names', {}).items()}
