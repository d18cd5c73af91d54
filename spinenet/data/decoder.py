"""Decodes serialized detection tf.Examples into a dict of tensors.

Reads the keys of `spinenet.data.tf_example` (the TF Object Detection API /
Model Garden layout), so records written by either tool decode here too.
"""
import tensorflow as tf

from spinenet.data import tf_example as keys

_FEATURES = {
    keys.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
    keys.IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64, -1),
    keys.IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64, -1),
    keys.IMAGE_SOURCE_ID: tf.io.FixedLenFeature((), tf.string, ''),
    keys.BBOX_YMIN: tf.io.VarLenFeature(tf.float32),
    keys.BBOX_XMIN: tf.io.VarLenFeature(tf.float32),
    keys.BBOX_YMAX: tf.io.VarLenFeature(tf.float32),
    keys.BBOX_XMAX: tf.io.VarLenFeature(tf.float32),
    keys.CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
    keys.IS_CROWD: tf.io.VarLenFeature(tf.int64),
    keys.AREA: tf.io.VarLenFeature(tf.float32),
}


def decode_image(encoded):
  """Decodes JPEG, PNG, GIF (first frame) or BMP bytes to uint8 `[H, W, 3]`."""
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def decode_masks(encoded_masks, height, width):
  """PNG instance masks -> float32 `[N, height, width]` in {0, 1}.

  Args:
    encoded_masks: string `[N]`, single-channel PNGs (`image/object/mask`);
      any value > 0 is inside the object.
    height: int32 scalar, the image height the masks must have.
    width: int32 scalar.

  Returns:
    float32 `[N, height, width]`; `[0, height, width]` when N is 0.

  Raises:
    InvalidArgumentError (when run): a mask that is not a PNG, is corrupt,
      or is not `height` x `width`.
  """

  def one(png):
    mask = tf.io.decode_png(png, channels=1)
    check = tf.debugging.assert_equal(
        tf.shape(mask)[:2], tf.stack([height, width]),
        message=f'{keys.MASK}: a mask is not the size of the image')
    with tf.control_dependencies([check]):
      return tf.cast(mask[:, :, 0] > 0, tf.float32)

  shape = tf.stack([tf.size(encoded_masks), height, width])
  masks = tf.cond(
      tf.size(encoded_masks) > 0,
      lambda: tf.map_fn(one, encoded_masks, fn_output_signature=tf.TensorSpec(
          [None, None], tf.float32)),
      lambda: tf.zeros(shape))
  return tf.reshape(masks, shape)


def image_shape(encoded):
  """`(height, width)` int32 `[2]` of encoded image bytes.

  Reads only the header of a JPEG; other formats are decoded.
  """
  return tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.image.extract_jpeg_shape(encoded)[:2],
      lambda: tf.shape(decode_image(encoded))[:2])


class DetectionDecoder:
  """Serialized detection `tf.Example` -> dict of tensors.

  Args:
    decode_image: bool. If True (the default) the output has `image`; if
      False it has `encoded_image` instead, and the training parser decodes
      only the region it keeps (`tf.io.decode_and_crop_jpeg`).
    decode_masks: bool. If True the output also has
      `groundtruth_instance_masks`, decoded from `image/object/mask`; the
      record must then hold one mask per box. False (the default) never
      reads the masks (RetinaNet pays nothing for them).

  Call arguments of `decode`:
    serialized: string scalar, one serialized `tf.train.Example`.

  Returns of `decode`, a dict:
    image: uint8 `[H, W, 3]` (only if `decode_image`).
    encoded_image: string scalar (only if not `decode_image`).
    source_id: string scalar (`image/source_id`; for COCO the image id).
    height, width: int32 scalars, the image size in pixels. Taken from the
      example, or from the image when the example does not have them.
    groundtruth_boxes: float32 `[N, 4]`, ymin, xmin, ymax, xmax normalized
      to `[0, 1]`.
    groundtruth_classes: int32 `[N]`, dataset category ids as stored.
    groundtruth_is_crowd: bool `[N]` (all False when the key is absent).
    groundtruth_area: float32 `[N]`, object areas in pixels of the original
      image (box areas when the key is absent).
    groundtruth_instance_masks: float32 `[N, height, width]`, 1 inside each
      object, 0 outside (only if `decode_masks`). A mask that is not a PNG,
      is corrupt or of another size, or a record whose number of masks is
      not its number of boxes, fails the decode with InvalidArgumentError,
      which the input pipeline skips and counts like a corrupt image.

  Example:
    ```python
    decoder = DetectionDecoder()
    data = decoder.decode(serialized)
    data['groundtruth_boxes']  # float32 [N, 4], normalized yxyx
    ```
  """

  def __init__(self, decode_image=True, decode_masks=False):  # pylint: disable=redefined-outer-name
    self._decode_image = decode_image
    self._decode_masks = decode_masks
    self._features = dict(_FEATURES)
    if decode_masks:
      self._features[keys.MASK] = tf.io.VarLenFeature(tf.string)

  def decode(self, serialized):
    parsed = tf.io.parse_single_example(serialized, self._features)
    dense = {k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v
             for k, v in parsed.items()}
    encoded = dense[keys.IMAGE_ENCODED]
    out = {'source_id': dense[keys.IMAGE_SOURCE_ID]}
    stored_hw = tf.cast(tf.stack([dense[keys.IMAGE_HEIGHT],
                                  dense[keys.IMAGE_WIDTH]]), tf.int32)
    if self._decode_image:
      image = decode_image(encoded)
      out['image'] = image
      actual_hw = tf.shape(image)[:2]
      hw = tf.where(stored_hw > 0, stored_hw, actual_hw)
    else:
      out['encoded_image'] = encoded
      hw = tf.cond(tf.reduce_all(stored_hw > 0), lambda: stored_hw,
                   lambda: image_shape(encoded))
    out['height'] = hw[0]
    out['width'] = hw[1]

    boxes = tf.stack([dense[k] for k in keys.BOX_KEYS], axis=-1)
    classes = tf.cast(dense[keys.CLASS_LABEL], tf.int32)
    num_boxes = tf.shape(classes)[0]
    is_crowd = dense[keys.IS_CROWD]
    is_crowd = tf.cond(tf.size(is_crowd) > 0,
                       lambda: tf.cast(is_crowd, tf.bool),
                       lambda: tf.zeros([num_boxes], tf.bool))
    area = dense[keys.AREA]
    hw_float = tf.cast(hw, tf.float32)
    box_area = ((boxes[:, 2] - boxes[:, 0]) * hw_float[0] *
                (boxes[:, 3] - boxes[:, 1]) * hw_float[1])
    area = tf.cond(tf.size(area) > 0, lambda: area, lambda: box_area)
    out.update(groundtruth_boxes=boxes, groundtruth_classes=classes,
               groundtruth_is_crowd=is_crowd, groundtruth_area=area)
    if self._decode_masks:
      encoded_masks = dense[keys.MASK]
      check = tf.debugging.assert_equal(
          tf.size(encoded_masks), num_boxes,
          message=f'{keys.MASK}: the record needs one mask per box (written '
          'by spinenet-create-coco-tfrecord --include_masks)')
      with tf.control_dependencies([check]):
        out['groundtruth_instance_masks'] = decode_masks(
            encoded_masks, hw[0], hw[1])
    return out
