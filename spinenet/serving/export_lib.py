"""Exports a trained model as a versioned SavedModel that TF Serving loads as is.

`export_saved_model(model_fn, export_dir, checkpoint=...)` writes
`export_dir/<version>/` (tag `serve`) with the signatures of
`signatures.SIGNATURES`, the label map and an `export_info.json` as assets.
The version directory is written under a temporary name and renamed when
complete, so a TF Serving instance polling `export_dir` never loads half of
it. It takes built objects (a model function, a label map, `ExportOptions`);
`spinenet.config.export_from_config` builds them from gin files (what
`spinenet-export` and the demo call).

Export options (`ExportOptions`):

* `fold_batch_norm` (default on): the network is frozen into constants and
  every batch norm folded into its convolution (`fold_batch_norm`); outputs
  equal the Keras model's to float rounding. Off: the Keras model's variables
  are saved as they are.
* `precision='bfloat16'`: the network computes in bfloat16 (Keras
  `mixed_bfloat16`); pre- and post-processing stay float32. Worth it on CPUs
  with AVX512-BF16 or AMX (and TPUs); elsewhere bfloat16 is emulated.
* `mask_format` (Mask R-CNN): 'dense' (default) adds `detection_masks` uint8
  `[B, N, H, W]`; 'png' adds `detection_masks_png_bytes` string `[B, N]`
  instead, one PNG per detection (REST responses of a few kilobytes rather
  than megabytes). See `signatures` and docs/serving.md.

Models: RetinaNet ('detection'), Mask R-CNN ('instance_segmentation': the
whole network, proposals, heads and detection post-processing included, is
frozen; masks are pasted into the caller's pixels after it) and classifiers
('classification').
"""
import dataclasses
import json
import os
import re
import tempfile
import time
from typing import Callable, Dict, Optional, Sequence

from absl import logging
import tensorflow as tf
import tf_keras as keras

import spinenet
from spinenet.data import coco_converter
from spinenet.modeling import classifier as classifier_lib
from spinenet.modeling import maskrcnn as maskrcnn_lib
from spinenet.modeling import retinanet as retinanet_lib
from spinenet.modeling import winograd_conv
from spinenet.serving import export_module
from spinenet.serving import inference_graph
from spinenet.serving import preprocessing
from spinenet.serving import signatures as sig
from spinenet.serving import versions

PRECISIONS = ('float32', 'bfloat16')
_KERAS_POLICY = {'float32': 'float32', 'bfloat16': 'mixed_bfloat16'}


@dataclasses.dataclass(frozen=True)
class ExportOptions:
  """How the network is exported.

  Attributes:
    precision: 'float32' or 'bfloat16' (compute dtype of the network).
    fold_batch_norm: freeze the network and fold batch norms into convs.
    max_image_pixels: larger input images are refused (decompression bombs).
    top_k: classification: classes reported per image.
    center_crop_fraction: classification: central crop side / short side.
    mask_format: Mask R-CNN: 'dense' (`detection_masks` uint8 [B, N, H, W])
      or 'png' (`detection_masks_png_bytes` string [B, N]).
  """
  precision: str = 'float32'
  fold_batch_norm: bool = True
  max_image_pixels: int = preprocessing.DEFAULT_MAX_PIXELS
  top_k: int = 5
  center_crop_fraction: float = preprocessing.CENTER_CROP_FRACTION
  mask_format: str = 'dense'

  def __post_init__(self):
    if self.precision not in PRECISIONS:
      raise ValueError(f'`precision` must be one of {PRECISIONS}. Received: '
                       f'precision={self.precision!r}')
    if self.max_image_pixels < 1:
      raise ValueError('`max_image_pixels` must be >= 1. Received: '
                       f'max_image_pixels={self.max_image_pixels}')
    if self.top_k < 1:
      raise ValueError(f'`top_k` must be >= 1. Received: top_k={self.top_k}')
    if not 0.0 < self.center_crop_fraction <= 1.0:
      raise ValueError('`center_crop_fraction` must be in (0, 1]. Received: '
                       f'center_crop_fraction={self.center_crop_fraction}')
    if self.mask_format not in sig.MASK_FORMATS:
      raise ValueError(f'`mask_format` must be one of {sig.MASK_FORMATS}. Received: '
                       f'mask_format={self.mask_format!r}')


