"""Mask R-CNN model: outputs of both call modes, compilation, config round trip."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import keras_objects
from spinenet.modeling import maskrcnn as maskrcnn_lib
from spinenet.modeling import profile
from spinenet.modeling import registry
from spinenet.modeling import winograd_conv

SIZE = 128
NUM_CLASSES = 5


def _tiny(**kwargs):
  return registry.build_maskrcnn(
      '49S', num_classes=NUM_CLASSES, input_size=SIZE, filter_size_scale=0.25,
      endpoints_num_filters=32, rpn_filters=32, box_filters=32, fc_dims=64,
      mask_filters=32,
      proposal_config=maskrcnn_lib.ProposalConfig(num_proposals=200, test_num_proposals=100),
      roi_sampler_config=maskrcnn_lib.ROISamplerConfig(num_sampled_rois=64,
                                                       num_sampled_masks=16),
      detection_config=maskrcnn_lib.DetectionConfig(max_detections=20), **kwargs)


@pytest.fixture(scope='module')
def model():
  return _tiny()


def _features(batch=2, seed=0):
  rng = np.random.default_rng(seed)
  info = np.array([[[SIZE, SIZE], [SIZE, SIZE], [1, 1], [0, 0]],
                   [[100, 90], [100, 90], [1, 1], [0, 0]]], np.float32)[:batch]
  gt_boxes = np.array([[10, 10, 60, 50], [70, 20, 120, 100], [-1, -1, -1, -1]], np.float32)
  masks = (rng.uniform(size=(batch, 3, 112, 112)) > 0.5).astype(np.float32)
  masks[:, 2] = 0
  return {'images': tf.constant(rng.normal(size=(batch, SIZE, SIZE, 3)), tf.float32),
          'image_info': tf.constant(info),
          'gt_boxes': tf.constant(np.tile(gt_boxes, (batch, 1, 1))),
          'gt_classes': tf.constant(np.tile([[1, 3, -1]], (batch, 1)), tf.int32),
          'gt_masks': tf.constant(masks)}


def _check_rpn(out, batch):
  for level in range(3, 8):
    h = SIZE // 2**level
    assert out['rpn_scores'][str(level)].shape == (batch, h, h, 3)
    assert out['rpn_boxes'][str(level)].shape == (batch, h, h, 12)
    assert out['rpn_scores'][str(level)].dtype == tf.float32


def test_training_outputs(model):
  out = model(_features(), training=True)
  assert sorted(out) == sorted(maskrcnn_lib.MaskRCNN.OUTPUTS['train'])
  _check_rpn(out, 2)
  expected = {'class_outputs': ((2, 64, NUM_CLASSES), tf.float32),
              'box_outputs': ((2, 64, 4 * NUM_CLASSES), tf.float32),
              'class_targets': ((2, 64), tf.int32), 'box_targets': ((2, 64, 4), tf.float32),
              'mask_outputs': ((2, 16, 28, 28), tf.float32),
              'mask_targets': ((2, 16, 28, 28), tf.float32),
              'mask_class_targets': ((2, 16), tf.int32)}
  for key, (shape, dtype) in expected.items():
    assert out[key].shape == shape and out[key].dtype == dtype, key
  cls = out['class_targets'].numpy()
  assert set(np.unique(cls)) <= {0, 1, 3} and np.all((cls > 0).sum(1) >= 2)
  mt = out['mask_targets'].numpy()
  assert mt.min() >= 0 and mt.max() <= 1
  mc = out['mask_class_targets'].numpy()
  np.testing.assert_array_equal((mc > 0).sum(1), np.minimum((cls > 0).sum(1), 16))
  # Gradients reach every head (and the backbone) from a loss on the outputs.
  with tf.GradientTape() as tape:
    out = model(_features(), training=True)
    loss = (tf.reduce_sum(out['class_outputs']) + tf.reduce_sum(out['box_outputs'])
            + tf.reduce_sum(out['mask_outputs'])
            + tf.add_n([tf.reduce_sum(v) for v in out['rpn_scores'].values()])
            + tf.add_n([tf.reduce_sum(v) for v in out['rpn_boxes'].values()]))
  grads = tape.gradient(loss, model.trainable_variables)
  missing = [v.name for v, g in zip(model.trainable_variables, grads) if g is None]
  assert not missing, missing


def test_inference_outputs(model):
  features = _features()
  features = {k: features[k] for k in ('images', 'image_info')}
  fn = tf.function(lambda f: model(f, training=False))
  out = fn(features)
  assert sorted(out) == sorted(maskrcnn_lib.MaskRCNN.OUTPUTS['inference'])
  _check_rpn(out, 2)
  assert out['detection_boxes'].shape == (2, 20, 4)
  assert out['detection_scores'].shape == (2, 20)
  assert out['detection_classes'].shape == (2, 20) and out['detection_classes'].dtype == tf.int32
  assert out['num_detections'].shape == (2,) and out['num_detections'].dtype == tf.int32
  assert out['detection_masks'].shape == (2, 20, 28, 28)
  m = out['detection_masks'].numpy()
  assert m.min() >= 0 and m.max() <= 1
  boxes = out['detection_boxes'].numpy()
  assert boxes[1, :, [0, 2]].max() <= 100 and boxes[1, :, [1, 3]].max() <= 90


def test_config_round_trip_gives_identical_outputs(model):
  clone = maskrcnn_lib.MaskRCNN.from_config(model.get_config(),
                                            keras_objects.custom_objects())
  features = _features(seed=1)
  features = {k: features[k] for k in ('images', 'image_info')}
  clone(features, training=False)
  clone.set_weights(model.get_weights())
  assert clone.roi_sampler_config == model.roi_sampler_config
  assert clone.anchor_config == model.anchor_config
  a, b = model(features, training=False), clone(features, training=False)
  for key in ('detection_boxes', 'detection_scores', 'detection_masks'):
    np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-5, atol=1e-6)
  for level in a['rpn_scores']:
    np.testing.assert_allclose(a['rpn_scores'][level], b['rpn_scores'][level], rtol=1e-5,
                               atol=1e-6)


def test_recipes_of_every_id():
  # Head widths and anchors as the authors' spinenet*_mrcnn configs set them.
  assert registry.get_maskrcnn_spec('49S').fc_dims == 512
  assert registry.get_maskrcnn_spec('190').anchor_size == 5.0
  assert registry.get_maskrcnn_spec('49').activation == 'relu'
  for model_id in registry.MODELS:
    registry.get_maskrcnn_spec(model_id)


@pytest.mark.parametrize('model_id', ['mobile-49XS', 'resnet50-fpn'])
def test_other_backbones_build_and_detect(model_id):
  m = registry.build_maskrcnn(model_id, num_classes=3, input_size=SIZE)
  out = m(registry.maskrcnn_dummy_features((SIZE, SIZE)), training=False)
  assert out['detection_masks'].shape == (1, 100, 28, 28)
  assert m.box_head.get_config()['num_filters'] == registry.get_maskrcnn_spec(
      model_id).box_filters
  assert profile.count_params(m)['total'] == sum(
      profile.count_params(getattr(m, p))['total']
      for p in ('backbone', 'rpn_head', 'box_head', 'mask_head'))


# The project's parity criterion (Model Garden, TF1). Winograd's float32 error
# is ~1e-5 of the conv activations; the box regressor's outputs are ~100x
# smaller than those (init stddev 0.001), so their error ratio reaches 2e-5.
_PARITY = 1e-4


def test_resnet_fpn_on_the_classic_p2_to_p6_pyramid():
  m = registry.build_maskrcnn('resnet50-fpn', num_classes=3, input_size=SIZE,
                              min_level=2, max_level=6, rpn_filters=32,
                              box_filters=32, fc_dims=64, mask_filters=32)
  out = m(registry.maskrcnn_dummy_features((SIZE, SIZE)), training=False)
  assert {k: tuple(v.shape) for k, v in out['rpn_scores'].items()} == {
      str(l): (1, SIZE // 2**l, SIZE // 2**l, 3) for l in range(2, 7)}
  assert out['detection_masks'].shape == (1, 100, 28, 28)
  features = _features()
  features['gt_classes'] = tf.minimum(features['gt_classes'], 2)
  train = m(features, training=True)
  assert train['mask_outputs'].shape[-2:] == (28, 28)


def test_default_winograd_heads_give_the_same_outputs_as_direct_convs():
  # The default heads run Winograd on a CPU (fused into one XLA cluster at
  # inference); direct convolutions with the same weights are the reference.
  keras.utils.set_random_seed(16)
  model = _tiny()
  direct = _tiny(head_winograd_min_size=0)
  # Batch norm statistics away from (0, 1), so that folding them is tested.
  rng = np.random.default_rng(3)
  for norm in model.box_head.conv_norms + model.mask_head.conv_norms:
    channels = norm.moving_mean.shape[0]
    norm.moving_mean.assign(rng.normal(size=channels).astype(np.float32) * 0.2)
    norm.moving_variance.assign(rng.uniform(0.5, 2.0, size=channels).astype(np.float32))
  direct.set_weights(model.get_weights())
  assert {type(c).__name__ for c in model.box_head.convs} == {'WinogradConv2D'}
  assert {type(c).__name__ for c in direct.box_head.convs} == {'Conv2D'}
  features = _features(seed=2)
  rois = tf.constant([[[10, 10, 60, 50], [0, 0, 128, 128]]] * 2, tf.float32)
  feats = direct.features(features['images'], training=False)
  roi_maps = tf.random.stateless_normal([4, 7, 7, 32], [1, 2])
  assert winograd_conv.fused_inference_stack(
      model.box_head.convs, model.box_head.conv_norms, tf.nn.relu, roi_maps) is not None
  for training in (False, True):
    for a, b in zip(direct.box_outputs(feats, rois, training=training),
                    model.box_outputs(feats, rois, training=training)):
      np.testing.assert_allclose(b, a, rtol=0, atol=_PARITY * np.abs(a).max())
  classes = tf.constant([[1, 2]] * 2)
  want = direct.mask_outputs(feats, rois, classes, training=False).numpy()
  np.testing.assert_allclose(model.mask_outputs(feats, rois, classes, training=False),
                             want, rtol=0, atol=_PARITY * np.abs(want).max())
