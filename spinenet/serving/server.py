"""`spinenet-serve`: a small HTTP server with TF Serving's REST contract.

For trying an export where `tensorflow_model_server` is not installed; in
production run TF Serving itself (docs/serving.md). Clients cannot tell the
difference for what is implemented:

  GET  /v1/models/NAME[/versions/N]            model status
  GET  /v1/models/NAME[/versions/N]/metadata   signature defs
  POST /v1/models/NAME[/versions/N]:predict    row ("instances") or columnar
                                               ("inputs") requests, b64 values

Errors are `{"error": "..."}` (never HTML): 400 for a malformed request or
input the model refuses (empty or corrupt image bytes, wrong dtype or rank, an
image over the export's pixel limit, JSON nested too deeply), 404 for an
unknown model, version or path, 405 (with `Allow`) for a method a path does
not take, 411 for a POST without Content-Length, 413 for a body over
`max_request_bytes`, 503 (with `Retry-After`) when a request waited
`queue_timeout_seconds` for its turn. A bad request or a client that goes
away never stops the server.

Limits: the listening socket queues `listen_backlog` connections (a burst of
clients is not reset by the kernel); request bodies are read only while the
bodies being held add up to at most `max_buffered_request_bytes`; parsing and
prediction run at most `max_concurrent_predictions` at a time, so the memory
of large requests is bounded too; others wait their turn.

It loads the latest version under `--model_base_path` (or the one given),
binds 127.0.0.1 unless told otherwise and warms every signature up before
accepting requests.
"""
import dataclasses
import http.server
import json
import os
import re
import socket
import sys
import threading
import time
from typing import Dict, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from google.protobuf import json_format
from google.protobuf import message as message_lib
from spinenet.serving import rest_json
from spinenet.serving import signatures as sig
from spinenet.serving import versions

from tensorflow.python.saved_model import loader_impl  # pylint: disable=g-direct-tensorflow-import

DEFAULT_MAX_REQUEST_BYTES = 64 << 20
DEFAULT_LISTEN_BACKLOG = 256
DEFAULT_QUEUE_TIMEOUT_SECONDS = 60.0
CLIENT_TIMEOUT_SECONDS = 60  # a client may take this long per read of its request
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 16 << 20
_DECODE_FAILURES = re.compile(
    r'jpeg|png|gif|bmp|decode|image (?:file )?format|Could not parse example|'
    r'Invalid argument|corrupt|not text', re.IGNORECASE)
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
  message = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', message)
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


class ByteBudget:
  """Bounds the bytes of request bodies held at once.

  A request over the whole budget still gets in when nothing else is held, so
  every body up to `max_request_bytes` is served.

  Args:
    limit: bytes.
  """

  def __init__(self, limit: int):
    self.limit = int(limit)
    self._used = 0
    self._condition = threading.Condition()

  def acquire(self, size: int, timeout: Optional[float]) -> bool:
    """Waits until `size` bytes fit; False on timeout."""
    with self._condition:
      if not self._condition.wait_for(
          lambda: not self._used or self._used + size <= self.limit, timeout):
        return False
      self._used += size
      return True

  def release(self, size: int):
    with self._condition:
      self._used -= size
      self._condition.notify_all()