@dataclasses.dataclass(frozen=True)
class ExportResult:
  """Where an export went and what it holds."""
  path: str
  version: int
  task: str
  info: dict


def resolve_checkpoint(checkpoint: str) -> str:
  """A checkpoint prefix from a prefix or a directory (its latest checkpoint)."""
  if tf.io.gfile.isdir(checkpoint):
    latest = tf.train.latest_checkpoint(checkpoint)
    if latest is None:
      raise ValueError(f'--checkpoint={checkpoint} is a directory without a '
                       'checkpoint; pass a model_dir that training wrote to, or a '
                       'checkpoint prefix such as model_dir/ckpt-1500.')
    return latest
  if not tf.io.gfile.exists(checkpoint + '.index'):
    raise ValueError(f'--checkpoint={checkpoint}: no such checkpoint (expected '
                     f'{checkpoint}.index); pass a checkpoint prefix or a model_dir.')
  return checkpoint


def restore_weights(model, checkpoint: str) -> str:
  """Restores `tf.train.Checkpoint(model=...)` weights; returns the prefix read.

  Raises:
    ValueError: the checkpoint lacks weights of `model` (another model, or
      another size of it).
  """
  path = resolve_checkpoint(checkpoint)
  try:
    status = tf.train.Checkpoint(model=model).read(path)
    status.assert_existing_objects_matched()
  except (AssertionError, ValueError) as e:
    raise ValueError(
        f'--checkpoint={path} does not hold the weights of the model built from '
        f'the configuration ({model.name}); is it the same model id, widths and '
        f'number of classes? Details: {str(e)[:500]}') from None
  status.expect_partial()
  return path


# One version scanner for export and serving (`versions`); kept by name here.
next_version = versions.next_version


def build_model(model_fn: Callable, precision: str = 'float32'):
  """Calls `model_fn()` under the Keras policy of `precision`.

  Winograd convolutions (a CPU training option) are switched back to
  direct ones: the export must be plain TensorFlow ops for TF Serving and the
  batch-norm folding pass. The weights are the same either way.
  """
  if precision not in PRECISIONS:
    raise ValueError(f'`precision` must be one of {PRECISIONS}. Received: '
                     f'precision={precision!r}')
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(_KERAS_POLICY[precision])
  try:
    model = model_fn()
  finally:
    keras.mixed_precision.set_global_policy(previous)
  if winograd_conv.use_direct_convolutions(model):
    logging.info('export uses direct convolutions in place of Winograd ones')
  return model


def _task_of(model):
  if isinstance(model, retinanet_lib.RetinaNet):
    return 'detection'
  if isinstance(model, maskrcnn_lib.MaskRCNN):
    return 'instance_segmentation'
  if isinstance(model, classifier_lib.Classifier):
    return 'classification'
  raise TypeError(f'Cannot export a {type(model).__name__}; expected a '
                  'spinenet RetinaNet, MaskRCNN or Classifier.')


def _num_classes(model):
  head = model.box_head if isinstance(model, maskrcnn_lib.MaskRCNN) else model.head
  return int(head.get_config()['num_classes'])


def _maskrcnn_network(model, input_size, fold_batch_norm):
  """`(network(images, image_info) -> detections, variables, folded count)`.

  Only the detection outputs leave the network (the RPN maps are not
  computed for nothing).
  """
  keys = ('detection_boxes', 'detection_scores', 'detection_classes',
          'num_detections', 'detection_masks')

  def detect(images, image_info):
    outputs = model({'images': images, 'image_info': image_info}, training=False)
    return {k: outputs[k] for k in keys}

  if not fold_batch_norm:
    return detect, model.variables, None
  frozen = inference_graph.freeze(
      detect, [tf.TensorSpec([None, *input_size, 3], tf.float32),
               tf.TensorSpec([None, 4, 2], tf.float32)], lower_control_flow=False)
  return frozen, (), len(frozen.fold_report.folded)


