"""COCO JSON -> TFRecord: round trip, every bad-input case, the CLI."""
import glob
import io
import json
import os
import shutil
import tempfile

from absl import flags
from absl.testing import flagsaver
from absl.testing import parameterized
import numpy as np
from PIL import Image
from pycocotools import coco as coco_api
from pycocotools import mask as mask_api
import tensorflow as tf

from spinenet.cli import create_coco_tfrecord
from spinenet.data import builtin_dataset
from spinenet.data import coco_converter
from spinenet.data import decoder as decoder_lib


def _write_image(path, mode='RGB', fmt='JPEG', size=(64, 48)):
  """A `size` = (width, height) image with a gradient, in any PIL mode."""
  w, h = size
  rgb = np.zeros((h, w, 3), np.uint8)
  rgb[..., 0] = np.linspace(0, 255, w)[None]
  rgb[..., 1] = np.linspace(0, 255, h)[:, None]
  image = Image.fromarray(rgb).convert(mode)
  image.save(path, format=fmt)


def _records(prefix):
  out = []
  for path in sorted(glob.glob(prefix + '-*.tfrecord')):
    out.extend(tf.data.TFRecordDataset(path))
  return out


def _decode_all(prefix):
  decoder = decoder_lib.DetectionDecoder()
  return {d['source_id'].numpy().decode(): d
          for d in (decoder.decode(r) for r in _records(prefix))}


