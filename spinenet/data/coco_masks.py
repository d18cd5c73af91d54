"""COCO segmentations -> binary instance masks and the PNG bytes records hold.

A COCO `segmentation` is one of:

* polygons: a list of `[x0, y0, x1, y1, ...]` lists in pixels (non-crowd);
* uncompressed RLE: `{"size": [h, w], "counts": [int, ...]}` (crowd
  annotations of the COCO files);
* compressed RLE: `{"size": [h, w], "counts": "<string>"}` (pycocotools'
  `mask.encode`, e.g. results files and the built-in dataset).

`segmentation_to_mask` rasterizes any of them with pycocotools (the same
result as `COCO.annToMask`), after checks that turn bad input into a
`BadSegmentation` naming what is wrong instead of a crash or a silently
wrong mask (pycocotools does not check that RLE counts fit the image, and
reads a 4-number polygon as a box).

Runs in the conversion tool's worker processes: numpy, PIL and pycocotools
only, no TensorFlow.
"""
import io
import math
import numbers
from typing import Any, List, Sequence, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_api

# Reasons a segmentation is refused (keys of the conversion summary).
MISSING = 'missing_segmentation'
MALFORMED = 'malformed_segmentation'
SIZE_MISMATCH = 'segmentation_size_mismatch'


class BadSegmentation(ValueError):
  """A segmentation that cannot be turned into a mask.

  Attributes:
    reason: one of `MISSING`, `MALFORMED`, `SIZE_MISMATCH`.
  """

  def __init__(self, reason: str, detail: str):
    super().__init__(detail)
    self.reason = reason


def _is_number(v):
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_count(v):
  return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0


def rle_string_counts(counts: str) -> List[int]:
  """Run lengths of a compressed COCO RLE string.

  The format of pycocotools' `rleToString`: each run length is written in
  groups of 5 bits, least significant first, as characters `48 + group`
  with bit `0x20` set when more groups follow and bit `0x10` of the last
  group the sign; from the fourth run on, the value stored is the
  difference to the run two places before.

  Args:
    counts: the `counts` string (or ASCII bytes).

  Returns:
    list of ints, the run lengths (alternating 0s and 1s, 0s first).

  Raises:
    BadSegmentation: for characters outside the format or a string that
      ends inside a run length.
  """
  if isinstance(counts, bytes):
    counts = counts.decode('ascii', errors='replace')
  runs = []
  value, shift, more = 0, 0, False
  for ch in counts:
    c = ord(ch) - 48
    if not 0 <= c < 64:
      raise BadSegmentation(MALFORMED, f'RLE counts string has character '
                            f'{ch!r}, outside the COCO format')
    value |= (c & 0x1f) << shift
    shift += 5
    more = bool(c & 0x20)
    if more:
      continue
    if c & 0x10:
      value -= 1 << shift  # sign-extend the last group
    if len(runs) > 2:
      value += runs[-2]
    runs.append(value)
    value, shift = 0, 0
  if more:
    raise BadSegmentation(MALFORMED, 'RLE counts string ends inside a run '
                          'length (truncated?)')
  return runs


def _check_runs(runs: Sequence[int], height: int, width: int, what: str):
  if any(r < 0 for r in runs):
    raise BadSegmentation(MALFORMED, f'{what} has a negative run length')
  total = sum(runs)
  if total != height * width:
    raise BadSegmentation(
        MALFORMED, f'{what} run lengths add up to {total} pixels, but the '
        f'image has {height}x{width} = {height * width}')


def _rle(segmentation: dict, height: int, width: int) -> dict:
  """A checked RLE dict -> pycocotools' compressed RLE."""
  size, counts = segmentation.get('size'), segmentation.get('counts')
  if not (isinstance(size, (list, tuple)) and len(size) == 2 and
          all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
              for v in size)):
    raise BadSegmentation(MALFORMED, f'RLE `size` must be [height, width]. '
                          f'Received: {str(size)[:40]}')
  if list(size) != [height, width]:
    raise BadSegmentation(
        SIZE_MISMATCH, f'RLE `size` {list(size)} is not the image size '
        f'[{height}, {width}] of the JSON')
  if isinstance(counts, (str, bytes)):
    _check_runs(rle_string_counts(counts), height, width, 'compressed RLE')
    if isinstance(counts, str):
      counts = counts.encode('ascii')
    return {'size': [height, width], 'counts': counts}
  if isinstance(counts, list) and all(_is_count(c) for c in counts):
    _check_runs(counts, height, width, 'uncompressed RLE')
    return mask_api.frPyObjects(
        {'size': [height, width], 'counts': [int(c) for c in counts]},
        height, width)
  raise BadSegmentation(MALFORMED, 'RLE `counts` must be a string or a list '
                        f'of non-negative ints. Received: {str(counts)[:40]}')


