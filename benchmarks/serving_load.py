r"""`spinenet-serve` under load: a burst of clients, then four large bodies at once.

Exports a small RetinaNet (SpineNet-49S at 128 px, quarter widths), starts
`spinenet-serve` on it in a child process (127.0.0.1, a free port) and runs
two phases against it:

* load: `--clients` threads (default 64) released together, each opening a
  new connection per request, send `--requests` (2000) `serve_bytes`
  predictions of a small PNG between them, or as many as fit in
  `--time_cap_seconds`. A connection the kernel or the server resets counts
  in `resets`; any other failure, or a status other than 200, in `errors`
  (5xx also in `http_5xx`).
* memory: `--memory_clients` (4) clients send at once a `--body_mb` (50) MB
  JSON body of uint8 pixels as nested lists (the `serving_default`
  signature, the largest blow-up of JSON parsing). The server's peak RSS in
  this phase (VmHWM after resetting it, or the highest sampled VmRSS where
  the kernel does not allow the reset) is compared with the goal
  2 x idle RSS + memory_clients x body size.

The last line printed is one JSON object: `requests`, `ok`, `errors`,
`resets`, `http_5xx`, `p50_ms`, `p99_ms`, `seconds`, `clients`,
`peak_rss_mb`, `idle_rss_mb`, `body_mb`, `memory_goal_mb`, `memory_ok`,
`memory_statuses` and `env` (the machine, `_machine.env_summary()`).

Usage (from the repository root):
  .venv/bin/python -m benchmarks.serving_load [--clients=64] [--requests=2000]
"""
import base64
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import List, Optional, Sequence

if __package__ in (None, ''):  # Run as a script: make `benchmarks` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import _machine  # noqa: E402

_CLIENTS = flags.DEFINE_integer('clients', 64, 'Concurrent clients in the load phase.',
                                lower_bound=1)
_REQUESTS = flags.DEFINE_integer('requests', 2000, 'Predictions in the load phase.',
                                 lower_bound=1)
_TIME_CAP = flags.DEFINE_float('time_cap_seconds', 300.0,
                               'No new request of the load phase starts after this.')
_BODY_MB = flags.DEFINE_float('body_mb', 50.0, 'Size of each body of the memory phase '
                              '(MB, 10^6 bytes); 0 skips the phase.', lower_bound=0.0)
_MEMORY_CLIENTS = flags.DEFINE_integer('memory_clients', 4,
                                       'Large bodies sent at once.', lower_bound=1)
_MAX_CONCURRENT = flags.DEFINE_integer('max_concurrent_predictions', 2,
                                       'spinenet-serve --max_concurrent_predictions.')
_EXPORT_DIR = flags.DEFINE_string('export_dir', None, 'Reuse this export (a model base '
                                  'path); default: export a small model to a temp dir.')

MODEL_NAME = 'load'
RESETS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
          ConnectionRefusedError, http.client.RemoteDisconnected)


def percentile(values: Sequence[float], q: float) -> Optional[float]:
  """The `q`-th percentile (0..100, nearest rank) of `values`; None if empty."""
  if not len(values):
    return None
  ordered = sorted(values)
  rank = max(1, int(np.ceil(q / 100.0 * len(ordered))))
  return float(ordered[rank - 1])


def outcome(status: Optional[int], error: Optional[BaseException]) -> str:
  """'ok', 'reset', 'http_5xx' or 'error' for one request."""
  if error is not None:
    return 'reset' if isinstance(error, RESETS) else 'error'
  if status == 200:
    return 'ok'
  return 'http_5xx' if status is not None and status >= 500 else 'error'


