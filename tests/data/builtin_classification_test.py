"""The built-in classification dataset: deterministic, balanced, readable records."""
import glob
import os
import tempfile

import numpy as np

from spinenet import config
from spinenet.cli import demo_lib
from spinenet.data import builtin_classification as bc
from spinenet.data import classification_input as ci


def test_generate_is_deterministic_balanced_and_read_by_the_input():
  a, b = tempfile.mkdtemp(), tempfile.mkdtemp()
  paths = bc.generate(a, num_train=16, num_val=8, image_size=48, num_shards=2)
  bc.generate(b, num_train=16, num_val=8, image_size=48, num_shards=2)
  for name in sorted(os.listdir(a)):
    with open(os.path.join(a, name), 'rb') as f1, open(os.path.join(b, name), 'rb') as f2:
      assert f1.read() == f2.read(), name
  labels = ci.peek_labels(ci.ClassificationDataOptions(
      file_pattern=paths['train_pattern']))
  np.testing.assert_array_equal(np.bincount(labels, minlength=8), [2] * 8)
  assert len(glob.glob(paths['val_pattern'])) == 2
  assert os.path.exists(os.path.join(a, 'val.label_map.json'))


def test_images_of_different_classes_differ_and_samples_cover_every_class():
  rng = np.random.default_rng
  images = [bc.render_image(rng([0, i]), i, 64) for i in range(8)]
  assert all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in images)
  directory = tempfile.mkdtemp()
  paths = bc.generate(directory, num_train=8, num_val=16, image_size=48)
  samples = os.path.join(directory, 'samples')
  demo_lib.write_samples(paths['val_pattern'], samples)
  assert sorted(os.listdir(samples)) == [f'{i}_{n}.jpg'
                                         for i, n in enumerate(bc.CLASS_NAMES)]


def test_demo_config_reads_the_generated_records():
  task, _, trainer_options = config.load_experiment(
      [demo_lib.CLASSIFICATION_GIN],
      ["TRAIN_FILE_PATTERN = 'x/train-*'", "EVAL_FILE_PATTERN = 'x/val-*'"])
  assert task.train_data.source == task.eval_data.source == 'tfrecord'
  assert trainer_options.precision == 'float32'
