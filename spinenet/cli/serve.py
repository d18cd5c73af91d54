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
    'max_concurrent_predictions', 2, 'Predictions running at once.', lower_bound=1)
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
                 warmup=_WARMUP.value)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from None


def run():
  app.run(main)


if __name__ == '__main__':
  run()
