"""TF1 model-zoo Mask R-CNN checkpoints: conversion and parity.

* Always run: a tiny Mask R-CNN of ours is written as a name-based TF1
  checkpoint under the authors' names (the converter's naming rule inverted:
  `rpn_head/rpn`, `rpn-l<level>-bn`, `fast_rcnn_head/conv_<i>`, `fc6`,
  unnamed `batch_normalization_<n>`, `mask_head/mask-conv-l<i>`,
  `conv5-mask`, `mask_fcn_logits`, ...); `--task=maskrcnn` must infer the head
  sizes from it, restore every variable, and a RetinaNet conversion of it must
  be refused with the task to use.
* Parity with the authors' code (needs SPINENET_TF1_REFERENCE): their
  `spinenet49_mrcnn` at 128 px (5 classes, to keep their per-class NMS short)
  is converted; backbone and RPN outputs per level, the proposals from their
  RPN outputs, the Fast R-CNN outputs on their proposals, the detection count
  from their Fast R-CNN outputs and the masks on their detections must be within
  1e-4 x max |TF1| (`benchmarks/_tf1_maskrcnn_parity.py`); proposals and
  detections need the authors' "+1 pixel" box coding, which the import sets.
* `matched_rows_diff`, the order-free comparison of proposal and detection
  boxes, by hand.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import _tf1_maskrcnn_parity as parity
from spinenet.modeling import registry
from spinenet.training import tf1_checkpoint
import tf1_names

SIZE = 128
TINY = dict(filter_size_scale=0.25, endpoints_num_filters=16, min_level=3, max_level=7)
HEADS = dict(rpn_convs=2, rpn_filters=8, box_convs=2, box_filters=8, fc_dims=16,
             mask_convs=3, mask_filters=8)


def test_maskrcnn_checkpoint_converts_with_its_head_sizes(tmp_path):
  args = tf1_checkpoint.tf1_build_args('49S', 'maskrcnn')
  assert args['norm_epsilon'] == 1e-3 and args['activation'] == 'relu'
  assert tuple(args['aspect_ratios']) == (1.0, 2.0, 0.5)
  assert args['box_coding'] == 'tf1'
  source = registry.build_maskrcnn('49S', num_classes=4, input_size=SIZE, **TINY, **HEADS,
                                   **args)
  assert source.proposal_config.box_coding == 'tf1'
  assert source.detection_config.box_coding == 'tf1'
  units = (tf1_checkpoint.backbone_units(source.backbone, mobile=False)
           + tf1_checkpoint.maskrcnn_head_units(source))
  names = tf1_names.tf1_names(units)
  assert len(names) == len(source.weights)
  assert {'rpn_head/rpn-1/kernel', 'rpn_head/rpn-l7-bn-1/gamma',
          'fast_rcnn_head/conv_1/kernel', 'fast_rcnn_head/batch_normalization_2/beta',
          'fast_rcnn_head/fc6/kernel', 'mask_head/conv5-mask/kernel',
          'mask_head/batch_normalization_3/moving_variance',
          'mask_head/mask_fcn_logits/bias'} <= set(names)
  rng = np.random.default_rng(0)
  raw = {n: rng.normal(size=v.shape).astype(np.float32) for n, v in names.items()}
  tf1_names.save_tf1(str(tmp_path / 'ckpt' / 'model.ckpt-10'), dict(raw, global_step=np.int64(10)))

  # The heads' depths and widths and the class count come from the checkpoint
  # (the converter builds its model with them; the TINY backbone needs
  # arguments a checkpoint does not record, so the model is passed here).
  inferred = tf1_checkpoint._infer_maskrcnn_heads(  # pylint: disable=protected-access
      {n: tuple(v.shape) for n, v in raw.items()}, '49S')
  assert inferred == dict(num_classes=4, **HEADS)
  target = registry.build_maskrcnn('49S', input_size=SIZE, **TINY,
                                   **dict(args, **inferred))
  result = tf1_checkpoint.convert(str(tmp_path / 'ckpt'), '49S', 'maskrcnn',
                                  str(tmp_path / 'out'), model=target)
  assert len(result.mapping) == len(raw)
  values = {v.name: v.numpy() for v in target.weights}
  for ours, key in result.mapping:
    np.testing.assert_array_equal(values[ours + ':0'], raw[key])
  record = json.loads((tmp_path / 'out' / 'conversion.json').read_text())
  assert record['task'] == 'maskrcnn' and record['build_args']['fc_dims'] == 16

  with pytest.raises(tf1_checkpoint.ConversionError, match='use --task=maskrcnn'):
    tf1_checkpoint.convert(str(tmp_path / 'ckpt'), '49S', 'retinanet',
                           str(tmp_path / 'out_retinanet'))
  dropped = {n: v for n, v in raw.items() if not n.startswith('mask_head/mask-conv-l2/')}
  tf1_names.save_tf1(str(tmp_path / 'bad' / 'model.ckpt'), dropped)
  with pytest.raises(tf1_checkpoint.ConversionError, match='mask_head/mask-conv-l2'):
    tf1_checkpoint.convert(str(tmp_path / 'bad' / 'model.ckpt'), '49S', 'maskrcnn',
                           str(tmp_path / 'out_bad'), model=target)


# ================= Parity with the authors' code (reference) =================

_REFERENCE = os.environ.get('SPINENET_TF1_REFERENCE')


@pytest.mark.skipif(not _REFERENCE, reason=(
    'SPINENET_TF1_REFERENCE is not set (the folder holding the authors\' TF1 code and '
    'make_tf1_reference.py); .ci/run sets it when present.'))
@pytest.mark.slow
def test_converted_zoo_maskrcnn_matches_the_authors_code(tmp_path):
  ref_dir = tmp_path / 'spinenet49_mrcnn'
  cmd = [sys.executable, os.path.join(_REFERENCE, 'make_tf1_reference.py'),
         '--config', 'spinenet49_mrcnn', '--image_size', str(SIZE), '--num_classes', '5',
         '--output_dir', str(ref_dir)]
  done = subprocess.run(cmd, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
  ref = np.load(ref_dir / 'reference.npz')

  result = tf1_checkpoint.convert(str(ref_dir), '49', 'maskrcnn', str(tmp_path / 'out'),
                                  input_size=SIZE)
  assert len(result.mapping) == len(result.model.weights)
  assert result.model.box_head.get_config()['num_classes'] == 5
  diffs, info, worst_anchor = parity.compare(result.model, ref)
  assert worst_anchor < 1e-3
  expected = {f'{k}_{l}' for k in ('backbone', 'rpn_score', 'rpn_box') for l in range(3, 8)}
  expected |= {'frcnn_class_outputs', 'frcnn_box_outputs', 'detection_masks',
               'rpn_rois', 'rpn_roi_scores', 'num_detections'}
  assert set(diffs) == expected
  failed = {k: v for k, v in diffs.items() if not v <= parity.TOLERANCE}
  assert not failed, failed
  # The TF1 detections are real ones (the mask rows compare something).
  assert int(ref['num_detections'][0]) > 0
  assert set(info) == set(parity.INFO_KEYS)
  # The standard box coding (the Model Garden's) misses the TF1 proposals by
  # about a pixel: the rows above do test the coding.
  image_shape = tf.constant(ref['image_info'])[:, 1, :]
  features = result.model.features(ref['input'], training=False)
  scores, boxes = result.model.rpn_head(features, training=False)
  from spinenet.ops import proposals  # pylint: disable=g-import-not-at-top
  standard, _ = proposals.generate_proposals(
      scores, boxes, result.model.anchors((SIZE, SIZE)), image_shape,
      pre_nms_top_k=result.model.proposal_config.test_pre_nms_top_k,
      num_proposals=result.model.proposal_config.test_num_proposals)
  assert parity.matched_rows_diff(standard, ref['rpn_rois']) > parity.TOLERANCE


def test_matched_rows_diff_ignores_order_and_respects_classes():
  theirs = np.array([[[0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4]]], np.float32)
  ours = theirs[:, [2, 0, 1]]
  assert parity.matched_rows_diff(ours, theirs) == 0.0
  shifted = ours.copy()
  shifted[0, 0, 3] += 0.5
  assert parity.matched_rows_diff(shifted, theirs) == pytest.approx(0.5 / 20)
  classes = np.array([[1, 2, 3]])
  assert parity.matched_rows_diff(ours, theirs, classes[:, [2, 0, 1]], classes) == 0.0
  # Same labels by position pair each row with another box: worst 17 px of 20.
  assert parity.matched_rows_diff(ours, theirs, classes, classes) == pytest.approx(17 / 20)
  assert parity.matched_rows_diff(ours, theirs, classes + 3, classes) == float('inf')
  assert parity.matched_rows_diff(ours[:, :2], theirs) == float('inf')
