"""tf.Example building and decoding."""
import io

import numpy as np
from PIL import Image
import tensorflow as tf

import data_testing

from spinenet.data import decoder as decoder_lib
from spinenet.data import pipeline
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


def _mask_png(mask):
  buf = io.BytesIO()
  Image.fromarray(np.asarray(mask, np.uint8), mode='L').save(buf, format='PNG')
  return buf.getvalue()


def _example_with_masks(masks, h=30, w=40, boxes=None):
  boxes = boxes or [(0.1, 0.1, 0.5, 0.5)] * len(masks)
  return tf_example.build_detection_example(
      _png(h, w), 'png', h, w, '5', boxes=boxes, classes=[1] * len(boxes),
      masks=masks).SerializeToString()


class MaskDecoderTest(tf.test.TestCase):

  def test_masks_decoded_only_when_asked(self):
    rng = np.random.default_rng(0)
    masks = [(rng.uniform(size=(30, 40)) < 0.3).astype(np.uint8)
             for _ in range(3)]
    masks[1] *= 255  # any value > 0 is inside
    serialized = _example_with_masks([_mask_png(m) for m in masks])
    for decode_image in (True, False):
      data = decoder_lib.DetectionDecoder(
          decode_image=decode_image, decode_masks=True).decode(serialized)
      out = data['groundtruth_instance_masks']
      self.assertEqual(out.dtype, tf.float32)
      self.assertAllEqual(out, np.stack([m > 0 for m in masks]))
    plain = decoder_lib.DetectionDecoder().decode(serialized)
    self.assertNotIn('groundtruth_instance_masks', plain)

  def test_no_objects_gives_empty_masks_in_a_function(self):
    serialized = _example_with_masks([])
    decode = tf.function(lambda s: decoder_lib.DetectionDecoder(
        decode_image=False, decode_masks=True).decode(s))
    self.assertEqual(decode(serialized)['groundtruth_instance_masks'].shape,
                     (0, 30, 40))

  def test_bad_masks_are_skipped_and_counted_by_the_pipeline(self):
    good = _example_with_masks([_mask_png(np.ones((30, 40)))])
    corrupt = _example_with_masks([_mask_png(np.ones((30, 40)))[:40]])
    wrong_size = _example_with_masks([_mask_png(np.ones((20, 40)))])
    too_few = tf.train.Example.FromString(
        _example_with_masks([_mask_png(np.ones((30, 40)))]))
    for key in tf_example.BOX_KEYS:
      too_few.features.feature[key].float_list.value.append(0.5)
    too_few.features.feature[tf_example.CLASS_LABEL].int64_list.value.append(1)
    too_few = too_few.SerializeToString()
    records = [good, corrupt, good, wrong_size, too_few]
    decoder = decoder_lib.DetectionDecoder(decode_masks=True)
    counter = tf.Variable(0, dtype=tf.int64)
    dataset = pipeline.map_skipping_failures(
        tf.data.Dataset.from_tensor_slices(records),
        lambda s: tf.reduce_sum(
            decoder.decode(s)['groundtruth_instance_masks']),
        deterministic=True, skip_counter=counter)
    stderr = []
    with data_testing.captured_stderr(stderr):
      sums = [float(v) for v in dataset]
    self.assertEqual(sums, [1200.0, 1200.0])
    self.assertEqual(int(counter.numpy()), 3)
    self.assertIn('records skipped so far: 3', stderr[0])
    # RetinaNet's decoder never reads the masks, so they cannot fail it.
    plain = decoder_lib.DetectionDecoder()
    self.assertLen([plain.decode(r) for r in records], 5)


if __name__ == '__main__':
  tf.test.main()
