"""Every Keras layer and model of spinenet.modeling rebuilds from its config.

Per class: `from_config(get_config())` (through JSON) has the same config.
Whole models: a backbone, a RetinaNet and a classifier rebuilt from config,
given the original's weights, have the same variables and outputs.
"""
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import batch_norm
from spinenet.modeling import block_specs as bs
from spinenet.modeling import classifier
from spinenet.modeling import heads
from spinenet.modeling import keras_objects
from spinenet.modeling import layers
from spinenet.modeling import maskrcnn
from spinenet.modeling import maskrcnn_heads
from spinenet.modeling import registry
from spinenet.modeling import retinanet
from spinenet.modeling import spinenet as sn
from spinenet.modeling import winograd_conv

SIZE = 128
_OPTIONS = layers.BlockOptions(
    activation='swish', norm_momentum=0.9, norm_epsilon=1e-4, use_sync_bn=True,
    kernel_initializer=keras.initializers.HeNormal(),
    kernel_regularizer=keras.regularizers.L2(4e-5), winograd_min_size=8)
_TINY_SPECS = ((3, 'bottleneck', (0, 1), True), (4, 'residual', (0, 2), True))


def _tiny_backbone():
  return sn.build_spinenet(_TINY_SPECS, input_shape=(64, 64, 3), max_level=4,
                           endpoints_num_filters=8, filter_size_scale=0.125)


def _resample():
  return sn.Resample(8, 16, -2, options=_OPTIONS, target_size=(5, 5), rule='tf1',
                     name='resample_3')


def _group():
  return sn.BlockGroup('mbconv', 8, repeats=2, strides=2, se_ratio=0.25,
                       expand_ratio=3, stochastic_depth_rate=0.1, options=_OPTIONS,
                       mbconv_se_activation='swish', mbconv_se_gating='sigmoid',
                       name='group')


