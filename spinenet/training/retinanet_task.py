"""The RetinaNet detection task: model, COCO-style inputs, losses, COCO metrics."""
import dataclasses
from typing import Callable, Dict, Optional

import tensorflow as tf

from spinenet.data import decoder as decoder_lib
from spinenet.data import detection_parser
from spinenet.data import pipeline
from spinenet.data import tfds_source
from spinenet.training import base_task
from spinenet.training import coco_evaluator
from spinenet.training import detection_model_info
from spinenet.training import detection_records
from spinenet.training import losses as losses_lib


@dataclasses.dataclass(frozen=True)
class DataOptions:
  """Where a split's records are and how they are read and augmented.

  Attributes:
    file_pattern: glob(s) of TFRecord files (`spinenet-create-coco-tfrecord`
      output), comma-separated; local or `gs://`.
    global_batch_size: examples per step over all replicas.
    shuffle_buffer: training shuffle buffer (10,000: the Model Garden's
      `shuffle_buffer_size`; serialized COCO records average ~160 KB, so
      ~1.6 GB of host memory per input pipeline).
    cache: keep serialized records in memory (small datasets).
    aug_rand_hflip: random horizontal flip (training).
    aug_scale_min, aug_scale_max: scale jitter range (training).
    match_threshold, unmatched_threshold: anchor IoU thresholds.
    max_num_instances: ground-truth boxes kept per evaluation image.
    crowd_as_ignore: training only. False (default, as the authors' TF1
      code and the Model Garden: `skip_crowd_during_training`): crowd boxes
      are dropped before anchor labeling, so anchors on crowds count as
      background. True: crowd boxes are not targets but anchors whose IoU
      with one reaches `unmatched_threshold` (and that match no other box)
      are ignored, neither positive nor negative.
    seed: optional seed of file order, shuffling and augmentation.
    tfds_name: a prepared TFDS detection dataset instead of `file_pattern`,
      e.g. 'coco/2017' or 'voc/2007' (`data.tfds_source`: category ids as
      in the records path, COCO's 1..90, others label + 1).
    tfds_split: its split, e.g. 'train', 'validation', 'train[:10%]'.
    tfds_data_dir: TFDS data directory (None: TFDS's default).
  """
  file_pattern: str = ''
  global_batch_size: int = 64
  shuffle_buffer: int = 10000
  cache: bool = False
  aug_rand_hflip: bool = True
  aug_scale_min: float = 1.0
  aug_scale_max: float = 1.0
  match_threshold: float = 0.5
  unmatched_threshold: float = 0.5
  max_num_instances: int = 100
  crowd_as_ignore: bool = False
  seed: Optional[int] = None
  tfds_name: str = ''
  tfds_split: str = ''
  tfds_data_dir: Optional[str] = None

  def __post_init__(self):
    if self.global_batch_size < 1:
      raise ValueError('`global_batch_size` must be >= 1. Received: '
                       f'global_batch_size={self.global_batch_size}')
    if self.tfds_name and self.file_pattern:
      raise ValueError('DataOptions: set `file_pattern` (TFRecords) or '
                       f'`tfds_name` (TFDS), not both. Received: file_pattern='
                       f'{self.file_pattern!r}, tfds_name={self.tfds_name!r}')
    if self.tfds_name and not self.tfds_split:
      raise ValueError(f'DataOptions: tfds_name={self.tfds_name!r} needs '
                       "`tfds_split` (e.g. 'train' or 'validation').")


