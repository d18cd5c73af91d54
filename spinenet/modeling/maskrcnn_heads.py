"""Mask R-CNN heads: region proposal network, box head, mask head.

The SpineNet Mask R-CNN recipe (the authors' `spinenet*_mrcnn` configs and
the Model Garden's `maskrcnn_spinenet_coco`) puts batch norm after every conv
and FC of all three heads: RPN 1 x 3x3 conv shared across levels (batch
norm per level), box head 4 x 3x3 convs + 1 FC of 1024, mask head 4 x 3x3
convs + a 2x2 stride-2 deconv + a 1x1 per-class predictor.
"""
import tensorflow as tf
import tf_keras as keras

from spinenet.modeling import activations
from spinenet.modeling import batch_norm
from spinenet.modeling import winograd_conv


def _he_fan_out():
  return keras.initializers.VarianceScaling(
      scale=2.0, mode='fan_out', distribution='untruncated_normal')


class _NormMixin:
  """Shared batch-norm construction of the heads."""

  def _norm(self, name):
    c = self._config
    return batch_norm.BatchNormalization(
        momentum=c['norm_momentum'], epsilon=c['norm_epsilon'],
        synchronized=c['use_sync_bn'], name=name)

  def _conv_stack(self, x, training):
    """`self.convs` with `self.conv_norms` and the activation; at inference,
    Winograd convs run as one fused XLA cluster
    (`winograd_conv.fused_inference_stack`)."""
    if not training:
      fused = winograd_conv.fused_inference_stack(self.convs, self.conv_norms,
                                                  self._act, x)
      if fused is not None:
        return fused
    for conv, norm in zip(self.convs, self.conv_norms):
      x = self._act(norm(conv(x), training=training))
    return x

  def _regularizer_config(self):
    return (keras.regularizers.serialize(self._kernel_regularizer)
            if self._kernel_regularizer else None)


