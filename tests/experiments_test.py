"""Every experiments/*.gin resolves to the published recipe it names.

The table below is the recipes as published (the authors' TF1 yamls in
tensorflow/tpu models/official/detection/configs/spinenet over
retinanet_config.py / classification_config.py defaults, and the Model
Garden's official/vision retinanet and classification configs). Each file is
parsed through `spinenet.config` with placeholder file patterns, and the
values it resolves to (bindings, else the registry's and the option classes'
defaults) are compared with the table; no model is built. The learning-rate
schedule object is evaluated at its warmup end and on both sides of every
decay boundary.
"""
import dataclasses
import glob
import math
import os

import gin
import pytest

from spinenet import config
from spinenet.modeling import registry
from spinenet.training import optimization

EXPERIMENTS = os.path.join(config.REPO_ROOT, 'experiments')
PLACEHOLDERS = ("TRAIN_FILE_PATTERN = 'placeholder/train-*'",
                "EVAL_FILE_PATTERN = 'placeholder/val-*'")
COCO_STEPS_PER_EPOCH = 462  # Model Garden: 118,287 // 256
TF1_STEPS_PER_EPOCH = 463   # the TF1 yamls' totals: 231,500 = 500 x 463


@dataclasses.dataclass(frozen=True)
class Coco:
  """A published RetinaNet recipe and the result it gave."""
  source: str
  value: float  # box AP the header must cite
  model_id: str
  input_size: int
  epochs: int
  steps: int
  learning_rate: float
  boundaries: tuple
  jitter: tuple
  clip: float
  norm: tuple  # (momentum, epsilon), synchronized
  stochastic_depth: float
  activation: str
  anchor_size: float
  weight_decay: float = 4e-5
  steps_per_epoch: int = COCO_STEPS_PER_EPOCH


def _mg(value, model_id, input_size, anchor_size, mobile=False, activation='swish'):
  epochs = 600 if mobile else 500
  decays = (570, 590) if mobile else (475, 490)
  return Coco('Model Garden', value, model_id, input_size, epochs,
              epochs * COCO_STEPS_PER_EPOCH, 0.32,
              tuple(e * COCO_STEPS_PER_EPOCH for e in decays),
              (0.5, 2.0) if mobile else (0.1, 2.0), 0.0, (0.99, 1e-3), 0.2,
              activation, anchor_size, 3e-5 if mobile else 4e-5)


def _tf1(value, model_id, input_size, anchor_size, lr, steps, boundaries,
         jitter, stochastic_depth=0.2):
  return Coco('TF1', value, model_id, input_size, steps // TF1_STEPS_PER_EPOCH,
              steps, lr, boundaries, jitter, 10.0, (0.997, 1e-4),
              stochastic_depth, 'swish', anchor_size,
              steps_per_epoch=TF1_STEPS_PER_EPOCH)


COCO = {
    # Model Garden yamls with a published AP (COCO val2017).
    'coco_spinenet49_tpu': _mg(44.2, '49', 640, 3.0),
    'coco_spinenet96_tpu': _mg(48.5, '96', 1024, 3.0),
    'coco_spinenet143_tpu': _mg(50.0, '143', 1280, 4.0),
    'coco_spinenet49_mobile_tpu': _mg(28.1, 'mobile-49', 384, 3.0, True, 'hard_swish'),
    'coco_spinenet49s_mobile_tpu': _mg(23.5, 'mobile-49S', 384, 3.0, True, 'hard_swish'),
    'coco_spinenet49xs_mobile_tpu': _mg(None, 'mobile-49XS', 256, 3.0, True, 'swish'),
    # The authors' TF1 yamls (paper, COCO test-dev).
    'coco_spinenet49s_tpu': _tf1(41.5, '49S', 640, 3.0, 0.28, 231500,
                                 (217610, 226870), (0.5, 2.0)),
    'coco_spinenet49_tf1_tpu': _tf1(44.3, '49', 640, 3.0, 0.28, 231500,
                                    (217610, 226870), (0.5, 2.0)),
    'coco_spinenet96_tf1_tpu': _tf1(48.6, '96', 1024, 3.0, 0.28, 231500,
                                    (217610, 226870), (0.5, 2.0)),
    'coco_spinenet143_tf1_tpu': _tf1(50.7, '143', 1280, 4.0, 0.28, 231500,
                                     (217610, 226870), (0.1, 1.9), 0.16),
    'coco_spinenet190_tpu': _tf1(52.1, '190', 1280, 4.0, 0.30, 185200,
                                 (171310, 180570), (0.1, 1.9)),
}

