"""Dense prediction heads: the RetinaNet class and box subnets, and the classification head."""
import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import activations
from spinenet.modeling import batch_norm
from spinenet.modeling import winograd_conv

# The class bias starts at the prior probability pi = 0.01 (RetinaNet, Sec. 4.1).
_PRIOR_PROBABILITY = 0.01


class RetinaNetHead(keras.layers.Layer):
  """Class and box subnets shared across levels, with one batch norm per level.

  Each subnet is `num_convs` x (3x3 conv + norm + activation) followed by a
  3x3 predictor. Convs and predictors are shared by all levels; batch norms
  are not (statistics differ per level).

  Args:
    min_level, max_level: int. Levels the head runs on.
    num_classes: int. Class logits per anchor (index 0 is background).
    num_anchors: int. Anchors per location.
    num_convs: int. Convs per subnet. Defaults to 4.
    num_filters: int. Width of those convs. Defaults to 256.
    use_separable_conv: bool. Depthwise-separable convs (Mobile SpineNet).
    activation, use_sync_bn, norm_momentum, norm_epsilon: as in the backbone.
    kernel_regularizer: optional regularizer of conv kernels.
    winograd_min_size: int. On levels at least this large (height and width,
      static sizes), run the regular 3x3 convs and predictors in float32 as
      Winograd F(4x4, 3x3) convolutions (`winograd_conv.WinogradConv2D`):
      same weights and results, ~2x faster training per conv on a CPU at
      48x48x256. 0 (default) never does; leave it 0 on TPUs and GPUs, whose
      convolutions are already fast.

  Call arguments:
    features: dict `{str(level): float [B, H_l, W_l, C]}`.

  Returns:
    `(class_logits, box_deltas)`: dicts `{str(level): [B, H_l, W_l,
    num_anchors * num_classes]}` and `{str(level): [B, H_l, W_l,
    num_anchors * 4]}` (dy, dx, dh, dw per anchor), anchor-major.
  """

  def __init__(self, min_level, max_level, num_classes, num_anchors, num_convs=4,
               num_filters=256, use_separable_conv=False, activation='relu',
               use_sync_bn=False, norm_momentum=0.99, norm_epsilon=1e-3,
               kernel_regularizer=None, winograd_min_size=0, **kwargs):
    super().__init__(**kwargs)
    if winograd_min_size and use_separable_conv:
      raise ValueError('winograd_min_size applies to regular convs; this head '
                       'has use_separable_conv=True.')
    self._config = dict(
        min_level=min_level, max_level=max_level, num_classes=num_classes,
        num_anchors=num_anchors, num_convs=num_convs, num_filters=num_filters,
        use_separable_conv=use_separable_conv, activation=activation,
        use_sync_bn=use_sync_bn, norm_momentum=norm_momentum,
        norm_epsilon=norm_epsilon, winograd_min_size=winograd_min_size)
    self._kernel_regularizer = keras.regularizers.get(kernel_regularizer)
    self._act = activations.get(activation)
    self.levels = [str(l) for l in range(min_level, max_level + 1)]

  def build(self, input_shape):
    c = self._config
    self.class_convs, self.class_norms, self.classifier = self._subnet(
        'class', c['num_classes'] * c['num_anchors'],
        keras.initializers.Constant(-math.log((1 - _PRIOR_PROBABILITY) / _PRIOR_PROBABILITY)))
    self.box_convs, self.box_norms, self.box_regressor = self._subnet(
        'box', 4 * c['num_anchors'], 'zeros')
    super().build(input_shape)

  def _conv(self, filters, name, bias_initializer, predictor):
    c = self._config
    if c['use_separable_conv']:
      std = 0.03 if predictor else 0.01
      return keras.layers.SeparableConv2D(
          filters, 3, padding='same', name=name, bias_initializer=bias_initializer,
          depthwise_initializer=keras.initializers.RandomNormal(stddev=std),
          pointwise_initializer=keras.initializers.RandomNormal(stddev=std),
          depthwise_regularizer=self._kernel_regularizer,
          pointwise_regularizer=self._kernel_regularizer)
    return winograd_conv.conv2d(
        filters, 3, min_size=c['winograd_min_size'], name=name,
        bias_initializer=bias_initializer,
        kernel_initializer=keras.initializers.RandomNormal(
            stddev=1e-5 if predictor else 0.01),
        kernel_regularizer=self._kernel_regularizer)

  def _subnet(self, prefix, out_filters, bias_initializer):
    c = self._config
    convs = [self._conv(c['num_filters'], f'{prefix}_conv_{i}', 'zeros', False)
             for i in range(c['num_convs'])]
    norms = {level: [batch_norm.BatchNormalization(
        momentum=c['norm_momentum'], epsilon=c['norm_epsilon'],
        synchronized=c['use_sync_bn'], name=f'{prefix}_norm_{level}_{i}')
                     for i in range(c['num_convs'])] for level in self.levels}
    predictor = self._conv(out_filters, f'{prefix}_predictor', bias_initializer, True)
    return convs, norms, predictor

  def _tower(self, x, convs, norms, training):
    for conv, norm in zip(convs, norms):
      x = self._act(norm(conv(x), training=training))
    return x

  @tf.autograph.experimental.do_not_convert
  def call(self, features, training=None):
    class_logits, box_deltas = {}, {}
    for level in self.levels:
      x = features[level]
      class_logits[level] = self.classifier(
          self._tower(x, self.class_convs, self.class_norms[level], training))
      box_deltas[level] = self.box_regressor(
          self._tower(x, self.box_convs, self.box_norms[level], training))
    return class_logits, box_deltas

  def get_config(self):
    return dict(super().get_config(), **self._config,
                kernel_regularizer=keras.regularizers.serialize(self._kernel_regularizer)
                if self._kernel_regularizer else None)


