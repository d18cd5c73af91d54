"""Model Garden parity: build its model, randomize, save, convert, compare.

Used by `tests/parity/model_garden_parity_test.py`, the checkpoint converter
tests and `benchmarks/parity.py`. The Model Garden models come from the one
recipe table, `benchmarks._model_garden` (built as its trainer builds them);
this module adds what a parity check needs on top: random weights and
statistics, checkpoint conversion, and relative differences of outputs.
"""
import os
from typing import Dict

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import _model_garden as model_garden  # noqa: E402
from official.vision.ops import anchor as mg_anchor  # noqa: E402

from spinenet.modeling import classifier as classifier_lib  # noqa: E402
from spinenet.modeling import heads  # noqa: E402
from spinenet.modeling import registry  # noqa: E402
from spinenet.training import checkpoint_converter  # noqa: E402

TOLERANCE = 1e-4  # max |ours - MG| <= TOLERANCE * max |MG|, per level.
IMAGE_SIZE = 128
IDS = tuple(model_garden.RECIPES)


def mg_retinanet(model_id, num_classes, size=IMAGE_SIZE):
  """Model Garden RetinaNet for our `model_id`, float32: `(task config, model)`."""
  task_config = model_garden.make_mg_params(model_id, size, num_classes).task
  return task_config, model_garden.build_mg_retinanet(model_id, size, num_classes)


def randomize(model, seed):
  """Random weights, biases and batch-norm statistics in every variable.

  Kernels ~ N(0, 1 / fan_in); biases ~ N(0, 0.1) (the class predictor keeps
  its prior -4.6 plus N(0, 0.5), so detections are neither absent nor
  saturated); gamma ~ U(0.5, 1.5), beta ~ N(0, 0.2), moving mean ~ N(0, 0.2),
  moving variance ~ U(0.5, 2).
  """
  rng = np.random.default_rng(seed)
  for v in model.weights:
    name, shape = v.name, v.shape.as_list()
    leaf = name.split('/')[-1].split(':')[0]
    if leaf in ('kernel', 'depthwise_kernel', 'pointwise_kernel'):
      fan_in = np.prod(shape[:-2]) if leaf == 'depthwise_kernel' else np.prod(shape[:-1])
      value = rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(fan_in))
    elif leaf == 'bias':
      value = rng.normal(0.0, 0.1, shape)
      if '/scores/' in name:
        value = -4.6 + rng.normal(0.0, 0.5, shape)
    elif leaf == 'gamma':
      value = rng.uniform(0.5, 1.5, shape)
    elif leaf in ('beta', 'moving_mean'):
      value = rng.normal(0.0, 0.2, shape)
    elif leaf == 'moving_variance':
      value = rng.uniform(0.5, 2.0, shape)
    else:
      raise ValueError(f'randomize: unexpected variable {name}')
    v.assign(value.astype(v.dtype.as_numpy_dtype))


def relative_difference(ours, reference):
  """`max |ours - reference| / max |reference|` (a float)."""
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  if ours.shape != reference.shape:
    raise ValueError(f'shape {ours.shape} vs reference {reference.shape}')
  scale = np.max(np.abs(reference))
  return float(np.max(np.abs(ours - reference)) / max(scale, 1e-30))


def _images(seed, size):
  return tf.constant(np.random.default_rng(seed).normal(0, 1, (2, size, size, 3)),
                     tf.float32)


def retinanet_parity(model_id, workdir, size=IMAGE_SIZE, num_classes=8, seed=0):
  """Converts a randomized MG RetinaNet into ours and compares raw outputs.

  Returns:
    `(diffs, state)`: `diffs['retinanet']` is `{level: relative difference}`,
    the worse of class and box outputs; `state` holds the images, MG model,
    its task config, checkpoint, raw outputs and our converted RetinaNet.
  """
  images = _images(seed, size)
  task_config, mg = mg_retinanet(model_id, num_classes, size)
  randomize(mg, seed)
  mg_ckpt = tf.train.Checkpoint(model=mg).write(os.path.join(workdir, 'mg_retinanet', 'ckpt'))
  mg_scores, mg_boxes = model_garden.mg_raw_fn(mg)(images)
  ours = registry.build_retinanet(model_id, num_classes=num_classes, input_size=size)
  checkpoint_converter.convert(mg_ckpt, model_id, 'retinanet',
                               os.path.join(workdir, 'retinanet'), model=ours)
  outputs = ours(images, training=False)
  diffs = {'retinanet': {
      level: max(relative_difference(outputs['cls_outputs'][level], mg_scores[level]),
                 relative_difference(outputs['box_outputs'][level], mg_boxes[level]))
      for level in sorted(mg_scores, key=int)}}
  state = dict(images=images, mg=mg, task_config=task_config, mg_ckpt=mg_ckpt,
               raw=(mg_scores, mg_boxes), ours=ours, num_classes=num_classes)
  return diffs, state


