"""Everything gin can configure, and the gin-driven entry point of training.

The only module that imports gin. Library code takes plain arguments; this
module registers the builders and option classes under short names
(`build_retinanet`, `RetinaNetTask`, `DataOptions`, `LossOptions`,
`OptimizerOptions`, `TrainerOptions`, `DetectionConfig`, `experiment`;
each also as `spinenet.<name>`), parses gin files with clear errors, and
runs an experiment from them (`train_from_config`, what `spinenet-train`
and the demo call).

Gin files: `configs/models/*.gin` pick a model id, `configs/tasks/*.gin` bind
a task and list what must be set, `experiments/*.gin` include one of each
and hold a recipe's values.
"""
import inspect
import os
import re
from typing import Optional, Sequence

from absl import logging
import gin
import tensorflow as tf

from spinenet.modeling import registry
from spinenet.modeling import retinanet
from spinenet.modeling import spinenet as spinenet_lib
from spinenet.training import losses
from spinenet.training import optimization
from spinenet.training import retinanet_task
from spinenet.training import strategies
from spinenet.training import train_lib

_MODULE = 'spinenet'

# === Registrations ===
build_retinanet = gin.external_configurable(
    registry.build_retinanet, 'build_retinanet', module=_MODULE)
DetectionConfig = gin.external_configurable(
    retinanet.DetectionConfig, 'DetectionConfig', module=_MODULE)
RetinaNetTask = gin.external_configurable(
    retinanet_task.RetinaNetTask, 'RetinaNetTask', module=_MODULE)
DataOptions = gin.external_configurable(
    retinanet_task.DataOptions, 'DataOptions', module=_MODULE)
LossOptions = gin.external_configurable(
    losses.LossOptions, 'LossOptions', module=_MODULE)
OptimizerOptions = gin.external_configurable(
    optimization.OptimizerOptions, 'OptimizerOptions', module=_MODULE)
TrainerOptions = gin.external_configurable(
    train_lib.TrainerOptions, 'TrainerOptions', module=_MODULE)


@gin.configurable('experiment', module=_MODULE)
def experiment(task=gin.REQUIRED, optimizer_options=gin.REQUIRED,
               trainer_options=gin.REQUIRED):
  """What a gin config describes: `(task, optimizer_options, trainer_options)`."""
  return task, optimizer_options, trainer_options


# build_retinanet takes **backbone_overrides, so gin accepts any name there;
# these are the ones that exist.
_MODEL_ARGS = (
    set(inspect.signature(registry.build_retinanet).parameters) |
    set(inspect.signature(spinenet_lib.build_spinenet).parameters)
) - {'backbone_overrides', 'input_shape', 'name'}

# The repository root holds configs/ and experiments/, for `include`s.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ConfigError(ValueError):
  """A gin file, gin parameter or flag is wrong; the message says where."""


def _locate(name, gin_files, gin_params):
  """`'file:line: text'` of bindings mentioning `name`, for error messages."""
  found = []
  pattern = re.compile(r'\b' + re.escape(name) + r'\b')
  for path in gin_files:
    try:
      with tf.io.gfile.GFile(_resolve_file(path)) as f:
        for number, line in enumerate(f, 1):
          if pattern.search(line) and not line.lstrip().startswith('#'):
            found.append(f'{path}:{number}: {line.strip()}')
    except (OSError, tf.errors.OpError, ConfigError):
      continue
  found += [f'--gin_param: {p}' for p in gin_params if pattern.search(p)]
  return found


def _resolve_file(path):
  if tf.io.gfile.exists(path):
    return path
  candidate = os.path.join(REPO_ROOT, path)
  if tf.io.gfile.exists(candidate):
    return candidate
  raise ConfigError(f'--gin_file {path!r} does not exist (looked in the '
                    f'current directory and {REPO_ROOT}).')


def _check_model_bindings(gin_files, gin_params):
  unknown = sorted(set(gin.get_bindings('build_retinanet')) - _MODEL_ARGS)
  if unknown:
    where = []
    for name in unknown:
      where += _locate(f'build_retinanet.{name}', gin_files, gin_params)
    raise ConfigError(
        f'build_retinanet has no argument(s) {unknown}; expected some of '
        f'{sorted(_MODEL_ARGS)}.' + ''.join(f'\n  {w}' for w in where))


