"""tf.Example building and decoding."""
import io

import numpy as np
from PIL import Image
import tensorflow as tf

from spinenet.data import decoder as decoder_lib
from spinenet.data import tf_example


def _png(h, w):
  buf = io.BytesIO()
  Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(buf, format='PNG')
  return buf.getvalue()


class DecoderTest(tf.test.TestCase):

  def test_decodes_every_field(self):
    example = tf_example.build_detection_example(
        _png(30, 40), 'png', 30, 40, '17',
        boxes=[(0.1, 0.2, 0.5, 0.6), (0.0, 0.0, 1.0, 1.0)], classes=[3, 88],
        is_crowd=[0, 1], areas=[12.5, 1000.0], class_names=['c', 'd'])
    data = decoder_lib.DetectionDecoder().decode(example.SerializeToString())
    self.assertEqual(data['source_id'].numpy(), b'17')
    self.assertEqual(data['image'].dtype, tf.uint8)
    self.assertEqual(data['image'].shape, (30, 40, 3))
    self.assertEqual((int(data['height']), int(data['width'])), (30, 40))
    self.assertEqual(data['height'].dtype, tf.int32)
    self.assertAllClose(data['groundtruth_boxes'],
                        [[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1]])
    self.assertEqual(data['groundtruth_classes'].dtype, tf.int32)
    self.assertAllEqual(data['groundtruth_classes'], [3, 88])
    self.assertAllEqual(data['groundtruth_is_crowd'], [False, True])
    self.assertAllClose(data['groundtruth_area'], [12.5, 1000.0])

  def test_defaults_for_missing_keys(self):
    example = tf.train.Example()
    feature = example.features.feature
    feature[tf_example.IMAGE_ENCODED].bytes_list.value.append(_png(20, 10))
    feature[tf_example.CLASS_LABEL].int64_list.value.append(1)
    for key, value in zip(tf_example.BOX_KEYS, (0.0, 0.0, 0.5, 1.0)):
      feature[key].float_list.value.append(value)
    serialized = example.SerializeToString()
    data = decoder_lib.DetectionDecoder().decode(serialized)
    self.assertEqual((int(data['height']), int(data['width'])), (20, 10))
    self.assertAllEqual(data['groundtruth_is_crowd'], [False])
    self.assertAllClose(data['groundtruth_area'], [0.5 * 20 * 10])
    lazy = decoder_lib.DetectionDecoder(decode_image=False).decode(serialized)
    self.assertNotIn('image', lazy)
    self.assertEqual(lazy['encoded_image'].dtype, tf.string)
    self.assertEqual((int(lazy['height']), int(lazy['width'])), (20, 10))


if __name__ == '__main__':
  tf.test.main()