FUSIONS = ('average', 'level_mean', 'top')


def tf1_resize_indices(in_size, out_size):
  """Source index of each output index of TF1's nearest-neighbour resize.

  `tf.compat.v1.image.resize_nearest_neighbor` with its defaults
  (`align_corners=False`, `half_pixel_centers=False`):
  `min(floor(i * in_size / out_size), in_size - 1)`, in float32.

  Args:
    in_size, out_size: ints, one axis.

  Returns:
    int numpy array `[out_size]`.
  """
  scale = np.float32(in_size) / np.float32(out_size)
  index = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
  return np.minimum(index, in_size - 1)


def cascade_pool_weights(sizes):
  """Per-level pooling weights of TF1's `aggregation='all'` along one axis.

  TF1's head starts from the top level and, level by level down to the
  lowest, nearest-resizes the running sum to the next level's size and adds
  that level; the lowest-level map is averaged over space. Each output pixel
  of level `l` therefore reads the pixel the chain of resizes maps it to, so
  the spatial mean of the result is a weighted sum of each level's pixels.
  The weights of one axis (they factor over height and width) count how
  often each index is read, over the lowest level's size.

  Args:
    sizes: the axis's sizes from the lowest level up, e.g. `[28, 14, 7, 4, 2]`
      at 224 px.

  Returns:
    list of float numpy arrays, `[sizes[i]]` each, each summing to 1.
  """
  source = np.arange(sizes[0])
  weights = []
  for i, size in enumerate(sizes):
    if i:
      source = tf1_resize_indices(size, sizes[i - 1])[source]
    weights.append(np.bincount(source, minlength=size) / float(sizes[0]))
  return weights


class ClassificationHead(keras.layers.Layer):
  """The paper's classification head over multi-level features.

  `fusion='average'` (default; the paper and the authors' TF1 head with
  `aggregation='all'`): from the top level down, the running sum is
  nearest-resized (TF1's `resize_nearest_neighbor`: source index
  `floor(i * in / out)`) to the next level's size and that level added; the
  sum over levels is divided by their number and average pooled. Where a
  level is not an integer multiple of the one above (224 px: level 6 is 4 px,
  level 5 is 7 px), TF1's resize repeats rows unevenly, so the pool weighs
  pixels unevenly; this head computes exactly that pool, as a weighted global
  average of each level (`cascade_pool_weights`), without building the
  upsampled maps. At sizes with integer factors only (e.g. 256 or 128 px)
  every weight is equal.

  `fusion='level_mean'`: the mean over levels of each level's plain global
  average (equal weights at every size; equal to 'average' at sizes with
  integer factors only). `fusion='top'`: the pooled top level only (the
  Model Garden's SpineNet classifier). Then dropout and a linear layer.

  Args:
    num_classes: int.
    dropout_rate: float. Defaults to 0.
    fusion: one of 'average', 'level_mean', 'top'.
    kernel_regularizer: optional regularizer of the linear layer.

  Call arguments:
    features: dict `{str(level): float [B, H_l, W_l, C]}` (static spatial
      sizes for 'average').

  Returns:
    float `[B, num_classes]` logits.
  """

  def __init__(self, num_classes, dropout_rate=0.0, fusion='average',
               kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    if fusion not in FUSIONS:
      raise ValueError(f'`fusion` must be one of {FUSIONS}. Received: fusion={fusion!r}')
    self.num_classes, self.dropout_rate, self.fusion = num_classes, dropout_rate, fusion
    self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

  def build(self, input_shape):
    self.dropout = keras.layers.Dropout(self.dropout_rate)
    self.linear = keras.layers.Dense(
        self.num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        kernel_regularizer=self.kernel_regularizer, name='logits')
    super().build(input_shape)

  @tf.autograph.experimental.do_not_convert
  def call(self, features, training=None):
    levels = sorted(features, key=int)
    if self.fusion == 'top':
      x = tf.reduce_mean(features[levels[-1]], axis=[1, 2])
    elif self.fusion == 'level_mean':
      x = tf.add_n([tf.reduce_mean(features[l], axis=[1, 2]) for l in levels])
      x = x / float(len(levels))
    else:
      x = self._cascade_average(features, levels)
    return self._classify(x, training)

  def _cascade_average(self, features, levels):
    """`[B, C]`: TF1's resize-and-add fusion, pooled (see the class doc)."""
    shapes = [features[l].shape for l in levels]
    if any(s[1] is None or s[2] is None for s in shapes):
      raise ValueError(
          "ClassificationHead(fusion='average') needs static spatial sizes; "
          f'got {[tuple(s) for s in shapes]}. Build the model for a fixed input '
          'size.')
    rows = cascade_pool_weights([int(s[1]) for s in shapes])
    cols = cascade_pool_weights([int(s[2]) for s in shapes])
    pooled = []
    for level, wh, ww in zip(levels, rows, cols):
      f = tf.cast(features[level], tf.float32)  # TF1 resizes in float32
      weights = tf.constant(np.outer(wh, ww)[None, :, :, None], tf.float32)
      pooled.append(tf.reduce_sum(f * weights, axis=[1, 2]))
    return tf.add_n(pooled) / float(len(levels))

  def _classify(self, x, training):
    x = self.dropout(x, training=training)
    return self.linear(x)

  def get_config(self):
    return dict(super().get_config(), num_classes=self.num_classes,
                dropout_rate=self.dropout_rate, fusion=self.fusion,
                kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer)
                if self.kernel_regularizer else None)
