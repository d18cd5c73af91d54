"""COCO AP of an export: perfect on its own detections, lower if boxes move."""
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from spinenet.serving import evaluate

import serving_testing


class EvaluateSavedModelTest(tf.test.TestCase):

  def _write_split(self, directory, model, box_transform):
    """Images and a COCO JSON whose objects are the Keras model's confident boxes."""
    os.makedirs(os.path.join(directory, 'images'))
    images, annotations = [], []
    for image_id, (height, width) in enumerate([(96, 144), (128, 64), (150, 150)], 1):
      pixels = serving_testing.image(height, width, seed=image_id)
      name = f'{image_id}.png'
      with open(os.path.join(directory, 'images', name), 'wb') as f:
        f.write(serving_testing.encode(pixels))
      images.append({'id': image_id, 'file_name': name, 'height': height, 'width': width})
      found = serving_testing.keras_detections(model, pixels)
      for box, score, cls in zip(found['boxes'], found['scores'], found['classes']):
        if score < 0.3 or box[2] - box[0] < 1 or box[3] - box[1] < 1:
          continue  # boxes clipped to (almost) nothing at the image edge
        ymin, xmin, ymax, xmax = box_transform(box)
        annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                            'category_id': int(cls), 'iscrowd': 0,
                            'bbox': [float(xmin), float(ymin), float(xmax - xmin),
                                     float(ymax - ymin)],
                            'area': float((xmax - xmin) * (ymax - ymin))})
    path = os.path.join(directory, 'annotations.json')
    categories = [{'id': k, 'name': v} for k, v in serving_testing.LABEL_MAP.items()]
    with open(path, 'w') as f:
      json.dump({'images': images, 'annotations': annotations, 'categories': categories}, f)
    return len(annotations), path

  def test_ap_is_one_on_its_own_detections_and_drops_when_boxes_shift(self):
    base, model = serving_testing.exported_detector()
    export = os.path.join(base, '1')
    results = {}
    for name, transform in (('same', lambda b: b),
                            ('shifted', lambda b: np.asarray(b) + [4.0, 4.0, 4.0, 4.0])):
      directory = tempfile.mkdtemp()
      self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
      count, annotations = self._write_split(directory, model, transform)
      self.assertGreater(count, 3)
      results[name] = evaluate.evaluate_saved_model(
          export, os.path.join(directory, 'images'), annotations, batch_size=2)
    # 1 up to a detection whose score sits within float rounding of the 0.3
    # cut on one side and not on the other.
    self.assertGreater(results['same']['AP'], 0.995)
    self.assertLess(results['shifted']['AP'], 0.8)


if __name__ == '__main__':
  tf.test.main()
