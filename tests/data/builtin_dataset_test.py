"""The built-in shapes dataset: deterministic, COCO-shaped, as documented."""
import hashlib
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
from pycocotools import mask as mask_api
import tensorflow as tf

from spinenet.data import builtin_dataset
from spinenet.data import coco_json


def _digest(directory):
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(directory)):
    for name in sorted(files):
      with open(os.path.join(root, name), 'rb') as f:
        h.update(name.encode() + f.read())
  return h.hexdigest()


class BuiltinDatasetTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)

  def test_same_seed_same_bytes(self):
    a = builtin_dataset.generate(self.root + '/a', 3, 2, 96, seed=1)
    b = builtin_dataset.generate(self.root + '/b', 3, 2, 96, seed=1)
    c = builtin_dataset.generate(self.root + '/c', 3, 2, 96, seed=2)
    self.assertEqual(_digest(self.root + '/a'), _digest(self.root + '/b'))
    self.assertNotEqual(_digest(self.root + '/a'), _digest(self.root + '/c'))
    self.assertEqual(sorted(os.listdir(a['train_images'])),
                     ['000001.jpg', '000002.jpg', '000003.jpg'])
    self.assertLen(os.listdir(b['val_images']), 2)
    self.assertTrue(os.path.exists(c['val_json']))

  def test_annotations_describe_the_drawn_shapes(self):
    paths = builtin_dataset.generate(self.root, num_train=12, num_val=0,
                                     image_size=256, seed=0)
    coco = coco_json.load_coco(paths['train_json'])
    self.assertEqual(coco.categories, {1: 'circle', 2: 'square',
                                       3: 'triangle', 4: 'cross'})
    self.assertEqual(coco.categories, builtin_dataset.label_map())
    classes = set()
    for image in coco.images:
      self.assertBetween(len(image.annotations), 1, 5)
      pixels = np.asarray(Image.open(
          os.path.join(paths['train_images'], image.file_name)), np.float32)
      self.assertEqual(pixels.shape, (256, 256, 3))
      self.assertGreater(pixels.std(axis=(0, 1)).mean(), 3)  # textured
      for ann in image.annotations:
        x, y, w, h = ann['bbox']
        classes.add(ann['category_id'])
        self.assertBetween(max(w, h), 13, 116)
        self.assertTrue(0 <= x and x + w <= 256 and 0 <= y and y + h <= 256)
        self.assertBetween(ann['area'], 0.2 * w * h, w * h)
        self.assertEqual(ann['iscrowd'], 0)
    self.assertLen(classes, 4)

  def test_square_fills_its_box(self):
    rng = np.random.default_rng(5)
    for _ in range(20):
      pixels, objects = builtin_dataset.render_image(rng, 128)
      for obj in objects:
        if obj['category_id'] == 2:
          x, y, w, h = obj['bbox']
          self.assertEqual(obj['area'], w * h)
          return
    self.fail('no square drawn in 20 images')

  def test_masks_are_the_shapes_own_pixels(self):
    rng = np.random.default_rng(7)
    not_boxes = 0
    for _ in range(10):
      pixels, objects = builtin_dataset.render_image(rng, 128)
      for obj in objects:
        mask = mask_api.decode(obj['segmentation']).astype(bool)
        self.assertEqual(mask.shape, (128, 128))
        x, y, w, h = obj['bbox']
        ys, xs = np.nonzero(mask)
        self.assertEqual([xs.min(), ys.min(), xs.max() + 1 - xs.min(),
                          ys.max() + 1 - ys.min()], [x, y, w, h])
        self.assertEqual(mask.sum(), obj['area'])
        not_boxes += obj['area'] < w * h
      # The last shape is on top: its mask pixels all have its colour (the
      # shade's noise is 3 grey levels), none of the background's.
      top = mask_api.decode(objects[-1]['segmentation']).astype(bool)
      inside = pixels[top].astype(np.float32)
      self.assertLess(np.abs(inside - np.median(inside, 0)).max(), 20)
    self.assertGreater(not_boxes, 10)  # circles, triangles, crosses

  def test_masks_reach_the_records(self):
    from spinenet.data import coco_converter  # pylint: disable=g-import-not-at-top
    from spinenet.data import decoder as decoder_lib  # pylint: disable=g-import-not-at-top
    paths = builtin_dataset.generate(self.root, num_train=3, num_val=0,
                                     image_size=96, seed=4)
    prefix = os.path.join(self.root, 'records', 'train')
    summary = coco_converter.convert_coco(
        paths['train_images'], paths['train_json'], prefix, num_workers=0,
        include_masks=True)
    self.assertEqual(summary.masks_written, summary.boxes_written)
    self.assertEqual(sum(summary.masks_dropped.values()), 0)
    coco = coco_json.load_coco(paths['train_json'])
    decoder = decoder_lib.DetectionDecoder(decode_masks=True)
    for record, image in zip(tf.data.TFRecordDataset(summary.shards),
                             coco.images):
      masks = decoder.decode(record)['groundtruth_instance_masks'].numpy()
      self.assertLen(masks, len(image.annotations))
      for mask, ann in zip(masks, image.annotations):
        self.assertAllEqual(mask, mask_api.decode(ann['segmentation']))

  def test_demo_records_have_masks_only_when_asked(self):
    from spinenet.cli import demo_lib  # pylint: disable=g-import-not-at-top
    plain = demo_lib.detection_data(self.root, num_train=2, num_val=1)
    masked = demo_lib.detection_data(self.root, num_train=2, num_val=1,
                                     include_masks=True)
    self.assertNotEqual(plain['train_pattern'], masked['train_pattern'])
    for paths, has_masks in ((plain, False), (masked, True)):
      for pattern in (paths['train_pattern'], paths['val_pattern']):
        record = next(iter(tf.data.TFRecordDataset(
            tf.io.gfile.glob(pattern))))
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        self.assertEqual('image/object/mask' in feature, has_masks)

  def test_rejects_tiny_images(self):
    with self.assertRaisesRegex(ValueError, 'image_size.*32'):
      builtin_dataset.generate(self.root, 1, 1, image_size=32)