# The authors' TF1 classification yamls (200 epochs at 4096, cosine from 1.6
# after 1,564 warmup steps, label smoothing 0.1, swish, stochastic depth 0.2,
# batch norm 0.9 / 1e-5 unsynchronized, weight decay 1e-4, no clipping);
# iNaturalist: the paper's table, the same recipe over 579,184 images.
CLASSIFICATION = {
    'imagenet_spinenet49_tpu': ('49', 78.1, 62557, 1564),
    'imagenet_spinenet96_tpu': ('96', 79.4, 62557, 1564),
    'imagenet_spinenet143_tpu': ('143', 80.1, 62557, 1564),
    'imagenet_spinenet190_tpu': ('190', 80.8, 62557, 1564),
    'inat2017_spinenet49_tpu': ('49', 59.3, 28281, 707),
}

@dataclasses.dataclass(frozen=True)
class MaskRCNNRecipe:
  """The authors' TF1 Mask R-CNN yaml (spinenet<id>_mrcnn.yaml) of a model."""
  box_ap: float  # the yaml's header
  mask_ap: float  # None: the yaml names none
  model_id: str
  input_size: int
  steps: int
  boundaries: tuple
  jitter: tuple
  stochastic_depth: float
  activation: str
  anchor_size: float
  heads: tuple  # (rpn convs, rpn filters, box convs, box filters, fc dims, mask convs, mask filters)


_MRCNN_HEADS = (1, 256, 4, 256, 1024, 4, 256)
MASKRCNN = {
    'coco_spinenet49s_mrcnn_tpu': MaskRCNNRecipe(
        39.31, 34.83, '49S', 640, 162050, (148160, 157420), (0.5, 2.0), 0.0, 'relu', 3.0,
        (1, 128, 4, 128, 512, 4, 128)),
    'coco_spinenet49_mrcnn_tpu': MaskRCNNRecipe(
        42.93, 38.07, '49', 640, 162050, (148160, 157420), (0.5, 2.0), 0.0, 'relu', 3.0,
        _MRCNN_HEADS),
    'coco_spinenet96_mrcnn_tpu': MaskRCNNRecipe(
        47.18, 41.53, '96', 1024, 162050, (148160, 157420), (0.5, 2.0), 0.0, 'relu', 3.0,
        _MRCNN_HEADS),
    'coco_spinenet143_mrcnn_tpu': MaskRCNNRecipe(
        48.79, 42.71, '143', 1280, 162050, (148160, 157420), (0.5, 2.0), 0.0, 'relu', 3.0,
        _MRCNN_HEADS),
    'coco_spinenet190_mrcnn_tpu': MaskRCNNRecipe(
        52.0, None, '190', 1536, 187600, (173530, 182910), (0.1, 2.0), 0.2, 'swish', 5.0,
        (7, 384, 7, 384, 1024, 7, 384)),
}
MASKRCNN_PLACEHOLDERS = ("EVAL_ANNOTATIONS_JSON = 'placeholder/val.json'",)

DEMOS = ('demo_cpu', 'demo_classification_cpu', 'demo_mobile_cpu')
MASKRCNN_DEMOS = ('demo_maskrcnn_cpu',)
# Fine-tuning recipes: (file, model id); they need the checkpoint and classes.
FINETUNE = {'finetune_spinenet49_custom': '49'}


def _load(name, extra=()):
  path = os.path.join(EXPERIMENTS, name + '.gin')
  task, optimizer, trainer = config.load_experiment([path], PLACEHOLDERS + tuple(extra))
  with open(path) as f:
    header = ''.join(line for line in f if line.startswith('#'))
  return task, optimizer, trainer, header


def _bound(function, parameter, default):
  try:
    value = gin.query_parameter(f'{function}.{parameter}')
  except ValueError:
    return default
  if isinstance(value, gin.config.ConfigurableReference):  # a %MACRO
    return gin.query_parameter(value.scoped_selector + '.value')
  return value


def test_every_experiment_file_is_in_the_table():
  names = {os.path.basename(p)[:-len('.gin')]
           for p in glob.glob(os.path.join(EXPERIMENTS, '*.gin'))}
  assert names == (set(COCO) | set(CLASSIFICATION) | set(DEMOS) | set(FINETUNE) |
                   set(MASKRCNN) | set(MASKRCNN_DEMOS))


