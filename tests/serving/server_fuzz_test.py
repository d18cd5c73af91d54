"""spinenet-serve under hostile input: every case is a JSON error, then a valid answer.

One server for the class; each case is a subTest that checks the status, the
JSON `{"error": ...}` body (and the message where it matters), then that the
server still answers a valid prediction correctly.
"""
import base64
import http.client
import json
import logging
import socket
import threading
import time

import numpy as np
import tensorflow as tf

from spinenet.serving import server
from spinenet.serving import signatures as sig

import serving_testing

MAX_REQUEST_BYTES = 4 << 20
PREDICT = '/v1/models/shapes:predict'


def _b64(data):
  return {'b64': base64.b64encode(data).decode('ascii')}


def _bytes_request(*values):
  return {'signature_name': sig.IMAGE_BYTES, 'instances': [_b64(v) for v in values]}


class ServerFuzzTest(tf.test.TestCase):

  cases = 0  # subTests run, summed over the class (printed at tearDownClass)

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    serving_testing.start_detector_server(cls, MAX_REQUEST_BYTES)
    cls.jpeg = serving_testing.encode(cls.pixels, 'JPEG')

  @classmethod
  def tearDownClass(cls):
    serving_testing.stop_server(cls)
    print(f'\nserver_fuzz_test: {ServerFuzzTest.cases} cases')
    super().tearDownClass()

  # Helpers.

  def _connection(self):
    return http.client.HTTPConnection('127.0.0.1', self.port, timeout=60)

  def _request(self, method, path, body=None, headers=None):
    """`(status, headers, parsed JSON or None for an empty body)`."""
    connection = self._connection()
    try:
      data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
      connection.request(method, path, body=data, headers=headers or {})
      response = connection.getresponse()
      raw = response.read()
      self.assertEqual(response.getheader('Content-Type'), 'application/json')
      return response.status, response, json.loads(raw) if raw else None
    finally:
      connection.close()

  def _raw(self, data, read=True):
    """Sends raw bytes; returns `(status, JSON body)` of the answer."""
    with socket.create_connection(('127.0.0.1', self.port), timeout=60) as sock:
      sock.sendall(data)
      if not read:
        return None
      sock.shutdown(socket.SHUT_WR)
      chunks = []
      while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
          break
        chunks.append(chunk)
    head, _, body = b''.join(chunks).partition(b'\r\n\r\n')
    status = int(head.split(b' ')[1])
    self.assertIn(b'content-type: application/json', head.lower())
    return status, json.loads(body)

  def _assert_still_serving(self):
    status, _, payload = self._request('POST', PREDICT, _bytes_request(self.png))
    self.assertEqual(status, 200, payload)
    result = payload['predictions'][0]
    num = int(self.expected[sig.NUM_DETECTIONS])
    self.assertGreater(num, 5)
    self.assertEqual(int(result[sig.NUM_DETECTIONS]), num)
    self.assertAllClose(np.asarray(result[sig.DETECTION_SCORES])[:num],
                        self.expected[sig.DETECTION_SCORES][:num], atol=1e-5)

  def _check(self, label, status, payload, want_status, message=None):
    ServerFuzzTest.cases += 1
    with self.subTest(label):
      self.assertEqual(status, want_status, payload)
      self.assertIsInstance(payload, dict)
      self.assertIsInstance(payload.get('error'), str)
      self.assertNotIn('Traceback', payload['error'])
      self.assertNotIn('<html', payload['error'].lower())
      if message is not None:
        self.assertIn(message, payload['error'])
      self._assert_still_serving()

  def _check_predict(self, label, body, want_status, message=None):
    status, _, payload = self._request('POST', PREDICT, body)
    self._check(label, status, payload, want_status, message)

  # Cases.

  def test_malformed_json_and_nesting(self):
    deep = 100_000
    cases = [
        ('truncated', b'{"instances": [', 'not valid JSON'),
        ('trailing garbage', b'{"instances": [1]} xyz', 'not valid JSON'),
        ('not utf-8', b'\xff\xfe{', 'not valid JSON'),
        ('empty body', b'', 'not valid JSON'),
        ('null', b'null', 'must be a JSON object'),
        ('a number', b'3', 'must be a JSON object'),
        ('a string', b'"instances"', 'must be a JSON object'),
        ('deep arrays', b'[' * deep + b']' * deep, 'nested too deeply'),
        ('deep objects', b'{"a":' * deep + b'1' + b'}' * deep, 'nested too deeply'),
        ('deep instances', b'{"instances": ' + b'[' * deep + b'1' + b']' * deep + b'}',
         'nested'),
        ('deep numeric text', b'{"instances": ' + b'[' * 5000 + b'1' + b']' * 5000 + b'}',
         'nested 5000 deep'),
        ('40 levels',
         json.dumps({'instances': json.loads('[' * 40 + '1' + ']' * 40)}).encode(),
         'nested 39 deep; a tensor has at most 32 dimensions'),
        ('NaN for uint8', b'{"instances": [[[[NaN, 1, 2]]]]}', 'takes JSON integers'),
        ('unknown field', {'instances': [1], 'extra': 1}, 'Unknown request field'),
        ('both forms', {'instances': [1], 'inputs': [1]}, 'exactly one of'),
        ('neither form', {'signature_name': sig.IMAGE_BYTES}, 'exactly one of'),
        ('bad signature name', {'signature_name': 7, 'instances': [1]},
         'not a signature of this model'),
        ('list in a string', b'{"instances": [1], "x": ": [' + b'1,' * 3000 + b'1]"}',
         'Unknown request field'),
    ]
    for label, body, message in cases:
      self._check_predict(label, body, 400, message)

  def test_wrong_dtypes(self):
    image = [[[1, 2, 3]]]

    def uint8(value):
      return {'instances': [[[[1, 2, value]]]]}

    cases = [
        ('1.0 for uint8', uint8(1.0), 'the number 1.0 for a uint8 input'),
        ('0.5 for uint8', uint8(0.5), 'the number 0.5 for a uint8 input'),
        ('1e2 for uint8', b'{"instances": [[[[1, 2, 1e2]]]]}', 'the number 100.0'),
        ('true for uint8', uint8(True), 'the boolean true for a uint8 input'),
        ('false for uint8', uint8(False), 'the boolean false for a uint8 input'),
        ('null for uint8', uint8(None), 'null for a uint8 input'),
        ('string for uint8', uint8('7'), 'the string "7" for a uint8 input'),
        ('object for uint8', uint8({'x': 1}), "an object with keys ['x']"),
        ('b64 for uint8', {'instances': [[[_b64(b'\x01\x02\x03')]]]},
         'a {"b64": ...} binary value for a uint8 input'),
        ('10^30 for uint8', uint8(10**30),
         "1000000000000000000000000000000 does not fit the input's dtype uint8"),
        ('-1 for uint8', uint8(-1), "-1 does not fit the input's dtype uint8"),
        ('256 for uint8', uint8(256), "256 does not fit the input's dtype uint8"),
        ('2^63 for uint8', uint8(2**63), 'does not fit'),
        ('number for bytes', {'signature_name': sig.IMAGE_BYTES, 'instances': [5]},
         'expected strings'),
        ('null for bytes', {'signature_name': sig.IMAGE_BYTES, 'instances': [None]},
         'got null'),
        ('bool for bytes', {'signature_name': sig.IMAGE_BYTES, 'instances': [True]},
         'got the boolean true'),
        ('b64 not a string', {'signature_name': sig.IMAGE_BYTES,
                              'instances': [{'b64': 5}]}, 'base64 string'),
        ('b64 not base64', {'signature_name': sig.IMAGE_BYTES,
                            'instances': [{'b64': 'not base64!'}]}, 'not valid base64'),
        ('pixels for bytes', {'signature_name': sig.IMAGE_BYTES, 'instances': [image]},
         'expected strings'),
        ('number for tf_examples', {'signature_name': sig.TF_EXAMPLE, 'instances': [1]},
         'expected strings'),
    ]
    for label, body, message in cases:
      self._check_predict(label, body, 400, message)

  def test_wrong_shapes(self):
    pixels = self.pixels.tolist()
    ragged_big = [row[:] for row in pixels]
    ragged_big[50] = ragged_big[50][:-1]  # one row a pixel short (the fast path's case)
    fraction_big = [[[float(v) for v in px] for px in row] for row in pixels]
    cases = [
        ('rank 1', {'instances': [[1, 2, 3]]}, 'expected a tensor of rank 4'),
        ('rank 5', {'instances': [[[[[1, 2, 3]]]]]}, 'expected a tensor of rank 4'),
        ('a scalar', {'instances': [7]}, 'expected a tensor of rank 4'),
        ('4 channels', {'instances': [[[[1, 2, 3, 4]]]]}, 'dimension 3 must be 3'),
        ('ragged', {'instances': [[[[1, 2, 3]], [[1, 2]]]]}, 'rectangular'),
        ('ragged batch', {'instances': [[[[1, 2, 3]]], [[[1, 2, 3], [4, 5, 6]]]]},
         'differs from instances[0]'),
        ('empty instances', {'instances': []}, 'non-empty list'),
        ('instances not a list', {'instances': {'images': 1}}, 'non-empty list'),
        ('empty image', {'instances': [[]]}, 'rank 4'),
        ('missing input name', {'inputs': {'pixels': [pixels]}},
         "an object with keys ['pixels'] for a uint8 input"),
        ('an extra input name', {'instances': [{'images': pixels, 'x': 1}]},
         "unexpected ['x']"),
        ('bytes of rank 2', {'signature_name': sig.IMAGE_BYTES,
                             'inputs': [[_b64(self.png)]]}, 'rank 1'),
        ('large ragged', {'instances': [ragged_big]}, 'rectangular'),
        ('large with fractions', {'instances': [fraction_big]},
         'for a uint8 input; it takes JSON integers'),
        ('large over the pixel limit', {'instances': [np.zeros([256, 256, 3], np.uint8)
                                                      .tolist()]},
         'the image is 256 x 256 pixels; at most 40000'),
        ('bytes over the pixel limit',
         _bytes_request(serving_testing.png_header(9000, 9000)),
         'the image is 9000 x 9000 pixels'),
    ]
    for label, body, message in cases:
      self._check_predict(label, body, 400, message)

  def test_large_numeric_bodies_give_the_same_detections(self):
    for label, body in [('instances', {'instances': [self.pixels.tolist()]}),
                        ('inputs', {'inputs': {'images': [self.pixels.tolist()]}}),
                        ('indented', json.dumps({'instances': [self.pixels.tolist()]},
                                                indent=2).encode())]:
      ServerFuzzTest.cases += 1
      with self.subTest(label):
        status, _, payload = self._request('POST', PREDICT, body)
        self.assertEqual(status, 200, payload)
        result = payload['predictions'][0] if 'predictions' in payload else {
            k: v[0] for k, v in payload['outputs'].items()}
        num = int(self.expected[sig.NUM_DETECTIONS])
        self.assertEqual(int(result[sig.NUM_DETECTIONS]), num)
        self.assertAllClose(np.asarray(result[sig.DETECTION_BOXES])[:num],
                            self.expected[sig.DETECTION_BOXES][:num], atol=1e-3)

  def test_truncated_and_non_image_bytes(self):
    jpeg, png = self.jpeg, self.png
    gif = b'GIF89a' + b'\x10\x00\x10\x00' + b'\x00' * 5
    cases = [
        ('jpeg cut in half', _bytes_request(png, jpeg[:len(jpeg) // 2]),
         'image_bytes[1]: could not decode the JPEG (truncated or corrupt'),
        ('jpeg header only', _bytes_request(jpeg[:300]),
         'image_bytes[0]: could not decode the JPEG'),
        ('jpeg without its end', _bytes_request(jpeg[:-10]),
         'image_bytes[0]: could not decode the JPEG'),
        ('png cut in half', _bytes_request(png[:len(png) // 2]),
         'image_bytes[0]: could not decode the PNG (truncated or corrupt'),
        ('png header only', _bytes_request(png[:40]), 'could not decode the PNG'),
        ('gif header only', _bytes_request(gif), 'could not decode the GIF'),
        ('text', _bytes_request(b'hello world'),
         'image_bytes[0]: not an image: expected the bytes of a JPEG'),
        ('random bytes', _bytes_request(np.random.default_rng(0).bytes(5000)),
         'not an image'),
        ('empty', _bytes_request(b''), 'image_bytes[0]: the image is empty'),
        ('text as a string', {'signature_name': sig.IMAGE_BYTES, 'instances': ['abc']},
         'not an image'),
        ('malformed tf_example', {'signature_name': sig.TF_EXAMPLE,
                                  'instances': [_b64(serving_testing.tf_example(png)),
                                                _b64(b'\x0a\xff\xff garbage')]},
         'tf_examples[1]: not a serialized tf.train.Example (11 bytes'),
        ('tf_example of text', {'signature_name': sig.TF_EXAMPLE,
                                'instances': [_b64(b'hello, this is not a proto')]},
         'tf_examples[0]: not a serialized tf.train.Example'),
        ('tf_example with a truncated jpeg',
         {'signature_name': sig.TF_EXAMPLE,
          'instances': [_b64(serving_testing.tf_example(jpeg[:500]))]},
         'tf_examples[0] image/encoded: could not decode the JPEG'),
        ('tf_example without an image', {'signature_name': sig.TF_EXAMPLE,
                                         'instances': [_b64(b'')]}, 'the image is empty'),
    ]
    for label, body, message in cases:
      self._check_predict(label, body, 400, message)

  def test_wrong_methods_and_paths(self):
    paths = {'/v1/models/shapes': 'GET', '/v1/models/shapes/metadata': 'GET',
             '/v1/models/shapes/versions/1': 'GET', PREDICT: 'POST'}
    for method in ('PUT', 'DELETE', 'PATCH', 'OPTIONS'):
      for path, allowed in paths.items():
        status, response, payload = self._request(method, path, b'{}')
        self._check(f'{method} {path}', status, payload, 405, f'use {allowed}')
        self.assertEqual(response.getheader('Allow'), allowed)
    for path, allowed in paths.items():
      status, response, payload = self._request('HEAD', path)
      ServerFuzzTest.cases += 1
      with self.subTest(f'HEAD {path}'):
        self.assertEqual(status, 405)
        self.assertIsNone(payload)  # a HEAD answer has no body
        self.assertEqual(response.getheader('Allow'), allowed)
    status, _, payload = self._request('GET', PREDICT)
    self._check('GET :predict', status, payload, 405, 'use POST')
    status, _, payload = self._request('POST', '/v1/models/shapes', b'{}')
    self._check('POST status', status, payload, 405, 'use GET')
    status, _, payload = self._request('FROB', '/v1/models/shapes')
    self._check('unknown method', status, payload, 501, 'Unsupported method')
    for path in ('/', '/v1', '/v1/models', '/v1/models/', '/v2/models/shapes',
                 '/v1/models/shapes/extra', '/v1/models/shapes/versions/x/y',
                 '/v1/models/shapes:predict/more', '/%00', '/v1/models/shapes/' + 'a' * 1000):
      for method in ('GET', 'DELETE'):
        status, _, payload = self._request(method, path)
        self._check(f'{method} {path[:40]}', status, payload, 404, 'Malformed request')
    for path, message in [('/v1/models/other', "serves 'shapes'"),
                          ('/v1/models/shapes/versions/7', 'the version served is 1'),
                          ('/v1/models/shapes/labels/stable', 'no version labels'),
                          ('/v1/models/other:predict', "serves 'shapes'")]:
      status, _, payload = self._request('GET', path)
      self._check(f'GET {path}', status, payload, 404, message)
    status, _, payload = self._request('POST', '/v1/models/shapes:classify', b'{}')
    self._check(':classify', status, payload, 400, 'use :predict')

  def test_huge_headers_and_bodies(self):
    request = b'POST %s HTTP/1.1\r\nHost: x\r\n' % PREDICT.encode()
    cases = [
        ('over the size limit', request + b'Content-Length: %d\r\n\r\n' %
         (MAX_REQUEST_BYTES + 1), 413, f'limit is {MAX_REQUEST_BYTES}'),
        ('no Content-Length', request + b'\r\n', 411, 'Content-Length'),
        ('negative Content-Length', request + b'Content-Length: -5\r\n\r\n', 411,
         'Content-Length'),
        ('Content-Length not a number', request + b'Content-Length: 1e3\r\n\r\n', 411,
         'Content-Length'),
        ('a 100 KB header line', request + b'X-Big: ' + b'a' * 100_000 + b'\r\n\r\n',
         431, 'Line too long'),
        ('200 headers', request + b''.join(b'X-%d: 1\r\n' % i for i in range(200)) +
         b'\r\n', 431, 'Too many headers'),
        ('a 100 KB URL', b'GET /' + b'a' * 100_000 + b' HTTP/1.1\r\n\r\n', 414, None),
        ('garbage request line', b'\x00\x01\x02 garbage\r\n\r\n', 400, None),
        ('HTTP/2 preface', b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 505, None),
    ]
    for label, data, want, message in cases:
      status, payload = self._raw(data)
      self._check(label, status, payload, want, message)
    # A body at the limit is read and refused by its content.
    body = b'{"instances": "' + b'a' * (MAX_REQUEST_BYTES - 20) + b'"}'
    self.assertLessEqual(len(body), MAX_REQUEST_BYTES)
    self._check_predict('a body at the limit', body, 400, 'non-empty list')

  def test_disconnecting_clients(self):
    head = b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %%d\r\n\r\n' % PREDICT.encode()
    valid = json.dumps(_bytes_request(self.png)).encode()
    actions = [
        ('connect and close', b''),
        ('half a request line', b'POST /v1/mod'),
        ('headers, then close', head % 1000),
        ('half the body, then close', (head % len(valid)) + valid[:len(valid) // 2]),
        ('whole request, answer not read', (head % len(valid)) + valid),
    ]
    for label, data in actions:
      ServerFuzzTest.cases += 1
      with self.subTest(label), self.assertLogs('absl', level=logging.INFO) as logs:
        with socket.create_connection(('127.0.0.1', self.port), timeout=60) as sock:
          sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
          if data:
            sock.sendall(data)
          time.sleep(0.05)
        # closed with a reset (SO_LINGER 0), as a crashed client would
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and label.startswith(('headers', 'half the', 'whole')):
          if any('went away' in r.getMessage() for r in logs.records):
            break
          time.sleep(0.05)
        self._assert_still_serving()
        tracebacks = [r.getMessage() for r in logs.records if r.exc_info]
        self.assertEqual(tracebacks, [])
        if label.startswith(('headers', 'half the')):
          self.assertTrue(any('went away' in r.getMessage() for r in logs.records),
                          [r.getMessage() for r in logs.records])

  def test_a_burst_of_64_clients_gets_no_resets(self):
    body = json.dumps(_bytes_request(self.png)).encode()
    results = [None] * 64
    barrier = threading.Barrier(len(results))

    def run(i):
      try:
        connection = self._connection()
        barrier.wait()
        connection.request('POST', PREDICT, body=body)
        response = connection.getresponse()
        results[i] = response.status
        response.read()
        connection.close()
      except Exception as e:  # pylint: disable=broad-except
        results[i] = type(e).__name__

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(results))]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
    ServerFuzzTest.cases += 1
    self.assertEqual(results, [200] * len(results))

  def test_a_full_queue_answers_503(self):
    api = server.RestApi(self.model, max_concurrent_predictions=1,
                         queue_timeout_seconds=0.2)
    busy = server.make_server(api, port=0)
    threading.Thread(target=busy.serve_forever, daemon=True).start()
    try:
      self.assertTrue(api._slots.acquire(timeout=5))  # the one slot is taken
      try:
        connection = http.client.HTTPConnection('127.0.0.1', busy.server_address[1],
                                                timeout=60)
        connection.request('POST', PREDICT, body=json.dumps(_bytes_request(self.png)))
        response = connection.getresponse()
        payload = json.loads(response.read())
        connection.close()
      finally:
        api._slots.release()
      self.assertEqual(response.getheader('Retry-After'), '1')
      self._check('queue timeout', response.status, payload, 503,
                  '--max_concurrent_predictions')
    finally:
      busy.shutdown()
      busy.server_close()


class ByteBudgetTest(tf.test.TestCase):

  def test_waits_for_room_and_lets_a_large_body_in_alone(self):
    budget = server.ByteBudget(100)
    self.assertTrue(budget.acquire(60, timeout=0))
    self.assertFalse(budget.acquire(60, timeout=0.01))  # 120 > 100
    self.assertTrue(budget.acquire(40, timeout=0))
    budget.release(60)
    budget.release(40)
    self.assertTrue(budget.acquire(500, timeout=0))  # over the budget but alone
    self.assertFalse(budget.acquire(1, timeout=0.01))
    released = threading.Timer(0.05, budget.release, args=(500,))
    released.start()
    self.assertTrue(budget.acquire(1, timeout=10))  # woken by the release
    released.join()


if __name__ == '__main__':
  tf.test.main()
