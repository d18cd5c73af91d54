"""predict_lib: summaries of detections and classes, and predict_files with a stand-in predictor."""
import io
import json
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image

from spinenet.serving import draw
from spinenet.serving import predict_lib
from spinenet.serving import signatures as sig


def _detection_result(names=None):
  result = {
      sig.DETECTION_BOXES: np.array([[10.123, 20.456, 40.0, 60.0],
                                     [5.0, 5.0, 30.0, 30.0],
                                     [1.0, 1.0, 2.0, 2.0],
                                     [0.0, 0.0, 0.0, 0.0]], np.float32),
      sig.DETECTION_SCORES: np.array([0.912345, 0.5, 0.1, 0.0], np.float32),
      sig.DETECTION_CLASSES: np.array([3, 7, 3, 0], np.int32),
      sig.NUM_DETECTIONS: np.int32(3),
  }
  if names is not None:
    result[sig.DETECTION_CLASS_NAMES] = np.array(names, object)
  return result


class _FakePredictor:
  """Answers each image with one detection covering its top-left quarter."""

  def __init__(self):
    self.calls = []

  def predict(self, images):
    self.calls.append(len(images))
    results = []
    for data in images:
      w, h = Image.open(io.BytesIO(data)).size
      results.append({
          sig.DETECTION_BOXES: np.array([[0, 0, h / 2, w / 2]], np.float32),
          sig.DETECTION_SCORES: np.array([0.8], np.float32),
          sig.DETECTION_CLASSES: np.array([2], np.int32),
          sig.DETECTION_CLASS_NAMES: np.array(['square'], object),
          sig.NUM_DETECTIONS: np.int32(1)})
    return results


class AnnotateTest(absltest.TestCase):

  def test_detections_above_the_threshold_with_rounded_values(self):
    image = np.zeros((80, 100, 3), np.uint8)
    drawn, info = predict_lib.annotate(image, _detection_result(['tri', '', 'tri', '']),
                                       min_score=0.3, label_map={7: 'seven'})
    self.assertEqual(info, {'detections': [
        {'box': [10.12, 20.46, 40.0, 60.0], 'class': 3, 'name': 'tri', 'score': 0.9123},
        # An empty name falls back to the label map.
        {'box': [5.0, 5.0, 30.0, 30.0], 'class': 7, 'name': 'seven', 'score': 0.5}]})
    self.assertEqual(drawn.shape, image.shape)
    self.assertTrue(np.any(np.all(drawn == draw.class_color(7), axis=-1)))

  def test_names_fall_back_to_the_category_id(self):
    _, info = predict_lib.annotate(np.zeros((8, 8, 3), np.uint8), _detection_result(),
                                   min_score=0.05)
    self.assertEqual([d['name'] for d in info['detections']], ['3', '7', '3'])

  def test_classes(self):
    result = {sig.TOP_K_CLASSES: np.array([4, 1]),
              sig.TOP_K_SCORES: np.array([0.612345, 0.2]),
              sig.TOP_K_CLASS_NAMES: np.array(['', 'one'], object)}
    drawn, info = predict_lib.annotate(np.zeros((40, 120, 3), np.uint8), result,
                                       label_map={4: 'four'})
    self.assertEqual(info, {'classes': [{'class': 4, 'name': 'four', 'score': 0.6123},
                                        {'class': 1, 'name': 'one', 'score': 0.2}]})
    self.assertTrue(drawn.any())

  def test_unknown_outputs(self):
    with self.assertRaisesRegex(ValueError, r"Unknown prediction outputs \['logits'\]"):
      predict_lib.annotate(np.zeros((4, 4, 3), np.uint8), {'logits': np.zeros(3)})


def _png(mask):
  buffer = io.BytesIO()
  Image.fromarray(mask).save(buffer, format='PNG')
  return buffer.getvalue()


class AnnotateMasksTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.result = _detection_result(['tri', 'seven', 'tri', ''])
    masks = np.zeros((4, 80, 100), np.uint8)
    masks[0, 10:40, 20:60] = 1
    masks[1, 5:30, 5:30] = 1
    masks[2, 1:2, 1:2] = 1
    self.masks = masks

  def _check(self, result, image):
    drawn, info = predict_lib.annotate(image, result, min_score=0.3)
    self.assertEqual([d['mask_area'] for d in info['detections']], [30 * 40, 25 * 25])
    self.assertEqual(drawn.shape, image.shape)
    # Inside mask 0 only (not on its box edge): blended with class 3's colour.
    alpha = draw.MASK_ALPHA
    want = np.round((1 - alpha) * 50 + alpha * np.array(draw.class_color(3)))
    np.testing.assert_array_equal(drawn[35, 50], want)
    np.testing.assert_array_equal(drawn[70, 90], [50, 50, 50])  # outside every mask
    return info

  def test_dense_masks_cut_to_the_image(self):
    image = np.full((80, 100, 3), 50, np.uint8)
    # A batch frame of 90 x 120 (another image of the batch was larger).
    padded = np.zeros((4, 90, 120), np.uint8)
    padded[:, :80, :100] = self.masks
    padded[0, 85:, 110:] = 1  # beyond the image: ignored
    self._check(dict(self.result, **{sig.DETECTION_MASKS: padded}), image)

  def test_png_masks(self):
    image = np.full((80, 100, 3), 50, np.uint8)
    pngs = np.array([_png(m) for m in self.masks[:3]] + [b''], object)
    self._check(dict(self.result, **{sig.DETECTION_MASKS_PNG: pngs}), image)
    wrong = pngs.copy()
    wrong[1] = _png(self.masks[1, :40])
    with self.assertRaisesRegex(ValueError, r'detection_masks_png_bytes\[1\] is 40 x 100'):
      predict_lib.annotate(image, dict(self.result, **{sig.DETECTION_MASKS_PNG: wrong}))

  def test_no_masks_no_mask_area(self):
    _, info = predict_lib.annotate(np.zeros((80, 100, 3), np.uint8), self.result)
    self.assertNotIn('mask_area', info['detections'][0])


class PredictFilesTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)
    os.makedirs(os.path.join(self.root, 'in'))
    self.paths = []
    for i, (size, fmt) in enumerate((((40, 30), 'PNG'), ((64, 48), 'JPEG'),
                                     ((20, 20), 'PNG'))):
      path = os.path.join(self.root, 'in', f'im{i}.{fmt.lower()}')
      Image.new('RGB', size, (30, 60, 90)).save(path, format=fmt)
      self.paths.append(path)

  def test_writes_annotated_pngs_and_predictions_json(self):
    predictor = _FakePredictor()
    out = os.path.join(self.root, 'out')
    summary = predict_lib.predict_files(predictor, self.paths, out, batch_size=2)
    self.assertEqual(predictor.calls, [2, 1])
    with open(os.path.join(out, 'predictions.json')) as f:
      self.assertEqual(json.load(f), summary)
    self.assertEqual([s['image'] for s in summary], self.paths)
    self.assertEqual([s['output'] for s in summary],
                     [os.path.join(out, f'im{i}.png') for i in range(3)])
    self.assertEqual(summary[1]['detections'],
                     [{'box': [0.0, 0.0, 24.0, 32.0], 'class': 2, 'name': 'square',
                       'score': 0.8}])
    drawn = np.asarray(Image.open(summary[1]['output']))
    self.assertEqual(drawn.shape, (48, 64, 3))
    color = draw.class_color(2)
    self.assertTrue(np.all(drawn[23, 2:30] == color))  # bottom edge of the box

  def test_refuses_to_write_over_its_inputs_or_run_on_nothing(self):
    with self.assertRaisesRegex(ValueError, 'holds input images'):
      predict_lib.predict_files(_FakePredictor(), self.paths, os.path.join(self.root, 'in'))
    with self.assertRaisesRegex(ValueError, 'No input images'):
      predict_lib.predict_files(_FakePredictor(), [], os.path.join(self.root, 'out'))


if __name__ == '__main__':
  absltest.main()
