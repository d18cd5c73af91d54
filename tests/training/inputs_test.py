"""The trainer's tf.data input: corrupt records are skipped, eval batches padded."""
import io
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
import tensorflow as tf

from spinenet.data import decoder as decoder_lib
from spinenet.data import detection_parser
from spinenet.data import tf_example
from spinenet.training import inputs


def _jpeg(seed):
  rng = np.random.default_rng(seed)
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 255, (64, 96, 3), np.uint8)).save(buf, format='JPEG')
  return buf.getvalue()


class BuildDatasetTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)
    corrupt = {3: b'\xff\xd8\xff\xe0' + b'\x00' * 200, 6: b'not an image'}
    for shard, ids in enumerate([(1, 2, 3), (4, 5, 6, 7)]):
      with tf.io.TFRecordWriter(os.path.join(self.root, f'r-{shard}.tfrecord')) as w:
        for i in ids:
          w.write(tf_example.build_detection_example(
              corrupt.get(i) or _jpeg(i), 'jpeg', 64, 96, str(i),
              [(0.1, 0.2, 0.6, 0.7)], [1]).SerializeToString())
    self.pattern = os.path.join(self.root, 'r-*.tfrecord')
    self.decode = decoder_lib.DetectionDecoder(decode_image=False).decode

  def test_eval_skips_corrupt_records_counts_them_and_pads_the_last_batch(self):
    counter = tf.Variable(0, dtype=tf.int64)
    ds = inputs.build_dataset(
        self.pattern, self.decode, detection_parser.EvalParser(128, max_level=5),
        global_batch_size=2, training=False, skip_counter=counter)
    ids, valid = [], []
    for images, labels in ds:
      self.assertEqual(images.shape, (2, 128, 128, 3))
      ids.extend(int(i) for i in labels['source_id'].numpy())
      valid.extend(bool(v) for v in labels['valid'].numpy())
    kept = [i for i, v in zip(ids, valid) if v]
    self.assertEqual(sorted(kept), [1, 2, 4, 5, 7])  # 3 and 6 skipped
    self.assertEqual(kept, sorted(kept, key=[1, 4, 2, 5, 7].index))  # file interleave order
    self.assertEqual(len(ids), 6)  # 5 images + 1 padding row
    self.assertEqual(int(counter.numpy()), 2)

  def test_eval_reads_each_record_once(self):
    # The padding row must not come from a second read of the files: that
    # read would parse (and count as skipped) records a second time.
    reads = tf.Variable(0, dtype=tf.int64)

    def counting_decode(serialized):
      reads.assign_add(1)
      return self.decode(serialized)

    counter = tf.Variable(0, dtype=tf.int64)
    ds = inputs.build_dataset(
        self.pattern, counting_decode, detection_parser.EvalParser(128, max_level=5),
        global_batch_size=4, training=False, skip_counter=counter)
    batches = list(ds)
    self.assertLen(batches, 2)  # 5 images + 3 padding rows
    self.assertEqual(int(reads.numpy()), 7)
    self.assertEqual(int(counter.numpy()), 2)
    padding = batches[-1][1]
    self.assertAllEqual(padding['valid'], [True, False, False, False])
    self.assertAllEqual(batches[-1][0][1:], tf.zeros((3, 128, 128, 3)))

  def test_training_goes_on_past_corrupt_records(self):
    counter = tf.Variable(0, dtype=tf.int64)
    parser = detection_parser.TrainParser(
        128, min_level=3, max_level=5, num_scales=1, aspect_ratios=(1.0,),
        anchor_size=4.0)
    ds = inputs.build_dataset(self.pattern, self.decode, parser, global_batch_size=4,
                              training=True, shuffle_buffer=1, seed=1,
                              skip_counter=counter)
    batches = 0
    for images, labels in ds.take(5):  # 20 examples: 4 passes over the 5 good ones
      self.assertEqual(images.shape, (4, 128, 128, 3))
      # Every good image has one box, so every row has positive anchors.
      self.assertAllGreater(tf.reduce_sum(labels['box_weights'], axis=1), 0)
      batches += 1
    self.assertEqual(batches, 5)
    self.assertGreaterEqual(int(counter.numpy()), 2)


if __name__ == '__main__':
  tf.test.main()
