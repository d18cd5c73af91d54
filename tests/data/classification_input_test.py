"""Classification input: TFDS (mock_data) and TFRecord sources, crops, batches."""
import io
import os
import tempfile

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from spinenet.data import classification_input as ci
from spinenet.data import preprocess


def _encode(pixels, fmt='PNG'):
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format=fmt)
  return buf.getvalue()


def _write_records(directory, examples, name='data'):
  path = os.path.join(directory, f'{name}.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    for encoded, label in examples:
      writer.write(ci.build_example(encoded, label).SerializeToString())
  return path


def _denormalize(image):
  return (np.asarray(image, np.float32) * np.array(preprocess.STDDEV_RGB)
          + np.array(preprocess.MEAN_RGB))


def _options(**kwargs):
  kwargs.setdefault('global_batch_size', 4)
  return ci.ClassificationDataOptions(**kwargs)


class TfdsTest(tf.test.TestCase):

  def test_eval_reads_the_split_in_order_center_cropped_with_a_padded_batch(self):
    size = 64
    with tfds.testing.mock_data(num_examples=6):
      reference = list(tfds.load(
          'imagenet2012', split='validation',
          decoders={'image': tfds.decode.SkipDecoding()}).as_numpy_iterator())
      options = _options(tfds_name='imagenet2012', tfds_split='validation',
                         tfds_data_dir='/nonexistent/tfds')
      batches = list(ci.build_dataset(options, size, training=False))
    self.assertLen(batches, 2)  # 6 examples, batches of 4, last one padded
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1]['label'] for b in batches])
    valid = np.concatenate([b[1]['valid'] for b in batches])
    self.assertEqual(images.shape, (8, size, size, 3))
    np.testing.assert_array_equal(valid, [True] * 6 + [False] * 2)
    np.testing.assert_array_equal(labels[:6], [r['label'] for r in reference])
    np.testing.assert_array_equal(images[6:], 0.0)
    for image, ref in zip(images[:6], reference):
      whole = tf.io.decode_jpeg(ref['image'], channels=3).numpy()
      h, w = whole.shape[:2]
      side = int(0.875 * min(h, w))
      top, left = (h - side) // 2, (w - side) // 2
      crop = whole[top:top + side, left:left + side]
      expected = tf.image.resize(tf.cast(crop, tf.float32), (size, size))
      # The JPEG decoded by region vs whole: within a few gray levels.
      self.assertLess(np.mean(np.abs(_denormalize(image) - expected)), 2.0)

  def test_training_batches_are_static_bfloat16_and_in_range(self):
    with tfds.testing.mock_data(num_examples=5):
      options = _options(tfds_name='i_naturalist2017', randaugment_num_layers=2,
                         randaugment_magnitude=5, shuffle_buffer=5, seed=3)
      dataset = ci.build_dataset(options, 32, training=True, dtype=tf.bfloat16)
      self.assertEqual(dataset.element_spec[0].shape, (4, 32, 32, 3))
      batches = list(dataset.take(3))  # repeats past the 5 examples
    for images, labels in batches:
      self.assertEqual(images.dtype, tf.bfloat16)
      self.assertAllInRange(labels['label'], 0, 5088)
      self.assertNotIn('valid', labels)

  def test_missing_tfds_dataset_says_how_to_prepare_it(self):
    options = _options(tfds_name='imagenet2012',
                       tfds_data_dir=tempfile.mkdtemp())
    with self.assertRaisesRegex(ValueError, 'tfds build imagenet2012'):
      ci.build_dataset(options, 32, training=True)


class TfRecordTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()

  def test_eval_center_crop_is_exact_for_a_lossless_image(self):
    pixels = np.random.default_rng(0).integers(0, 255, (80, 160, 3), np.uint8)
    path = _write_records(self.dir, [(_encode(pixels), 7)])
    options = _options(file_pattern=path, global_batch_size=1,
                       eval_crop_fraction=0.5)
    image, labels = next(iter(ci.build_dataset(options, 40, training=False)))
    # side 40 = 0.5 * 80, offset (20, 60): a same-size resize is a copy.
    np.testing.assert_allclose(_denormalize(image[0]), pixels[20:60, 60:100],
                               atol=1e-3)
    self.assertEqual(int(labels['label'][0]), 7)

  def test_training_crops_flip_and_seed(self):
    # Left half black, right half white: a flip shows in the mean of a side.
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, 32:] = 255
    path = _write_records(self.dir, [(_encode(pixels), 1)] * 16)
    options = _options(file_pattern=path, global_batch_size=16, seed=5,
                       aug_crop_area_range=(0.9, 1.0), shuffle_buffer=1)

    def first_batch(opts):
      images, _ = next(iter(ci.build_dataset(opts, 32, training=True)))
      return _denormalize(images)

    a = first_batch(options)
    np.testing.assert_array_equal(a, first_batch(options))
    self.assertNotAllClose(a, first_batch(_options(
        file_pattern=path, global_batch_size=16, seed=6,
        aug_crop_area_range=(0.9, 1.0), shuffle_buffer=1)))
    left_bright = a[:, :, :8].mean(axis=(1, 2, 3)) > a[:, :, -8:].mean(axis=(1, 2, 3))
    self.assertBetween(left_bright.mean(), 0.05, 0.95)  # both orientations
    no_flip = first_batch(_options(
        file_pattern=path, global_batch_size=16, seed=5, aug_rand_hflip=False,
        aug_crop_area_range=(0.9, 1.0), shuffle_buffer=1))
    self.assertFalse(np.any(no_flip[:, :, :8].mean(axis=(1, 2, 3)) >
                            no_flip[:, :, -8:].mean(axis=(1, 2, 3))))

  def test_corrupt_record_is_skipped_and_counted(self):
    good = _encode(np.full((40, 40, 3), 90, np.uint8), 'JPEG')
    path = _write_records(self.dir, [(good, 0), (b'not an image', 1), (good, 2)])
    counter = tf.Variable(0, dtype=tf.int64)
    dataset = ci.build_dataset(_options(file_pattern=path, global_batch_size=2),
                               32, training=False, skip_counter=counter)
    labels = np.concatenate([l['label'][l['valid']] for _, l in dataset])
    np.testing.assert_array_equal(labels, [0, 2])
    self.assertEqual(int(counter.numpy()), 1)

  def test_label_offset_and_label_check(self):
    jpeg = _encode(np.zeros((8, 8, 3), np.uint8), 'JPEG')
    path = _write_records(self.dir, [(jpeg, 1), (jpeg, 3), (jpeg, 4)])
    with self.assertRaisesRegex(ValueError, 'label_offset = -1'):
      ci.check_labels(_options(file_pattern=path), num_classes=4)
    shifted = _options(file_pattern=path, label_offset=-1)
    ci.check_labels(shifted, num_classes=4)
    np.testing.assert_array_equal(ci.peek_labels(shifted), [0, 2, 3])

  def test_no_matching_file_names_the_pattern(self):
    with self.assertRaisesRegex(
        ValueError, r"No file matches '/tmp/nothing-here-\*' \(from "
        'ClassificationDataOptions.file_pattern='):
      ci.build_dataset(_options(file_pattern='/tmp/nothing-here-*'), 32, True)
    with self.assertRaisesRegex(ValueError, 'nothing-here'):
      ci.check_labels(_options(file_pattern='/tmp/nothing-here-*'), 4)

  def test_input_context_shards_files_and_batches_per_replica(self):
    jpeg = _encode(np.zeros((8, 8, 3), np.uint8), 'JPEG')
    for shard in range(2):
      _write_records(self.dir, [(jpeg, 10 * shard + i) for i in range(3)],
                     name=f'part-{shard}')
    options = _options(file_pattern=os.path.join(self.dir, 'part-*'),
                       global_batch_size=4)
    seen = []
    for pipeline_id in range(2):
      context = tf.distribute.InputContext(
          num_input_pipelines=2, input_pipeline_id=pipeline_id,
          num_replicas_in_sync=2)
      dataset = ci.build_dataset(options, 16, training=False,
                                 input_context=context)
      self.assertEqual(dataset.element_spec[0].shape, (2, 16, 16, 3))
      seen.append([int(x) for _, l in dataset for x in l['label'][l['valid']]])
    self.assertEqual(seen, [[0, 1, 2], [10, 11, 12]])


def test_random_crop_window_respects_area_and_aspect_ranges():
  image_size = tf.constant([300, 400])
  areas, ratios = [], []
  for i in range(200):
    offset, size = ci.random_crop_window(image_size, tf.constant([i, 1]),
                                         (0.2, 0.6), (0.5, 2.0))
    offset, size = offset.numpy(), size.numpy()
    assert np.all(offset >= 0) and np.all(offset + size <= [300, 400])
    areas.append(size[0] * size[1] / (300 * 400))
    ratios.append(size[1] / size[0])
  areas, ratios = np.array(areas), np.array(ratios)
  center = (areas == int(0.875 * 300)**2 / (300 * 400))
  assert center.mean() < 0.1  # the fallback is rare here
  sampled_areas, sampled_ratios = areas[~center], ratios[~center]
  assert sampled_areas.min() >= 0.19 and sampled_areas.max() <= 0.61
  assert sampled_ratios.min() >= 0.48 and sampled_ratios.max() <= 2.05
  assert sampled_areas.max() - sampled_areas.min() > 0.3  # spread, not fixed


def test_random_crop_falls_back_to_the_center_crop_when_nothing_fits():
  # A 1 x 100 image cannot hold a crop of aspect ratio ~1 and area >= 50%.
  offset, size = ci.random_crop_window(tf.constant([1, 100]), tf.constant([0, 0]),
                                       (0.5, 1.0), (0.9, 1.1))
  np.testing.assert_array_equal(size, [1, 1])
  np.testing.assert_array_equal(offset, [0, 49])


def test_options_need_a_source_and_valid_ranges():
  with pytest.raises(ValueError, match='needs a source'):
    ci.ClassificationDataOptions()
  with pytest.raises(ValueError, match='aug_crop_area_range'):
    ci.ClassificationDataOptions(tfds_name='x', aug_crop_area_range=(0.0, 1.0))
  with pytest.raises(ValueError, match='randaugment_magnitude'):
    ci.ClassificationDataOptions(tfds_name='x', randaugment_magnitude=30)
