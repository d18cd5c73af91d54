r"""Converts a COCO detection dataset to sharded TFRecords.

Usage:
  spinenet-create-coco-tfrecord \
    --image_dir=coco/train2017 \
    --annotations_json=coco/annotations/instances_train2017.json \
    --output_prefix=records/train --num_shards=256 [--num_workers=8] \
    [--include_masks]

Writes `records/train-00000-of-00256.tfrecord`, ... and
`records/train.label_map.json`; see docs/data.md.
"""
from absl import app
from absl import flags

from spinenet.data import coco_converter

_IMAGE_DIR = flags.DEFINE_string('image_dir', None,
                                 'Directory of the images.', required=True)
_ANNOTATIONS_JSON = flags.DEFINE_string(
    'annotations_json', None, 'COCO detection annotations (JSON).',
    required=True)
_OUTPUT_PREFIX = flags.DEFINE_string(
    'output_prefix', None,
    'Output path prefix: PREFIX-NNNNN-of-NNNNN.tfrecord, '
    'PREFIX.label_map.json.', required=True)
_NUM_SHARDS = flags.DEFINE_integer('num_shards', 1, 'Number of TFRecord files.',
                                   lower_bound=1)
_NUM_WORKERS = flags.DEFINE_integer(
    'num_workers', None, 'Processes reading images (default: one per CPU).',
    lower_bound=0)
_INCLUDE_MASKS = flags.DEFINE_boolean(
    'include_masks', False,
    'Also write each object\'s segmentation (polygons or RLE, crowd too) as '
    'a PNG instance mask in image/object/mask, for Mask R-CNN. Objects '
    'without a usable segmentation are then dropped and counted. Off by '
    'default: RetinaNet does not read masks, and they make records larger '
    'and the conversion slower.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    coco_converter.convert_coco(
        _IMAGE_DIR.value, _ANNOTATIONS_JSON.value, _OUTPUT_PREFIX.value,
        num_shards=_NUM_SHARDS.value, num_workers=_NUM_WORKERS.value,
        include_masks=_INCLUDE_MASKS.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def run():
  app.run(main)


if __name__ == '__main__':
  run()