if __name__ == '__main__':
  tf.test.main()


class VariantTest(tf.test.TestCase):
  """Other shapes and category ids (fine-tuning experiments)."""

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)

  def test_other_shapes_and_ids_are_drawn_and_annotated(self):
    names, ids = ('ring', 'diamond', 'hexagon', 'star'), (3, 7, 9, 11)
    paths = builtin_dataset.generate(self.root, num_train=16, num_val=0,
                                     image_size=128, seed=0, class_names=names,
                                     category_ids=ids)
    coco = coco_json.load_coco(paths['train_json'])
    self.assertEqual(coco.categories, dict(zip(ids, names)))
    self.assertEqual(coco.categories, builtin_dataset.label_map(names, ids))
    seen = {a['category_id'] for im in coco.images for a in im.annotations}
    self.assertEqual(seen, set(ids))
    for image in coco.images:
      for ann in image.annotations:
        x, y, w, h = ann['bbox']
        # Filled fraction of the box tells the shapes apart: a ring or a star
        # covers well under a full box, a hexagon most of it.
        fill = ann['area'] / float(w * h)
        name = coco.categories[ann['category_id']]
        bounds = {'ring': (0.3, 0.65), 'diamond': (0.4, 0.65),
                  'hexagon': (0.6, 0.9), 'star': (0.2, 0.5)}[name]
        if min(w, h) >= 16:  # small shapes are too coarse to tell
          self.assertBetween(fill, *bounds, msg=f'{name} {ann}')

  def test_defaults_are_the_original_dataset_and_bad_classes_are_named(self):
    self.assertEqual(builtin_dataset.categories(), builtin_dataset.CATEGORIES)
    with self.assertRaisesRegex(ValueError, 'hexagon.*oval'):
      builtin_dataset.categories(('ring', 'oval'))
    with self.assertRaisesRegex(ValueError, 'category_ids'):
      builtin_dataset.categories(('ring', 'star'), (2, 2))
    with self.assertRaisesRegex(ValueError, 'category_ids'):
      builtin_dataset.categories(('ring',), (0,))
