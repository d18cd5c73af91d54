"""A small, learnable detection dataset of shapes, written as COCO files.

Each image has a textured background (smooth colour gradients, blotches,
faint stripes and noise) and 1 to 5 solid shapes: circles, squares,
triangles and crosses, 16 to 100 pixels across at 256 pixels (sizes scale
with `image_size`), in random saturated colours, overlapping a little. Images
are real JPEG files and the annotations a COCO JSON file, so the demo runs the
same conversion tool (`spinenet-create-coco-tfrecord`) as a user does on COCO.

Variants for fine-tuning experiments: `class_names` picks other shapes from
`SHAPES` (e.g. rings, diamonds and hexagons instead of the default four) and
`category_ids` numbers them otherwise (e.g. with gaps, as COCO does).

Each annotation has an exact instance mask: `segmentation` is the compressed
COCO RLE of the shape's own pixels (all of them, like its box and `area`:
where a later shape overlaps an earlier one, both masks hold the overlap),
so `spinenet-create-coco-tfrecord --include_masks` writes the drawn masks.

Everything is a function of `seed` (and the class choice): generating twice
gives the same bytes; the defaults give the original dataset (the masks
draw no random numbers, so the images are those of the versions before).
"""
import json
import math
import os
from typing import Dict, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_api

CLASS_NAMES = ('circle', 'square', 'triangle', 'cross')
# Every shape the generator draws; the default dataset uses CLASS_NAMES.
SHAPES = CLASS_NAMES + ('ring', 'diamond', 'hexagon', 'star')
# Category ids as COCO numbers them: from 1, 0 is background.
CATEGORIES = tuple({'id': i + 1, 'name': name, 'supercategory': 'shape'}
                   for i, name in enumerate(CLASS_NAMES))


def categories(class_names: Sequence[str] = CLASS_NAMES,
               category_ids: Optional[Sequence[int]] = None) -> tuple:
  """COCO category dicts of a variant: ids 1..K in order, or `category_ids`.

  Args:
    class_names: shapes from `SHAPES`, distinct.
    category_ids: optional positive distinct ints, one per class.

  Returns:
    tuple of `{'id', 'name', 'supercategory'}` dicts.

  Raises:
    ValueError: naming the unknown shape or the bad ids.
  """
  unknown = [n for n in class_names if n not in SHAPES]
  if unknown or not class_names or len(set(class_names)) != len(class_names):
    raise ValueError(f'`class_names` must be distinct names from {SHAPES}. '
                     f'Received: {tuple(class_names)}')
  ids = (list(range(1, len(class_names) + 1)) if category_ids is None
         else [int(i) for i in category_ids])
  if (len(ids) != len(class_names) or len(set(ids)) != len(ids)
      or min(ids) < 1):
    raise ValueError('`category_ids` must be distinct ints >= 1, one per class '
                     f'of {tuple(class_names)}. Received: {category_ids}')
  return tuple({'id': i, 'name': n, 'supercategory': 'shape'}
               for i, n in zip(ids, class_names))
_SPLITS = {'train': 0, 'val': 1}
_REFERENCE_SIZE = 256  # object sizes below are for this image size
_MIN_OBJECT, _MAX_OBJECT = 16, 100
_MAX_OBJECTS = 5
_MAX_PAIR_IOU = 0.25  # overlaps allowed, but every shape stays recognisable


def label_map(class_names: Sequence[str] = CLASS_NAMES,
              category_ids: Optional[Sequence[int]] = None) -> Dict[int, str]:
  """Category id -> name, e.g. `{1: 'circle', ...}` (of a variant if given)."""
  return {c['id']: c['name'] for c in categories(class_names, category_ids)}


def _hsv_to_rgb(h, s, v):
  i = int(h * 6) % 6
  f = h * 6 - int(h * 6)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
  return tuple(int(round(255 * c)) for c in rgb)