class RestApi:
  """Routes requests to a `LoadedModel`; no sockets (tests call `handle`).

  Args:
    model: `LoadedModel`.
    max_concurrent_predictions: requests parsed and predicted at once (others
      wait for a slot).
    queue_timeout_seconds: how long a request waits for a slot before it is
      answered 503.
  """

  def __init__(self, model: LoadedModel, max_concurrent_predictions: int = 2,
               queue_timeout_seconds: float = DEFAULT_QUEUE_TIMEOUT_SECONDS):
    self.model = model
    self.max_concurrent_predictions = max(1, int(max_concurrent_predictions))
    self.queue_timeout_seconds = float(queue_timeout_seconds)
    self._slots = threading.BoundedSemaphore(self.max_concurrent_predictions)

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

  def allowed_methods(self, path: str) -> Optional[str]:
    """The `Allow` header for `path`: 'GET', 'POST' or None (not a path of ours)."""
    match = _PATH.match(path.split('?')[0])
    if not match:
      return None
    action = match.group('action') or ''
    return 'GET' if action in ('', '/metadata') else 'POST'

  def busy_error(self, waited: float) -> dict:
    return {'error': f'The server is busy: {self.max_concurrent_predictions} '
                     f'predictions are running and this request waited {waited:.0f} s '
                     'for its turn (spinenet-serve --max_concurrent_predictions, '
                     '--queue_timeout_seconds). Retry later.'}

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
    start = time.monotonic()
    if not self._slots.acquire(timeout=self.queue_timeout_seconds):
      return 503, self.busy_error(time.monotonic() - start)
    try:
      try:
        request = rest_json.loads(body)
        name, inputs, rows = rest_json.parse_request(request, self.model.signatures)
      except rest_json.RequestError as e:
        return 400, {'error': str(e)}
      del request
      try:
        outputs = self.model.predict(name, inputs)
      except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as e:
        return 400, {'error': explain_input_error(clean_error(e),
                                                  self.model.signatures[name], inputs)}
      except UnicodeDecodeError:  # TensorFlow quoting binary input in its message
        return 400, {'error': explain_input_error(
            'The model refused the input (its error message quotes bytes that are '
            'not text).', self.model.signatures[name], inputs)}
      except tf.errors.ResourceExhaustedError as e:
        return 400, {'error': f'Out of memory for this request: {clean_error(e)}'}
      except tf.errors.OpError as e:
        logging.exception('predict failed')
        return 500, {'error': clean_error(e)}
    finally:
      self._slots.release()
    return 200, rest_json.format_response(outputs, rows)


def _image_format(data: bytes) -> str:
  if data[:3] == b'\xff\xd8\xff':
    return 'JPEG'
  if data[:8] == b'\x89PNG\r\n\x1a\n':
    return 'PNG'
  if data[:4] == b'GIF8':
    return 'GIF'
  if data[:2] == b'BM':
    return 'BMP'
  return 'image'


def _first_undecodable(name: str, values: np.ndarray) -> Optional[str]:
  """The message for the first element of a string input that does not decode."""
  for i, value in enumerate(values.reshape([-1])):
    where = f'{name}[{i}]'
    data = value
    if name == 'tf_examples':
      try:
        example = tf.train.Example.FromString(value)
      except message_lib.DecodeError as e:
        return (f'{where}: not a serialized tf.train.Example ({len(value)} bytes '
                f'starting with {bytes(value[:16])!r}): {e}.')
      values = example.features.feature['image/encoded'].bytes_list.value
      if not values:
        continue
      data = values[0]
      where += ' image/encoded'
    try:
      tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as e:
      if _image_format(data) == 'image':
        return (f'{where}: not an image: expected the bytes of a JPEG, PNG, GIF or BMP '
                f'file, got {len(data)} bytes starting with {bytes(data[:8])!r}.')
      return (f'{where}: could not decode the {_image_format(data)} (truncated or '
              f'corrupt; {len(data)} bytes): {clean_error(e)}')
  return None


def explain_input_error(message: str, specs, inputs) -> str:
  """The message for an input the model refused, naming the element if it can.

  The exported graph's own checks (empty input, unknown format, too many
  pixels) already name the element; a decoder's failure (e.g. a truncated
  JPEG: `jpeg::Uncompress failed`) or a malformed `tf.Example` does not, so
  each encoded element is tried on its own to find the first bad one.

  Args:
    message: the (cleaned) error message of the model.
    specs: the signature's `{input name: (tf.DType, tf.TensorShape)}`.
    inputs: `{input name: np.ndarray}` as sent.

  Returns:
    A message naming the first bad element, or `message`.
  """
  strings = [n for n, (dtype, _) in specs.items() if dtype == tf.string]
  if len(strings) != 1 or ': ' in message[:60] and '[' in message.split(': ')[0]:
    return message
  if not _DECODE_FAILURES.search(message):
    return message
  try:
    found = _first_undecodable(strings[0], np.asarray(inputs[strings[0]], object))
  except Exception:  # pylint: disable=broad-except
    logging.exception('could not find the undecodable input')
    found = None
  return found or message


