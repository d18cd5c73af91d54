"""Clients of an exported model: local SavedModel, TF Serving REST, TF Serving gRPC.

All three send encoded image files (the `serve_bytes` signature, the smallest
request) and return one dict of NumPy arrays per image, the signature's
outputs without the batch axis (`detection_boxes` `[N, 4]` in the image's
pixels, `num_detections` a scalar, names as `str`, outputs named `*_bytes`
such as `detection_masks_png_bytes` as `bytes`, ...).

  predictor = make_predictor('http://127.0.0.1:8501', model_name='spinenet')
  [result] = predictor.predict([open('cat.jpg', 'rb').read()])

`make_predictor` picks the client from the target: a directory (a SavedModel
or a `--model_base_path` of versions), `http(s)://host:port` (REST:
`POST /v1/models/NAME[/versions/N]:predict` with `{"signature_name":
"serve_bytes", "instances": [{"b64": ...}]}`) or `grpc://host:port` /
`host:port` (gRPC `PredictionService/Predict`, tensorflow-serving-api).
"""
import base64
import json
import os
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from spinenet.serving import server
from spinenet.serving import signatures as sig

Result = Dict[str, np.ndarray]


class PredictionError(RuntimeError):
  """The model or server refused a request; the message is the server's."""


def _as_text(array):
  """Byte strings (and JSON strings) as an object array of `str`."""
  array = np.asarray(array)
  if array.dtype.kind not in 'OSU':
    return array
  decode = lambda b: b.decode('utf-8', 'replace') if isinstance(b, bytes) else str(b)  # noqa: E731
  return np.array([decode(b) for b in array.ravel()], dtype=object).reshape(array.shape)


def _as_bytes(array):
  """An object array of `bytes`; REST's `{"b64": ...}` values decoded."""
  array = np.asarray(array, dtype=object)
  def one(value):
    if isinstance(value, dict) and set(value) == {'b64'}:
      return base64.b64decode(value['b64'])
    return bytes(value)
  return np.array([one(v) for v in array.ravel()], dtype=object).reshape(array.shape)


def _convert(name, value):
  """Binary outputs (`*_bytes`, TF Serving's rule) as bytes, other strings as str."""
  return _as_bytes(value) if name.endswith('_bytes') else _as_text(value)


def _split(outputs: Dict[str, np.ndarray], count: int) -> List[Result]:
  """`{name: [B, ...]}` -> B dicts of `[...]`, strings as `str` or `bytes`."""
  return [{name: _convert(name, np.asarray(value)[i]) for name, value in outputs.items()}
          for i in range(count)]


class LocalPredictor:
  """Runs a SavedModel in this process.

  Args:
    path: a SavedModel directory, or a directory of numbered versions (the
      latest is used).
    signature: signature taking encoded images.
  """

  def __init__(self, path: str, signature: str = sig.IMAGE_BYTES):
    _, self.path = server.latest_version(path)
    self._fn = tf.saved_model.load(self.path).signatures[signature]
    self._input = sig.INPUT_KEYS[signature]

  def predict(self, images: Sequence[bytes]) -> List[Result]:
    try:
      outputs = self._fn(**{self._input: tf.constant(list(images), tf.string)})
    except tf.errors.InvalidArgumentError as e:
      raise PredictionError(server.clean_error(e)) from None
    return _split({k: v.numpy() for k, v in outputs.items()}, len(images))

  def label_map(self) -> Dict[int, str]:
    """The label map shipped in the SavedModel's assets (may be empty)."""
    path = os.path.join(self.path, 'assets', sig.LABEL_MAP_ASSET)
    if not tf.io.gfile.exists(path):
      return {}
    with tf.io.gfile.GFile(path) as f:
      return {int(k): v for k, v in json.load(f).items()}