def pixels_body(target_bytes: int, width: int = 2000, seed: int = 0):
  """A `serving_default` request of about `target_bytes`: one uint8 image.

  Every row is the same random row (so the body is built quickly); the
  server parses it like any other.

  Returns:
    `(body bytes, (height, width))`.
  """
  rng = np.random.default_rng(seed)
  row = json.dumps(rng.integers(0, 256, (width, 3)).tolist()).encode()
  head, tail = b'{"instances": [[', b']]}'
  height = max(1, (target_bytes - len(head) - len(tail)) // (len(row) + 1))
  return head + b','.join([row] * height) + tail, (height, width)


def _rss_kb(pid: int, field: str) -> Optional[int]:
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1])
  except OSError:
    return None
  return None


def _reset_peak(pid: int) -> bool:
  """Resets the process's VmHWM to its current RSS (Linux >= 4.0)."""
  try:
    with open(f'/proc/{pid}/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


class _Sampler:
  """Samples a process's VmRSS every 20 ms in a thread; `peak_kb` is the highest."""

  def __init__(self, pid):
    self.pid, self.peak_kb, self._stop = pid, 0, threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self):
    while not self._stop.wait(0.02):
      self.peak_kb = max(self.peak_kb, _rss_kb(self.pid, 'VmRSS') or 0)

  def stop(self):
    self._stop.set()
    self._thread.join()
    return self.peak_kb


