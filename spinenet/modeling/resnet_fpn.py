"""ResNet-50/101/152 with a feature pyramid (P3..P7): the paper's baseline.

ResNet v1.5 (stride on the 3x3 conv of bottlenecks), then FPN as in RetinaNet:
1x1 laterals on C3..C5, top-down nearest upsampling and addition, a 3x3 conv
(+ norm) on each merged level; P6 is a stride-2 3x3 conv on P5 and P7 a
stride-2 3x3 conv on activated P6. `min_level=2` adds P2 from C2 the same way
(the classic Mask R-CNN pyramid is P2..P6).
"""
import tf_keras as keras

from spinenet.modeling import layers as layers_lib
from spinenet.modeling import spinenet as spinenet_lib

RESNET_STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def build_resnet_fpn(depth=50, *, input_shape=(None, None, 3), min_level=3,
                     max_level=7, fpn_filters=256, activation='relu',
                     use_sync_bn=False, norm_momentum=0.99, norm_epsilon=1e-3,
                     kernel_initializer='VarianceScaling', kernel_regularizer=None,
                     init_stochastic_depth_rate=0.0, name=None):
  """Builds ResNet-`depth` + FPN.

  Args:
    depth: 50, 101 or 152.
    input_shape: `(H, W, 3)`, multiples of `2**max_level`.
    min_level, max_level: pyramid levels returned (2..7 at most).
    fpn_filters: width of every pyramid level.
    Other arguments as `spinenet.build_spinenet`.

  Returns:
    A functional `keras.Model`: images -> `{str(level): [B, H_l, W_l, fpn_filters]}`.
  """
  if depth not in RESNET_STAGES:
    raise ValueError(f'`depth` must be one of {sorted(RESNET_STAGES)}. '
                     f'Received: depth={depth}')
  if not 2 <= min_level <= max_level <= 7:
    raise ValueError('ResNet-FPN levels must satisfy 2 <= min_level <= max_level '
                     f'<= 7. Received: min_level={min_level}, max_level={max_level}')
  o = layers_lib.BlockOptions(
      activation=activation, use_sync_bn=use_sync_bn, norm_momentum=norm_momentum,
      norm_epsilon=norm_epsilon, kernel_initializer=kernel_initializer,
      kernel_regularizer=kernel_regularizer)
  conv_norm = spinenet_lib.ConvNormAct
  inputs = keras.Input(shape=tuple(input_shape), name='images')
  x = conv_norm(64, 7, 2, options=o, name='stem_conv')(inputs)
  x = keras.layers.MaxPool2D(3, 2, padding='same', name='stem_pool')(x)
  stages = RESNET_STAGES[depth]
  total = sum(stages)
  done = 0
  c = {}
  for i, repeats in enumerate(stages):
    level = i + 2
    for r in range(repeats):
      done += 1
      x = layers_lib.BottleneckBlock(
          64 * 2**i, strides=2 if (r == 0 and i > 0) else 1,
          use_projection=(r == 0),
          stochastic_depth_rate=init_stochastic_depth_rate * done / total,
          options=o, name=f'c{level}_block_{r}')(x)
    c[level] = x

  def conv(filters, k, s, name):
    return keras.layers.Conv2D(filters, k, strides=s, padding='same', name=name,
                               kernel_initializer=keras.initializers.get(kernel_initializer),
                               kernel_regularizer=kernel_regularizer)

  top = min(max_level, 5)
  laterals = {l: conv(fpn_filters, 1, 1, f'fpn_lateral_{l}')(c[l])
              for l in range(min_level, top + 1)}
  for l in range(top - 1, min_level - 1, -1):
    up = keras.layers.UpSampling2D(2, interpolation='nearest',
                                   name=f'fpn_upsample_{l + 1}')(laterals[l + 1])
    laterals[l] = keras.layers.Add(name=f'fpn_merge_{l}')([laterals[l], up])
  feats = {}
  for l in range(min_level, top + 1):
    y = conv(fpn_filters, 3, 1, f'fpn_output_{l}')(laterals[l])
    feats[str(l)] = o.norm(f'fpn_output_{l}_norm')(y)
  prev = feats.get('5')
  for l in range(6, max_level + 1):
    src = prev if l == 6 else keras.layers.Activation(o.act(), name=f'fpn_act_{l - 1}')(prev)
    y = conv(fpn_filters, 3, 2, f'fpn_output_{l}')(src)
    prev = feats[str(l)] = o.norm(f'fpn_output_{l}_norm')(y)
  return keras.Model(inputs, feats, name=name or f'resnet{depth}_fpn')
