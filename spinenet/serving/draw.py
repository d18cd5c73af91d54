"""Draws detections and classifications onto images (PIL, on host)."""
import colorsys
from typing import Dict, Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont


def class_color(category_id: int):
  """A bright RGB colour, the same for a category id on every image."""
  hue = (int(category_id) * 0.618033988749895) % 1.0  # golden-ratio spacing
  r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
  return int(r * 255), int(g * 255), int(b * 255)


def _label(draw, xy, text, color, font, image_size):
  """Draws `text` on a filled tag above `xy`, kept inside the image.

  The tag sits above the box's top-left corner; near the top edge it moves
  down (inside the box), near the right edge it moves left, so the text is
  never cut (unless it is wider than the image).

  Args:
    draw: `ImageDraw.Draw` of the canvas.
    xy: `(left, top)` pixel corner of the box.
    text: label text.
    color: tag fill.
    font: PIL font.
    image_size: `(width, height)` of the canvas.
  """
  left, top = xy
  box = draw.textbbox((0, 0), text, font=font)
  text_w, text_h = box[2] - box[0], box[3] - box[1]
  top = max(0, top - text_h - 4)
  # The tag spans [left, left + text_w + 4] (2 px padding each side).
  left = max(0, min(left, image_size[0] - 1 - text_w - 4))
  box = draw.textbbox((left + 2, top + 1), text, font=font)
  draw.rectangle([box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1], fill=color)
  draw.text((left + 2, top + 1), text, fill=(0, 0, 0), font=font)


def draw_detections(image: np.ndarray, boxes: np.ndarray, classes: Sequence[int],
                    scores: Sequence[float], names: Optional[Sequence[str]] = None,
                    min_score: float = 0.3,
                    label_map: Optional[Dict[int, str]] = None) -> np.ndarray:
  """Boxes with `name score` labels on a copy of `image`.

  Args:
    image: uint8 `[H, W, 3]`.
    boxes: float `[N, 4]`, ymin, xmin, ymax, xmax in pixels of `image`.
    classes: `[N]` category ids.
    scores: `[N]`, descending.
    names: optional `[N]` class names (e.g. `detection_class_names`); else
      `label_map` or the category id.
    min_score: detections below it are not drawn.
    label_map: optional dict category id -> name.

  Returns:
    uint8 `[H, W, 3]`.
  """
  canvas = Image.fromarray(np.asarray(image, np.uint8)).convert('RGB')
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  width = max(2, round(max(canvas.size) / 300))
  label_map = label_map or {}
  for i in range(len(scores)):
    if scores[i] < min_score:
      continue
    ymin, xmin, ymax, xmax = (float(v) for v in boxes[i])
    category = int(classes[i])
    name = (names[i] if names is not None and names[i] else
            label_map.get(category, str(category)))
    color = class_color(category)
    draw.rectangle([xmin, ymin, xmax, ymax], outline=color, width=width)
    _label(draw, (xmin, ymin), f'{name} {scores[i]:.2f}', color, font,
           canvas.size)
  return np.asarray(canvas)


def draw_classification(image: np.ndarray, classes: Sequence[int],
                        scores: Sequence[float],
                        names: Optional[Sequence[str]] = None) -> np.ndarray:
  """The top classes as `name score` lines in the top-left corner of a copy."""
  canvas = Image.fromarray(np.asarray(image, np.uint8)).convert('RGB')
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  top = 2
  for i, (category, score) in enumerate(zip(classes, scores)):
    name = names[i] if names is not None and names[i] else str(int(category))
    text = f'{name} {float(score):.2f}'
    box = draw.textbbox((4, top), text, font=font)
    draw.rectangle([box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1], fill=(0, 0, 0))
    draw.text((4, top), text, fill=class_color(int(category)), font=font)
    top = box[3] + 3
  return np.asarray(canvas)