# One instance of every class, with arguments away from their defaults.
EXAMPLES = {
    'BatchNormalization': lambda: batch_norm.BatchNormalization(
        momentum=0.9, epsilon=1e-4, synchronized=True, name='norm'),
    'StochasticDepth': lambda: layers.StochasticDepth(0.3),
    'SqueezeExcite': lambda: layers.SqueezeExcite(
        4, activation='swish', gating='hard_sigmoid', kernel_initializer='he_normal',
        kernel_regularizer=keras.regularizers.L2(1e-4)),
    'ResidualBlock': lambda: layers.ResidualBlock(
        8, strides=2, use_projection=True, se_ratio=0.25, options=_OPTIONS),
    'BottleneckBlock': lambda: layers.BottleneckBlock(
        8, use_projection=True, stochastic_depth_rate=0.2, options=_OPTIONS),
    'MBConvBlock': lambda: layers.MBConvBlock(
        8, expand_ratio=4, se_ratio=0.2, se_gating='sigmoid', se_activation='swish',
        options=_OPTIONS),
    'FixedPaddingConv2D': lambda: layers.FixedPaddingConv2D(
        8, 3, strides=2, use_bias=False, kernel_regularizer=keras.regularizers.L2(1e-4)),
    'FixedPaddingDepthwiseConv2D': lambda: layers.FixedPaddingDepthwiseConv2D(
        3, strides=2, use_bias=False),
    'ConvNormAct': lambda: sn.ConvNormAct(8, 3, 2, activation=False, options=_OPTIONS),
    'Resample': _resample,
    'BlockGroup': _group,
    'ScalePermutedBlock': lambda: sn.ScalePermutedBlock(
        _resample(), sn.Resample(8, 32, 1, options=_OPTIONS, name='resample_1'),
        _group(), _OPTIONS, name='block_4'),
    'RetinaNetHead': lambda: heads.RetinaNetHead(
        3, 5, 4, 6, num_convs=2, num_filters=8, activation='swish', use_sync_bn=True,
        norm_momentum=0.9, kernel_regularizer=keras.regularizers.L2(1e-4),
        winograd_min_size=16, name='retinanet_head'),
    'ClassificationHead': lambda: heads.ClassificationHead(
        10, dropout_rate=0.3, fusion='top', kernel_regularizer=keras.regularizers.L2(1e-4)),
    'WinogradConv2D': lambda: winograd_conv.WinogradConv2D(
        8, min_size=12, use_bias=False, kernel_regularizer=keras.regularizers.L2(1e-4)),
    'RetinaNet': lambda: retinanet.RetinaNet(
        _tiny_backbone(), heads.RetinaNetHead(3, 4, 3, 2, num_convs=1, num_filters=8),
        min_level=3, max_level=4,
        anchor_config=retinanet.AnchorConfig(2, (0.5, 2.0), 4.0),
        detection_config=retinanet.DetectionConfig(0.1, 100, 0.6, 10)),
    'Classifier': lambda: classifier.Classifier(
        _tiny_backbone(), heads.ClassificationHead(3), name='classifier'),
    'RPNHead': lambda: maskrcnn_heads.RPNHead(
        3, 4, 2, num_convs=2, num_filters=8, activation='swish', use_sync_bn=True,
        kernel_regularizer=keras.regularizers.L2(1e-4), name='rpn_head'),
    'BoxHead': lambda: maskrcnn_heads.BoxHead(
        4, num_convs=1, num_filters=8, fc_dims=16, norm_epsilon=1e-4, name='box_head'),
    'MaskHead': lambda: maskrcnn_heads.MaskHead(
        4, num_convs=1, num_filters=8, upsample_factor=2, norm_momentum=0.9,
        name='mask_head'),
    'MaskRCNN': lambda: maskrcnn.MaskRCNN(
        _tiny_backbone(), maskrcnn_heads.RPNHead(3, 4, 2, num_filters=8),
        maskrcnn_heads.BoxHead(3, num_convs=1, num_filters=8, fc_dims=16),
        maskrcnn_heads.MaskHead(3, num_convs=1, num_filters=8), min_level=3, max_level=4,
        anchor_config=maskrcnn.AnchorConfig(1, (0.5, 2.0), 4.0),
        proposal_config=maskrcnn.ProposalConfig(num_proposals=50, test_num_proposals=40),
        roi_sampler_config=maskrcnn.ROISamplerConfig(num_sampled_rois=32,
                                                     num_sampled_masks=8),
        detection_config=maskrcnn.DetectionConfig(max_detections=10,
                                                  roi_align_method='gather')),
}


def _normalized(config):
  """The config as JSON reads it back (tuples become lists)."""
  return json.loads(json.dumps(config))


def test_every_layer_class_has_an_example():
  # That custom_objects() lists every class: keras_objects_test.
  assert sorted(keras_objects.custom_objects()) == sorted(EXAMPLES)


@pytest.mark.parametrize('name', sorted(EXAMPLES))
def test_from_config_gives_the_same_config(name):
  layer = EXAMPLES[name]()
  config = _normalized(layer.get_config())
  cls = keras_objects.custom_objects()[name]
  if issubclass(cls, keras.Model):
    clone = cls.from_config(config, custom_objects=keras_objects.custom_objects())
  else:
    clone = cls.from_config(config)
  assert type(clone) is cls
  assert _normalized(clone.get_config()) == config


def test_regularizers_survive_the_config():
  for name in ('SqueezeExcite', 'ClassificationHead', 'RetinaNetHead'):
    config = EXAMPLES[name]().get_config()
    clone = keras_objects.custom_objects()[name].from_config(_normalized(config))
    assert clone.get_config()['kernel_regularizer']['config'] == pytest.approx({'l2': 1e-4})


