"""RetinaNetTask passes the reference-default options to its parser and loss.

* crowd boxes: dropped in training by default (both references); with
  `DataOptions.crowd_as_ignore=True` their anchors are ignored instead.
* loss normalizer: 'replica' divides by this replica's positives, 'global'
  by the all-reduced positives (equal on one device).
"""
import io

import numpy as np
from PIL import Image
import tensorflow as tf

from spinenet.data import decoder as decoder_lib
from spinenet.data import tf_example
from spinenet.training import losses as losses_lib
from spinenet.training import retinanet_task
import tiny


def _crowd_example():
  """A 128 px image with one crowd box over its left half, no other box."""
  pixels = np.full((128, 128, 3), 90, np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format='PNG')
  return tf_example.build_detection_example(
      buf.getvalue(), 'png', 128, 128, '7', [(0.0, 0.0, 1.0, 0.5)], [1],
      is_crowd=[True]).SerializeToString()


def _labels(data_options):
  task = retinanet_task.RetinaNetTask(tiny.model_fn(), data_options)
  task.build_model()
  decoded = decoder_lib.DetectionDecoder().decode(tf.constant(_crowd_example()))
  _, labels = task.build_parser(training=True)(decoded)
  return labels


def test_crowd_boxes_dropped_by_default_ignored_as_option():
  default = retinanet_task.DataOptions(aug_rand_hflip=False)
  assert not default.crowd_as_ignore
  dropped = _labels(default)
  # Dropped: no positives and no ignored anchor (all background).
  assert float(tf.reduce_sum(dropped['box_weights'])) == 0.0
  assert float(tf.reduce_min(dropped['cls_weights'])) == 1.0
  ignored = _labels(retinanet_task.DataOptions(aug_rand_hflip=False,
                                               crowd_as_ignore=True))
  assert float(tf.reduce_sum(ignored['box_weights'])) == 0.0
  assert float(tf.reduce_sum(1.0 - ignored['cls_weights'])) > 0  # ignored anchors


def test_normalizer_scopes_agree_on_one_device():
  rng = np.random.default_rng(0)
  outputs = {'cls_outputs': {'3': tf.constant(rng.normal(size=(2, 2, 2, 2 * 3)), tf.float32)},
             'box_outputs': {'3': tf.constant(rng.normal(size=(2, 2, 2, 2 * 4)), tf.float32)}}
  cls = rng.integers(0, 3, size=(2, 2, 2, 2))
  labels = {'cls_targets': {'3': tf.constant(cls, tf.int32)},
            'box_targets': {'3': tf.constant(rng.normal(size=(2, 2, 2, 8)), tf.float32)},
            'box_weights': tf.constant((cls > 0).reshape(2, -1), tf.float32),
            'cls_weights': tf.ones([2, 8])}
  results = {}
  for scope in losses_lib.NORMALIZER_SCOPES:
    task = retinanet_task.RetinaNetTask(
        tiny.model_fn(), losses=losses_lib.LossOptions(normalizer_scope=scope))
    task._loss = losses_lib.RetinaNetLoss(3, task.loss_options)  # pylint: disable=protected-access
    results[scope] = task.build_losses(outputs, labels)['model_loss'].numpy()
  np.testing.assert_allclose(results['replica'], results['global'], rtol=1e-6)
  assert results['replica'] > 0