def _export(directory: str):
  """Exports the small RetinaNet to `directory` (a model base path)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  from spinenet.modeling import registry  # pylint: disable=g-import-not-at-top
  from spinenet.serving import export_lib  # pylint: disable=g-import-not-at-top
  del tf

  def build():
    keras.utils.set_random_seed(0)
    return registry.build_retinanet('49S', num_classes=5, input_size=128,
                                    filter_size_scale=0.25, endpoints_num_filters=16,
                                    head_filters=16, head_convs=1)

  export_lib.export_saved_model(build, directory,
                                label_map={i: f'class{i}' for i in range(1, 5)})


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def _start_server(base: str, port: int):
  """Starts spinenet-serve; returns the process once it accepts requests."""
  command = [sys.executable, '-m', 'spinenet.cli.serve', f'--model_base_path={base}',
             f'--model_name={MODEL_NAME}', '--host=127.0.0.1', f'--port={port}',
             f'--max_concurrent_predictions={_MAX_CONCURRENT.value}',
             '--stderrthreshold=error']
  process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
  deadline = time.monotonic() + 600
  for line in process.stdout:  # blocks until the ready line (or exit)
    if line.startswith('spinenet-serve:'):
      threading.Thread(target=process.stdout.read, daemon=True).start()  # drain
      return process
    if time.monotonic() > deadline:
      break
  process.kill()
  raise RuntimeError(f'spinenet-serve did not start: {" ".join(command)}')


def _post(port: int, path: str, body: bytes, timeout: float = 600):
  """`(status, error, seconds)` of one POST on a new connection."""
  start = time.monotonic()
  connection = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
  try:
    connection.request('POST', path, body=body,
                       headers={'Content-Type': 'application/json'})
    response = connection.getresponse()
    response.read()
    return response.status, None, time.monotonic() - start
  except Exception as e:  # pylint: disable=broad-except
    return None, e, time.monotonic() - start
  finally:
    connection.close()


def _png(height=96, width=144) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  y, x = np.mgrid[0:height, 0:width]
  pixels = np.stack([127 + 100 * np.sin(x / 7.0 + c) * np.cos(y / 9.0 - c)
                     for c in range(3)], -1).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='PNG')
  return buffer.getvalue()


def load_phase(port: int, clients: int, requests: int, time_cap: float) -> dict:
  """Runs the burst; returns counts and latency percentiles."""
  path = f'/v1/models/{MODEL_NAME}:predict'
  body = json.dumps({'signature_name': 'serve_bytes', 'instances': [
      {'b64': base64.b64encode(_png()).decode('ascii')}]}).encode()
  lock, counts, latencies, examples = threading.Lock(), {}, [], {}
  remaining = [requests]
  barrier = threading.Barrier(clients)
  start = time.monotonic()

  def client():
    barrier.wait()
    while True:
      with lock:
        if remaining[0] <= 0 or time.monotonic() - start > time_cap:
          return
        remaining[0] -= 1
      status, error, seconds = _post(port, path, body)
      kind = outcome(status, error)
      with lock:
        counts[kind] = counts.get(kind, 0) + 1
        if kind == 'ok':
          latencies.append(seconds * 1e3)
        else:
          examples.setdefault(kind, repr(error) if error else f'HTTP {status}')

  threads = [threading.Thread(target=client) for _ in range(clients)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  seconds = time.monotonic() - start
  done = sum(counts.values())
  return {'requests': done, 'ok': counts.get('ok', 0),
          'errors': done - counts.get('ok', 0) - counts.get('reset', 0),
          'resets': counts.get('reset', 0), 'http_5xx': counts.get('http_5xx', 0),
          'p50_ms': _round(percentile(latencies, 50)),
          'p99_ms': _round(percentile(latencies, 99)),
          'seconds': round(seconds, 1), 'requests_per_second': round(done / seconds, 1),
          'clients': clients, 'failure_examples': examples}


def memory_phase(process, port: int, body_mb: float, clients: int,
                 idle_kb: int) -> dict:
  """Sends `clients` bodies of `body_mb` MB at once; returns RSS and statuses.

  The goal is computed from `idle_kb`, the server's RSS before any request.
  """
  body, shape = pixels_body(int(body_mb * 1e6))
  reset = _reset_peak(process.pid)
  sampler = _Sampler(process.pid)
  results: List = [None] * clients

  def client(i):
    results[i] = _post(port, f'/v1/models/{MODEL_NAME}:predict', body)

  threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  sampled_kb = sampler.stop()
  hwm_kb = _rss_kb(process.pid, 'VmHWM') if reset else None
  peak_kb = max(sampled_kb, hwm_kb or 0)
  body_size_mb = len(body) / 2**20
  idle_mb = idle_kb / 1024
  goal_mb = 2 * idle_mb + clients * body_size_mb
  statuses = [r[0] if r[1] is None else type(r[1]).__name__ for r in results]
  return {'peak_rss_mb': _round(peak_kb / 1024), 'idle_rss_mb': _round(idle_mb),
          'body_mb': _round(body_size_mb), 'image_shape': list(shape),
          'memory_goal_mb': _round(goal_mb),
          'memory_ok': peak_kb / 1024 <= goal_mb and statuses == [200] * clients,
          'memory_statuses': statuses, 'peak_from': 'VmHWM' if reset else 'VmRSS samples',
          'memory_seconds': _round(max(r[2] for r in results))}


def _round(x):
  return None if x is None else round(float(x), 1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  base = _EXPORT_DIR.value
  temp = None
  if base is None:
    temp = tempfile.mkdtemp(prefix='serving_load_')
    base = os.path.join(temp, 'export')
    logging.info('exporting a small model to %s', base)
    _export(base)
  port = _free_port()
  process = _start_server(base, port)
  try:
    time.sleep(1.0)  # let the warmed-up server settle before measuring idle RSS
    idle_kb = _rss_kb(process.pid, 'VmRSS')
    result = load_phase(port, _CLIENTS.value, _REQUESTS.value, _TIME_CAP.value)
    print('load:', json.dumps(result), flush=True)
    if _BODY_MB.value > 0:
      memory = memory_phase(process, port, _BODY_MB.value, _MEMORY_CLIENTS.value,
                            idle_kb)
      print('memory:', json.dumps(memory), flush=True)
      result.update(memory)
    result['idle_rss_mb'] = _round(idle_kb / 1024)
    if process.poll() is not None:
      result['server_exit_code'] = process.returncode
  finally:
    process.terminate()
    try:
      process.wait(timeout=30)
    except subprocess.TimeoutExpired:
      process.kill()
    if temp:
      shutil.rmtree(temp, ignore_errors=True)
  result['env'] = _machine.env_summary()
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main)
