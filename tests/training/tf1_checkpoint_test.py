"""TF1 model-zoo checkpoints: conversion, bookkeeping, refusals, parity.

Two kinds of tests:

* Bookkeeping (always run): a tiny SpineNet of ours is written as a
  name-based TF1 checkpoint under the names the converter expects (its own
  naming rule inverted), plus `global_step`, Momentum slots and moving-average
  shadows; the converter must restore the raw weights (or the shadows with
  `use_ema`), refuse unknown and mis-shaped variables by name, and read
  directories without a `checkpoint` file.
* Parity with the authors' code (needs SPINENET_TF1_REFERENCE, the folder of
  `make_tf1_reference.py`): the script builds the authors' SpineNet-49S
  RetinaNet at 128 px once per session; the converted checkpoint must give
  every output level within 1e-4 x max |TF1|, and our input normalization must
  equal the TF1 input code's.
"""
import json
import os
import subprocess
import sys

from absl import app
from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

from spinenet.cli import convert as convert_cli
from spinenet.data import preprocess
from spinenet.modeling import layers as layers_lib
from spinenet.modeling import registry
from spinenet.training import tf1_checkpoint
import tf1_names

TOLERANCE = 1e-4
SIZE = 128  # the smallest detection size the authors' code accepts
TINY = dict(filter_size_scale=0.25, endpoints_num_filters=16, min_level=3, max_level=7)


# ============================ Bookkeeping (no TF1) ============================


def _tiny_backbone(model_id='49S'):
  return registry.build_backbone(model_id, 128, **TINY,
                                 **tf1_checkpoint.tf1_build_args(model_id, 'backbone'))


def _tf1_names(backbone, mobile=False):
  return tf1_names.tf1_names(tf1_checkpoint.backbone_units(backbone, mobile))


@pytest.fixture(name='tiny', scope='module')
def _tiny():
  backbone = _tiny_backbone()
  rng = np.random.default_rng(0)
  names = _tf1_names(backbone)
  raw = {n: rng.normal(size=v.shape).astype(np.float32) for n, v in names.items()}
  return backbone, names, raw


def _convert(path, out, model, **kwargs):
  return tf1_checkpoint.convert(path, '49S', 'backbone', out, model=model, **kwargs)


def test_restores_raw_weights_and_ignores_bookkeeping(tiny, tmp_path):
  _, names, raw = tiny
  tensors = dict(raw, global_step=np.int64(1234))
  trainable = [n for n in raw if not n.endswith(('moving_mean', 'moving_variance'))]
  tensors.update({f'{n}/Momentum': raw[n] * 0 + 7.0 for n in trainable})
  tensors.update({f'{n}/ExponentialMovingAverage': raw[n] + 1.0 for n in raw})
  tf1_names.save_tf1(str(tmp_path / 'ckpt' / 'model.ckpt-1234'), tensors)

  result = _convert(str(tmp_path / 'ckpt'), str(tmp_path / 'raw'), tiny[0])
  values = {v.name: v.numpy() for v in result.model.weights}
  assert len(result.mapping) == len(raw)
  for ours, key in result.mapping:
    np.testing.assert_array_equal(values[ours + ':0'], raw[key])
  assert result.ignored == {'optimizer slots': len(trainable),
                            'ExponentialMovingAverage shadows': len(raw),
                            'step counters': 1}
  record = json.loads((tmp_path / 'raw' / 'conversion.json').read_text())
  assert record['global_step'] == 1234 and record['format'] == 'tf1'
  assert record['build_args']['fixed_padding'] is True

  ema = _convert(str(tmp_path / 'ckpt'), str(tmp_path / 'ema'), tiny[0], use_ema=True)
  values = {v.name: v.numpy() for v in ema.model.weights}
  for ours, key in ema.mapping:
    assert key.endswith('/ExponentialMovingAverage')
    base = key.rsplit('/', 1)[0]
    np.testing.assert_array_equal(values[ours + ':0'], raw[base] + 1.0)


def test_use_ema_without_shadows_is_refused(tiny, tmp_path):
  _, _, raw = tiny
  tf1_names.save_tf1(str(tmp_path / 'model.ckpt'), raw)
  with pytest.raises(tf1_checkpoint.ConversionError, match='no ExponentialMovingAverage'):
    _convert(str(tmp_path / 'model.ckpt'), str(tmp_path / 'out'), tiny[0], use_ema=True)


