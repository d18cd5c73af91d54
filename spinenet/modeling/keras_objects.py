"""The Keras classes of `spinenet.modeling`, to rebuild models from their config.

Configs name layers by class; Keras resolves the names of its own layers and
these through `custom_objects`:

  >>> config = model.get_config()
  >>> clone = retinanet.RetinaNet.from_config(config, custom_objects())

`batch_norm.BatchNormalization` keeps Keras' class name, so in this mapping it
stands for every 'BatchNormalization' of a config (same arguments, variables
and results).
"""
from typing import Dict, Type

import tf_keras as keras

from spinenet.modeling import batch_norm
from spinenet.modeling import classifier
from spinenet.modeling import heads
from spinenet.modeling import layers
from spinenet.modeling import maskrcnn
from spinenet.modeling import maskrcnn_heads
from spinenet.modeling import retinanet
from spinenet.modeling import spinenet
from spinenet.modeling import winograd_conv

_CLASSES = (
    batch_norm.BatchNormalization,
    layers.FixedPaddingConv2D,
    layers.FixedPaddingDepthwiseConv2D,
    layers.StochasticDepth,
    layers.SqueezeExcite,
    layers.ResidualBlock,
    layers.BottleneckBlock,
    layers.MBConvBlock,
    spinenet.ConvNormAct,
    spinenet.Resample,
    spinenet.BlockGroup,
    spinenet.ScalePermutedBlock,
    heads.RetinaNetHead,
    heads.ClassificationHead,
    winograd_conv.WinogradConv2D,
    retinanet.RetinaNet,
    classifier.Classifier,
    maskrcnn_heads.RPNHead,
    maskrcnn_heads.BoxHead,
    maskrcnn_heads.MaskHead,
    maskrcnn.MaskRCNN,
)


def custom_objects() -> Dict[str, Type[keras.layers.Layer]]:
  """`{class name: class}` for every Keras layer and model of this package."""
  return {cls.__name__: cls for cls in _CLASSES}
