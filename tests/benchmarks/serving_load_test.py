"""benchmarks/serving_load: percentiles, outcome classes, the large pixel body."""
import http.client
import json

import numpy as np
import tensorflow as tf

from benchmarks import serving_load
from spinenet.serving import rest_json


class ServingLoadHelpersTest(tf.test.TestCase):

  def test_percentile_nearest_rank(self):
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    self.assertEqual(serving_load.percentile(values, 50), 3.0)
    self.assertEqual(serving_load.percentile(values, 99), 5.0)
    self.assertEqual(serving_load.percentile(values, 0), 1.0)
    self.assertEqual(serving_load.percentile(list(range(1, 101)), 99), 99.0)
    self.assertIsNone(serving_load.percentile([], 50))

  def test_outcomes(self):
    self.assertEqual(serving_load.outcome(200, None), 'ok')
    self.assertEqual(serving_load.outcome(400, None), 'error')
    self.assertEqual(serving_load.outcome(503, None), 'http_5xx')
    self.assertEqual(serving_load.outcome(None, ConnectionResetError()), 'reset')
    self.assertEqual(serving_load.outcome(None, http.client.RemoteDisconnected()), 'reset')
    self.assertEqual(serving_load.outcome(None, TimeoutError()), 'error')

  def test_pixels_body_is_the_size_asked_and_parses_to_its_shape(self):
    body, (height, width) = serving_load.pixels_body(300_000, width=100, seed=1)
    self.assertBetween(len(body), 280_000, 300_000)
    pixels = np.asarray(json.loads(body)['instances'], np.int64)
    self.assertEqual(pixels.shape, (1, height, width, 3))
    self.assertBetween(int(pixels.min()), 0, 255)
    self.assertBetween(int(pixels.max()), 0, 255)
    signatures = {'serving_default': {
        'images': (tf.uint8, tf.TensorShape([None, None, None, 3]))}}
    _, inputs, _ = rest_json.parse_request(rest_json.loads(body), signatures)
    self.assertAllEqual(inputs['images'], pixels.astype(np.uint8))


if __name__ == '__main__':
  tf.test.main()
