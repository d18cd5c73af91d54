"""Classification: loss, metrics, a trained step, gin recipes, TFDS end to end."""
import functools
import glob
import json
import os
import re
import tempfile

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from spinenet import config
from spinenet.data import builtin_classification
from spinenet.data import classification_input
from spinenet.modeling import registry
from spinenet.training import classification_task as ct
from spinenet.training import optimization
from spinenet.training import trainer

# A five-block SpineNet (one output block per level) at quarter width: every
# code path at a fraction of the graph. 64 px is not a multiple of 2**7, so
# the ceil-sized levels are exercised too.
BLOCK_SPECS = ((3, 'bottleneck', (0, 1), True),
               (4, 'residual', (0, 2), True),
               (5, 'residual', (2, 3), True),
               (7, 'residual', (3, 4), True),
               (6, 'bottleneck', (4, 5), True))
TINY = dict(input_size=64, filter_size_scale=0.25, endpoints_num_filters=16,
            block_specs=BLOCK_SPECS, init_stochastic_depth_rate=0.0,
            dropout_rate=0.0)
IMAGENET_TRAIN_IMAGES = 1281167
INAT2017_TRAIN_IMAGES = 579184


def _tiny_task(num_classes, train_data=None, eval_data=None, **kwargs):
  model_fn = functools.partial(registry.build_classifier, '49S',
                               num_classes=num_classes, **TINY)
  return ct.ClassificationTask(model_fn, train_data, eval_data, **kwargs)


def test_cross_entropy_with_label_smoothing_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 5)).astype(np.float32)
  labels = rng.integers(0, 5, 6)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  target = np.full((6, 5), 0.2 / 5)
  target[np.arange(6), labels] += 0.8
  expected = -(target * log_p).sum(-1)
  got = ct.cross_entropy(tf.constant(logits), tf.constant(labels), 5, 0.2)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  plain = ct.cross_entropy(tf.constant(logits), tf.constant(labels), 5)
  np.testing.assert_allclose(plain, -log_p[np.arange(6), labels], rtol=1e-5)


def test_evaluator_ignores_padding_and_averages_over_examples():
  evaluator = ct.ClassificationEvaluator()
  evaluator.update({'top_1_correct': [1., 0., 1.], 'top_5_correct': [1., 1., 1.],
                    'loss': [0.5, 2.0, 9.0], 'valid': [True, True, False]})
  evaluator.update({'top_1_correct': [0.], 'top_5_correct': [0.],
                    'loss': [3.5], 'valid': [True]})
  result = evaluator.result()
  assert result['num_examples'] == 3
  assert result['top_1_accuracy'] == pytest.approx(1 / 3)
  assert result['top_5_accuracy'] == pytest.approx(2 / 3)
  assert result['validation_loss'] == pytest.approx(2.0)
  evaluator.reset()
  assert evaluator.result()['num_examples'] == 0


