"""The demo hook: gin config + checkpoint -> export -> one annotated prediction."""
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
import tensorflow as tf

from spinenet import configurables
from spinenet.data import builtin_dataset
from spinenet.data import coco_converter
from spinenet.serving import demo_step

import serving_testing


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
    records = os.path.join(self.tmp, 'records')
    self.gin_files = ['experiments/demo_cpu.gin']
    self.gin_params = serving_testing.GIN_PARAMS + [
        f"TRAIN_FILE_PATTERN = '{records}/train-*.tfrecord'",
        f"EVAL_FILE_PATTERN = '{records}/val-*.tfrecord'"]

  def test_exports_a_version_and_draws_the_detections(self):
    task, _, _ = configurables.load_experiment(self.gin_files, self.gin_params)
    model = serving_testing.randomize(task.build_model())
    checkpoint = serving_testing.write_checkpoint(model, os.path.join(self.tmp, 'model'))
    output = os.path.join(self.tmp, 'prediction.png')
    result = demo_step.export_and_predict(
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


if __name__ == '__main__':
  tf.test.main()
