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


# === Classification (ClassificationTask; configs/tasks/classification_*.gin) ===
# Appended block: the classifier builder, its task and data options.
from spinenet.training import classification_task  # pylint: disable=g-import-not-at-top,wrong-import-position

build_classifier = gin.external_configurable(
    registry.build_classifier, 'build_classifier', module=_MODULE)
ClassificationTask = gin.external_configurable(
    classification_task.ClassificationTask, 'ClassificationTask', module=_MODULE)
ClassificationDataOptions = gin.external_configurable(
    classification_task.ClassificationDataOptions, 'ClassificationDataOptions',
    module=_MODULE)
# === End of classification ===


# === Architecture search (spinenet-search; spinenet/search, configs/search) ===
# Appended block: search options, the built-in proxy dataset, the proxy trial
# run in each worker process, and the gin-driven entry point of the search.
import functools  # pylint: disable=g-import-not-at-top,wrong-import-position,g-bad-import-order

from spinenet.modeling import plot as _plot  # pylint: disable=g-import-not-at-top,wrong-import-position
from spinenet.search import driver as _search_driver  # pylint: disable=g-import-not-at-top,wrong-import-position
from spinenet.search import proxy as _search_proxy  # pylint: disable=g-import-not-at-top,wrong-import-position
from spinenet.search import report as _search_report  # pylint: disable=g-import-not-at-top,wrong-import-position
from spinenet.search import space as _search_space  # pylint: disable=g-import-not-at-top,wrong-import-position

SearchOptions = gin.external_configurable(
    _search_driver.SearchOptions, 'SearchOptions', module=_MODULE)
BuiltinDataset = gin.external_configurable(
    _search_proxy.BuiltinDataset, 'BuiltinDataset', module=_MODULE)


@gin.configurable('search', module=_MODULE)
def search_settings(options=None, builtin_dataset=None, reward_metric='AP',
                    count_flops=True):
  """What a search gin file binds besides the proxy's experiment.

  Args:
    options: `SearchOptions` (default: `SearchOptions()` with its bindings).
    builtin_dataset: `BuiltinDataset` to generate the data into
      `<search_dir>/data` and bind TRAIN/EVAL_FILE_PATTERN and
      EVAL_ANNOTATIONS_JSON to it; None: the gin files set the data.
    reward_metric: COCO metric rewarded ('AP', 'AP50' or 'AP75').
    count_flops: count each trial's multiply-adds.
  """
  return dict(options=options or SearchOptions(), builtin_dataset=builtin_dataset,
              reward_metric=reward_metric, count_flops=count_flops)


def _search_settings_from(gin_files, gin_params):
  """Reads `search(...)` before the data patterns (maybe still required) exist."""
  gin.clear_config()
  gin.add_config_file_search_path(REPO_ROOT)
  try:
    with gin.unlock_config():
      gin.parse_config_files_and_bindings(
          [_resolve_file(f) for f in gin_files], list(gin_params),
          finalize_config=False)
    return search_settings()
  except (ValueError, SyntaxError, ImportError, IOError) as e:
    raise ConfigError(f'Bad gin configuration: {e}') from None


def _include_path(path):
  """How `best.gin` includes a gin file: repository-relative, else absolute."""
  full = os.path.abspath(_resolve_file(path))
  relative = os.path.relpath(full, REPO_ROOT)
  return full if relative.startswith('..') else relative


def proxy_trial(gin_files, gin_params, reward_metric, count_flops, block_specs,
                trial_dir):
  """One proxy trial (runs in a search worker): gin + block specs -> reward dict."""
  specs = tuple(tuple(s) for s in block_specs)
  parse_config(gin_files, list(gin_params) +
               [f'build_retinanet.block_specs = {specs!r}'])
  write_config(trial_dir)
  task, optimizer_options, trainer_options = experiment()
  return _search_proxy.run_proxy_trial(task, optimizer_options, trainer_options,
                                       trial_dir, reward_metric, count_flops)


