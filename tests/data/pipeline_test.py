"""tf.data input: batching, skipping corrupt records, determinism, sharding."""
import io
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
import tensorflow as tf

from spinenet.data import detection_parser
from spinenet.data import pipeline
from spinenet.data import tf_example

_ANCHORS = dict(min_level=3, max_level=5, num_scales=1, aspect_ratios=(1.0,),
                anchor_size=4.0)


def _jpeg(seed):
  rng = np.random.default_rng(seed)
  pixels = np.repeat(np.repeat(rng.integers(0, 255, (12, 16, 3), np.uint8),
                               8, 0), 8, 1)  # 96 x 128
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format='JPEG')
  return buf.getvalue()


def _write(path, records):
  with tf.io.TFRecordWriter(path) as writer:
    for r in records:
      writer.write(r)


def _example(source_id, encoded=None):
  return tf_example.build_detection_example(
      encoded or _jpeg(source_id), 'jpeg', 96, 128, str(source_id),
      [(0.1, 0.1, 0.6, 0.5)], [1]).SerializeToString()


class BuildDatasetTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)
    # Ids 1..9 over 3 shards; 4 and 8 have corrupt images.
    corrupt = {4: b'\xff\xd8\xff\xe0' + b'\x00' * 300,
               8: b'not an image at all'}
    ids = list(range(1, 10))
    for shard in range(3):
      _write(os.path.join(self.root, f'rec-{shard:05d}-of-00003.tfrecord'),
             [_example(i, corrupt.get(i)) for i in ids[shard::3]])
    self.pattern = os.path.join(self.root, 'rec-*')
    self.eval_fn = pipeline.make_parser_fn(
        detection_parser.EvalParser(128, max_level=5))

  def _source_ids(self, dataset):
    return sorted(int(i) for _, labels in dataset
                  for i in labels['source_id'].numpy())

  def test_corrupt_images_are_skipped_and_counted(self):
    counter = tf.Variable(0, dtype=tf.int64)
    ds = pipeline.build_dataset(self.pattern, self.eval_fn, batch_size=2,
                                is_training=False, skip_counter=counter)
    self.assertEqual(self._source_ids(ds), [1, 2, 3, 5, 6, 7, 9])
    self.assertEqual(int(counter.numpy()), 2)

  def test_training_batches_are_static_and_repeat(self):
    parser = detection_parser.TrainParser(128, aug_scale_min=0.5,
                                          aug_scale_max=1.5, **_ANCHORS)
    ds = pipeline.build_dataset(self.pattern, pipeline.make_parser_fn(parser),
                                batch_size=4, is_training=True,
                                shuffle_buffer=4)
    images, labels = ds.element_spec
    self.assertEqual(images.shape, (4, 128, 128, 3))
    self.assertEqual(labels['cls_targets']['3'].shape, (4, 16, 16, 1))
    self.assertEqual(labels['box_weights'].shape, (4, 16 * 16 + 8 * 8 + 4 * 4))
    batches = list(ds.take(5))  # 7 good records: must repeat
    self.assertLen(batches, 5)
    self.assertTrue(np.isfinite(batches[-1][0].numpy()).all())

  def test_deterministic_runs_are_identical(self):
    parser = detection_parser.TrainParser(128, aug_scale_min=0.5,
                                          aug_scale_max=1.5, **_ANCHORS)
    fn = pipeline.make_parser_fn(parser)

    def run():
      ds = pipeline.build_dataset(self.pattern, fn, batch_size=3,
                                  is_training=True, deterministic=True, seed=5)
      return [b for b in ds.take(2)]

    first, second = run(), run()
    tf.nest.map_structure(self.assertAllEqual, first, second)

  def test_input_context_shards_the_files(self):
    seen = []
    for pipeline_id in range(2):
      context = tf.distribute.InputContext(
          num_input_pipelines=2, input_pipeline_id=pipeline_id,
          num_replicas_in_sync=2)
      ds = pipeline.build_dataset(self.pattern, self.eval_fn, batch_size=2,
                                  is_training=False, input_context=context)
      self.assertEqual(ds.element_spec[0].shape[0], None)
      seen.append(self._source_ids(ds))
    self.assertEqual(sorted(seen[0] + seen[1]), [1, 2, 3, 5, 6, 7, 9])
    self.assertFalse(set(seen[0]) & set(seen[1]))

  def test_map_skipping_failures_on_any_dataset(self):
    counter = tf.Variable(0, dtype=tf.int64)
    ds = tf.data.Dataset.from_tensor_slices(['1', 'x', '3', '', '5'])
    ds = pipeline.map_skipping_failures(
        ds, lambda s: tf.strings.to_number(s, tf.int32), deterministic=True,
        skip_counter=counter)
    self.assertEqual([int(v) for v in ds], [1, 3, 5])
    self.assertEqual(int(counter.numpy()), 2)

  def test_no_files_names_the_pattern(self):
    with self.assertRaisesRegex(ValueError, 'nothing-here-.*matched no files'):
      pipeline.build_dataset(self.root + '/nothing-here-*', self.eval_fn, 2,
                             is_training=False)


if __name__ == '__main__':
  tf.test.main()
