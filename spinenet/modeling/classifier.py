"""Image classifier: a multi-level backbone + `heads.ClassificationHead`."""
import tensorflow as tf
import tf_keras as keras


class Classifier(keras.Model):
  """Backbone + classification head.

  Args:
    backbone: Keras model mapping images to `{str(level): [B, H_l, W_l, C]}`.
    head: `heads.ClassificationHead`.

  Call arguments:
    images: float `[B, H, W, 3]`, normalized.

  Returns:
    float32 logits `[B, num_classes]`.
  """

  def __init__(self, backbone, head, **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone
    self.head = head

  def get_config(self):
    return {'name': self.name, 'trainable': self.trainable,
            'backbone': keras.layers.serialize(self.backbone),
            'head': keras.layers.serialize(self.head)}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    """Rebuilds the model; `custom_objects` as `keras_objects.custom_objects()`."""
    config = dict(config)
    for key in ('backbone', 'head'):
      config[key] = keras.layers.deserialize(config[key], custom_objects=custom_objects)
    return cls(**config)

  def call(self, images, training=None):
    features = self.backbone(images, training=training)
    return tf.cast(self.head(features, training=training), tf.float32)