class _Handler(http.server.BaseHTTPRequestHandler):
  """HTTP glue: size and memory limits, JSON out, errors never escape."""

  protocol_version = 'HTTP/1.1'
  timeout = CLIENT_TIMEOUT_SECONDS
  api: RestApi = None
  max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
  budget: ByteBudget = None

  def _send(self, status, payload, headers=()):
    data = json.dumps(payload).encode('utf-8')
    try:
      self.send_response(status)
      self.send_header('Content-Type', 'application/json')
      self.send_header('Content-Length', str(len(data)))
      for key, value in headers:
        self.send_header(key, value)
      if self.close_connection:
        self.send_header('Connection', 'close')
      self.end_headers()
      if self.command != 'HEAD':
        self.wfile.write(data)
      self.wfile.flush()
    except (ConnectionError, TimeoutError) as e:
      self.close_connection = True
      logging.info('%s %s: the client went away before the answer (%d): %s',
                   self.command, getattr(self, 'path', ''), status, type(e).__name__)
      return False
    return True

  def send_error(self, code, message=None, explain=None):
    """What http.server sends for a request it cannot parse, as JSON."""
    short, long = self.responses.get(code, ('Error', ''))
    text = ' '.join(p for p in (message or short, explain or long) if p)
    self.close_connection = True
    self.log_error('code %d, message %s', code, message)
    if not getattr(self, 'command', None):
      self.command = ''
    if getattr(self, 'request_version', 'HTTP/0.9') == 'HTTP/0.9':
      self.request_version = 'HTTP/1.0'  # answer with a status line and headers
    self._send(code, {'error': text})

  def finish(self):
    """Closes gently: the client can read the answer even if it is still sending.

    Closing a socket with unread input resets the connection, which can drop
    the answer (e.g. a 413 or 431) before the client reads it; so after the
    answer, up to `_LINGER_BYTES` more input is read and dropped for at most
    `_LINGER_SECONDS` (until the client closes).
    """
    try:
      super().finish()
      if self.close_connection:
        self.connection.shutdown(socket.SHUT_WR)
        self.connection.settimeout(_LINGER_SECONDS)
        deadline, dropped = time.monotonic() + _LINGER_SECONDS, 0
        while dropped < _LINGER_BYTES and time.monotonic() < deadline:
          chunk = self.connection.recv(1 << 16)
          if not chunk:
            break
          dropped += len(chunk)
    except OSError:
      pass

  def _read_body(self, length):
    """The body (None if the client went away first)."""
    body = self.rfile.read(length)
    if len(body) < length:
      self.close_connection = True
      logging.info('%s %s: the client went away while sending the body (%d of %d '
                   'bytes)', self.command, self.path, len(body), length)
      return None
    return body

  def _serve(self, method):
    start = time.monotonic()
    if method not in ('GET', 'POST'):
      return self._wrong_method(method)
    body, held = b'', 0
    if method == 'POST':
      length = self.headers.get('Content-Length')
      if length is None or not length.isdigit():
        self.close_connection = True
        return self._send(411, {'error': 'POST needs a Content-Length header.'})
      length = int(length)
      if length > self.max_request_bytes:
        self.close_connection = True  # the body is not read
        return self._send(413, {'error': f'The request body is {length} bytes; the '
                                         f'limit is {self.max_request_bytes} '
                                         '(spinenet-serve --max_request_bytes).'})
      if not self.budget.acquire(length, self.api.queue_timeout_seconds):
        self.close_connection = True
        return self._send(503, self.api.busy_error(time.monotonic() - start),
                          [('Retry-After', '1')])
      held = length
    elif self._has_body():
      self.close_connection = True  # a body we do not read
    try:
      if held:
        body = self._read_body(held)
        if body is None:
          return
      try:
        status, payload = self.api.handle(method, self.path, body)
      except Exception as e:  # pylint: disable=broad-except
        logging.exception('unexpected error handling %s %s', method, self.path)
        status, payload = 500, {'error': f'Internal error: {type(e).__name__}: {e}'}
      del body
    finally:
      if held:
        self.budget.release(held)
    headers = [('Retry-After', '1')] if status == 503 else []
    if status == 405:
      headers.append(('Allow', self.api.allowed_methods(self.path) or 'GET'))
    if self._send(status, payload, headers):
      logging.info('%s %s %d %.0f ms', method, self.path, status,
                   (time.monotonic() - start) * 1e3)

  def _has_body(self):
    return (self.headers.get('Content-Length', '0') != '0' or
            'Transfer-Encoding' in self.headers)

  def _wrong_method(self, method):
    if self._has_body():
      self.close_connection = True  # a body we do not read
    allowed = self.api.allowed_methods(self.path)
    if allowed is None:
      status, payload = self.api.handle(method, self.path)  # the 404 message
      return self._send(status, payload)
    return self._send(405, {'error': f'{method} is not allowed on {self.path}; use '
                                     f'{allowed}.'}, [('Allow', allowed)])

  def do_GET(self):  # pylint: disable=invalid-name
    self._serve('GET')

  def do_POST(self):  # pylint: disable=invalid-name
    self._serve('POST')

  def do_PUT(self):  # pylint: disable=invalid-name
    self._serve('PUT')

  def do_DELETE(self):  # pylint: disable=invalid-name
    self._serve('DELETE')

  def do_PATCH(self):  # pylint: disable=invalid-name
    self._serve('PATCH')

  def do_OPTIONS(self):  # pylint: disable=invalid-name
    self._serve('OPTIONS')

  def do_HEAD(self):  # pylint: disable=invalid-name
    self._serve('HEAD')

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    logging.debug(format, *args)