def test_blocks_rebuilt_from_config_initialize_each_conv_on_its_own():
  # An initializer instance in the options must not give every conv the same
  # initial kernel (Keras repeats an unseeded instance's values).
  block = layers.ResidualBlock.from_config(
      _normalized(EXAMPLES['ResidualBlock']().get_config()))
  block(tf.zeros([1, 8, 8, 8]))
  assert block.conv1.kernel.shape == block.conv2.kernel.shape
  assert not np.array_equal(block.conv1.kernel.numpy(), block.conv2.kernel.numpy())


def _same_weights_and_outputs(model, clone, inputs, build=None):
  """Copies `model`'s weights into `clone`; asserts equal variables and outputs."""
  if build:
    clone.build(build)
  clone(inputs, training=False)
  assert [(w.name, w.shape) for w in clone.weights] == [
      (w.name, w.shape) for w in model.weights]
  clone.set_weights(model.get_weights())
  expected = tf.nest.flatten(model(inputs, training=False))
  actual = tf.nest.flatten(clone(inputs, training=False))
  assert len(actual) == len(expected)
  for a, e in zip(actual, expected):
    np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-6, atol=1e-6)
  assert len(clone.losses) == len(model.losses)


@pytest.mark.parametrize('model_id, size, overrides', [
    # 160 px is not a multiple of 128: upsampled maps are cropped (Resample's
    # target_size); an L2 regularizer and stochastic depth are in the config.
    ('49S', 160, dict(endpoints_num_filters=32,
                      kernel_regularizer=keras.regularizers.L2(4e-5))),
    ('mobile-49XS', SIZE, {}),
    ('resnet50-fpn', SIZE, {}),
])
def test_backbone_rebuilt_from_config_gives_the_same_outputs(model_id, size, overrides):
  model = registry.build_backbone(model_id, size, **overrides)
  config = _normalized(model.get_config())
  clone = keras.Model.from_config(config, custom_objects=keras_objects.custom_objects())
  _same_weights_and_outputs(model, clone, tf.random.normal([2, size, size, 3]))
  assert _normalized(clone.get_config()) == config


def test_spinenet_with_winograd_convs_rebuilds_them():
  model = sn.build_spinenet(bs.SPINENET_49, input_shape=(SIZE, SIZE, 3),
                            filter_size_scale=0.25, endpoints_num_filters=16,
                            winograd_min_size=16)
  clone = keras.Model.from_config(_normalized(model.get_config()),
                                  custom_objects=keras_objects.custom_objects())
  count = lambda m: sum(isinstance(l, winograd_conv.WinogradConv2D)  # noqa: E731
                        for l in m.submodules)
  assert count(clone) == count(model) > 0
  _same_weights_and_outputs(model, clone, tf.random.normal([1, SIZE, SIZE, 3]))


def test_retinanet_rebuilt_from_config_gives_the_same_outputs():
  model = registry.build_retinanet(
      '49S', num_classes=5, input_size=SIZE, endpoints_num_filters=32,
      head_filters=32, kernel_regularizer=keras.regularizers.L2(4e-5),
      detection_config=retinanet.DetectionConfig(score_threshold=0.2))
  config = _normalized(model.get_config())
  clone = retinanet.RetinaNet.from_config(
      config, custom_objects=keras_objects.custom_objects())
  assert clone.anchor_config == model.anchor_config
  assert clone.detection_config == model.detection_config
  images = tf.random.normal([2, SIZE, SIZE, 3])
  _same_weights_and_outputs(model, clone, images, build=(None, SIZE, SIZE, 3))
  expected, actual = model.detect(images), clone.detect(images)
  for key in expected:
    np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5, atol=1e-5)


def test_classifier_rebuilt_from_config_gives_the_same_outputs():
  model = registry.build_classifier('mobile-49XS', num_classes=7, input_size=SIZE,
                                    fusion='top')
  clone = classifier.Classifier.from_config(
      _normalized(model.get_config()), custom_objects=keras_objects.custom_objects())
  _same_weights_and_outputs(model, clone, tf.random.normal([2, SIZE, SIZE, 3]))
