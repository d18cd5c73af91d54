"""The image classification task: model, TFDS / TFRecord inputs, loss, top-k.

The same runner trains it as RetinaNet (`train_lib.run_experiment`); a gin
experiment picks it with `experiment.task = @ClassificationTask()`.
"""
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from spinenet.data import classification_input
from spinenet.training import base_task

ClassificationDataOptions = classification_input.ClassificationDataOptions


def cross_entropy(logits, labels, num_classes, label_smoothing=0.0):
  """Softmax cross-entropy with label smoothing, per example.

  Args:
    logits: float `[B, K]`.
    labels: int `[B]`, class indices in `[0, K)`.
    num_classes: K.
    label_smoothing: the target is `(1 - s) * one_hot + s / K`.

  Returns:
    float32 `[B]`.
  """
  targets = tf.one_hot(labels, num_classes, dtype=tf.float32)
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return tf.nn.softmax_cross_entropy_with_logits(
      labels=targets, logits=tf.cast(logits, tf.float32))


class ClassificationEvaluator(base_task.Evaluator):
  """Top-1 / top-5 accuracy and cross-entropy over the valid examples.

  Runs on host; `update` takes `ClassificationTask.validation_step`'s
  outputs: `top_1_correct`, `top_5_correct`, `loss` (float `[B]`) and
  `valid` (bool `[B]`, False for padding).
  """

  def __init__(self):
    self.reset()

  def reset(self):
    self._count = 0
    self._sums = {'top_1_correct': 0.0, 'top_5_correct': 0.0, 'loss': 0.0}

  def update(self, outputs):
    valid = np.asarray(outputs['valid'], bool).reshape(-1)
    self._count += int(valid.sum())
    for key in self._sums:
      values = np.asarray(outputs[key], np.float64).reshape(-1)
      self._sums[key] += float(values[valid].sum())

  def result(self) -> Dict[str, float]:
    n = max(self._count, 1)
    return {'top_1_accuracy': self._sums['top_1_correct'] / n,
            'top_5_accuracy': self._sums['top_5_correct'] / n,
            'validation_loss': self._sums['loss'] / n,
            'num_examples': float(self._count)}


class ClassificationTask(base_task.Task):
  """Image classification (e.g. SpineNet on ImageNet or iNaturalist).

  The input size and number of classes come from the built model, so the
  data always matches it. Images are fed in the compute dtype of the Keras
  precision policy (bfloat16 under 'mixed_bfloat16').

  Args:
    model_fn: no-argument callable returning a built `Classifier` (e.g.
      `functools.partial(registry.build_classifier, '49', num_classes=1000)`).
    train_data: `ClassificationDataOptions` of the training split.
    eval_data: `ClassificationDataOptions` of the evaluation split (None:
      no evaluation).
    label_smoothing: float in [0, 1), of the training loss.
    check_labels: read the first labels of each split when its input is
      built and fail early, with a fix, if they do not fit the model.

  Example:
    ```python
    task = ClassificationTask(
        functools.partial(registry.build_classifier, '49', 1000),
        train_data=ClassificationDataOptions(tfds_name='imagenet2012'),
        eval_data=ClassificationDataOptions(tfds_name='imagenet2012',
                                            tfds_split='validation'),
        label_smoothing=0.1)
    train_lib.run_experiment(task, 'train_and_eval', model_dir)
    ```
  """

  loss_names = ('model_loss',)

  def __init__(self, model_fn: Callable,
               train_data: Optional[ClassificationDataOptions] = None,
               eval_data: Optional[ClassificationDataOptions] = None,
               label_smoothing: float = 0.0, check_labels: bool = True):
    if not 0.0 <= label_smoothing < 1.0:
      raise ValueError('`label_smoothing` must be in [0, 1). Received: '
                       f'label_smoothing={label_smoothing}')
    self._model_fn = model_fn
    self.train_data = train_data
    self.eval_data = eval_data
    self.label_smoothing = float(label_smoothing)
    self.check_labels = check_labels
    self._input_size = None
    self._num_classes = None

  # === Model ===
  def build_model(self):
    model = self._model_fn()
    shape = model.backbone.input_shape[1:3]
    if None in shape:
      raise ValueError('ClassificationTask needs a model built for a fixed '
                       f'input size; got input shape {model.backbone.input_shape}.'
                       ' Set `input_size` of the model builder.')
    self._input_size = tuple(int(s) for s in shape)
    self._num_classes = int(model.head.num_classes)
    return model

  @property
  def input_size(self):
    self._require_model()
    return self._input_size

  @property
  def num_classes(self):
    self._require_model()
    return self._num_classes

  def _require_model(self):
    if self._input_size is None:
      raise RuntimeError('ClassificationTask: call `build_model()` before '
                         'building inputs or losses (they follow the model).')

  # === Inputs ===
  def build_inputs(self, training, input_context=None):
    data = self.train_data if training else self.eval_data
    if data is None:
      split = 'train_data' if training else 'eval_data'
      raise ValueError(f'ClassificationTask.{split} is not set; bind it in gin '
                       f'(e.g. `ClassificationTask.{split} = '
                       f'@{split.split("_")[0]}/ClassificationDataOptions()`).')
    if self.check_labels and (input_context is None or
                              input_context.input_pipeline_id == 0):
      classification_input.check_labels(data, self.num_classes)
    dtype = keras.mixed_precision.global_policy().compute_dtype
    return classification_input.build_dataset(
        data, self.input_size, training, input_context, dtype=dtype)

  # === Losses ===
  def build_losses(self, outputs, labels):
    """Mean smoothed cross-entropy of this replica's batch (on device).

    Every replica has the same batch size, so the mean over replicas of the
    per-replica means is the global batch's mean.
    """
    loss = cross_entropy(outputs, labels['label'], self.num_classes,
                         self.label_smoothing)
    return {'model_loss': tf.reduce_mean(loss)}

  # === Evaluation ===
  def validation_step(self, inputs, model):
    images, labels = inputs
    logits = tf.cast(model(images, training=False), tf.float32)
    label = labels['label']
    k = min(5, self.num_classes)
    top_k = tf.math.in_top_k(label, logits, k)
    top_1 = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), label)
    valid = labels.get('valid', tf.ones_like(label, tf.bool))
    return {'top_1_correct': tf.cast(top_1, tf.float32),
            'top_5_correct': tf.cast(top_k, tf.float32),
            'loss': cross_entropy(logits, label, self.num_classes),
            'valid': valid}

  def build_evaluator(self):
    return ClassificationEvaluator()
