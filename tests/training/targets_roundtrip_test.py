"""Training targets and inference post-processing agree on every convention.

An "oracle" network whose outputs ARE the training targets (a large logit for
the matched class of each positive anchor, the encoded box deltas as box
outputs) must be decoded by the inference path into the ground-truth boxes
and classes: anchor order, level layout, (anchor, class) packing of the class
logits, box coding and coordinate order all have to match between
`data.anchor_labeler` and `ops.postprocess`.
"""
import numpy as np
import tensorflow as tf

from spinenet.data import anchor_labeler
from spinenet.ops import postprocess

SIZE = (128, 192)
ANCHORS = dict(min_level=3, max_level=5, num_scales=2, aspect_ratios=(0.5, 1.0, 2.0),
               anchor_size=3.0)
NUM_CLASSES = 4


def _oracle_outputs(labels, num_anchors):
  cls_outputs, box_outputs = {}, {}
  for level, targets in labels['cls_targets'].items():
    one_hot = tf.one_hot(targets, NUM_CLASSES)  # [H, W, A, K]; background -> column 0
    positive = tf.cast(targets > 0, tf.float32)[..., None]
    logits = -12.0 + 24.0 * one_hot * positive
    h, w = targets.shape[:2]
    cls_outputs[level] = tf.reshape(logits, [1, h, w, num_anchors * NUM_CLASSES])
    box_outputs[level] = labels['box_targets'][level][None]
  return cls_outputs, box_outputs


def test_oracle_outputs_decode_to_the_ground_truth():
  boxes = np.array([[10.0, 12.0, 60.0, 50.0],     # ymin, xmin, ymax, xmax (pixels)
                    [70.0, 100.0, 120.0, 185.0],
                    [20.0, 120.0, 44.0, 136.0]], np.float32)
  classes = np.array([1, 3, 2], np.int32)
  labeler = anchor_labeler.AnchorLabeler(SIZE, **ANCHORS)
  labels = labeler.label(tf.constant(boxes), tf.constant(classes))
  cls_outputs, box_outputs = _oracle_outputs(labels, labeler.num_anchors_per_location)
  detections = postprocess.generate_detections(
      cls_outputs, box_outputs,
      {l: tf.constant(a) for l, a in labeler.multilevel_anchors.items()},
      tf.constant([SIZE], tf.float32), score_threshold=0.5, nms_iou_threshold=0.5,
      max_detections=10)
  n = int(detections['num_detections'][0])
  assert n == len(boxes), detections
  got = detections['detection_boxes'][0, :n].numpy()
  got_classes = detections['detection_classes'][0, :n].numpy()
  order = np.lexsort((got[:, 1], got[:, 0]))
  expected = np.lexsort((boxes[:, 1], boxes[:, 0]))
  np.testing.assert_allclose(got[order], boxes[expected], atol=1e-3)
  np.testing.assert_array_equal(got_classes[order], classes[expected])
