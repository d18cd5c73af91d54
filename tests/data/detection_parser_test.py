"""Train and eval parsers: geometry, labels, and parity with the Model Garden."""
import io

from absl.testing import parameterized
import numpy as np
from PIL import Image
import tensorflow as tf

from spinenet.data import decoder as decoder_lib
from spinenet.data import detection_parser
from spinenet.data import preprocess
from spinenet.data import tf_example
from spinenet.ops import box_ops

_ANCHORS = dict(min_level=3, max_level=5, num_scales=2,
                aspect_ratios=(0.5, 1.0, 2.0), anchor_size=3.0)


def _example(pixels, boxes_px, classes, fmt='jpeg', crowd=None,
             source_id='42'):
  """Serialized tf.Example of uint8 `pixels` with pixel yxyx `boxes_px`."""
  h, w = pixels.shape[:2]
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format=fmt.upper(), quality=95)
  boxes = [(b[0] / h, b[1] / w, b[2] / h, b[3] / w) for b in boxes_px]
  return tf_example.build_detection_example(
      buf.getvalue(), fmt, h, w, source_id, boxes, classes,
      is_crowd=crowd).SerializeToString()


def _rectangle_image(h=120, w=200, box=(30, 50, 70, 110)):
  pixels = np.full((h, w, 3), 30, np.uint8)
  pixels[box[0]:box[2], box[1]:box[3]] = 230
  return pixels, box


def _positive_boxes(parser, labels):
  """Decodes the box targets of positive anchors to output pixels."""
  weights = labels['box_weights'].numpy() > 0
  flat = np.concatenate([labels['box_targets'][l].numpy().reshape(-1, 4)
                         for l in parser.labeler.levels])
  return box_ops.decode_boxes(flat[weights],
                              parser.labeler.anchors[weights]).numpy()


def _bright_box(image):
  rgb = image.numpy() * preprocess.STDDEV_RGB + preprocess.MEAN_RGB
  ys, xs = np.nonzero(rgb[..., 0] > 130)
  if not ys.size:
    return None
  return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], float)


class TrainParserTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters('jpeg', 'png')
  def test_flip_and_jitter_move_boxes_with_the_pixels(self, fmt):
    pixels, box = _rectangle_image()
    serialized = _example(pixels, [box], [1], fmt=fmt)
    parser = detection_parser.TrainParser(
        128, aug_scale_min=0.5, aug_scale_max=2.0, **_ANCHORS)
    fn = tf.function(lambda s, seed: parser(
        decoder_lib.DetectionDecoder(decode_image=False).decode(s), seed=seed))
    flips = set()
    for i in range(10):
      image, labels = fn(serialized, tf.constant([7, i], tf.int64))
      self.assertEqual(image.shape, (128, 128, 3))
      bright = _bright_box(image)
      if bright is None:  # the crop missed the rectangle
        self.assertEqual(float(labels['num_positives']), 0.0)
        continue
      targets = _positive_boxes(parser, labels)
      self.assertAllClose(targets, np.repeat(targets[:1], len(targets), 0),
                          atol=1e-3)
      self.assertAllClose(targets[0], bright, atol=1.01)
      # image_info maps the original box to the output, before the flip.
      info = labels['image_info'].numpy()
      self.assertAllEqual(info[0], pixels.shape[:2])
      mapped = np.array(box) * np.tile(info[2], 2) - np.tile(info[3], 2)
      visible = np.minimum(128, info[1] - info[3])
      mapped = np.clip(mapped, 0, np.tile(visible, 2))
      mirrored = mapped[[0, 3, 2, 1]] * [1, -1, 1, -1] + [0, visible[1], 0,
                                                         visible[1]]
      flipped = not np.allclose(targets[0], mapped, atol=1e-3)
      self.assertAllClose(targets[0], mirrored if flipped else mapped,
                          atol=1e-3)
      flips.add(flipped)
    self.assertEqual(flips, {True, False})

  def test_same_seed_same_output(self):
    pixels, box = _rectangle_image()
    data = decoder_lib.DetectionDecoder().decode(_example(pixels, [box], [1]))
    parser = detection_parser.TrainParser(128, aug_scale_min=0.3,
                                          aug_scale_max=2.0, **_ANCHORS)
    a = parser(data, seed=tf.constant([1, 2], tf.int64))
    b = parser(data, seed=tf.constant([1, 2], tf.int64))
    c = parser(data, seed=tf.constant([1, 3], tf.int64))
    tf.nest.map_structure(self.assertAllEqual, a, b)
    self.assertNotAllClose(a[1]['image_info'], c[1]['image_info'])

  def test_static_shapes_and_contract(self):
    parser = detection_parser.TrainParser(128, **_ANCHORS)
    spec = tf.data.Dataset.from_tensors(
        _example(*_rectangle_image()[:1], [(1, 2, 30, 40)], [5])).map(
            lambda s: parser(decoder_lib.DetectionDecoder().decode(s))
        ).element_spec
    image_spec, labels = spec
    self.assertEqual(image_spec.shape, (128, 128, 3))
    self.assertEqual(image_spec.dtype, tf.float32)
    total = 0
    for level, size in (('3', 16), ('4', 8), ('5', 4)):
      self.assertEqual(labels['cls_targets'][level].shape, (size, size, 6))
      self.assertEqual(labels['cls_targets'][level].dtype, tf.int32)
      self.assertEqual(labels['box_targets'][level].shape, (size, size, 24))
      total += size * size * 6
    self.assertEqual(labels['cls_weights'].shape, (total,))
    self.assertEqual(labels['box_weights'].shape, (total,))
    self.assertEqual(labels['num_positives'].shape, ())
    self.assertEqual(labels['image_info'].shape, (4, 2))

  def test_crowd_boxes_make_anchors_ignored(self):
    pixels = np.full((128, 128, 3), 50, np.uint8)
    serialized = _example(pixels, [(10, 10, 50, 50), (60, 60, 120, 120)],
                          [1, 2], crowd=[0, 1])
    data = decoder_lib.DetectionDecoder().decode(serialized)
    for as_ignore in (True, False):
      parser = detection_parser.TrainParser(
          128, aug_rand_hflip=False, crowd_as_ignore=as_ignore, **_ANCHORS)
      _, labels = parser(data)
      classes = np.concatenate([labels['cls_targets'][l].numpy().ravel()
                                for l in parser.labeler.levels])
      self.assertNotIn(2, classes)  # a crowd box is never a positive
      self.assertIn(1, classes)
      ignored = float(tf.reduce_sum(1 - labels['cls_weights']))
      self.assertEqual(ignored > 0, as_ignore)

  def test_labels_equal_model_garden(self):
    from official.vision.dataloaders import retinanet_input  # pylint: disable=g-import-not-at-top
    from official.vision.dataloaders import tf_example_decoder  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)
    boxes = [(10, 20, 60, 90), (40, 30, 45, 140), (100, 150, 148, 199),
             (0, 0, 150, 200), (70, 80, 72, 83)]
    serialized = _example(pixels, boxes, [3, 1, 90, 7, 2])
    ours = detection_parser.TrainParser(256, aug_rand_hflip=False, **_ANCHORS)
    image, labels = ours(
        decoder_lib.DetectionDecoder(decode_image=False).decode(serialized))
    mg = retinanet_input.Parser(
        output_size=[256, 256], aug_rand_hflip=False, dtype='float32',
        **_ANCHORS)
    mg_image, mg_labels = mg._parse_train_data(  # pylint: disable=protected-access
        tf_example_decoder.TfExampleDecoder().decode(serialized))
    self.assertAllClose(image, mg_image, atol=1e-4)
    # Row 1 differs on purpose: ours is the scaled image size, the Model
    # Garden's the output size.
    self.assertAllClose(tf.gather(labels['image_info'], [0, 2, 3]),
                        tf.gather(mg_labels['image_info'], [0, 2, 3]))
    for level in ours.labeler.levels:
      # The Model Garden writes -1 for background and ignored anchors.
      self.assertAllEqual(labels['cls_targets'][level],
                          np.maximum(mg_labels['cls_targets'][level], 0))
    self.assertAllEqual(labels['cls_weights'], mg_labels['cls_weights'])
    self.assertAllEqual(labels['box_weights'], mg_labels['box_weights'])
    positive = labels['box_weights'].numpy() > 0
    self.assertGreater(positive.sum(), 5)
    flat = lambda t: np.concatenate(  # pylint: disable=g-long-lambda
        [t[l].numpy().reshape(-1, 4) for l in ours.labeler.levels])
    self.assertAllClose(flat(labels['box_targets'])[positive],
                        flat(mg_labels['box_targets'])[positive], atol=1e-5)
    self.assertFalse(flat(labels['box_targets'])[~positive].any())

  def test_output_size_must_divide_by_the_largest_stride(self):
    with self.assertRaisesRegex(ValueError, r'2\*\*max_level=32.*\[96, 96\]'):
      detection_parser.TrainParser(100, **_ANCHORS)


class EvalParserTest(tf.test.TestCase):

  def test_resize_to_fit_keeps_original_boxes(self):
    pixels, box = _rectangle_image(100, 160, (20, 40, 60, 120))
    serialized = _example(pixels, [box, (0, 0, 10, 10)], [4, 9],
                          source_id='123456')
    parser = detection_parser.EvalParser(128, max_level=5,
                                         max_num_instances=4)
    image, labels = parser(decoder_lib.DetectionDecoder().decode(serialized))
    self.assertEqual(image.shape, (128, 128, 3))
    self.assertEqual(int(labels['source_id']), 123456)
    self.assertEqual(labels['source_id'].dtype, tf.int64)
    info = labels['image_info'].numpy()
    self.assertAllClose(info, [[100, 160], [80, 128], [0.8, 0.8], [0, 0]])
    self.assertAllEqual(image[80:], np.zeros((48, 128, 3)))  # padding
    bright = _bright_box(image)
    self.assertAllClose(bright, np.array(box) * 0.8, atol=1.01)
    gt = labels['groundtruths']
    self.assertEqual(int(gt['num_detections']), 2)
    self.assertAllClose(gt['boxes'], [box, (0, 0, 10, 10)] + [[-1] * 4] * 2,
                        atol=1e-4)
    self.assertAllEqual(gt['classes'], [4, 9, -1, -1])
    self.assertAllEqual(gt['is_crowd'], [False] * 4)
    self.assertEqual((int(gt['height']), int(gt['width'])), (100, 160))

  def test_non_numeric_source_id_hashes(self):
    pixels, box = _rectangle_image()
    serialized = _example(pixels, [box], [1], source_id='img_7.jpg')
    parser = detection_parser.EvalParser(128)
    _, labels = parser(decoder_lib.DetectionDecoder().decode(serialized))
    self.assertGreaterEqual(int(labels['source_id']), 0)


if __name__ == '__main__':
  tf.test.main()