def _check_schedule(optimizer, trainer, peak, boundaries, decay_rate=0.1):
  lr = optimization.build_learning_rate(optimizer, trainer.train_steps)
  assert float(lr(0)) == pytest.approx(optimizer.warmup_learning_rate)
  assert float(lr(optimizer.warmup_steps)) == pytest.approx(peak, rel=1e-6)
  rate = peak
  for boundary in boundaries:
    assert float(lr(boundary)) == pytest.approx(rate, rel=1e-6), boundary
    rate *= decay_rate
    assert float(lr(boundary + 1)) == pytest.approx(rate, rel=1e-6), boundary
  assert float(lr(trainer.train_steps)) == pytest.approx(rate, rel=1e-6)


@pytest.mark.parametrize('name', sorted(COCO))
def test_coco_recipe(name):
  want = COCO[name]
  task, optimizer, trainer, header = _load(name)
  # The header names the result, its source and the value.
  assert 'Reproduces:' in header
  if want.value is None:
    assert 'no published AP' in header
  else:
    assert f'box AP {want.value}' in header and want.source.split()[0] in header
  # Steps and epochs.
  assert trainer.train_steps == want.steps
  assert trainer.train_steps == want.epochs * want.steps_per_epoch
  assert task.train_data.global_batch_size == 256
  assert trainer.precision == 'mixed_bfloat16'
  # Optimizer and schedule.
  assert optimizer.schedule == 'stepwise' and optimizer.momentum == 0.9
  assert optimizer.learning_rate == pytest.approx(want.learning_rate)
  assert optimizer.warmup_steps == 2000
  assert optimizer.warmup_learning_rate == pytest.approx(0.0067)
  assert optimizer.weight_decay == pytest.approx(want.weight_decay)
  assert optimizer.gradient_clip_norm == want.clip
  assert optimizer.ema_decay is None
  _check_schedule(optimizer, trainer, want.learning_rate, want.boundaries)
  # Data.
  data = task.train_data
  assert (data.aug_scale_min, data.aug_scale_max) == want.jitter
  assert data.aug_rand_hflip
  assert not data.crowd_as_ignore  # both references drop crowd boxes
  assert data.shuffle_buffer == 10000  # the Model Garden's
  assert (data.match_threshold, data.unmatched_threshold) == (0.5, 0.5)
  # Model.
  model_id = registry.resolve(_bound('build_retinanet', 'model_id', None))
  spec = registry.get_spec(model_id)
  assert model_id == want.model_id
  assert _bound('build_retinanet', 'input_size', spec.input_size) == want.input_size
  assert _bound('build_retinanet', 'use_sync_bn', False) is True
  assert (_bound('build_retinanet', 'norm_momentum', None),
          _bound('build_retinanet', 'norm_epsilon', None)) == pytest.approx(want.norm)
  assert _bound('build_retinanet', 'init_stochastic_depth_rate',
                None) == pytest.approx(want.stochastic_depth)
  assert _bound('build_retinanet', 'activation', spec.activation) == want.activation
  # Anchors: levels 3-7, 3 scales, ratios 0.5/1/2.
  assert _bound('build_retinanet', 'anchor_size', spec.anchor_size) == want.anchor_size
  assert _bound('build_retinanet', 'num_scales', 3) == 3
  assert tuple(_bound('build_retinanet', 'aspect_ratios', (0.5, 1.0, 2.0))) == (0.5, 1.0, 2.0)
  assert _bound('build_retinanet', 'min_level', 3) == 3
  assert _bound('build_retinanet', 'max_level', 7) == 7
  # Losses.
  losses = task.loss_options
  assert (losses.focal_loss_alpha, losses.focal_loss_gamma, losses.huber_loss_delta,
          losses.box_loss_weight) == (0.25, 1.5, 0.1, 50.0)
  assert losses.normalizer_scope == 'replica'