def model_parity(model_id, workdir, size=IMAGE_SIZE, seed=0):
  """`retinanet_parity`, then the 'classification' and 'backbone' tasks.

  The MG classifier is built on the MG RetinaNet's backbone object (with new
  random weights) and ours on our RetinaNet's backbone, to save build time;
  restoring written checkpoints into fresh models is tested separately.

  Returns:
    `(diffs, state)` as `retinanet_parity`, with `diffs['classification']`
    `{'logits': relative difference}` and `diffs['backbone']` per level.
  """
  diffs, state = retinanet_parity(model_id, workdir, size, seed=seed)
  images, mg, ours, k = state['images'], state['mg'], state['ours'], state['num_classes']
  mg_features = mg.backbone(images, training=False)

  _, mg_cls = model_garden.build_mg_classifier(model_id, size, k, backbone=mg.backbone)
  randomize(mg_cls, seed + 1)
  mg_cls_ckpt = tf.train.Checkpoint(model=mg_cls).write(
      os.path.join(workdir, 'mg_classifier', 'ckpt'))
  mg_logits = mg_cls(images, training=False)
  classifier = classifier_lib.Classifier(
      ours.backbone, heads.ClassificationHead(k, fusion='top'))
  classifier(images, training=False)
  checkpoint_converter.convert(mg_cls_ckpt, model_id, 'classification',
                               os.path.join(workdir, 'classification'), model=classifier)
  diffs['classification'] = {
      'logits': relative_difference(classifier(images, training=False), mg_logits)}

  checkpoint_converter.convert(state['mg_ckpt'], model_id, 'backbone',
                               os.path.join(workdir, 'backbone'), model=ours.backbone)
  features = ours.backbone(images, training=False)
  diffs['backbone'] = {level: relative_difference(features[level], mg_features[level])
                       for level in sorted(mg_features, key=int)}
  return diffs, state


def mg_detections(mg_model, task_config, scores, boxes, size):
  """MG's detection generator (task defaults) on raw outputs, with MG anchors."""
  a = task_config.model.anchor
  anchors = mg_anchor.Anchor(task_config.model.min_level, task_config.model.max_level,
                             a.num_scales, a.aspect_ratios, a.anchor_size,
                             (size, size)).multilevel_boxes
  batch = tf.shape(scores[str(task_config.model.min_level)])[0]
  batched = {k: tf.tile(v[None], [batch, 1, 1, 1]) for k, v in anchors.items()}
  image_shape = tf.tile(tf.constant([[size, size]], tf.float32), [batch, 1])
  return anchors, mg_model.detection_generator(boxes, scores, batched, image_shape)


def shift_to_candidates(scores, num_classes, num_candidates):
  """Constant logit shift after which about `num_candidates` (anchor, class)
  pairs per image score above MG's 0.05 threshold (background excluded)."""
  fg = np.concatenate([np.reshape(v.numpy(), [v.shape[0], -1, num_classes])
                       for v in scores.values()], axis=1)[:, :, 1:]
  kth = np.sort(fg.reshape(fg.shape[0], -1), axis=1)[:, -num_candidates]
  return float(np.log(0.05 / 0.95) - np.mean(kth))


def detection_parity(state, logit_shift=0.0, size=IMAGE_SIZE) -> Dict[str, float]:
  """Our `RetinaNet.postprocess` vs MG's generator on the same MG raw outputs.

  Args:
    state: from `model_parity`.
    logit_shift: added to every class logit before both post-processings,
      to choose how many candidates pass the score threshold.

  Returns:
    dict with `anchors` (max abs difference), `num_detections` (ours and MG's,
    per image), `classes_equal` (bool), `boxes` (relative difference) and
    `scores` (max abs difference) over the detections both report.
  """
  scores, boxes = state['raw']
  scores = {k: v + logit_shift for k, v in scores.items()}
  anchors, theirs = mg_detections(state['mg'], state['task_config'], scores, boxes, size)
  ours_model = state['ours']
  our_anchors = ours_model.anchors((size, size))
  mine = ours_model.postprocess({'cls_outputs': scores, 'box_outputs': boxes},
                                (size, size))
  n_ours = mine['num_detections'].numpy()
  n_mg = theirs['num_detections'].numpy()
  report = {
      'anchors': max(float(np.max(np.abs(our_anchors[k] - anchors[k])))
                     for k in anchors),
      'num_detections': [n_ours.tolist(), n_mg.tolist()],
      'classes_equal': True, 'boxes': 0.0, 'scores': 0.0}
  for b in range(len(n_mg)):
    n = int(min(n_ours[b], n_mg[b]))
    if n == 0:
      continue
    report['classes_equal'] &= bool(np.array_equal(
        mine['detection_classes'][b, :n].numpy(),
        theirs['detection_classes'][b, :n].numpy()))
    report['boxes'] = max(report['boxes'], relative_difference(
        mine['detection_boxes'][b, :n], theirs['detection_boxes'][b, :n]))
    report['scores'] = max(report['scores'], float(np.max(np.abs(
        mine['detection_scores'][b, :n].numpy()
        - theirs['detection_scores'][b, :n].numpy()))))
  return report
