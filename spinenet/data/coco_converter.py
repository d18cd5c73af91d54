"""COCO JSON + images -> sharded TFRecords of detection tf.Examples.

The library side of `spinenet-create-coco-tfrecord`. Images are read and
checked in worker processes (`image_io.read_image`); this process turns the
annotations into normalized boxes, builds the examples (`tf_example`) and
writes image `i` (in JSON order) to shard `i % num_shards`, so the output is
the same for any number of workers.

What happens to bad input:

* a missing or unreadable image: skipped, logged, counted;
* grayscale, CMYK, RGBA, PNG, ...: converted to a 3-channel JPEG, counted;
* a box partly outside the image: clipped, counted;
* a box with zero width or height (`zero_area`), a negative one
  (`negative_size`), NaN or infinite coordinates (`non_finite_bbox`) or area
  (`non_finite_area`), or entirely outside the image (`outside_image`):
  dropped, counted by reason;
* 16-bit, 32-bit and float images: rescaled to 8 bits or skipped
  (`image_io.read_image`);
* EXIF orientation: not applied (COCO annotates the stored pixels), images
  carrying one counted;
* an image without annotations: kept (a background-only example);
* a crowd box (`iscrowd: 1`): kept, with `image/object/is_crowd` 1;
* with `include_masks`, each object's `segmentation` (polygons, or RLE with
  compressed or uncompressed counts; crowd ones too) is rasterized
  (`coco_masks`) and written as a PNG in `image/object/mask`; an object whose
  segmentation is missing or malformed is dropped (box too), logged with its
  annotation id and counted by reason; polygons of fewer than 3 points are
  left out of their object's mask, counted; empty masks are kept, counted;
* category ids: written as they are (no remapping; gaps are fine);
* malformed JSON: `ValueError` naming the field (`coco_json.load_coco`).

Shards are byte-identical between runs on the same input: fixed order,
deterministic serialization, no timestamps.
"""
import collections
import dataclasses
import json
import math
import multiprocessing
import os
import re
import time
from typing import Dict, Optional, Sequence

from absl import logging
import tensorflow as tf

from spinenet.data import coco_json
from spinenet.data import coco_masks
from spinenet.data import image_io
from spinenet.data import tf_example


@dataclasses.dataclass
class ConversionSummary:
  """Counts of one conversion run."""
  images_in_json: int = 0
  images_written: int = 0
  images_skipped: Dict[str, int] = dataclasses.field(default_factory=dict)
  images_converted: Dict[str, int] = dataclasses.field(default_factory=dict)
  images_without_boxes: int = 0
  images_size_mismatch: int = 0
  images_exif_oriented: int = 0
  boxes_written: int = 0
  crowd_boxes_written: int = 0
  boxes_clipped: int = 0
  boxes_dropped: Dict[str, int] = dataclasses.field(default_factory=dict)
  include_masks: bool = False
  masks_written: int = 0
  masks_empty: int = 0
  degenerate_polygons: int = 0
  # Objects (box and mask) dropped for their segmentation, by reason, and
  # the first annotation ids of each reason.
  masks_dropped: Dict[str, int] = dataclasses.field(default_factory=dict)
  masks_dropped_ids: Dict[str, list] = dataclasses.field(default_factory=dict)
  shards: tuple = ()
  label_map_path: str = ''

  def as_text(self):
    skipped = sum(self.images_skipped.values())
    dropped = sum(self.boxes_dropped.values())
    return '\n'.join([
        f'images written: {self.images_written} of {self.images_in_json} '
        f'({self.images_without_boxes} without boxes)',
        f'images skipped: {skipped} {dict(sorted(self.images_skipped.items()))}',
        'images converted to RGB JPEG: '
        f'{sum(self.images_converted.values())} '
        f'{dict(sorted(self.images_converted.items()))}',
        f'images whose size differs from the JSON: {self.images_size_mismatch}',
        f'images with an EXIF orientation (kept as stored, as COCO annotates '
        f'them): {self.images_exif_oriented}',
        f'boxes written: {self.boxes_written} ({self.crowd_boxes_written} '
        f'crowd, {self.boxes_clipped} clipped to the image)',
        f'boxes dropped: {dropped} {dict(sorted(self.boxes_dropped.items()))}',
    ] + ([
        f'masks written: {self.masks_written} ({self.masks_empty} empty, '
        f'{self.degenerate_polygons} polygons of < 3 points left out)',
        f'objects dropped for their segmentation: '
        f'{sum(self.masks_dropped.values())} '
        f'{dict(sorted(self.masks_dropped.items()))}' + ''.join(
            f'; {reason}: annotation ids {ids}{" ..." if len(ids) < n else ""}'
            for (reason, ids), n in zip(
                sorted(self.masks_dropped_ids.items()),
                (self.masks_dropped[r] for r in sorted(self.masks_dropped_ids)))),
    ] if self.include_masks else ['masks: not written (include_masks=False)']) + [
        f'shards: {len(self.shards)}, label map: {self.label_map_path}',
    ])


