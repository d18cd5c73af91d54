"""Exports load as SavedModels and answer like the Keras model, on every signature."""
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from spinenet.serving import export_lib
from spinenet.serving import signatures as sig

import serving_testing

# A non-identity class -> category map, so the test sees the mapping applied.
CLASS_TO_CATEGORY = [0, 11, 12, 13, 14]
LABEL_MAP = {11: 'circle', 12: 'square', 13: 'triangle', 14: 'cross'}
MAX_PIXELS = 40_000


def _reference_detections(model, pixels):
  """The Keras model's detections, classes mapped to category ids."""
  reference = serving_testing.keras_detections(model, pixels)
  reference['classes'] = np.take(CLASS_TO_CATEGORY, reference['classes'])
  return reference


def _tempdir(test):
  path = tempfile.mkdtemp()
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


class DetectionExportTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.model = serving_testing.retinanet_fn(seed=0)()
    cls.checkpoint = serving_testing.write_checkpoint(cls.model, os.path.join(cls.tmp, 'ckpt'))
    # A fresh model (other random weights) restores the checkpoint.
    cls.result = export_lib.export_saved_model(
        serving_testing.retinanet_fn(seed=1), os.path.join(cls.tmp, 'export'),
        checkpoint=os.path.dirname(cls.checkpoint), label_map=LABEL_MAP,
        class_to_category=CLASS_TO_CATEGORY,
        options=export_lib.ExportOptions(max_image_pixels=MAX_PIXELS))
    cls.loaded = tf.saved_model.load(cls.result.path)
    cls.pixels = serving_testing.image(96, 144)
    cls.reference = _reference_detections(cls.model, cls.pixels)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _check(self, outputs, index=0):
    ref = self.reference
    num = int(outputs[sig.NUM_DETECTIONS][index])
    self.assertEqual(num, len(ref['scores']))
    self.assertAllClose(outputs[sig.DETECTION_SCORES][index, :num], ref['scores'], atol=1e-4)
    self.assertAllClose(outputs[sig.DETECTION_BOXES][index, :num], ref['boxes'], atol=0.02)
    self.assertAllEqual(outputs[sig.DETECTION_CLASSES][index, :num], ref['classes'])
    names = [n.decode() for n in outputs[sig.DETECTION_CLASS_NAMES][index, :num].numpy()]
    self.assertEqual(names, [LABEL_MAP[c] for c in ref['classes']])
    # Padding rows are zeros.
    self.assertAllEqual(outputs[sig.DETECTION_SCORES][index, num:],
                        np.zeros([100 - num], np.float32))
    self.assertAllEqual(outputs[sig.DETECTION_CLASSES][index, num:], np.zeros([100 - num]))

  def test_the_reference_has_varied_detections(self):
    self.assertGreater(len(self.reference['scores']), 10)
    self.assertGreater(len(set(self.reference['classes'].tolist())), 1)
    # Boxes are in the caller's 96 x 144 image, past the 128 px model input.
    self.assertLessEqual(self.reference['boxes'][:, 2].max(), 96.0)
    self.assertGreater(self.reference['boxes'][:, 3].max(), 128.0)

  def test_layout_and_assets(self):
    self.assertEqual(self.result.path, os.path.join(self.tmp, 'export', '1'))
    self.assertCountEqual(self.loaded.signatures, sig.SIGNATURES)
    with open(os.path.join(self.result.path, 'assets', sig.LABEL_MAP_ASSET)) as f:
      self.assertEqual({int(k): v for k, v in json.load(f).items()}, LABEL_MAP)
    with open(os.path.join(self.result.path, 'assets', sig.EXPORT_INFO_ASSET)) as f:
      info = json.load(f)
    self.assertEqual(info['task'], 'detection')
    self.assertGreater(info['batch_norms_folded'], 20)
    self.assertEqual(info['checkpoint'], self.checkpoint)
    spec = self.loaded.signatures[sig.IMAGE_TENSOR].structured_input_signature[1]
    self.assertEqual(spec['images'].dtype, tf.uint8)
    self.assertEqual(spec['images'].shape.as_list(), [None, None, None, 3])

  def test_image_tensor_signature(self):
    batch = tf.constant(np.stack([self.pixels, self.pixels]))
    outputs = self.loaded.signatures[sig.IMAGE_TENSOR](images=batch)
    self._check(outputs, 0)
    self._check(outputs, 1)

  def test_image_bytes_signature(self):
    encoded = serving_testing.encode(self.pixels, 'PNG')  # lossless: same pixels
    outputs = self.loaded.signatures[sig.IMAGE_BYTES](image_bytes=tf.constant([encoded]))
    self._check(outputs)

  def test_tf_example_signature(self):
    example = serving_testing.tf_example(serving_testing.encode(self.pixels, 'PNG'))
    outputs = self.loaded.signatures[sig.TF_EXAMPLE](tf_examples=tf.constant([example]))
    self._check(outputs)

  def test_images_of_different_sizes_in_one_bytes_batch(self):
    small = serving_testing.image(64, 48, seed=3)
    batch = [serving_testing.encode(small, 'PNG'), serving_testing.encode(self.pixels, 'PNG')]
    outputs = self.loaded.signatures[sig.IMAGE_BYTES](image_bytes=tf.constant(batch))
    self._check(outputs, 1)
    num = int(outputs[sig.NUM_DETECTIONS][0])
    boxes = outputs[sig.DETECTION_BOXES][0, :num].numpy()
    self.assertLessEqual(boxes[:, 2].max(), 64.0)
    self.assertLessEqual(boxes[:, 3].max(), 48.0)

  def test_unfolded_export_matches_too(self):
    result = export_lib.export_saved_model(
        lambda: self.model, os.path.join(self.tmp, 'export'),
        label_map=LABEL_MAP, class_to_category=CLASS_TO_CATEGORY,
        options=export_lib.ExportOptions(fold_batch_norm=False))
    self.assertEqual(result.version, 2)
    self.assertTrue(os.listdir(os.path.join(result.path, 'variables')))
    loaded = tf.saved_model.load(result.path)
    self._check(loaded.signatures[sig.IMAGE_TENSOR](images=tf.constant(self.pixels[None])))

  def test_winograd_model_exports_plain_convolutions(self):
    # A model built for CPU training with Winograd convs restores the same
    # checkpoint and exports a graph without XLA clusters (TF Serving, folding).
    result = export_lib.export_saved_model(
        serving_testing.retinanet_fn(seed=2, winograd_min_size=8),
        _tempdir(self), checkpoint=os.path.dirname(self.checkpoint),
        label_map=LABEL_MAP, class_to_category=CLASS_TO_CATEGORY)
    with open(os.path.join(result.path, 'saved_model.pb'), 'rb') as f:
      self.assertNotIn(b'_XlaMustCompile', f.read())
    loaded = tf.saved_model.load(result.path)
    self._check(loaded.signatures[sig.IMAGE_TENSOR](images=tf.constant(self.pixels[None])))

  def _refused(self, signature, message, **inputs):
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
      self.loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})

  def test_bad_inputs_are_refused_with_clear_errors(self):
    self._refused(sig.IMAGE_BYTES, r'image_bytes\[0\]: the image is empty',
                  image_bytes=[b''])
    self._refused(sig.IMAGE_BYTES, r'image_bytes\[1\]: not an image',
                  image_bytes=[serving_testing.encode(self.pixels), b'hello, world'])
    self._refused(sig.IMAGE_BYTES, r'the image is 100000 x 100000 pixels; at most 40000',
                  image_bytes=[serving_testing.png_header(100_000, 100_000)])
    self._refused(sig.IMAGE_TENSOR, r'images: the image is 256 x 256 pixels',
                  images=np.zeros([1, 256, 256, 3], np.uint8))
    self._refused(sig.TF_EXAMPLE, r'tf_examples image/encoded\[0\]: the image is empty',
                  tf_examples=[tf.train.Example().SerializeToString()])
    self._refused(sig.IMAGE_BYTES, 'JPEG|jpeg|Invalid',
                  image_bytes=[serving_testing.encode(self.pixels, 'JPEG')[:200]])


