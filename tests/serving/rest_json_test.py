"""TF Serving's REST JSON: request forms, binary values, errors, responses."""
import base64
import json
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from spinenet.serving import rest_json

IMAGES = {'images': (tf.uint8, tf.TensorShape([None, None, None, 3]))}
BYTES = {'image_bytes': (tf.string, tf.TensorShape([None]))}
TWO = {'a': (tf.float32, tf.TensorShape([None, 2])), 'b': (tf.int32, tf.TensorShape([None]))}
SIGNATURES = {'serving_default': IMAGES, 'serve_bytes': BYTES, 'two': TWO}


def _b64(data):
  return {'b64': base64.b64encode(data).decode()}


class ParseTest(tf.test.TestCase, parameterized.TestCase):

  def test_row_format_single_input_bare_and_named(self):
    pixel = [[[1, 2, 3]]]
    for instances in ([pixel, pixel], [{'images': pixel}, {'images': pixel}]):
      name, inputs, rows = rest_json.parse_request({'instances': instances}, SIGNATURES)
      self.assertEqual((name, rows), ('serving_default', True))
      self.assertEqual(inputs['images'].dtype, np.uint8)
      self.assertAllEqual(inputs['images'], np.array([pixel, pixel], np.uint8))

  def test_binary_values_and_text(self):
    _, inputs, _ = rest_json.parse_request(
        {'signature_name': 'serve_bytes', 'instances': [_b64(b'\x00\xff'), 'text']},
        SIGNATURES)
    self.assertEqual(list(inputs['image_bytes']), [b'\x00\xff', b'text'])

  def test_columnar_format_several_inputs(self):
    _, inputs, rows = rest_json.parse_request(
        {'signature_name': 'two', 'inputs': {'a': [[1, 2.5]], 'b': [7]}}, SIGNATURES)
    self.assertFalse(rows)
    self.assertAllClose(inputs['a'], [[1.0, 2.5]])
    self.assertAllEqual(inputs['b'], [7])
    _, inputs, _ = rest_json.parse_request(
        {'signature_name': 'two', 'instances': [{'a': [1, 2], 'b': 3}]}, SIGNATURES)
    self.assertAllEqual(inputs['b'], [3])

  @parameterized.parameters(
      ({'instances': [[[[1, 2, 3]]], [[[1, 2, 3], [4, 5, 6]]]]}, 'differs from instances[0]'),
      ({'instances': [[[[1, 2, 3]], [[1, 2]]]]}, 'rectangular'),
      ({'instances': [[[[1, 2, 256]]]]}, 'must be in [0, 255]'),
      ({'instances': [[[[1, 2, -1]]]]}, 'must be in [0, 255]'),
      ({'instances': [[[[1.5, 2, 3]]]]}, 'the number 1.5 for a uint8 input'),
      ({'instances': [[[[1.0, 2, 3]]]]}, "'images'[0][0][0]: the number 1.0 for a uint8"),
      ({'instances': [[[[True, 2, 3]]]]}, 'the boolean true for a uint8 input'),
      ({'instances': [[[[1, 2, 10**30]]]]},
       'the number 1000000000000000000000000000000 does not fit the input\'s dtype uint8'),
      ({'instances': [[[{'b64': 'AA=='}]]]},
       'a {"b64": ...} binary value for a uint8 input'),
      ({'instances': [[[[1, 2, None]]]]}, 'null for a uint8 input'),
      ({'signature_name': 'two', 'instances': [[1, 2]]}, 'must be an object keyed'),
      ({'signature_name': 'two', 'inputs': {'a': [[1, 2]]}}, "missing ['b']"),
      ({'signature_name': 'two', 'inputs': [[1, 2]]}, 'keyed by the inputs'),
      ({'signature_name': 'serve_bytes', 'instances': [5]}, 'expected strings'),
      ({'signature_name': 'serve_bytes', 'instances': [{'b64': 5}]}, 'base64 string'),
      ({'signature_name': 'serve_bytes', 'inputs': [[_b64(b'x')]]}, 'rank 1'),
      ({'instances': [1], 'extra': 1}, 'Unknown request field'),
      ({}, 'exactly one of'),
      ({'instances': {'images': 1}}, 'non-empty list'),
  )
  def test_malformed_requests(self, body, message):
    with self.assertRaises(rest_json.RequestError) as raised:
      rest_json.parse_request(body, SIGNATURES)
    self.assertIn(message, str(raised.exception))