def shard_paths(output_prefix: str, num_shards: int):
  """`['PREFIX-00000-of-0000N.tfrecord', ...]`."""
  return [f'{output_prefix}-{i:05d}-of-{num_shards:05d}.tfrecord'
          for i in range(num_shards)]


def label_map_path(output_prefix: str) -> str:
  return f'{output_prefix}.label_map.json'


def write_label_map(path: str, categories: Dict[int, str]):
  """Writes `{"<category id>": "<name>", ...}` JSON."""
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump({str(k): v for k, v in sorted(categories.items())}, f, indent=1)


def read_label_map(path: str) -> Dict[int, str]:
  """Reads a label map written by `write_label_map`: category id -> name."""
  with tf.io.gfile.GFile(path) as f:
    return {int(k): v for k, v in json.load(f).items()}


_SHARD_NAME = re.compile(r'^(.*)-\d{5}-of-\d{5}\.tfrecord$')


def check_category_ids(files: Sequence[str], num_classes: int,
                       where: str = 'file_pattern'):
  """Fails early if a label map beside `files` has an id >= `num_classes`.

  Looks for `PREFIX.label_map.json` beside every shard named like
  `shard_paths` writes (`PREFIX-NNNNN-of-NNNNN.tfrecord`); files named
  otherwise, or without a label map, are not checked here (the input's
  in-graph guard, `detection_parser.check_class_ids`, still stops on such a
  record).

  Args:
    files: TFRecord paths.
    num_classes: the model's number of classes (class index = category id).
    where: what the files are called in the message (e.g. the option).

  Returns:
    The label map paths checked.

  Raises:
    ValueError: naming the label map, the ids and `num_classes`.
  """
  prefixes = sorted({m.group(1) for m in map(_SHARD_NAME.match, files) if m})
  checked = []
  for prefix in prefixes:
    path = label_map_path(prefix)
    if not tf.io.gfile.exists(path):
      continue
    too_large = sorted(i for i in read_label_map(path) if i >= num_classes)
    if too_large:
      raise ValueError(
          f'{path} (the label map of {where}) has category id(s) '
          f'{too_large[:10]} >= num_classes={num_classes} of the model (gin '
          '`NUM_CLASSES`); class index = category id, so they would train '
          f'as background. Set NUM_CLASSES to at least {too_large[-1] + 1} '
          'or remap the category ids.')
    checked.append(path)
  return checked


def _normalized_boxes(image: coco_json.CocoImage, summary: ConversionSummary,
                      categories):
  """COCO `[x, y, w, h]` pixels -> kept annotations with normalized yxyx."""
  kept = collections.defaultdict(list)
  dropped = collections.Counter()
  for position, ann in enumerate(image.annotations):
    x, y, w, h = ann['bbox']
    if not all(math.isfinite(v) for v in (x, y, w, h)):
      dropped['non_finite_bbox'] += 1
      continue
    if not math.isfinite(ann['area']):
      dropped['non_finite_area'] += 1
      continue
    if w < 0 or h < 0:
      dropped['negative_size'] += 1
      continue
    if w == 0 or h == 0:
      dropped['zero_area'] += 1
      continue
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, image.width), min(y + h, image.height)
    if x1 <= x0 or y1 <= y0:
      dropped['outside_image'] += 1
      continue
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
      summary.boxes_clipped += 1
    kept['boxes'].append((y0 / image.height, x0 / image.width,
                          y1 / image.height, x1 / image.width))
    kept['classes'].append(ann['category_id'])
    kept['names'].append(categories[ann['category_id']])
    kept['is_crowd'].append(ann['iscrowd'])
    kept['areas'].append(ann['area'])
    kept['annotations'].append(ann)
    kept['positions'].append(position)
  for reason, n in dropped.items():
    summary.boxes_dropped[reason] = summary.boxes_dropped.get(reason, 0) + n
  return kept


