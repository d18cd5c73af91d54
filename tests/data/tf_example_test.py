"""tf_example.build_detection_example: keys, values, defaults, length checks."""
import numpy as np
import tensorflow as tf

from spinenet.data import tf_example


def _features(example):
  """`{key: list of values}` of a `tf.train.Example`."""
  out = {}
  for key, feature in example.features.feature.items():
    kind = feature.WhichOneof('kind')
    out[key] = list(getattr(feature, kind).value)
  return out


class BuildDetectionExampleTest(tf.test.TestCase):

  def test_every_key_holds_its_value(self):
    boxes = [(0.1, 0.2, 0.5, 0.6), (0.0, 0.25, 1.0, 0.75)]
    example = tf_example.build_detection_example(
        b'\xff\xd8jpeg bytes', 'jpeg', 30, 40, 17, boxes=boxes, classes=[3, 88],
        is_crowd=[0, 1], areas=[12.5, 1000.0], class_names=['cat', 'dog'],
        filename='im.jpg')
    f = _features(example)
    self.assertEqual(f['image/encoded'], [b'\xff\xd8jpeg bytes'])
    self.assertEqual(f['image/format'], [b'jpeg'])
    self.assertEqual((f['image/height'], f['image/width']), ([30], [40]))
    self.assertEqual(f['image/source_id'], [b'17'])  # ints written as decimal strings
    self.assertEqual(f['image/filename'], [b'im.jpg'])
    # One list per coordinate, in box order.
    self.assertAllClose(f['image/object/bbox/ymin'], [0.1, 0.0])
    self.assertAllClose(f['image/object/bbox/xmin'], [0.2, 0.25])
    self.assertAllClose(f['image/object/bbox/ymax'], [0.5, 1.0])
    self.assertAllClose(f['image/object/bbox/xmax'], [0.6, 0.75])
    self.assertEqual(f['image/object/class/label'], [3, 88])
    self.assertEqual(f['image/object/class/text'], [b'cat', b'dog'])
    self.assertEqual(f['image/object/is_crowd'], [0, 1])
    self.assertAllClose(f['image/object/area'], [12.5, 1000.0])

  def test_keys_parse_with_the_object_detection_api_types(self):
    example = tf_example.build_detection_example(
        b'x', 'png', 8, 6, '5', boxes=[(0.0, 0.0, 0.5, 0.5)], classes=[2])
    parsed = tf.io.parse_single_example(example.SerializeToString(), {
        tf_example.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        tf_example.IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        tf_example.CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
        tf_example.AREA: tf.io.VarLenFeature(tf.float32),
        **{k: tf.io.VarLenFeature(tf.float32) for k in tf_example.BOX_KEYS}})
    self.assertEqual(int(parsed[tf_example.IMAGE_HEIGHT]), 8)
    self.assertAllEqual(tf.sparse.to_dense(parsed[tf_example.CLASS_LABEL]), [2])
    self.assertAllClose(tf.sparse.to_dense(parsed[tf_example.BBOX_YMAX]), [0.5])

  def test_defaults_not_crowd_area_in_pixels_no_class_text(self):
    # A box covering half the height and a quarter of the width of 30 x 40.
    example = tf_example.build_detection_example(
        b'x', 'jpeg', 30, 40, '1', boxes=[(0.25, 0.5, 0.75, 0.75), (0, 0, 1, 1)],
        classes=[1, 2])
    f = _features(example)
    self.assertEqual(f['image/object/is_crowd'], [0, 0])
    self.assertAllClose(f['image/object/area'], [15 * 10, 30 * 40])
    self.assertNotIn(tf_example.CLASS_TEXT, f)

  def test_an_image_without_boxes_has_empty_lists(self):
    f = _features(tf_example.build_detection_example(b'x', 'jpeg', 2, 2, '9'))
    for key in (*tf_example.BOX_KEYS, tf_example.CLASS_LABEL, tf_example.IS_CROWD,
                tf_example.AREA):
      self.assertEqual(f[key], [], key)

  def test_rejects_mismatched_box_lists(self):
    with self.assertRaisesRegex(ValueError, 'source_id=4.*classes'):
      tf_example.build_detection_example(
          b'x', 'png', 4, 4, '4', boxes=[(0, 0, 1, 1)], classes=[1, 2])
    with self.assertRaisesRegex(ValueError, r"source_id=5.*'class_names': 2"):
      tf_example.build_detection_example(
          b'x', 'png', 4, 4, '5', boxes=[(0, 0, 1, 1)], classes=[1],
          class_names=['a', 'b'])
    with self.assertRaisesRegex(ValueError, r"'is_crowd': 0"):
      tf_example.build_detection_example(
          b'x', 'png', 4, 4, '6', boxes=[(0, 0, 1, 1)], classes=[1], is_crowd=[])

  def test_box_keys_are_in_yxyx_order(self):
    self.assertEqual([k.rsplit('/', 1)[1] for k in tf_example.BOX_KEYS],
                     ['ymin', 'xmin', 'ymax', 'xmax'])
    self.assertEqual(np.unique(tf_example.BOX_KEYS).size, 4)


if __name__ == '__main__':
  tf.test.main()
