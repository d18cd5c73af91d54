"""The SpineNet builder: any list of block specs -> a Keras functional model.

One builder serves SpineNet (bottleneck / residual blocks), Mobile SpineNet
(MBConv blocks) and the architecture search. The network is:

  stem -> scale-permuted blocks (each merges two resampled parents) ->
  one 1x1 conv + norm + activation per endpoint level.

Example:
  >>> model = build_spinenet(SPINENET_49, input_shape=(256, 256, 3))
  >>> feats = model(tf.zeros([1, 256, 256, 3]))
  >>> feats['3'].shape
  TensorShape([1, 32, 32, 256])
"""
import dataclasses
import math
import numbers
from typing import Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import block_specs as specs_lib
from spinenet.modeling import layers as layers_lib

# Width of the stem's first conv (not mobile); block widths: `block_specs`.
STEM_FILTERS = 64


class ConvNormAct(keras.layers.Layer):
  """Conv (no bias) + batch norm + optional activation.

  Args:
    filters: int. Output width.
    kernel_size: int.
    strides: int. Defaults to 1.
    activation: bool. Apply `options.activation` after the norm. Defaults to True.
    depthwise: bool. Depthwise conv (width unchanged; `filters` ignored).
    options: `layers.BlockOptions`.
  """

  def __init__(self, filters, kernel_size, strides=1, activation=True,
               depthwise=False, options=None, **kwargs):
    super().__init__(**kwargs)
    if isinstance(options, dict):
      options = layers_lib.BlockOptions.from_dict(options)
    self.options = options or layers_lib.BlockOptions()
    self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
    self.activation, self.depthwise = activation, depthwise
    if depthwise:
      self.conv = self.options.depthwise_conv(kernel_size, strides, name='conv')
    else:
      self.conv = self.options.conv(filters, kernel_size, strides, name='conv')
    self.norm = self.options.norm('norm')
    self._act = self.options.act() if activation else None

  @tf.autograph.experimental.do_not_convert
  def call(self, x, training=None):
    x = self.norm(self.conv(x), training=training)
    return self._act(x) if self._act is not None else x

  def get_config(self):
    return dict(super().get_config(), filters=self.filters,
                kernel_size=self.kernel_size, strides=self.strides,
                activation=self.activation, depthwise=self.depthwise,
                options=self.options.to_dict())