class _Progress:
  """Logs images converted of the total, skipped, rate and ETA.

  At most every `every` seconds (and when forced): e.g. `converted 12/16
  images (4 skipped, ...)`, so the images written are never overstated.
  """

  def __init__(self, total, every):
    self._total, self._every = total, every
    self._start = self._last = time.monotonic()

  def update(self, done, written, skipped, force=False):
    """`done` images processed, `written` of them converted, `skipped`."""
    now = time.monotonic()
    if not force and now - self._last < self._every:
      return
    self._last = now
    rate = done / max(now - self._start, 1e-9)
    eta = (self._total - done) / rate if rate > 0 else float('inf')
    eta_text = time.strftime('%H:%M:%S', time.gmtime(eta)) if eta < 1e7 else '?'
    logging.info('converted %d/%d images (%d skipped, %.1f images/s, ETA %s)',
                 written, self._total, skipped, rate, eta_text)


def _annotation_name(image, ann):
  ann_id = ann.get('id')
  where = f'annotations[{ann["index"]}]'
  return (f'annotation id {ann_id} ({where})' if ann_id is not None else where
         ) + f' of image id {image.id}'


_MAX_IDS_LISTED = 10


def _keep_masked(image, kept, masks, summary):
  """Drops the objects of `kept` whose mask is refused; returns the PNGs."""
  keep = []
  for i, (ann, position) in enumerate(zip(kept['annotations'],
                                         kept['positions'])):
    result = masks[position]
    if 'reason' in result:
      reason = result['reason']
      summary.masks_dropped[reason] = summary.masks_dropped.get(reason, 0) + 1
      ids = summary.masks_dropped_ids.setdefault(reason, [])
      if len(ids) < _MAX_IDS_LISTED:
        ids.append(ann['id'] if ann.get('id') is not None
                   else f'annotations[{ann["index"]}]')
      logging.warning('dropping %s (its box too): %s',
                      _annotation_name(image, ann), result['detail'])
      continue
    keep.append(i)
    summary.degenerate_polygons += result['degenerate_polygons']
    summary.masks_empty += result['pixels'] == 0
  if len(keep) < len(kept['annotations']):
    kept = {k: [v[i] for i in keep] for k, v in kept.items()}
  return kept, [masks[p]['png'] for p in kept['positions']]


def _read_image_and_masks(task):
  """Worker: `image_io.read_image`, plus `masks` (`coco_masks.mask_pngs`)."""
  path, segmentations, json_size = task
  result = image_io.read_image(path)
  if segmentations is not None and 'error' not in result:
    result['masks'] = coco_masks.mask_pngs(
        segmentations, json_size, (result['height'], result['width']))
  return result


