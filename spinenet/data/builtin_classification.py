"""A small, learnable image classification dataset, made on the fly.

Each image shows one shape (8 classes, `CLASS_NAMES`) of a random colour,
size (35% to 85% of the image side), position and rotation, over a textured
background (a colour gradient, blotches and noise), with distractor strokes,
so that colour or position alone tells nothing. The images are JPEGs in
ImageNet-format TFRecords (`image/encoded`, `image/class/label`, labels
0..7), read by `classification_input` like real data.

Everything is a function of `seed`: generating twice gives the same bytes.
"""
import io
import json
import math
import os
from typing import Dict

import numpy as np
from PIL import Image, ImageDraw
import tensorflow as tf

from spinenet.data import classification_input

CLASS_NAMES = ('circle', 'ring', 'square', 'frame', 'triangle', 'cross',
               'diamond', 'star')
_SPLITS = {'train': 0, 'val': 1}


def label_map() -> Dict[int, str]:
  """Class index -> name, e.g. `{0: 'circle', ...}`."""
  return dict(enumerate(CLASS_NAMES))


def _colour(rng, saturation=(0.6, 1.0), value=(0.5, 1.0)):
  """A random RGB colour (ints 0..255) from HSV ranges."""
  h = rng.uniform()
  s, v = rng.uniform(*saturation), rng.uniform(*value)
  i, f = int(h * 6) % 6, h * 6 - int(h * 6)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
  return tuple(int(round(255 * c)) for c in rgb)


