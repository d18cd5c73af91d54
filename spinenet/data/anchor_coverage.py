"""How well a model's anchors reach a dataset's boxes.

RetinaNet learns a box from the anchors whose IoU with it reaches
`match_threshold` (0.5). A box no anchor reaches gets only its single best
anchor (the labeler's force match), far from it in size or shape, or nothing
at all; a dataset with many such boxes trains poorly whatever the recipe.

`coverage` takes the boxes as the model sees them (each image resized to fit
the input size, aspect kept, as the evaluation parser and the unjittered
training parser do), computes each box's best IoU over every anchor of the
configured levels, scales and aspect ratios, and reports the box-size
distribution, the share of boxes no anchor reaches and why (smaller than the
smallest anchor, larger than the largest, too elongated), and the share under
alternative settings (anchor size, min level, input size, aspect ratios), so
the report says what to change.

The best IoU is exact: for a fixed anchor shape, IoU only falls as the
anchor's centre moves away from the box's along either axis, so the best
anchor of each shape and level sits at the grid centre nearest the box centre
in each axis.
"""
import dataclasses
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

# SpineNet's endpoints are levels 3-7: a lower min_level needs another backbone.
_NEEDS_LEVEL = '(needs a backbone output at that level)'
# Box sides (square root of the area, input pixels) of the report's bins.
SIZE_BINS = (0, 16, 32, 64, 128, 256, 512, float('inf'))


@dataclasses.dataclass(frozen=True)
class AnchorSettings:
  """The anchors of a model and the threshold its labeler matches with."""
  input_size: Tuple[int, int]
  min_level: int = 3
  max_level: int = 7
  num_scales: int = 3
  aspect_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)
  anchor_size: float = 4.0
  match_threshold: float = 0.5

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  def text(self):
    ratios = '/'.join(f'{r:g}' for r in self.aspect_ratios)
    return (f'input {self.input_size[0]}x{self.input_size[1]}, levels '
            f'{self.min_level}-{self.max_level}, anchor_size {self.anchor_size:g}, '
            f'{self.num_scales} scales, ratios {ratios}, match IoU '
            f'{self.match_threshold:g}')


