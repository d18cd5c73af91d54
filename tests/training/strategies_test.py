"""strategies: name resolution, TF_CONFIG reading, the chief and its directories."""
import json
import os
from unittest import mock

import tensorflow as tf

from spinenet.training import strategies


def _tf_config(cluster, task=None):
  return {'TF_CONFIG': json.dumps({'cluster': cluster, 'task': task or {}})}


class _FakeMultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
  """A `MultiWorkerMirroredStrategy` by type only, holding a given resolver."""

  def __init__(self, resolver):  # pylint: disable=super-init-not-called
    self._resolver = resolver

  @property
  def cluster_resolver(self):
    return self._resolver


def _multi_worker(cluster, task_type, task_id):
  return _FakeMultiWorker(tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id))


class ResolveNameTest(tf.test.TestCase):

  def test_explicit_names_are_kept(self):
    for name in ('multi_worker_mirrored', 'mirrored', 'one_device'):
      self.assertEqual(strategies.resolve_name(name), name)
    self.assertEqual(strategies.resolve_name('tpu', tpu='local'), 'tpu')

  def test_bad_names_and_a_tpu_strategy_without_a_tpu(self):
    with self.assertRaisesRegex(ValueError, r"Unknown strategy 'gpu'; expected one of"):
      strategies.resolve_name('gpu')
    with self.assertRaisesRegex(ValueError, "strategy 'tpu' needs a TPU: pass `tpu`"):
      strategies.resolve_name('tpu')

  def test_auto(self):
    with mock.patch.dict(os.environ, {}, clear=False):
      os.environ.pop('TF_CONFIG', None)
      self.assertEqual(strategies.resolve_name('auto', tpu='my-tpu'), 'tpu')
      expected = ('mirrored' if len(tf.config.list_logical_devices('GPU')) > 1
                  else 'one_device')
      self.assertEqual(strategies.resolve_name('auto'), expected)

  def test_auto_counts_workers_and_chief_in_tf_config(self):
    two = _tf_config({'chief': ['a:1'], 'worker': ['b:1']}, {'type': 'chief', 'index': 0})
    with mock.patch.dict(os.environ, two):
      self.assertEqual(strategies.resolve_name('auto'), 'multi_worker_mirrored')
    one = _tf_config({'worker': ['b:1']}, {'type': 'worker', 'index': 0})
    with mock.patch.dict(os.environ, one):
      self.assertNotEqual(strategies.resolve_name('auto'), 'multi_worker_mirrored')
    # The evaluator and parameter servers are not training workers.
    others = _tf_config({'worker': ['b:1'], 'evaluator': ['c:1'], 'ps': ['d:1']})
    with mock.patch.dict(os.environ, others):
      self.assertNotEqual(strategies.resolve_name('auto'), 'multi_worker_mirrored')

  def test_invalid_tf_config_is_named(self):
    with mock.patch.dict(os.environ, {'TF_CONFIG': '{"cluster": '}):
      with self.assertRaisesRegex(ValueError, 'TF_CONFIG is not valid JSON'):
        strategies.resolve_name('auto')

  def test_tf_config_of_the_wrong_shape_is_named(self):
    cases = {'[]': 'JSON object with a "cluster"',
             '{"cluster": ["a:1"]}': 'JSON object with a "cluster"',
             '{"cluster": {"worker": "a:1"}}': 'cluster.worker must be a list'}
    for raw, message in cases.items():
      with self.subTest(tf_config=raw):
        with mock.patch.dict(os.environ, {'TF_CONFIG': raw}):
          with self.assertRaisesRegex(ValueError, message):
            strategies.resolve_name('auto')


class ChiefTest(tf.test.TestCase):

  def test_one_device(self):
    strategy = strategies.get_strategy('one_device')
    self.assertIsInstance(strategy, tf.distribute.OneDeviceStrategy)
    self.assertEqual(strategy.num_replicas_in_sync, 1)
    self.assertTrue(strategies.is_chief(strategy))
    self.assertEqual(strategies.worker_dir('/m', strategy), '/m')

  def test_mirrored_on_given_devices(self):
    strategy = strategies.get_strategy('mirrored', devices=['/cpu:0'])
    self.assertIsInstance(strategy, tf.distribute.MirroredStrategy)
    self.assertTrue(strategies.is_chief(strategy))

  def test_the_chief_task_when_there_is_one(self):
    cluster = {'chief': ['a:1'], 'worker': ['b:1', 'c:1']}
    self.assertTrue(strategies.is_chief(_multi_worker(cluster, 'chief', 0)))
    worker = _multi_worker(cluster, 'worker', 0)
    self.assertFalse(strategies.is_chief(worker))
    self.assertEqual(strategies.worker_dir('/m', worker),
                     os.path.join('/m', '.workers', 'worker_0'))

  def test_worker_zero_without_a_chief(self):
    cluster = {'worker': ['b:1', 'c:1']}
    first = _multi_worker(cluster, 'worker', 0)
    second = _multi_worker(cluster, 'worker', 1)
    self.assertTrue(strategies.is_chief(first))
    self.assertEqual(strategies.worker_dir('/m', first), '/m')
    self.assertFalse(strategies.is_chief(second))
    self.assertEqual(strategies.worker_dir('/m', second),
                     os.path.join('/m', '.workers', 'worker_1'))

  def test_no_task_type_is_a_single_process(self):
    self.assertTrue(strategies.is_chief(_multi_worker({'worker': ['b:1']}, None, None)))


if __name__ == '__main__':
  tf.test.main()
