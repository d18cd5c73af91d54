"""Loads and checks a COCO detection annotation file.

Malformed input stops with a `ValueError` that names the file, the field
(e.g. `annotations[12].bbox`), the value found and what was expected.
"""
import dataclasses
import json
import numbers
from typing import Any, Dict, List


@dataclasses.dataclass
class CocoImage:
  """One entry of `images`, with its annotations."""
  id: Any  # int for COCO; kept as found
  file_name: str
  height: int
  width: int
  annotations: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class CocoDataset:
  images: List[CocoImage]
  categories: Dict[int, str]  # category id -> name, ids as in the file


def _fail(path, field, value, expected):
  shown = repr(value)
  if len(shown) > 80:
    shown = shown[:77] + '...'
  raise ValueError(f'{path}: `{field}` must be {expected}. Received: {shown}')


def _get(path, obj, key, where):
  if not isinstance(obj, dict):
    _fail(path, where, obj, 'an object')
  if key not in obj:
    raise ValueError(f'{path}: `{where}` has no field `{key}`. Fields found: '
                     f'{sorted(obj)[:10]}')
  return obj[key]


def _is_number(v):
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _positive_int(path, obj, key, where):
  v = _get(path, obj, key, where)
  if not (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0):
    _fail(path, f'{where}.{key}', v, 'a positive integer')
  return int(v)


def _list(path, data, key, required=True):
  if key not in data:
    if required:
      raise ValueError(f'{path}: top-level field `{key}` is missing. Fields '
                       f'found: {sorted(data)}')
    return []
  if not isinstance(data[key], list):
    _fail(path, key, data[key], 'a list')
  return data[key]


def load_coco(path: str) -> CocoDataset:
  """Reads a COCO detection JSON file.

  Required: `images[i]` with `id`, `file_name`, `height`, `width`;
  `categories[i]` with `id` (int) and `name`; `annotations[i]` (the list may
  be absent, as in test-dev) with `image_id`, `category_id`, and `bbox`
  `[x, y, width, height]` in pixels. `iscrowd` defaults to 0 and `area` to
  the box area. Geometric problems (boxes of zero area or outside the image)
  are not errors here; the converter drops or clips them. The optional `id`
  and `segmentation` are kept as found (checked by the converter only when it
  writes masks, `coco_masks`).

  Args:
    path: the JSON file.

  Returns:
    `CocoDataset`, images in file order, each with its annotations in file
    order: dicts with `category_id`, `bbox`, `iscrowd`, `area`, `id` (None
    if absent), `index` (position in `annotations`) and `segmentation`
    (None if absent).

  Raises:
    ValueError: naming the file and field, for text that is not UTF-8,
      syntax errors, missing fields, wrong types, duplicate ids, or
      references to unknown image or category ids. (`NaN` or `Infinity` in a
      `bbox` is not an error here: the converter drops the box.)
    OSError: if the file cannot be read.
  """
  with open(path, 'rb') as f:
    raw = f.read()
  try:
    data = json.loads(raw)  # bytes: UTF-8 (with or without BOM), -16, -32
  except UnicodeDecodeError as e:
    raise ValueError(
        f'{path}: not UTF-8 text: byte {raw[e.start:e.start + 1]!r} at offset '
        f'{e.start} ({e.reason}); JSON files must be UTF-8 (re-save it as '
        'UTF-8).') from None
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON: {e}') from None
  if not isinstance(data, dict):
    _fail(path, '<top level>', data, 'an object with `images`, `categories` '
          'and `annotations`')

  categories = {}
  for i, cat in enumerate(_list(path, data, 'categories')):
    where = f'categories[{i}]'
    cid = _get(path, cat, 'id', where)
    if not isinstance(cid, numbers.Integral) or isinstance(cid, bool):
      _fail(path, f'{where}.id', cid, 'an integer')
    name = _get(path, cat, 'name', where)
    if not isinstance(name, str):
      _fail(path, f'{where}.name', name, 'a string')
    if cid in categories:
      _fail(path, f'{where}.id', cid, 'unique (it is repeated)')
    categories[int(cid)] = name

  images, by_id = [], {}
  for i, entry in enumerate(_list(path, data, 'images')):
    where = f'images[{i}]'
    image_id = _get(path, entry, 'id', where)
    if not isinstance(image_id, (numbers.Integral, str)) or isinstance(
        image_id, bool):
      _fail(path, f'{where}.id', image_id, 'an integer or string')
    if image_id in by_id:
      _fail(path, f'{where}.id', image_id, 'unique (it is repeated)')
    file_name = _get(path, entry, 'file_name', where)
    if not isinstance(file_name, str) or not file_name:
      _fail(path, f'{where}.file_name', file_name, 'a non-empty string')
    image = CocoImage(image_id, file_name,
                      _positive_int(path, entry, 'height', where),
                      _positive_int(path, entry, 'width', where))
    images.append(image)
    by_id[image_id] = image

  for i, ann in enumerate(_list(path, data, 'annotations', required=False)):
    where = f'annotations[{i}]'
    image_id = _get(path, ann, 'image_id', where)
    if image_id not in by_id:
      _fail(path, f'{where}.image_id', image_id, 'the id of an entry of '
            '`images`')
    category_id = _get(path, ann, 'category_id', where)
    if category_id not in categories:
      _fail(path, f'{where}.category_id', category_id,
            f'one of the `categories` ids {sorted(categories)[:20]}')
    bbox = _get(path, ann, 'bbox', where)
    if not (isinstance(bbox, list) and len(bbox) == 4 and
            all(_is_number(v) for v in bbox)):
      _fail(path, f'{where}.bbox', bbox, '4 numbers [x, y, width, height]')
    iscrowd = ann.get('iscrowd', 0)
    if iscrowd not in (0, 1) or isinstance(iscrowd, float):
      _fail(path, f'{where}.iscrowd', iscrowd, '0 or 1')
    area = ann.get('area', bbox[2] * bbox[3])
    if not _is_number(area):
      _fail(path, f'{where}.area', area, 'a number')
    by_id[image_id].annotations.append({
        'category_id': int(category_id), 'bbox': [float(v) for v in bbox],
        'iscrowd': int(iscrowd), 'area': float(area),
        'id': ann.get('id'), 'index': i,
        'segmentation': ann.get('segmentation')})
  return CocoDataset(images, categories)