def parse_config(gin_files: Sequence[str] = (),
                 gin_params: Sequence[str] = ()):
  """Clears gin and parses `gin_files` then `gin_params` (later wins).

  Files are looked up as given, then under the repository root; `include`s
  resolve against the repository root too.

  Raises:
    ConfigError: naming the file (or `--gin_param`), line and binding of a
      syntax error, unknown name, unknown parameter or missing required
      value.
  """
  gin.clear_config()
  gin.add_config_file_search_path(REPO_ROOT)
  files = [_resolve_file(f) for f in gin_files]
  try:
    with gin.unlock_config():
      gin.parse_config_files_and_bindings(files, list(gin_params),
                                          finalize_config=False)
      gin.finalize()
  except (ValueError, SyntaxError, ImportError, IOError) as e:
    message = str(e)
    required = re.search(r'(\S+)/macro\.value set to `%gin\.REQUIRED`', message)
    if required:
      macro = required.group(1)
      message = (f'gin macro {macro} is required but not set; add '
                 f"--gin_param=\"{macro} = ...\" or bind it in an experiment "
                 'file (see the comment at the top of the task file).')
    elif isinstance(e, SyntaxError) and e.filename:
      message = f'{e.filename}, line {e.lineno}: gin syntax error: {e.msg}'
    raise ConfigError(f'Bad gin configuration: {message}') from None
  _check_model_bindings(gin_files, gin_params)


def write_config(model_dir: str, operative: bool = False):
  """Writes `config.gin` (everything parsed) or `operative_config.gin`."""
  tf.io.gfile.makedirs(model_dir)
  name = 'operative_config.gin' if operative else 'config.gin'
  text = gin.operative_config_str() if operative else gin.config_str()
  with tf.io.gfile.GFile(os.path.join(model_dir, name), 'w') as f:
    f.write(text)


def train_from_config(gin_files: Sequence[str], gin_params: Sequence[str] = (),
                      *, mode: str = 'train', model_dir: str,
                      strategy: str = 'auto', tpu: Optional[str] = None):
  """Parses gin and runs `train_lib.run_experiment` with the bound experiment.

  Args:
    gin_files: gin files, e.g. `['experiments/coco_spinenet49_tpu.gin']`.
    gin_params: extra bindings, e.g. `['TrainerOptions.train_steps = 100']`.
    mode: one of `train_lib.MODES`.
    model_dir: local path or `gs://`.
    strategy: one of `strategies.STRATEGIES`.
    tpu: TPU name or address (TPU strategy).

  Returns:
    The dict of `train_lib.run_experiment`.

  Raises:
    ConfigError: for a bad gin file, binding, mode or strategy.
  """
  if mode not in train_lib.MODES:
    raise ConfigError(f'--mode={mode!r} is not one of {train_lib.MODES}.')
  if strategy not in strategies.STRATEGIES:
    raise ConfigError(f'--strategy={strategy!r} is not one of '
                      f'{strategies.STRATEGIES}.')
  if not model_dir:
    raise ConfigError('--model_dir is required (a local path or gs://...).')
  parse_config(gin_files, gin_params)
  try:
    strategy_obj = strategies.get_strategy(strategy, tpu)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  chief = strategies.is_chief(strategy_obj)
  if chief:
    write_config(model_dir)

  def on_built(experiment):
    del experiment
    if chief:
      write_config(model_dir, operative=True)

  logging.info('running %s in %s with gin files %s', mode, model_dir,
               list(gin_files))
  task, optimizer_options, trainer_options = experiment()
  return train_lib.run_experiment(
      task, mode, model_dir, strategy_obj, optimizer_options, trainer_options,
      on_built=on_built)


def load_experiment(gin_files: Sequence[str], gin_params: Sequence[str] = ()):
  """Parses gin; returns the bound `(task, optimizer_options, trainer_options)`."""
  parse_config(gin_files, gin_params)
  return experiment()