class RetinaNetTask(base_task.Task):
  """RetinaNet on COCO-format TFRecords.

  The parsers take the input size, levels and anchors from the built model,
  so the targets always match the head.

  Args:
    model_fn: no-argument callable returning a built `RetinaNet` (e.g.
      `functools.partial(registry.build_retinanet, '49', num_classes=91)`).
    train_data: `DataOptions` of the training split.
    eval_data: `DataOptions` of the evaluation split (None: no evaluation).
    losses: `losses.LossOptions`.
    annotation_json: optional COCO JSON of the evaluation split; without it
      the ground truth is rebuilt from the evaluation records.
    label_map: optional dict category id -> name, for per-class metrics.
    per_category_metrics: also report AP per category.
  """

  loss_names = ('model_loss', 'cls_loss', 'box_loss')

  def __init__(self, model_fn: Callable, train_data: DataOptions = DataOptions(),
               eval_data: Optional[DataOptions] = None,
               losses: losses_lib.LossOptions = losses_lib.LossOptions(),
               annotation_json: Optional[str] = None,
               label_map: Optional[Dict[int, str]] = None,
               per_category_metrics: bool = False):
    self._model_fn = model_fn
    self.train_data = train_data
    self.eval_data = eval_data
    self.loss_options = losses
    self.annotation_json = annotation_json or None
    self.label_map = label_map
    self.per_category_metrics = per_category_metrics
    self._info = None
    self._loss = None

  # === Model ===
  def build_model(self):
    model = self._model_fn()
    self._info = detection_model_info.model_info(
        model, model.head.get_config()['num_classes'], 'RetinaNetTask')
    self._loss = losses_lib.RetinaNetLoss(self._info.num_classes, self.loss_options)
    return model

  @property
  def info(self):
    if self._info is None:
      raise RuntimeError('RetinaNetTask: call `build_model()` before building '
                         'inputs or losses (they follow the model).')
    return self._info

  # === Inputs ===
  def build_parser(self, training: bool):
    info = self.info
    data = self.train_data if training else self.eval_data
    if training:
      return detection_parser.TrainParser(
          info.input_size, min_level=info.min_level, max_level=info.max_level,
          num_scales=info.num_scales, aspect_ratios=info.aspect_ratios,
          anchor_size=info.anchor_size, match_threshold=data.match_threshold,
          unmatched_threshold=data.unmatched_threshold,
          aug_rand_hflip=data.aug_rand_hflip, aug_scale_min=data.aug_scale_min,
          aug_scale_max=data.aug_scale_max,
          crowd_as_ignore=data.crowd_as_ignore)
    return detection_parser.EvalParser(
        info.input_size, max_level=info.max_level,
        max_num_instances=data.max_num_instances)

  def build_inputs(self, training, input_context=None):
    data = self.train_data if training else self.eval_data
    split = 'train_data' if training else 'eval_data'
    if data is not None and data.tfds_name:
      return self._build_tfds_inputs(data, split, training, input_context)
    num_classes = self.info.num_classes
    return detection_records.build_records_dataset(
        data, task_name='RetinaNetTask', options_name='DataOptions', split=split,
        decode_fn=decoder_lib.DetectionDecoder(decode_image=False).decode,
        build_parser=lambda: self.build_parser(training), num_classes=num_classes,
        training=training, input_context=input_context,
        make_check_fn=lambda source_name: lambda images, labels: (
            images, detection_parser.check_class_ids(labels, num_classes,
                                                     source_name)))

  def _build_tfds_inputs(self, data, split, training, input_context):
    source_name = f'RetinaNetTask.{split}.tfds_name={data.tfds_name!r}'
    num_classes = self.info.num_classes
    examples, decoder, labels = tfds_source.load(
        data.tfds_name, data.tfds_split, training, input_context,
        data.tfds_data_dir, data.seed)
    largest = max(labels)
    if largest >= num_classes:
      raise ValueError(
          f'{source_name}: category ids go up to {largest} but the model has '
          f'num_classes={num_classes} (gin NUM_CLASSES); set NUM_CLASSES to at '
          f'least {largest + 1}.')
    return pipeline.build_dataset(
        examples, decoder.decode, self.build_parser(training),
        data.global_batch_size, training, input_context,
        shuffle_buffer=data.shuffle_buffer, cache=data.cache, seed=data.seed,
        source_name=source_name,
        check_fn=lambda images, labels: (images, detection_parser.
                                         check_class_ids(labels, num_classes,
                                                         source_name)))

  # === Losses ===
  def build_losses(self, outputs, labels):
    """This replica's losses, normalized as `LossOptions.normalizer_scope` says.

    The base task averages `model_loss` over replicas (gradients summed
    after scaling by `1 / num_replicas`).

    * 'replica' (the references' behaviour): sums over this replica's
      anchors divided by this replica's positives + 1; the training loss is
      the mean of the replicas' losses.
    * 'global': divided by the positives of all replicas (+1) and multiplied
      by the number of replicas, so the mean over replicas is the loss of the
      global batch whatever the split.
    """
    if self.loss_options.normalizer_scope == 'replica':
      return self._loss(outputs, labels)
    ctx = tf.distribute.get_replica_context()
    local = tf.reduce_sum(labels['box_weights'])
    num_replicas = ctx.num_replicas_in_sync if ctx is not None else 1
    total = (ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)
             if num_replicas > 1 else local)
    losses = self._loss(outputs, labels, num_positives=total)
    return {k: v * float(num_replicas) for k, v in losses.items()}

  # === Evaluation ===
  def validation_step(self, inputs_, model):
    images, labels = inputs_
    outputs = model(images, training=False)
    image_info = labels['image_info']
    detections = model.postprocess(outputs, self.info.input_size,
                                   image_shape=image_info[:, 1, :])
    result = dict(detections, source_id=labels['source_id'],
                  image_info=image_info)
    if 'valid' in labels:
      result['valid'] = labels['valid']
    if self.annotation_json is None:
      result['groundtruths'] = labels['groundtruths']
    return result

  def build_evaluator(self):
    return coco_evaluator.CocoEvaluator(
        self.annotation_json, label_map=self.label_map,
        per_category=self.per_category_metrics)
