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

  Example:
    ```python
    decoder = DetectionDecoder()
    data = decoder.decode(serialized)
    data['groundtruth_boxes']  # float32 [N, 4], normalized yxyx
    ```
  """

  def __init__(self, decode_image=True):  # pylint: disable=redefined-outer-name
    self._decode_image = decode_image

  def decode(self, serialized):
    parsed = tf.io.parse_single_example(serialized, _FEATURES)
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
    return out
