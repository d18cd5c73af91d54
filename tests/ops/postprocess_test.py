"""generate_detections: candidate selection, decoding, class-aware NMS, padding."""
import math

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from spinenet.ops import anchors as anchors_lib
from spinenet.ops import box_ops
from spinenet.ops import postprocess

NUM_ANCHORS = 9
THRESHOLD_LOGIT = math.log(0.05 / 0.95)


def _anchors(size):
  return anchors_lib.multilevel_anchors(3, 7, 3, (0.5, 1.0, 2.0), 3.0, (size, size))


def _random_outputs(rng, batch, size, num_classes, mean, stddev, quantum=None):
  cls_outputs, box_outputs = {}, {}
  for level in range(3, 8):
    h = -(-size // 2**level)
    logits = rng.normal(mean, stddev, [batch, h, h, NUM_ANCHORS * num_classes])
    if quantum:  # Many exact ties.
      logits = np.round(logits / quantum) * quantum
    cls_outputs[str(level)] = tf.constant(logits, tf.float32)
    box_outputs[str(level)] = tf.constant(
        rng.normal(0.0, 0.4, [batch, h, h, NUM_ANCHORS * 4]), tf.float32)
  return cls_outputs, box_outputs


def _flat(level_dict, last_dim, image=None):
  levels = sorted(level_dict, key=int)
  arrays = [np.asarray(level_dict[l]) for l in levels]
  if image is not None:
    arrays = [a[image] for a in arrays]
  return np.concatenate([a.reshape(-1, last_dim) for a in arrays])


def _iou(a, b):
  h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = h * w
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def reference_detections(cls_outputs, box_outputs, anchors, image_shape,
                         score_threshold=0.05, pre_nms_top_k=5000,
                         nms_iou_threshold=0.5, max_detections=100,
                         skip_background=True):
  """Brute force in NumPy: every pair, a stable sort, greedy NMS per class."""
  flat_anchors = _flat(anchors, 4).astype(np.float64)
  num_classes = next(iter(cls_outputs.values())).shape[-1] // NUM_ANCHORS
  threshold = np.float32(math.log(score_threshold / (1 - score_threshold)))
  batch = next(iter(cls_outputs.values())).shape[0]
  out = {'detection_boxes': np.zeros([batch, max_detections, 4]),
         'detection_scores': np.zeros([batch, max_detections]),
         'detection_classes': np.zeros([batch, max_detections], np.int64),
         'num_detections': np.zeros([batch], np.int64)}
  for i in range(batch):
    logits = _flat(cls_outputs, num_classes, i)
    deltas = _flat(box_outputs, 4, i).astype(np.float64)
    pairs = [(a, c) for a in range(logits.shape[0]) for c in range(num_classes)
             if not (skip_background and c == 0) and logits[a, c] > threshold]
    # Python's sort is stable: equal logits keep flat (anchor, class) order.
    pairs = sorted(pairs, key=lambda p: -logits[p])[:pre_nms_top_k]
    kept = []
    for a, c in pairs:
      dy, dx, dh, dw = deltas[a]
      dh, dw = min(dh, box_ops.BBOX_XFORM_CLIP), min(dw, box_ops.BBOX_XFORM_CLIP)
      ay0, ax0, ay1, ax1 = flat_anchors[a]
      ah, aw = ay1 - ay0, ax1 - ax0
      yc, xc = dy * ah + ay0 + ah / 2, dx * aw + ax0 + aw / 2
      h, w = math.exp(dh) * ah, math.exp(dw) * aw
      height, width = image_shape[i]
      box = np.clip([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], 0,
                    [height, width, height, width])
      if all(kc != c or _iou(box, kb) <= nms_iou_threshold for kb, kc, _ in kept):
        kept.append((box, c, 1 / (1 + math.exp(-float(logits[a, c])))))
      if len(kept) == max_detections:
        break
    out['num_detections'][i] = len(kept)
    for j, (box, c, score) in enumerate(kept):
      out['detection_boxes'][i, j] = box
      out['detection_classes'][i, j] = c
      out['detection_scores'][i, j] = score
  return out


def _single_image_outputs(size, num_classes, hits):
  """Logits far below the threshold except `hits`: {(flat anchor, class): logit}."""
  anchors = _anchors(size)
  levels = sorted(anchors, key=int)
  cls_outputs, box_outputs, start = {}, {}, 0
  for level in levels:
    h, w = anchors[level].shape[:2]
    n = h * w * NUM_ANCHORS
    logits = np.full([n, num_classes], -10.0, np.float32)
    for (anchor, cls), value in hits.items():
      if start <= anchor < start + n:
        logits[anchor - start, cls] = value
    cls_outputs[level] = tf.constant(logits.reshape([1, h, w, -1]))
    box_outputs[level] = tf.zeros([1, h, w, NUM_ANCHORS * 4])
    start += n
  return cls_outputs, box_outputs, anchors, _flat(anchors, 4)


class GenerateDetectionsTest(tf.test.TestCase, parameterized.TestCase):

  def _detect(self, cls_outputs, box_outputs, anchors, image_shape, **kwargs):
    fn = tf.function(lambda c, b, s: postprocess.generate_detections(
        c, b, anchors, s, **kwargs))
    return {k: v.numpy() for k, v in fn(cls_outputs, box_outputs,
                                        tf.constant(image_shape, tf.float32)).items()}

  @parameterized.named_parameters(
      # Few pairs pass: fewer detections than max_detections.
      dict(testcase_name='sparse', size=64, num_classes=5, mean=-6.0, stddev=1.0),
      # More passing pairs than pre_nms_top_k, and more passing anchors too;
      # a lax NMS so that the whole top-k list shows in the output.
      dict(testcase_name='dense_top_k', size=64, num_classes=5, mean=-2.0, stddev=1.5,
           kwargs=dict(pre_nms_top_k=40, max_detections=40, nms_iou_threshold=0.9)),
      # Exact ties everywhere: order must follow (anchor, class).
      dict(testcase_name='ties', size=64, num_classes=4, mean=-3.0, stddev=1.0,
           quantum=0.5, kwargs=dict(pre_nms_top_k=60, max_detections=30)),
      dict(testcase_name='keep_background', size=64, num_classes=3, mean=-3.0,
           stddev=1.0, kwargs=dict(skip_background=False, nms_iou_threshold=0.3)),
  )
  def test_matches_numpy_reference(self, size, num_classes, mean, stddev,
                                   quantum=None, kwargs=None):
    kwargs = kwargs or {}
    rng = np.random.default_rng(size + num_classes)
    cls_outputs, box_outputs = _random_outputs(rng, 2, size, num_classes, mean,
                                               stddev, quantum)
    image_shape = [[size, size], [size * 0.75, size * 0.5]]
    anchors = _anchors(size)
    got = self._detect(cls_outputs, box_outputs, anchors, image_shape, **kwargs)
    want = reference_detections(cls_outputs, box_outputs, anchors, image_shape, **kwargs)
    self.assertGreater(want['num_detections'].min(), 0)
    np.testing.assert_array_equal(got['num_detections'], want['num_detections'])
    np.testing.assert_array_equal(got['detection_classes'], want['detection_classes'])
    self.assertAllClose(got['detection_scores'], want['detection_scores'], atol=1e-6)
    self.assertAllClose(got['detection_boxes'], want['detection_boxes'], atol=1e-3)

  def test_outputs_are_sorted_clipped_valid_and_zero_padded(self):
    rng = np.random.default_rng(3)
    cls_outputs, box_outputs = _random_outputs(rng, 2, 64, 6, -7.0, 1.5)
    image_shape = [[64.0, 64.0], [40.0, 50.0]]
    out = self._detect(cls_outputs, box_outputs, _anchors(64), image_shape,
                       max_detections=50)
    for i, (height, width) in enumerate(image_shape):
      n = out['num_detections'][i]
      self.assertBetween(n, 1, 49)
      boxes, scores = out['detection_boxes'][i], out['detection_scores'][i]
      self.assertTrue(np.all(np.diff(scores[:n]) <= 0))
      self.assertTrue(np.all(scores[:n] > 0.05))
      self.assertTrue(np.all(boxes[:n, 2] >= boxes[:n, 0]))
      self.assertTrue(np.all(boxes[:n, 3] >= boxes[:n, 1]))
      self.assertTrue(np.all(boxes[:n] >= 0))
      self.assertTrue(np.all(boxes[:n, 0::2] <= height))
      self.assertTrue(np.all(boxes[:n, 1::2] <= width))
      self.assertTrue(np.all(out['detection_classes'][i, :n] >= 1))
      self.assertAllEqual(boxes[n:], np.zeros_like(boxes[n:]))
      self.assertAllEqual(scores[n:], np.zeros_like(scores[n:]))
      self.assertAllEqual(out['detection_classes'][i, n:],
                          np.zeros_like(out['detection_classes'][i, n:]))

  def test_nms_suppresses_within_a_class_only(self):
    # Level-3 cell (3, 3) of a 64 px input; its anchors 0 and 3 share the
    # centre (28, 28) (ratio 0.5, scales 2**0 and 2**(1/3)) and lie inside.
    a, b = 27 * NUM_ANCHORS, 27 * NUM_ANCHORS + 3
    cls_outputs, box_outputs, anchors, flat = _single_image_outputs(
        64, 4, {(a, 1): 3.0, (b, 1): 2.0, (b, 2): 1.0})
    self.assertGreater(_iou(flat[a], flat[b]), 0.5)
    self.assertTrue(np.all((flat[[a, b]] >= 0) & (flat[[a, b]] <= 64)))
    out = self._detect(cls_outputs, box_outputs, anchors, [[64, 64]])
    self.assertEqual(out['num_detections'][0], 2)
    # (b, 1) is suppressed by (a, 1); (b, 2) has another class and stays.
    self.assertAllEqual(out['detection_classes'][0, :2], [1, 2])
    self.assertAllClose(out['detection_boxes'][0, :2], flat[[a, b]], atol=1e-4)
    self.assertAllClose(out['detection_scores'][0, :2], 1 / (1 + np.exp([-3.0, -1.0])))

  def test_score_threshold_and_background(self):
    just_above, just_below = THRESHOLD_LOGIT + 1e-3, THRESHOLD_LOGIT - 1e-3
    # Anchors 0, 40 and 80 do not overlap at level 3 of a 64 px input.
    cls_outputs, box_outputs, anchors, _ = _single_image_outputs(
        64, 3, {(0, 1): just_above, (40, 2): just_below, (80, 0): 5.0})
    out = self._detect(cls_outputs, box_outputs, anchors, [[64, 64]])
    self.assertEqual(out['num_detections'][0], 1)
    self.assertEqual(out['detection_classes'][0, 0], 1)
    out = self._detect(cls_outputs, box_outputs, anchors, [[64, 64]],
                       skip_background=False)
    self.assertAllEqual(out['detection_classes'][0, :out['num_detections'][0]], [0, 1])

  def test_max_detections_and_pre_nms_top_k_keep_the_best(self):
    # One box, 20 classes (never suppressing each other), class c scoring 1 + c / 10.
    hits = {(0, c): 1.0 + c / 10 for c in range(1, 21)}
    cls_outputs, box_outputs, anchors, _ = _single_image_outputs(64, 21, hits)
    best_classes = np.arange(20, 0, -1)
    best_scores = 1 / (1 + np.exp(-(1.0 + best_classes / 10)))
    out = self._detect(cls_outputs, box_outputs, anchors, [[64, 64]], max_detections=10)
    self.assertEqual(out['num_detections'][0], 10)
    self.assertAllEqual(out['detection_classes'][0], best_classes[:10])
    self.assertAllClose(out['detection_scores'][0], best_scores[:10])
    out = self._detect(cls_outputs, box_outputs, anchors, [[64, 64]], pre_nms_top_k=4)
    self.assertEqual(out['num_detections'][0], 4)
    self.assertAllEqual(out['detection_classes'][0, :4], best_classes[:4])

  def test_unknown_batch_size_gives_the_same_detections(self):
    rng = np.random.default_rng(5)
    cls_outputs, box_outputs = _random_outputs(rng, 3, 64, 4, -4.0, 1.5)
    anchors = _anchors(64)
    image_shape = tf.constant([[64.0, 64.0]] * 3)
    spec = lambda d: {k: tf.TensorSpec([None, *v.shape[1:]]) for k, v in d.items()}  # noqa: E731
    dynamic = tf.function(
        lambda c, b, s: postprocess.generate_detections(c, b, anchors, s),
        input_signature=[spec(cls_outputs), spec(box_outputs), tf.TensorSpec([None, 2])])
    static = tf.function(lambda c, b, s: postprocess.generate_detections(c, b, anchors, s))
    got, want = dynamic(cls_outputs, box_outputs, image_shape), static(
        cls_outputs, box_outputs, image_shape)
    self.assertAllEqual(got['num_detections'], want['num_detections'])
    self.assertAllEqual(got['detection_classes'], want['detection_classes'])
    # Kernels may round differently when the batch size is unknown.
    self.assertAllClose(got['detection_scores'], want['detection_scores'])
    self.assertAllClose(got['detection_boxes'], want['detection_boxes'], atol=1e-4)


if __name__ == '__main__':
  tf.test.main()
