"""The `tf.Module`s saved as SavedModels: detection, instance segmentation, classification.

Each module holds the network (a Keras model's inference call, or a frozen
graph from `inference_graph.freeze`), everything the signatures need besides
it as constants, and one `tf.function` per input type (see `signatures`).
Pre- and post-processing run inside the graph, so TF Serving, `spinenet-serve`
and a local `tf.saved_model.load` all answer the same.
"""
from typing import Callable, Optional, Sequence

import tensorflow as tf

from spinenet.ops import mask_ops
from spinenet.serving import preprocessing
from spinenet.serving import signatures as sig


def _names_table(class_to_category, category_names, background):
  """string `[K]`: the name of each class index ('' for the background)."""
  names = [category_names.get(c, str(c)) for c in class_to_category]
  if background:
    names[0] = ''
  return tf.constant(names, tf.string)


class _ExportModule(tf.Module):
  """What the detection and classification modules share.

  Args:
    network: callable, float32 images `[B, H, W, 3]` (normalized, the model's
      input size) -> raw outputs.
    input_size: `(H, W)` of the network input.
    class_to_category: ints, dataset category id of each class index.
    category_names: dict category id -> name.
    variables: the network's variables (saved with the module), or `()`
      when the network holds constants only.
    max_image_pixels: int. Larger input images are refused.
    assets: paths of files to ship in the SavedModel's `assets/`.
  """

  background = False

  def __init__(self, network: Callable, input_size: Sequence[int],
               class_to_category: Sequence[int], category_names, *,
               variables=(), max_image_pixels=preprocessing.DEFAULT_MAX_PIXELS,
               assets=(), name=None):
    super().__init__(name=name)
    self._network = network
    self.input_size = tuple(int(s) for s in input_size)
    self.max_image_pixels = int(max_image_pixels)
    self.network_variables = list(variables)
    self.assets = [tf.saved_model.Asset(path) for path in assets]
    self._categories = tf.constant(list(class_to_category), tf.int32)
    self._names = _names_table(list(class_to_category), dict(category_names),
                               self.background)

  # === Inputs ===
  def _prepare_one(self, image):
    raise NotImplementedError

  def _prepare_batch(self, images):
    raise NotImplementedError

  def _from_encoded(self, encoded, name):
    """string `[B]` -> prepared batch, each image decoded and prepared alone."""
    def one(args):
      index, data = args
      label = tf.strings.join([name, '[', tf.strings.as_string(index), ']'])
      image = preprocessing.decode(data, self.max_image_pixels, name=label)
      return self._prepare_one(image)

    batch = tf.shape(encoded, out_type=tf.int64)[0]
    return tf.map_fn(one, (tf.range(batch), encoded),
                     fn_output_signature=self._prepared_signature())

  # === Signatures ===
  def _serve_images(self, core, images):
    size = tf.shape(images, out_type=tf.int64)[1:3]
    with tf.control_dependencies([preprocessing.check_size(
        size, self.max_image_pixels, sig.INPUT_KEYS[sig.IMAGE_TENSOR])]):
      images = tf.identity(images)
    return core(*self._prepare_batch(images))

  def _serve_bytes(self, core, image_bytes):
    return core(*self._from_encoded(image_bytes, sig.INPUT_KEYS[sig.IMAGE_BYTES]))

  def _serve_tf_examples(self, core, tf_examples):
    encoded = preprocessing.parse_examples(tf_examples)
    return core(*self._from_encoded(
        encoded, sig.INPUT_KEYS[sig.TF_EXAMPLE] + ' image/encoded'))

  def signatures(self):
    """`{signature name: concrete function}` for `tf.saved_model.save`.

    The network and post-processing are traced once, as one function that
    every signature calls.
    """
    batched = [tf.TensorSpec([None, *s.shape], s.dtype)
               for s in self._prepared_signature()]
    core = tf.function(self._outputs, input_signature=batched, autograph=False)
    fns = {sig.IMAGE_TENSOR: self._serve_images, sig.IMAGE_BYTES: self._serve_bytes,
           sig.TF_EXAMPLE: self._serve_tf_examples}
    return {name: tf.function(lambda x, fn=fn: fn(core, x),
                              input_signature=[sig.INPUT_SPECS[name]],
                              autograph=False).get_concrete_function()
            for name, fn in fns.items()}


