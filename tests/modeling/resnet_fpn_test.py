"""ResNet-FPN baseline: pyramid levels, shapes, widths, parameter count, errors."""
import pytest
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import profile
from spinenet.modeling import resnet_fpn

SIZE, F = 128, 16  # input sizes are multiples of 2**max_level
# torchvision's resnet50 has 25,557,032 trainable parameters, of which its
# 1000-way classifier is 2048 * 1000 + 1000; the trunk (no conv biases, batch
# norm gamma and beta) is the rest.
RESNET50_TRUNK_TRAINABLE = 25_557_032 - (2048 * 1000 + 1000)


@pytest.fixture(scope='module')
def resnet50_fpn():
  return resnet_fpn.build_resnet_fpn(50, input_shape=(SIZE, SIZE, 3), fpn_filters=F)


def test_levels_shapes_and_widths(resnet50_fpn):
  feats = resnet50_fpn(tf.random.normal([2, SIZE, SIZE, 3]), training=False)
  assert sorted(feats) == ['3', '4', '5', '6', '7']
  for level, f in feats.items():
    size = SIZE // 2**int(level)
    assert f.shape == (2, size, size, F)


def test_stage_depths_and_c5_width(resnet50_fpn):
  for level, repeats in zip(range(2, 6), resnet_fpn.RESNET_STAGES[50]):
    names = [l.name for l in resnet50_fpn.layers if l.name.startswith(f'c{level}_block_')]
    assert len(names) == repeats
  assert resnet50_fpn.get_layer('c5_block_2').output.shape[-1] == 2048


def test_trunk_and_fpn_parameters_equal_a_hand_count(resnet50_fpn):
  trunk = keras.Model(resnet50_fpn.input, resnet50_fpn.get_layer('c5_block_2').output)
  assert profile.count_params(trunk)['trainable'] == RESNET50_TRUNK_TRAINABLE
  fpn = ((512 + 1024 + 2048) * F + 3 * F  # 1x1 laterals on C3..C5
         + 5 * (9 * F * F + F)            # 3x3 outputs P3..P5, stride-2 P6 and P7
         + 5 * 2 * F)                     # one norm per level (gamma, beta)
  total = profile.count_params(resnet50_fpn)['trainable']
  assert total - RESNET50_TRUNK_TRAINABLE == fpn


def test_fewer_levels():
  model = resnet_fpn.build_resnet_fpn(50, input_shape=(SIZE, SIZE, 3), min_level=4,
                                      max_level=5, fpn_filters=8)
  feats = model(tf.zeros([1, SIZE, SIZE, 3]), training=False)
  assert {k: tuple(v.shape) for k, v in feats.items()} == {
      '4': (1, 8, 8, 8), '5': (1, 4, 4, 8)}
  assert not any(l.name.startswith(('fpn_output_6', 'fpn_lateral_3'))
                 for l in model.layers)


def test_p2_for_the_classic_mask_rcnn_pyramid():
  # P2..P6: P2 from C2 by a lateral and the top-down path, P6 from P5.
  model = resnet_fpn.build_resnet_fpn(50, input_shape=(SIZE, SIZE, 3), min_level=2,
                                      max_level=6, fpn_filters=8)
  feats = model(tf.random.stateless_normal([1, SIZE, SIZE, 3], [1, 2]), training=False)
  assert {k: tuple(v.shape) for k, v in feats.items()} == {
      str(l): (1, SIZE // 2**l, SIZE // 2**l, 8) for l in range(2, 7)}
  assert model.get_layer('fpn_lateral_2').input.shape[-1] == 256  # C2's width
  assert model.get_layer('fpn_merge_2') is not None


def test_bad_depth_and_levels_are_named():
  with pytest.raises(ValueError, match=r'depth.*\[50, 101, 152\].*depth=34'):
    resnet_fpn.build_resnet_fpn(34)
  with pytest.raises(ValueError, match='min_level=1, max_level=7'):
    resnet_fpn.build_resnet_fpn(50, min_level=1)
  with pytest.raises(ValueError, match='min_level=3, max_level=8'):
    resnet_fpn.build_resnet_fpn(50, max_level=8)
