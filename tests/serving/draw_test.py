"""draw: stable class colours, boxes where the coordinates say, copies not edits."""
import colorsys

from absl.testing import absltest
import numpy as np

from spinenet.serving import draw


def _gray(h=60, w=80):
  return np.full((h, w, 3), 40, np.uint8)


class ClassColorTest(absltest.TestCase):

  def test_bright_distinct_and_stable(self):
    colors = [draw.class_color(i) for i in range(1, 21)]
    self.assertLen(set(colors), 20)
    self.assertEqual(draw.class_color(7), draw.class_color(np.int64(7)))
    for color in colors:
      self.assertEqual(max(color), 255)  # value 1.0
      _, saturation, _ = colorsys.rgb_to_hsv(*(c / 255 for c in color))
      self.assertAlmostEqual(saturation, 0.85, delta=0.01)


class DrawDetectionsTest(absltest.TestCase):

  def test_box_outline_in_the_class_colour_at_its_pixels(self):
    image = _gray()
    out = draw.draw_detections(image, np.array([[20.0, 10.0, 50.0, 70.0]]), [3], [0.9])
    self.assertEqual(out.shape, image.shape)
    self.assertEqual(out.dtype, np.uint8)
    color = np.array(draw.class_color(3))
    # ymin, xmin, ymax, xmax: rows 20..50, columns 10..70.
    self.assertTrue(np.all(out[49, 12:68] == color))   # bottom edge
    self.assertTrue(np.all(out[30:48, 10] == color))   # left edge
    self.assertTrue(np.all(out[30:48, 69] == color))   # right edge
    self.assertTrue(np.all(out[30:45, 20:60] == 40))   # inside untouched
    self.assertTrue(np.all(out[55:, :] == 40))         # below untouched
    self.assertTrue(np.all(image == 40))               # the input is not edited

  def test_scores_below_the_threshold_are_not_drawn(self):
    image = _gray()
    boxes = np.array([[20.0, 10.0, 50.0, 70.0], [5.0, 5.0, 15.0, 15.0]])
    out = draw.draw_detections(image, boxes, [3, 4], [0.2, 0.1], min_score=0.3)
    np.testing.assert_array_equal(out, image)
    out = draw.draw_detections(image, boxes, [3, 4], [0.9, 0.1], min_score=0.3)
    self.assertFalse(np.any(np.all(out == draw.class_color(4), axis=-1)))

  def test_label_text_comes_from_names_then_label_map(self):
    image = _gray(80, 200)
    box = np.array([[40.0, 10.0, 70.0, 190.0]])
    by_name = draw.draw_detections(image, box, [3], [0.9], names=['a much longer name'])
    by_map = draw.draw_detections(image, box, [3], [0.9], label_map={3: 'a much longer name'})
    by_id = draw.draw_detections(image, box, [3], [0.9])
    empty_name = draw.draw_detections(image, box, [3], [0.9], names=[''])
    np.testing.assert_array_equal(by_name, by_map)
    np.testing.assert_array_equal(empty_name, by_id)
    self.assertFalse(np.array_equal(by_name, by_id))

  def _tag(self, out, image, above_row):
    """The label tag: the changed pixels above `above_row`, cropped."""
    changed = np.any(out[:above_row] != image[:above_row], axis=-1)
    rows, cols = np.nonzero(changed)
    return (out[rows.min():rows.max() + 1, cols.min():cols.max() + 1],
            cols.min(), cols.max())

  def test_a_label_at_the_right_edge_moves_left_and_is_whole(self):
    image = _gray(60, 120)
    # The same label drawn where it fits, and on a box at the right edge.
    fits = draw.draw_detections(image, np.array([[30.0, 5.0, 55.0, 30.0]]),
                                [3], [0.88], names=['cross'])
    edge = draw.draw_detections(image, np.array([[30.0, 100.0, 55.0, 119.0]]),
                                [3], [0.88], names=['cross'])
    whole, whole_left, _ = self._tag(fits, image, 29)
    moved, left, right = self._tag(edge, image, 29)
    self.assertGreater(whole.shape[1], 20)  # wider than the box: it must move
    self.assertLessEqual(right, 119)
    self.assertLess(left, 100)  # moved left of the box's corner
    np.testing.assert_array_equal(moved, whole)  # every pixel of the text
    self.assertEqual(whole_left, 5)  # a label that fits stays at the corner

  def test_grayscale_input_is_drawn_in_colour(self):
    out = draw.draw_detections(np.full((30, 30), 40, np.uint8),
                               np.array([[5.0, 5.0, 25.0, 25.0]]), [1], [0.9])
    self.assertEqual(out.shape, (30, 30, 3))