def _polygons(segmentation: list) -> Tuple[List[List[float]], int]:
  """Checked polygons, without the degenerate ones; and how many those were."""
  if segmentation and all(_is_number(v) for v in segmentation):
    segmentation = [segmentation]  # one polygon, not nested
  polygons, degenerate = [], 0
  for i, polygon in enumerate(segmentation):
    if not (isinstance(polygon, list) and all(_is_number(v) for v in polygon)):
      raise BadSegmentation(MALFORMED, f'polygon {i} must be a list of numbers '
                            f'[x0, y0, x1, y1, ...]. Received: '
                            f'{str(polygon)[:40]}')
    if not all(math.isfinite(v) for v in polygon):
      raise BadSegmentation(MALFORMED, f'polygon {i} has NaN or infinite '
                            'coordinates')
    if len(polygon) % 2:
      raise BadSegmentation(MALFORMED, f'polygon {i} has an odd number of '
                            f'coordinates ({len(polygon)})')
    if len(polygon) < 6:  # fewer than 3 points: no area
      degenerate += 1
      continue
    polygons.append([float(v) for v in polygon])
  if not polygons:
    raise BadSegmentation(MALFORMED, f'all {degenerate} polygon(s) have fewer '
                          'than 3 points')
  return polygons, degenerate


def segmentation_to_mask(segmentation: Any, height: int,
                         width: int) -> Tuple[np.ndarray, int]:
  """Rasterizes a COCO segmentation.

  Args:
    segmentation: polygons, or an RLE dict with uncompressed or compressed
      `counts` (see the module docstring).
    height: image height of the JSON entry.
    width: image width of the JSON entry.

  Returns:
    mask: uint8 `[height, width]`, 1 inside the object, else 0; equal to
      pycocotools' `COCO.annToMask` of the annotation.
    degenerate: number of polygons with fewer than 3 points that were left
      out (they have no area; pycocotools would read a 2-point one as a box).

  Raises:
    BadSegmentation: `MISSING` for an absent or empty segmentation,
      `SIZE_MISMATCH` for an RLE of another image size, `MALFORMED` for
      anything else that is not one of the three forms (wrong types, odd
      coordinate counts, NaN, run lengths that do not cover the image
      exactly, ...).
  """
  degenerate = 0
  if segmentation is None or (isinstance(segmentation, (list, dict)) and
                              not segmentation):
    raise BadSegmentation(MISSING, 'no segmentation')
  if isinstance(segmentation, dict):
    rle = _rle(segmentation, height, width)
  elif isinstance(segmentation, list):
    polygons, degenerate = _polygons(segmentation)
    rle = mask_api.merge(mask_api.frPyObjects(polygons, height, width))
  else:
    raise BadSegmentation(MALFORMED, 'segmentation must be a list of polygons '
                          'or an RLE object. Received: '
                          f'{str(segmentation)[:40]}')
  return np.asarray(mask_api.decode(rle), np.uint8), degenerate


def encode_png(mask: np.ndarray) -> bytes:
  """uint8 `[H, W]` 0/1 mask -> bytes of a single-channel 8-bit PNG."""
  out = io.BytesIO()
  Image.fromarray(np.asarray(mask, np.uint8), mode='L').save(out, format='PNG')
  return out.getvalue()


def mask_pngs(segmentations: Sequence[Any], json_size: Tuple[int, int],
              image_size: Tuple[int, int]) -> List[dict]:
  """The PNG mask of each annotation of one image, or why there is none.

  Args:
    segmentations: the `segmentation` of each annotation (None if absent).
    json_size: `(height, width)` of the image in the JSON (the frame of the
      segmentations).
    image_size: `(height, width)` of the image file. When it differs from
      `json_size`, masks are resized to it (nearest neighbour), as boxes are
      normalized by the JSON size.

  Returns:
    list, one dict per segmentation: `png` (bytes), `pixels` (int, mask
    area in the written frame) and `degenerate_polygons` (int); or `reason`
    and `detail` when the segmentation is refused (`BadSegmentation`).
  """
  out = []
  for segmentation in segmentations:
    try:
      mask, degenerate = segmentation_to_mask(segmentation, *json_size)
    except BadSegmentation as e:
      out.append({'reason': e.reason, 'detail': str(e)})
      continue
    if tuple(image_size) != tuple(json_size):
      mask = np.asarray(Image.fromarray(mask).resize(
          (image_size[1], image_size[0]), Image.NEAREST))
    out.append({'png': encode_png(mask), 'pixels': int(mask.sum()),
                'degenerate_polygons': degenerate})
  return out
