"""Evaluation image summaries: drawing, and the event file a run writes."""
import glob
import os
import tempfile

import numpy as np
import tensorflow as tf

from spinenet.data import preprocess
from spinenet.training import image_summaries
from spinenet.training import optimization
from spinenet.training import retinanet_task
from spinenet.training import strategies
from spinenet.training import train_lib
import tiny


def _normalized(pixels):
  return (pixels.astype(np.float32) - preprocess.MEAN_RGB) / preprocess.STDDEV_RGB


def _images_in_events(directory, tag=image_summaries.TAG):
  """{step: number of images} of `tag` in the event files of `directory`."""
  found = {}
  for path in glob.glob(os.path.join(directory, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          # tf.summary.image: [width, height, encoded images...]
          found[event.step] = len(tf.make_ndarray(value.tensor)) - 2
  return found


class RenderTest(tf.test.TestCase):

  def test_denormalize_inverts_the_parser_normalization(self):
    pixels = np.random.default_rng(0).integers(0, 256, [2, 8, 8, 3]).astype(np.uint8)
    self.assertAllEqual(image_summaries.denormalize(_normalized(pixels)), pixels)

  def test_boxes_and_masks_are_drawn_where_the_detections_are(self):
    gray = np.full([2, 64, 64, 3], 100, np.uint8)
    masks = np.zeros([2, 3, 28, 28], np.float32)
    masks[0, 0, :, :14] = 1.0  # left half of the first detection's box
    outputs = {
        'detection_boxes': np.tile(np.array([[16.0, 16.0, 48.0, 48.0]], np.float32),
                                   [2, 3, 1]),
        'detection_scores': np.array([[0.9, 0.1, 0.1]] * 2, np.float32),
        'detection_classes': np.array([[2, 3, 3]] * 2, np.int32),
        'num_detections': np.array([1, 1], np.int32),
        'detection_masks': masks,
        'valid': np.array([True, False]),
    }
    drawn = image_summaries.render(_normalized(gray), outputs, num_images=4)
    self.assertEqual(drawn.shape, (1, 64, 64, 3))  # the invalid image dropped
    image = drawn[0]
    self.assertAllEqual(image[4, 4], [100, 100, 100])      # far from the box
    self.assertAllEqual(image[32, 40], [100, 100, 100])    # right half: no mask
    self.assertNotAllEqual(image[32, 24], [100, 100, 100])  # mask tint
    self.assertNotAllEqual(image[47, 40], [100, 100, 100])  # box outline
    # Without masks only the outline is drawn.
    del outputs['detection_masks']
    plain = image_summaries.render(_normalized(gray), outputs, num_images=4)[0]
    self.assertAllEqual(plain[32, 24], [100, 100, 100])


class EventFileTest(tf.test.TestCase):

  def test_a_retinanet_evaluation_writes_drawn_images(self):
    records = tiny.make_records(tempfile.mkdtemp(), num_train=4, num_val=3)
    task = retinanet_task.RetinaNetTask(
        tiny.model_fn(init_stochastic_depth_rate=0.0),
        retinanet_task.DataOptions(records['train'], global_batch_size=2,
                                   shuffle_buffer=4, seed=0),
        retinanet_task.DataOptions(records['val'], global_batch_size=2))
    model_dir = tempfile.mkdtemp()
    result = train_lib.run_experiment(
        task, 'train_and_eval', model_dir, strategies.get_strategy('one_device'),
        optimization.OptimizerOptions(warmup_steps=0, learning_rate=0.01),
        train_lib.TrainerOptions(train_steps=1, steps_per_loop=1,
                                 checkpoint_interval=1, eval_image_summaries=3))
    self.assertEqual(result['step'], 1)
    # 3 validation images (2 batches of 2, the last one padded): 3 drawn.
    self.assertEqual(_images_in_events(os.path.join(model_dir, 'eval')), {1: 3})
    self.assertEqual(_images_in_events(os.path.join(model_dir, 'train')), {})
    # Class names: the label map written beside the records.
    action = image_summaries.EvalImageSummaries(task, None, model_dir, None)
    self.assertEqual(action._names(), {1: 'circle', 2: 'square', 3: 'triangle', 4: 'cross'})  # pylint: disable=protected-access


if __name__ == '__main__':
  tf.test.main()