class Resample(keras.layers.Layer):
  """Cross-scale connection from a parent block to a target block.

  SpineNet: 1x1 conv to `reduced_filters` (+norm+act); going down, a 3x3
  stride-2 conv (+norm+act) then max pooling; going up, nearest
  upsampling; then a 1x1 conv to `out_filters` and norm (no activation).
  How the pooling and upsampling reach the target size is `rule`:
  'stacked' (default, the Model Garden): one 3x3 stride-2 pool per further
  halving; upsampling by `2**-level_shift`, cropped to `target_size`.
  'tf1' (the authors' TF1 code, `resample_with_alpha`): one max pool, 3x3
  if the parent is at most 4x wider than the target, else 5x5, with stride
  `parent_width // target_width // 2` (2 if the widths do not divide); then,
  and for upsampling by a non-integer factor, TF1's nearest resize
  (`tf.compat.v1.image.resize_nearest_neighbor`) to the target width and
  `int(target_width / parent_width * parent_height)` rows. Both rules agree
  wherever a pool covers one halving (level shifts up to 2) and the sizes
  divide; they differ for shifts of 3 or more (one 5x5 stride-4 pool vs two
  3x3 stride-2 pools) and at sizes that do not divide (e.g. 224 px).
  Mobile SpineNet (`mobile=True`): no first 1x1; one 3x3 stride-2 depthwise
  conv (+norm+act) per halving; nearest upsampling; 1x1 conv + norm.

  Args:
    reduced_filters: int. Width after the first 1x1 (unused if mobile).
    out_filters: int. Input width of the target block.
    level_shift: int. Target level minus parent level.
    mobile: bool.
    options: `layers.BlockOptions`.
    target_size: optional `(height, width)` of the target block. Going up,
      the upsampled map is cropped to it: for inputs that are not multiples
      of `2**level` (e.g. 224 px) a level is `ceil(size / 2**level)` pixels,
      as stride-2 'same' layers give, so `2**shift` times the parent can be
      one pixel too many. None: no crop (rule 'tf1': sizes that divide).
    rule: 'stacked' or 'tf1' (above; mobile resampling has one rule).
  """

  RULES = ('stacked', 'tf1')

  def __init__(self, reduced_filters, out_filters, level_shift, mobile=False,
               options=None, target_size=None, rule='stacked', **kwargs):
    super().__init__(**kwargs)
    if isinstance(options, dict):
      options = layers_lib.BlockOptions.from_dict(options)
    o = self.options = options or layers_lib.BlockOptions()
    self.reduced_filters, self.out_filters = reduced_filters, out_filters
    self.level_shift, self.mobile = level_shift, mobile
    self.target_size = tuple(target_size) if target_size else None
    if rule not in self.RULES:
      raise ValueError(f'Resample rule must be one of {self.RULES}. Received: '
                       f'rule={rule!r}')
    self.rule = rule
    self.reduce = None if mobile else ConvNormAct(reduced_filters, 1, options=o,
                                                  name='reduce')
    self.down = []
    if level_shift > 0:
      if mobile:
        self.down = [ConvNormAct(None, 3, 2, depthwise=True, options=o,
                                 name=f'down_{i}') for i in range(level_shift)]
      else:
        self.down = [ConvNormAct(reduced_filters, 3, 2, options=o, name='down_0')]
        if rule == 'stacked':
          self.down += [keras.layers.MaxPool2D(3, 2, padding='same', name=f'pool_{i}')
                        for i in range(1, level_shift)]
    self.project = ConvNormAct(out_filters, 1, activation=False, options=o,
                               name='project')

  @tf.autograph.experimental.do_not_convert
  def call(self, x, training=None):
    parent_size = (x.shape[1], x.shape[2])
    if self.reduce is not None:
      x = self.reduce(x, training=training)
    if self.rule == 'tf1' and not self.mobile:
      x = self._tf1_resample(x, parent_size, training)
      return self.project(x, training=training)
    for layer in self.down:
      x = layer(x, training=training) if isinstance(layer, ConvNormAct) else layer(x)
    if self.level_shift < 0:
      x = layers_lib.nearest_upsample(x, 2**(-self.level_shift))
      if self.target_size is not None:
        x = x[:, :self.target_size[0], :self.target_size[1]]
    return self.project(x, training=training)

  def _tf1_resample(self, x, parent_size, training):
    """Rule 'tf1' after the first 1x1: pool or resize to the target width."""
    height, width = parent_size
    target = self.target_size[1] if self.target_size and width else None
    if target is None:  # Dynamic sizes: assume they divide.
      width, target, height = 2**max(self.level_shift, 0), 2**max(-self.level_shift, 0), None
    if self.level_shift > 0:
      x = self.down[0](x, training=training)
      if width // target > 2:
        stride = 2 if width % target else width // target // 2
        size = 3 if width / target <= 4 else 5
        x = tf.nn.max_pool2d(x, size, stride, 'SAME')
      if height is not None and x.shape[2] != target:
        x = _tf1_resize_nearest(x, (int(target / width * height), target))
    elif self.level_shift < 0:
      if target % width and height is not None:
        x = _tf1_resize_nearest(x, (int(target / width * height), target))
      else:
        x = layers_lib.nearest_upsample(x, target // width)
    return x

  def get_config(self):
    return dict(super().get_config(), reduced_filters=self.reduced_filters,
                out_filters=self.out_filters, level_shift=self.level_shift,
                mobile=self.mobile, options=self.options.to_dict(),
                target_size=self.target_size, rule=self.rule)


def _tf1_resize_nearest(x, size):
  """TF1's nearest resize (source index `floor(i * in / out)`), in float32."""
  resized = tf.compat.v1.image.resize_nearest_neighbor(tf.cast(x, tf.float32), size)
  return tf.cast(resized, x.dtype)


class BlockGroup(keras.layers.Layer):
  """`repeats` blocks of one type; only the first may project the shortcut."""

  def __init__(self, block_fn, filters, repeats=1, strides=1, use_projection=False,
               stochastic_depth_rate=0.0, se_ratio=None, expand_ratio=6,
               options=None, mbconv_se_activation='relu',
               mbconv_se_gating='hard_sigmoid', **kwargs):
    super().__init__(**kwargs)
    if isinstance(options, dict):
      options = layers_lib.BlockOptions.from_dict(options)
    self.options = options or layers_lib.BlockOptions()
    self._config = dict(block_fn=block_fn, filters=filters, repeats=repeats,
                        strides=strides, use_projection=use_projection,
                        stochastic_depth_rate=stochastic_depth_rate,
                        se_ratio=se_ratio, expand_ratio=expand_ratio,
                        mbconv_se_activation=mbconv_se_activation,
                        mbconv_se_gating=mbconv_se_gating)
    cls = layers_lib.BLOCKS[block_fn]
    extra = (dict(expand_ratio=expand_ratio, se_activation=mbconv_se_activation,
                  se_gating=mbconv_se_gating) if block_fn == 'mbconv' else {})
    self.blocks = [
        cls(filters, strides=strides if r == 0 else 1,
            use_projection=use_projection if r == 0 else False,
            stochastic_depth_rate=stochastic_depth_rate, se_ratio=se_ratio,
            options=self.options, name=f'{block_fn}_{r}', **extra)
        for r in range(repeats)]

  @tf.autograph.experimental.do_not_convert
  def call(self, x, training=None):
    for block in self.blocks:
      x = block(x, training=training)
    return x

  def get_config(self):
    return dict(super().get_config(), **self._config, options=self.options.to_dict())


class ScalePermutedBlock(keras.layers.Layer):
  """One block of the scale-permuted network.

  Resamples its two parents to its level and width, adds any extra inputs
  (earlier blocks merged into an output block), applies the activation and
  runs its block group.

  Args:
    resample_a, resample_b: `Resample` layers of the two parents (or their
      serialized configs).
    group: `BlockGroup` (or its serialized config).
    options: `layers.BlockOptions` (or its dict); gives the activation.

  Call arguments:
    inputs: list `[parent_a, parent_b, *extras]` of `[B, H_i, W_i, C_i]`.

  Returns:
    The group's output `[B, H, W, C_out]` at the block's level.
  """

  # The sublayer classes its config may name.
  _SUBLAYERS = {'Resample': Resample, 'BlockGroup': BlockGroup}

  def __init__(self, resample_a, resample_b, group, options=None, **kwargs):
    super().__init__(**kwargs)
    if isinstance(options, dict):
      options = layers_lib.BlockOptions.from_dict(options)
    self.resample_a = self._layer(resample_a)
    self.resample_b = self._layer(resample_b)
    self.group = self._layer(group)
    self.options = options or layers_lib.BlockOptions()
    self._act = self.options.act()

  @classmethod
  def _layer(cls, layer_or_config):
    if isinstance(layer_or_config, dict):
      return keras.layers.deserialize(layer_or_config, custom_objects=cls._SUBLAYERS)
    return layer_or_config

  @tf.autograph.experimental.do_not_convert
  def call(self, inputs, training=None):
    x = self.resample_a(inputs[0], training=training)
    x = x + self.resample_b(inputs[1], training=training)
    for extra in inputs[2:]:
      x = x + extra
    return self.group(self._act(x), training=training)

  def get_config(self):
    return dict(super().get_config(),
                resample_a=keras.layers.serialize(self.resample_a),
                resample_b=keras.layers.serialize(self.resample_b),
                group=keras.layers.serialize(self.group),
                options=self.options.to_dict())


@dataclasses.dataclass(frozen=True)
class _Recipe:
  """Builder arguments every block of one network shares."""
  mobile: bool
  filter_size_scale: float
  block_repeats: int
  resample_alpha: float
  se_ratio: Optional[float]
  expand_ratio: int
  init_stochastic_depth_rate: float
  options: layers_lib.BlockOptions
  resample_rule: str = 'stacked'
  mbconv_se: Tuple[str, str] = ('relu', 'hard_sigmoid')


def _check_arguments(specs, min_level, max_level, input_shape):
  """Validates specs and input shape; returns whether the network is mobile."""
  mobile = specs_lib.is_mobile(specs)
  widths = specs_lib.level_widths(mobile)
  specs_lib.validate(specs, min_level, max_level,
                     valid_levels=[l for l in widths if l >= 1])
  if len(input_shape) != 3 or input_shape[2] != 3 or any(
      d is not None and (not isinstance(d, numbers.Integral) or d < 1)
      for d in input_shape[:2]):
    raise ValueError(f'input_shape must be (height, width, 3) with positive or '
                     f'None height and width; got {tuple(input_shape)}.')
  return mobile


def _level_sizes(specs, input_shape):
  """`{level: (height, width)}` of every block level, or `{}` if dynamic."""
  height, width = input_shape[:2]
  if height is None or width is None:
    return {}
  return {s.level: (math.ceil(height / 2**s.level), math.ceil(width / 2**s.level))
          for s in specs}


def _upsample_crop_sizes(specs, input_shape):
  """`{level: (height, width)}` to crop upsampled maps to, or `{}`.

  With a static input that is not a multiple of `2**deepest level`, level
  `l` is `ceil(size / 2**l)` pixels, and upsampling a deeper parent can
  overshoot it by a pixel; the crop undoes that. Otherwise no crop.
  """
  height, width = input_shape[:2]
  deepest = 2**max(s.level for s in specs)
  if height is None or width is None or not (height % deepest or width % deepest):
    return {}
  return {s.level: (math.ceil(height / 2**s.level), math.ceil(width / 2**s.level))
          for s in specs}


def _stem(inputs, plan, recipe):
  """The stem: a strided conv (+ max pool unless mobile) and two block groups.

  Returns:
    The two stem blocks' outputs, entries 0 and 1 of the running list.
  """
  o = recipe.options
  if recipe.mobile:
    width = int(specs_lib.MOBILE_FILTERS[0] * recipe.filter_size_scale)
    x = ConvNormAct(width, 3, 2, options=o, name='stem_conv')(inputs)
  else:
    x = ConvNormAct(STEM_FILTERS, 7, 2, options=o, name='stem_conv')(inputs)
    x = keras.layers.MaxPool2D(3, 2, padding='same', name='stem_pool')(x)
  out = []
  for i, block in enumerate(plan.stem):
    if recipe.mobile:
      group = BlockGroup('mbconv', block.filters, recipe.block_repeats,
                         strides=(1, 2)[i], se_ratio=recipe.se_ratio,
                         expand_ratio=recipe.expand_ratio, options=o,
                         mbconv_se_activation=recipe.mbconv_se[0],
                         mbconv_se_gating=recipe.mbconv_se[1],
                         name=f'stem_block_{i}')
    else:
      group = BlockGroup('bottleneck', block.filters, recipe.block_repeats,
                         use_projection=(i == 0), options=o, name=f'stem_block_{i}')
    x = group(x)
    out.append(x)
  return out


def _scale_permuted_block(k, spec, plan, recipe, num_blocks, crop_sizes):
  """The layer of block spec `k`: resamples of its parents and its group.

  `crop_sizes`: `{level: (height, width)}` targets of upsampling (rule
  'stacked') or of every resample (rule 'tf1').
  """
  block = plan.block(k)
  resamples = []
  for p in spec.parents:
    parent = plan.blocks[p]
    up = spec.level < parent.level
    resamples.append(Resample(
        int(parent.filters * recipe.resample_alpha), block.out_filters,
        spec.level - parent.level, mobile=recipe.mobile, options=recipe.options,
        target_size=(crop_sizes.get(spec.level)
                     if up or recipe.resample_rule == 'tf1' else None),
        rule=recipe.resample_rule, name=f'resample_{p}'))
  group = BlockGroup(
      spec.block_fn, block.filters, recipe.block_repeats, se_ratio=recipe.se_ratio,
      expand_ratio=recipe.expand_ratio, mbconv_se_activation=recipe.mbconv_se[0],
      mbconv_se_gating=recipe.mbconv_se[1],
      stochastic_depth_rate=recipe.init_stochastic_depth_rate * (k + 1) / num_blocks,
      options=recipe.options, name='group')
  return ScalePermutedBlock(*resamples, group, recipe.options, name=f'block_{k}')


def _endpoints(outputs, min_level, max_level, filters, options):
  """1x1 conv + norm + activation on each output block: `{str(level): map}`."""
  return {str(level): ConvNormAct(filters, 1, options=options,
                                  name=f'endpoint_{level}')(outputs[level])
          for level in range(min_level, max_level + 1)}


def build_spinenet(block_specs: Sequence = specs_lib.SPINENET_49,
                   *,
                   input_shape=(None, None, 3),
                   min_level: int = 3,
                   max_level: int = 7,
                   endpoints_num_filters: int = 256,
                   resample_alpha: float = 0.5,
                   block_repeats: int = 1,
                   filter_size_scale: float = 1.0,
                   init_stochastic_depth_rate: float = 0.0,
                   se_ratio: Optional[float] = None,
                   expand_ratio: int = 6,
                   activation: str = 'relu',
                   use_sync_bn: bool = False,
                   norm_momentum: float = 0.99,
                   norm_epsilon: float = 1e-3,
                   kernel_initializer='VarianceScaling',
                   kernel_regularizer=None,
                   winograd_min_size: int = 0,
                   fixed_padding: bool = False,
                   resample_rule: str = 'stacked',
                   mbconv_se_activation: str = 'relu',
                   mbconv_se_gating: str = 'hard_sigmoid',
                   name: str = 'spinenet') -> keras.Model:
  """Builds a scale-permuted backbone from block specs.

  Args:
    block_specs: sequence of `(level, block_fn, (parent_a, parent_b),
      is_output)` tuples or `BlockSpec`s. All 'mbconv' gives Mobile SpineNet
      (MBConv stem and depthwise resampling); otherwise 'bottleneck' /
      'residual' blocks with the ResNet stem.
    input_shape: `(H, W, 3)`. Static H and W may be any size: level `l`
      is then `ceil(H / 2**l)` pixels (as in the authors' implementation;
      e.g. 224 px for classification). None: any multiple of
      `2**max(block levels)` at call time.
    min_level, max_level: endpoint levels returned.
    endpoints_num_filters: width of every endpoint.
    resample_alpha: width factor of cross-scale connections (not mobile).
    block_repeats: blocks per spec (1 for 49, 2 for 96, 3 for 143, 4 for 190).
    filter_size_scale: multiplies every block width C (`int(C * scale)`).
    init_stochastic_depth_rate: block `i` of `n` drops its residual branch
      with rate `init * (i + 1) / n` in training.
    se_ratio: squeeze-excite ratio of the blocks (Mobile SpineNet: 0.2).
    expand_ratio: MBConv expansion (mobile only).
    activation: 'relu', 'swish' or 'hard_swish'.
    use_sync_bn, norm_momentum, norm_epsilon: batch norm options.
    kernel_initializer, kernel_regularizer: for every conv kernel.
    winograd_min_size: 3x3 stride-1 block convs on maps at least this large
      run as Winograd convolutions in float32 (a CPU training option, same
      weights; `winograd_conv.WinogradConv2D`). 0 (default) never.
    fixed_padding: strided convs pad by their kernel size alone, as the
      authors' TF1 code (`layers.FixedPaddingConv2D`); default False: Keras
      'same' padding, as the Model Garden. Same variables either way.
    resample_rule: how cross-scale connections pool and resize, 'stacked'
      (default, the Model Garden) or 'tf1' (the authors' TF1 code); see
      `Resample`. Same variables either way.
    mbconv_se_activation, mbconv_se_gating: the squeeze-excite of MBConv
      blocks: relu and hard sigmoid (default, the Model Garden) or swish and
      sigmoid (the authors' TF1 SpineNet-MBConv).
    name: model name.

  Returns:
    A functional `keras.Model`: float `[B, H, W, 3]` -> dict
    `{str(level): [B, H / 2**level, W / 2**level, endpoints_num_filters]}`
    for `level` in `[min_level, max_level]`.

  Raises:
    ValueError: naming the block, for an invalid spec list.
  """
  specs = specs_lib.to_block_specs(block_specs)
  mobile = _check_arguments(specs, min_level, max_level, input_shape)
  plan = specs_lib.merge_plan(specs, filter_size_scale)
  options = layers_lib.BlockOptions(
      activation=activation, use_sync_bn=use_sync_bn, norm_momentum=norm_momentum,
      norm_epsilon=norm_epsilon, kernel_initializer=kernel_initializer,
      kernel_regularizer=kernel_regularizer, winograd_min_size=winograd_min_size,
      fixed_padding=fixed_padding)
  recipe = _Recipe(mobile, filter_size_scale, block_repeats, resample_alpha,
                   se_ratio, expand_ratio, init_stochastic_depth_rate, options,
                   resample_rule, (mbconv_se_activation, mbconv_se_gating))
  if resample_rule not in Resample.RULES:
    raise ValueError(f'resample_rule must be one of {Resample.RULES}. Received: '
                     f'resample_rule={resample_rule!r}')
  crop_sizes = (_level_sizes(specs, input_shape) if resample_rule == 'tf1'
                else _upsample_crop_sizes(specs, input_shape))

  inputs = keras.Input(shape=tuple(input_shape), name='images')
  net = _stem(inputs, plan, recipe)  # the running list of block outputs
  outputs = {}
  for k, spec in enumerate(specs):
    merged = plan.merged.get(k, ())
    if merged:
      logging.debug('block_specs[%d]: merging unconsumed blocks %s', k, merged)
    layer = _scale_permuted_block(k, spec, plan, recipe, len(specs), crop_sizes)
    net.append(layer([net[p] for p in spec.parents] + [net[j] for j in merged]))
    if spec.is_output:
      outputs[spec.level] = net[-1]
  endpoints = _endpoints(outputs, min_level, max_level, endpoints_num_filters, options)
  return keras.Model(inputs=inputs, outputs=endpoints, name=name)
