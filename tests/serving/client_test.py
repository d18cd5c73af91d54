"""spinenet-predict's clients (local, REST, gRPC) and the annotated outputs."""
from concurrent import futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import grpc
import numpy as np
from PIL import Image
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from spinenet.serving import client
from spinenet.serving import draw
from spinenet.serving import predict_lib
from spinenet.serving import server
from spinenet.serving import signatures as sig

import serving_testing


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """The gRPC Predict of tensorflow_model_server, over a `server.LoadedModel`."""

  def __init__(self, model):
    self.model = model

  def Predict(self, request, context):  # pylint: disable=invalid-name
    if request.model_spec.name != self.model.name:
      context.abort(grpc.StatusCode.NOT_FOUND,
                    f'Servable not found for request: Latest({request.model_spec.name})')
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    try:
      outputs = self.model.predict(request.model_spec.signature_name or sig.IMAGE_TENSOR,
                                   inputs)
    except tf.errors.InvalidArgumentError as e:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT, server.clean_error(e))
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for name, value in outputs.items():
      response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    return response


class ClientTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.base, _ = serving_testing.exported_detector()
    cls.images = [serving_testing.encode(serving_testing.image(96, 144), 'PNG'),
                  serving_testing.encode(serving_testing.image(80, 80, seed=4), 'JPEG')]
    cls.local = client.LocalPredictor(cls.base)
    cls.expected = cls.local.predict(cls.images)
    cls.model = server.load_model(cls.base, 'shapes', warmup=False)
    cls.http = server.make_server(server.RestApi(cls.model), port=0)
    threading.Thread(target=cls.http.serve_forever, daemon=True).start()
    cls.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _PredictionService(cls.model), cls.grpc)
    cls.grpc_port = cls.grpc.add_insecure_port('127.0.0.1:0')
    cls.grpc.start()

  @classmethod
  def tearDownClass(cls):
    cls.http.shutdown()
    cls.http.server_close()
    cls.grpc.stop(None)
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _assert_same(self, results):
    self.assertLen(results, len(self.expected))
    for got, want in zip(results, self.expected):
      self.assertCountEqual(got, want)
      num = int(want[sig.NUM_DETECTIONS])
      self.assertEqual(int(got[sig.NUM_DETECTIONS]), num)
      self.assertAllClose(got[sig.DETECTION_BOXES], want[sig.DETECTION_BOXES], atol=1e-3)
      self.assertAllClose(got[sig.DETECTION_SCORES], want[sig.DETECTION_SCORES], atol=1e-5)
      self.assertAllEqual(got[sig.DETECTION_CLASSES], want[sig.DETECTION_CLASSES])
      self.assertEqual(list(got[sig.DETECTION_CLASS_NAMES]),
                       list(want[sig.DETECTION_CLASS_NAMES]))

  def test_local_results_are_per_image(self):
    first = self.expected[0]
    self.assertEqual(first[sig.DETECTION_BOXES].shape, (100, 4))
    self.assertGreater(int(first[sig.NUM_DETECTIONS]), 5)
    self.assertIsInstance(first[sig.DETECTION_CLASS_NAMES][0], str)
    self.assertEqual(self.local.label_map(), serving_testing.LABEL_MAP)

  def test_rest_matches_local(self):
    rest = client.make_predictor(f'http://127.0.0.1:{self.http.server_address[1]}',
                                 'shapes')
    self.assertIsInstance(rest, client.RestPredictor)
    self._assert_same(rest.predict(self.images))
    self.assertEqual(rest.status()['model_version_status'][0]['state'], 'AVAILABLE')

  def test_rest_errors_carry_the_server_message(self):
    rest = client.RestPredictor(f'http://127.0.0.1:{self.http.server_address[1]}',
                                'shapes')
    with self.assertRaisesRegex(client.PredictionError, r'HTTP 400.*image is empty'):
      rest.predict([b''])
    with self.assertRaisesRegex(client.PredictionError, 'HTTP 404'):
      client.RestPredictor(f'http://127.0.0.1:{self.http.server_address[1]}',
                           'other').predict(self.images)

  def test_grpc_matches_local(self):
    predictor = client.make_predictor(f'grpc://127.0.0.1:{self.grpc_port}', 'shapes')
    self.assertIsInstance(predictor, client.GrpcPredictor)
    try:
      self._assert_same(predictor.predict(self.images))
      with self.assertRaisesRegex(client.PredictionError,
                                  r'INVALID_ARGUMENT.*image_bytes\[0\]: not an image'):
        predictor.predict([b'plain text'])
    finally:
      predictor.close()

  def test_make_predictor_rejects_unknown_targets(self):
    with self.assertRaisesRegex(ValueError, 'neither a SavedModel directory'):
      client.make_predictor('/no/such/dir')

  def test_predict_files_draws_and_lists_detections(self):
    inputs = os.path.join(self.tmp, 'in')
    os.makedirs(inputs)
    paths = []
    for i, data in enumerate(self.images):
      paths.append(os.path.join(inputs, f'image_{i}.{"png" if i == 0 else "jpg"}'))
      with open(paths[-1], 'wb') as f:
        f.write(data)
    out = os.path.join(self.tmp, 'out')
    summary = predict_lib.predict_files(self.local, paths, out, min_score=0.2, batch_size=2)
    with open(os.path.join(out, 'predictions.json')) as f:
      self.assertEqual(json.load(f), json.loads(json.dumps(summary)))
    first = summary[0]
    want = self.expected[0]
    kept = want[sig.DETECTION_SCORES] >= 0.2
    self.assertLen(first['detections'], int(kept.sum()))
    self.assertGreater(len(first['detections']), 0)
    top = first['detections'][0]
    self.assertEqual(top['name'], serving_testing.LABEL_MAP[top['class']])
    drawn = np.asarray(Image.open(first['output']))
    original = np.asarray(Image.open(paths[0]))
    self.assertEqual(drawn.shape, original.shape)
    color = np.array(draw.class_color(top['class']), np.uint8)
    ymin, xmin, ymax, xmax = (int(round(v)) for v in top['box'])
    edge = drawn[min(ymax, drawn.shape[0]) - 1, xmin:max(xmax, xmin + 1)]
    self.assertTrue(np.any(np.all(edge == color, axis=-1)))


  def test_spinenet_predict_command_line(self):
    """The CLI end to end in a child process (its flags stay out of this one)."""
    image = os.path.join(self.tmp, 'cli.png')
    with open(image, 'wb') as f:
      f.write(self.images[0])
    out = os.path.join(self.tmp, 'cli_out')
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', TF_USE_LEGACY_KERAS='1')
    done = subprocess.run(
        [sys.executable, '-m', 'spinenet.cli.predict', f'--target={self.base}',
         f'--image={os.path.join(self.tmp, "cli.*")}', f'--output_dir={out}',
         '--min_score=0.2'], capture_output=True, text=True, env=env, timeout=600)
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    self.assertIn(f'{image} -> {os.path.join(out, "cli.png")}', done.stdout)
    self.assertTrue(os.path.exists(os.path.join(out, 'cli.png')))
    done = subprocess.run(
        [sys.executable, '-m', 'spinenet.cli.predict', f'--target={self.base}',
         '--image=/no/such/*.jpg', f'--output_dir={out}'],
        capture_output=True, text=True, env=env, timeout=600)
    self.assertNotEqual(done.returncode, 0)
    self.assertIn('matches no file', done.stderr)


if __name__ == '__main__':
  tf.test.main()
