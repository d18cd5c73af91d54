"""Mask R-CNN parity with the authors' TF1 `spinenet49_mrcnn` (shared by the
benchmark `benchmarks/tf1_parity.py` and `tests/training/tf1_maskrcnn_test.py`).

`make_tf1_reference.py --config spinenet49_mrcnn` runs the authors' model in
PREDICT mode and dumps its raw outputs. A model converted from its checkpoint
(`tf1_checkpoint.convert(..., task='maskrcnn')`) is compared on the same
input, stage by stage, each stage fed the TF1 run's own inputs so that an
NMS-dependent difference upstream cannot hide or cause one downstream:

* `backbone_L`, `rpn_score_L`, `rpn_box_L`: the network on the input.
* `frcnn_class_outputs`, `frcnn_box_outputs`: our box head (RoIAlign 7x7 +
  convs + FC) on the TF1 proposals `rpn_rois`.
* `detection_masks`: sigmoid of our mask head (RoIAlign 14x14 + convs +
  deconv + class-specific predictor) on the TF1 `detection_boxes` and
  `detection_classes`.
* `rpn_rois`, `rpn_roi_scores`: our proposals from the TF1 RPN outputs.
* `detection_boxes`, `detection_scores`, `detection_classes`,
  `num_detections`: our post-processing of the TF1 box-head outputs
  `frcnn_*` on the TF1 `rpn_rois`.

Both use the authors' "+1 pixel" box convention (`box_coding='tf1'`, set by
`tf1_checkpoint.tf1_build_args`): box height `ymax - ymin + 1`, decoded
`ymax = ymin + h - 1`, boxes clipped to `size - 1`.

Criterion per row: `max |ours - TF1| <= 1e-4 * max |TF1|`. Scores are sorted,
so they compare row by row; boxes compare as sets of rows (`matched_rows_diff`:
every TF1 row has one of ours within the tolerance and vice versa, detections
only with the same class), since two boxes whose scores differ by float
rounding (1e-7) may come out in either order. `num_detections` must be equal
(its row is 0 or 1).

Informative rows (`INFO_KEYS`, printed, not judged): `detection_scores` and
`detection_boxes`. They match at 256 px (91 classes) but not at 128 px (5
classes): there the TF1 per-class NMS suppresses one nearly empty box (height
3e-4 px) that ours keeps, because ours runs one NMS on boxes shifted apart by
class, and the shift rounds such a box's height (float32 ulp 3e-5 at 500 px),
so its overlaps differ.
"""
import numpy as np

TOLERANCE = 1e-4
INFO_KEYS = ('detection_scores', 'detection_boxes')


def rel_diff(ours, theirs):
  """`max |ours - theirs| / max |theirs|` in float64."""
  theirs = np.asarray(theirs, np.float64)
  return float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)) /
               max(float(np.max(np.abs(theirs))), 1e-30))


def matched_rows_diff(ours, theirs, ours_keys=None, theirs_keys=None):
  """Order-free `rel_diff` of two batches of row sets.

  Args:
    ours, theirs: `[B, N, C]` arrays (e.g. boxes).
    ours_keys, theirs_keys: optional `[B, N]` labels; rows only match rows of
      the same label.

  Returns:
    The larger over both directions and images of `max over rows of min over
    the other side's rows of max |difference|`, divided by `max |theirs|`.
  """
  ours = np.asarray(ours, np.float64)
  theirs = np.asarray(theirs, np.float64)
  if ours.shape != theirs.shape:
    return float('inf')
  worst = 0.0
  for b in range(ours.shape[0]):
    dist = np.abs(ours[b][:, None, :] - theirs[b][None, :, :]).max(-1)
    if ours_keys is not None:
      same = np.asarray(ours_keys)[b][:, None] == np.asarray(theirs_keys)[b][None, :]
      dist = np.where(same, dist, np.inf)
    worst = max(worst, float(dist.min(0).max()), float(dist.min(1).max()))
  return worst / max(float(np.max(np.abs(theirs))), 1e-30)


