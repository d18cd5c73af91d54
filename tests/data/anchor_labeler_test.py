"""AnchorLabeler: anchor layout, per-level unpacking and the labels of known boxes.

Input 64 x 96, levels 3-4, one anchor per location unless stated: level 3 is an
8 x 12 grid of 16-pixel squares centred on `(8 i + 4, 8 j + 4)`, level 4 a
4 x 6 grid of 32-pixel squares. Expectations are computed here from that
geometry, not read back from the labeler.
"""
import numpy as np
import tensorflow as tf

from spinenet.data import anchor_labeler

SIZE = (64, 96)
ONE_ANCHOR = dict(min_level=3, max_level=4, num_scales=1, aspect_ratios=(1.0,),
                  anchor_size=2.0)


def _grid(level, cells_y, cells_x, size):
  stride = 2**level
  yc = (np.arange(cells_y) + 0.5) * stride
  xc = (np.arange(cells_x) + 0.5) * stride
  y, x = np.meshgrid(yc, xc, indexing='ij')
  half = size / 2
  return np.stack([y - half, x - half, y + half, x + half], -1).reshape(-1, 4)


def _iou(box, anchors):
  ymin = np.maximum(box[0], anchors[:, 0])
  xmin = np.maximum(box[1], anchors[:, 1])
  ymax = np.minimum(box[2], anchors[:, 2])
  xmax = np.minimum(box[3], anchors[:, 3])
  inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
  area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
  return inter / (area(box) + area(anchors) - inter)


def _flat(per_level, labeler):
  return np.concatenate([per_level[l].numpy().reshape(-1) for l in labeler.levels])


class AnchorLabelerTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.labeler = anchor_labeler.AnchorLabeler(SIZE, **ONE_ANCHOR)
    self.anchors = np.concatenate([_grid(3, 8, 12, 16.0), _grid(4, 4, 6, 32.0)])

  def test_anchors_and_shapes(self):
    self.assertEqual(self.labeler.levels, ['3', '4'])
    self.assertEqual(self.labeler.level_shapes, {'3': (8, 12), '4': (4, 6)})
    self.assertEqual(self.labeler.total_anchors, 8 * 12 + 4 * 6)
    self.assertAllClose(self.labeler.anchors, self.anchors)
    self.assertEqual(self.labeler.multilevel_anchors['4'].shape, (4, 6, 4))

  def test_several_anchors_per_location(self):
    labeler = anchor_labeler.AnchorLabeler(
        SIZE, min_level=3, max_level=5, num_scales=2, aspect_ratios=(0.5, 1.0, 2.0))
    self.assertEqual(labeler.num_anchors_per_location, 6)
    self.assertEqual(labeler.total_anchors, (8 * 12 + 4 * 6 + 2 * 3) * 6)
    labels = labeler.label(tf.constant([[0.0, 0.0, 40.0, 40.0]]), tf.constant([1]))
    self.assertEqual(labels['cls_targets']['5'].shape, (2, 3, 6))
    self.assertEqual(labels['box_targets']['5'].shape, (2, 3, 24))
    self.assertEqual(labels['cls_weights'].shape, (labeler.total_anchors,))

  def test_unpack_is_the_inverse_of_the_flat_order(self):
    flat = tf.range(self.labeler.total_anchors)
    levels = self.labeler.unpack(flat)
    self.assertEqual(int(levels['3'][2, 5, 0]), 2 * 12 + 5)   # row-major in a level
    self.assertEqual(int(levels['4'][3, 1, 0]), 96 + 3 * 6 + 1)  # after all of level 3
    boxes = tf.reshape(tf.range(self.labeler.total_anchors * 4), [-1, 4])
    levels = self.labeler.unpack(boxes, values_per_anchor=4)
    self.assertEqual(levels['3'].shape, (8, 12, 4))
    self.assertAllEqual(levels['4'][0, 2], [(96 + 2) * 4 + i for i in range(4)])

  def test_a_box_on_an_anchor_labels_only_that_anchor(self):
    box = [12.0, 20.0, 28.0, 36.0]  # level-3 anchor of cell (2, 3)
    labels = self.labeler.label(tf.constant([box]), tf.constant([5]))
    index = 2 * 12 + 3
    self.assertEqual(float(labels['num_positives']), 1.0)
    cls = labels['cls_targets']['3'].numpy()
    self.assertEqual(cls[2, 3, 0], 5)
    self.assertEqual(np.count_nonzero(_flat(labels['cls_targets'], self.labeler)), 1)
    self.assertAllEqual(np.nonzero(labels['box_weights'].numpy())[0], [index])
    self.assertAllClose(labels['box_targets']['3'][2, 3], [0, 0, 0, 0], atol=1e-5)
    self.assertAllEqual(labels['cls_weights'], np.ones(self.labeler.total_anchors))

  def test_box_targets_are_the_offsets_from_the_anchor(self):
    box = [14.0, 20.0, 30.0, 44.0]  # cell (2, 3) moved 2 px down, 8 px wider
    labels = self.labeler.label(tf.constant([box]), tf.constant([1]))
    self.assertEqual(int(labels['cls_targets']['3'][2, 3, 0]), 1)
    expected = [(22 - 20) / 16, (32 - 28) / 16, np.log(16 / 16), np.log(24 / 16)]
    self.assertAllClose(labels['box_targets']['3'][2, 3], expected, atol=1e-5)

  def test_anchors_between_the_thresholds_are_ignored(self):
    box = np.array([12.0, 20.0, 19.2, 36.0])  # IoU 0.45 with two anchors
    labeler = anchor_labeler.AnchorLabeler(SIZE, match_threshold=0.5,
                                           unmatched_threshold=0.4, force_match=False,
                                           **ONE_ANCHOR)
    labels = labeler.label(tf.constant([box], tf.float32), tf.constant([2]))
    iou = _iou(box, self.anchors)
    self.assertLen(np.nonzero((iou >= 0.4) & (iou < 0.5))[0], 2)
    self.assertAllEqual(labels['cls_weights'].numpy() == 0, (iou >= 0.4) & (iou < 0.5))
    self.assertEqual(float(labels['num_positives']), 0.0)
    # Forced, one of the best anchors becomes positive.
    forced = anchor_labeler.AnchorLabeler(SIZE, unmatched_threshold=0.4, **ONE_ANCHOR)
    labels = forced.label(tf.constant([box], tf.float32), tf.constant([2]))
    self.assertEqual(float(labels['num_positives']), 1.0)
    self.assertIn(int(np.argmax(labels['box_weights'])),
                  np.nonzero(np.isclose(iou, iou.max()))[0])

  def test_a_crowd_box_only_makes_anchors_ignored(self):
    box = [12.0, 20.0, 28.0, 36.0]
    labels = self.labeler.label(tf.constant([box]), tf.constant([5]),
                                tf.constant([True]))
    self.assertEqual(float(labels['num_positives']), 0.0)
    self.assertFalse(_flat(labels['cls_targets'], self.labeler).any())
    self.assertEqual(float(labels['cls_weights'][2 * 12 + 3]), 0.0)

  def test_no_boxes_all_background(self):
    labels = self.labeler.label(tf.zeros([0, 4]), tf.zeros([0], tf.int32))
    self.assertEqual(float(labels['num_positives']), 0.0)
    self.assertFalse(_flat(labels['cls_targets'], self.labeler).any())
    self.assertAllEqual(labels['cls_weights'], np.ones(self.labeler.total_anchors))

  def test_box_coder_weights_scale_the_targets(self):
    labeler = anchor_labeler.AnchorLabeler(SIZE, box_coder_weights=(10, 10, 5, 5),
                                           **ONE_ANCHOR)
    labels = labeler.label(tf.constant([[14.0, 20.0, 30.0, 44.0]]), tf.constant([1]))
    expected = [10 * 2 / 16, 10 * 4 / 16, 0.0, 5 * np.log(24 / 16)]
    self.assertAllClose(labels['box_targets']['3'][2, 3], expected, atol=1e-5)

  def test_built_inside_a_tf_function(self):
    @tf.function
    def label(boxes, classes):
      labeler = anchor_labeler.AnchorLabeler(SIZE, **ONE_ANCHOR)
      return labeler.label(boxes, classes)['num_positives']
    self.assertEqual(float(label(tf.constant([[12.0, 20.0, 28.0, 36.0]]),
                                 tf.constant([5]))), 1.0)


if __name__ == '__main__':
  tf.test.main()
