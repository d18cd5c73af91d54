"""proxy: the built-in dataset is prepared once, and the reward metric is checked first.

A whole proxy trial (training and COCO evaluation) runs in search_e2e_test.
"""
import glob
import json
import os
import shutil
import tempfile
from unittest import mock

import tensorflow as tf

from spinenet.search import proxy

_TINY = proxy.BuiltinDataset(num_train=4, num_val=2, image_size=64, seed=3)


def _count(pattern):
  return sum(1 for _ in tf.data.TFRecordDataset(sorted(glob.glob(pattern))))


class PrepareBuiltinDatasetTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)

  def test_writes_both_splits_as_records_and_the_val_ground_truth(self):
    paths = proxy.prepare_builtin_dataset(self.root, _TINY)
    self.assertCountEqual(paths, ['train_pattern', 'val_pattern', 'val_json'])
    self.assertLen(glob.glob(paths['train_pattern']), 2)  # two shards per split
    self.assertEqual(_count(paths['train_pattern']), 4)
    self.assertEqual(_count(paths['val_pattern']), 2)
    with open(paths['val_json']) as f:
      val = json.load(f)
    self.assertLen(val['images'], 2)
    self.assertEqual({(i['height'], i['width']) for i in val['images']}, {(64, 64)})
    with open(os.path.join(self.root, 'records', '.complete')) as f:
      self.assertIn("'num_train': 4", f.read())

  def test_a_complete_dataset_is_reused_and_an_unfinished_one_rebuilt(self):
    first = proxy.prepare_builtin_dataset(self.root, _TINY)
    with mock.patch.object(proxy.builtin_dataset, 'generate',
                           side_effect=AssertionError('regenerated')):
      self.assertEqual(proxy.prepare_builtin_dataset(self.root, _TINY), first)
    os.remove(os.path.join(self.root, 'records', '.complete'))
    with mock.patch.object(proxy.builtin_dataset, 'generate',
                           side_effect=RuntimeError('regenerated')):
      with self.assertRaisesRegex(RuntimeError, 'regenerated'):
        proxy.prepare_builtin_dataset(self.root, _TINY)


class RewardMetricTest(tf.test.TestCase):

  def test_an_unknown_metric_fails_before_any_training(self):
    with mock.patch.object(proxy.train_lib, 'build_experiment',
                           side_effect=AssertionError('built')):
      with self.assertRaisesRegex(ValueError, r"`reward_metric` must be one of "
                                  r"\('AP', 'AP50', 'AP75'\)\. Received: 'mAP'"):
        proxy.run_proxy_trial(None, None, None, os.path.join(tempfile.gettempdir(), 'unused'),
                              reward_metric='mAP')


if __name__ == '__main__':
  tf.test.main()
