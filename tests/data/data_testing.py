"""Helpers shared by the tests under tests/data."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def captured_stderr(into):
  """Collects what is written to file descriptor 2 (tf.print's stderr)."""
  with tempfile.TemporaryFile() as f:
    saved = os.dup(2)
    os.dup2(f.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      f.seek(0)
      into.append(f.read().decode(errors='replace'))