class RPNHead(_NormMixin, keras.layers.Layer):
  """Objectness and box deltas per anchor on every level.

  `num_convs` x (3x3 conv + batch norm + activation), convs shared across
  levels and batch norms per level, then 1x1 predictors of `num_anchors`
  logits and `4 * num_anchors` deltas (dy, dx, dh, dw; anchor-major).

  Args:
    min_level, max_level: int.
    num_anchors: int, anchors per location.
    num_convs: int. Defaults to 1.
    num_filters: int. Defaults to 256.
    activation, use_sync_bn, norm_momentum, norm_epsilon: as the backbone's.
    kernel_regularizer: optional regularizer of the kernels.

  Call arguments:
    features: dict `{str(level): [B, H_l, W_l, C]}`.

  Returns:
    `(scores, boxes)`: dicts `{str(level): [B, H_l, W_l, A]}` and
    `{str(level): [B, H_l, W_l, 4 A]}`.
  """

  def __init__(self, min_level, max_level, num_anchors, num_convs=1, num_filters=256,
               activation='relu', use_sync_bn=False, norm_momentum=0.99,
               norm_epsilon=1e-3, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self._config = dict(min_level=min_level, max_level=max_level,
                        num_anchors=num_anchors, num_convs=num_convs,
                        num_filters=num_filters, activation=activation,
                        use_sync_bn=use_sync_bn, norm_momentum=norm_momentum,
                        norm_epsilon=norm_epsilon)
    self._kernel_regularizer = keras.regularizers.get(kernel_regularizer)
    self._act = activations.get(activation)
    self.levels = [str(l) for l in range(min_level, max_level + 1)]

  def build(self, input_shape):
    c = self._config

    def conv(filters, size, name, stddev):
      return keras.layers.Conv2D(
          filters, size, padding='same', name=name,
          kernel_initializer=keras.initializers.RandomNormal(stddev=stddev),
          kernel_regularizer=self._kernel_regularizer)

    self.convs = [conv(c['num_filters'], 3, f'rpn_conv_{i}', 0.01)
                  for i in range(c['num_convs'])]
    self.norms = {level: [self._norm(f'rpn_norm_{level}_{i}')
                          for i in range(c['num_convs'])] for level in self.levels}
    self.classifier = conv(c['num_anchors'], 1, 'rpn_scores', 1e-5)
    self.box_regressor = conv(4 * c['num_anchors'], 1, 'rpn_boxes', 1e-5)
    super().build(input_shape)

  @tf.autograph.experimental.do_not_convert
  def call(self, features, training=None):
    scores, boxes = {}, {}
    for level in self.levels:
      x = features[level]
      for conv, norm in zip(self.convs, self.norms[level]):
        x = self._act(norm(conv(x), training=training))
      scores[level] = self.classifier(x)
      boxes[level] = self.box_regressor(x)
    return scores, boxes

  def get_config(self):
    return dict(super().get_config(), **self._config,
                kernel_regularizer=self._regularizer_config())


class BoxHead(_NormMixin, keras.layers.Layer):
  """Class logits and per-class box deltas of ROI features.

  `num_convs` x (3x3 conv + batch norm + activation), flatten,
  `num_fcs` x (FC of `fc_dims` + batch norm + activation), then linear class
  and box predictors.

  Args:
    num_classes: int, background included.
    num_convs: int. Defaults to 4.
    num_filters: int. Defaults to 256.
    num_fcs: int. Defaults to 1.
    fc_dims: int. Defaults to 1024.
    activation, use_sync_bn, norm_momentum, norm_epsilon, kernel_regularizer:
      as in `RPNHead`.
    winograd_min_size: int. 3x3 convs on ROI maps at least this large run as
      Winograd F(4x4, 3x3) convolutions in float32
      (`winograd_conv.WinogradConv2D`: same weights, results to float
      rounding); 0 (default) never. A CPU option.

  Call arguments:
    roi_features: float `[B, R, S, S, C]` (static `R`, `S`, `C`).

  Returns:
    `(class_outputs [B, R, K], box_outputs [B, R, 4 K])`.
  """

  def __init__(self, num_classes, num_convs=4, num_filters=256, num_fcs=1, fc_dims=1024,
               activation='relu', use_sync_bn=False, norm_momentum=0.99,
               norm_epsilon=1e-3, kernel_regularizer=None, winograd_min_size=0, **kwargs):
    super().__init__(**kwargs)
    self._config = dict(num_classes=num_classes, num_convs=num_convs,
                        num_filters=num_filters, num_fcs=num_fcs, fc_dims=fc_dims,
                        activation=activation, use_sync_bn=use_sync_bn,
                        norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
                        winograd_min_size=winograd_min_size)
    self._kernel_regularizer = keras.regularizers.get(kernel_regularizer)
    self._act = activations.get(activation)

  def build(self, input_shape):
    c = self._config
    self.convs = [winograd_conv.conv2d(
        c['num_filters'], 3, min_size=c['winograd_min_size'], name=f'box_conv_{i}',
        kernel_initializer=_he_fan_out(), kernel_regularizer=self._kernel_regularizer)
                  for i in range(c['num_convs'])]
    self.conv_norms = [self._norm(f'box_conv_norm_{i}') for i in range(c['num_convs'])]
    self.fcs = [keras.layers.Dense(
        c['fc_dims'], name=f'box_fc_{i}',
        kernel_initializer=keras.initializers.VarianceScaling(
            scale=1 / 3.0, mode='fan_out', distribution='uniform'),
        kernel_regularizer=self._kernel_regularizer) for i in range(c['num_fcs'])]
    self.fc_norms = [self._norm(f'box_fc_norm_{i}') for i in range(c['num_fcs'])]
    self.classifier = keras.layers.Dense(
        c['num_classes'], name='box_class_predictor',
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        kernel_regularizer=self._kernel_regularizer)
    self.box_regressor = keras.layers.Dense(
        4 * c['num_classes'], name='box_regressor',
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        kernel_regularizer=self._kernel_regularizer)
    super().build(input_shape)

  def call(self, roi_features, training=None):
    _, num_rois, height, width, channels = roi_features.shape.as_list()
    x = self._conv_stack(tf.reshape(roi_features, [-1, height, width, channels]),
                         training)
    x = tf.reshape(x, [-1, num_rois, height * width * x.shape[-1]])
    for fc, norm in zip(self.fcs, self.fc_norms):
      x = self._act(norm(fc(x), training=training))
    return self.classifier(x), self.box_regressor(x)

  def get_config(self):
    return dict(super().get_config(), **self._config,
                kernel_regularizer=self._regularizer_config())


class MaskHead(_NormMixin, keras.layers.Layer):
  """Per-class mask logits of ROI features, the given class's mask returned.

  `num_convs` x (3x3 conv + batch norm + activation), a 2x2 stride-2
  transposed conv (+ batch norm + activation), a 1x1 conv to one logit map per
  class; the map of each ROI's class is returned.

  Args:
    num_classes: int, background included.
    num_convs: int. Defaults to 4.
    num_filters: int. Defaults to 256.
    upsample_factor: int, the deconv's stride. Defaults to 2 (14 -> 28).
    activation, use_sync_bn, norm_momentum, norm_epsilon, kernel_regularizer:
      as in `RPNHead`.
    winograd_min_size: as in `BoxHead`.

  Call arguments:
    roi_features: float `[B, R, S, S, C]`.
    classes: int `[B, R]`, the class whose mask to return.

  Returns:
    float `[B, R, S * upsample_factor, S * upsample_factor]` logits.
  """

  def __init__(self, num_classes, num_convs=4, num_filters=256, upsample_factor=2,
               activation='relu', use_sync_bn=False, norm_momentum=0.99,
               norm_epsilon=1e-3, kernel_regularizer=None, winograd_min_size=0, **kwargs):
    super().__init__(**kwargs)
    self._config = dict(num_classes=num_classes, num_convs=num_convs,
                        num_filters=num_filters, upsample_factor=upsample_factor,
                        activation=activation, use_sync_bn=use_sync_bn,
                        norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
                        winograd_min_size=winograd_min_size)
    self._kernel_regularizer = keras.regularizers.get(kernel_regularizer)
    self._act = activations.get(activation)

  @property
  def upsample_factor(self):
    return self._config['upsample_factor']

  def build(self, input_shape):
    c = self._config
    self.convs = [winograd_conv.conv2d(
        c['num_filters'], 3, min_size=c['winograd_min_size'], name=f'mask_conv_{i}',
        kernel_initializer=_he_fan_out(), kernel_regularizer=self._kernel_regularizer)
                  for i in range(c['num_convs'])]
    self.conv_norms = [self._norm(f'mask_conv_norm_{i}') for i in range(c['num_convs'])]
    self.deconv = keras.layers.Conv2DTranspose(
        c['num_filters'], c['upsample_factor'], strides=c['upsample_factor'],
        padding='valid', name='mask_deconv', kernel_initializer=_he_fan_out(),
        kernel_regularizer=self._kernel_regularizer)
    self.deconv_norm = self._norm('mask_deconv_norm')
    self.predictor = keras.layers.Conv2D(
        c['num_classes'], 1, name='mask_predictor', kernel_initializer=_he_fan_out(),
        kernel_regularizer=self._kernel_regularizer)
    size = input_shape[-2]
    self.predictor.build((None, None if size is None else size * c['upsample_factor'],
                          None, c['num_filters']))
    super().build(input_shape)

  def call(self, roi_features, classes, training=None):
    _, num_rois, height, width, channels = roi_features.shape.as_list()
    x = self._conv_stack(tf.reshape(roi_features, [-1, height, width, channels]),
                         training)
    x = self._act(self.deconv_norm(self.deconv(x), training=training))
    # The 1x1 predictor evaluated for each ROI's class only: the same logits
    # as predicting all K maps and picking one, at 1/K of the cost.
    size_h, size_w, filters = x.shape[1], x.shape[2], x.shape[3]
    x = tf.reshape(x, [-1, num_rois, size_h, size_w, filters])
    classes = tf.cast(classes, tf.int32)
    kernel = tf.cast(self.predictor.kernel[0, 0], x.dtype)  # [C, K]
    weights = tf.gather(tf.transpose(kernel), classes)  # [B, R, C]
    bias = tf.gather(tf.cast(self.predictor.bias, x.dtype), classes)  # [B, R]
    return tf.einsum('brhwc,brc->brhw', x, weights) + bias[..., None, None]

  def get_config(self):
    return dict(super().get_config(), **self._config,
                kernel_regularizer=self._regularizer_config())
