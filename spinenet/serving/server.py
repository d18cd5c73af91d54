"""`spinenet-serve`: a small HTTP server with TF Serving's REST contract.

For trying an export where `tensorflow_model_server` is not installed; in
production run TF Serving itself (docs/serving.md). Clients cannot tell the
difference for what is implemented:

  GET  /v1/models/NAME[/versions/N]            model status
  GET  /v1/models/NAME[/versions/N]/metadata   signature defs
  POST /v1/models/NAME[/versions/N]:predict    row ("instances") or columnar
                                               ("inputs") requests, b64 values

Errors are `{"error": "..."}`: 400 for a malformed request or input the model
refuses (empty or corrupt image bytes, wrong dtype or rank, an image over
the export's pixel limit), 404 for an unknown model, version or path, 413 for
a body over `max_request_bytes`. A bad request never stops the server.

It loads the latest version under `--model_base_path` (or the one given),
binds 127.0.0.1 unless told otherwise, runs at most
`max_concurrent_predictions` predictions at a time and warms every signature
up before accepting requests.
"""
import dataclasses
import http.server
import json
import os
import re
import threading
import time
from typing import Dict, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from google.protobuf import json_format
from spinenet.serving import rest_json
from spinenet.serving import signatures as sig
from spinenet.serving import versions

from tensorflow.python.saved_model import loader_impl  # pylint: disable=g-direct-tensorflow-import

DEFAULT_MAX_REQUEST_BYTES = 64 << 20
_PATH = re.compile(r'^/v1/models/(?P<name>[^/:]+)'
                   r'(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?'
                   r'(?P<action>/metadata|:[A-Za-z]+)?/?$')


class ModelNotFound(LookupError):
  """Unknown model name, version or label (HTTP 404)."""


# The version scanner is shared with export (`versions`); kept here by name
# for callers of `server.latest_version`.
latest_version = versions.latest_version


def clean_error(error: tf.errors.OpError) -> str:
  """The useful part of a TensorFlow runtime error message."""
  message = error.message
  match = re.search(r'assertion failed: \[(.*?)\]\s*(?:\n|$)', message, re.DOTALL)
  if match:
    return match.group(1).replace('\\"', '"')
  lines = []
  for line in message.splitlines():
    line = line.strip()
    if (not line or line.startswith(('Graph execution error', 'Detected at node',
                                     '<stack traces', '[[{{node')) or
        line.startswith('[Op:')):
      continue
    lines.append(re.sub(r'\s*\[\[\{\{node .*$|\s*\[Op:.*$', '', line))
  return ' '.join(lines) or message


