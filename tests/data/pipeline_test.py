"""The one tf.data path: files, sharding, skipping corrupt records, batching,
evaluation padding, seeds, caching, and already-made example datasets."""
import io
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
import tensorflow as tf

import data_testing
from spinenet.data import decoder as decoder_lib
from spinenet.data import detection_parser
from spinenet.data import pipeline
from spinenet.data import tf_example

_ANCHORS = dict(min_level=3, max_level=5, num_scales=1, aspect_ratios=(1.0,),
                anchor_size=4.0)
_GOOD_IDS = [1, 2, 4, 5, 7]  # 3 and 6 have corrupt images


def _jpeg(seed):
  rng = np.random.default_rng(seed)
  pixels = np.repeat(np.repeat(rng.integers(0, 255, (8, 12, 3), np.uint8),
                               8, 0), 8, 1)  # 64 x 96
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format='JPEG')
  return buf.getvalue()


def _ids(batches):
  """Source ids of the valid rows, in batch order."""
  return [int(i) for _, labels in batches
          for i, v in zip(labels['source_id'].numpy(), labels['valid'].numpy())
          if v]


class BuildDatasetTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)
    corrupt = {3: b'\xff\xd8\xff\xe0' + b'\x00' * 200, 6: b'not an image'}
    for shard, ids in enumerate([(1, 2, 3), (4, 5, 6, 7)]):
      path = os.path.join(self.root, f'r-{shard}.tfrecord')
      with tf.io.TFRecordWriter(path) as writer:
        for i in ids:
          writer.write(tf_example.build_detection_example(
              corrupt.get(i) or _jpeg(i), 'jpeg', 64, 96, str(i),
              [(0.1, 0.2, 0.6, 0.7)], [1]).SerializeToString())
    self.pattern = os.path.join(self.root, 'r-*.tfrecord')
    self.decode = decoder_lib.DetectionDecoder(decode_image=False).decode
    self.eval_parser = detection_parser.EvalParser(128, max_level=5)
    self.train_parser = detection_parser.TrainParser(
        128, aug_scale_min=0.5, aug_scale_max=1.5, **_ANCHORS)

  def _eval(self, global_batch_size, **kwargs):
    return pipeline.build_dataset(self.pattern, self.decode, self.eval_parser,
                                  global_batch_size, training=False, **kwargs)

  def test_eval_skips_corrupt_records_counts_them_and_pads_the_last_batch(self):
    counter = tf.Variable(0, dtype=tf.int64)
    batches = list(self._eval(2, skip_counter=counter))
    self.assertEqual(self._all_rows(batches), 6)  # 5 images + 1 padding row
    for images, labels in batches:
      self.assertEqual(images.shape, (2, 128, 128, 3))
      self.assertEqual(labels['valid'].dtype, tf.bool)
    # One record from each file in turn, each file in order.
    self.assertEqual(_ids(batches), [1, 4, 2, 5, 7])
    self.assertEqual(int(counter.numpy()), 2)

  def _all_rows(self, batches):
    return sum(int(images.shape[0]) for images, _ in batches)

  def test_eval_reads_each_record_once(self):
    # The padding row must not come from a second read of the files: that
    # read would parse (and count as skipped) records a second time.
    reads = tf.Variable(0, dtype=tf.int64)

    def counting_decode(serialized):
      reads.assign_add(1)
      return self.decode(serialized)

    counter = tf.Variable(0, dtype=tf.int64)
    batches = list(pipeline.build_dataset(
        self.pattern, counting_decode, self.eval_parser, 4, training=False,
        skip_counter=counter))
    self.assertLen(batches, 2)  # 5 images + 3 padding rows
    self.assertEqual(int(reads.numpy()), 7)
    self.assertEqual(int(counter.numpy()), 2)
    padding = batches[-1][1]
    self.assertAllEqual(padding['valid'], [True, False, False, False])
    self.assertAllEqual(batches[-1][0][1:], tf.zeros((3, 128, 128, 3)))

  def test_training_batches_are_static_repeat_and_go_past_corrupt_records(self):
    counter = tf.Variable(0, dtype=tf.int64)
    ds = pipeline.build_dataset(self.pattern, self.decode, self.train_parser,
                                4, training=True, shuffle_buffer=4,
                                skip_counter=counter)
    images, labels = ds.element_spec
    self.assertEqual(images.shape, (4, 128, 128, 3))
    self.assertEqual(labels['cls_targets']['3'].shape, (4, 16, 16, 1))
    self.assertEqual(labels['box_weights'].shape, (4, 16 * 16 + 8 * 8 + 4 * 4))
    self.assertNotIn('valid', labels)
    batches = list(ds.take(5))  # 20 examples: 4 passes over the 5 good ones
    self.assertLen(batches, 5)
    for images, labels in batches:
      self.assertTrue(np.isfinite(images.numpy()).all())
      # Every good image has one box, so every row has positive anchors.
      self.assertAllGreater(tf.reduce_sum(labels['box_weights'], axis=1), 0)
    self.assertGreaterEqual(int(counter.numpy()), 2)

  def test_a_seed_fixes_order_and_augmentation(self):

    def run(seed):
      ds = pipeline.build_dataset(self.pattern, self.decode, self.train_parser,
                                  3, training=True, seed=seed)
      return [b for b in ds.take(3)]

    first = run(5)
    tf.nest.map_structure(self.assertAllEqual, first, run(5))
    self.assertNotAllClose(first[0][0], run(6)[0][0])

  def test_parser_gets_a_different_seed_for_every_example_and_pass(self):
    seen = []

    def parse(decoded, seed):
      return decoded['source_id'], {'seed': seed}

    ds = pipeline.build_dataset(self.pattern, self.decode, parse, 5,
                                training=True, seed=1, shuffle_buffer=1)
    for _, labels in ds.take(4):  # 20 examples: 4 passes over the 5 good ones
      seen.extend(tuple(s) for s in labels['seed'].numpy())
    self.assertLen(set(seen), 20)

  def test_input_context_shards_files_and_batches_per_replica(self):
    seen = []
    for pipeline_id in range(2):
      context = tf.distribute.InputContext(
          num_input_pipelines=2, input_pipeline_id=pipeline_id,
          num_replicas_in_sync=4)
      ds = self._eval(8, input_context=context)
      self.assertEqual(ds.element_spec[0].shape[0], 2)  # 8 / 4 replicas
      seen.append(_ids(ds))
    # Pipeline 0 reads file 0 (ids 1-3), pipeline 1 reads file 1 (4-7).
    self.assertEqual(seen, [[1, 2], [4, 5, 7]])

  def test_fewer_files_than_pipelines_shards_records(self):
    seen = []
    for pipeline_id in range(3):
      context = tf.distribute.InputContext(
          num_input_pipelines=3, input_pipeline_id=pipeline_id,
          num_replicas_in_sync=3)
      seen.append(_ids(self._eval(3, input_context=context)))
    # Records in interleave order 1 4 2 5 3 6 7; pipeline i keeps i, i+3, ...
    self.assertEqual(seen, [[1, 5, 7], [4], [2]])  # 3 and 6 skipped

  def test_a_dataset_source_is_parsed_padded_and_not_sharded_again(self):
    examples = tf.data.Dataset.from_tensor_slices(
        {'value': [1.0, 2.0, 3.0], 'id': [10, 20, 30]})
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)

    def parse(decoded, seed):
      del seed
      return decoded['value'] * 2, {'id': decoded['id']}

    ds = pipeline.build_dataset(
        examples, lambda e: e, parse, 4, training=False, input_context=context)
    batches = list(ds)
    self.assertLen(batches, 2)  # per-replica batch 2: 3 examples + 1 padding
    values = np.concatenate([f for f, _ in batches])
    ids = np.concatenate([l['id'] for _, l in batches])
    valid = np.concatenate([l['valid'] for _, l in batches])
    np.testing.assert_array_equal(values, [2, 4, 6, 0])
    np.testing.assert_array_equal(ids, [10, 20, 30, 0])
    np.testing.assert_array_equal(valid, [True, True, True, False])

  def test_cache_reads_the_source_once_over_many_passes(self):
    reads = tf.Variable(0, dtype=tf.int64)

    def count(x):
      reads.assign_add(1)
      return x

    def parse(x, seed):
      del seed
      return x, {'x': x}

    def read_passes(cache):
      reads.assign(0)
      source = tf.data.Dataset.range(4).map(count)
      ds = pipeline.build_dataset(source, lambda e: e, parse, 2, training=True,
                                  cache=cache, shuffle_buffer=1, seed=0)
      list(ds.take(6))  # 12 examples: 3 passes
      return int(reads.numpy())

    self.assertEqual(read_passes(cache=True), 4)
    self.assertGreaterEqual(read_passes(cache=False), 12)

  def test_map_skipping_failures_on_any_dataset(self):
    counter = tf.Variable(0, dtype=tf.int64)
    ds = tf.data.Dataset.from_tensor_slices(['1', 'x', '3', '', '5'])
    ds = pipeline.map_skipping_failures(
        ds, lambda s: tf.strings.to_number(s, tf.int32), deterministic=True,
        skip_counter=counter)
    self.assertEqual([int(v) for v in ds], [1, 3, 5])
    self.assertEqual(int(counter.numpy()), 2)

  def test_a_glob_that_matches_nothing_is_named(self):
    pattern = f'{self.pattern},{self.root}/nothing-here-*'
    with self.assertRaisesRegex(
        ValueError, r"No file matches '.*nothing-here-\*' \(from "
        r"train_data.file_pattern="):
      pipeline.build_dataset(pattern, self.decode, self.train_parser, 2,
                             training=True,
                             source_name='train_data.file_pattern')

  def _cut(self, path, num_bytes):
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
      f.truncate(size - num_bytes)

  def test_a_truncated_shard_gives_its_readable_records_and_is_named(self):
    cut = os.path.join(self.root, 'r-1.tfrecord')
    self._cut(cut, 100)  # ids 4, 5, 6 (corrupt image) stay; 7 is cut
    counter = tf.Variable(0, dtype=tf.int64)
    err = []
    with data_testing.captured_stderr(err):
      batches = list(self._eval(2, skip_counter=counter))
    self.assertEqual(_ids(batches), [1, 4, 2, 5])
    self.assertEqual(int(counter.numpy()), 2)  # ids 3 and 6
    self.assertRegex(err[0], r'r-1\.tfrecord is truncated or damaged: read 3 '
                     r'records')
    self.assertNotIn('r-0.tfrecord is', err[0])

  def test_training_goes_on_past_a_truncated_shard(self):
    self._cut(os.path.join(self.root, 'r-0.tfrecord'), 100)  # cuts id 3
    self._cut(os.path.join(self.root, 'r-1.tfrecord'), 100)  # cuts id 7
    seen = []

    def parse(decoded, seed):
      del seed
      return decoded['source_id'], {'id': decoded['source_id']}

    err = []
    with data_testing.captured_stderr(err):
      ds = pipeline.build_dataset(self.pattern, self.decode, parse, 5,
                                  training=True, shuffle_buffer=1, seed=0)
      for ids, _ in ds.take(2):  # two passes over the 5 readable records
        seen.extend(int(i) for i in ids.numpy())
    self.assertCountEqual(seen, [1, 2, 4, 5, 6] * 2)
    self.assertIn('r-0.tfrecord is truncated or damaged: read 2 records',
                  err[0])

  def test_an_intact_file_reads_every_record_without_a_warning(self):
    err = []
    path = os.path.join(self.root, 'r-1.tfrecord')
    with data_testing.captured_stderr(err):
      records = list(pipeline.read_tfrecord_file(
          tf.constant(path), tf.constant(os.path.getsize(path), tf.int64)))
    self.assertLen(records, 4)
    self.assertNotIn('truncated', err[0])

  def test_check_fn_errors_stop_the_input_instead_of_skipping(self):
    ds = pipeline.build_dataset(
        self.pattern, self.decode, self.train_parser, 2, training=True,
        check_fn=lambda images, labels: (images, detection_parser.
                                          check_class_ids(labels, 1, 'r-*')))
    with self.assertRaisesRegex(
        tf.errors.InvalidArgumentError,
        r'(?s)r-\*: a record has category id.*1.*num_classes=1'):
      next(iter(ds))
    fine = pipeline.build_dataset(
        self.pattern, self.decode, self.train_parser, 2, training=True,
        check_fn=lambda images, labels: (images, detection_parser.
                                         check_class_ids(labels, 2)))
    self.assertEqual(next(iter(fine))[0].shape, (2, 128, 128, 3))

  def test_list_files_sorts_within_each_glob_in_the_given_order(self):
    files = pipeline.list_files([os.path.join(self.root, 'r-1*'),
                                 os.path.join(self.root, 'r-*')])
    self.assertEqual([os.path.basename(f) for f in files],
                     ['r-1.tfrecord', 'r-0.tfrecord', 'r-1.tfrecord'])


if __name__ == '__main__':
  tf.test.main()
