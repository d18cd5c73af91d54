"""spinenet-export's path for Mask R-CNN: a recipe gin file and a checkpoint -> masks."""
import json
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from spinenet import config
from spinenet.serving import export_lib
from spinenet.serving import signatures as sig

import serving_testing

GIN_FILE = 'experiments/coco_spinenet49s_mrcnn_tpu.gin'
GIN_PARAMS = [
    "TRAIN_FILE_PATTERN = '/nowhere/train-*'",
    "EVAL_FILE_PATTERN = '/nowhere/val-*'",
    'EVAL_ANNOTATIONS_JSON = None',
    f'NUM_CLASSES = {serving_testing.NUM_CLASSES}',
    'ProposalConfig.test_pre_nms_top_k = 200',
    'ProposalConfig.test_num_proposals = 50',
    'MaskRCNNDetectionConfig.max_detections = 20',
] + [f'build_maskrcnn.{key} = {value!r}'
     for key, value in serving_testing.MASKRCNN_ARGS.items() if key != 'num_classes']


class MaskRCNNExportFromGinTest(absltest.TestCase):

  def test_recipe_gin_and_checkpoint_export_masks(self):
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root, ignore_errors=True)
    task, _, _ = config.load_experiment([GIN_FILE], GIN_PARAMS)
    trained = serving_testing.randomize(task.build_model(), seed=3)
    checkpoint = serving_testing.write_checkpoint(trained, os.path.join(root, 'model'))
    result = config.export_from_config(
        [GIN_FILE], GIN_PARAMS, os.path.join(root, 'export'),
        checkpoint=os.path.dirname(checkpoint),
        options=export_lib.ExportOptions(mask_format='png'))
    self.assertEqual(result.task, 'instance_segmentation')
    self.assertEqual(result.info['checkpoint'], checkpoint)
    self.assertEqual(result.info['num_classes'], serving_testing.NUM_CLASSES)
    with open(os.path.join(result.path, 'assets', sig.EXPORT_INFO_ASSET)) as f:
      self.assertEqual(json.load(f)['mask_output'], sig.DETECTION_MASKS_PNG)
    pixels = serving_testing.image(96, 144)
    outputs = tf.saved_model.load(result.path).signatures[sig.IMAGE_TENSOR](
        images=tf.constant(pixels[None]))
    reference = serving_testing.keras_maskrcnn(trained, pixels)
    num = int(outputs[sig.NUM_DETECTIONS][0])
    self.assertEqual(num, len(reference['scores']))
    self.assertGreater(num, 0)
    np.testing.assert_allclose(outputs[sig.DETECTION_SCORES][0, :num], reference['scores'],
                               atol=1e-4)
    masks = np.stack([tf.io.decode_png(p)[..., 0].numpy()
                      for p in outputs[sig.DETECTION_MASKS_PNG][0, :num].numpy()])
    self.assertLessEqual(np.sum(masks != reference['masks']), 0.001 * masks.size + 2)


if __name__ == '__main__':
  absltest.main()
