"""Mask R-CNN exports through the clients, spinenet-serve's REST API and predict_files."""
import base64
from concurrent import futures
import json
import os
import shutil
import tempfile
import threading

import grpc
import numpy as np
from PIL import Image
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from spinenet.serving import client
from spinenet.serving import draw
from spinenet.serving import predict_lib
from spinenet.serving import server
from spinenet.serving import signatures as sig

import serving_testing


def _serve(base):
  """`(http server, url)` of `spinenet-serve` on `base`, started in a thread."""
  model = server.load_model(base, 'shapes', warmup=False)
  http = server.make_server(server.RestApi(model), port=0)
  threading.Thread(target=http.serve_forever, daemon=True).start()
  return http, f'http://127.0.0.1:{http.server_address[1]}'


class MaskRCNNServingTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.dense_base, cls.model = serving_testing.exported_maskrcnn('dense')
    cls.png_base, _ = serving_testing.exported_maskrcnn('png')
    cls.servers = {}
    cls.urls = {}
    for name, base in (('dense', cls.dense_base), ('png', cls.png_base)):
      cls.servers[name], cls.urls[name] = _serve(base)
    cls.pixels = [serving_testing.image(96, 144), serving_testing.image(64, 80, seed=3)]
    cls.images = [serving_testing.encode(p, 'PNG') for p in cls.pixels]
    cls.local = client.LocalPredictor(cls.dense_base).predict(cls.images)

  @classmethod
  def tearDownClass(cls):
    for http in cls.servers.values():
      http.shutdown()
      http.server_close()
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _masks(self, result, index):
    num = int(result[sig.NUM_DETECTIONS])
    return predict_lib.instance_masks(result, range(num), self.pixels[index].shape[:2])

  def test_local_masks_are_the_keras_models(self):
    for i, result in enumerate(self.local):
      reference = serving_testing.keras_maskrcnn(self.model, self.pixels[i])
      masks = self._masks(result, i)
      self.assertEqual(masks.shape, reference['masks'].shape)
      self.assertLessEqual(np.sum(masks != reference['masks']),
                           0.001 * masks.size + 2)
    # Two sizes in one request: one frame of the larger size.
    self.assertEqual(self.local[1][sig.DETECTION_MASKS].shape, (20, 96, 144))

  def test_rest_carries_dense_masks(self):
    remote = client.RestPredictor(self.urls['dense'], 'shapes').predict(self.images)
    for i, (got, want) in enumerate(zip(remote, self.local)):
      self.assertAllEqual(np.asarray(got[sig.DETECTION_MASKS]), want[sig.DETECTION_MASKS])
      self.assertAllClose(got[sig.DETECTION_BOXES], want[sig.DETECTION_BOXES], atol=1e-4)
      self.assertGreater(int(self._masks(got, i).sum()), 500)

  def test_rest_carries_png_masks_as_b64(self):
    remote = client.RestPredictor(self.urls['png'], 'shapes').predict(self.images)
    for i, (got, want) in enumerate(zip(remote, self.local)):
      pngs = got[sig.DETECTION_MASKS_PNG]
      self.assertIsInstance(pngs[0], bytes)
      self.assertTrue(pngs[0].startswith(b'\x89PNG'))
      self.assertAllEqual(self._masks(got, i), self._masks(want, i))
    # The raw response: base64 strings, not numbers.
    request = {'signature_name': sig.IMAGE_BYTES,
               'instances': [{'b64': base64.b64encode(self.images[0]).decode()}]}
    api = self.servers['png'].RequestHandlerClass.api
    status, body = api.handle('POST', '/v1/models/shapes:predict',
                              json.dumps(request).encode())
    self.assertEqual(status, 200)
    self.assertIn('b64', body['predictions'][0][sig.DETECTION_MASKS_PNG][0])

  def test_grpc_carries_dense_and_png_masks(self):
    from client_test import _PredictionService  # pylint: disable=g-import-not-at-top
    for name, base in (('dense', self.dense_base), ('png', self.png_base)):
      service = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
      prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
          _PredictionService(self.servers[name].RequestHandlerClass.api.model), service)
      port = service.add_insecure_port('127.0.0.1:0')
      service.start()
      predictor = client.make_predictor(f'grpc://127.0.0.1:{port}', 'shapes')
      try:
        remote = predictor.predict(self.images)
      finally:
        predictor.close()
        service.stop(None)
      for i, (got, want) in enumerate(zip(remote, self.local)):
        if name == 'png':
          self.assertIsInstance(got[sig.DETECTION_MASKS_PNG][0], bytes)
        self.assertAllEqual(self._masks(got, i), self._masks(want, i))

  def test_predict_files_over_rest_draws_masks(self):
    os.makedirs(os.path.join(self.tmp, 'in'), exist_ok=True)
    path = os.path.join(self.tmp, 'in', 'shapes.png')
    with open(path, 'wb') as f:
      f.write(self.images[0])
    out = os.path.join(self.tmp, 'out')
    summary = predict_lib.predict_files(
        client.RestPredictor(self.urls['png'], 'shapes'), [path], out, min_score=0.0)
    detections = summary[0]['detections']
    masks = self._masks(self.local[0], 0)
    self.assertLen(detections, len(masks))
    self.assertEqual([d['mask_area'] for d in detections], masks.sum((1, 2)).tolist())
    drawn = np.asarray(Image.open(summary[0]['output']))
    plain = draw.draw_detections(
        self.pixels[0], [d['box'] for d in detections], [d['class'] for d in detections],
        [d['score'] for d in detections], [d['name'] for d in detections], 0.0)
    # Away from boxes and labels, exactly the pixels under a mask are tinted.
    free = np.all(plain == self.pixels[0], -1)
    covered = masks.any(0)
    tinted = np.any(drawn != plain, -1)
    self.assertGreater(np.sum(free & covered), 500)
    self.assertTrue(np.all(tinted[free & covered]))
    self.assertFalse(np.any(tinted[free & ~covered]))


if __name__ == '__main__':
  tf.test.main()
