"""TFDS detection datasets as an input source, on TFDS's mock data.

`tfds.testing.mock_data` replaces the dataset's files; the examples here are
built by the real `coco/2017` and `voc/2007` feature specs (serialized and
deserialized by TFDS itself, images JPEG-encoded), with shapes images whose
boxes and labels are known, so the mapping to category ids is checked value
by value. TFDS's random mock generator cannot make these datasets (its
`objects` sequences get unequal lengths), hence `as_dataset_fn`.
"""
import os
import sys

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from spinenet.data import builtin_dataset
from spinenet.data import tfds_source
from spinenet.training import retinanet_task

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'training'))
import tiny  # noqa: E402  pylint: disable=g-import-not-at-top

SIZE = 96
# TFDS label of each drawn object, cycling; COCO's label 79 is category id 90.
LABELS = (0, 11, 79, 24, 3)


def _objects(index, num_labels=80):
  rng = np.random.default_rng([index])
  pixels, objects = builtin_dataset.render_image(rng, SIZE)
  boxes = [(o['bbox'][1] / SIZE, o['bbox'][0] / SIZE,
            (o['bbox'][1] + o['bbox'][3]) / SIZE,
            (o['bbox'][0] + o['bbox'][2]) / SIZE) for o in objects]
  labels = [LABELS[(index + k) % len(LABELS)] % num_labels
            for k in range(len(objects))]
  flags = [k == 1 for k in range(len(objects))]  # the second object: crowd / difficult
  return pixels, objects, boxes, labels, flags


def _as_dataset_fn(num_examples):
  """A `mock_data` as_dataset_fn: known examples through the real features."""

  def as_dataset(self, split, decoders=None, read_config=None,
                 shuffle_files=False, **kwargs):
    del split, read_config, shuffle_files, kwargs
    features = self.info.features
    coco = 'is_crowd' in features['objects'].keys()
    serialized = []
    num_labels = features['objects']['label'].num_classes
    for i in range(num_examples):
      pixels, objects, boxes, labels, flags = _objects(i, num_labels)
      objs = {'bbox': [tfds.features.BBox(*b) for b in boxes], 'label': labels}
      if coco:
        objs.update(id=list(range(len(boxes))), is_crowd=flags,
                    area=[o['area'] for o in objects])
        example = {'image': pixels, 'image/filename': f'{i}.jpg',
                   'image/id': 5000 + i, 'objects': objs}
      else:
        objs.update(pose=[0] * len(boxes), is_truncated=[False] * len(boxes),
                    is_difficult=flags)
        example = {'image': pixels, 'image/filename': f'{i:06d}.jpg',
                   'objects': objs, 'labels': [], 'labels_no_difficult': []}
      serialized.append(features.serialize_example(example))
    return tf.data.Dataset.from_tensor_slices(serialized).map(
        lambda s: features.deserialize_example(s, decoders=decoders))

  return as_dataset


class TfdsSourceTest(tf.test.TestCase):

  def _decoded(self, name, n=3):
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset_fn(n)):
      dataset, decoder, labels = tfds_source.load(name, 'validation', False)
      return [decoder.decode(ex) for ex in dataset], labels

  def test_coco_labels_become_coco_category_ids(self):
    decoded, labels = self._decoded('coco/2017')
    self.assertLen(labels, 80)
    self.assertEqual(max(labels), 90)
    self.assertNotIn(12, labels)  # a gap in COCO's ids
    for i, d in enumerate(decoded):
      _, objects, boxes, tfds_labels, flags = _objects(i)
      want = [tfds_source.COCO_CATEGORY_IDS[label] for label in tfds_labels]
      self.assertAllEqual(d['groundtruth_classes'], want)
      self.assertAllClose(d['groundtruth_boxes'], boxes, atol=1e-6)
      self.assertAllEqual(d['groundtruth_is_crowd'], flags)
      self.assertAllEqual(d['groundtruth_area'], [o['area'] for o in objects])
      self.assertEqual(d['source_id'].numpy().decode(), str(5000 + i))
      self.assertEqual((int(d['height']), int(d['width'])), (SIZE, SIZE))
      self.assertTrue(tf.io.is_jpeg(d['encoded_image']))

  def test_voc_labels_shift_by_one_and_difficult_is_crowd(self):
    decoded, labels = self._decoded('voc/2007')
    self.assertEqual(labels[1], 'aeroplane')
    self.assertEqual(sorted(labels), list(range(1, 21)))
    for i, d in enumerate(decoded):
      _, _, boxes, tfds_labels, flags = _objects(i, 20)
      self.assertIn(19, [l for k in range(3) for l in _objects(k, 20)[3]])
      self.assertAllEqual(d['groundtruth_classes'], [l + 1 for l in tfds_labels])
      self.assertAllEqual(d['groundtruth_is_crowd'], flags)
      self.assertEqual(d['source_id'].numpy().decode(), f'{i:06d}')
      b = np.array(boxes)
      self.assertAllClose(d['groundtruth_area'],
                          (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) * SIZE * SIZE,
                          rtol=1e-4)

  def test_not_a_detection_dataset_is_named(self):
    with tfds.testing.mock_data(num_examples=1):
      with self.assertRaisesRegex(ValueError, "mnist.*not a detection dataset"):
        tfds_source.load('mnist', 'train', False)


class RetinaNetTaskTfdsTest(tf.test.TestCase):

  def _task(self, name, num_classes, batch=2):
    train = retinanet_task.DataOptions(tfds_name=name, tfds_split='train',
                                       global_batch_size=batch, shuffle_buffer=1,
                                       aug_rand_hflip=False, seed=0,
                                       crowd_as_ignore=True)
    val = retinanet_task.DataOptions(tfds_name=name, tfds_split='validation',
                                     global_batch_size=batch)
    task = retinanet_task.RetinaNetTask(tiny.model_fn(num_classes=num_classes),
                                        train, val)
    task.build_model()
    return task

  def test_training_and_evaluation_batches_carry_category_ids(self):
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset_fn(4)):
      task = self._task('coco/2017', 91)
      images, labels = next(iter(task.build_inputs(training=False)))
      self.assertEqual(images.shape, (2, 128, 128, 3))
      for k in range(2):
        _, _, _, tfds_labels, _ = _objects(k)
        n = int(labels['groundtruths']['num_detections'][k])
        self.assertAllEqual(labels['groundtruths']['classes'][k, :n],
                            [tfds_source.COCO_CATEGORY_IDS[l] for l in tfds_labels])
        self.assertEqual(int(labels['source_id'][k]), 5000 + k)
      _, train_labels = next(iter(task.build_inputs(training=True)))
      targets = np.concatenate([np.reshape(t, [-1]) for t in
                                train_labels['cls_targets'].values()])
      positives = set(targets[targets > 0].tolist())
      all_ids = {tfds_source.COCO_CATEGORY_IDS[l] for l in LABELS}
      self.assertTrue(positives and positives <= all_ids, positives)

  def test_too_few_classes_and_two_sources_are_refused(self):
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset_fn(2)):
      task = self._task('voc/2007', 5)
      with self.assertRaisesRegex(ValueError, r"voc/2007.*up to 20.*NUM_CLASSES.*21"):
        task.build_inputs(training=True)
    with self.assertRaisesRegex(ValueError, 'not both'):
      retinanet_task.DataOptions('records/*', tfds_name='coco/2017',
                                 tfds_split='train')
    with self.assertRaisesRegex(ValueError, 'tfds_split'):
      retinanet_task.DataOptions(tfds_name='coco/2017')