def fit_scale(image_hw: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
  """`[N]` scale resizing each `(h, w)` image to fit `input_size`, aspect kept."""
  image_hw = np.asarray(image_hw, np.float64)
  return np.minimum(input_size[0] / image_hw[:, 0], input_size[1] / image_hw[:, 1])


def _shapes(s: AnchorSettings):
  """`[(level, scale index, ratio, height, width)]` of every anchor shape."""
  out = []
  for level in range(s.min_level, s.max_level + 1):
    for scale in range(s.num_scales):
      size = s.anchor_size * 2**level * 2**(scale / s.num_scales)
      for ratio in s.aspect_ratios:
        out.append((level, scale, ratio, size / math.sqrt(ratio),
                    size * math.sqrt(ratio)))
  return out


def _nearest_centre(centre, length, level):
  """Nearest anchor centre of `level` along an axis of `length` pixels.

  As `ops.anchors.multilevel_anchors`: ceil(length / 2**level) cells of
  stride `length / cells`, centres at `(i + 0.5) * stride`.
  """
  cells = math.ceil(length / 2**level)
  stride = length / cells
  index = np.clip(np.round(centre / stride - 0.5), 0, cells - 1)
  return (index + 0.5) * stride


def best_anchor_iou(boxes: np.ndarray, settings: AnchorSettings
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """Each box's best IoU over all anchors, and that anchor's shape index.

  Args:
    boxes: float `[N, 4]`, ymin, xmin, ymax, xmax in input pixels.
    settings: `AnchorSettings`.

  Returns:
    `(iou [N], shape index [N])`; the index is into `_shapes(settings)`.
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  if not len(boxes):
    return np.zeros([0]), np.zeros([0], np.int64)
  h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  cy, cx = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
  ious = []
  for level, _, _, ah, aw in _shapes(settings):
    ay = _nearest_centre(cy, settings.input_size[0], level)
    ax = _nearest_centre(cx, settings.input_size[1], level)
    iy = np.maximum(0, np.minimum(cy + h / 2, ay + ah / 2) -
                    np.maximum(cy - h / 2, ay - ah / 2))
    ix = np.maximum(0, np.minimum(cx + w / 2, ax + aw / 2) -
                    np.maximum(cx - w / 2, ax - aw / 2))
    inter = iy * ix
    ious.append(inter / (h * w + ah * aw - inter))
  ious = np.stack(ious, axis=1)
  return ious.max(axis=1), ious.argmax(axis=1)


@dataclasses.dataclass
class CoverageReport:
  """`coverage`'s result; `text()` formats it."""
  settings: AnchorSettings
  num_boxes: int
  num_images: int
  unreached_share: float
  reasons: Dict[str, float]  # share of all boxes, by reason
  size_bins: List[Tuple[str, int, float]]  # (bin, boxes, unreached share)
  size_percentiles: Dict[int, float]
  alternatives: List[Tuple[str, float]]  # (change, unreached share)
  warn_share: float

  def as_dict(self):
    d = dataclasses.asdict(self)
    d['settings'] = dataclasses.asdict(self.settings)
    return d

  def text(self) -> str:
    """The report as lines of text."""
    s = self.settings
    pct = lambda x: f'{100 * x:.1f}%'  # noqa: E731
    lines = [f'anchor coverage of {self.num_boxes} boxes in {self.num_images} '
             f'images ({s.text()})']
    if not self.num_boxes:
      return '\n'.join(lines + ['no boxes'])
    p = self.size_percentiles
    lines.append('box side sqrt(w*h) at the input size, px: ' + ', '.join(
        f'p{q} {v:.0f}' for q, v in p.items()))
    shapes = _shapes(s)
    lines.append(f'anchor sides: {shapes[0][3] * math.sqrt(shapes[0][2]):.0f} px '
                 f'(level {s.min_level}) to '
                 f'{s.anchor_size * 2**s.max_level * 2**((s.num_scales - 1) / s.num_scales):.0f}'
                 f' px (level {s.max_level})')
    lines.append(f'{"box side":>14} {"boxes":>7} {"no anchor >= " + format(s.match_threshold, "g"):>16}')
    for name, count, share in self.size_bins:
      if count:
        lines.append(f'{name:>14} {count:>7} {pct(share):>16}')
    lines.append(f'boxes no anchor reaches at IoU {s.match_threshold:g}: '
                 f'{pct(self.unreached_share)} (' + ', '.join(
                     f'{k} {pct(v)}' for k, v in self.reasons.items() if v) + ')')
    lines.append('if changed (share no anchor reaches): ' + '; '.join(
        f'{name}: {pct(share)}' for name, share in self.alternatives))
    if self.unreached_share > self.warn_share:
      choices = [a for a in self.alternatives if _NEEDS_LEVEL not in a[0]]
      best = min(choices, key=lambda a: a[1]) if choices else None
      lines.append(
          f'WARNING: {pct(self.unreached_share)} of the boxes get no anchor at '
          f'IoU {s.match_threshold:g}: each trains only through its one best '
          'anchor (force match) and is found poorly. ' + _advice(self.reasons) +
          (f' Best single change above: {best[0]} ({pct(best[1])}).' if best else ''))
    else:
      lines.append(f'OK: at most {pct(self.warn_share)} of the boxes unreached.')
    return '\n'.join(lines)


def _advice(reasons):
  worst = max(reasons, key=reasons.get)
  return {
      'smaller than the anchors': (
          'Most are smaller than the smallest anchors: lower anchor_size '
          '(build_retinanet.anchor_size), raise the input size, or add a lower '
          'level (min_level, if the backbone has it).'),
      'larger than the anchors': (
          'Most are larger than the largest anchors: raise anchor_size or '
          'max_level, or lower the input size.'),
      'too elongated': (
          'Most are more elongated than the aspect ratios: add ratios (e.g. '
          '0.25 and 4.0 in build_retinanet.aspect_ratios).'),
      'between anchor sizes or off-centre': (
          'They fall between anchor sizes: more scales per octave '
          '(build_retinanet.num_scales).'),
  }[worst]


def _reasons(boxes, iou, shape_index, settings):
  """Share of all boxes unreached, by why (see `CoverageReport.reasons`)."""
  shapes = _shapes(settings)
  sizes = np.array([(ah * aw) ** 0.5 for _, _, _, ah, aw in shapes])
  h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  side = np.sqrt(h * w)
  ratio = w / np.maximum(h, 1e-9)
  lo, hi = min(settings.aspect_ratios), max(settings.aspect_ratios)
  unreached = iou < settings.match_threshold
  small = unreached & (side < sizes.min())
  large = unreached & ~small & (side > sizes.max())
  elongated = unreached & ~small & ~large & (
      (ratio < lo / 2**0.5) | (ratio > hi * 2**0.5))
  other = unreached & ~small & ~large & ~elongated
  n = max(len(boxes), 1)
  del shape_index
  return {'smaller than the anchors': small.sum() / n,
          'larger than the anchors': large.sum() / n,
          'too elongated': elongated.sum() / n,
          'between anchor sizes or off-centre': other.sum() / n}


def _unreached_share(images, settings):
  boxes = scaled_boxes(images, settings.input_size)
  if not len(boxes):
    return 0.0
  iou, _ = best_anchor_iou(boxes, settings)
  return float(np.mean(iou < settings.match_threshold))


def scaled_boxes(images: Sequence[Tuple[Tuple[float, float], np.ndarray]],
                 input_size: Sequence[int]) -> np.ndarray:
  """Boxes of every image in input pixels.

  Args:
    images: `[((height, width), boxes [K, 4] normalized ymin, xmin, ymax,
      xmax)]`.
    input_size: `(H, W)` of the model.

  Returns:
    float `[sum K, 4]` in pixels of the resized (fit, aspect kept) image.
  """
  out = []
  for (height, width), boxes in images:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
      continue
    scale = float(fit_scale([[height, width]], input_size)[0])
    out.append(boxes * np.array([height, width, height, width]) * scale)
  return np.concatenate(out) if out else np.zeros([0, 4])


def alternatives(settings: AnchorSettings, max_input: int = 1536):
  """`[(description, settings)]` of single changes worth comparing."""
  s = settings
  out = []
  for size in (s.anchor_size * 2 / 3, s.anchor_size * 1.5):
    out.append((f'anchor_size {size:g}', s.replace(anchor_size=round(size, 3))))
  if s.min_level > 2:
    out.append((f'min_level {s.min_level - 1} {_NEEDS_LEVEL}',
                s.replace(min_level=s.min_level - 1)))
  for factor in (1.5, 2.0):
    size = tuple(int(round(v * factor / 2**s.max_level)) * 2**s.max_level
                 for v in s.input_size)
    if max(size) <= max_input:
      out.append((f'input_size {size[0]}x{size[1]}', s.replace(input_size=size)))
  if min(s.aspect_ratios) > 0.25 or max(s.aspect_ratios) < 4:
    ratios = tuple(sorted(set(s.aspect_ratios) | {0.25, 4.0}))
    out.append(('aspect_ratios ' + '/'.join(f'{r:g}' for r in ratios),
                s.replace(aspect_ratios=ratios)))
  if s.num_scales < 4:
    out.append((f'num_scales {s.num_scales + 1}', s.replace(num_scales=s.num_scales + 1)))
  unique = {}
  for name, alt in out:
    if alt != s:
      unique.setdefault(name, alt)
  return list(unique.items())


def coverage(images: Sequence[Tuple[Tuple[float, float], np.ndarray]],
             settings: AnchorSettings, warn_share: float = 0.1
             ) -> CoverageReport:
  """The anchor coverage report of a dataset.

  Args:
    images: `[((height, width), boxes [K, 4] normalized ymin, xmin, ymax,
      xmax)]`, one entry per image (crowd boxes left out).
    settings: the model's `AnchorSettings`.
    warn_share: the report warns above this share of unreached boxes.

  Returns:
    `CoverageReport`.
  """
  images = list(images)
  boxes = scaled_boxes(images, settings.input_size)
  iou, index = best_anchor_iou(boxes, settings)
  unreached = iou < settings.match_threshold
  side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
  bins = []
  for lo, hi in zip(SIZE_BINS[:-1], SIZE_BINS[1:]):
    inside = (side >= lo) & (side < hi)
    name = f'{lo:g}-{hi:g}' if math.isfinite(hi) else f'>= {lo:g}'
    bins.append((name, int(inside.sum()),
                 float(unreached[inside].mean()) if inside.any() else 0.0))
  percentiles = ({q: float(np.percentile(side, q)) for q in (5, 25, 50, 75, 95)}
                 if len(side) else {})
  return CoverageReport(
      settings, int(len(boxes)), len(images),
      float(unreached.mean()) if len(boxes) else 0.0,
      _reasons(boxes, iou, index, settings) if len(boxes) else {},
      bins, percentiles,
      [(name, _unreached_share(images, alt)) for name, alt in alternatives(settings)],
      warn_share)


# ============================== Sources of boxes ==============================


def images_from_coco_json(path: str) -> List[Tuple[Tuple[float, float], np.ndarray]]:
  """`coverage` input from a COCO JSON (crowd boxes left out)."""
  from spinenet.data import coco_json  # pylint: disable=g-import-not-at-top
  dataset = coco_json.load_coco(path)
  out = []
  for image in dataset.images:
    boxes = []
    for ann in image.annotations:
      if ann['iscrowd']:
        continue
      x, y, w, h = ann['bbox']
      if w > 0 and h > 0:
        boxes.append((y / image.height, x / image.width, (y + h) / image.height,
                      (x + w) / image.width))
    out.append(((image.height, image.width), np.array(boxes).reshape(-1, 4)))
  return out


def images_from_decoded(examples: Iterable[dict], limit: Optional[int] = None
                        ) -> List[Tuple[Tuple[float, float], np.ndarray]]:
  """`coverage` input from decoded examples (`DetectionDecoder` keys), e.g.
  records or a TFDS source, as NumPy or eager tensors; crowd boxes left out."""
  out = []
  for i, ex in enumerate(examples):
    if limit is not None and i >= limit:
      break
    boxes = np.asarray(ex['groundtruth_boxes']).reshape(-1, 4)
    crowd = np.asarray(ex['groundtruth_is_crowd']).astype(bool).reshape(-1)
    out.append(((float(ex['height']), float(ex['width'])), boxes[~crowd]))
  return out