def class_mapping(num_classes: int, label_map: Optional[Dict[int, str]],
                  class_to_category: Optional[Sequence[int]], task: str):
  """Checks and completes the class index -> category id map.

  Args:
    num_classes: outputs of the model (detection: background index 0
      included).
    label_map: optional dict category id -> name.
    class_to_category: optional category id of each class index; default
      the identity (what `spinenet-create-coco-tfrecord` records hold).
    task: 'detection' or 'classification' (for messages).

  Returns:
    list of `num_classes` category ids.
  """
  if class_to_category is None:
    class_to_category = list(range(num_classes))
  class_to_category = [int(c) for c in class_to_category]
  if len(class_to_category) != num_classes:
    raise ValueError(f'`class_to_category` has {len(class_to_category)} entries '
                     f'but the {task} model has {num_classes} classes.')
  unreachable = sorted(set(label_map or {}) - set(class_to_category))
  if unreachable:
    raise ValueError(
        f'Label map category ids {unreachable[:10]} cannot be predicted by a model '
        f'with {num_classes} classes (class index = category id). Is NUM_CLASSES '
        f'right (it must exceed the largest category id, {max(unreachable)}), or '
        'is this the label map of another dataset?')
  return class_to_category


def build_export_module(model, options: ExportOptions = ExportOptions(),
                        label_map: Optional[Dict[int, str]] = None,
                        class_to_category: Optional[Sequence[int]] = None,
                        assets: Sequence[str] = ()):
  """The `tf.Module` to save for `model` (built under `options.precision`).

  Returns:
    `(module, info)`: an `export_module.DetectionExportModule`,
    `MaskRCNNExportModule` or `ClassificationExportModule`, and a dict
    describing it.
  """
  task = _task_of(model)
  if task != 'instance_segmentation' and options.mask_format != 'dense':
    raise ValueError(f'--mask_format={options.mask_format} applies to Mask R-CNN models; '
                     f'{model.name} is a {task} model without masks.')
  input_size = export_module.network_input_size(model)
  if input_size is None:
    raise ValueError(f'{model.name} was built for any input size; build it with '
                     '`input_size` set (e.g. build_retinanet.input_size = 640).')
  num_classes = _num_classes(model)
  categories = class_mapping(num_classes, label_map, class_to_category, task)
  spec = tf.TensorSpec([None, *input_size, 3], tf.float32)
  names = dict(label_map or {})
  info = dict(task=task, model=model.name, input_size=list(input_size),
              num_classes=num_classes, precision=options.precision,
              fold_batch_norm=options.fold_batch_norm,
              max_image_pixels=options.max_image_pixels,
              signatures={s: sig.INPUT_KEYS[s] for s in sig.SIGNATURES},
              spinenet_version=spinenet.__version__)
  if task == 'instance_segmentation':
    network, variables, folded = _maskrcnn_network(model, input_size,
                                                   options.fold_batch_norm)
    if folded is not None:
      info['batch_norms_folded'] = folded
    info.update(detection_config=dataclasses.asdict(model.detection_config),
                mask_format=options.mask_format,
                mask_output=sig.MASK_OUTPUTS[options.mask_format])
    module = export_module.MaskRCNNExportModule(
        network, input_size, categories, names, mask_format=options.mask_format,
        variables=variables, max_image_pixels=options.max_image_pixels, assets=assets)
    return module, info
  if options.fold_batch_norm:
    network = inference_graph.freeze(lambda x: model(x, training=False), [spec])
    info['batch_norms_folded'] = len(network.fold_report.folded)
    variables = ()
  else:
    network = lambda x: model(x, training=False)  # noqa: E731
    variables = model.variables
  kwargs = dict(variables=variables, max_image_pixels=options.max_image_pixels,
                assets=assets)
  if task == 'detection':
    detection_config = dataclasses.asdict(model.detection_config)
    info['detection_config'] = detection_config
    module = export_module.DetectionExportModule(
        network, lambda outputs, valid: model.postprocess(outputs, input_size, valid),
        input_size, categories, names, **kwargs)
  else:
    info.update(top_k=options.top_k, center_crop_fraction=options.center_crop_fraction)
    module = export_module.ClassificationExportModule(
        network, input_size, categories, names, top_k=options.top_k,
        center_crop_fraction=options.center_crop_fraction, **kwargs)
  return module, info


