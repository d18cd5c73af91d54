"""Evaluation image summaries: a few validation images with predictions drawn.

After each evaluation, `EvalImageSummaries` (an orbit eval action) runs the
task's `validation_step` on the first `num_images` validation images (kept
in memory from the first call, so every evaluation shows the same images),
draws the detections (boxes, and masks when the outputs have
`detection_masks`) onto the model-input images and writes them as
TensorBoard image summaries under `<model_dir>/eval` (tag
`eval/predictions`). It costs one small extra batch per evaluation, outside
the evaluation loop itself.
"""
from typing import Dict, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from spinenet.data import coco_converter
from spinenet.data import preprocess
from spinenet.ops import mask_ops
from spinenet.serving import draw
from spinenet.serving import export_lib

TAG = 'eval/predictions'
MASK_ALPHA = 0.45


def denormalize(images) -> np.ndarray:
  """Parser-normalized images back to uint8 RGB.

  Args:
    images: float `[B, H, W, 3]`, `(pixel - MEAN_RGB) / STDDEV_RGB` (the
      detection parsers' normalization; padding is 0 and comes back grey).

  Returns:
    uint8 `[B, H, W, 3]`.
  """
  images = np.asarray(images, np.float32)
  pixels = images * np.asarray(preprocess.STDDEV_RGB) + np.asarray(preprocess.MEAN_RGB)
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def overlay_masks(image: np.ndarray, masks: np.ndarray, classes, scores,
                  min_score: float = 0.3, alpha: float = MASK_ALPHA) -> np.ndarray:
  """Tints each mask's pixels with its class colour (`draw.class_color`).

  Args:
    image: uint8 `[H, W, 3]`.
    masks: bool or 0/1 `[N, H, W]` in the frame of `image`.
    classes: `[N]` class ids; scores: `[N]`.
    min_score: masks of detections below it are not drawn.
    alpha: opacity of the tint.

  Returns:
    uint8 `[H, W, 3]`, a copy.
  """
  canvas = np.asarray(image, np.float32).copy()
  for mask, category, score in zip(masks, classes, scores):
    if score < min_score:
      continue
    on = np.asarray(mask, bool)
    color = np.asarray(draw.class_color(int(category)), np.float32)
    canvas[on] = (1.0 - alpha) * canvas[on] + alpha * color
  return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def render(images, outputs: Dict[str, np.ndarray], num_images: int,
           min_score: float = 0.3,
           label_map: Optional[Dict[int, str]] = None) -> np.ndarray:
  """Draws detections onto (at most) `num_images` model-input images.

  Args:
    images: float `[B, H, W, 3]` parser-normalized model inputs.
    outputs: NumPy dict of a detection `validation_step`: `detection_boxes`
      `[B, N, 4]` (model-input pixels), `detection_scores`,
      `detection_classes`, `num_detections`, optional `detection_masks`
      `[B, N, M, M]` box-relative probabilities, optional `valid` `[B]`.
    num_images: most images drawn.
    min_score: detections below it are not drawn.
    label_map: optional class id -> name.

  Returns:
    uint8 `[K, H, W, 3]`, K <= num_images (invalid padding examples dropped).
  """
  pixels = denormalize(images)
  valid = np.asarray(outputs.get('valid', np.ones(len(pixels), bool)), bool)
  height, width = pixels.shape[1:3]
  drawn = []
  for i in np.flatnonzero(valid)[:num_images]:
    n = int(outputs['num_detections'][i])
    boxes = np.asarray(outputs['detection_boxes'][i, :n], np.float32)
    classes = np.asarray(outputs['detection_classes'][i, :n])
    scores = np.asarray(outputs['detection_scores'][i, :n])
    image = pixels[i]
    if 'detection_masks' in outputs and n:
      pasted = mask_ops.paste_masks(
          np.asarray(outputs['detection_masks'][i, :n], np.float32), boxes,
          height, width)
      image = overlay_masks(image, mask_ops.binarize(pasted).numpy(), classes,
                            scores, min_score)
    drawn.append(draw.draw_detections(image, boxes, classes, scores,
                                      min_score=min_score, label_map=label_map))
  if not drawn:
    return np.zeros([0, height, width, 3], np.uint8)
  return np.stack(drawn)


