"""RetinaNet models: outputs, inference path, published sizes."""
import numpy as np
import pytest
import tensorflow as tf

from spinenet.modeling import profile
from spinenet.modeling import registry
from spinenet.modeling import retinanet as retinanet_lib

SIZE = 128

# Total parameters (every weight, batch-norm moving statistics included) of
# tf-models-official 2.20.0's RetinaNet for each id: 91 classes, 9 anchors per
# location, the recipe's head (the README's Models table lists the same counts).
MODEL_GARDEN_PARAMS = {
    '49S': 11_333_318, '49': 28_652_567, '96': 43_118_103, '143': 67_146_263,
    '190': 163_970_583, 'mobile-49': 2_386_603, 'mobile-49S': 1_063_047,
    'mobile-49XS': 901_575,
}


@pytest.fixture(scope='module')
def small_retinanet():
  return registry.build_retinanet('49S', num_classes=6, input_size=SIZE,
                                  endpoints_num_filters=32, head_filters=32)


def test_raw_outputs_have_one_entry_per_level_and_anchor(small_retinanet):
  out = small_retinanet(tf.random.normal([2, SIZE, SIZE, 3]), training=False)
  for level in range(3, 8):
    h = SIZE // 2**level
    assert out['cls_outputs'][str(level)].shape == (2, h, h, 9 * 6)
    assert out['box_outputs'][str(level)].shape == (2, h, h, 9 * 4)


def test_detect_returns_valid_sorted_clipped_boxes(small_retinanet):
  # Push some logits up so that there are many candidates to sort and clip.
  small_retinanet.head.classifier.bias.assign(
      tf.random.uniform(small_retinanet.head.classifier.bias.shape, -3.0, 2.0, seed=1))
  small_retinanet.head.box_regressor.bias.assign(
      tf.random.uniform(small_retinanet.head.box_regressor.bias.shape, -1.0, 1.5, seed=2))
  image_shape = tf.constant([[SIZE, SIZE], [100.0, 70.0]])
  det = small_retinanet.detect(tf.random.normal([2, SIZE, SIZE, 3]), image_shape)
  assert det['detection_boxes'].shape == (2, 100, 4)
  for i, (h, w) in enumerate(image_shape.numpy()):
    n = int(det['num_detections'][i])
    assert n > 0
    boxes = det['detection_boxes'][i, :n].numpy()
    scores = det['detection_scores'][i, :n].numpy()
    classes = det['detection_classes'][i, :n].numpy()
    assert np.all(np.diff(scores) <= 0), 'scores must be sorted, descending'
    assert np.all(scores >= 0.05)
    assert np.all((classes >= 1) & (classes < 6)), 'background is never detected'
    assert np.all(boxes[:, 0] <= boxes[:, 2]) and np.all(boxes[:, 1] <= boxes[:, 3])
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= h and boxes[:, [1, 3]].max() <= w
    assert not np.any(det['detection_boxes'][i, n:]) and not np.any(det['detection_scores'][i, n:])
  # The detection path runs inside one tf.function with a static image size.
  fn = tf.function(lambda x: small_retinanet.detect(x))
  assert fn(tf.zeros([1, SIZE, SIZE, 3]))['detection_boxes'].shape == (1, 100, 4)


def test_detection_options_are_honoured():
  model = registry.build_retinanet(
      'mobile-49XS', num_classes=3, input_size=SIZE,
      detection_config=retinanet_lib.DetectionConfig(score_threshold=0.0,
                                                     max_detections=7))
  det = model.detect(tf.random.normal([1, SIZE, SIZE, 3]))
  assert det['detection_boxes'].shape == (1, 7, 4)
  assert int(det['num_detections'][0]) == 7


def test_resnet_fpn_baseline_builds_p3_to_p7():
  model = registry.build_retinanet('resnet50-fpn', num_classes=91, input_size=SIZE)
  out = model(tf.zeros([1, SIZE, SIZE, 3]))
  assert sorted(out['cls_outputs']) == ['3', '4', '5', '6', '7']
  # ResNet-50-FPN RetinaNet: the paper reports 34.0M parameters.
  assert abs(profile.count_params(model)['total'] / 34.0e6 - 1) < 0.01


@pytest.mark.parametrize('model_id', ['49S', '49', 'mobile-49', 'mobile-49S', 'mobile-49XS'])
def test_params_equal_the_model_garden_to_the_parameter(model_id):
  model = registry.build_retinanet(model_id, num_classes=91, input_size=SIZE)
  assert profile.count_params(model)['total'] == MODEL_GARDEN_PARAMS[model_id]


@pytest.mark.slow
@pytest.mark.parametrize('model_id', ['96', '143', '190'])
def test_params_of_large_ids_equal_the_model_garden(model_id):
  model = registry.build_retinanet(model_id, num_classes=91, input_size=SIZE)
  assert profile.count_params(model)['total'] == MODEL_GARDEN_PARAMS[model_id]


@pytest.mark.slow
def test_flops_match_the_paper_and_the_model_garden():
  # Mobile SpineNet-49 at 384: Model Garden 1.05B (1,048,383,080 MAdds measured
  # with its own build), paper 1.0B.
  result, _ = profile.describe('mobile-49', 384)
  assert abs(result['flops'] / 1_048_383_080 - 1) < 0.005
  assert abs(result['flops'] / 1.0e9 - 1) < 0.05  # the paper rounds to 0.1B
  assert result['params'] == MODEL_GARDEN_PARAMS['mobile-49']
  detail = result['params_detail']
  assert detail['backbone']['total'] + detail['head']['total'] == result['params']
