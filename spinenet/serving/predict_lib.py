"""Runs a predictor over image files and writes annotated copies (`spinenet-predict`).

For every input image `DIR/name.ext` it writes `OUTPUT_DIR/name.png` with the
detections (boxes, names, scores) or the top classes drawn, and all results
to `OUTPUT_DIR/predictions.json`:

  [{"image": "DIR/name.ext", "output": "OUTPUT_DIR/name.png",
    "detections": [{"box": [ymin, xmin, ymax, xmax], "class": 3,
                    "name": "triangle", "score": 0.91}, ...]}, ...]

(classification: `"classes": [{"class", "name", "score"}, ...]`).
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
  names = result.get(sig.DETECTION_CLASS_NAMES)
  out = []
  for i in range(int(result[sig.NUM_DETECTIONS])):
    score = float(result[sig.DETECTION_SCORES][i])
    if score < min_score:
      continue
    category = int(result[sig.DETECTION_CLASSES][i])
    name = (str(names[i]) if names is not None and names[i] else
            label_map.get(category, str(category)))
    out.append({'box': [round(float(v), 2) for v in result[sig.DETECTION_BOXES][i]],
                'class': category, 'name': name, 'score': round(score, 4)})
  return out


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
    detections = _detections(result, min_score, label_map)
    drawn = draw.draw_detections(
        image, [d['box'] for d in detections], [d['class'] for d in detections],
        [d['score'] for d in detections], [d['name'] for d in detections], min_score)
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