def test_unknown_and_misshaped_variables_are_listed_and_refused(tiny, tmp_path):
  _, names, raw = tiny
  tensors = dict(raw)
  tensors['spinenet/extra_layer/kernel'] = np.zeros([3], np.float32)
  tensors['spinenet/conv2d/bias'] = np.zeros([8], np.float32)  # the stem conv has none
  bad = 'spinenet/sub_policy3/scale_permuted_block_5/conv2d_1/kernel'
  tensors[bad] = np.zeros([3, 3, 1, 1], np.float32)
  tensors['spinenet/conv2d/kernel/Momentum_1'] = np.zeros([2], np.float32)  # no such slot
  tf1_names.save_tf1(str(tmp_path / 'model.ckpt'), tensors)
  with pytest.raises(tf1_checkpoint.ConversionError) as info:
    _convert(str(tmp_path / 'model.ckpt'), str(tmp_path / 'out'), tiny[0])
  message = str(info.value)
  assert 'unmatched checkpoint variable: spinenet/extra_layer/kernel (3,)' in message
  assert 'unmatched checkpoint variable: spinenet/conv2d/bias (8,)' in message
  assert 'shape mismatch: ' in message and f'{bad} (3, 3, 1, 1)' in message
  assert 'unmatched checkpoint variable: spinenet/conv2d/kernel/Momentum_1 (2,)' in message
  assert not (tmp_path / 'out' / 'conversion.json').exists()


def test_missing_layers_and_the_wrong_family_are_named(tiny, tmp_path):
  _, _, raw = tiny
  dropped = {n: v for n, v in raw.items() if '/sub_policy14/' not in n}
  tf1_names.save_tf1(str(tmp_path / 'a' / 'model.ckpt'), dropped)
  with pytest.raises(tf1_checkpoint.ConversionError,
                     match=r'sub_policy14/resample_with_alpha_resample_14_0/conv2d\*: 0 '
                           r'layers in the checkpoint, \d in our model'):
    _convert(str(tmp_path / 'a' / 'model.ckpt'), str(tmp_path / 'out_a'), tiny[0])
  tf1_names.save_tf1(str(tmp_path / 'b' / 'model.ckpt'),
            {'spinenet_mbconv/conv2d/kernel': np.zeros([3, 3, 3, 8], np.float32)})
  with pytest.raises(tf1_checkpoint.ConversionError, match='use --model=MB-49'):
    tf1_checkpoint.convert(str(tmp_path / 'b' / 'model.ckpt'), '49', 'retinanet',
                           str(tmp_path / 'out_b'))


def test_directory_without_checkpoint_file_takes_the_highest_step(tiny, tmp_path):
  _, _, raw = tiny
  for step in (900, 12000, 3000):
    tf1_names.save_tf1(str(tmp_path / f'model.ckpt-{step}'), raw)
  assert tf1_checkpoint.checkpoint_prefix(str(tmp_path)) == str(tmp_path / 'model.ckpt-12000')
  assert tf1_checkpoint.is_tf1_checkpoint(str(tmp_path))
  os.makedirs(tmp_path / 'empty')
  with pytest.raises(tf1_checkpoint.ConversionError, match='holds no checkpoint'):
    tf1_checkpoint.checkpoint_prefix(str(tmp_path / 'empty'))


def test_object_based_checkpoints_are_sent_to_the_model_garden_flag(tmp_path):
  prefix = tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(tmp_path / 'ckpt'))
  assert not tf1_checkpoint.is_tf1_checkpoint(prefix)
  with pytest.raises(tf1_checkpoint.ConversionError, match='--model_garden_checkpoint'):
    tf1_checkpoint.convert(prefix, '49S', 'backbone', str(tmp_path / 'out'))


def test_fixed_padding_is_symmetric_where_same_is_not():
  x = tf.random.stateless_normal([1, 8, 8, 2], seed=[1, 2])
  conv = layers_lib.FixedPaddingConv2D(3, 3, strides=2, use_bias=False)
  y = conv(x)
  expected = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), conv.kernel, 2,
                          'VALID')
  np.testing.assert_allclose(y, expected, rtol=1e-6)
  same = tf.nn.conv2d(x, conv.kernel, 2, 'SAME')  # pads 0 before, 1 after
  assert y.shape == same.shape and np.abs(y - same).max() > 1e-3