@pytest.mark.parametrize('name', sorted(MASKRCNN))
def test_maskrcnn_recipe(name):
  from spinenet.config import registrations  # pylint: disable=g-import-not-at-top
  from spinenet.training import maskrcnn_task  # pylint: disable=g-import-not-at-top
  want = MASKRCNN[name]
  task, optimizer, trainer, header = _load(name, MASKRCNN_PLACEHOLDERS)
  assert isinstance(task, maskrcnn_task.MaskRCNNTask) and task.include_mask
  # The header names the source and its numbers, and where the Model Garden differs.
  assert 'Reproduces:' in header and 'TF1' in header
  assert f'box AP {want.box_ap}' in header
  if want.mask_ap is not None:
    assert f'mask AP {want.mask_ap}' in header
  assert 'Model Garden' in header
  # Schedule: momentum SGD, 0.28 stepwise /10 twice, 2000 warmup steps from 0.0067.
  assert trainer.train_steps == want.steps
  assert task.train_data.global_batch_size == 256
  assert trainer.precision == 'mixed_bfloat16'
  assert optimizer.schedule == 'stepwise' and optimizer.momentum == 0.9
  assert optimizer.learning_rate == pytest.approx(0.28)
  assert optimizer.warmup_steps == 2000
  assert optimizer.warmup_learning_rate == pytest.approx(0.0067)
  assert optimizer.weight_decay == pytest.approx(4e-5)
  assert optimizer.gradient_clip_norm == 0.0
  assert optimizer.ema_decay is None
  _check_schedule(optimizer, trainer, 0.28, want.boundaries)
  # Data: jitter, flip, RPN labeling.
  data = task.train_data
  assert (data.aug_scale_min, data.aug_scale_max) == want.jitter
  assert data.aug_rand_hflip
  assert (data.rpn_match_threshold, data.rpn_unmatched_threshold) == (0.7, 0.3)
  assert (data.rpn_batch_size_per_im, data.rpn_fg_fraction) == (256, 0.5)
  assert (data.max_num_instances, data.mask_crop_size) == (100, 112)
  # Model: id, size, batch norm, activation, anchors, heads.
  assert _bound('build_maskrcnn', 'model_id', None) == want.model_id
  assert _bound('build_maskrcnn', 'input_size', None) == want.input_size
  assert _bound('build_maskrcnn', 'use_sync_bn', False) is True
  assert (_bound('build_maskrcnn', 'norm_momentum', None),
          _bound('build_maskrcnn', 'norm_epsilon', None)) == pytest.approx((0.99, 1e-3))
  assert _bound('build_maskrcnn', 'init_stochastic_depth_rate',
                None) == pytest.approx(want.stochastic_depth)
  recipe = registry.get_maskrcnn_spec(want.model_id)
  assert _bound('build_maskrcnn', 'activation', recipe.activation) == want.activation
  assert _bound('build_maskrcnn', 'anchor_size', recipe.anchor_size) == want.anchor_size
  assert _bound('build_maskrcnn', 'num_scales', None) == 1
  assert tuple(_bound('build_maskrcnn', 'aspect_ratios', None)) == (0.5, 1.0, 2.0)
  heads = tuple(_bound('build_maskrcnn', field, getattr(recipe, field)) for field in (
      'rpn_convs', 'rpn_filters', 'box_convs', 'box_filters', 'fc_dims', 'mask_convs',
      'mask_filters'))
  assert heads == want.heads
  # Proposals, ROI sampling, detection (TF1 maskrcnn_config; the Model Garden's).
  # (The gin-wrapped classes apply the file's bindings when called.)
  proposals = registrations.ProposalConfig()
  assert (proposals.pre_nms_top_k, proposals.nms_iou_threshold, proposals.num_proposals,
          proposals.test_pre_nms_top_k, proposals.test_nms_iou_threshold,
          proposals.test_num_proposals) == (2000, 0.7, 1000, 1000, 0.7, 1000)
  sampler = registrations.ROISamplerConfig()
  assert (sampler.num_sampled_rois, sampler.foreground_fraction,
          sampler.foreground_iou_threshold, sampler.background_iou_high_threshold,
          sampler.background_iou_low_threshold, sampler.mix_gt_boxes,
          sampler.num_sampled_masks) == (512, 0.25, 0.5, 0.5, 0.0, True, 128)
  detection = registrations.MaskRCNNDetectionConfig()
  assert (detection.score_threshold, detection.nms_iou_threshold,
          detection.max_detections, detection.box_crop_size,
          detection.mask_crop_size) == (0.05, 0.5, 100, 7, 14)
  # Losses: deltas 1/9 and 1, unit weights, RPN score / (batch x 256) (TF1).
  losses = task.loss_options
  assert losses.rpn_huber_loss_delta == pytest.approx(1 / 9)
  assert losses.frcnn_huber_loss_delta == 1.0
  assert losses.rpn_score_normalizer == 256.0
  assert (losses.rpn_score_weight, losses.rpn_box_weight, losses.frcnn_class_weight,
          losses.frcnn_box_weight, losses.mask_weight) == (1.0,) * 5
  assert task.annotation_json == 'placeholder/val.json'


