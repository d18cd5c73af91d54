"""Runs a predictor over image files and writes annotated copies (`spinenet-predict`).

For every input image `DIR/name.ext` it writes `OUTPUT_DIR/name.png` with the
detections (boxes, names, scores; masks filled semi-transparently in the class
colour for Mask R-CNN exports) or the top classes drawn, and all results to
`OUTPUT_DIR/predictions.json`:

  [{"image": "DIR/name.ext", "output": "OUTPUT_DIR/name.png",
    "detections": [{"box": [ymin, xmin, ymax, xmax], "class": 3,
                    "name": "triangle", "score": 0.91}, ...]}, ...]

(Mask R-CNN: each detection also has `"mask_area"`, its mask's pixels;
classification: `"classes": [{"class", "name", "score"}, ...]`).
"""
import io
import json
import os
import time
from typing import Dict, List, Optional, Sequence

from absl import logging
import numpy as np
from PIL import Image

from spinenet.serving import draw
from spinenet.serving import signatures as sig


def _detections(result, min_score, label_map):
  """`(JSON-able detections above min_score, their row indices)`."""
  names = result.get(sig.DETECTION_CLASS_NAMES)
  out, rows = [], []
  for i in range(int(result[sig.NUM_DETECTIONS])):
    score = float(result[sig.DETECTION_SCORES][i])
    if score < min_score:
      continue
    category = int(result[sig.DETECTION_CLASSES][i])
    name = (str(names[i]) if names is not None and names[i] else
            label_map.get(category, str(category)))
    out.append({'box': [round(float(v), 2) for v in result[sig.DETECTION_BOXES][i]],
                'class': category, 'name': name, 'score': round(score, 4)})
    rows.append(i)
  return out, rows


def instance_masks(result, rows: Sequence[int], image_shape) -> Optional[np.ndarray]:
  """uint8 0/1 `[len(rows), H, W]`: the masks of detection `rows`, or None.

  Reads `detection_masks` (dense; its frame may be larger than the image in
  a batch of several sizes: cut to `image_shape`) or
  `detection_masks_png_bytes` (one PNG each).

  Args:
    result: one image's outputs (no batch axis).
    rows: detection indices.
    image_shape: `(H, W)` of the image.

  Raises:
    ValueError: a PNG that does not decode or has another size than the image.
  """
  height, width = int(image_shape[0]), int(image_shape[1])
  if sig.DETECTION_MASKS in result:
    dense = np.asarray(result[sig.DETECTION_MASKS])
    masks = np.zeros((len(rows), height, width), np.uint8)
    for k, i in enumerate(rows):
      mask = dense[i, :height, :width]
      masks[k, :mask.shape[0], :mask.shape[1]] = mask > 0
    return masks
  if sig.DETECTION_MASKS_PNG in result:
    masks = np.zeros((len(rows), height, width), np.uint8)
    for k, i in enumerate(rows):
      data = result[sig.DETECTION_MASKS_PNG][i]
      try:
        mask = np.asarray(Image.open(io.BytesIO(bytes(data))))
      except (OSError, ValueError) as e:
        raise ValueError(f'{sig.DETECTION_MASKS_PNG}[{i}] is not a PNG ({e}).') from None
      if mask.shape[:2] != (height, width):
        raise ValueError(f'{sig.DETECTION_MASKS_PNG}[{i}] is {mask.shape[0]} x '
                         f'{mask.shape[1]}; the image is {height} x {width}.')
      masks[k] = (mask if mask.ndim == 2 else mask[..., 0]) > 0
    return masks
  return None


def _classes(result, label_map):
  names = result.get(sig.TOP_K_CLASS_NAMES)
  return [{'class': int(c),
           'name': str(names[i]) if names is not None and names[i] else
                   label_map.get(int(c), str(int(c))),
           'score': round(float(s), 4)}
          for i, (c, s) in enumerate(zip(result[sig.TOP_K_CLASSES],
                                         result[sig.TOP_K_SCORES]))]


def annotate(image: np.ndarray, result: Dict[str, np.ndarray], min_score: float = 0.3,
             label_map: Optional[Dict[int, str]] = None):
  """`(annotated image, JSON-able summary)` of one prediction."""
  label_map = label_map or {}
  if sig.DETECTION_BOXES in result:
    detections, rows = _detections(result, min_score, label_map)
    masks = instance_masks(result, rows, image.shape[:2])
    if masks is not None:
      for detection, mask in zip(detections, masks):
        detection['mask_area'] = int(mask.sum())
    drawn = draw.draw_detections(
        image, [d['box'] for d in detections], [d['class'] for d in detections],
        [d['score'] for d in detections], [d['name'] for d in detections], min_score,
        masks=masks)
    return drawn, {'detections': detections}
  if sig.TOP_K_CLASSES in result:
    classes = _classes(result, label_map)
    drawn = draw.draw_classification(image, [c['class'] for c in classes],
                                     [c['score'] for c in classes],
                                     [c['name'] for c in classes])
    return drawn, {'classes': classes}
  raise ValueError(f'Unknown prediction outputs {sorted(result)}; expected '
                   f'{sig.DETECTION_BOXES} or {sig.TOP_K_CLASSES}.')


def predict_files(predictor, image_paths: Sequence[str], output_dir: str, *,
                  min_score: float = 0.3, batch_size: int = 1,
                  label_map: Optional[Dict[int, str]] = None) -> List[dict]:
  """Predicts every image file and writes annotated copies and predictions.json.

  Args:
    predictor: a `client` predictor (`predict(list of bytes) -> list of dicts`).
    image_paths: image files (JPEG, PNG, ...).
    output_dir: created if missing; must not be an input's directory.
    min_score: detections below it are neither drawn nor listed.
    batch_size: images per request.
    label_map: optional category id -> name, for models without class names.

  Returns:
    The list written to `predictions.json`.
  """
  if not image_paths:
    raise ValueError('No input images; pass --image (files or glob patterns).')
  os.makedirs(output_dir, exist_ok=True)
  out_real = os.path.realpath(output_dir)
  if any(os.path.dirname(os.path.realpath(p)) == out_real for p in image_paths):
    raise ValueError(f'--output_dir={output_dir} holds input images; choose another '
                     'directory so they are not overwritten.')
  summary, start = [], time.monotonic()
  for first in range(0, len(image_paths), batch_size):
    paths = image_paths[first:first + batch_size]
    data = []
    for path in paths:
      with open(path, 'rb') as f:
        data.append(f.read())
    results = predictor.predict(data)
    for path, encoded, result in zip(paths, data, results):
      image = np.asarray(Image.open(io.BytesIO(encoded)).convert('RGB'))
      drawn, info = annotate(image, result, min_score, label_map)
      output = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + '.png')
      Image.fromarray(drawn).save(output)
      summary.append(dict(image=path, output=output, **info))
    done = first + len(paths)
    rate = done / max(time.monotonic() - start, 1e-9)
    logging.info('predicted %d/%d images | %.2f images/s | ETA %.0f s', done,
                 len(image_paths), rate, (len(image_paths) - done) / rate)
  with open(os.path.join(output_dir, 'predictions.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  return summary
