"""spinenet-serve over loopback HTTP: TF Serving's REST contract, errors, limits."""
import base64
import http.client
import json

import numpy as np
import tensorflow as tf

from spinenet.serving import server
from spinenet.serving import signatures as sig

import serving_testing

MAX_REQUEST_BYTES = 1 << 20


def _b64(data):
  return {'b64': base64.b64encode(data).decode('ascii')}


class ServerTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    serving_testing.start_detector_server(cls, MAX_REQUEST_BYTES)

  @classmethod
  def tearDownClass(cls):
    serving_testing.stop_server(cls)
    super().tearDownClass()

  def _request(self, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection('127.0.0.1', self.port, timeout=120)
    try:
      data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
      connection.request(method, path, body=data, headers=headers or {})
      response = connection.getresponse()
      payload = json.loads(response.read())
      self.assertEqual(response.getheader('Content-Type'), 'application/json')
      return response.status, payload
    finally:
      connection.close()

  def _predict(self, body, path='/v1/models/shapes:predict'):
    return self._request('POST', path, body)

  def _assert_detections(self, result):
    expected = self.expected
    num = int(expected[sig.NUM_DETECTIONS])
    self.assertGreater(num, 5)
    self.assertEqual(int(np.asarray(result[sig.NUM_DETECTIONS])), num)
    self.assertAllClose(np.asarray(result[sig.DETECTION_SCORES])[:num],
                        expected[sig.DETECTION_SCORES][:num], atol=1e-5)
    self.assertAllClose(np.asarray(result[sig.DETECTION_BOXES])[:num],
                        expected[sig.DETECTION_BOXES][:num], atol=1e-3)
    self.assertEqual(list(result[sig.DETECTION_CLASS_NAMES])[:num],
                     list(expected[sig.DETECTION_CLASS_NAMES][:num]))

  def test_binds_loopback_unless_told(self):
    local = server.make_server(server.RestApi(self.model), port=0)
    try:
      self.assertEqual(local.server_address[0], '127.0.0.1')
    finally:
      local.server_close()

  def test_status_and_metadata(self):
    status, payload = self._request('GET', '/v1/models/shapes')
    self.assertEqual(status, 200)
    self.assertEqual(payload['model_version_status'][0]['state'], 'AVAILABLE')
    self.assertEqual(payload['model_version_status'][0]['version'], '1')
    status, payload = self._request('GET', '/v1/models/shapes/versions/1/metadata')
    self.assertEqual(status, 200)
    defs = payload['metadata']['signature_def']['signature_def']
    self.assertCountEqual([d for d in defs if not d.startswith('__')], sig.SIGNATURES)
    self.assertEqual(defs[sig.IMAGE_TENSOR]['inputs']['images']['dtype'], 'DT_UINT8')
    self.assertEqual(defs[sig.IMAGE_BYTES]['outputs'][sig.DETECTION_BOXES]['dtype'],
                     'DT_FLOAT')

  def test_row_and_columnar_forms(self):
    pixels = self.pixels.tolist()
    example = serving_testing.tf_example(self.png)
    requests = [
        ({'signature_name': sig.IMAGE_BYTES, 'instances': [_b64(self.png)]}, True),
        ({'signature_name': sig.IMAGE_BYTES,
          'instances': [{'image_bytes': _b64(self.png)}]}, True),
        ({'signature_name': sig.IMAGE_BYTES, 'inputs': [_b64(self.png)]}, False),
        ({'signature_name': sig.IMAGE_BYTES,
          'inputs': {'image_bytes': [_b64(self.png)]}}, False),
        ({'instances': [pixels]}, True),  # serving_default, uint8 values
        ({'inputs': {'images': [pixels]}}, False),
        ({'signature_name': sig.TF_EXAMPLE, 'instances': [_b64(example)]}, True),
    ]
    for body, rows in requests:
      with self.subTest(body=str(body)[:80]):
        status, payload = self._predict(body)
        self.assertEqual(status, 200, payload)
        if rows:
          self.assertLen(payload['predictions'], 1)
          self._assert_detections(payload['predictions'][0])
        else:
          outputs = {k: v[0] for k, v in payload['outputs'].items()}
          self._assert_detections(outputs)

  def test_a_batch_of_two(self):
    other = serving_testing.encode(serving_testing.image(64, 64, seed=9))
    status, payload = self._predict({'signature_name': sig.IMAGE_BYTES,
                                     'instances': [_b64(other), _b64(self.png)]})
    self.assertEqual(status, 200)
    self.assertLen(payload['predictions'], 2)
    self._assert_detections(payload['predictions'][1])
    status, payload = self._predict(
        {'signature_name': sig.IMAGE_BYTES, 'instances': [_b64(self.png)]},
        path='/v1/models/shapes/versions/1:predict')
    self.assertEqual(status, 200)

  def test_bad_requests_are_400_and_the_server_keeps_serving(self):
    jpeg = serving_testing.encode(self.pixels, 'JPEG')
    cases = [
        (b'{"instances": [', 'not valid JSON'),
        (b'\xff\xfe', 'not valid JSON'),
        ({'signature_name': sig.IMAGE_BYTES, 'instances': [_b64(b'')]},
         r'image_bytes[0]: the image is empty'),
        ({'signature_name': sig.IMAGE_BYTES, 'instances': [_b64(b'this is not an image')]},
         'image_bytes[0]: not an image'),
        ({'signature_name': sig.IMAGE_BYTES, 'instances': [_b64(jpeg[:300])]}, 'JPEG'),
        ({'signature_name': sig.IMAGE_BYTES, 'instances': [{'b64': 'not base64!'}]},
         'not valid base64'),
        ({'instances': [[1, 2, 3]]}, 'expected a tensor of rank 4'),
        ({'instances': [[[0.5, 1, 2]]]}, 'it takes JSON integers'),
        ({'instances': [[[300, 1, 2]]]}, 'must be in [0, 255]'),
        ({'instances': [[['a', 'b', 'c']]]}, 'the string "a" for a uint8 input'),
        ({'inputs': {'images': [[[[1, 2]]]]}}, 'dimension 3 must be 3'),
        ({'instances': [np.zeros([256, 256, 3], np.uint8).tolist()]},
         'the image is 256 x 256 pixels; at most 40000'),
        ({'signature_name': sig.IMAGE_BYTES,
          'instances': [_b64(serving_testing.png_header(50_000, 50_000))]},
         'the image is 50000 x 50000 pixels'),
        ({'signature_name': 'nope', 'instances': [1]}, 'not a signature of this model'),
        ({'instances': [], 'signature_name': sig.IMAGE_BYTES}, 'non-empty list'),
        ({'instances': [1], 'inputs': [1]}, 'exactly one of'),
        ([1, 2], 'must be a JSON object'),
        ({'signature_name': sig.IMAGE_BYTES, 'instances': [{'wrong': _b64(self.png)}]},
         'missing [\'image_bytes\']'),
    ]
    for body, message in cases:
      with self.subTest(message=message):
        status, payload = self._predict(body)
        self.assertEqual(status, 400, payload)
        self.assertIn(message, payload['error'])
        self.assertNotIn('Traceback', payload['error'])
    status, payload = self._predict({'signature_name': sig.IMAGE_BYTES,
                                     'instances': [_b64(self.png)]})
    self.assertEqual(status, 200)
    self._assert_detections(payload['predictions'][0])

  def test_too_large_bodies_are_refused_unread(self):
    # Headers only: the server answers from Content-Length before any body is
    # sent (a client still writing the body when the server closes the
    # connection would see a broken pipe instead of the answer).
    connection = http.client.HTTPConnection('127.0.0.1', self.port, timeout=120)
    try:
      connection.putrequest('POST', '/v1/models/shapes:predict')
      connection.putheader('Content-Type', 'application/json')
      connection.putheader('Content-Length', str(MAX_REQUEST_BYTES + 1))
      connection.endheaders()
      response = connection.getresponse()
      status, payload = response.status, json.loads(response.read())
    finally:
      connection.close()
    self.assertEqual(status, 413)
    self.assertIn(f'limit is {MAX_REQUEST_BYTES}', payload['error'])
    status, _ = self._request('GET', '/v1/models/shapes')
    self.assertEqual(status, 200)

  def test_unknown_paths_models_versions_and_methods(self):
    for method, path, code in [('GET', '/v1/models/other', 404),
                               ('GET', '/v1/models/shapes/versions/7', 404),
                               ('GET', '/v1/models/shapes/labels/stable', 404),
                               ('GET', '/v2/whatever', 404),
                               ('GET', '/v1/models/shapes:predict', 405),
                               ('POST', '/v1/models/shapes:classify', 400)]:
      with self.subTest(path=path):
        status, payload = self._request(method, path, b'{}' if method == 'POST' else None)
        self.assertEqual(status, code)
        self.assertIn('error', payload)

  def test_clean_error_keeps_the_message(self):
    error = tf.errors.InvalidArgumentError(None, None, (
        'Graph execution error:\n\nDetected at node x defined at:\n<stack traces '
        'unavailable>\nassertion failed: [image_bytes[2]: the image is empty]\n'
        '\t [[{{node map/while/Assert}}]] [Op:__inference_signature_wrapper_1]'))
    self.assertEqual(server.clean_error(error), 'image_bytes[2]: the image is empty')
    error = tf.errors.InvalidArgumentError(None, None, (
        'Graph execution error:\n\nDetected at node d\n<stack traces unavailable>\n'
        'Invalid PNG data.\n\t [[{{node d}}]] [Op:__inference_1]'))
    self.assertEqual(server.clean_error(error), 'Invalid PNG data.')


if __name__ == '__main__':
  tf.test.main()
