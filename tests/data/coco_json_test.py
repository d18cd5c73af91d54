"""coco_json.load_coco: what it reads, its defaults, and errors that name the field."""
import json
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized

from spinenet.data import coco_json

_IMAGE = {'id': 1, 'file_name': 'a.jpg', 'height': 4, 'width': 4}
_CATEGORY = {'id': 1, 'name': 'a'}


def _ann(**fields):
  return dict({'image_id': 1, 'category_id': 1, 'bbox': [1, 2, 3, 4]}, **fields)


class LoadCocoTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)

  def _write(self, content, name='ann.json'):
    path = os.path.join(self.root, name)
    with open(path, 'w') as f:
      if isinstance(content, str):
        f.write(content)
      else:
        json.dump(content, f)
    return path

  def test_reads_images_annotations_and_categories_in_file_order(self):
    path = self._write({
        'images': [{'id': 20, 'file_name': 'b.jpg', 'height': 30, 'width': 40},
                   {'id': 'x7', 'file_name': 'c.png', 'height': 5, 'width': 6}],
        'categories': [{'id': 90, 'name': 'ninety'}, {'id': 7, 'name': 'seven'}],
        'annotations': [
            {'image_id': 'x7', 'category_id': 7, 'bbox': [0, 0, 2, 3]},
            {'image_id': 20, 'category_id': 90, 'bbox': [1.5, 2, 10, 4],
             'iscrowd': 1, 'area': 33},
            {'image_id': 20, 'category_id': 7, 'bbox': [0, 1, 2, 5], 'id': 12,
             'segmentation': [[0, 1, 2, 1, 2, 6]]}]})
    coco = coco_json.load_coco(path)
    self.assertEqual(coco.categories, {90: 'ninety', 7: 'seven'})
    self.assertEqual([(i.id, i.file_name, i.height, i.width) for i in coco.images],
                     [(20, 'b.jpg', 30, 40), ('x7', 'c.png', 5, 6)])
    first, second = coco.images
    self.assertEqual(first.annotations, [
        {'category_id': 90, 'bbox': [1.5, 2.0, 10.0, 4.0], 'iscrowd': 1, 'area': 33.0,
         'id': None, 'index': 1, 'segmentation': None},
        # Defaults: not a crowd, area = width * height of the box; the
        # segmentation is kept as found (checked only when writing masks).
        {'category_id': 7, 'bbox': [0.0, 1.0, 2.0, 5.0], 'iscrowd': 0, 'area': 10.0,
         'id': 12, 'index': 2, 'segmentation': [[0, 1, 2, 1, 2, 6]]}])
    self.assertEqual(second.annotations, [
        {'category_id': 7, 'bbox': [0.0, 0.0, 2.0, 3.0], 'iscrowd': 0, 'area': 6.0,
         'id': None, 'index': 0, 'segmentation': None}])
    self.assertIsInstance(second.annotations[0]['bbox'][0], float)

  def test_annotations_may_be_absent_and_boxes_outside_are_kept(self):
    coco = coco_json.load_coco(self._write({'images': [_IMAGE], 'categories': [_CATEGORY]}))
    self.assertEqual(coco.images[0].annotations, [])
    coco = coco_json.load_coco(self._write(
        {'images': [_IMAGE], 'categories': [_CATEGORY],
         'annotations': [_ann(bbox=[-5, 3, 100, 0])]}))
    self.assertEqual(coco.images[0].annotations[0]['bbox'], [-5.0, 3.0, 100.0, 0.0])

  @parameterized.named_parameters(
      ('no_images', {'annotations': [], 'categories': []}, '`images`'),
      ('image_without_file_name', {'images': [{'id': 1, 'height': 4, 'width': 4}],
                                   'categories': []}, r'images\[0\]'),
      ('bad_height', {'images': [dict(_IMAGE, height=0)], 'categories': []},
       r'images\[0\].height'),
      ('float_width', {'images': [dict(_IMAGE, width=4.0)], 'categories': []},
       r'images\[0\].width'),
      ('empty_file_name', {'images': [dict(_IMAGE, file_name='')], 'categories': []},
       r'images\[0\].file_name'),
      ('duplicate_image', {'images': [_IMAGE, dict(_IMAGE, file_name='b')],
                           'categories': []}, r'images\[1\].id'),
      ('bbox_of_three', {'images': [_IMAGE], 'categories': [_CATEGORY],
                         'annotations': [_ann(bbox=[1, 2, 3])]},
       r'annotations\[0\].bbox'),
      ('bbox_of_strings', {'images': [_IMAGE], 'categories': [_CATEGORY],
                           'annotations': [_ann(), _ann(bbox=['1', 2, 3, 4])]},
       r'annotations\[1\].bbox'),
      ('unknown_image', {'images': [], 'categories': [_CATEGORY],
                         'annotations': [_ann(image_id=9)]},
       r'annotations\[0\].image_id'),
      ('unknown_category', {'images': [_IMAGE], 'categories': [_CATEGORY],
                            'annotations': [_ann(category_id=3)]},
       r'annotations\[0\].category_id'),
      ('crowd_of_two', {'images': [_IMAGE], 'categories': [_CATEGORY],
                        'annotations': [_ann(iscrowd=2)]},
       r'annotations\[0\].iscrowd'),
      ('string_area', {'images': [_IMAGE], 'categories': [_CATEGORY],
                       'annotations': [_ann(area='big')]},
       r'annotations\[0\].area'),
      ('duplicate_category', {'images': [], 'categories': [
          {'id': 1, 'name': 'a'}, {'id': 1, 'name': 'b'}]}, r'categories\[1\].id'),
      ('string_category_id', {'images': [], 'categories': [{'id': '1', 'name': 'a'}]},
       r'categories\[0\].id'),
      ('category_name_not_a_string', {'images': [], 'categories': [{'id': 1, 'name': 3}]},
       r'categories\[0\].name'),
      ('images_not_a_list', {'images': {}, 'categories': []}, '`images` must be a list'),
      ('top_level_list', [], 'an object with `images`'),
  )
  def test_malformed_json_names_the_file_and_field(self, content, field):
    path = self._write(content, 'bad.json')
    with self.assertRaisesRegex(ValueError, f'bad.json.*{field}'):
      coco_json.load_coco(path)

  def test_missing_field_lists_the_fields_found(self):
    path = self._write({'images': [{'id': 1, 'height': 4, 'width': 4}], 'categories': []})
    with self.assertRaisesRegex(ValueError, r"no field `file_name`.*\['height', 'id', 'width'\]"):
      coco_json.load_coco(path)

  def test_long_values_are_shortened_in_the_message(self):
    path = self._write({'images': [_IMAGE], 'categories': [_CATEGORY],
                        'annotations': [_ann(bbox=list(range(100)))]})
    with self.assertRaises(ValueError) as caught:
      coco_json.load_coco(path)
    shown = str(caught.exception).split('Received: ')[1]
    self.assertLen(shown, 80)
    self.assertTrue(shown.endswith('...'))

  def test_invalid_json_syntax_names_the_file(self):
    path = self._write('{"images": [', 'broken.json')
    with self.assertRaisesRegex(ValueError, 'broken.json: not valid JSON'):
      coco_json.load_coco(path)

  def test_missing_file_is_an_os_error(self):
    with self.assertRaises(OSError):
      coco_json.load_coco(os.path.join(self.root, 'none.json'))


if __name__ == '__main__':
  absltest.main()
