"""Mask R-CNN parsers: masks follow boxes and pixels; RPN targets; contract."""
import io

from absl.testing import parameterized
import numpy as np
from PIL import Image
import tensorflow as tf

from spinenet.data import decoder as decoder_lib
from spinenet.data import detection_parser
from spinenet.data import maskrcnn_parser
from spinenet.data import preprocess
from spinenet.data import tf_example
from spinenet.ops import box_ops
from spinenet.ops import mask_ops

_H, _W = 120, 160
_ANCHORS = dict(min_level=3, max_level=6, num_scales=1,
                aspect_ratios=(0.5, 1.0, 2.0), anchor_size=3.0)


def _png(array):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format='PNG')
  return buf.getvalue()


def _masks():
  """Three instance masks (triangle, disc, L shape), `[3, H, W]` uint8 0/1."""
  yy, xx = np.mgrid[:_H, :_W]
  triangle = (yy >= 10) & (yy < 70) & (np.abs(xx - 40) <= (yy - 10) * 0.5)
  disc = (yy - 80)**2 + (xx - 110)**2 < 28**2
  ell = (((yy >= 70) & (yy < 110) & (xx >= 15) & (xx < 30)) |
         ((yy >= 95) & (yy < 110) & (xx >= 15) & (xx < 70)))
  return np.stack([triangle, disc, ell]).astype(np.uint8)


def _example(crowd=(0, 0, 0), extra_boxes=0):
  """Image whose channel c is instance c's mask: the pixels show the masks."""
  masks = _masks()
  pixels = (np.moveaxis(masks, 0, -1) * 255).astype(np.uint8)
  boxes = []
  for m in masks:
    ys, xs = np.nonzero(m)
    boxes.append((ys.min() / _H, xs.min() / _W, (ys.max() + 1) / _H,
                  (xs.max() + 1) / _W))
  mask_list = list(masks)
  for _ in range(extra_boxes):  # tiny extra objects, to overflow M
    boxes.append((0.0, 0.0, 0.05, 0.05))
    extra = np.zeros((_H, _W), np.uint8)
    extra[:6, :8] = 1
    mask_list.append(extra)
  crowd = list(crowd) + [0] * extra_boxes
  return tf_example.build_detection_example(
      _png(pixels), 'png', _H, _W, '9', boxes, [1, 2, 3] + [4] * extra_boxes,
      is_crowd=crowd, masks=[_png(m) for m in mask_list]).SerializeToString()


def _decode(serialized, decode_image=True):
  return decoder_lib.DetectionDecoder(
      decode_image=decode_image, decode_masks=True).decode(serialized)


def _tight_box(binary):
  ys, xs = np.nonzero(binary)
  return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], float)


def _paste(crop, box, height, width):
  """A crop resized into its box of a `height` x `width` frame (nearest)."""
  out = np.zeros((height, width), np.float32)
  y0, x0, y1, x1 = [int(round(v)) for v in box]
  resized = tf.image.resize(crop[..., None], [y1 - y0, x1 - x0])[..., 0]
  out[y0:y1, x0:x1] = resized.numpy()
  return out


class MaskRCNNTrainParserTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      (True, 0.5, 2.0, True), (True, 1.0, 1.0, False), (False, 0.8, 1.6, True))
  def test_masks_follow_boxes_and_pixels_through_flip_and_jitter(
      self, hflip, scale_min, scale_max, decode_image):
    parser = maskrcnn_parser.MaskRCNNTrainParser(
        128, aug_rand_hflip=hflip, aug_scale_min=scale_min,
        aug_scale_max=scale_max, max_num_instances=8, mask_crop_size=56,
        **_ANCHORS)
    data = _decode(_example(), decode_image)
    flips = set()
    for seed in range(8):
      features, _ = parser(data, seed=tf.constant([seed, 11]))
      rgb = (features['images'].numpy() * preprocess.STDDEV_RGB +
             preprocess.MEAN_RGB)
      info = features['image_info'].numpy()
      boxes = features['gt_boxes'].numpy()
      classes = features['gt_classes'].numpy()
      crops = features['gt_masks'].numpy()
      valid = classes > 0
      flips.add(bool(np.argmax(rgb[..., 0].sum(0)) > 64))
      for i in np.flatnonzero(valid):
        channel = rgb[..., classes[i] - 1] > 127.5
        if channel.sum() < 30:  # cropped (almost) away
          continue
        visible = np.minimum(128, info[1] - info[3])
        inside = ((boxes[i, :2] > 0.5).all() and
                  (boxes[i, 2:] < visible - 0.5).all())
        if inside:  # (a crop may cut a box, but not its mask's other parts)
          # The mask's pixels in the output lie in the gt box...
          self.assertAllClose(_tight_box(channel), boxes[i], atol=1.6)
          # ... and the crop fills its box edge to edge.
          self.assertAllClose(_tight_box(crops[i] > 0.5), [0, 0, 56, 56],
                              atol=1.0)
        # Pasted back, the crop is the object's pixels.
        pasted = _paste(crops[i], boxes[i], *rgb.shape[:2]) > 0.5
        iou = (pasted & channel).sum() / (pasted | channel).sum()
        self.assertGreater(iou, 0.9, f'seed {seed} instance {i}')
      self.assertAllEqual(crops[~valid], np.zeros_like(crops[~valid]))
      self.assertTrue((boxes[~valid] == -1).all())
      self.assertTrue(((crops >= 0) & (crops <= 1)).all())
      self.assertAllClose(info[0], [_H, _W])
    if hflip:
      self.assertEqual(flips, {True, False})

  def test_contract_shapes_and_rpn_targets(self):
    parser = maskrcnn_parser.MaskRCNNTrainParser(
        128, aug_scale_min=0.8, aug_scale_max=1.2, **_ANCHORS)
    spec = tf.TensorSpec([], tf.string)
    fn = tf.function(lambda s, seed: parser(_decode(s, False), seed))
    features, labels = fn(_example(), tf.constant([1, 2]))
    concrete = fn.get_concrete_function(spec, tf.TensorSpec([2], tf.int32))
    out_features, out_labels = concrete.structured_outputs
    self.assertEqual(out_features['images'].shape, [128, 128, 3])
    self.assertEqual(out_features['image_info'].shape, [4, 2])
    self.assertEqual(out_features['gt_boxes'].shape, [100, 4])
    self.assertEqual(out_features['gt_classes'].dtype, tf.int32)
    self.assertEqual(out_features['gt_classes'].shape, [100])
    self.assertEqual(out_features['gt_masks'].shape, [100, 112, 112])
    self.assertEqual(sorted(out_labels),
                     ['image_info', 'rpn_box_targets', 'rpn_score_targets'])
    self.assertEqual(sorted(out_labels['rpn_score_targets']),
                     ['3', '4', '5', '6'])
    for level in range(3, 7):
      size = 128 // 2**level
      self.assertEqual(out_labels['rpn_score_targets'][str(level)].shape,
                       [size, size, 3])
      self.assertEqual(out_labels['rpn_score_targets'][str(level)].dtype,
                       tf.int32)
      self.assertEqual(out_labels['rpn_box_targets'][str(level)].shape,
                       [size, size, 12])
    self.assertAllEqual(features['image_info'], labels['image_info'])

    scores = np.concatenate([labels['rpn_score_targets'][str(l)].numpy()
                             .reshape(-1) for l in range(3, 7)])
    targets = np.concatenate([labels['rpn_box_targets'][str(l)].numpy()
                              .reshape(-1, 4) for l in range(3, 7)])
    self.assertLessEqual((scores >= 0).sum(), 256)
    self.assertLessEqual((scores == 1).sum(), 128)
    self.assertGreater((scores == 1).sum(), 0)
    # Every gt box has a positive anchor, whose targets decode back to it.
    anchors = parser.anchors.anchors
    positive = np.abs(targets).sum(1) > 0
    self.assertTrue(positive[scores == 1].all())
    decoded = box_ops.decode_boxes(targets[positive], anchors[positive]).numpy()
    gt = features['gt_boxes'].numpy()[:3]
    distance = np.abs(decoded[:, None] - gt[None]).max(-1)  # [P, 3]
    self.assertLess(distance.min(1).max(), 1e-3)  # each decodes to a gt box
    self.assertTrue((distance.min(0) < 1e-3).all())  # each gt is reached

  def test_crowd_is_left_out_and_instances_are_capped(self):
    parser = maskrcnn_parser.MaskRCNNTrainParser(
        128, aug_rand_hflip=False, max_num_instances=5, mask_crop_size=28,
        **_ANCHORS)
    features, _ = parser(_decode(_example(crowd=(0, 1, 0), extra_boxes=6)))
    classes = features['gt_classes'].numpy()
    self.assertAllEqual(classes, [1, 3, 4, 4, 4])
    self.assertEqual(features['gt_masks'].shape, (5, 28, 28))
    # Rectangles filling their boxes: ones, softened at the edges only
    # (bilinear sampling between the last pixel inside and the first out).
    rectangles = features['gt_masks'].numpy()[2:]
    self.assertAllClose(rectangles[:, 2:-2, 2:-2],
                        np.ones_like(rectangles[:, 2:-2, 2:-2]))
    self.assertGreater(rectangles.min(), 0.3)

  def test_without_masks(self):
    parser = maskrcnn_parser.MaskRCNNTrainParser(128, include_mask=False,
                                                 **_ANCHORS)
    data = decoder_lib.DetectionDecoder().decode(_example())
    features, _ = parser(data)
    self.assertNotIn('gt_masks', features)

  def test_same_seed_same_output(self):
    parser = maskrcnn_parser.MaskRCNNTrainParser(
        128, aug_scale_min=0.5, aug_scale_max=2.0, **_ANCHORS)
    data = _decode(_example())
    a = parser(data, seed=tf.constant([4, 4]))
    b = parser(data, seed=tf.constant([4, 4]))
    tf.nest.map_structure(self.assertAllEqual, a, b)

  def test_retinanet_parser_draws_the_same_window(self):
    """Both parsers share `preprocess.train_window`: same seed, same image."""
    serialized = _example()
    kwargs = dict(aug_scale_min=0.5, aug_scale_max=2.0)
    retina = detection_parser.TrainParser(128, **_ANCHORS, **kwargs)
    mask = maskrcnn_parser.MaskRCNNTrainParser(128, **_ANCHORS, **kwargs)
    seed = tf.constant([3, 9])
    # The Mask R-CNN parser spends the first half of its seed on the window.
    window_seed = tf.random.experimental.stateless_split(seed, 2)[0]
    image, labels = retina(decoder_lib.DetectionDecoder().decode(serialized),
                           seed=window_seed)
    features, _ = mask(_decode(serialized), seed=seed)
    self.assertAllEqual(image, features['images'])
    self.assertAllEqual(labels['image_info'], features['image_info'])

  def test_agrees_with_the_model_garden_parser(self):
    """Same image, boxes and RPN matching; masks within resampling error."""
    from official.vision.dataloaders import maskrcnn_input  # pylint: disable=g-import-not-at-top
    from official.vision.dataloaders import tf_example_decoder  # pylint: disable=g-import-not-at-top
    serialized = _example()
    ours = maskrcnn_parser.MaskRCNNTrainParser(
        128, aug_rand_hflip=False, max_num_instances=10, **_ANCHORS)
    features, labels = ours(_decode(serialized, False), seed=[0, 1])
    mg = maskrcnn_input.Parser(
        output_size=[128, 128], aug_rand_hflip=False, include_mask=True,
        max_num_instances=10, **_ANCHORS)
    mg_image, mg_labels = mg._parse_train_data(  # pylint: disable=protected-access
        tf_example_decoder.TfExampleDecoder(include_mask=True).decode(
            serialized))
    self.assertAllClose(features['images'], mg_image, atol=1e-4)
    self.assertAllClose(features['gt_boxes'], mg_labels['gt_boxes'], atol=1e-4)
    self.assertAllEqual(features['gt_classes'], mg_labels['gt_classes'])
    # Masks: ours samples cell centres, the Model Garden maps box edges onto
    # pixel centres (a shift of up to half a source pixel); they agree but
    # for edge pixels.
    diff = np.abs(features['gt_masks'].numpy() - mg_labels['gt_masks'].numpy())
    self.assertLess(diff[:3].mean(), 0.05, diff[:3].mean())
    # Padding rows: 0 here (the contract), -1 in the Model Garden.
    self.assertAllEqual(features['gt_masks'][3:],
                        mg_labels['gt_masks'][3:] + 1.0)

    def flat(targets, width):
      return np.concatenate([targets[str(l)].numpy().reshape(-1, width)
                             for l in range(3, 7)])
    box, mg_box = (flat(labels['rpn_box_targets'], 4),
                   flat(mg_labels['rpn_box_targets'], 4))
    positive = np.abs(box).sum(1) > 0
    self.assertAllEqual(positive, np.abs(mg_box).sum(1) > 0)
    self.assertAllClose(box[positive], mg_box[positive], atol=1e-4)
    score, mg_score = (flat(labels['rpn_score_targets'], 1)[:, 0],
                       flat(mg_labels['rpn_score_targets'], 1)[:, 0])
    # The draws differ (random); the counts and the candidate sets do not.
    for value in (0, 1):
      self.assertEqual((score == value).sum(), (mg_score == value).sum())
    self.assertTrue(positive[mg_score == 1].all())
    self.assertFalse(positive[mg_score == 0].any())

  def test_class_ids_beyond_the_model_stop_the_input(self):
    parser = maskrcnn_parser.MaskRCNNTrainParser(128, **_ANCHORS)
    features, _ = parser(_decode(_example()))
    checked = detection_parser.check_class_ids(features, 4)
    self.assertAllEqual(checked['gt_classes'], features['gt_classes'])
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                'num_classes=3'):
      detection_parser.check_class_ids(features, 3)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'multiples'):
      maskrcnn_parser.MaskRCNNTrainParser(100, **_ANCHORS)
    with self.assertRaisesRegex(ValueError, 'aug_scale_min'):
      maskrcnn_parser.MaskRCNNTrainParser(128, aug_scale_min=2.0, **_ANCHORS)


