"""Odd files through the converter and the input: each case asserts its count.

Tiny images (16 x 24) in a temporary directory; one conversion per case, so
a failure names the case. Covers high-bit-depth, palette, CMYK and
EXIF-rotated images, unreadable files, NaN / infinite / negative boxes,
non-UTF-8 JSON, the progress line, byte-identical reruns, truncated and
foreign shards, and category ids beyond the model's classes.
"""
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image
import tensorflow as tf

import data_testing
from spinenet.data import coco_converter
from spinenet.data import coco_json
from spinenet.data import decoder as decoder_lib
from spinenet.data import detection_parser
from spinenet.data import image_io
from spinenet.data import pipeline
from spinenet.data import tf_example

_H, _W = 16, 24
_BOX = [2.0, 3.0, 10.0, 8.0]  # x, y, w, h inside the image


def _ramp(low, high, dtype):
  """`[H, W]` values from `low` to `high` along the width."""
  return np.tile(np.linspace(low, high, _W), (_H, 1)).astype(dtype)


def _rgb():
  rgb = np.zeros((_H, _W, 3), np.uint8)
  rgb[..., 0] = _ramp(0, 255, np.uint8)
  rgb[..., 1] = 128
  rgb[..., 2] = 40
  return rgb


def _save(path, image, **kwargs):
  image.save(path, **kwargs)


def _exif_jpeg(path, orientation):
  image = Image.fromarray(_rgb())
  exif = image.getexif()
  exif[0x0112] = orientation
  image.save(path, format='JPEG', exif=exif.tobytes())