class _Server(http.server.ThreadingHTTPServer):
  """A thread per connection, a deep listen queue, one log line per lost client."""

  daemon_threads = True

  def __init__(self, address, handler, listen_backlog):
    self.request_queue_size = int(listen_backlog)
    super().__init__(address, handler)

  def handle_error(self, request, client_address):
    error = sys.exc_info()[1]
    if isinstance(error, (ConnectionError, TimeoutError)):
      logging.info('client %s went away: %s', client_address[0], type(error).__name__)
      return
    logging.exception('unexpected error serving %s', client_address[0])


def make_server(api: RestApi, host: str = '127.0.0.1', port: int = 8501,
                max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                listen_backlog: int = DEFAULT_LISTEN_BACKLOG,
                max_buffered_request_bytes: Optional[int] = None):
  """An HTTP server for `api` (not started); port 0 picks a free port.

  Args:
    api: `RestApi`.
    host, port: where to listen.
    max_request_bytes: larger bodies are answered 413 unread.
    listen_backlog: connections the kernel queues before they are accepted.
    max_buffered_request_bytes: request bodies held at once (received, being
      parsed or predicted); default 4 x `max_request_bytes`.

  Start it with `server.serve_forever()` (e.g. in a thread); stop it with
  `server.shutdown()` then `server.server_close()`. The bound port is
  `server.server_address[1]`.
  """
  if max_buffered_request_bytes is None:
    max_buffered_request_bytes = 4 * int(max_request_bytes)
  handler = type('Handler', (_Handler,), {
      'api': api, 'max_request_bytes': int(max_request_bytes),
      'budget': ByteBudget(max_buffered_request_bytes)})
  return _Server((host, port), handler, listen_backlog)


def serve(model_base_path: str, model_name: str, *, host: str = '127.0.0.1',
          port: int = 8501, version: Optional[int] = None,
          max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
          max_concurrent_predictions: int = 2, warmup: bool = True,
          listen_backlog: int = DEFAULT_LISTEN_BACKLOG,
          queue_timeout_seconds: float = DEFAULT_QUEUE_TIMEOUT_SECONDS,
          max_buffered_request_bytes: Optional[int] = None):
  """Loads the model and serves until interrupted (what `spinenet-serve` runs)."""
  model = load_model(model_base_path, model_name, version, warmup=warmup)
  api = RestApi(model, max_concurrent_predictions, queue_timeout_seconds)
  server = make_server(api, host, port, max_request_bytes, listen_backlog,
                       max_buffered_request_bytes)
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