class MaskRCNNPipelineTest(tf.test.TestCase):

  def test_batches_of_the_built_in_dataset(self):
    from spinenet.data import builtin_dataset  # pylint: disable=g-import-not-at-top
    from spinenet.data import coco_converter  # pylint: disable=g-import-not-at-top
    from spinenet.data import pipeline  # pylint: disable=g-import-not-at-top
    root = self.get_temp_dir()
    paths = builtin_dataset.generate(root + '/shapes', num_train=4, num_val=2,
                                     image_size=96, seed=1)
    for split in ('train', 'val'):
      coco_converter.convert_coco(paths[f'{split}_images'],
                                  paths[f'{split}_json'],
                                  f'{root}/records/{split}', num_workers=0,
                                  include_masks=True)
    decoder = decoder_lib.DetectionDecoder(decode_image=False,
                                           decode_masks=True)
    train = pipeline.build_dataset(
        f'{root}/records/train-*', decoder.decode,
        maskrcnn_parser.MaskRCNNTrainParser(
            128, aug_scale_min=0.8, aug_scale_max=1.25, max_num_instances=8,
            mask_crop_size=28, **_ANCHORS),
        global_batch_size=2, training=True, seed=3, shuffle_buffer=4)
    features, labels = next(iter(train))
    self.assertEqual(features['gt_masks'].shape, (2, 8, 28, 28))
    self.assertEqual(labels['rpn_score_targets']['3'].shape, (2, 16, 16, 3))
    num = int(tf.reduce_sum(tf.cast(features['gt_classes'] > 0, tf.int32)))
    self.assertGreater(num, 0)
    valid_masks = tf.boolean_mask(features['gt_masks'],
                                  features['gt_classes'] > 0)
    # Shapes fill a good part of their boxes (crosses least, ~5/9).
    self.assertGreater(float(tf.reduce_min(tf.reduce_mean(valid_masks,
                                                          [1, 2]))), 0.3)
    evaluation = pipeline.build_dataset(
        f'{root}/records/val-*', decoder.decode,
        maskrcnn_parser.MaskRCNNEvalParser(128, max_level=6,
                                           max_num_instances=8, mask_size=28),
        global_batch_size=4, training=False)
    batches = list(evaluation)
    self.assertLen(batches, 1)
    labels = batches[0][1]
    self.assertAllEqual(labels['valid'], [True, True, False, False])
    masks = labels['groundtruths']['masks']
    self.assertEqual(masks.shape, (4, 8, 28, 28))
    real = tf.sequence_mask(labels['groundtruths']['num_detections'], 8)
    self.assertGreater(float(tf.reduce_min(tf.reduce_mean(
        tf.boolean_mask(masks, real), [1, 2]))), 0.3)
    self.assertEqual(float(tf.reduce_max(tf.boolean_mask(
        masks, tf.logical_not(real)))), 0.0)