def best_gin_text(gin_files, gin_params, record, search_dir):
  """The text of `best.gin`: the search's gin files and params + block specs."""
  specs = ',\n'.join(f'    {(l, f, tuple(p), o)!r}'
                     for l, f, p, o in record['block_specs'])
  size = {k: record.get(k) for k in ('params', 'flops')}
  lines = [
      f'# Best architecture of the search in {os.path.abspath(search_dir)}:',
      f"# trial {record['trial']}, reward {record['reward']:.4f} "
      f"({record.get('reward_metric', 'AP')} of the proxy task), "
      f"params {size['params']}, multiply-adds {size['flops']}.",
      '# Train it as is (the proxy recipe) or bind more steps / widths after it:',
      f'#   spinenet-train --gin_file={os.path.abspath(search_dir)}/best.gin \\',
      '#     --model_dir=/tmp/best --mode=train_and_eval \\',
      '#     --gin_param="TrainerOptions.train_steps = 5000"',
      '# Full width (SpineNet-49 scale): build_retinanet.filter_size_scale = 1.0,',
      '# resample_alpha = 0.5, endpoints_num_filters = 256, head_filters = 256.',
  ]
  lines += [f"include '{_include_path(f)}'" for f in gin_files]
  lines += list(gin_params)
  lines.append(f'build_retinanet.block_specs = (\n{specs},\n)')
  return '\n'.join(lines) + '\n'


def search_from_config(gin_files: Sequence[str], gin_params: Sequence[str] = (),
                       *, search_dir: str, num_trials: int, num_workers: int = 1):
  """Parses a search gin file and runs (or resumes) the search.

  Writes `<search_dir>/best.gin` (trainable with `spinenet-train` as is) and
  `<search_dir>/best.png` (the block graph) whenever a trial beats the best,
  and `<search_dir>/reward_curve.png` after every trial.

  Args:
    gin_files: e.g. `['configs/search/proxy_builtin.gin']`.
    gin_params: extra bindings.
    search_dir: the search directory (see `spinenet.search.trials`).
    num_trials: total trials of the directory.
    num_workers: parallel worker processes.

  Returns:
    The dict of `spinenet.search.driver.run_search`.

  Raises:
    ConfigError: for a bad gin file or binding.
  """
  if not search_dir:
    raise ConfigError('--search_dir is required (a local directory).')
  settings = _search_settings_from(gin_files, gin_params)
  params = []
  if settings['builtin_dataset'] is not None:
    data = _search_proxy.prepare_builtin_dataset(
        os.path.join(os.path.abspath(search_dir), 'data'),
        settings['builtin_dataset'])
    params = [f"TRAIN_FILE_PATTERN = '{data['train_pattern']}'",
              f"EVAL_FILE_PATTERN = '{data['val_pattern']}'",
              f"EVAL_ANNOTATIONS_JSON = '{data['val_json']}'"]
  params += list(gin_params)
  load_experiment(gin_files, params)  # fails now, not in a worker, if wrong
  files = [os.path.abspath(_resolve_file(f)) for f in gin_files]
  evaluate_fn = functools.partial(proxy_trial, files, params,
                                  settings['reward_metric'],
                                  settings['count_flops'])

  def on_best(record):
    record = dict(record, reward_metric=settings['reward_metric'])
    with open(os.path.join(search_dir, 'best.gin'), 'w') as f:
      f.write(best_gin_text(gin_files, params, record, search_dir))
    _plot.plot_block_graph(
        record['block_specs'], os.path.join(search_dir, 'best.png'),
        title=f"Search best: trial {record['trial']}, "
              f"{settings['reward_metric']} {record['reward']:.3f}")

  def on_trial(records):
    _search_report.plot_reward_curve(
        records, os.path.join(search_dir, 'reward_curve.png'),
        title=f"Search ({settings['options'].algorithm}): {len(records)} trials")

  return _search_driver.run_search(
      evaluate_fn, search_dir, num_trials, num_workers,
      options=settings['options'], space=_search_space.SearchSpace(),
      on_best=on_best, on_trial=on_trial)
# === End of architecture search ===