def _background(rng, size):
  """float32 `[size, size, 3]` muted texture in 0..255."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  angle = rng.uniform(0, 2 * np.pi)
  ramp = np.cos(angle) * xx + np.sin(angle) * yy
  ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
  c0 = np.array(_hsv_to_rgb(rng.uniform(), rng.uniform(0.05, 0.3),
                            rng.uniform(0.35, 0.75)), np.float32)
  c1 = np.array(_hsv_to_rgb(rng.uniform(), rng.uniform(0.05, 0.3),
                            rng.uniform(0.35, 0.75)), np.float32)
  image = c0 + ramp[..., None] * (c1 - c0)
  # Blotches: a coarse random grid, upsampled smoothly.
  cells = int(rng.integers(3, 8))
  coarse = rng.normal(0, 18, (cells, cells, 3))
  blotch = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8))
  blotch = np.asarray(blotch.resize((size, size), Image.BICUBIC), np.float32)
  image += blotch - 128
  # Faint stripes in a random direction.
  period = rng.uniform(6, 24) * size / _REFERENCE_SIZE
  phase = rng.uniform(0, 2 * np.pi)
  direction = rng.uniform(0, np.pi)
  stripes = np.sin(2 * np.pi * (np.cos(direction) * xx + np.sin(direction) * yy)
                   * size / period + phase)
  image += rng.uniform(3, 10) * stripes[..., None]
  image += rng.normal(0, 4, image.shape)
  return image


def _shape_mask(class_name, box, size, rng):
  """bool `[size, size]` of one shape filling `box` = (x0, y0, x1, y1)."""
  mask = Image.new('L', (size, size), 0)
  draw = ImageDraw.Draw(mask)
  x0, y0, x1, y1 = box
  if class_name == 'circle':
    draw.ellipse(box, fill=255)
  elif class_name == 'square':
    draw.rectangle(box, fill=255)
  elif class_name == 'ring':
    draw.ellipse(box, fill=255)
    inset_x, inset_y = (x1 - x0) * 0.22, (y1 - y0) * 0.22
    draw.ellipse((x0 + inset_x, y0 + inset_y, x1 - inset_x, y1 - inset_y), fill=0)
  elif class_name in ('diamond', 'hexagon', 'star'):
    xc, yc, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if class_name == 'diamond':
      radii, start = [1.0] * 4, -90
    elif class_name == 'hexagon':
      radii, start = [1.0] * 6, 0
    else:  # five-pointed star
      radii, start = [1.0, 0.45] * 5, -90
    step = 360.0 / len(radii)
    points = [(xc + r * rx * math.cos(math.radians(start + i * step)),
               yc + r * ry * math.sin(math.radians(start + i * step)))
              for i, r in enumerate(radii)]
    draw.polygon(points, fill=255)
  elif class_name == 'triangle':
    if rng.uniform() < 0.5:  # apex up
      points = [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
    else:
      points = [(x0, y0), (x1, y0), ((x0 + x1) / 2, y1)]
    draw.polygon(points, fill=255)
  else:  # cross
    arm_w = max((x1 - x0) / 3.0, 2)
    arm_h = max((y1 - y0) / 3.0, 2)
    xc, yc = (x0 + x1) / 2, (y0 + y1) / 2
    draw.rectangle((xc - arm_w / 2, y0, xc + arm_w / 2, y1), fill=255)
    draw.rectangle((x0, yc - arm_h / 2, x1, yc + arm_h / 2), fill=255)
  return np.asarray(mask) > 0


def _rle(mask):
  """bool `[H, W]` -> compressed COCO RLE with a JSON-ready `counts` string."""
  rle = mask_api.encode(np.asfortranarray(mask, dtype=np.uint8))
  return {'size': [int(v) for v in rle['size']],
          'counts': rle['counts'].decode('ascii')}


def _iou(a, b):
  ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
           - inter)
  return inter / union if union > 0 else 0.0


def render_image(rng, image_size=256, class_names=CLASS_NAMES,
                 category_ids=None):
  """Draws one image.

  Args:
    rng: `np.random.Generator`.
    image_size: side of the square image in pixels.
    class_names, category_ids: the classes drawn (see `categories`).

  Returns:
    image: uint8 `[image_size, image_size, 3]`.
    objects: list of dicts with `category_id`, `bbox` (COCO `[x, y, w, h]`
      in pixels, tight around the drawn pixels), `area` (pixel count) and
      `segmentation` (compressed COCO RLE of the shape's pixels, `counts` a
      string).
  """
  cats = categories(class_names, category_ids)
  size = image_size
  image = _background(rng, size)
  unit = size / _REFERENCE_SIZE
  placed, objects = [], []
  for _ in range(int(rng.integers(1, _MAX_OBJECTS + 1))):
    for _ in range(50):  # tries to place one shape
      side = float(np.exp(rng.uniform(np.log(_MIN_OBJECT), np.log(_MAX_OBJECT))))
      w = side * unit * rng.uniform(0.85, 1.15)
      h = side * unit * rng.uniform(0.85, 1.15)
      x0 = rng.uniform(0, size - w - 1)
      y0 = rng.uniform(0, size - h - 1)
      box = (x0, y0, x0 + w, y0 + h)
      if all(_iou(box, other) <= _MAX_PAIR_IOU for other in placed):
        break
    else:
      continue
    class_id = int(rng.integers(len(cats)))
    mask = _shape_mask(cats[class_id]['name'], box, size, rng)
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
      continue
    colour = np.array(_hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0),
                                  rng.uniform(0.75, 1.0)), np.float32)
    if rng.uniform() < 0.5:  # some dark shapes too
      colour *= 0.35
    shade = colour + rng.normal(0, 3, (ys.size, 3))
    image[ys, xs] = shade
    placed.append(box)
    x_min, y_min = int(xs.min()), int(ys.min())
    objects.append({
        'category_id': cats[class_id]['id'],
        'bbox': [x_min, y_min, int(xs.max()) + 1 - x_min,
                 int(ys.max()) + 1 - y_min],
        'area': int(ys.size),
        'segmentation': _rle(mask),
    })
  return np.clip(np.round(image), 0, 255).astype(np.uint8), objects


def generate(output_dir: str, num_train: int = 400, num_val: int = 100,
             image_size: int = 256, seed: int = 0,
             jpeg_quality: int = 92,
             class_names: Sequence[str] = CLASS_NAMES,
             category_ids: Optional[Sequence[int]] = None) -> Dict[str, str]:
  """Writes the dataset as JPEG files and COCO JSON.

  Layout: `output_dir/{train,val}/NNNNNN.jpg` and
  `output_dir/annotations/{train,val}.json`. Image ids start at 1 in each
  split; categories are `CATEGORIES` (ids 1..4) by default, else those of
  `categories(class_names, category_ids)`.

  Args:
    output_dir: directory to write into (created if missing).
    num_train: number of training images.
    num_val: number of validation images.
    image_size: side of the square images in pixels.
    seed: int; the output is a deterministic function of it.
    jpeg_quality: JPEG quality of the written images.
    class_names: shapes drawn, from `SHAPES` (default: the four of
      `CLASS_NAMES`).
    category_ids: optional category id of each class (default 1..K).

  Returns:
    dict with `train_images`, `val_images` (directories) and `train_json`,
    `val_json` (files).

  Example:
    ```python
    paths = generate('/tmp/shapes', num_train=8, num_val=2, image_size=128)
    ```
  """
  if image_size < 64:
    raise ValueError(f'`image_size` must be >= 64. Received: {image_size}')
  cats = categories(class_names, category_ids)
  os.makedirs(os.path.join(output_dir, 'annotations'), exist_ok=True)
  paths = {}
  for split, count in (('train', num_train), ('val', num_val)):
    image_dir = os.path.join(output_dir, split)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
      rng = np.random.default_rng([seed, _SPLITS[split], index])
      pixels, objects = render_image(rng, image_size, class_names, category_ids)
      image_id = index + 1
      file_name = f'{image_id:06d}.jpg'
      Image.fromarray(pixels).save(os.path.join(image_dir, file_name),
                                   format='JPEG', quality=jpeg_quality)
      images.append({'id': image_id, 'file_name': file_name,
                     'height': image_size, 'width': image_size})
      for obj in objects:
        annotations.append(dict(obj, id=len(annotations) + 1,
                                image_id=image_id, iscrowd=0))
    json_path = os.path.join(output_dir, 'annotations', f'{split}.json')
    with open(json_path, 'w') as f:
      json.dump({'info': {'description': 'spinenet built-in shapes',
                          'seed': seed},
                 'images': images, 'annotations': annotations,
                 'categories': list(cats)}, f)
    paths[f'{split}_images'] = image_dir
    paths[f'{split}_json'] = json_path
  return paths