class MaskRCNNEvalParserTest(tf.test.TestCase):

  def test_features_and_labels(self):
    parser = maskrcnn_parser.MaskRCNNEvalParser(128, max_level=6,
                                                max_num_instances=10)
    features, labels = parser(_decode(_example()))
    self.assertEqual(sorted(features), ['image_info', 'images'])
    self.assertEqual(features['images'].shape, (128, 128, 3))
    self.assertEqual(sorted(labels), ['groundtruths', 'image_info',
                                      'source_id'])
    self.assertEqual(int(labels['source_id']), 9)
    self.assertEqual(labels['groundtruths']['boxes'].shape, (10, 4))
    self.assertEqual(int(labels['groundtruths']['num_detections']), 3)
    self.assertAllClose(features['image_info'][2], [128 / 160] * 2)
    self.assertNotIn('masks', labels['groundtruths'])  # mask_size=0

  def _half_masks_example(self):
    """Two instances whose masks are a known part of their (larger) boxes,
    then the disc with its tight box.

    Instance 0: box rows 20..60, columns 40..120, mask its left half.
    Instance 1 (crowd): box rows 70..110, columns 10..50, mask its top half.
    """
    left = np.zeros((_H, _W), np.uint8)
    left[20:60, 40:80] = 1
    top = np.zeros((_H, _W), np.uint8)
    top[70:90, 10:50] = 1
    disc = _masks()[1]
    pixel_boxes = [(20, 40, 60, 120), (70, 10, 110, 50), _tight_box(disc)]
    boxes = [(y0 / _H, x0 / _W, y1 / _H, x1 / _W)
             for y0, x0, y1, x1 in pixel_boxes]
    return tf_example.build_detection_example(
        _png(np.zeros((_H, _W, 3), np.uint8)), 'png', _H, _W, '5', boxes,
        [1, 2, 3], is_crowd=[0, 1, 0],
        masks=[_png(m) for m in (left, top, disc)]).SerializeToString()

  def test_masks_over_original_boxes_aligned_and_padded(self):
    parser = maskrcnn_parser.MaskRCNNEvalParser(
        128, max_level=6, max_num_instances=5, mask_size=8)
    fn = tf.function(lambda s: parser(_decode(s, decode_image=False)))
    _, labels = fn(self._half_masks_example())
    gt = {k: v.numpy() for k, v in labels['groundtruths'].items()}
    self.assertEqual(gt['masks'].shape, (5, 8, 8))
    self.assertEqual(gt['masks'].dtype, np.float32)
    self.assertAllClose(gt['boxes'][:2], [[20, 40, 60, 120], [70, 10, 110, 50]])
    # 8 cells over 80 (40) pixels: cell centres never fall between a pixel
    # inside and one outside, so the halves are exact.
    want_left = np.zeros((8, 8), np.float32)
    want_left[:, :4] = 1
    self.assertAllEqual(gt['masks'][0], want_left)
    self.assertAllEqual(gt['masks'][1], want_left.T)  # crowd kept, in order
    # The disc, pasted back over its box, is the disc again.
    pasted = mask_ops.paste_masks(gt['masks'][2:3], gt['boxes'][2:3], _H,
                                  _W)[0].numpy() > 0.5
    disc = _masks()[1].astype(bool)
    self.assertGreater((pasted & disc).sum() / (pasted | disc).sum(), 0.9)
    self.assertAllEqual(gt['masks'][3:], np.zeros((2, 8, 8)))
    self.assertAllEqual(gt['boxes'][3:], -np.ones((2, 4)))
    # Cut to fewer rows than instances: masks and boxes cut alike.
    two = maskrcnn_parser.MaskRCNNEvalParser(
        128, max_level=6, max_num_instances=2, mask_size=8)
    _, cut = two(_decode(self._half_masks_example()))
    self.assertAllEqual(cut['groundtruths']['masks'], gt['masks'][:2])
    self.assertAllClose(cut['groundtruths']['boxes'], gt['boxes'][:2])

  def test_masks_need_decoded_masks(self):
    parser = maskrcnn_parser.MaskRCNNEvalParser(128, max_level=6, mask_size=8)
    data = decoder_lib.DetectionDecoder().decode(_example())
    with self.assertRaisesRegex(ValueError, 'decode_masks=True'):
      parser(data)
    with self.assertRaisesRegex(ValueError, 'mask_size'):
      maskrcnn_parser.MaskRCNNEvalParser(128, max_level=6, mask_size=-1)


if __name__ == '__main__':
  tf.test.main()
