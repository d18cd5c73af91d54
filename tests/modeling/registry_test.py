"""Model ids: their defaults reach the built models, overrides win, errors name the ids.

Built on a two-block spec at 64 px with small widths, so the recipe options of
each id (repeats, resample alpha, activation, head, anchors) are checked
without building full-size networks (their parameter counts: retinanet_test).
"""
import pytest
import tensorflow as tf

from spinenet.modeling import block_specs as bs
from spinenet.modeling import heads
from spinenet.modeling import registry
from spinenet.modeling import resnet_fpn

SIZE = 64
_TINY = dict(block_specs=((3, 'bottleneck', (0, 1), True), (4, 'residual', (0, 2), True)),
             max_level=4, endpoints_num_filters=8, filter_size_scale=0.125)
_TINY_MOBILE = dict(
    block_specs=((3, 'mbconv', (0, 1), True), (4, 'mbconv', (0, 2), True)),
    max_level=4, endpoints_num_filters=8, filter_size_scale=0.25)


def _blocks(model):
  return [l for l in model.layers if l.name.startswith('block_')]


def test_list_models_and_resolve():
  assert registry.list_models() == list(registry.MODELS)
  assert registry.list_models('mobile-*') == ['mobile-49', 'mobile-49S', 'mobile-49XS']
  assert registry.list_models('resnet*') == ['resnet50-fpn', 'resnet101-fpn',
                                             'resnet152-fpn']
  assert set(registry.SPINENET_IDS) == {
      m for m, s in registry.MODELS.items() if s.family in ('spinenet', 'mobile')}
  assert registry.resolve('spinenet-49s') == '49S'
  assert registry.resolve('SpineNet_190') == '190'
  assert registry.resolve(' Mobile_49xs ') == 'mobile-49XS'
  assert registry.get_spec('spinenet49') is registry.MODELS['49']


def test_unknown_ids_and_arguments_are_named():
  with pytest.raises(ValueError, match="Unknown model id '50'") as info:
    registry.build_backbone('50')
  for model_id in registry.MODELS:
    assert repr(model_id) in str(info.value)
  with pytest.raises(TypeError, match=r"Unknown argument\(s\) \['widht_scale'\]"):
    registry.build_backbone('49', 128, widht_scale=2.0)


def test_documented_defaults_of_the_table():
  # README's model table: input sizes; the recipes' heads and anchors.
  sizes = {'49S': 640, '49': 640, '96': 1024, '143': 1280, '190': 1280,
           'mobile-49': 384, 'mobile-49S': 384, 'mobile-49XS': 256, 'resnet50-fpn': 640}
  assert {m: registry.get_spec(m).input_size for m in sizes} == sizes
  assert {m for m, s in registry.MODELS.items() if s.anchor_size == 4.0} == {'143', '190'}
  assert {m for m, s in registry.MODELS.items() if s.separable_head} == {
      'mobile-49', 'mobile-49S', 'mobile-49XS', 'MB-49'}
  assert registry.get_spec('mobile-49').block_specs == bs.MOBILE_SPINENET_49


@pytest.mark.parametrize('model_id, repeats, activation', [
    ('49', 1, 'swish'), ('96', 2, 'swish'), ('143', 3, 'swish')])
def test_id_defaults_reach_the_backbone(model_id, repeats, activation):
  model = registry.build_backbone(model_id, SIZE, **_TINY)
  spec = registry.get_spec(model_id)
  blocks = _blocks(model)
  assert [len(b.group.blocks) for b in blocks] == [repeats, repeats]
  assert all(b.group.options.activation == activation for b in blocks)
  # Block 1 (level 4) takes block 0 (a bottleneck of 64 * 0.125 = 8 filters) as
  # parent a; its resample reduces to int(8 * alpha) channels.
  assert blocks[1].resample_a.reduced_filters == int(8 * spec.resample_alpha)
  # Default stochastic depth 0.2, linear in the block index.
  rates = [b.group.blocks[0].stochastic_depth_rate for b in blocks]
  assert rates == pytest.approx([0.1, 0.2])