class DrawMasksTest(absltest.TestCase):

  def test_masks_are_filled_semi_transparently_in_the_class_colour(self):
    image = _gray(60, 80)
    masks = np.zeros((2, 60, 80), np.uint8)
    masks[0, 10:30, 10:40] = 1
    masks[1, 20:50, 30:70] = 1  # overlaps mask 0 at rows 20..30, columns 30..40
    boxes = np.array([[10.0, 10.0, 30.0, 40.0], [20.0, 30.0, 50.0, 70.0]])
    out = draw.draw_detections(image, boxes, [3, 5], [0.9, 0.6], masks=masks,
                               mask_alpha=0.5)
    blend = lambda base, color: 0.5 * np.asarray(base) + 0.5 * np.array(color)  # noqa: E731
    c3, c5 = draw.class_color(3), draw.class_color(5)
    np.testing.assert_array_equal(out[15:25, 15:25],
                                  np.broadcast_to(np.round(blend(40, c3)), (10, 10, 3)))
    np.testing.assert_array_equal(out[35:45, 45:60],
                                  np.broadcast_to(np.round(blend(40, c5)), (10, 15, 3)))
    # The better detection is blended last, over the other.
    np.testing.assert_array_equal(out[24, 33], np.round(blend(blend(40, c5), c3)))
    self.assertTrue(np.all(out[52:, :] == 40))  # outside every mask and box
    self.assertTrue(np.all(out[0:8, 45:] == 40))
    self.assertTrue(np.all(out[29, 12:29] == c3))  # the box's bottom edge, over the fills
    self.assertTrue(np.all(image == 40))

  def test_masks_below_the_threshold_or_beyond_the_image_are_ignored(self):
    image = _gray(40, 40)
    masks = np.zeros((2, 64, 48), np.uint8)  # a batch frame larger than the image
    masks[0, 30:64, 30:48] = 1
    masks[1, :, :] = 1
    boxes = np.array([[30.0, 30.0, 40.0, 40.0], [0.0, 0.0, 40.0, 40.0]])
    out = draw.draw_detections(image, boxes, [3, 4], [0.9, 0.1], masks=masks,
                               min_score=0.3)
    self.assertTrue(np.all(out[:20] == 40))  # the label tag is in rows 20..29
    self.assertTrue(np.all(out[32:, :30] == 40))
    self.assertTrue(np.all(out[30:, 30:] != 40))
    self.assertFalse(np.any(np.all(out == draw.class_color(4), axis=-1)))


class DrawClassificationTest(absltest.TestCase):

  def test_lines_in_the_top_left_corner_in_class_colours(self):
    image = _gray(100, 160)
    out = draw.draw_classification(image, [2, 5], [0.7, 0.2], names=['cat', ''])
    rows, cols = np.nonzero(np.any(out != image, axis=-1))
    self.assertLess(rows.max(), 50)
    self.assertLess(cols.max(), 100)
    self.assertLessEqual(cols.min(), 4)
    self.assertTrue(np.any(np.all(out == 0, axis=-1)))  # black label background
    # The text is anti-aliased: its strongest pixels come close to the colour,
    # the first class on the first line.
    closest = []
    for category in (2, 5):
      distance = np.abs(out.astype(int) - draw.class_color(category)).sum(-1)
      self.assertLess(distance.min(), 40)
      closest.append(np.unravel_index(distance.argmin(), distance.shape)[0])
    self.assertLess(closest[0], closest[1])
    self.assertTrue(np.all(image == 40))
    one = draw.draw_classification(image, [2], [0.7], names=['cat'])
    self.assertLess(np.nonzero(np.any(one != image, -1))[0].max(), rows.max())

if __name__ == '__main__':
  absltest.main()