def _truncated_jpeg(path):
  buf = io.BytesIO()
  Image.fromarray(_rgb()).save(buf, format='JPEG')
  with open(path, 'wb') as f:
    f.write(buf.getvalue()[:len(buf.getvalue()) // 2])


def _write_bytes(data):
  def write(path):
    with open(path, 'wb') as f:
      f.write(data)
  return write


# name -> (file name, writer or None for a missing file)
_IMAGES = {
    'rgb_jpeg': ('a.jpg', lambda p: _save(p, Image.fromarray(_rgb()),
                                          format='JPEG')),
    'png16': ('g16.png', lambda p: _save(
        p, Image.fromarray(_ramp(0, 65535, np.uint16)), format='PNG')),
    'tiff32_int': ('i32.tif', lambda p: _save(
        p, Image.fromarray(_ramp(0, 65535, np.int32), 'I'), format='TIFF')),
    'tiff32_int_out_of_range': ('i32big.tif', lambda p: _save(
        p, Image.fromarray(_ramp(-5, 70000, np.int32), 'I'), format='TIFF')),
    'float_unit': ('f.tif', lambda p: _save(
        p, Image.fromarray(_ramp(0, 1, np.float32), 'F'), format='TIFF')),
    'float_large': ('fbig.tif', lambda p: _save(
        p, Image.fromarray(_ramp(0, 4000, np.float32), 'F'), format='TIFF')),
    'float_nan': ('fnan.tif', lambda p: _save(
        p, Image.fromarray(np.full((_H, _W), np.nan, np.float32), 'F'),
        format='TIFF')),
    'palette': ('p.png', lambda p: _save(
        p, Image.fromarray(_rgb()).convert('P', palette=Image.ADAPTIVE,
                                           colors=8), format='PNG')),
    'palette_transparent': ('pt.png', lambda p: _save(
        p, Image.fromarray(np.zeros((_H, _W), np.uint8), 'P'), format='PNG',
        transparency=0)),
    'cmyk_jpeg': ('c.jpg', lambda p: _save(
        p, Image.fromarray(_rgb()).convert('CMYK'), format='JPEG')),
    'exif_rotated': ('e.jpg', lambda p: _exif_jpeg(p, 6)),
    'truncated_jpeg': ('t.jpg', _truncated_jpeg),
    'not_an_image': ('n.jpg', _write_bytes(b'this is text, not pixels')),
    'empty_file': ('z.png', _write_bytes(b'')),
    'missing': ('gone.jpg', None),
}


def _records(path):
  return [tf.train.Example.FromString(r.numpy())
          for r in tf.data.TFRecordDataset(path)]


def _values(example, key):
  feature = example.features.feature[key]
  return list(getattr(feature, feature.WhichOneof('kind')).value)


def _pixels(example):
  return np.asarray(Image.open(io.BytesIO(
      _values(example, tf_example.IMAGE_ENCODED)[0]))).astype(int)


class OddFilesTest(parameterized.TestCase, tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)
    self.image_dir = os.path.join(self.root, 'images')
    os.makedirs(self.image_dir)

  def _dataset(self, names, bboxes=None, areas=None, category_id=1):
    """Writes the images `names` and a COCO JSON: one box each."""
    images, annotations = [], []
    for i, name in enumerate(names):
      file_name, write = _IMAGES[name]
      if write is not None:
        write(os.path.join(self.image_dir, file_name))
      images.append({'id': i + 1, 'file_name': file_name, 'height': _H,
                     'width': _W})
      bbox = bboxes[i] if bboxes else _BOX
      ann = {'id': i + 1, 'image_id': i + 1, 'category_id': category_id,
             'bbox': bbox}
      if areas:
        ann['area'] = areas[i]
      annotations.append(ann)
    path = os.path.join(self.root, 'ann.json')
    with open(path, 'w') as f:
      # allow_nan: Python's json writes NaN / Infinity, as some tools do.
      json.dump({'images': images, 'annotations': annotations,
                 'categories': [{'id': category_id, 'name': 'thing'}]}, f)
    return path

  def _convert(self, names, prefix='out/r', **kwargs):
    annotations = self._dataset(names, **kwargs)
    summary = coco_converter.convert_coco(
        self.image_dir, annotations, os.path.join(self.root, prefix),
        num_shards=1, num_workers=0)
    return summary, _records(summary.shards[0])

  # === Images ===

  @parameterized.named_parameters(
      ('png16', 'png16', 'PNG/I;16', 65535 / 257),
      ('tiff32_int', 'tiff32_int', 'TIFF/I', 65535 / 257),
      ('float_unit', 'float_unit', 'TIFF/F', 255.0))
  def test_high_bit_depth_is_rescaled_not_clipped(self, name, mode, scale):
    summary, records = self._convert([name])
    self.assertEqual(summary.images_converted, {mode: 1})
    self.assertLen(records, 1)
    pixels = _pixels(records[0])
    high = {'float_unit': 1.0}.get(name, 65535)
    expected = _ramp(0, high, np.float64) * (scale / high)
    for channel in range(3):  # gray in every channel, up to JPEG loss
      self.assertLess(np.abs(pixels[..., channel] - expected).mean(), 3)
    # Clipping would make every value past 255 (or past 1) white (or black).
    self.assertGreater(pixels[:, _W // 2, 0].mean(), 100)
    self.assertLess(pixels[:, _W // 2, 0].mean(), 155)

  @parameterized.named_parameters(
      ('float_out_of_range', 'float_large', r'values in \[0, 4000\]'),
      ('float_nan', 'float_nan', 'NaN or infinite'),
      ('int_outside_16_bits', 'tiff32_int_out_of_range',
       r'values in \[-5, 70000\]'))
  def test_high_bit_depth_of_unknown_scale_is_refused(self, name, detail):
    summary, records = self._convert([name, 'rgb_jpeg'])
    self.assertEqual(summary.images_skipped, {image_io.UNSUPPORTED: 1})
    self.assertLen(records, 1)
    out = image_io.read_image(os.path.join(self.image_dir, _IMAGES[name][0]))
    self.assertRegex(out['detail'], detail)
    self.assertIn(_IMAGES[name][0], out['detail'])

  def test_palette_images_keep_their_colours(self):
    summary, records = self._convert(['palette', 'palette_transparent'])
    self.assertEqual(summary.images_converted, {'PNG/P': 2})
    self.assertLen(records, 2)
    self.assertLess(np.abs(_pixels(records[0]) - _rgb()).mean(), 12)
    # Fully transparent: composited onto white, not the stored index colour.
    self.assertGreater(_pixels(records[1]).min(), 240)

  def test_cmyk_jpeg_becomes_rgb(self):
    summary, records = self._convert(['cmyk_jpeg'])
    self.assertEqual(summary.images_converted, {'JPEG/CMYK': 1})
    self.assertEqual(_pixels(records[0]).shape, (_H, _W, 3))

  def test_exif_rotation_is_kept_as_stored_and_counted(self):
    # COCO annotates the stored pixels; decode_jpeg ignores EXIF too.
    summary, records = self._convert(['exif_rotated', 'rgb_jpeg'])
    self.assertEqual(summary.images_exif_oriented, 1)
    self.assertEqual(summary.images_size_mismatch, 0)
    self.assertEqual(summary.images_converted, {})
    with open(os.path.join(self.image_dir, 'e.jpg'), 'rb') as f:
      self.assertEqual(_values(records[0], tf_example.IMAGE_ENCODED)[0],
                       f.read())  # byte for byte, not rotated
    decoded = tf.io.decode_jpeg(_values(records[0],
                                        tf_example.IMAGE_ENCODED)[0])
    self.assertEqual(decoded.shape[:2], (_H, _W))
    self.assertEqual(_values(records[0], tf_example.IMAGE_HEIGHT), [_H])
    self.assertAllClose(_values(records[0], tf_example.BBOX_XMIN), [2 / _W])

  @parameterized.named_parameters(
      ('truncated_jpeg', 'truncated_jpeg', image_io.UNREADABLE, 't.jpg'),
      ('not_an_image', 'not_an_image', image_io.UNREADABLE, 'n.jpg'),
      ('empty_file', 'empty_file', image_io.UNREADABLE, 'z.png'),
      ('missing', 'missing', image_io.MISSING, 'gone.jpg'))
  def test_unreadable_images_are_skipped_counted_and_named(self, name, reason,
                                                           file_name):
    summary, records = self._convert([name, 'rgb_jpeg'])
    self.assertEqual(summary.images_skipped, {reason: 1})
    self.assertEqual(summary.images_written, 1)
    self.assertLen(records, 1)
    out = image_io.read_image(os.path.join(self.image_dir, file_name))
    self.assertIn(file_name, out['detail'])
    self.assertNotIn('BytesIO', out['detail'])

  # === Boxes ===

  @parameterized.named_parameters(
      ('nan_x', [float('nan'), 3.0, 10.0, 8.0], None, 'non_finite_bbox'),
      ('infinite_width', [2.0, 3.0, float('inf'), 8.0], None,
       'non_finite_bbox'),
      ('negative_width', [12.0, 3.0, -10.0, 8.0], None, 'negative_size'),
      ('negative_height', [2.0, 12.0, 10.0, -8.0], None, 'negative_size'),
      ('zero_width', [2.0, 3.0, 0.0, 8.0], None, 'zero_area'),
      ('nan_area', _BOX, float('nan'), 'non_finite_area'),
      ('outside', [30.0, 3.0, 10.0, 8.0], None, 'outside_image'))
  def test_bad_boxes_are_dropped_with_their_reason(self, bbox, area, reason):
    summary, records = self._convert(
        ['rgb_jpeg', 'rgb_jpeg'], bboxes=[bbox, _BOX],
        areas=[area, 80.0] if area is not None else None)
    self.assertEqual(summary.boxes_dropped, {reason: 1})
    self.assertEqual((summary.boxes_written, summary.boxes_clipped), (1, 0))
    self.assertEqual(_values(records[0], tf_example.BBOX_YMIN), [])
    for example in records:
      for key in tf_example.BOX_KEYS + (tf_example.AREA,):
        self.assertTrue(np.isfinite(_values(example, key)).all())

  # === JSON and the run ===

  def test_non_utf8_json_names_the_file(self):
    path = os.path.join(self.root, 'latin1.json')
    with open(path, 'wb') as f:
      f.write('{"images": [], "categories": [{"id": 1, "name": "caf\u00e9"}]}'
              .encode('latin-1'))
    with self.assertRaisesRegex(ValueError,
                                r'latin1\.json: not UTF-8 text: byte '
                                r"b'\\xe9' at offset"):
      coco_json.load_coco(path)

  def test_utf8_json_with_a_byte_order_mark_loads(self):
    path = os.path.join(self.root, 'bom.json')
    with open(path, 'wb') as f:
      f.write(b'\xef\xbb\xbf' + json.dumps(
          {'images': [], 'categories': [{'id': 1, 'name': 'caf\u00e9'}]})
              .encode())
    self.assertEqual(coco_json.load_coco(path).categories, {1: 'caf\u00e9'})

  def test_progress_counts_converted_and_skipped_images(self):
    with self.assertLogs('absl', level='INFO') as logs:
      self._convert(['rgb_jpeg', 'missing', 'not_an_image', 'png16'])
    progress = [r.getMessage() for r in logs.records
                if r.getMessage().startswith('converted ')]
    self.assertTrue(progress)
    self.assertRegex(progress[-1], r'^converted 2/4 images \(2 skipped, ')

  def test_shards_are_byte_identical_in_another_process(self):
    names = ['rgb_jpeg', 'png16', 'palette', 'exif_rotated']
    summary, _ = self._convert(names)
    annotations = os.path.join(self.root, 'ann.json')
    again = os.path.join(self.root, 'again', 'r')
    subprocess.run(
        [sys.executable, '-c',
         'import sys; from spinenet.data import coco_converter; '
         'coco_converter.convert_coco(sys.argv[1], sys.argv[2], sys.argv[3], '
         'num_shards=1, num_workers=2)',
         self.image_dir, annotations, again],
        check=True, capture_output=True)
    for ours, theirs in [(summary.shards[0],
                          coco_converter.shard_paths(again, 1)[0]),
                         (summary.label_map_path,
                          coco_converter.label_map_path(again))]:
      with open(ours, 'rb') as a, open(theirs, 'rb') as b:
        self.assertEqual(a.read(), b.read(), ours)

  # === Input ===

  def _eval_dataset(self, pattern, **kwargs):
    return pipeline.build_dataset(
        pattern, decoder_lib.DetectionDecoder(decode_image=False).decode,
        detection_parser.EvalParser(64, max_level=5), 1, training=False,
        **kwargs)

  def _valid(self, dataset):
    return sum(int(labels['valid'].numpy().sum()) for _, labels in dataset)

  def test_a_converted_shard_cut_short_gives_its_readable_records(self):
    summary, _ = self._convert(['rgb_jpeg'] * 4)
    shard = summary.shards[0]
    with open(shard, 'r+b') as f:
      f.truncate(os.path.getsize(shard) - 100)
    err = []
    with data_testing.captured_stderr(err):
      self.assertEqual(self._valid(self._eval_dataset(shard)), 3)
    self.assertIn(f'{shard} is truncated or damaged: read 3 records', err[0])

  @parameterized.named_parameters(
      ('empty', b'', 0, False),
      ('not_a_tfrecord', b'GIF89a' + bytes(range(200)), 0, True))
  def test_foreign_shards_give_no_records_and_damage_is_named(
      self, data, count, warned):
    path = os.path.join(self.root, 'odd-00000-of-00001.tfrecord')
    with open(path, 'wb') as f:
      f.write(data)
    err = []
    with data_testing.captured_stderr(err):
      records = list(pipeline.read_tfrecord_file(
          tf.constant(path), tf.constant(len(data), tf.int64)))
    self.assertLen(records, count)
    self.assertEqual(f'{path} is truncated' in err[0], warned)

  def test_category_ids_beyond_num_classes_stop_the_input(self):
    summary, _ = self._convert(['rgb_jpeg'] * 2, category_id=95)
    with self.assertRaisesRegex(
        ValueError, r'r\.label_map\.json \(the label map of train\) has '
        r'category id\(s\) \[95\] >= num_classes=91'):
      coco_converter.check_category_ids(summary.shards, 91, 'train')
    self.assertEqual(coco_converter.check_category_ids(summary.shards, 96),
                     [summary.label_map_path])
    # Without the label map, the in-graph guard stops the first batch.
    os.remove(summary.label_map_path)
    self.assertEqual(coco_converter.check_category_ids(summary.shards, 91), [])
    dataset = self._eval_dataset(summary.shards[0], check_fn=lambda x, y: (
        x, detection_parser.check_class_ids(y, 91, 'val')))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r'(?s)val: a record has category id.*95.*'
                                r'num_classes=91'):
      next(iter(dataset))


if __name__ == '__main__':
  absltest.main()