class MaskRCNNExportTest(tf.test.TestCase):
  """The tiny Mask R-CNN, exported (batch norms folded) and loaded."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.model = serving_testing.maskrcnn_fn(seed=0)()
    checkpoint = serving_testing.write_checkpoint(cls.model, os.path.join(cls.tmp, 'ckpt'))
    cls.result = export_lib.export_saved_model(
        serving_testing.maskrcnn_fn(seed=1), os.path.join(cls.tmp, 'export'),
        checkpoint=checkpoint, label_map=LABEL_MAP, class_to_category=CLASS_TO_CATEGORY)
    cls.loaded = tf.saved_model.load(cls.result.path)
    cls.pixels = serving_testing.image(96, 144)
    cls.reference = serving_testing.keras_maskrcnn(cls.model, cls.pixels)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _check(self, outputs, index=0, masks_key=sig.DETECTION_MASKS):
    ref = self.reference
    num = int(outputs[sig.NUM_DETECTIONS][index])
    self.assertEqual(num, len(ref['scores']))
    self.assertAllClose(outputs[sig.DETECTION_SCORES][index, :num], ref['scores'], atol=1e-4)
    self.assertAllClose(outputs[sig.DETECTION_BOXES][index, :num], ref['boxes'], atol=0.02)
    self.assertAllEqual(outputs[sig.DETECTION_CLASSES][index, :num],
                        np.take(CLASS_TO_CATEGORY, ref['classes']))
    if masks_key == sig.DETECTION_MASKS:
      masks = outputs[masks_key][index].numpy()
      self.assertEqual(masks.dtype, np.uint8)
      self.assertAllEqual(masks[num:], np.zeros_like(masks[num:]))
      masks = masks[:num]
    else:
      pngs = outputs[masks_key][index].numpy()
      self.assertTrue(all(p == b'' for p in pngs[num:]))
      masks = np.stack([tf.io.decode_png(p)[..., 0].numpy() for p in pngs[:num]])
    self.assertEqual(masks.shape, ref['masks'].shape)
    # Folding changes float rounding: a pixel may cross the 0.5 threshold.
    differ = np.sum(masks != ref['masks'])
    self.assertLessEqual(differ, 0.001 * ref['masks'].size + 2)
    self.assertGreater(np.sum(ref['masks']), 500)

  def test_the_reference_has_masks_of_varied_sizes(self):
    areas = self.reference['masks'].sum((1, 2))
    self.assertGreater(len(areas), 5)
    self.assertGreater(areas.max(), 2 * max(areas.min(), 1))

  def test_info(self):
    self.assertEqual(self.result.task, 'instance_segmentation')
    self.assertEqual(self.result.info['mask_output'], sig.DETECTION_MASKS)
    self.assertGreater(self.result.info['batch_norms_folded'], 20)

  def test_three_signatures_carry_masks_in_the_callers_pixels(self):
    encoded = serving_testing.encode(self.pixels, 'PNG')
    for outputs in (
        self.loaded.signatures[sig.IMAGE_TENSOR](images=tf.constant(self.pixels[None])),
        self.loaded.signatures[sig.IMAGE_BYTES](image_bytes=tf.constant([encoded])),
        self.loaded.signatures[sig.TF_EXAMPLE](tf_examples=tf.constant(
            [serving_testing.tf_example(encoded)]))):
      self.assertCountEqual(outputs, sig.DETECTION_OUTPUTS + (sig.DETECTION_MASKS,))
      self.assertEqual(outputs[sig.DETECTION_MASKS].shape, (1, 20, 96, 144))
      self._check(outputs)

  def test_png_masks_unfolded(self):
    result = export_lib.export_saved_model(
        lambda: self.model, _tempdir(self), label_map=LABEL_MAP,
        class_to_category=CLASS_TO_CATEGORY,
        options=export_lib.ExportOptions(mask_format='png', fold_batch_norm=False))
    loaded = tf.saved_model.load(result.path)
    outputs = loaded.signatures[sig.IMAGE_BYTES](image_bytes=tf.constant(
        [serving_testing.encode(self.pixels, 'PNG')]))
    self.assertNotIn(sig.DETECTION_MASKS, outputs)
    self._check(outputs, masks_key=sig.DETECTION_MASKS_PNG)


class ExportErrorsTest(tf.test.TestCase):

  def test_versions(self):
    base = _tempdir(self)
    self.assertEqual(export_lib.next_version(base), 1)
    os.makedirs(os.path.join(base, '3'))
    os.makedirs(os.path.join(base, 'notes'))
    self.assertEqual(export_lib.next_version(base), 4)
    with self.assertRaisesRegex(ValueError, r'3 already exists.*next free: 4'):
      export_lib.export_saved_model(lambda: None, base, version=3)

  def test_label_map_must_fit_the_model(self):
    with self.assertRaisesRegex(ValueError, r'\[91\].*NUM_CLASSES'):
      export_lib.class_mapping(5, {1: 'a', 91: 'b'}, None, 'detection')
    self.assertEqual(export_lib.class_mapping(3, {1: 'a'}, None, 'detection'), [0, 1, 2])
    with self.assertRaisesRegex(ValueError, '4 entries'):
      export_lib.class_mapping(5, None, [0, 1, 2, 3], 'detection')

  def test_checkpoint_of_another_model_is_refused(self):
    tmp = _tempdir(self)
    other = serving_testing.retinanet_fn(head_filters=8)()
    prefix = serving_testing.write_checkpoint(other, tmp)
    with self.assertRaisesRegex(ValueError, 'does not hold the weights'):
      export_lib.restore_weights(serving_testing.retinanet_fn()(), prefix)
    with self.assertRaisesRegex(ValueError, 'no such checkpoint'):
      export_lib.resolve_checkpoint(os.path.join(tmp, 'missing'))

  def test_options_are_checked(self):
    with self.assertRaisesRegex(ValueError, 'precision'):
      export_lib.ExportOptions(precision='float16')
    with self.assertRaisesRegex(ValueError, 'center_crop_fraction'):
      export_lib.ExportOptions(center_crop_fraction=0.0)
    with self.assertRaisesRegex(ValueError, 'mask_format'):
      export_lib.ExportOptions(mask_format='rle')
    with self.assertRaisesRegex(ValueError, '--mask_format=png applies to Mask R-CNN'):
      export_lib.build_export_module(serving_testing.classifier_fn()(),
                                     export_lib.ExportOptions(mask_format='png'))


class ClassificationExportTest(tf.test.TestCase):

  def test_outputs_match_the_keras_model(self):
    model = serving_testing.classifier_fn()()
    categories = [3, 5, 7, 9, 11]
    names = {3: 'three', 5: 'five', 7: 'seven', 9: 'nine', 11: 'eleven'}
    result = export_lib.export_saved_model(
        lambda: model, _tempdir(self), label_map=names,
        class_to_category=categories, options=export_lib.ExportOptions(top_k=3))
    self.assertEqual(result.task, 'classification')
    loaded = tf.saved_model.load(result.path)

    pixels = serving_testing.image(100, 160, seed=5)
    # The ImageNet evaluation crop: a central square of 7/8 of the short side.
    side = int(0.875 * 100)
    top, left = (100 - side) // 2, (160 - side) // 2
    crop = tf.image.resize(pixels[top:top + side, left:left + side].astype(np.float32),
                           [serving_testing.INPUT_SIZE] * 2)
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    logits = model(((crop - mean) / std)[tf.newaxis], training=False).numpy()[0]
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities)[:3]

    for outputs in (
        loaded.signatures[sig.IMAGE_TENSOR](images=tf.constant(pixels[None])),
        loaded.signatures[sig.IMAGE_BYTES](
            image_bytes=tf.constant([serving_testing.encode(pixels)]))):
      self.assertAllClose(outputs[sig.LOGITS][0], logits, atol=1e-3, rtol=1e-3)
      self.assertAllClose(outputs[sig.PROBABILITIES][0], probabilities, atol=1e-4)
      self.assertAllEqual(outputs[sig.TOP_K_CLASSES][0], np.take(categories, order))
      self.assertAllClose(outputs[sig.TOP_K_SCORES][0], probabilities[order], atol=1e-4)
      self.assertEqual([n.decode() for n in outputs[sig.TOP_K_CLASS_NAMES][0].numpy()],
                       [names[categories[i]] for i in order])


if __name__ == '__main__':
  tf.test.main()
