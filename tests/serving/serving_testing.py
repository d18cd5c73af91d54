"""Shared by the serving tests: tiny models with weights that detect things.

The RetinaNet is SpineNet-49S at 128 px with quarter widths, 16-wide
endpoints, a one-conv head and five blocks (one output block per level), so
building and exporting it takes seconds. Freshly initialized, RetinaNet
detects nothing (the class bias starts at the 0.01 prior, below the 0.05
score threshold) and its batch norms are identities, which would make export
and folding tests vacuous: `randomize` gives every batch norm random
statistics and the predictors random weights, so an image yields dozens of
boxes of varied classes and scores.
"""
import atexit
import functools
import io
import os
import shutil
import struct
import tempfile
import threading
import zlib

import numpy as np
from PIL import Image
import tensorflow as tf
import tf_keras as keras

from spinenet.data import detection_parser
from spinenet.modeling import registry
from spinenet.serving import export_lib

NUM_CLASSES = 5
INPUT_SIZE = 128
LABEL_MAP = {1: 'circle', 2: 'square', 3: 'triangle', 4: 'cross'}
BLOCK_SPECS = ((3, 'bottleneck', (0, 1), True),
               (4, 'residual', (0, 2), True),
               (5, 'residual', (2, 3), True),
               (7, 'residual', (3, 4), True),
               (6, 'bottleneck', (4, 5), True))
MOBILE_BLOCK_SPECS = tuple((level, 'mbconv', parents, out)
                           for level, _, parents, out in BLOCK_SPECS)
MODEL_ARGS = dict(num_classes=NUM_CLASSES, input_size=INPUT_SIZE,
                  filter_size_scale=0.25, endpoints_num_filters=16,
                  head_filters=16, head_convs=1, block_specs=BLOCK_SPECS)
GIN_PARAMS = [
    f'build_retinanet.input_size = {INPUT_SIZE}',
    'build_retinanet.filter_size_scale = 0.25',
    'build_retinanet.endpoints_num_filters = 16',
    'build_retinanet.head_filters = 16',
    'build_retinanet.head_convs = 1',
    f'build_retinanet.block_specs = {BLOCK_SPECS!r}',
]


def randomize(model, seed=0):
  """Random batch-norm statistics and predictor weights (in place)."""
  rng = np.random.default_rng(seed)
  for layer in model.submodules:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
      layer.beta.assign(rng.normal(0.0, 0.2, layer.beta.shape))
      layer.moving_mean.assign(rng.normal(0.0, 0.2, layer.moving_mean.shape))
      layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    elif layer.name in ('class_predictor', 'box_predictor'):
      for weight in layer.weights:
        if 'bias' in weight.name:
          weight.assign(np.full(weight.shape, -2.0 if 'class' in layer.name else 0.0))
        else:
          std = 0.3 if 'class' in layer.name else 0.05
          weight.assign(rng.normal(0.0, std, weight.shape))
  return model


def retinanet_fn(seed=0, **overrides):
  """No-argument builder of the tiny, randomized RetinaNet."""
  def build():
    keras.utils.set_random_seed(seed)
    model = registry.build_retinanet('49S', **dict(MODEL_ARGS, **overrides))
    return randomize(model, seed)
  return build


def classifier_fn(seed=0, num_classes=NUM_CLASSES):
  """No-argument builder of a tiny classifier with random batch norms."""
  def build():
    keras.utils.set_random_seed(seed)
    model = registry.build_classifier(
        '49S', num_classes=num_classes, input_size=INPUT_SIZE,
        filter_size_scale=0.25, endpoints_num_filters=16, block_specs=BLOCK_SPECS)
    randomize(model, seed)
    rng = np.random.default_rng(seed + 1)
    model.head.linear.kernel.assign(rng.normal(0, 1.0, model.head.linear.kernel.shape))
    return model
  return build


MASKRCNN_ARGS = dict(num_classes=NUM_CLASSES, input_size=INPUT_SIZE,
                     filter_size_scale=0.25, endpoints_num_filters=16,
                     block_specs=BLOCK_SPECS, rpn_filters=16, box_convs=1,
                     box_filters=16, fc_dims=32, mask_convs=1, mask_filters=16)