class RestPredictor:
  """Sends images to TF Serving's REST API (or `spinenet-serve`).

  Args:
    url: `http://host:port` of the server.
    model_name: NAME in `/v1/models/NAME`.
    version: optional version to address.
    signature: signature taking encoded images.
    timeout: seconds per request.
  """

  def __init__(self, url: str, model_name: str, version: Optional[int] = None,
               signature: str = sig.IMAGE_BYTES, timeout: float = 60.0):
    base = f'{url.rstrip("/")}/v1/models/{model_name}'
    if version is not None:
      base += f'/versions/{int(version)}'
    self.base_url = base
    self.signature = signature
    self.timeout = timeout

  def _call(self, url, payload=None):
    data = None if payload is None else json.dumps(payload).encode('utf-8')
    request = urllib.request.Request(url, data=data, method='GET' if data is None else 'POST',
                                     headers={'Content-Type': 'application/json'})
    try:
      with urllib.request.urlopen(request, timeout=self.timeout) as response:
        return json.loads(response.read())
    except urllib.error.HTTPError as e:
      body = e.read()
      try:
        message = json.loads(body).get('error', body.decode('utf-8', 'replace'))
      except ValueError:
        message = body.decode('utf-8', 'replace')
      raise PredictionError(f'HTTP {e.code} from {url}: {message}') from None

  def status(self) -> dict:
    """`GET /v1/models/NAME[/versions/N]`."""
    return self._call(self.base_url)

  def metadata(self) -> dict:
    """`GET .../metadata`: the signature defs."""
    return self._call(self.base_url + '/metadata')

  def predict(self, images: Sequence[bytes]) -> List[Result]:
    payload = {'signature_name': self.signature,
               'instances': [{'b64': base64.b64encode(b).decode('ascii')} for b in images]}
    predictions = self._call(self.base_url + ':predict', payload)['predictions']
    return [{k: _convert(k, v) for k, v in p.items()} for p in predictions]


class GrpcPredictor:
  """Sends images to TF Serving's gRPC `PredictionService`.

  Args:
    target: `host:port` (gRPC port, 8500 by default in TF Serving).
    model_name: the served model's name.
    version: optional version to address.
    signature: signature taking encoded images.
    timeout: seconds per request.
    max_message_bytes: largest response accepted.
  """

  def __init__(self, target: str, model_name: str, version: Optional[int] = None,
               signature: str = sig.IMAGE_BYTES, timeout: float = 60.0,
               max_message_bytes: int = 64 << 20):
    options = [('grpc.max_receive_message_length', max_message_bytes),
               ('grpc.max_send_message_length', max_message_bytes)]
    self._channel = grpc.insecure_channel(target, options=options)
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self.model_name, self.version = model_name, version
    self.signature, self.timeout = signature, timeout
    self._input = sig.INPUT_KEYS[signature]

  def predict(self, images: Sequence[bytes]) -> List[Result]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = self.model_name
    request.model_spec.signature_name = self.signature
    if self.version is not None:
      request.model_spec.version.value = int(self.version)
    request.inputs[self._input].CopyFrom(
        tf.make_tensor_proto(list(images), dtype=tf.string, shape=[len(images)]))
    try:
      response = self._stub.Predict(request, timeout=self.timeout)
    except grpc.RpcError as e:
      raise PredictionError(f'gRPC {e.code().name}: {e.details()}') from None
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    return _split(outputs, len(images))

  def close(self):
    self._channel.close()


def make_predictor(target: str, model_name: str = 'spinenet',
                   version: Optional[int] = None, timeout: float = 60.0):
  """A predictor for `target`: a directory, `http(s)://...` or `[grpc://]host:port`."""
  if target.startswith(('http://', 'https://')):
    return RestPredictor(target, model_name, version, timeout=timeout)
  if target.startswith('grpc://'):
    return GrpcPredictor(target[len('grpc://'):], model_name, version, timeout=timeout)
  if tf.io.gfile.isdir(target):
    if version is not None:
      target = os.path.join(target, str(version))
    return LocalPredictor(target)
  if ':' in target and target.rsplit(':', 1)[1].isdigit():
    return GrpcPredictor(target, model_name, version, timeout=timeout)
  raise ValueError(f'--target={target!r} is neither a SavedModel directory, an '
                   'http(s):// URL (REST) nor a host:port (gRPC).')