def export_saved_model(model_fn: Callable, export_dir: str, *,
                       checkpoint: Optional[str] = None,
                       version: Optional[int] = None,
                       label_map: Optional[Dict[int, str]] = None,
                       class_to_category: Optional[Sequence[int]] = None,
                       options: ExportOptions = ExportOptions()) -> ExportResult:
  """Builds, restores and exports a model as `export_dir/<version>/`.

  Args:
    model_fn: no-argument callable returning a built RetinaNet, MaskRCNN or
      Classifier (e.g. a gin task's `build_model`).
    export_dir: the model's base path (TF Serving's `--model_base_path`);
      local or `gs://`.
    checkpoint: checkpoint prefix or model_dir; None exports the weights
      `model_fn` made (tests, untrained models).
    version: int >= 1; default: one more than the largest existing version.
    label_map: optional dict category id -> name.
    class_to_category: optional category id per class index (default the
      identity).
    options: `ExportOptions`.

  Returns:
    `ExportResult`.

  Raises:
    ValueError: bad checkpoint, version already present, label map that does
      not fit the model.
  """
  start = time.monotonic()
  if version is None:
    version = versions.next_version(export_dir)
  if version < 1:
    raise ValueError(f'--version must be >= 1 (TF Serving versions are positive '
                     f'integers). Received: {version}')
  final = os.path.join(export_dir, str(version))
  if tf.io.gfile.exists(final):
    raise ValueError(f'{final} already exists; pass another --version (next free: '
                     f'{versions.next_version(export_dir)}) or remove it.')
  model = build_model(model_fn, options.precision)
  restored = restore_weights(model, checkpoint) if checkpoint else None
  with tempfile.TemporaryDirectory() as scratch:
    asset_paths = [os.path.join(scratch, sig.LABEL_MAP_ASSET),
                   os.path.join(scratch, sig.EXPORT_INFO_ASSET)]
    module, info = build_export_module(model, options, label_map, class_to_category,
                                       assets=asset_paths)
    info.update(version=version, checkpoint=restored)
    coco_converter.write_label_map(asset_paths[0], dict(label_map or {}))
    with open(asset_paths[1], 'w') as f:
      json.dump(info, f, indent=1, sort_keys=True)
    local = '://' not in export_dir
    target = (os.path.join(export_dir, f'.tmp-{version}-{os.getpid()}') if local
              else final)
    tf.io.gfile.makedirs(export_dir)
    tf.saved_model.save(module, target, signatures=module.signatures(),
                        options=tf.saved_model.SaveOptions(
                            experimental_custom_gradients=False))
    if local:
      os.rename(target, final)
  logging.info('exported %s (%s, %s%s) to %s in %.0f s', model.name, info['task'],
               options.precision, ', batch norms folded' if options.fold_batch_norm
               else '', final, time.monotonic() - start)
  return ExportResult(path=final, version=version, task=info['task'], info=info)


def find_label_map(file_patterns: Sequence[str]) -> Optional[str]:
  """The `PREFIX.label_map.json` next to TFRecords matching one of the patterns.

  `spinenet-create-coco-tfrecord` writes `PREFIX-NNNNN-of-NNNNN.tfrecord`
  shards and `PREFIX.label_map.json`.
  """
  for pattern in file_patterns:
    for part in (p.strip() for p in (pattern or '').split(',') if p.strip()):
      for path in sorted(tf.io.gfile.glob(part))[:1]:
        match = re.match(r'^(.*)-\d+-of-\d+\.tfrecord$', path)
        if match and tf.io.gfile.exists(coco_converter.label_map_path(match.group(1))):
          return coco_converter.label_map_path(match.group(1))
  return None


def label_map_for(label_map_path: Optional[str] = None,
                  file_patterns: Sequence[str] = ()) -> Optional[Dict[int, str]]:
  """The label map to export: `label_map_path`, else the records', else None.

  Args:
    label_map_path: a label map JSON, or None to look next to the records.
    file_patterns: TFRecord patterns of the model's data (evaluation first);
      `find_label_map` looks for the label map written beside them.

  Returns:
    dict category id -> name, or None (class names will be the category ids).
  """
  if label_map_path is None:
    label_map_path = find_label_map(file_patterns)
    if label_map_path:
      logging.info('using the label map of the records: %s', label_map_path)
    else:
      logging.warning('no label map given or found next to the records; class '
                      'names will be the category ids (pass --label_map).')
  return coco_converter.read_label_map(label_map_path) if label_map_path else None