def maskrcnn_fn(seed=0, max_detections=20):
  """No-argument builder of a tiny Mask R-CNN with random statistics and heads.

  50 proposals and `max_detections` detections keep it quick; the mask
  predictor's random weights and positive bias give masks of varied shapes
  covering part of each box (freshly initialized, every mask probability
  is about 0.5, on the threshold).
  """
  from spinenet.modeling import maskrcnn  # pylint: disable=g-import-not-at-top

  def build():
    keras.utils.set_random_seed(seed)
    model = registry.build_maskrcnn(
        '49S', proposal_config=maskrcnn.ProposalConfig(
            test_pre_nms_top_k=200, test_num_proposals=50),
        detection_config=maskrcnn.DetectionConfig(max_detections=max_detections),
        **MASKRCNN_ARGS)
    randomize(model, seed)
    rng = np.random.default_rng(seed + 2)
    for layer in model.submodules:
      # (kernel std, bias): the mask bias makes about half of each mask's cells
      # exceed 0.5 whatever the random features are.
      std, bias = {'box_class_predictor': (0.03, 0.0),
                   'mask_predictor': (0.3, 0.5)}.get(layer.name, (None, None))
      if std:
        for weight in layer.weights:
          weight.assign(rng.normal(0.0, std, weight.shape) if 'kernel' in weight.name
                        else np.full(weight.shape, bias))
    return model
  return build


def keras_maskrcnn(model, pixels):
  """The Keras Mask R-CNN's detections of `pixels`, through the evaluation parser.

  The model's Winograd head convs are switched to direct ones first, as the
  export runs them (`export_lib`), so that a score at the threshold or an NMS
  tie cannot go differently by float rounding; that Winograd and direct heads
  agree is `tests/modeling/maskrcnn_test.py`'s.

  Returns:
    dict of NumPy `boxes` `[N, 4]` (pixels of `pixels`, clipped), `scores`,
    `classes` (class indices) and `masks` uint8 `[N, H, W]` (each box-relative
    mask pasted over its unclipped box in `pixels`' frame, > 0.5).
  """
  from spinenet.modeling import winograd_conv  # pylint: disable=g-import-not-at-top
  from spinenet.ops import mask_ops  # pylint: disable=g-import-not-at-top
  winograd_conv.use_direct_convolutions(model)
  parser = detection_parser.EvalParser(INPUT_SIZE)
  data = {'image': tf.constant(pixels), 'source_id': tf.constant('1'),
          'groundtruth_boxes': tf.zeros([0, 4]),
          'groundtruth_classes': tf.zeros([0], tf.int32),
          'groundtruth_is_crowd': tf.zeros([0], tf.bool),
          'groundtruth_area': tf.zeros([0])}
  inputs, labels = parser(data)
  info = labels['image_info']
  out = model({'images': inputs[tf.newaxis], 'image_info': info[tf.newaxis]},
              training=False)
  num = int(out['num_detections'][0])
  boxes = out['detection_boxes'][0, :num] / tf.tile(info[2], [2])
  h, w = pixels.shape[:2]
  masks = mask_ops.binarize(mask_ops.paste_masks(out['detection_masks'][0, :num],
                                                 boxes, h, w))
  return {'boxes': np.minimum(np.maximum(boxes.numpy(), 0), [h, w, h, w]),
          'scores': out['detection_scores'][0, :num].numpy(),
          'classes': out['detection_classes'][0, :num].numpy(),
          'masks': masks.numpy()}


