"""Mask R-CNN parity with the Model Garden through a converted checkpoint.

A Model Garden `MaskRCNNModel` (built by `_model_garden_maskrcnn` with a
model id's recipe) gets random weights and batch-norm statistics, is saved,
converted by `spinenet.training.checkpoint_converter` (task 'maskrcnn') into
our `MaskRCNN` and both run in inference mode on the same images:

* RPN scores and boxes per level;
* RoIAlign features (both of our implementations), box head class and box
  outputs for the same proposals (the Model Garden's own proposals, fed to
  both; our heads read RoIAlign as the model's `roi_align_method` says);
* mask head logits for the same boxes and classes;
* detections: our post-processing and the Model Garden's detection generator
  on the same box-head outputs (count and classes equal, boxes, scores);
* proposal generation: ours and the Model Garden's on the same (the Model
  Garden's) RPN outputs.

Each row is `max |ours - MG|`, `max |MG|` and their ratio (the parity
criterion is ratio <= 1e-4). Used by `tests/parity/maskrcnn_parity_test.py`
and `benchmarks/parity_maskrcnn.py`.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import _model_garden_maskrcnn as mg_maskrcnn  # noqa: E402
from benchmarks import _parity_harness as harness  # noqa: E402
from official.vision.ops import anchor as mg_anchor  # noqa: E402
from spinenet.modeling import registry  # noqa: E402
from spinenet.ops import maskrcnn_postprocess  # noqa: E402
from spinenet.ops import roi_align  # noqa: E402
from spinenet.training import checkpoint_converter  # noqa: E402

TOLERANCE = 1e-4


def row(ours, reference):
  """`(max abs diff, max |reference|, ratio)` of two arrays of one shape."""
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  if ours.shape != reference.shape:
    raise ValueError(f'shape {ours.shape} vs reference {reference.shape}')
  diff = float(np.max(np.abs(ours - reference)))
  scale = float(np.max(np.abs(reference)))
  return diff, scale, diff / max(scale, 1e-30)


def converted_pair(model_id, size, workdir, num_classes=5, overrides=None, seed=0):
  """`(MG model, our converted model, conversion result)`; the MG checkpoint
  is `workdir/mg/ckpt`."""
  mg = mg_maskrcnn.build_mg_maskrcnn(model_id, size, num_classes, overrides)
  harness.randomize(mg, seed)
  prefix = tf.train.Checkpoint(model=mg).write(os.path.join(workdir, 'mg', 'ckpt'))
  ours = registry.build_maskrcnn(model_id, num_classes, size, **(overrides or {}))
  result = checkpoint_converter.convert(prefix, model_id, 'maskrcnn',
                                        os.path.join(workdir, 'converted'),
                                        model=ours)
  return mg, ours, result


def compare(mg, ours, size, seed=1, num_masks=20):
  """The parity rows `{name: (max abs diff, max |ref|, ratio)}` on random images."""
  rng = np.random.default_rng(seed)
  images = tf.constant(rng.normal(0, 1, (2, size, size, 3)), tf.float32)
  image_shape = tf.constant([[size, size], [size - 16, size - 40]], tf.float32)
  rows = {}
  # First stage.
  mg_feats = mg.backbone(images, training=False)
  mg_scores, mg_boxes = mg.rpn_head(mg_feats, training=False)
  feats = ours.features(images, training=False)
  scores, boxes = ours.rpn_head(feats, training=False)
  for level in sorted(scores, key=int):
    rows[f'rpn_scores/{level}'] = row(scores[level], mg_scores[level])
    rows[f'rpn_boxes/{level}'] = row(boxes[level], mg_boxes[level])
  # Proposal generation on the same RPN outputs (the Model Garden's): ours
  # and theirs. (On each model's own outputs, differences of ~1e-6 in the
  # scores may swap two near-equal proposals, which a max over rows sees.)
  config = mg.get_config()
  anchors = mg_anchor.Anchor(
      min_level=config['min_level'], max_level=config['max_level'],
      num_scales=config['num_scales'], aspect_ratios=config['aspect_ratios'],
      anchor_size=config['anchor_size'], image_size=(size, size)).multilevel_boxes
  anchors = {l: tf.tile(a[None], [2, 1, 1, 1]) for l, a in anchors.items()}
  rois, roi_scores = mg.roi_generator(mg_boxes, mg_scores, anchors, image_shape,
                                      training=False)
  our_rois, our_scores = ours.proposals(mg_scores, mg_boxes, (size, size), image_shape,
                                        training=False)
  rows['proposal_boxes'] = row(our_rois, rois)
  rows['proposal_scores'] = row(our_scores, roi_scores)
  # Second stage on the same proposals.
  mg_roi_features = mg.roi_aligner(mg_feats, rois)
  for method in ('gather', 'crop_and_resize'):
    rows[f'roi_align/{method}'] = row(
        roi_align.multilevel_roi_align(feats, rois, 7, method=method), mg_roi_features)
  mg_class, mg_box = mg.detection_head[0](mg_roi_features, training=False)
  class_outputs, box_outputs = ours.box_outputs(feats, rois, training=False)
  rows['class_outputs'] = row(class_outputs, mg_class)
  rows['box_outputs'] = row(box_outputs, mg_box)
  mask_rois = rois[:, :num_masks]
  num_classes = class_outputs.shape[-1]
  classes = tf.constant(rng.integers(1, num_classes, (2, num_masks)), tf.int32)
  mg_masks = mg.mask_head([mg.mask_roi_aligner(mg_feats, mask_rois), classes],
                          training=False)
  rows['mask_outputs'] = row(ours.mask_outputs(feats, mask_rois, classes, training=False),
                             mg_masks)
  rows.update(detection_rows(mg, mg_class, mg_box, rois, image_shape))
  return rows


def detection_rows(mg, class_outputs, box_outputs, rois, image_shape):
  """Our post-processing vs the Model Garden's `DetectionGenerator` on the same outputs.

  Rows `detection_boxes` and `detection_scores` over the detections both
  keep, and `detection_count_and_classes` whose ratio is the fraction of
  images whose detection count or classes differ (0 when all agree). The
  class logits are first scaled to a standard deviation of 4 (the same
  inputs for both): a random head's logits are nearly flat over many
  classes, so no class would pass the 0.05 score threshold.
  """
  c = maskrcnn_postprocess
  class_outputs = class_outputs * (4.0 / float(np.std(class_outputs)))
  theirs = mg.detection_generator(box_outputs, class_outputs, rois, image_shape,
                                  regression_weights=list(c.roi_sampler.BOX_WEIGHTS),
                                  bbox_per_class=True)
  config = mg.detection_generator.get_config()
  ours = c.generate_detections(
      class_outputs, box_outputs, rois, image_shape,
      score_threshold=config['pre_nms_score_threshold'],
      pre_nms_top_k=config['pre_nms_top_k'], nms_iou_threshold=config['nms_iou_threshold'],
      max_detections=config['max_num_detections'])
  n_ours, n_theirs = ours['num_detections'].numpy(), theirs['num_detections'].numpy()
  same = [int(a == b and np.array_equal(ours['detection_classes'][i, :a],
                                        theirs['detection_classes'][i, :b]))
          for i, (a, b) in enumerate(zip(n_ours, n_theirs))]
  n = int(min(n_ours.min(), n_theirs.min()))
  if n == 0:
    raise ValueError('detection_rows: no detections to compare.')
  mismatch = 1.0 - float(np.mean(same))
  return {
      'detection_count_and_classes': (mismatch, 1.0, mismatch),
      'detection_boxes': row(ours['detection_boxes'][:, :n], theirs['detection_boxes'][:, :n]),
      'detection_scores': row(ours['detection_scores'][:, :n],
                              theirs['detection_scores'][:, :n]),
  }


def format_rows(rows):
  lines = [f"{'output':<28}{'max|diff|':>12}{'max|ref|':>12}{'ratio':>12}  ok"]
  for name, (diff, scale, ratio) in rows.items():
    ok = 'yes' if ratio <= TOLERANCE else 'NO'
    lines.append(f'{name:<28}{diff:>12.3g}{scale:>12.3g}{ratio:>12.3g}  {ok}')
  return '\n'.join(lines)
