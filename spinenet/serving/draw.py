"""Draws detections (boxes, labels, instance masks) and classifications (PIL, on host)."""
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


MASK_ALPHA = 0.45


def fill_masks(image: np.ndarray, masks, colors, alpha: float = MASK_ALPHA) -> np.ndarray:
  """Blends each mask's colour into a copy of `image` (the last mask on top).

  Args:
    image: uint8 `[H, W, 3]`.
    masks: `[N, h, w]`, nonzero = inside (0/1 uint8 or booleans); cut or
      zero-padded to `H, W` (a batch's mask frame can be larger than the
      image).
    colors: N RGB triples.
    alpha: opacity of the fill.

  Returns:
    uint8 `[H, W, 3]`.
  """
  out = np.asarray(image, np.float32).copy()
  height, width = out.shape[:2]
  for mask, color in zip(masks, colors):
    inside = np.zeros((height, width), bool)
    mask = np.asarray(mask)[:height, :width] > 0
    inside[:mask.shape[0], :mask.shape[1]] = mask
    out[inside] = (1.0 - alpha) * out[inside] + alpha * np.asarray(color, np.float32)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def draw_detections(image: np.ndarray, boxes: np.ndarray, classes: Sequence[int],
                    scores: Sequence[float], names: Optional[Sequence[str]] = None,
                    min_score: float = 0.3,
                    label_map: Optional[Dict[int, str]] = None,
                    masks: Optional[Sequence[np.ndarray]] = None,
                    mask_alpha: float = MASK_ALPHA) -> np.ndarray:
  """Masks, boxes and `name score` labels on a copy of `image`.

  Args:
    image: uint8 `[H, W, 3]`.
    boxes: float `[N, 4]`, ymin, xmin, ymax, xmax in pixels of `image`.
    classes: `[N]` category ids.
    scores: `[N]`, descending.
    names: optional `[N]` class names (e.g. `detection_class_names`); else
      `label_map` or the category id.
    min_score: detections below it are not drawn.
    label_map: optional dict category id -> name.
    masks: optional `[N, H, W]` instance masks in `image`'s pixels (nonzero
      inside), filled semi-transparently in the class colour under the
      boxes; the best-scoring detection ends on top.
    mask_alpha: opacity of the mask fill.

  Returns:
    uint8 `[H, W, 3]`.
  """
  image = np.asarray(image, np.uint8)
  if image.ndim == 2:
    image = np.stack([image] * 3, -1)
  if masks is not None:
    kept = [i for i in range(len(scores)) if scores[i] >= min_score][::-1]
    image = fill_masks(image, [masks[i] for i in kept],
                       [class_color(int(classes[i])) for i in kept], mask_alpha)
  canvas = Image.fromarray(image).convert('RGB')
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