@dataclasses.dataclass
class LoadedModel:
  """A SavedModel version ready to answer predictions.

  Attributes:
    name: model name in URLs.
    version: int.
    path: the version directory.
    signatures: `{signature: {input name: (tf.DType, tf.TensorShape)}}`.
    metadata: the JSON of `GET .../metadata`.
  """
  name: str
  version: int
  path: str
  signatures: Dict[str, Dict[str, Tuple[tf.DType, tf.TensorShape]]]
  metadata: dict
  _loaded: object = None

  def predict(self, signature: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Runs one signature; raises `tf.errors.OpError` if the model refuses the input."""
    fn = self._loaded.signatures[signature]
    outputs = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}


def _signature_metadata(path: str) -> dict:
  saved_model = loader_impl.parse_saved_model(path)
  for meta_graph in saved_model.meta_graphs:
    if sig.SERVE_TAG in meta_graph.meta_info_def.tags:
      return {name: json_format.MessageToDict(definition, preserving_proto_field_name=True)
              for name, definition in meta_graph.signature_def.items()}
  raise ValueError(f'{path}: no MetaGraph with tag "{sig.SERVE_TAG}".')


def _warmup_inputs(specs):
  """Valid inputs for our signatures (None for signatures we do not know)."""
  image = np.full([1, 32, 32, 3], 128, np.uint8)
  png = tf.io.encode_png(image[0]).numpy()
  example = tf.train.Example(features=tf.train.Features(feature={
      'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))}))
  known = {('images', tf.uint8): image,
           ('image_bytes', tf.string): np.array([png], object),
           ('tf_examples', tf.string): np.array([example.SerializeToString()], object)}
  if len(specs) != 1:
    return None
  (name, (dtype, _)), = specs.items()
  value = known.get((name, dtype))
  return None if value is None else {name: value}


def load_model(model_base_path: str, model_name: str, version: Optional[int] = None,
               warmup: bool = True) -> LoadedModel:
  """Loads `model_base_path/<version>` (default: the latest).

  Args:
    model_base_path: directory of numbered versions (or one SavedModel).
    model_name: the NAME of `/v1/models/NAME`.
    version: optional version to serve.
    warmup: run every signature of ours once on a small image, so the first
      request does not pay for graph optimization.

  Returns:
    `LoadedModel`.
  """
  if version is None:
    version, path = versions.latest_version(model_base_path)
  else:
    path = os.path.join(model_base_path, str(version))
    if not tf.io.gfile.exists(os.path.join(path, versions.SAVED_MODEL)):
      raise FileNotFoundError(f'--version={version}: {path}/saved_model.pb does not '
                              'exist.')
  start = time.monotonic()
  loaded = tf.saved_model.load(path, tags=[sig.SERVE_TAG])
  signatures = {}
  for name, fn in loaded.signatures.items():
    specs = fn.structured_input_signature[1]
    signatures[name] = {k: (s.dtype, s.shape) for k, s in specs.items()}
  metadata = {'model_spec': {'name': model_name, 'signature_name': '',
                             'version': str(version)},
              'metadata': {'signature_def': {'signature_def': _signature_metadata(path)}}}
  model = LoadedModel(model_name, int(version), path, signatures, metadata, loaded)
  logging.info('loaded %s version %d from %s in %.1f s; signatures %s', model_name,
               version, path, time.monotonic() - start, sorted(signatures))
  if warmup:
    for name, specs in signatures.items():
      inputs = _warmup_inputs(specs)
      if inputs is not None:
        model.predict(name, inputs)
    logging.info('warmed up in %.1f s', time.monotonic() - start)
  return model


class RestApi:
  """Routes requests to a `LoadedModel`; no sockets (tests call `handle`).

  Args:
    model: `LoadedModel`.
    max_concurrent_predictions: predictions running at once (others wait).
  """

  def __init__(self, model: LoadedModel, max_concurrent_predictions: int = 2):
    self.model = model
    self._slots = threading.BoundedSemaphore(max(1, max_concurrent_predictions))

  def _status(self):
    return {'model_version_status': [{
        'version': str(self.model.version), 'state': 'AVAILABLE',
        'status': {'error_code': 'OK', 'error_message': ''}}]}

  def _check_model(self, name, version, label):
    m = self.model
    if name != m.name:
      raise ModelNotFound(f'Servable not found for request: Latest({name}); this '
                          f'server serves {m.name!r}.')
    if label is not None:
      raise ModelNotFound(f'Unrecognized servable version label: {label} '
                          '(spinenet-serve has no version labels).')
    if version is not None and version != str(m.version):
      raise ModelNotFound(f'Servable not found for request: Specific({name}, '
                          f'{version}); the version served is {m.version}.')

  def handle(self, method: str, path: str, body: bytes = b'') -> Tuple[int, dict]:
    """Answers one request.

    Returns:
      `(HTTP status, JSON object)`.
    """
    match = _PATH.match(path.split('?')[0])
    if not match:
      return 404, {'error': f'Malformed request: {method} {path} (expected '
                            '/v1/models/NAME[/versions/N][:predict|/metadata]).'}
    action = match.group('action') or ''
    try:
      self._check_model(match.group('name'), match.group('version'), match.group('label'))
    except ModelNotFound as e:
      return 404, {'error': str(e)}
    if action in ('', '/metadata'):
      if method != 'GET':
        return 405, {'error': f'{method} {path}: use GET for status and metadata.'}
      return 200, self._status() if not action else self.model.metadata
    if action != ':predict':
      return 400, {'error': f'{action[1:]!r} is not supported by spinenet-serve; '
                            'use :predict.'}
    if method != 'POST':
      return 405, {'error': f'{method} {path}: use POST for :predict.'}
    return self._predict(body)

  def _predict(self, body: bytes) -> Tuple[int, dict]:
    try:
      request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      return 400, {'error': f'The request body is not valid JSON: {e}.'}
    try:
      name, inputs, rows = rest_json.parse_request(request, self.model.signatures)
    except rest_json.RequestError as e:
      return 400, {'error': str(e)}
    with self._slots:
      try:
        outputs = self.model.predict(name, inputs)
      except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as e:
        return 400, {'error': clean_error(e)}
      except tf.errors.ResourceExhaustedError as e:
        return 400, {'error': f'Out of memory for this request: {clean_error(e)}'}
      except tf.errors.OpError as e:
        logging.exception('predict failed')
        return 500, {'error': clean_error(e)}
    return 200, rest_json.format_response(outputs, rows)


class _Handler(http.server.BaseHTTPRequestHandler):
  """HTTP glue: size limit, JSON out, errors never escape."""

  protocol_version = 'HTTP/1.1'
  timeout = 60  # seconds a client may take to send its request
  api: RestApi = None
  max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES

  def _send(self, status, payload):
    data = json.dumps(payload).encode('utf-8')
    self.send_response(status)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(data)))
    if self.close_connection:
      self.send_header('Connection', 'close')
    self.end_headers()
    self.wfile.write(data)

  def _serve(self, method):
    start = time.monotonic()
    body = b''
    if method == 'POST':
      length = self.headers.get('Content-Length')
      if length is None or not length.isdigit():
        self.close_connection = True
        return self._send(411, {'error': 'POST needs a Content-Length header.'})
      if int(length) > self.max_request_bytes:
        self.close_connection = True  # the body is not read
        return self._send(413, {'error': f'The request body is {length} bytes; the '
                                         f'limit is {self.max_request_bytes} '
                                         '(spinenet-serve --max_request_bytes).'})
      body = self.rfile.read(int(length))
    try:
      status, payload = self.api.handle(method, self.path, body)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception('unexpected error handling %s %s', method, self.path)
      status, payload = 500, {'error': f'Internal error: {type(e).__name__}: {e}'}
    self._send(status, payload)
    logging.info('%s %s %d %.0f ms', method, self.path, status,
                 (time.monotonic() - start) * 1e3)

  def do_GET(self):  # pylint: disable=invalid-name
    self._serve('GET')

  def do_POST(self):  # pylint: disable=invalid-name
    self._serve('POST')

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    logging.debug(format, *args)


def make_server(api: RestApi, host: str = '127.0.0.1', port: int = 8501,
                max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
  """An HTTP server for `api` (not started); port 0 picks a free port.

  Start it with `server.serve_forever()` (e.g. in a thread); stop it with
  `server.shutdown()` then `server.server_close()`. The bound port is
  `server.server_address[1]`.
  """
  handler = type('Handler', (_Handler,), {'api': api,
                                          'max_request_bytes': int(max_request_bytes)})
  server = http.server.ThreadingHTTPServer((host, port), handler)
  server.daemon_threads = True
  return server


def serve(model_base_path: str, model_name: str, *, host: str = '127.0.0.1',
          port: int = 8501, version: Optional[int] = None,
          max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
          max_concurrent_predictions: int = 2, warmup: bool = True):
  """Loads the model and serves until interrupted (what `spinenet-serve` runs)."""
  model = load_model(model_base_path, model_name, version, warmup=warmup)
  server = make_server(RestApi(model, max_concurrent_predictions), host, port,
                       max_request_bytes)
  bound_host, bound_port = server.server_address[:2]
  print(f'spinenet-serve: {model_name} version {model.version} at '
        f'http://{bound_host}:{bound_port}/v1/models/{model_name} '
        f'(signatures: {", ".join(sorted(model.signatures))})', flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
