r"""Serves an exported model over TF Serving's REST API (for trying exports).

Usage:
  spinenet-serve --model_base_path=exports/shapes --model_name=shapes [--port=8501]

  curl http://127.0.0.1:8501/v1/models/shapes
  curl -X POST http://127.0.0.1:8501/v1/models/shapes:predict \
    -d '{"signature_name": "serve_bytes", "instances": [{"b64": "'$(base64 -w0 img.jpg)'"}]}'

Binds 127.0.0.1 unless --host says otherwise. In production run TF Serving
(the docker command is in docs/serving.md); the requests are the same.
"""
from absl import app
from absl import flags

from spinenet.serving import server

_MODEL_BASE_PATH = flags.DEFINE_string(
    'model_base_path', None, 'Directory of numbered SavedModel versions '
    '(spinenet-export --export_dir).', required=True)
_MODEL_NAME = flags.DEFINE_string('model_name', 'spinenet', 'NAME in /v1/models/NAME.')
_HOST = flags.DEFINE_string('host', '127.0.0.1',
                            'Address to bind; 0.0.0.0 exposes the server to the network.')
_PORT = flags.DEFINE_integer('port', 8501, 'Port (TF Serving REST uses 8501).',
                             lower_bound=0)
_VERSION = flags.DEFINE_integer('version', None, 'Version to serve (default: latest).')
_MAX_REQUEST_BYTES = flags.DEFINE_integer(
    'max_request_bytes', server.DEFAULT_MAX_REQUEST_BYTES,
    'Larger request bodies are refused with HTTP 413.', lower_bound=1)
_MAX_CONCURRENT = flags.DEFINE_integer(
    'max_concurrent_predictions', 2, 'Requests parsed and predicted at once; others '
    'wait for their turn (up to --queue_timeout_seconds).', lower_bound=1)
_QUEUE_TIMEOUT = flags.DEFINE_float(
    'queue_timeout_seconds', server.DEFAULT_QUEUE_TIMEOUT_SECONDS,
    'How long a request waits for its turn before it is answered 503.',
    lower_bound=0.0)
_LISTEN_BACKLOG = flags.DEFINE_integer(
    'listen_backlog', server.DEFAULT_LISTEN_BACKLOG,
    'Connections the kernel queues before the server accepts them (capped by '
    '/proc/sys/net/core/somaxconn); a burst larger than this may be reset.',
    lower_bound=1)
_MAX_BUFFERED = flags.DEFINE_integer(
    'max_buffered_request_bytes', None,
    'Request bodies held in memory at once (being received, parsed or predicted); '
    'default 4 x --max_request_bytes. A larger body still gets in alone.',
    lower_bound=1)
_WARMUP = flags.DEFINE_bool('warmup', True,
                            'Run every signature once before accepting requests.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    server.serve(_MODEL_BASE_PATH.value, _MODEL_NAME.value, host=_HOST.value,
                 port=_PORT.value, version=_VERSION.value,
                 max_request_bytes=_MAX_REQUEST_BYTES.value,
                 max_concurrent_predictions=_MAX_CONCURRENT.value,
                 warmup=_WARMUP.value, listen_backlog=_LISTEN_BACKLOG.value,
                 queue_timeout_seconds=_QUEUE_TIMEOUT.value,
                 max_buffered_request_bytes=_MAX_BUFFERED.value)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from None


def run():
  app.run(main)


if __name__ == '__main__':
  run()