def test_cli_detects_the_format(tiny, tmp_path):
  _, _, raw = tiny
  tf1_names.save_tf1(str(tmp_path / 'model.ckpt'), dict(raw, global_step=np.int64(5)))
  flags.FLAGS.mark_as_parsed()
  # Detected as TF1 (the TF1 converter's refusal: a SpineNet backbone, not MBConv).
  with flagsaver.flagsaver(checkpoint=str(tmp_path / 'model.ckpt'), model='MB-49',
                           task='retinanet', output_dir=str(tmp_path / 'out')):
    with pytest.raises(app.UsageError, match='no `spinenet_mbconv/...` variables'):
      convert_cli.main(['spinenet-convert'])
  with flagsaver.flagsaver(checkpoint=str(tmp_path / 'missing'), model='49S',
                           output_dir=str(tmp_path / 'out')):
    with pytest.raises(app.UsageError, match='cannot read a checkpoint'):
      convert_cli.main(['spinenet-convert'])
  with flagsaver.flagsaver(checkpoint=str(tmp_path / 'model.ckpt'),
                           tf1_checkpoint=str(tmp_path / 'model.ckpt'), model='49S',
                           output_dir=str(tmp_path / 'out')):
    with pytest.raises(app.UsageError, match='exactly one of'):
      convert_cli.main(['spinenet-convert'])


# ================= Parity with the authors' code (reference) =================

_REFERENCE = os.environ.get('SPINENET_TF1_REFERENCE')
needs_reference = pytest.mark.skipif(
    not _REFERENCE, reason='SPINENET_TF1_REFERENCE is not set (the folder holding the '
    "authors' TF1 code and make_tf1_reference.py); .ci/run sets it when present.")


@pytest.fixture(name='reference_49s', scope='session')
def _reference_49s(tmp_path_factory):
  """The authors' SpineNet-49S RetinaNet at SIZE px: checkpoint + outputs."""
  out = tmp_path_factory.mktemp('tf1_ref') / 'spinenet49S_retinanet'
  cmd = [sys.executable, os.path.join(_REFERENCE, 'make_tf1_reference.py'),
         '--config', 'spinenet49S_retinanet', '--image_size', str(SIZE),
         '--output_dir', str(out)]
  done = subprocess.run(cmd, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
  return out


@needs_reference
@pytest.mark.slow
def test_converted_zoo_retinanet_matches_the_authors_code(reference_49s, tmp_path):
  ref = np.load(reference_49s / 'reference.npz')
  images = ref['input']
  # Through the CLI, as a user would, with format detection.
  flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver(checkpoint=str(reference_49s), model='spinenet-49S',
                           task='retinanet', output_dir=str(tmp_path / 'out')):
    convert_cli.main(['spinenet-convert'])
  record = json.loads((tmp_path / 'out' / 'conversion.json').read_text())
  assert record['format'] == 'tf1' and record['build_args']['num_classes'] == 91
  model = registry.build_retinanet('49S', input_size=SIZE, **{
      k: v for k, v in record['build_args'].items()})
  tf.train.Checkpoint(model=model).restore(record['checkpoint']).assert_existing_objects_matched()

  outputs = model(images, training=False)
  features = model.backbone(images, training=False)
  for level in range(3, 8):
    for ours, key in ((outputs['cls_outputs'][str(level)], f'cls_{level}'),
                      (outputs['box_outputs'][str(level)], f'box_{level}'),
                      (features[str(level)], f'backbone_{level}')):
      theirs = ref[key]
      worst = np.abs(ours.numpy() - theirs).max()
      assert worst <= TOLERANCE * np.abs(theirs).max(), (key, worst)
    anchors = np.reshape(model.anchors((SIZE, SIZE))[str(level)], [-1, 4])
    np.testing.assert_allclose(anchors, ref[f'anchors_{level}'], atol=1e-3)
  # The TF1 input code's normalization is ours.
  np.testing.assert_allclose(preprocess.normalize_image(ref['input_pixels']), images,
                             atol=1e-5)


@needs_reference
@pytest.mark.slow
def test_our_default_numerics_are_not_the_authors(reference_49s, tmp_path):
  """Without the TF1 options (padding, pooling, epsilon) the outputs move."""
  result = tf1_checkpoint.convert(str(reference_49s), '49S', 'backbone',
                                  str(tmp_path / 'out'), input_size=SIZE)
  ref = np.load(reference_49s / 'reference.npz')
  default = registry.build_backbone('49S', SIZE)
  for ours, theirs in zip(default.weights, result.model.weights):
    ours.assign(theirs)
  feature = default(ref['input'], training=False)['3'].numpy()
  theirs = ref['backbone_3']
  assert np.abs(feature - theirs).max() > 100 * TOLERANCE * np.abs(theirs).max()