def convert_coco(image_dir: str,
                 annotations_json: str,
                 output_prefix: str,
                 num_shards: int = 1,
                 num_workers: Optional[int] = None,
                 log_every_seconds: float = 10.0,
                 include_masks: bool = False) -> ConversionSummary:
  """Converts a COCO detection dataset to sharded TFRecords.

  Writes `shard_paths(output_prefix, num_shards)` and the label map
  `label_map_path(output_prefix)` (`{"<category id>": "<name>"}`). Each
  example has `image/encoded` (3-channel JPEG), `image/format`,
  `image/height`, `image/width`, `image/source_id` (the COCO image id),
  `image/filename`, `image/object/bbox/{ymin,xmin,ymax,xmax}` (normalized),
  `image/object/class/label` (the category id), `image/object/class/text`,
  `image/object/is_crowd` and `image/object/area`; with `include_masks`
  also `image/object/mask`, one PNG per object (single channel, uint8 0/1,
  the size of the image), the layout of the TF Object Detection API and the
  Model Garden.

  Args:
    image_dir: directory holding the `file_name`s of the JSON.
    annotations_json: COCO detection JSON.
    output_prefix: path prefix of the output files; its directory is
      created if missing.
    num_shards: number of TFRecord files.
    num_workers: processes that read and convert images; None: one per CPU;
      0 or 1: this process only.
    log_every_seconds: how often to log progress.
    include_masks: rasterize each object's `segmentation` (polygons or RLE,
      crowd too) into `image/object/mask`. Off by default: RetinaNet does
      not use masks, and they make the records larger and the conversion
      slower. Objects without a usable segmentation are then dropped and
      counted (`ConversionSummary.masks_dropped`).

  Returns:
    `ConversionSummary` (also logged).

  Raises:
    ValueError: for a malformed JSON file (naming the field) or a bad
      argument.

  Example:
    ```python
    summary = convert_coco('shapes/train', 'shapes/annotations/train.json',
                           '/tmp/records/train', num_shards=2)
    ```
  """
  if num_shards < 1:
    raise ValueError(f'`num_shards` must be >= 1. Received: {num_shards}')
  if num_workers is not None and num_workers < 0:
    raise ValueError(f'`num_workers` must be >= 0. Received: {num_workers}')
  if not os.path.isdir(image_dir):
    raise ValueError(f'`image_dir` is not a directory: {image_dir}')
  if not os.path.isfile(annotations_json):
    raise ValueError(f'`annotations_json` is not a file: {annotations_json}')
  dataset = coco_json.load_coco(annotations_json)
  summary = ConversionSummary(images_in_json=len(dataset.images),
                              include_masks=include_masks)
  out_dir = os.path.dirname(output_prefix)
  if out_dir:
    tf.io.gfile.makedirs(out_dir)
  summary.label_map_path = label_map_path(output_prefix)
  write_label_map(summary.label_map_path, dataset.categories)
  summary.shards = tuple(shard_paths(output_prefix, num_shards))

  num_workers = os.cpu_count() if num_workers is None else num_workers
  paths = [os.path.join(image_dir, im.file_name) for im in dataset.images]
  tasks = [(path, [a['segmentation'] for a in im.annotations]
            if include_masks else None, (im.height, im.width))
           for path, im in zip(paths, dataset.images)]
  logging.info('converting %d images of %s with %d workers into %d shards%s',
               len(paths), annotations_json, num_workers, num_shards,
               ' with masks' if include_masks else '')
  pool = None
  if num_workers > 1:
    # fork: workers run only PIL code, never TensorFlow.
    method = ('fork' if 'fork' in multiprocessing.get_all_start_methods()
              else 'spawn')
    pool = multiprocessing.get_context(method).Pool(num_workers)
    results = pool.imap(_read_image_and_masks, tasks, chunksize=4)
  else:
    results = map(_read_image_and_masks, tasks)

  progress = _Progress(len(paths), log_every_seconds)
  writers = [tf.io.TFRecordWriter(p) for p in summary.shards]
  try:
    for index, (image, result) in enumerate(zip(dataset.images, results)):
      progress.update(index, summary.images_written,
                      sum(summary.images_skipped.values()))
      if 'error' in result:
        reason = result['error']
        summary.images_skipped[reason] = summary.images_skipped.get(reason, 0) + 1
        logging.warning('skipping image id %s (%s): %s', image.id, reason,
                        result['detail'])
        continue
      if result['converted_from']:
        key = result['converted_from']
        summary.images_converted[key] = summary.images_converted.get(key, 0) + 1
      summary.images_exif_oriented += result.get('exif_orientation', 1) != 1
      if (result['height'], result['width']) != (image.height, image.width):
        # Boxes are normalized by the JSON's size: right if the file was
        # resized after annotation.
        summary.images_size_mismatch += 1
        logging.warning(
            'image id %s: file %s is %dx%d but the JSON says %dx%d; boxes are '
            'normalized by the JSON size', image.id, image.file_name,
            result['height'], result['width'], image.height, image.width)
      kept = _normalized_boxes(image, summary, dataset.categories)
      masks = None
      if include_masks:
        kept, masks = _keep_masked(image, kept, result['masks'], summary)
        summary.masks_written += len(masks)
      example = tf_example.build_detection_example(
          result['encoded'], result['format'], result['height'],
          result['width'], str(image.id), kept['boxes'], kept['classes'],
          kept['is_crowd'], kept['areas'], kept['names'], image.file_name,
          masks=masks)
      # deterministic: map fields in key order, so equal input gives equal
      # bytes on every run (the default order may differ between processes).
      writers[index % num_shards].write(
          example.SerializeToString(deterministic=True))
      summary.images_written += 1
      summary.boxes_written += len(kept['boxes'])
      summary.crowd_boxes_written += sum(kept['is_crowd'])
      summary.images_without_boxes += not kept['boxes']
    progress.update(len(paths), summary.images_written,
                    sum(summary.images_skipped.values()), force=True)
  finally:
    for writer in writers:
      writer.close()
    if pool is not None:
      pool.terminate()
  for line in summary.as_text().splitlines():
    logging.info('%s', line)
  return summary