def compare(model, ref):
  """`(diffs, info, anchors_max_abs_px)` of a converted model against `ref`.

  Args:
    model: our `MaskRCNN`, built at the reference's size with
      `tf1_checkpoint.tf1_build_args(..., 'maskrcnn')` and the converted
      weights.
    ref: the loaded `reference.npz` of a Mask R-CNN configuration.

  Returns:
    `diffs` `{key: relative diff}` of the judged rows, `info` likewise for
    `INFO_KEYS`, and the worst anchor coordinate difference in pixels.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from spinenet.ops import maskrcnn_postprocess  # pylint: disable=g-import-not-at-top
  images = ref['input']
  size = tuple(images.shape[1:3])
  levels = range(model.min_level, model.max_level + 1)
  features = model.features(images, training=False)
  scores, boxes = model.rpn_head(features, training=False)
  diffs = {}
  for level in levels:
    diffs[f'backbone_{level}'] = rel_diff(features[str(level)], ref[f'backbone_{level}'])
    diffs[f'rpn_score_{level}'] = rel_diff(scores[str(level)], ref[f'rpn_score_{level}'])
    diffs[f'rpn_box_{level}'] = rel_diff(boxes[str(level)], ref[f'rpn_box_{level}'])
  class_outputs, box_outputs = model.box_outputs(
      features, tf.constant(ref['rpn_rois']), training=False)
  diffs['frcnn_class_outputs'] = rel_diff(class_outputs, ref['frcnn_class_outputs'])
  diffs['frcnn_box_outputs'] = rel_diff(box_outputs, ref['frcnn_box_outputs'])
  masks = tf.sigmoid(model.mask_outputs(
      features, tf.constant(ref['detection_boxes']),
      tf.constant(ref['detection_classes']), training=False))
  diffs['detection_masks'] = rel_diff(masks, ref['detection_masks'])

  anchors = model.anchors(size)
  worst_anchor = max(
      float(np.abs(np.reshape(anchors[str(l)], [-1, 4]) - ref[f'anchors_{l}']).max())
      for l in levels)
  image_shape = tf.constant(ref['image_info'])[:, 1, :]
  rois, roi_scores = model.proposals(scores, boxes, size, image_shape, training=False)
  diffs['rpn_rois'] = matched_rows_diff(rois, ref['rpn_rois'])
  diffs['rpn_roi_scores'] = rel_diff(roi_scores, ref['rpn_roi_scores'])

  c = model.detection_config
  detections = maskrcnn_postprocess.generate_detections(
      ref['frcnn_class_outputs'], ref['frcnn_box_outputs'], ref['rpn_rois'], image_shape,
      score_threshold=c.score_threshold, pre_nms_top_k=c.pre_nms_top_k,
      nms_iou_threshold=c.nms_iou_threshold, max_detections=c.max_detections,
      box_coding=c.box_coding)
  count = int(ref['num_detections'][0])
  same_count = all(int(n) == int(m) for n, m in
                   zip(detections['num_detections'].numpy(), ref['num_detections']))
  diffs['num_detections'] = 0.0 if same_count else 1.0
  diffs['detection_scores'] = rel_diff(detections['detection_scores'],
                                       ref['detection_scores'])
  valid = slice(0, count) if ref['num_detections'].shape[0] == 1 else slice(None)
  diffs['detection_boxes'] = matched_rows_diff(
      detections['detection_boxes'][:, valid], ref['detection_boxes'][:, valid],
      detections['detection_classes'][:, valid], ref['detection_classes'][:, valid])
  info = {key: diffs.pop(key) for key in INFO_KEYS}
  return diffs, info, worst_anchor


def format_rows(diffs, info, tolerance=TOLERANCE):
  """Table lines: one per row, judged then informative."""
  lines = []
  for key, value in diffs.items():
    lines.append(f'    {key:<22} {value:9.2e}  {"pass" if value <= tolerance else "FAIL"}')
  for key, value in info.items():
    lines.append(f'    {key:<22} {value:9.2e}  info (class-shifted NMS, see module doc)')
  return lines