def _background(rng, size):
  """uint8 `[size, size, 3]`: gradient + smooth blotches + noise."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  angle = rng.uniform(0, 2 * np.pi)
  ramp = np.cos(angle) * xx + np.sin(angle) * yy
  ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
  c0 = np.array(_colour(rng, (0.0, 0.4), (0.3, 0.8)), np.float32)
  c1 = np.array(_colour(rng, (0.0, 0.4), (0.3, 0.8)), np.float32)
  image = c0 + ramp[..., None] * (c1 - c0)
  cells = int(rng.integers(2, 6))
  coarse = np.clip(rng.normal(128, 25, (cells, cells, 3)), 0, 255)
  blotch = Image.fromarray(coarse.astype(np.uint8)).resize((size, size),
                                                           Image.BICUBIC)
  image += np.asarray(blotch, np.float32) - 128
  image += rng.normal(0, 6, image.shape)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _polygon(cx, cy, radius, sides, rotation, inner=None):
  """Vertices of a regular polygon (a star if `inner` radius is given)."""
  points = []
  steps = sides * 2 if inner else sides
  for k in range(steps):
    r = inner if inner and k % 2 else radius
    a = rotation + 2 * math.pi * k / steps
    points.append((cx + r * math.sin(a), cy - r * math.cos(a)))
  return points


def _draw_shape(draw, name, cx, cy, r, rotation, fill, line):
  """Draws class `name` centred at `(cx, cy)` with outer radius `r`."""
  if name == 'circle':
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
  elif name == 'ring':
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=line)
  elif name == 'square':
    draw.polygon(_polygon(cx, cy, r, 4, rotation + math.pi / 4), fill=fill)
  elif name == 'frame':
    points = _polygon(cx, cy, r, 4, rotation + math.pi / 4)
    draw.line(points + points[:1], fill=fill, width=line, joint='curve')
  elif name == 'triangle':
    draw.polygon(_polygon(cx, cy, r, 3, rotation), fill=fill)
  elif name == 'cross':
    arm = r / 3
    for a in (rotation, rotation + math.pi / 2):
      dx, dy = math.cos(a), math.sin(a)
      ex, ey = -dy * arm, dx * arm
      draw.polygon([(cx - dx * r + ex, cy - dy * r + ey),
                    (cx + dx * r + ex, cy + dy * r + ey),
                    (cx + dx * r - ex, cy + dy * r - ey),
                    (cx - dx * r - ex, cy - dy * r - ey)], fill=fill)
  elif name == 'diamond':  # a rhombus, twice as tall as wide
    a = rotation * 0.25  # mostly upright, so it stays unlike a square
    pts = [(0, -r), (r / 2, 0), (0, r), (-r / 2, 0)]
    draw.polygon([(cx + x * math.cos(a) - y * math.sin(a),
                   cy + x * math.sin(a) + y * math.cos(a)) for x, y in pts],
                 fill=fill)
  else:  # star
    draw.polygon(_polygon(cx, cy, r, 5, rotation, inner=r * 0.45), fill=fill)


def render_image(rng, label: int, image_size: int = 96) -> np.ndarray:
  """Draws one image of class `label`.

  Args:
    rng: `np.random.Generator`.
    label: class index into `CLASS_NAMES`.
    image_size: side in pixels.

  Returns:
    uint8 `[image_size, image_size, 3]`.
  """
  size = image_size
  canvas = Image.fromarray(_background(rng, size))
  draw = ImageDraw.Draw(canvas)
  for _ in range(int(rng.integers(0, 3))):  # distractor strokes
    x0, y0, x1, y1 = rng.uniform(0, size, 4)
    draw.line((x0, y0, x1, y1), fill=_colour(rng), width=max(1, size // 48))
  r = rng.uniform(0.175, 0.425) * size
  cx = rng.uniform(r, size - r)
  cy = rng.uniform(r, size - r)
  _draw_shape(draw, CLASS_NAMES[label], cx, cy, r, rng.uniform(0, 2 * math.pi),
              _colour(rng), max(2, int(r / 4)))
  return np.asarray(canvas)


def generate(output_dir: str, num_train: int = 2000, num_val: int = 400,
             image_size: int = 96, num_shards: int = 2, seed: int = 0,
             jpeg_quality: int = 90) -> Dict[str, str]:
  """Writes the dataset as TFRecords of ImageNet-format `tf.Example`s.

  Classes are balanced: example `i` of a split has label `i % 8`.

  Args:
    output_dir: directory to write into (created if missing).
    num_train: training images.
    num_val: validation images.
    image_size: side of the square images in pixels (>= 32).
    num_shards: files per split.
    seed: int; the output is a deterministic function of it.
    jpeg_quality: JPEG quality.

  Returns:
    dict with `train_pattern`, `val_pattern` (globs of the shards
    `{split}-NNNNN-of-NNNNN.tfrecord`) and `label_map`: the JSON file
    `{"0": "circle", ...}`, written as `{split}.label_map.json` for both
    splits, where `spinenet-create-coco-tfrecord` puts it (so
    `spinenet-export` finds it next to the records).

  Example:
    ```python
    paths = generate('/tmp/shapes_cls', num_train=16, num_val=8, image_size=64)
    ```
  """
  if image_size < 32:
    raise ValueError(f'`image_size` must be >= 32. Received: {image_size}')
  if num_shards < 1:
    raise ValueError(f'`num_shards` must be >= 1. Received: {num_shards}')
  tf.io.gfile.makedirs(output_dir)
  paths = {}
  for split, count in (('train', num_train), ('val', num_val)):
    names = [os.path.join(output_dir, f'{split}-{s:05d}-of-{num_shards:05d}.tfrecord')
             for s in range(num_shards)]
    writers = [tf.io.TFRecordWriter(n) for n in names]
    try:
      for index in range(count):
        rng = np.random.default_rng([seed, _SPLITS[split], index])
        label = index % len(CLASS_NAMES)
        buffer = io.BytesIO()
        Image.fromarray(render_image(rng, label, image_size)).save(
            buffer, format='JPEG', quality=jpeg_quality)
        example = classification_input.build_example(buffer.getvalue(), label)
        writers[index % num_shards].write(
            example.SerializeToString(deterministic=True))
    finally:
      for w in writers:
        w.close()
    paths[f'{split}_pattern'] = os.path.join(output_dir, f'{split}-*.tfrecord')
    paths['label_map'] = os.path.join(output_dir, f'{split}.label_map.json')
    with tf.io.gfile.GFile(paths['label_map'], 'w') as f:
      json.dump({str(k): v for k, v in label_map().items()}, f, indent=1)
  return paths