class LoadsTest(tf.test.TestCase, parameterized.TestCase):
  """Large numeric lists are parsed from the text, to the same arrays as json.loads."""

  def _both(self, body, signatures=SIGNATURES):
    fast = rest_json.parse_request(rest_json.loads(body), signatures)
    slow = rest_json.parse_request(json.loads(body), signatures)
    self.assertEqual(fast[0], slow[0])
    for name in slow[1]:
      self.assertEqual(fast[1][name].dtype, slow[1][name].dtype)
      self.assertAllEqual(fast[1][name], slow[1][name])
    return fast[1]

  @parameterized.parameters(1 << 22, 64)  # whole text at once, and 64-byte chunks
  def test_large_lists_match_json_loads(self, chunk_bytes):
    self.enter_context(mock.patch.object(rest_json, '_CHUNK_BYTES', chunk_bytes))
    pixels = np.random.default_rng(0).integers(0, 256, (2, 30, 40, 3))
    for body in [json.dumps({'instances': pixels.tolist()}),
                 json.dumps({'inputs': {'images': pixels.tolist()}}, indent=2),
                 json.dumps({'instances': [{'images': p} for p in pixels.tolist()]})]:
      self.assertIsInstance(rest_json.loads(body.encode())['instances' if 'instances' in
                                                          body else 'inputs'],
                            (rest_json.NumericText, dict, list))
      inputs = self._both(body.encode())
      self.assertAllEqual(inputs['images'], pixels)
    floats = np.random.default_rng(1).normal(size=(300, 2)) * 1e3
    body = json.dumps({'signature_name': 'two', 'inputs': {'a': floats.tolist(),
                                                           'b': list(range(300))}})
    inputs = self._both(body.encode())
    self.assertAllClose(inputs['a'], floats.astype(np.float32))

  def test_only_object_values_outside_strings_are_taken_from_the_text(self):
    numbers = '[' + ','.join(['7'] * 3000) + ']'
    value = rest_json.loads(('{"instances": [1], "x": "a: ' + numbers + '"}').encode())
    self.assertEqual(value['x'], 'a: ' + numbers)
    value = rest_json.loads(('{"inputs": ' + numbers + '}').encode())
    self.assertIsInstance(value['inputs'], rest_json.NumericText)
    self.assertLen(value['inputs'].to_list(), 3000)

  @parameterized.parameters(
      ('[[1, 2, 3]' + ', [1, 2, 3]' * 2000 + ', [1, 2]]', 'rectangular'),
      ('[[1, 2, 3]' + ', [1, 2, 3]' * 2000 + ', [1, 2, 3.5]]', 'the number 3.5'),
      ('[[1, 2, 3]' + ', [1, 2, 3]' * 2000 + ', [1, 2, 1e400]]', 'the number Infinity'),
      ('[[1, 2, 3]' + ', [1, 2, 3]' * 2000 + ', [1, 2, 99999999999999999999]]',
       'does not fit'),
      ('[[1, 2, 3]' + ', [1, 2, 3]' * 2000 + ', [1, 2, 256]]', '256 does not fit'),
      ('[[1, 2, 3]' + ', [1, 2, 3]' * 2000 + ', [1, 2, -1]]', '-1 does not fit'),
      ('[[1, 2, 3]' + ', [1, 2, 3]' * 2000 + ', [1, 2, 3 4]]', 'not valid JSON'),
  )
  def test_large_lists_with_a_bad_element(self, images, message):
    body = ('{"inputs": {"images": [[' + images + ']]}}').encode()
    with self.assertRaises(rest_json.RequestError) as raised:
      rest_json.parse_request(rest_json.loads(body), SIGNATURES)
    self.assertIn(message, str(raised.exception))

  def test_deep_nesting_is_a_request_error(self):
    for body in (b'[' * 100_000 + b']' * 100_000, b'{"a": ' * 100_000 + b'1' + b'}' * 100_000):
      with self.assertRaisesRegex(rest_json.RequestError, 'nested too deeply'):
        rest_json.loads(body)


class FormatTest(tf.test.TestCase):

  def test_rows_and_columns(self):
    outputs = {'scores': np.array([[0.5, 0.25], [1.0, 0.0]], np.float32),
               'names': np.array([[b'cat', b''], [b'dog', b'x']], object),
               'thumb_bytes': np.array([b'\x00\x01', b'\xff'], object)}
    rows = rest_json.format_response(outputs, row_format=True)['predictions']
    self.assertLen(rows, 2)
    self.assertEqual(rows[0]['names'], ['cat', ''])
    self.assertEqual(rows[1]['scores'], [1.0, 0.0])
    self.assertEqual(base64.b64decode(rows[1]['thumb_bytes']['b64']), b'\xff')
    columns = rest_json.format_response(outputs, row_format=False)['outputs']
    self.assertEqual(columns['names'], [['cat', ''], ['dog', 'x']])
    single = rest_json.format_response({'y': np.array([3, 4])}, row_format=True)
    self.assertEqual(single, {'predictions': [3, 4]})
    self.assertEqual(rest_json.format_response({'y': np.array([3, 4])}, False),
                     {'outputs': [3, 4]})


if __name__ == '__main__':
  tf.test.main()
