"""The built-in shapes dataset: deterministic, COCO-shaped, as documented."""
import hashlib
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
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

  def test_rejects_tiny_images(self):
    with self.assertRaisesRegex(ValueError, 'image_size.*32'):
      builtin_dataset.generate(self.root, 1, 1, image_size=32)


if __name__ == '__main__':
  tf.test.main()
