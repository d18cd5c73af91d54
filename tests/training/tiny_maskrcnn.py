"""Shared by the Mask R-CNN training tests: records with masks, a tiny Mask R-CNN.

The model is `tiny`'s five-block SpineNet-49S at 128 px under one-conv,
16-filter RPN, box and mask heads, with few proposals and sampled ROIs.
"""
import functools
import json
import os

from spinenet.data import builtin_dataset
from spinenet.data import coco_converter
from spinenet.modeling import maskrcnn
from spinenet.modeling import registry
import tiny

NUM_CLASSES = tiny.NUM_CLASSES
INPUT_SIZE = tiny.INPUT_SIZE
MODEL_ARGS = dict(
    num_classes=NUM_CLASSES, input_size=INPUT_SIZE, filter_size_scale=0.25,
    endpoints_num_filters=16, block_specs=tiny.BLOCK_SPECS, rpn_filters=16,
    box_filters=16, fc_dims=32, mask_filters=16, box_convs=1, mask_convs=1,
    init_stochastic_depth_rate=0.0,
    proposal_config=maskrcnn.ProposalConfig(200, 0.7, 64, 200, 0.7, 64),
    roi_sampler_config=maskrcnn.ROISamplerConfig(num_sampled_rois=32,
                                                 num_sampled_masks=8),
    detection_config=maskrcnn.DetectionConfig(max_detections=10))

# The same model through gin (on top of a Mask R-CNN experiment file).
GIN_PARAMS = [
    f'build_maskrcnn.input_size = {INPUT_SIZE}',
    'build_maskrcnn.filter_size_scale = 0.25',
    'build_maskrcnn.endpoints_num_filters = 16',
    f'build_maskrcnn.block_specs = {tiny.BLOCK_SPECS!r}',
    'build_maskrcnn.rpn_filters = 16', 'build_maskrcnn.box_filters = 16',
    'build_maskrcnn.fc_dims = 32', 'build_maskrcnn.mask_filters = 16',
    'build_maskrcnn.box_convs = 1', 'build_maskrcnn.mask_convs = 1',
    'ProposalConfig.pre_nms_top_k = 200', 'ProposalConfig.num_proposals = 64',
    'ProposalConfig.test_pre_nms_top_k = 200', 'ProposalConfig.test_num_proposals = 64',
    'ROISamplerConfig.num_sampled_rois = 32', 'ROISamplerConfig.num_sampled_masks = 8',
    'MaskRCNNDetectionConfig.max_detections = 10',
    'TRAIN_BATCH_SIZE = 2', 'EVAL_BATCH_SIZE = 2',
    'train/MaskRCNNDataOptions.shuffle_buffer = 8',
    'OptimizerOptions.warmup_steps = 1',
]


def model_fn(**overrides):
  """No-argument builder of the tiny Mask R-CNN (`overrides` win)."""
  return functools.partial(registry.build_maskrcnn, '49S',
                           **dict(MODEL_ARGS, **overrides))


def _add_box_segmentations(path):
  """Gives annotations without `segmentation` their box as a polygon."""
  with open(path) as f:
    data = json.load(f)
  changed = False
  for ann in data['annotations']:
    if not ann.get('segmentation'):
      x, y, w, h = ann['bbox']
      ann['segmentation'] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
      changed = True
  if changed:
    with open(path, 'w') as f:
      json.dump(data, f)


def make_records(directory, num_train=8, num_val=4):
  """The built-in dataset at 128 px as TFRecords with instance masks.

  Returns:
    dict with `train`, `val` (file patterns) and `val_json` (with
    segmentations).
  """
  paths = builtin_dataset.generate(os.path.join(directory, 'shapes'),
                                   num_train=num_train, num_val=num_val,
                                   image_size=INPUT_SIZE)
  for split in ('train', 'val'):
    _add_box_segmentations(paths[f'{split}_json'])
    coco_converter.convert_coco(paths[f'{split}_images'], paths[f'{split}_json'],
                                os.path.join(directory, 'records', split),
                                num_shards=2, num_workers=0, include_masks=True)
  return {'train': os.path.join(directory, 'records', 'train-*.tfrecord'),
          'val': os.path.join(directory, 'records', 'val-*.tfrecord'),
          'val_json': paths['val_json']}