class EvalImageSummaries:
  """Eval action: writes `num_images` drawn validation predictions.

  Args:
    task: the task (`build_inputs(False)`, `validation_step`).
    model: its model.
    summary_dir: where the image summaries go (`<model_dir>/eval`).
    step: the global step variable.
    num_images: images per evaluation (> 0).
    min_score: detections below it are not drawn.
    swap_weights: optional no-argument callable that swaps the evaluated
      weights in and out (the runner's EMA swap), called before and after
      drawing so the drawn model is the evaluated one.
  """

  def __init__(self, task, model, summary_dir: str, step, num_images: int = 4,
               min_score: float = 0.3, swap_weights=None):
    self._task, self._model = task, model
    self._swap_weights = swap_weights
    self._dir, self._step = summary_dir, step
    self._num_images = int(num_images)
    self._min_score = min_score
    self._inputs = None
    self._writer = None
    self._disabled = False
    self._label_map = None

  def _names(self):
    """Class names: the task's label map, else the one beside its records."""
    if self._label_map is None:
      label_map = getattr(self._task, 'label_map', None)
      if not label_map:
        patterns = [getattr(getattr(self._task, split, None), 'file_pattern', '')
                    for split in ('eval_data', 'train_data')]
        path = export_lib.find_label_map(patterns)
        label_map = coco_converter.read_label_map(path) if path else {}
      self._label_map = dict(label_map)
    return self._label_map

  def _first_inputs(self):
    """The first validation batches holding `num_images` images, cached."""
    if self._inputs is None:
      batches, count = [], 0
      for features, labels in self._task.build_inputs(False):
        batches.append((features, labels))
        images = features['images'] if isinstance(features, dict) else features
        valid = labels.get('valid') if isinstance(labels, dict) else None
        count += (int(np.sum(np.asarray(valid))) if valid is not None
                  else int(images.shape[0]))
        if count >= self._num_images:
          break
      self._inputs = batches
    return self._inputs

  def __call__(self, metrics=None):
    del metrics
    if self._disabled:
      return
    step = int(self._step.numpy())
    if self._swap_weights is not None:
      self._swap_weights()
    try:
      images = self._draw()
    finally:
      if self._swap_weights is not None:
        self._swap_weights()
    if images is None or not len(images):
      return
    if self._writer is None:
      self._writer = tf.summary.create_file_writer(self._dir)
    with self._writer.as_default():
      tf.summary.image(TAG, images, step=step, max_outputs=len(images))
    self._writer.flush()
    logging.info('eval | step %d | %d drawn validation images in %s (tag %s)',
                 step, len(images), self._dir, TAG)

  def _draw(self):
    """uint8 `[K, H, W, 3]` drawn predictions, or None (disabled)."""
    drawn = []
    try:
      for inputs in self._first_inputs():
        outputs = self._task.validation_step(inputs, self._model)
        outputs = tf.nest.map_structure(np.asarray, outputs)
        if 'detection_boxes' not in outputs:
          logging.info('eval image summaries: the task\'s outputs have no '
                       'detections; not drawing.')
          self._disabled = True
          return None
        features = inputs[0]
        images = features['images'] if isinstance(features, dict) else features
        drawn.append(render(images, outputs, self._num_images - sum(map(len, drawn)),
                            self._min_score, self._names()))
    except Exception as e:  # pylint: disable=broad-except
      # A picture must never stop a run (e.g. a strategy whose variables
      # cannot be read eagerly on the host).
      logging.warning('eval image summaries disabled: %s: %s', type(e).__name__, e)
      self._disabled = True
      return None
    return np.concatenate(drawn) if drawn else None
