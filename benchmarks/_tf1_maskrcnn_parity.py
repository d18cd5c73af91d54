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

Criterion per row: `max |ours - TF1| <= 1e-4 * max |TF1|`. Informative rows
(`INFO_KEYS`, not judged): our proposals from the TF1 RPN outputs against
`rpn_rois` and `rpn_roi_scores`. They differ by about a pixel because the
authors' box coder uses the legacy "+1" pixel convention (anchor height
`ymax - ymin + 1`, decoded `ymax = ymin + h - 1`, boxes clipped to
`size - 1`), which ours and the Model Garden's do not; the scores (and so the
order) agree.
"""
import numpy as np

TOLERANCE = 1e-4
INFO_KEYS = ('rpn_rois', 'rpn_roi_scores')


def rel_diff(ours, theirs):
  """`max |ours - theirs| / max |theirs|` in float64."""
  theirs = np.asarray(theirs, np.float64)
  return float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)) /
               max(float(np.max(np.abs(theirs))), 1e-30))


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
  info = {'rpn_rois': rel_diff(rois, ref['rpn_rois']),
          'rpn_roi_scores': rel_diff(roi_scores, ref['rpn_roi_scores'])}
  return diffs, info, worst_anchor


def format_rows(diffs, info, tolerance=TOLERANCE):
  """Table lines: one per row, judged then informative."""
  lines = []
  for key, value in diffs.items():
    lines.append(f'    {key:<22} {value:9.2e}  {"pass" if value <= tolerance else "FAIL"}')
  for key, value in info.items():
    lines.append(f'    {key:<22} {value:9.2e}  info (box coder differs, see docs/convert.md)')
  return lines