class DetectionExportModule(_ExportModule):
  """RetinaNet export: resize/pad/normalize, network, NMS, caller's pixels.

  Rows past `num_detections` are zeros (names empty), whatever the network
  left there.

  Args:
    postprocess: callable `(raw outputs, valid_size float32 [B, 2]) ->
      detections dict` in model-input pixels (`RetinaNet.postprocess` with
      the input size bound).
    Other arguments: see `_ExportModule`.
  """

  background = True

  def __init__(self, network, postprocess: Callable, input_size, class_to_category,
               category_names, **kwargs):
    super().__init__(network, input_size, class_to_category, category_names, **kwargs)
    self._postprocess = postprocess

  def _prepared_signature(self):
    return (tf.TensorSpec([*self.input_size, 3], tf.float32),
            tf.TensorSpec([2], tf.float32), tf.TensorSpec([2], tf.float32),
            tf.TensorSpec([2], tf.float32))

  def _prepare_one(self, image):
    return preprocessing.fit_to_size(image, self.input_size)

  def _prepare_batch(self, images):
    inputs, image_size, scale, valid = preprocessing.fit_to_size(images, self.input_size)
    batch = tf.shape(images)[0]
    tile = lambda t: tf.tile(t[tf.newaxis], [batch, 1])  # noqa: E731
    return inputs, tile(image_size), tile(scale), tile(valid)

  def _detect(self, inputs, image_size, scale, valid_size):
    """Detections dict in model-input pixels."""
    del image_size, scale  # the network sees the model input only
    return self._postprocess(self._network(inputs), valid_size)

  def _outputs(self, inputs, image_size, scale, valid_size):
    """Network + post-processing; boxes mapped back to the caller's pixels."""
    detections = self._detect(inputs, image_size, scale, valid_size)
    num = detections['num_detections']
    mask = tf.sequence_mask(num, tf.shape(detections['detection_scores'])[1])
    boxes = detections['detection_boxes'] / tf.tile(scale, [1, 2])[:, tf.newaxis, :]
    limit = tf.tile(image_size, [1, 2])[:, tf.newaxis, :]
    classes = detections['detection_classes']
    zero_past = lambda t: tf.where(  # noqa: E731
        tf.reshape(mask, tf.concat([tf.shape(mask), tf.ones_like(tf.shape(t)[2:])], 0)),
        t, tf.zeros_like(t))
    outputs = {
        sig.DETECTION_BOXES: zero_past(tf.clip_by_value(boxes, 0.0, limit)),
        sig.DETECTION_SCORES: zero_past(detections['detection_scores']),
        sig.DETECTION_CLASSES: tf.where(mask, tf.gather(self._categories, classes), 0),
        sig.DETECTION_CLASS_NAMES: tf.where(mask, tf.gather(self._names, classes), ''),
        sig.NUM_DETECTIONS: tf.cast(num, tf.int32),
    }
    outputs.update(self._extra_outputs(detections, boxes, mask, image_size))
    return outputs

  def _extra_outputs(self, detections, boxes, valid, image_size):
    """More outputs from the detections (boxes unclipped, caller's pixels)."""
    del detections, boxes, valid, image_size
    return {}