def test_overrides_reach_the_backbone():
  model = registry.build_backbone('49', SIZE, activation='relu', norm_momentum=0.9,
                                  init_stochastic_depth_rate=0.0, resample_alpha=0.25,
                                  block_repeats=2, **_TINY)
  blocks = _blocks(model)
  assert all(b.group.options.activation == 'relu' for b in blocks)
  assert all(b.group.options.norm_momentum == 0.9 for b in blocks)
  assert [len(b.group.blocks) for b in blocks] == [2, 2]
  assert blocks[1].resample_a.reduced_filters == int(8 * 0.25)
  assert all(b.group.blocks[0].stochastic_depth_rate == 0.0 for b in blocks)
  out = model(tf.zeros([1, SIZE, SIZE, 3]))
  assert {k: tuple(v.shape) for k, v in out.items()} == {'3': (1, 8, 8, 8),
                                                         '4': (1, 4, 4, 8)}


def test_mobile_defaults_reach_the_blocks():
  model = registry.build_backbone('mobile-49XS', SIZE, **_TINY_MOBILE)
  for block in _blocks(model):
    mbconv = block.group.blocks[0]
    assert mbconv.se_ratio == 0.2 and mbconv.options.activation == 'swish'
    assert block.resample_a.mobile
  model = registry.build_backbone('mobile-49S', SIZE, **_TINY_MOBILE)
  assert _blocks(model)[0].group.blocks[0].options.activation == 'hard_swish'


def test_retinanet_head_and_anchor_defaults_and_overrides():
  model = registry.build_retinanet('143', num_classes=4, input_size=SIZE, **_TINY)
  assert model.anchor_config.anchor_size == 4.0 and model.anchor_config.num_anchors == 9
  head_config = model.head.get_config()
  assert (head_config['num_convs'], head_config['num_filters']) == (4, 256)
  assert (head_config['min_level'], head_config['max_level']) == (3, 4)
  assert not head_config['use_separable_conv']
  model = registry.build_retinanet('143', num_classes=4, input_size=SIZE, head_convs=1,
                                   head_filters=8, separable_head=True, anchor_size=2.0,
                                   num_scales=1, aspect_ratios=(1.0,),
                                   norm_momentum=0.8, **_TINY)
  head_config = model.head.get_config()
  assert (head_config['num_convs'], head_config['num_filters']) == (1, 8)
  assert head_config['use_separable_conv'] and head_config['norm_momentum'] == 0.8
  assert head_config['activation'] == 'swish'
  assert model.anchor_config.anchor_size == 2.0 and model.anchor_config.num_anchors == 1
  out = model(tf.zeros([1, SIZE, SIZE, 3]), training=False)
  assert out['cls_outputs']['4'].shape == (1, 4, 4, 1 * 4)


def test_mobile_retinanet_has_a_separable_head():
  model = registry.build_retinanet('mobile-49XS', num_classes=3, input_size=SIZE,
                                   **_TINY_MOBILE)
  config = model.head.get_config()
  assert config['use_separable_conv'] and config['num_filters'] == 24
  assert config['activation'] == 'swish'


def test_classifier_builder_passes_head_options():
  model = registry.build_classifier('49', num_classes=7, input_size=SIZE, dropout_rate=0.3,
                                    fusion='top', **_TINY)
  assert isinstance(model.head, heads.ClassificationHead)
  assert (model.head.num_classes, model.head.dropout_rate, model.head.fusion) == (
      7, 0.3, 'top')
  assert sorted(model.backbone.output) == ['3', '4']


def test_resnet_fpn_ids_take_their_depth():
  for model_id, depth in (('resnet50-fpn', 50), ('resnet101-fpn', 101),
                          ('resnet152-fpn', 152)):
    assert registry.get_spec(model_id).resnet_depth == depth
    assert depth in resnet_fpn.RESNET_STAGES
  model = registry.build_backbone('resnet50-fpn', 128, min_level=5, max_level=6)
  assert sorted(model.output) == ['5', '6']
  assert model.get_layer('c5_block_0').options.activation == 'relu'
