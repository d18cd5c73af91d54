"""Tests of the RetinaNet losses, against the Model Garden's loss classes."""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from official.vision.losses import focal_loss as mg_focal_loss
from spinenet.training import losses

LEVEL_SHAPES = {'3': (4, 4), '4': (2, 2)}
NUM_ANCHORS, NUM_CLASSES, BATCH = 3, 5, 2


def _random_batch(seed):
  rng = np.random.default_rng(seed)
  outputs = {'cls_outputs': {}, 'box_outputs': {}}
  labels = {'cls_targets': {}, 'box_targets': {}}
  for level, (h, w) in LEVEL_SHAPES.items():
    outputs['cls_outputs'][level] = tf.constant(
        rng.normal(0, 2, (BATCH, h, w, NUM_ANCHORS * NUM_CLASSES)), tf.float32)
    outputs['box_outputs'][level] = tf.constant(
        rng.normal(0, 0.2, (BATCH, h, w, NUM_ANCHORS * 4)), tf.float32)
    classes = rng.integers(0, NUM_CLASSES, (BATCH, h, w, NUM_ANCHORS))
    classes[rng.uniform(size=classes.shape) < 0.6] = 0
    labels['cls_targets'][level] = tf.constant(classes, tf.int32)
    labels['box_targets'][level] = tf.constant(
        rng.normal(0, 0.2, (BATCH, h, w, NUM_ANCHORS * 4)) * (classes > 0).repeat(4, -1),
        tf.float32)
  flat = np.concatenate([labels['cls_targets'][l].numpy().reshape(BATCH, -1)
                         for l in LEVEL_SHAPES], axis=1)
  labels['box_weights'] = tf.constant((flat > 0).astype(np.float32))
  labels['cls_weights'] = tf.constant(
      (rng.uniform(size=flat.shape) > 0.1).astype(np.float32))
  return outputs, labels


def _flatten(d, last_dim):
  return tf.concat([tf.reshape(d[l], [BATCH, -1, last_dim]) for l in LEVEL_SHAPES], 1)


def _model_garden_losses(outputs, labels, options):
  """The Model Garden's RetinaNet task losses (its FocalLoss and Keras Huber).

  Its labeler marks background with class -1 (an all-zero one-hot row); ours
  uses 0, hence the `where`.
  """
  normalizer = tf.reduce_sum(labels['box_weights']) + 1.0
  cls = tf.concat([tf.reshape(labels['cls_targets'][l], [BATCH, -1])
                   for l in LEVEL_SHAPES], 1)
  y_true = tf.one_hot(tf.where(cls > 0, cls, -1), NUM_CLASSES)
  focal = mg_focal_loss.FocalLoss(options.focal_loss_alpha, options.focal_loss_gamma,
                                  reduction=keras.losses.Reduction.SUM)
  huber = keras.losses.Huber(options.huber_loss_delta,
                             reduction=keras.losses.Reduction.SUM)
  cls_loss = focal(y_true, _flatten(outputs['cls_outputs'], NUM_CLASSES),
                   sample_weight=labels['cls_weights'] / normalizer)
  box_loss = huber(_flatten(labels['box_targets'], 4),
                   _flatten(outputs['box_outputs'], 4),
                   sample_weight=labels['box_weights'] / normalizer)
  return cls_loss, box_loss


class LossesTest(tf.test.TestCase):

  def test_matches_model_garden(self):
    options = losses.LossOptions()
    loss_fn = losses.RetinaNetLoss(NUM_CLASSES, options)
    for seed in range(3):
      outputs, labels = _random_batch(seed)
      ours = loss_fn(outputs, labels)
      cls_ref, box_ref = _model_garden_losses(outputs, labels, options)
      self.assertAllClose(ours['cls_loss'], cls_ref, rtol=1e-5)
      self.assertAllClose(ours['box_loss'], box_ref, rtol=1e-5)
      self.assertAllClose(ours['model_loss'], cls_ref + 50.0 * box_ref, rtol=1e-5)

  def test_focal_loss_elementwise(self):
    logits = tf.constant([-3.0, -0.5, 0.0, 2.0, 4.0])
    for gamma in (0.0, 1.5, 2.0, 2.5):
      for target in (0.0, 1.0):
        targets = tf.fill([5], target)
        p = tf.sigmoid(logits).numpy()
        pt = p if target else 1 - p
        alpha_t = 0.25 if target else 0.75
        expected = -alpha_t * (1 - pt)**gamma * np.log(pt)
        self.assertAllClose(losses.focal_loss(logits, targets, 0.25, gamma),
                            expected, rtol=1e-5)

  def test_huber_loss(self):
    x = tf.constant([-1.0, -0.05, 0.0, 0.08, 0.3])
    got = losses.huber_loss(x, tf.zeros_like(x), delta=0.1)
    a = np.abs(x.numpy())
    expected = np.where(a <= 0.1, 0.5 * a**2, 0.1 * (a - 0.05))
    self.assertAllClose(got, expected)

  def test_global_normalizer(self):
    # Normalizing by another batch's positives scales the sums accordingly.
    outputs, labels = _random_batch(7)
    loss_fn = losses.RetinaNetLoss(NUM_CLASSES)
    local = loss_fn(outputs, labels)
    npos = float(tf.reduce_sum(labels['box_weights']))
    other = loss_fn(outputs, labels, num_positives=tf.constant(3 * npos))
    self.assertAllClose(other['cls_loss'] * (3 * npos + 1),
                        local['cls_loss'] * (npos + 1), rtol=1e-5)

  def test_bad_options(self):
    with self.assertRaisesRegex(ValueError, 'focal_loss_alpha'):
      losses.LossOptions(focal_loss_alpha=1.5)
    with self.assertRaisesRegex(ValueError, 'normalizer_scope.*batch'):
      losses.LossOptions(normalizer_scope='batch')

  def test_default_scope_is_replica(self):
    # Both references normalize by each replica's own positives.
    self.assertEqual(losses.LossOptions().normalizer_scope, 'replica')


if __name__ == '__main__':
  tf.test.main()