@pytest.mark.parametrize('name', sorted(CLASSIFICATION))
def test_classification_recipe(name):
  model_id, top1, steps, warmup = CLASSIFICATION[name]
  task, optimizer, trainer, header = _load(name)
  assert 'Reproduces:' in header and f'top-1 {top1}' in header
  assert _bound('build_classifier', 'model_id', None) == model_id
  assert trainer.train_steps == steps and optimizer.warmup_steps == warmup
  if name.startswith('imagenet'):  # 200 and 5 epochs of 1,281,167 images
    assert (steps, warmup) == (round(200 * 1281167 / 4096), round(5 * 1281167 / 4096))
  assert task.train_data.global_batch_size == 4096
  assert task.label_smoothing == 0.1
  assert optimizer.schedule == 'cosine' and optimizer.cosine_alpha == 0.0
  assert optimizer.learning_rate == 1.6 and optimizer.warmup_learning_rate == 0.0
  assert optimizer.weight_decay == pytest.approx(1e-4) and optimizer.momentum == 0.9
  assert optimizer.gradient_clip_norm == 0.0
  lr = optimization.build_learning_rate(optimizer, trainer.train_steps)
  assert float(lr(warmup // 2)) == pytest.approx(1.6 * (warmup // 2) / warmup, rel=1e-5)
  assert float(lr(warmup)) == pytest.approx(1.6, rel=1e-6)
  middle = (warmup + steps) // 2
  assert float(lr(middle)) == pytest.approx(
      0.8 * (1 + math.cos(math.pi * (middle - warmup) / (steps - warmup))), rel=1e-4)
  assert float(lr(steps)) == pytest.approx(0.0, abs=1e-7)
  assert _bound('build_classifier', 'activation', None) == 'swish'
  assert _bound('build_classifier', 'init_stochastic_depth_rate', None) == 0.2
  assert _bound('build_classifier', 'dropout_rate', None) == 0.0
  assert _bound('build_classifier', 'use_sync_bn', None) is False
  assert (_bound('build_classifier', 'norm_momentum', None),
          _bound('build_classifier', 'norm_epsilon', None)) == pytest.approx((0.9, 1e-5))
  assert _bound('build_classifier', 'fusion', None) == 'average'
  assert _bound('build_classifier', 'input_size', None) == 224


@pytest.mark.parametrize('name', DEMOS)
def test_demos_parse(name):
  _, _, trainer, header = _load(name)
  assert trainer.precision == 'float32' and trainer.train_steps <= 1200
  assert 'Demo' in header


@pytest.mark.parametrize('name', MASKRCNN_DEMOS)
def test_maskrcnn_demos_parse(name):
  task, _, trainer, header = _load(name, MASKRCNN_PLACEHOLDERS)
  assert trainer.precision == 'float32' and trainer.train_steps <= 1200
  assert 'Demo' in header and task.include_mask
  assert _bound('build_maskrcnn', 'input_size', None) <= 256


@pytest.mark.parametrize('name', sorted(FINETUNE))
def test_finetune_recipes(name):
  task, optimizer, trainer, header = _load(
      name, ("INIT_CHECKPOINT = 'placeholder/converted'", 'NUM_CLASSES = 3'))
  assert 'INIT_CHECKPOINT' in header and 'NUM_CLASSES' in header
  assert trainer.init_checkpoint == 'placeholder/converted'
  assert trainer.init_checkpoint_parts == 'all'
  # The model the zoo checkpoint holds (so every restored variable fits).
  model_id = registry.resolve(_bound('build_retinanet', 'model_id', None))
  spec = registry.get_spec(model_id)
  assert model_id == FINETUNE[name]
  assert _bound('build_retinanet', 'input_size', None) == spec.input_size
  assert _bound('build_retinanet', 'num_classes', None) == 3
  # The pretraining rate (0.32 at 256) scaled linearly to the batch, no more.
  batch = task.train_data.global_batch_size
  assert optimizer.learning_rate <= 0.32 * batch / 256 + 1e-9
  assert 0 < optimizer.warmup_steps < trainer.train_steps // 4
  assert optimizer.warmup_learning_rate < optimizer.learning_rate