class MaskRCNNExportModule(DetectionExportModule):
  """Mask R-CNN export: the detection outputs plus each detection's mask.

  The network takes the prepared images and their `image_info` and returns
  the model's inference outputs (detections in model-input pixels, masks
  over their boxes). Each mask is pasted (`mask_ops.paste_masks`) into the
  caller's pixels, over its box mapped back by the resize scale (unclipped:
  the mask was predicted for that box), and thresholded at 0.5.

  Outputs besides the detection ones (see `signatures`), by `mask_format`:
    'dense': `detection_masks` uint8 `[B, N, H, W]`, 0/1.
    'png': `detection_masks_png_bytes` string `[B, N]`, each a PNG of a uint8
      `[h_i, w_i]` 0/1 mask (grayscale); '' for rows past `num_detections`.
  `H, W` is the largest image height and width of the batch (one size for
  `serving_default`; `serve_bytes` may mix sizes): image i's masks fill the
  top-left `h_i x w_i`, the rest is 0.

  Args:
    network: callable `(images float32 [B, h, w, 3], image_info float32
      [B, 4, 2]) -> inference outputs` (`MaskRCNN(..., training=False)`);
      `image_info` rows: original size, scaled (valid) size, scale, offset 0.
    mask_format: 'dense' or 'png'.
    Other arguments: see `_ExportModule`.
  """

  def __init__(self, network, input_size, class_to_category, category_names, *,
               mask_format: str = 'dense', **kwargs):
    if mask_format not in sig.MASK_FORMATS:
      raise ValueError(f'`mask_format` must be one of {sig.MASK_FORMATS}. Received: '
                       f'mask_format={mask_format!r}')
    super().__init__(network, None, input_size, class_to_category, category_names,
                     **kwargs)
    self.mask_format = mask_format

  def _detect(self, inputs, image_size, scale, valid_size):
    image_info = tf.stack([image_size, valid_size, scale, tf.zeros_like(scale)], 1)
    return self._network(inputs, image_info)

  def _extra_outputs(self, detections, boxes, valid, image_size):
    """The masks, one detection at a time (memory: one float frame, not N)."""
    sizes = tf.cast(tf.round(image_size), tf.int32)
    height, width = tf.reduce_max(sizes[:, 0]), tf.reduce_max(sizes[:, 1])
    masks = tf.cast(detections['detection_masks'], tf.float32)
    dense = self.mask_format == 'dense'
    if dense:
      detection_spec = tf.TensorSpec([None, None], tf.uint8)
    else:
      detection_spec = tf.TensorSpec([], tf.string)

    def one_image(args):
      image_masks, image_boxes, image_valid, size = args

      def one_detection(k):
        def paste():
          pasted = mask_ops.binarize(mask_ops.paste_masks(
              image_masks[k][tf.newaxis], image_boxes[k][tf.newaxis], size[0], size[1]))[0]
          if dense:
            return tf.pad(pasted, [[0, height - size[0]], [0, width - size[1]]])
          return tf.io.encode_png(pasted[:, :, tf.newaxis])

        def padding_row():
          return tf.zeros([height, width], tf.uint8) if dense else tf.constant('')

        return tf.cond(image_valid[k], paste, padding_row)

      return tf.map_fn(one_detection, tf.range(tf.shape(image_masks)[0]),
                       fn_output_signature=detection_spec)

    image_spec = tf.TensorSpec([None, *detection_spec.shape], detection_spec.dtype)
    return {sig.MASK_OUTPUTS[self.mask_format]: tf.map_fn(
        one_image, (masks, boxes, valid, sizes), fn_output_signature=image_spec)}


class ClassificationExportModule(_ExportModule):
  """Classifier export: center crop + resize + normalize, logits, top k.

  Args:
    top_k: int. Classes reported per image (at most the number of classes).
    center_crop_fraction: float. Side of the central crop over the short side.
    Other arguments: see `_ExportModule`.
  """

  def __init__(self, network, input_size, class_to_category, category_names, *,
               top_k: int = 5,
               center_crop_fraction: float = preprocessing.CENTER_CROP_FRACTION,
               **kwargs):
    super().__init__(network, input_size, class_to_category, category_names, **kwargs)
    self.top_k = min(int(top_k), len(class_to_category))
    self.center_crop_fraction = float(center_crop_fraction)

  def _prepared_signature(self):
    return (tf.TensorSpec([*self.input_size, 3], tf.float32),)

  def _prepare_one(self, image):
    return (preprocessing.center_crop_and_resize(image, self.input_size,
                                                 self.center_crop_fraction),)

  _prepare_batch = _prepare_one

  def _outputs(self, inputs):
    logits = tf.cast(self._network(inputs), tf.float32)
    probabilities = tf.nn.softmax(logits, axis=-1)
    scores, classes = tf.math.top_k(probabilities, k=self.top_k)
    return {
        sig.LOGITS: logits,
        sig.PROBABILITIES: probabilities,
        sig.TOP_K_CLASSES: tf.gather(self._categories, classes),
        sig.TOP_K_SCORES: scores,
        sig.TOP_K_CLASS_NAMES: tf.gather(self._names, classes),
    }


def network_input_size(model) -> Optional[tuple]:
  """Static `(H, W)` the model's backbone was built for, or None."""
  shape = tuple(model.backbone.input_shape[1:3])
  return None if None in shape else tuple(int(s) for s in shape)