def test_validation_step_top_k_agree_with_the_logits():
  task = _tiny_task(num_classes=7)
  model = task.build_model()
  images = tf.random.stateless_normal([6, 64, 64, 3], [1, 2])
  logits = model(images, training=False).numpy()
  labels = np.argsort(-logits, axis=-1)[np.arange(6), [0, 1, 4, 5, 6, 2]]
  out = task.validation_step(
      (images, {'label': tf.constant(labels, tf.int32),
                'valid': tf.constant([True] * 5 + [False])}), model)
  np.testing.assert_array_equal(out['top_1_correct'], [1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(out['top_5_correct'], [1, 1, 1, 0, 0, 1])
  np.testing.assert_allclose(out['loss'], ct.cross_entropy(logits, labels, 7),
                             rtol=1e-5)
  np.testing.assert_array_equal(out['valid'], [True] * 5 + [False])


@pytest.mark.parametrize('size', [96, 224])
def test_classifier_builds_at_sizes_that_are_not_multiples_of_128(size):
  # BLOCK_SPECS upsample level 7 to 6: at 96 px 1x1 -> 2x2, at 224 2x2 -> 4x4.
  model = registry.build_classifier('49S', 3, **dict(TINY, input_size=size))
  features = model.backbone(tf.zeros([1, size, size, 3]))
  assert {k: v.shape[1] for k, v in features.items()} == {
      str(l): -(-size // 2**l) for l in range(3, 8)}
  assert model(tf.zeros([2, size, size, 3])).shape == (2, 3)


def test_training_fits_a_fixed_batch_of_shapes():
  directory = tempfile.mkdtemp()
  paths = builtin_classification.generate(directory, num_train=8, num_val=8,
                                          image_size=64, num_shards=1)
  data = ct.ClassificationDataOptions(
      file_pattern=paths['train_pattern'], global_batch_size=8, seed=0,
      shuffle_buffer=1, aug_rand_hflip=False, aug_crop_area_range=(1.0, 1.0))
  task = _tiny_task(8, data)
  model = task.build_model()
  batch = next(iter(task.build_inputs(training=True)))
  np.testing.assert_array_equal(np.sort(batch[1]['label']), np.arange(8))
  optimizer = optimization.build_optimizer(
      optimization.OptimizerOptions(momentum=0.9), 0.1)
  runner = trainer.Runner(task, model, optimizer, tf.distribute.get_strategy(),
                          tf.data.Dataset.from_tensors(batch).repeat(),
                          global_batch_size=8)
  losses = [float(runner.train(tf.constant(1))['total_loss'])]
  assert losses[0] == pytest.approx(np.log(8), rel=0.2)  # starts at chance
  for _ in range(6):
    losses.append(float(runner.train(tf.constant(25))['total_loss']))
    if losses[-1] < losses[0] / 10:
      break
  assert losses[-1] < losses[0] / 10, f'losses per 25 steps: {losses}'
  logits = model(batch[0], training=True)
  np.testing.assert_array_equal(np.argmax(logits, -1), batch[1]['label'])


@pytest.mark.parametrize('path', sorted(
    glob.glob(os.path.join(config.REPO_ROOT, 'experiments',
                           'imagenet_spinenet*_tpu.gin')) +
    glob.glob(os.path.join(config.REPO_ROOT, 'experiments',
                           'inat2017_spinenet*_tpu.gin'))))
def test_recipes_are_the_papers(path):
  task, opt, trainer_options = config.load_experiment([path])
  model_id = re.search(r'spinenet(\d+)_tpu', path).group(1)
  model = gin.get_bindings('build_classifier')
  assert model['model_id'] == model_id
  assert model['input_size'] == 224
  assert model['activation'] == 'swish'
  assert model['init_stochastic_depth_rate'] == 0.2
  inat = 'inat2017' in path
  images = INAT2017_TRAIN_IMAGES if inat else IMAGENET_TRAIN_IMAGES
  assert model['num_classes'] == (5089 if inat else 1000)
  batch = task.train_data.global_batch_size
  assert batch == 4096
  assert trainer_options.train_steps * batch / images == pytest.approx(200, abs=0.1)
  assert opt.warmup_steps * batch / images == pytest.approx(5, abs=0.01)
  assert (opt.schedule, opt.learning_rate, opt.weight_decay) == ('cosine', 1.6, 1e-4)
  assert task.label_smoothing == 0.1
  assert task.train_data.tfds_name == ('i_naturalist2017' if inat else 'imagenet2012')
  assert task.eval_data.tfds_split == 'validation'
  assert trainer_options.precision == 'mixed_bfloat16'


def test_train_and_eval_from_gin_on_tfds_mock_data():
  model_dir = tempfile.mkdtemp()
  params = [
      "build_classifier.model_id = '49S'",
      *[f'build_classifier.{k} = {v!r}' for k, v in TINY.items()
        if k != 'input_size'],
      'IMAGE_SIZE = 64', 'TRAIN_BATCH_SIZE = 4', 'EVAL_BATCH_SIZE = 4',
      'RANDAUGMENT_LAYERS = 1', "TFDS_DATA_DIR = '/nonexistent'",
      'train/ClassificationDataOptions.shuffle_buffer = 4',
      'OptimizerOptions.schedule = "cosine"', 'OptimizerOptions.warmup_steps = 1',
      'OptimizerOptions.learning_rate = 0.01',
      'TrainerOptions.train_steps = 4', 'TrainerOptions.steps_per_loop = 2',
  ]
  with tfds.testing.mock_data(num_examples=6):
    result = config.train_from_config(
        ['configs/tasks/classification_imagenet.gin'], params,
        mode='train_and_eval', model_dir=model_dir, strategy='one_device')
  assert result['step'] == 4
  metrics = result['eval']
  assert metrics['num_examples'] == 6  # 2 batches of 4, the padding ignored
  assert 0 <= metrics['top_1_accuracy'] <= metrics['top_5_accuracy'] <= 1
  assert np.isfinite(metrics['validation_loss'])
  with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
    assert json.load(f)['step'] == 4
  assert tf.train.latest_checkpoint(model_dir).endswith('ckpt-4')
  with open(os.path.join(model_dir, 'operative_config.gin')) as f:
    operative = f.read()
  assert "build_classifier.model_id = '49S'" in operative
  assert 'ClassificationTask.label_smoothing = %LABEL_SMOOTHING' in operative


def test_label_mismatch_fails_before_training_with_the_fix():
  directory = tempfile.mkdtemp()
  paths = builtin_classification.generate(directory, num_train=8, num_val=8,
                                          image_size=32, num_shards=1)
  data = ct.ClassificationDataOptions(file_pattern=paths['train_pattern'],
                                      label_offset=1)  # labels 1..8
  task = _tiny_task(8, data)
  task.build_model()
  with pytest.raises(ValueError, match='label_offset = -1'):
    task.build_inputs(training=True)


@pytest.mark.slow
def test_spinenet49_classifier_matches_the_papers_params_and_flops():
  from spinenet.modeling import profile  # pylint: disable=g-import-not-at-top
  result, _ = profile.describe('49', 224, 'classification', 1000)
  # The paper counts trainable weights (batch-norm statistics excluded).
  trainable = result['params_detail']['total']['trainable']
  assert trainable == pytest.approx(22.1e6, rel=0.01)
  assert result['flops'] == pytest.approx(3.5e9, rel=0.01)


def test_exported_classifier_serves_what_evaluation_sees():
  export_lib = pytest.importorskip('spinenet.serving.export_lib')
  task = _tiny_task(5)
  model = task.build_model()
  kernel = model.head.linear.kernel  # logits far from 0, so a mismatch shows
  kernel.assign(tf.random.stateless_normal(kernel.shape, [3, 4]))
  model_dir = tempfile.mkdtemp()
  checkpoint = tf.train.Checkpoint(model=model).write(os.path.join(model_dir, 'ckpt'))
  result = export_lib.export_saved_model(
      task.build_model, os.path.join(model_dir, 'export'), checkpoint=checkpoint,
      label_map={i: f'class{i}' for i in range(5)},
      options=export_lib.ExportOptions(top_k=3))
  assert result.task == 'classification'
  served = tf.saved_model.load(result.path).signatures['serving_default']
  # The evaluation input of one lossless image, through the trained model.
  pixels = np.random.default_rng(0).integers(0, 255, (70, 90, 3), np.uint8)
  records = os.path.join(model_dir, 'eval.tfrecord')
  with tf.io.TFRecordWriter(records) as writer:
    writer.write(classification_input.build_example(
        tf.io.encode_png(pixels).numpy(), 2).SerializeToString())
  data = ct.ClassificationDataOptions(file_pattern=records, global_batch_size=1)
  images, _ = next(iter(classification_input.build_dataset(data, 64, False)))
  expected = model(images, training=False).numpy()[0]
  out = {k: v.numpy()[0] for k, v in served(tf.constant(pixels[None])).items()}
  assert sorted(out) == ['logits', 'probabilities', 'top_k_class_names',
                         'top_k_classes', 'top_k_scores']
  np.testing.assert_allclose(out['logits'], expected, rtol=1e-3, atol=1e-3)
  np.testing.assert_array_equal(out['top_k_classes'], np.argsort(-expected)[:3])
  np.testing.assert_allclose(out['top_k_scores'],
                             np.sort(out['probabilities'])[::-1][:3], rtol=1e-6)
  assert out['top_k_class_names'][0].decode() == f'class{out["top_k_classes"][0]}'
