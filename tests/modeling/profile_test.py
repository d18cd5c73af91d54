"""Parameter and FLOP counts against hand counts of tiny models."""
import pytest
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import profile


def test_count_params_equals_a_hand_count():
  model = keras.Sequential([keras.Input([4]), keras.layers.Dense(3),
                            keras.layers.BatchNormalization()])
  # Dense: 4*3 kernel + 3 bias; batch norm: gamma, beta (trainable), moving mean, variance.
  assert profile.count_params(model) == {'total': 15 + 4 * 3, 'trainable': 15 + 2 * 3,
                                         'non_trainable': 2 * 3}


def test_count_params_of_a_frozen_layer_are_non_trainable():
  layer = keras.layers.Conv2D(5, 3, use_bias=False)
  layer.build([None, 8, 8, 2])
  layer.trainable = False
  assert profile.count_params(layer) == {'total': 3 * 3 * 2 * 5, 'trainable': 0,
                                         'non_trainable': 90}


@pytest.mark.parametrize('h, w, cin, cout, k', [(16, 16, 3, 8, 3), (12, 20, 4, 6, 1),
                                                 (8, 8, 2, 4, 5)])
def test_flops_of_one_conv_are_h_w_cin_cout_k_k(h, w, cin, cout, k):
  conv = keras.layers.Conv2D(cout, k, padding='same', use_bias=False)
  flops = profile.count_flops(conv, (1, h, w, cin))
  assert flops == h * w * cin * cout * k * k


def test_flops_of_a_strided_conv_count_output_pixels():
  conv = keras.layers.Conv2D(8, 3, strides=2, padding='same', use_bias=False)
  assert profile.count_flops(conv, (1, 16, 16, 4)) == 8 * 8 * 4 * 8 * 9


def test_flops_of_a_dense_layer_and_batch():
  dense = keras.layers.Dense(7, use_bias=False)
  assert profile.count_flops(dense, (3, 5)) == 3 * 5 * 7


def test_fused_batch_norm_counts_one_multiply_add_per_element():
  norm = keras.layers.BatchNormalization(fused=True)
  conv = keras.layers.Conv2D(4, 1, use_bias=False)
  fn = lambda x: norm(conv(x), training=False)  # noqa: E731
  assert profile.count_flops(fn, (1, 8, 8, 2)) == 8 * 8 * 2 * 4 + 8 * 8 * 4


def test_describe_refuses_an_unknown_task():
  with pytest.raises(ValueError, match="task.*'detection'"):
    profile.describe('49S', 128, task='detection')


def test_describe_splits_backbone_and_head():
  tiny = dict(block_specs=((3, 'bottleneck', (0, 1), True), (4, 'residual', (0, 2), True)),
              max_level=4, endpoints_num_filters=8, filter_size_scale=0.125)
  result, model = profile.describe('spinenet-49s', 64, task='classification',
                                   num_classes=7, **tiny)
  assert result['model'] == '49S' and result['num_classes'] == 7
  detail = result['params_detail']
  assert detail['backbone']['total'] + detail['head']['total'] == result['params']
  assert result['params'] == profile.count_params(model)['total']
  # The head is dropout + a linear layer: width * classes + classes weights.
  width = model.head.linear.kernel.shape[0]
  assert detail['head']['total'] == width * 7 + 7
  flops = result['flops_detail']
  assert flops['backbone'] + flops['head'] == flops['total'] == result['flops']
  assert flops['head'] > width * 7  # the pooling of every level, then the linear layer


def test_describe_counts_direct_convolutions_of_winograd_heads():
  # Mask R-CNN's heads run Winograd on a CPU by default; FLOPs are the
  # architecture's (direct convolutions), as the zoos count them.
  small = dict(filter_size_scale=0.25, endpoints_num_filters=32, rpn_filters=32,
               box_filters=32, fc_dims=64, mask_filters=32)
  default, model = profile.describe('49S', 128, 'maskrcnn', num_classes=5, **small)
  direct, _ = profile.describe('49S', 128, 'maskrcnn', num_classes=5,
                               head_winograd_min_size=0, **small)
  assert default['flops_detail'] == direct['flops_detail']
  assert {type(c).__name__ for c in model.box_head.convs} == {'WinogradConv2D'}
  # The box head's four 3x3 convs alone: 100 test proposals x 7 x 7 x 9 x 32 x 32
  # multiply-adds each, all inside the second stage's count.
  assert default['flops_detail']['second_stage'] > 4 * 100 * 49 * 9 * 32 * 32
