"""Export modules around stand-in networks: input handling, mapping back, names, errors.

The networks and post-processing here are small TF functions with known
outputs, so every value the signatures return is computed by hand; no model
is built.
"""
import io
import os
import shutil
import tempfile
import types

import numpy as np
from PIL import Image
import tensorflow as tf

from spinenet.ops import mask_ops
from spinenet.serving import export_module
from spinenet.serving import signatures as sig

_MEAN = np.array([0.485, 0.456, 0.406]) * 255
_STD = np.array([0.229, 0.224, 0.225]) * 255


def _png_of(pixels):
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format='PNG')
  return buf.getvalue()


def _png(height, width):
  return _png_of(np.full((height, width, 3), 100, np.uint8))


def _fake_postprocess(raw, valid_size):
  """Three detections per image in model-input pixels; two are real.

  The first score is `valid_height / 100`, so the test sees which valid size
  reached the post-processing.
  """
  batch = tf.shape(raw)[0]
  tile = lambda t: tf.tile(tf.constant(t)[tf.newaxis], [batch] + [1] * len(t.shape))  # noqa: E731
  boxes = tile(np.array([[4, 8, 16, 32], [0, 0, 40, 40], [0, 0, 0, 0]], np.float32))
  scores = tf.stack([valid_size[:, 0] / 100, tf.fill([batch], 0.5), tf.zeros([batch])], 1)
  return {'detection_boxes': boxes, 'detection_scores': scores,
          'detection_classes': tile(np.array([1, 2, 0], np.int32)),
          'num_detections': tf.fill([batch], 2)}


def _detector(**kwargs):
  return export_module.DetectionExportModule(
      lambda x: x, _fake_postprocess, (32, 32), [0, 7, 90], {7: 'seven'}, **kwargs)


def _logits(x):
  """`[B, 4]`: the mean of each normalized channel, and 0."""
  means = tf.reduce_mean(x, [1, 2])
  return tf.concat([means, tf.zeros_like(means[:, :1])], 1)


class DetectionExportModuleTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.module = _detector()
    cls.fns = cls.module.signatures()  # traced once for the class

  def _check_one(self, out, index, image_size, scale, valid_height):
    h, w = image_size
    boxes = np.array([[4, 8, 16, 32], [0, 0, 40, 40], [0, 0, 0, 0]]) / scale
    boxes = np.minimum(boxes, [h, w, h, w])  # clipped to the caller's image
    self.assertAllClose(out[sig.DETECTION_BOXES][index], boxes)
    self.assertAllClose(out[sig.DETECTION_SCORES][index], [valid_height / 100, 0.5, 0])
    self.assertAllEqual(out[sig.DETECTION_CLASSES][index], [7, 90, 0])
    self.assertAllEqual(out[sig.DETECTION_CLASS_NAMES][index], [b'seven', b'90', b''])
    self.assertEqual(int(out[sig.NUM_DETECTIONS][index]), 2)

  def test_image_tensor_boxes_in_the_callers_pixels(self):
    self.assertCountEqual(self.fns, sig.SIGNATURES)
    out = self.fns[sig.IMAGE_TENSOR](tf.zeros([2, 16, 8, 3], tf.uint8))
    self.assertEqual(out[sig.NUM_DETECTIONS].dtype, tf.int32)
    self.assertEqual(out[sig.DETECTION_CLASSES].dtype, tf.int32)
    # 16 x 8 fits 32 x 32 at scale 2: valid 32 x 16.
    for i in range(2):
      self._check_one(out, i, (16, 8), 2.0, 32)

  def test_bytes_are_prepared_one_by_one(self):
    out = self.fns[sig.IMAGE_BYTES](
        tf.constant([_png(16, 8), _png(64, 32)]))
    self._check_one(out, 0, (16, 8), 2.0, 32)
    self._check_one(out, 1, (64, 32), 0.5, 32)

  def test_tf_examples_read_image_encoded(self):
    example = tf.train.Example()
    example.features.feature['image/encoded'].bytes_list.value.append(_png(8, 16))
    out = self.fns[sig.TF_EXAMPLE](
        tf.constant([example.SerializeToString()]))
    self._check_one(out, 0, (8, 16), 2.0, 16)

  def test_refusals_name_the_input(self):
    fns = _detector(max_image_pixels=100).signatures()
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r'image_bytes\[1\]: the image is 16 x 8 pixels; at most 100'):
      fns[sig.IMAGE_BYTES](tf.constant([_png(8, 8), _png(16, 8)]))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                'images: the image is 16 x 8 pixels'):
      fns[sig.IMAGE_TENSOR](tf.zeros([1, 16, 8, 3], tf.uint8))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r'tf_examples image/encoded\[0\]: the image is empty'):
      fns[sig.TF_EXAMPLE](tf.constant([tf.train.Example().SerializeToString()]))

  def test_saved_signatures_keep_their_input_names(self):
    path = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, path)
    tf.saved_model.save(self.module, path, signatures=self.fns)
    loaded = tf.saved_model.load(path)
    out = loaded.signatures[sig.IMAGE_BYTES](image_bytes=tf.constant([_png(16, 8)]))
    self.assertCountEqual(out, sig.DETECTION_OUTPUTS)
    self._check_one(out, 0, (16, 8), 2.0, 32)
    self.assertTrue(os.path.exists(os.path.join(path, 'saved_model.pb')))


