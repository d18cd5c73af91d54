"""The demos' steps: data made once, export + one annotated prediction."""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image
import tensorflow as tf

from spinenet import config
from spinenet.cli import demo_lib
from spinenet.data import builtin_dataset
from spinenet.data import coco_converter
from spinenet.modeling import registry

# The tiny detector's bindings and helpers are shared with the serving tests.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'serving'))
import serving_testing  # pylint: disable=g-import-not-at-top,wrong-import-position


class GenerateOnceTest(tf.test.TestCase):

  def test_generates_until_complete_then_reuses(self):
    directory = os.path.join(self.get_temp_dir(), 'data')
    calls = []

    def failing():
      calls.append('failing')
      raise OSError('disk full')

    with self.assertRaises(OSError):
      demo_lib.generate_once(directory, failing)
    demo_lib.generate_once(directory, lambda: calls.append('ok'))
    demo_lib.generate_once(directory, lambda: calls.append('again'))
    self.assertEqual(calls, ['failing', 'ok'])  # redone after the failure only


class SeedEverythingTest(tf.test.TestCase):

  def _initial_weights(self, seed):
    demo_lib.seed_everything(seed)
    model = registry.build_retinanet('49S', num_classes=3, input_size=64,
                                     filter_size_scale=0.25,
                                     endpoints_num_filters=8, head_filters=8,
                                     head_convs=1)
    return model.get_weights()

  def test_a_seed_fixes_the_initial_weights(self):
    first, again, other = (self._initial_weights(s) for s in (3, 3, 4))
    self.assertLen(again, len(first))
    for a, b in zip(first, again):
      self.assertAllEqual(a, b)
    # Another seed: the random kernels differ (constant vectors such as batch
    # norm's zeros and ones, or the prior bias, do not).
    differs = [not np.array_equal(a, b) for a, b in zip(first, other)
               if a.ndim == 4]
    self.assertGreater(sum(differs), len(differs) // 2)


class ExportAndPredictTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
    data = builtin_dataset.generate(os.path.join(self.tmp, 'shapes'), num_train=2,
                                    num_val=2, image_size=serving_testing.INPUT_SIZE)
    for split in ('train', 'val'):
      coco_converter.convert_coco(data[f'{split}_images'], data[f'{split}_json'],
                                  os.path.join(self.tmp, 'records', split),
                                  num_shards=1, num_workers=0)
    self.image = os.path.join(data['val_images'], '000001.jpg')
    self.val_json = data['val_json']
    records = os.path.join(self.tmp, 'records')
    self.gin_files = [demo_lib.DETECTION_GIN]
    self.gin_params = serving_testing.GIN_PARAMS + [
        f"TRAIN_FILE_PATTERN = '{records}/train-*.tfrecord'",
        f"EVAL_FILE_PATTERN = '{records}/val-*.tfrecord'"]

  def test_exports_a_version_and_draws_the_detections(self):
    task, _, _ = config.load_experiment(self.gin_files, self.gin_params)
    model = serving_testing.randomize(task.build_model())
    checkpoint = serving_testing.write_checkpoint(model, os.path.join(self.tmp, 'model'))
    output = os.path.join(self.tmp, 'prediction.png')
    result = demo_lib.export_and_predict(
        self.gin_files, self.gin_params, os.path.dirname(checkpoint),
        os.path.join(self.tmp, 'export'), self.image, output, min_score=0.1)

    self.assertEqual(result['export_path'], os.path.join(self.tmp, 'export', '1'))
    self.assertEqual(result['export_info']['checkpoint'], checkpoint)
    names = set(builtin_dataset.label_map().values())
    self.assertNotEmpty(result['detections'])
    for detection in result['detections']:
      self.assertIn(detection['name'], names)  # the label map next to the records
      self.assertGreaterEqual(detection['score'], 0.1)
    drawn = np.asarray(Image.open(output))
    original = np.asarray(Image.open(self.image).convert('RGB'))
    self.assertEqual(drawn.shape, original.shape)
    self.assertGreater(np.abs(drawn.astype(int) - original).sum(), 0)

  def test_busiest_image_has_the_most_objects(self):
    path = demo_lib.busiest_image(self.val_json, os.path.dirname(self.image))
    with open(self.val_json) as f:
      annotations = json.load(f)
    counts = {im['file_name']: sum(a['image_id'] == im['id']
                                   for a in annotations['annotations'])
              for im in annotations['images']}
    self.assertEqual(counts[os.path.basename(path)], max(counts.values()))


if __name__ == '__main__':
  tf.test.main()
