"""Anchor labelling against a brute-force NumPy reference."""
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from spinenet.ops import anchors as anchors_lib
from spinenet.ops import target_assigner


def _np_iou(a, b):
  """Loop-free but obviously-correct IoU, [len(a), len(b)]."""
  out = np.zeros((len(a), len(b)), np.float64)
  for j, g in enumerate(b):
    ih = np.clip(np.minimum(a[:, 2], g[2]) - np.maximum(a[:, 0], g[0]), 0, None)
    iw = np.clip(np.minimum(a[:, 3], g[3]) - np.maximum(a[:, 1], g[1]), 0, None)
    inter = ih * iw
    union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) +
             (g[2] - g[0]) * (g[3] - g[1]) - inter)
    out[:, j] = np.where(union > 0, inter / np.maximum(union, 1e-12), 0)
  return out


def _np_encode(box, anchor):
  ah, aw = anchor[2] - anchor[0], anchor[3] - anchor[1]
  bh, bw = box[2] - box[0], box[3] - box[1]
  return np.array([
      ((box[0] + box[2]) / 2 - (anchor[0] + anchor[2]) / 2) / ah,
      ((box[1] + box[3]) / 2 - (anchor[1] + anchor[3]) / 2) / aw,
      np.log(bh / ah), np.log(bw / aw)])


def _reference(anchors, boxes, classes, crowd, match_t, unmatched_t, force):
  """Anchor by anchor, box by box, as the module docstring states the rules."""
  num_anchors, n = len(anchors), len(boxes)
  iou = _np_iou(anchors, boxes)
  matches, band = {}, set()
  for i in range(num_anchors):
    best, best_j = -1.0, None
    for j in range(n):
      if not crowd[j] and iou[i, j] > best:  # strict: the first best wins
        best, best_j = iou[i, j], j
    if best_j is not None and best >= match_t:
      matches[i] = best_j
    elif best_j is not None and best >= unmatched_t:
      band.add(i)
  if force:
    forced = {}
    for j in range(n):
      if not crowd[j]:
        forced.setdefault(int(np.argmax(iou[:, j])), j)
    matches.update(forced)
  cls = np.zeros(num_anchors, np.int32)
  box_t = np.zeros((num_anchors, 4))
  cls_w = np.ones(num_anchors)
  box_w = np.zeros(num_anchors)
  for i in range(num_anchors):
    if i in matches:
      j = matches[i]
      cls[i], box_w[i] = classes[j], 1.0
      box_t[i] = _np_encode(boxes[j], anchors[i])
    elif i in band or any(crowd[j] and iou[i, j] >= unmatched_t
                          for j in range(n)):
      cls_w[i] = 0.0
  return cls, box_t, cls_w, box_w


class TargetAssignerTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    multilevel = anchors_lib.multilevel_anchors(3, 5, 2, (0.5, 1.0, 2.0), 3.0,
                                                (128, 128))
    self.anchors = anchors_lib.flatten_multilevel(multilevel, 4).numpy()

  def _boxes(self, rng, n):
    yx = rng.uniform(0, 110, (n, 2))
    hw = rng.uniform(6, 80, (n, 2))
    return np.concatenate([yx, np.minimum(yx + hw, 128)], 1).astype(np.float32)

  @parameterized.named_parameters(
      ('default', 0.5, 0.5, True, False, 4),
      ('band', 0.5, 0.4, True, False, 6),
      ('no_force', 0.6, 0.4, False, False, 5),
      ('crowd', 0.5, 0.4, True, True, 6),
      ('one_box', 0.5, 0.5, True, False, 1),
  )
  def test_matches_numpy_reference(self, match_t, unmatched_t, force,
                                   with_crowd, n):
    rng = np.random.default_rng(n + int(with_crowd) * 10)
    for _ in range(3):
      boxes = self._boxes(rng, n)
      classes = rng.integers(1, 91, n).astype(np.int32)
      crowd = (np.arange(n) % 3 == 1) if with_crowd else np.zeros(n, bool)
      got = target_assigner.assign_targets(
          self.anchors, boxes, classes, crowd if with_crowd else None,
          match_t, unmatched_t, force)
      cls, box_t, cls_w, box_w = _reference(
          self.anchors, boxes, classes, crowd, match_t, unmatched_t, force)
      self.assertAllEqual(got['cls_targets'], cls)
      self.assertAllEqual(got['cls_weights'], cls_w)
      self.assertAllEqual(got['box_weights'], box_w)
      self.assertAllClose(got['box_targets'], box_t, atol=1e-4)
      self.assertEqual(float(got['num_positives']), box_w.sum())
      self.assertGreater(box_w.sum(), 0)

  def test_no_boxes_gives_all_negatives(self):
    got = target_assigner.assign_targets(
        self.anchors, tf.zeros([0, 4]), tf.zeros([0], tf.int32),
        tf.zeros([0], tf.bool))
    self.assertAllEqual(got['cls_targets'], np.zeros(len(self.anchors)))
    self.assertAllEqual(got['cls_weights'], np.ones(len(self.anchors)))
    self.assertAllEqual(got['box_weights'], np.zeros(len(self.anchors)))
    self.assertAllEqual(got['box_targets'], np.zeros((len(self.anchors), 4)))
    self.assertEqual(float(got['num_positives']), 0.0)

  def test_force_match_rescues_a_box_without_good_anchor(self):
    # A thin box has IoU < 0.5 with every anchor; forcing still labels one.
    box = np.array([[40.0, 10.0, 44.0, 100.0]], np.float32)
    self.assertLess(_np_iou(self.anchors, box).max(), 0.5)
    forced = target_assigner.assign_targets(self.anchors, box, [7])
    plain = target_assigner.assign_targets(self.anchors, box, [7],
                                           force_match=False)
    self.assertEqual(float(forced['num_positives']), 1.0)
    self.assertEqual(float(plain['num_positives']), 0.0)
    best = int(np.argmax(_np_iou(self.anchors, box)[:, 0]))
    self.assertEqual(int(forced['cls_targets'][best]), 7)

  def test_first_box_wins_a_shared_best_anchor(self):
    box = np.array([[40.0, 10.0, 44.0, 100.0]] * 2, np.float32)
    got = target_assigner.assign_targets(self.anchors, box, [3, 5])
    self.assertEqual(float(got['num_positives']), 1.0)
    self.assertEqual(int(tf.reduce_max(got['cls_targets'])), 3)

  def test_match_anchors_indices_point_at_the_best_box(self):
    boxes = self._boxes(np.random.default_rng(0), 5)
    indices, positive, ignored = target_assigner.match_anchors(
        self.anchors, boxes, match_threshold=0.5, unmatched_threshold=0.4,
        force_match=False)
    iou = _np_iou(self.anchors, boxes)
    positive = positive.numpy()
    self.assertAllEqual(positive, iou.max(1) >= 0.5)
    self.assertAllEqual(indices.numpy()[positive], iou.argmax(1)[positive])
    self.assertAllEqual(ignored, (iou.max(1) >= 0.4) & (iou.max(1) < 0.5))

  def test_rejects_crossed_thresholds(self):
    with self.assertRaisesRegex(ValueError, 'unmatched_threshold'):
      target_assigner.match_anchors(self.anchors, tf.zeros([0, 4]),
                                    match_threshold=0.4,
                                    unmatched_threshold=0.5)


if __name__ == '__main__':
  tf.test.main()