def _fake_maskrcnn(images, image_info):
  """A Mask R-CNN's inference outputs: three detections, two real, with masks.

  Scores carry `image_info` (valid height / 100, original height / 1000), so
  the test sees the rows the network received. Masks (28 x 28 over each
  box): all ones; the top half; all ones for the padding row (must be
  dropped).
  """
  batch = tf.shape(images)[0]
  tile = lambda t: tf.tile(tf.constant(t)[tf.newaxis], [batch] + [1] * len(t.shape))  # noqa: E731
  masks = np.ones([3, 28, 28], np.float32)
  masks[1, 14:] = 0.0
  return {
      'detection_boxes': tile(np.array([[4, 8, 16, 32], [0, 0, 40, 40], [0, 0, 40, 40]],
                                       np.float32)),
      'detection_scores': tf.stack([image_info[:, 1, 0] / 100, image_info[:, 0, 0] / 1000,
                                    tf.zeros([batch])], 1),
      'detection_classes': tile(np.array([1, 2, 1], np.int32)),
      'num_detections': tf.fill([batch], 2),
      'detection_masks': tile(masks),
      'rpn_scores': {'3': tf.zeros([batch, 4, 4, 3])},
  }


def _maskrcnn(**kwargs):
  return export_module.MaskRCNNExportModule(
      _fake_maskrcnn, (32, 32), [0, 7, 90], {7: 'seven'}, **kwargs)


def _expected_masks(image_size, scale, frame):
  """uint8 `[3, H, W]`: the fake's masks in the caller's pixels.

  `paste_masks` (tested on its own) over the fake's boxes divided by `scale`,
  thresholded, cut to the image's own size, padded to `frame`; the padding
  row stays zero.
  """
  h, w = image_size
  masks = np.ones([2, 28, 28], np.float32)
  masks[1, 14:] = 0.0
  boxes = np.array([[4, 8, 16, 32], [0, 0, 40, 40]], np.float32) / scale
  pasted = mask_ops.binarize(mask_ops.paste_masks(masks, boxes, h, w)).numpy()
  out = np.zeros((3, *frame), np.uint8)
  out[:2, :h, :w] = pasted
  return out


class MaskRCNNExportModuleTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns = _maskrcnn().signatures()

  def test_image_tensor_masks_in_the_callers_pixels(self):
    out = self.fns[sig.IMAGE_TENSOR](tf.zeros([2, 16, 8, 3], tf.uint8))
    self.assertCountEqual(out, sig.DETECTION_OUTPUTS + (sig.DETECTION_MASKS,))
    masks = out[sig.DETECTION_MASKS]
    self.assertEqual(masks.dtype, tf.uint8)
    self.assertEqual(masks.shape, (2, 3, 16, 8))
    for i in range(2):
      self.assertAllEqual(masks[i], _expected_masks((16, 8), 2.0, (16, 8)))
      # image_info: valid 32 x 16, original 16 x 8.
      self.assertAllClose(out[sig.DETECTION_SCORES][i], [0.32, 0.016, 0.0])
      self.assertAllClose(out[sig.DETECTION_BOXES][i],
                          [[2, 4, 8, 8], [0, 0, 16, 8], [0, 0, 0, 0]])
      self.assertEqual(int(out[sig.NUM_DETECTIONS][i]), 2)
    # By hand: box 0 is rows 2..8, columns 4..16 of the 16 x 8 image (cut at 8);
    # the top half of box 1: rows 0..10.
    want = np.zeros((16, 8), np.uint8)
    want[2:8, 4:8] = 1
    self.assertAllEqual(masks[0, 0], want)
    want = np.zeros((16, 8), np.uint8)
    want[:10] = 1
    self.assertAllEqual(masks[0, 1], want)
    self.assertAllEqual(masks[:, 2], np.zeros((2, 16, 8)))  # past num_detections

  def test_bytes_of_two_sizes_share_the_largest_frame(self):
    out = self.fns[sig.IMAGE_BYTES](tf.constant([_png(16, 8), _png(64, 32)]))
    masks = out[sig.DETECTION_MASKS].numpy()
    self.assertEqual(masks.shape, (2, 3, 64, 32))
    self.assertAllEqual(masks[0], _expected_masks((16, 8), 2.0, (64, 32)))
    self.assertAllEqual(masks[1], _expected_masks((64, 32), 0.5, (64, 32)))
    # Image 0's box reaches past its 16 x 8 pixels: nothing is pasted there.
    self.assertEqual(int(masks[0, :, 16:].sum() + masks[0, :, :, 8:].sum()), 0)

  def test_png_format_holds_the_same_masks_at_each_images_size(self):
    fns = _maskrcnn(mask_format='png').signatures()
    out = fns[sig.IMAGE_BYTES](tf.constant([_png(16, 8), _png(64, 32)]))
    self.assertCountEqual(out, sig.DETECTION_OUTPUTS + (sig.DETECTION_MASKS_PNG,))
    pngs = out[sig.DETECTION_MASKS_PNG].numpy()
    self.assertEqual(pngs.shape, (2, 3))
    for i, (size, scale) in enumerate((((16, 8), 2.0), ((64, 32), 0.5))):
      want = _expected_masks(size, scale, size)
      for k in range(2):
        decoded = np.asarray(Image.open(io.BytesIO(pngs[i, k])))
        self.assertEqual(decoded.shape, size)
        self.assertAllEqual(decoded, want[k])
      self.assertEqual(pngs[i, 2], b'')

  def test_saved_and_loaded(self):
    path = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, path)
    module = _maskrcnn()
    tf.saved_model.save(module, path, signatures=module.signatures())
    out = tf.saved_model.load(path).signatures[sig.TF_EXAMPLE](tf_examples=tf.constant(
        [tf.train.Example(features=tf.train.Features(feature={
            'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[_png(8, 16)]))})).SerializeToString()]))
    self.assertAllEqual(out[sig.DETECTION_MASKS][0],
                        _expected_masks((8, 16), 2.0, (8, 16)))

  def test_unknown_mask_format(self):
    with self.assertRaisesRegex(ValueError, 'mask_format'):
      _maskrcnn(mask_format='rle')


class ClassificationExportModuleTest(tf.test.TestCase):

  def test_logits_probabilities_and_top_k(self):
    module = export_module.ClassificationExportModule(
        _logits, (8, 8), [3, 5, 8, 9], {3: 'a', 5: 'b'}, top_k=10)
    self.assertEqual(module.top_k, 4)  # capped at the number of classes
    colour = np.array([200, 10, 120])
    image = np.broadcast_to(colour, (12, 20, 3)).astype(np.uint8)
    out = module.signatures()[sig.IMAGE_TENSOR](tf.constant(image[np.newaxis]))
    logits = np.append((colour - _MEAN) / _STD, 0.0)
    probabilities = np.exp(logits) / np.exp(logits).sum()
    order = np.argsort(-probabilities)
    self.assertCountEqual(out, sig.CLASSIFICATION_OUTPUTS)
    self.assertAllClose(out[sig.LOGITS][0], logits, atol=1e-4)
    self.assertAllClose(out[sig.PROBABILITIES][0], probabilities, atol=1e-5)
    self.assertAllEqual(out[sig.TOP_K_CLASSES][0], np.array([3, 5, 8, 9])[order])
    self.assertAllClose(out[sig.TOP_K_SCORES][0], probabilities[order], atol=1e-5)
    # No background: class index 0 keeps its name.
    self.assertAllEqual(out[sig.TOP_K_CLASS_NAMES][0],
                        np.array([b'a', b'b', b'8', b'9'])[order])

  def test_the_center_crop_is_what_the_network_sees(self):
    module = export_module.ClassificationExportModule(
        _logits, (4, 4), [1, 2, 3, 4], {}, top_k=2, center_crop_fraction=0.5)
    image = np.zeros((8, 8, 3), np.uint8)
    image[2:6, 2:6] = 255  # exactly the central half: the border is cut off
    out = module.signatures()[sig.IMAGE_BYTES](tf.constant([_png_of(image)]))
    self.assertAllClose(out[sig.LOGITS][0][:3], (255 - _MEAN) / _STD, atol=1e-4)
    self.assertEqual(out[sig.TOP_K_CLASSES].shape, (1, 2))


class NetworkInputSizeTest(tf.test.TestCase):

  def test_static_or_none(self):
    fixed = types.SimpleNamespace(backbone=types.SimpleNamespace(
        input_shape=(None, 64, 96, 3)))
    self.assertEqual(export_module.network_input_size(fixed), (64, 96))
    free = types.SimpleNamespace(backbone=types.SimpleNamespace(
        input_shape=(None, None, None, 3)))
    self.assertIsNone(export_module.network_input_size(free))


if __name__ == '__main__':
  tf.test.main()