class ConvertCocoTest(tf.test.TestCase, parameterized.TestCase):

  def _convert(self, images, annotations, categories=None, **kwargs):
    """Writes a JSON next to `self.image_dir` and converts it."""
    categories = categories or [{'id': 1, 'name': 'a'}]
    path = os.path.join(self.root, 'ann.json')
    with open(path, 'w') as f:
      json.dump({'images': images, 'annotations': annotations,
                 'categories': categories}, f)
    prefix = os.path.join(self.root, 'out', 'rec')
    summary = coco_converter.convert_coco(self.image_dir, path, prefix,
                                          **dict(dict(num_workers=0), **kwargs))
    return summary, prefix

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)
    self.image_dir = os.path.join(self.root, 'images')
    os.makedirs(self.image_dir)

  def test_round_trip_boxes_within_one_pixel(self):
    paths = builtin_dataset.generate(self.root + '/shapes', num_train=6,
                                     num_val=0, image_size=128, seed=3)
    prefix = os.path.join(self.root, 'rec', 'train')
    summary = coco_converter.convert_coco(
        paths['train_images'], paths['train_json'], prefix, num_shards=2,
        num_workers=0)
    self.assertLen(glob.glob(prefix + '-*-of-00002.tfrecord'), 2)
    self.assertEqual(summary.images_written, 6)
    with open(paths['train_json']) as f:
      coco = json.load(f)
    self.assertEqual(summary.boxes_written, len(coco['annotations']))
    decoded = _decode_all(prefix)
    self.assertLen(decoded, 6)
    for image in coco['images']:
      data = decoded[str(image['id'])]
      h, w = int(data['height']), int(data['width'])
      self.assertEqual((h, w), (image['height'], image['width']))
      self.assertEqual(data['image'].shape, (h, w, 3))
      anns = [a for a in coco['annotations'] if a['image_id'] == image['id']]
      expected = np.array([[a['bbox'][1], a['bbox'][0],
                            a['bbox'][1] + a['bbox'][3],
                            a['bbox'][0] + a['bbox'][2]] for a in anns])
      got = data['groundtruth_boxes'].numpy() * [h, w, h, w]
      self.assertAllClose(got, expected, atol=1.0)
      self.assertAllEqual(data['groundtruth_classes'],
                          [a['category_id'] for a in anns])
      self.assertAllClose(data['groundtruth_area'], [a['area'] for a in anns])
    self.assertEqual(coco_converter.read_label_map(summary.label_map_path),
                     builtin_dataset.label_map())

  def test_model_garden_decoder_reads_the_records(self):
    from official.vision.dataloaders import tf_example_decoder  # pylint: disable=g-import-not-at-top
    _write_image(os.path.join(self.image_dir, 'a.jpg'))
    _, prefix = self._convert(
        [{'id': 5, 'file_name': 'a.jpg', 'height': 48, 'width': 64}],
        [{'image_id': 5, 'category_id': 1, 'bbox': [8, 4, 16, 20],
          'iscrowd': 1, 'area': 100}])
    mg = tf_example_decoder.TfExampleDecoder().decode(_records(prefix)[0])
    self.assertEqual(mg['source_id'].numpy(), b'5')
    self.assertAllClose(mg['groundtruth_boxes'],
                        [[4 / 48, 8 / 64, 24 / 48, 24 / 64]])
    self.assertAllEqual(mg['groundtruth_is_crowd'], [True])
    self.assertEqual(mg['image'].shape, (48, 64, 3))

  def test_model_garden_decoder_reads_the_masks(self):
    from official.vision.dataloaders import tf_example_decoder  # pylint: disable=g-import-not-at-top
    _write_image(os.path.join(self.image_dir, 'a.jpg'))
    _, prefix = self._convert(
        [{'id': 5, 'file_name': 'a.jpg', 'height': 48, 'width': 64}],
        [{'image_id': 5, 'category_id': 1, 'bbox': [8, 4, 16, 20],
          'segmentation': [[8, 4, 24, 4, 24, 24, 8, 24]]}],
        include_masks=True)
    record = _records(prefix)[0]
    mg = tf_example_decoder.TfExampleDecoder(include_mask=True).decode(record)
    ours = decoder_lib.DetectionDecoder(decode_masks=True).decode(record)
    self.assertEqual(mg['groundtruth_instance_masks'].shape, (1, 48, 64))
    self.assertAllEqual(mg['groundtruth_instance_masks'],
                        ours['groundtruth_instance_masks'])
    self.assertEqual(float(tf.reduce_sum(mg['groundtruth_instance_masks'])),
                     16 * 20)

  def test_bad_input_is_skipped_converted_clipped_or_dropped(self):
    for name, mode, fmt in [('rgb.jpg', 'RGB', 'JPEG'),
                            ('gray.jpg', 'L', 'JPEG'),
                            ('cmyk.jpg', 'CMYK', 'JPEG'),
                            ('rgba.png', 'RGBA', 'PNG'),
                            ('rgb.png', 'RGB', 'PNG'),
                            ('empty.jpg', 'RGB', 'JPEG')]:
      _write_image(os.path.join(self.image_dir, name), mode, fmt)
    with open(os.path.join(self.image_dir, 'broken.jpg'), 'wb') as f:
      buf = io.BytesIO()
      Image.new('RGB', (64, 48)).save(buf, format='JPEG')
      f.write(buf.getvalue()[:200])  # truncated
    names = ['rgb.jpg', 'gray.jpg', 'cmyk.jpg', 'rgba.png', 'rgb.png',
             'empty.jpg', 'broken.jpg', 'missing.jpg']
    images = [{'id': i + 1, 'file_name': n, 'height': 48, 'width': 64}
              for i, n in enumerate(names)]
    box = {'category_id': 7, 'bbox': [10, 10, 20, 20]}
    annotations = [
        dict(box, image_id=1),
        dict(box, image_id=1, bbox=[50, 40, 30, 30]),  # clipped to 64x48
        dict(box, image_id=1, bbox=[10, 10, 0, 5]),  # zero area
        dict(box, image_id=1, bbox=[70, 10, 5, 5]),  # outside the image
        dict(box, image_id=1, category_id=90, iscrowd=1),  # crowd
        dict(box, image_id=2), dict(box, image_id=3), dict(box, image_id=4),
        dict(box, image_id=5), dict(box, image_id=7), dict(box, image_id=8),
    ]
    summary, prefix = self._convert(
        images, annotations,
        categories=[{'id': 7, 'name': 'seven'}, {'id': 90, 'name': 'ninety'}])

    self.assertEqual(summary.images_written, 6)
    self.assertEqual(summary.images_skipped, {'missing': 1, 'unreadable': 1})
    self.assertEqual(summary.images_converted,
                     {'JPEG/L': 1, 'JPEG/CMYK': 1, 'PNG/RGBA': 1, 'PNG/RGB': 1})
    self.assertEqual(summary.images_without_boxes, 1)
    self.assertEqual(summary.boxes_dropped, {'zero_area': 1, 'outside_image': 1})
    self.assertEqual(summary.boxes_clipped, 1)
    self.assertEqual(summary.crowd_boxes_written, 1)
    self.assertEqual(summary.boxes_written, 3 + 4)
    text = summary.as_text()
    self.assertIn("boxes dropped: 2 {'outside_image': 1, 'zero_area': 1}", text)
    self.assertIn("images skipped: 2 {'missing': 1, 'unreadable': 1}", text)

    decoded = _decode_all(prefix)
    self.assertCountEqual(decoded, ['1', '2', '3', '4', '5', '6'])
    for data in decoded.values():
      self.assertEqual(data['image'].shape, (48, 64, 3))
    first = decoded['1']
    self.assertAllClose(first['groundtruth_boxes'] * [48, 64, 48, 64],
                        [[10, 10, 30, 30], [40, 50, 48, 64], [10, 10, 30, 30]])
    self.assertAllEqual(first['groundtruth_classes'], [7, 7, 90])  # ids kept
    self.assertAllEqual(first['groundtruth_is_crowd'], [False, False, True])
    self.assertEqual(decoded['6']['groundtruth_boxes'].shape, (0, 4))
    # Converted images keep their pixels (up to JPEG loss).
    gray = decoded['2']['image'].numpy().astype(int)
    self.assertAllEqual(gray[..., 0], gray[..., 2])
    self.assertGreater(gray[..., 0].std(), 10)
    self.assertEqual(coco_converter.read_label_map(summary.label_map_path),
                     {7: 'seven', 90: 'ninety'})

  def test_worker_processes_write_the_same_bytes(self):
    for i in range(6):
      _write_image(os.path.join(self.image_dir, f'{i}.png'), fmt='PNG')
    images = [{'id': i, 'file_name': f'{i}.png', 'height': 48, 'width': 64}
              for i in range(6)]
    anns = [{'image_id': i, 'category_id': 1, 'bbox': [1, 2, 3, 4],
             'segmentation': [[1, 2, 4, 2, 4, 6 + i]]} for i in range(6)]
    for masks in (False, True):
      _, serial = self._convert(images, anns, num_shards=3,
                                include_masks=masks)
      serial_bytes = [r.numpy() for r in _records(serial)]
      os.rename(os.path.dirname(serial), f'{self.root}/serial{masks}')
      _, parallel = self._convert(images, anns, num_shards=3, num_workers=2,
                                  include_masks=masks)
      self.assertEqual([r.numpy() for r in _records(parallel)], serial_bytes)
      shutil.rmtree(os.path.dirname(parallel))

  def test_masks_in_records_equal_ann_to_mask(self):
    """Polygons, uncompressed (crowd) and compressed RLE; bad ones dropped."""
    h, w = 48, 64
    _write_image(os.path.join(self.image_dir, 'a.jpg'), size=(w, h))
    _write_image(os.path.join(self.image_dir, 'b.jpg'), size=(w, h))
    blob = np.zeros((h, w), np.uint8)
    blob[10:30, 5:20] = 1
    blob[20:40, 15:50] = 1
    runs = np.diff(np.concatenate([[0], np.flatnonzero(np.diff(
        blob.flatten(order='F'))) + 1, [h * w]])).tolist()
    compressed = mask_api.encode(np.asfortranarray(blob))['counts'].decode()
    segmentations = {
        1: [[3.5, 4, 30, 2.5, 41, 30, 8, 33]],
        2: {'size': [h, w], 'counts': runs},
        3: {'size': [h, w], 'counts': compressed},
        4: [[1, 2, 3]],
        5: {'size': [h + 1, w], 'counts': runs},
        7: [[40, 30, 60, 30, 50, 45], [5, 40, 15, 40, 10, 47]],
    }
    anns = [{'id': i, 'image_id': 1 if i < 6 else 2, 'category_id': 1,
             'bbox': [2, 2, 30, 30], 'iscrowd': int(i == 2),
             'segmentation': s} for i, s in segmentations.items()]
    anns.append({'id': 6, 'image_id': 1, 'category_id': 1,
                 'bbox': [2, 2, 30, 30]})
    images = [{'id': 1, 'file_name': 'a.jpg', 'height': h, 'width': w},
              {'id': 2, 'file_name': 'b.jpg', 'height': h, 'width': w}]
    with self.assertLogs(level='WARNING') as logs:
      summary, prefix = self._convert(images, anns, include_masks=True)
    self.assertEqual(summary.masks_written, 4)
    self.assertEqual(summary.boxes_written, 4)
    self.assertEqual(summary.masks_dropped,
                     {'malformed_segmentation': 1, 'missing_segmentation': 1,
                      'segmentation_size_mismatch': 1})
    self.assertEqual(summary.masks_dropped_ids['missing_segmentation'], [6])
    self.assertIn('masks written: 4', summary.as_text())
    text = '\n'.join(logs.output)
    for ann_id in (4, 5, 6):
      self.assertIn(f'annotation id {ann_id} (annotations[', text)

    path = os.path.join(self.root, 'ann.json')
    coco = coco_api.COCO(path)
    decoder = decoder_lib.DetectionDecoder(decode_masks=True)
    records = {d['source_id'].numpy().decode(): d
               for d in (decoder.decode(r) for r in _records(prefix))}
    for image_id, ann_ids in ((1, (1, 2, 3)), (2, (7,))):
      masks = records[str(image_id)]['groundtruth_instance_masks']
      self.assertEqual(masks.dtype, tf.float32)
      self.assertEqual(masks.shape, (len(ann_ids), h, w))
      for mask, ann_id in zip(masks.numpy(), ann_ids):
        expected = coco.annToMask(coco.anns[ann_id])
        self.assertGreater(expected.sum(), 20)
        self.assertAllEqual(mask, expected)
    self.assertAllEqual(records['1']['groundtruth_is_crowd'],
                        [False, True, False])

  def test_masks_are_off_by_default(self):
    _write_image(os.path.join(self.image_dir, 'a.jpg'))
    anns = [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [2, 2, 9, 9],
             'segmentation': [[2, 2, 11, 2, 11, 11]]}]
    summary, prefix = self._convert(
        [{'id': 1, 'file_name': 'a.jpg', 'height': 48, 'width': 64}], anns)
    example = tf.train.Example.FromString(_records(prefix)[0].numpy())
    self.assertNotIn('image/object/mask', example.features.feature)
    self.assertEqual(summary.masks_written, 0)
    self.assertIn('masks: not written', summary.as_text())

  def test_cli_main_converts(self):
    _write_image(os.path.join(self.image_dir, 'a.jpg'))
    ann = os.path.join(self.root, 'a.json')
    with open(ann, 'w') as f:
      json.dump({'images': [{'id': 1, 'file_name': 'a.jpg', 'height': 48,
                             'width': 64}], 'annotations': [],
                 'categories': [{'id': 1, 'name': 'a'}]}, f)
    prefix = os.path.join(self.root, 'cli', 'rec')
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver(image_dir=self.image_dir, annotations_json=ann,
                             output_prefix=prefix, num_shards=2,
                             num_workers=0, include_masks=True):
      create_coco_tfrecord.main(['prog'])
    self.assertLen(glob.glob(prefix + '-0000[01]-of-00002.tfrecord'), 2)
    self.assertLen(_records(prefix), 1)
    example = tf.train.Example.FromString(_records(prefix)[0].numpy())
    self.assertIn('image/object/mask', example.features.feature)


if __name__ == '__main__':
  tf.test.main()
