"""Reading gin files and bindings, with errors that say where the mistake is.

Gin files: `configs/models/*.gin` pick a model id, `configs/tasks/*.gin` bind
a task and list what must be set, `experiments/*.gin` include one of each
and hold a recipe's values. Files are looked up as given, then under the
repository root, which is also where `include`s resolve.
"""
import os
import re
from typing import List, Sequence

import gin
import tensorflow as tf

from spinenet.config import registrations

# The repository root holds configs/ and experiments/, for `include`s.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_REQUIRED_MACRO = re.compile(r'(\S+)/macro\.value set to `%gin\.REQUIRED`')


class ConfigError(ValueError):
  """A gin file, gin parameter or flag is wrong; the message says where."""


def resolve_file(path: str) -> str:
  """`path` if it exists, else `REPO_ROOT/path`.

  Raises:
    ConfigError: neither exists (naming both places looked in).
  """
  if tf.io.gfile.exists(path):
    return path
  candidate = os.path.join(REPO_ROOT, path)
  if tf.io.gfile.exists(candidate):
    return candidate
  raise ConfigError(f'--gin_file {path!r} does not exist (looked in the '
                    f'current directory and {REPO_ROOT}).')


def include_path(path: str) -> str:
  """How another gin file includes `path`: repository-relative, else absolute."""
  full = os.path.abspath(resolve_file(path))
  relative = os.path.relpath(full, REPO_ROOT)
  return full if relative.startswith('..') else relative


def locate(name: str, gin_files: Sequence[str], gin_params: Sequence[str]) -> List[str]:
  """`'file:line: text'` (or `'--gin_param: text'`) of bindings naming `name`.

  Comment lines and unreadable files are skipped; for error messages.
  """
  found = []
  pattern = re.compile(r'\b' + re.escape(name) + r'\b')
  for path in gin_files:
    try:
      with tf.io.gfile.GFile(resolve_file(path)) as f:
        for number, line in enumerate(f, 1):
          if pattern.search(line) and not line.lstrip().startswith('#'):
            found.append(f'{path}:{number}: {line.strip()}')
    except (OSError, tf.errors.OpError, ConfigError):
      continue
  found += [f'--gin_param: {p}' for p in gin_params if pattern.search(p)]
  return found


def _error_message(error: Exception) -> str:
  """The message of a gin parsing error, rephrased where gin's is cryptic."""
  message = str(error)
  required = _REQUIRED_MACRO.search(message)
  if required:
    macro = required.group(1)
    return (f'gin macro {macro} is required but not set; add '
            f"--gin_param=\"{macro} = ...\" or bind it in an experiment "
            'file (see the comment at the top of the task file).')
  if isinstance(error, SyntaxError) and error.filename:
    return f'{error.filename}, line {error.lineno}: gin syntax error: {error.msg}'
  return message


def _check_model_bindings(gin_files, gin_params):
  """Model builders accept any keyword (backbone overrides); refuse typos."""
  for builder, known in (('build_retinanet', registrations.RETINANET_ARGS),
                         ('build_maskrcnn', registrations.MASKRCNN_ARGS)):
    unknown = sorted(set(gin.get_bindings(builder)) - known)
    if unknown:
      where = []
      for name in unknown:
        where += locate(f'{builder}.{name}', gin_files, gin_params)
      raise ConfigError(
          f'{builder} has no argument(s) {unknown}; expected some of '
          f'{sorted(known)}.' + ''.join(f'\n  {w}' for w in where))


def parse_config(gin_files: Sequence[str] = (), gin_params: Sequence[str] = (),
                 *, finalize: bool = True) -> None:
  """Clears gin and parses `gin_files` then `gin_params` (later wins).

  Args:
    gin_files: gin file paths (see `resolve_file`).
    gin_params: bindings such as `"TrainerOptions.train_steps = 10"`.
    finalize: lock the config and check that every `%gin.REQUIRED` macro is
      set. False leaves required values open, for reading a part of a
      config before the rest is known (a search reads its settings before
      it generates the data the patterns point to).

  Raises:
    ConfigError: naming the file (or `--gin_param`), line and binding of a
      syntax error, unknown name, unknown parameter or missing required
      value.
  """
  gin.clear_config()
  gin.add_config_file_search_path(REPO_ROOT)
  files = [resolve_file(f) for f in gin_files]
  try:
    with gin.unlock_config():
      gin.parse_config_files_and_bindings(files, list(gin_params),
                                          finalize_config=False)
      if finalize:
        gin.finalize()
  except (ValueError, SyntaxError, ImportError, IOError) as e:
    raise ConfigError(f'Bad gin configuration: {_error_message(e)}') from None
  _check_model_bindings(gin_files, gin_params)


def write_config(model_dir: str, operative: bool = False) -> None:
  """Writes `model_dir/config.gin` (everything parsed) or `operative_config.gin`."""
  tf.io.gfile.makedirs(model_dir)
  name = 'operative_config.gin' if operative else 'config.gin'
  text = gin.operative_config_str() if operative else gin.config_str()
  with tf.io.gfile.GFile(os.path.join(model_dir, name), 'w') as f:
    f.write(text)