def image(height=96, width=144, seed=0):
  """A uint8 `[H, W, 3]` image with smooth structure (not pure noise)."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width]
  base = np.stack([np.sin(x / 7.0 + c) * np.cos(y / 9.0 - c) for c in range(3)], -1)
  pixels = 127.5 + 100 * base + rng.normal(0, 10, (height, width, 3))
  return np.clip(pixels, 0, 255).astype(np.uint8)


def encode(pixels, fmt='PNG'):
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=fmt)
  return buffer.getvalue()


def tf_example(encoded):
  return tf.train.Example(features=tf.train.Features(feature={
      'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
  })).SerializeToString()


def png_header(height, width):
  """The first 33 bytes of a PNG claiming `height` x `width` (a decompression bomb)."""
  ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  chunk = b'IHDR' + ihdr
  return (b'\x89PNG\r\n\x1a\n' + struct.pack('>I', len(ihdr)) + chunk +
          struct.pack('>I', zlib.crc32(chunk)))


def write_checkpoint(model, directory):
  """Saves `tf.train.Checkpoint(model=model)` in `directory`; returns the prefix."""
  os.makedirs(directory, exist_ok=True)
  return tf.train.Checkpoint(model=model).save(os.path.join(directory, 'ckpt'))


@functools.lru_cache(maxsize=None)
def exported_detector(max_image_pixels=40_000):
  """`(export base path, model)`: the tiny detector exported once per process.

  Identity class map, `LABEL_MAP` names, batch norms folded, images over
  `max_image_pixels` refused. The directory lives until the process exits.
  """
  model = retinanet_fn(seed=0)()
  base = tempfile.mkdtemp()
  atexit.register(shutil.rmtree, base, ignore_errors=True)
  export_lib.export_saved_model(
      lambda: model, base, label_map=LABEL_MAP,
      options=export_lib.ExportOptions(max_image_pixels=max_image_pixels))
  return base, model


@functools.lru_cache(maxsize=None)
def exported_maskrcnn(mask_format='dense'):
  """`(export base path, model)`: the tiny Mask R-CNN exported once per process."""
  model = maskrcnn_fn(seed=0)()
  base = tempfile.mkdtemp()
  atexit.register(shutil.rmtree, base, ignore_errors=True)
  export_lib.export_saved_model(
      lambda: model, base, label_map=LABEL_MAP,
      options=export_lib.ExportOptions(mask_format=mask_format))
  return base, model


def keras_detections(model, pixels):
  """The Keras model's detections of `pixels`, through the evaluation parser.

  Returns:
    dict of NumPy `boxes` `[N, 4]` (ymin, xmin, ymax, xmax in pixels of
    `pixels`), `scores` `[N]`, `classes` `[N]` (class indices).
  """
  parser = detection_parser.EvalParser(INPUT_SIZE)
  data = {'image': tf.constant(pixels), 'source_id': tf.constant('1'),
          'groundtruth_boxes': tf.zeros([0, 4]),
          'groundtruth_classes': tf.zeros([0], tf.int32),
          'groundtruth_is_crowd': tf.zeros([0], tf.bool),
          'groundtruth_area': tf.zeros([0])}
  inputs, labels = parser(data)
  info = labels['image_info']
  outputs = model(inputs[tf.newaxis], training=False)
  detections = model.postprocess(outputs, (INPUT_SIZE, INPUT_SIZE),
                                 image_shape=info[tf.newaxis, 1])
  num = int(detections['num_detections'][0])
  boxes = detections['detection_boxes'][0, :num] / tf.tile(info[2], [2])
  return {'boxes': boxes.numpy(), 'scores': detections['detection_scores'][0, :num].numpy(),
          'classes': detections['detection_classes'][0, :num].numpy()}


def start_detector_server(test_class, max_request_bytes):
  """Serves `exported_detector()` on 127.0.0.1 (a free port) for a test class.

  Sets on `test_class`: `base` (the export), `model`, `server`, `port`,
  `pixels` (a 96x144 image), `png` (it encoded) and `expected` (the
  in-process prediction of `png`). Stop with `stop_server(test_class)`.
  """
  from spinenet.serving import client  # pylint: disable=g-import-not-at-top
  from spinenet.serving import server  # pylint: disable=g-import-not-at-top
  test_class.base, _ = exported_detector()
  test_class.model = server.load_model(test_class.base, 'shapes', warmup=True)
  test_class.server = server.make_server(server.RestApi(test_class.model), port=0,
                                         max_request_bytes=max_request_bytes)
  test_class.port = test_class.server.server_address[1]
  threading.Thread(target=test_class.server.serve_forever, daemon=True).start()
  test_class.pixels = image(96, 144)
  test_class.png = encode(test_class.pixels, 'PNG')
  test_class.expected = client.LocalPredictor(test_class.base).predict(
      [test_class.png])[0]


def stop_server(test_class):
  test_class.server.shutdown()
  test_class.server.server_close()
