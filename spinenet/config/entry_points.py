"""What the commands run, from gin files: train, load, export, search.

Each function parses the gin files and bindings (`parsing.parse_config`),
builds the bound objects and hands them to the library: `train_lib`
(training and evaluation), `export_lib` (SavedModel export), the search
driver (architecture search). Nothing here trains, exports or searches by
itself.
"""
import functools
import os
from typing import Optional, Sequence

from absl import logging

from spinenet.config import parsing
from spinenet.config import registrations
from spinenet.search import best as best_lib
from spinenet.search import driver
from spinenet.search import proxy
from spinenet.search import report
from spinenet.search import space
from spinenet.serving import export_lib
from spinenet.serving import tflite_export
from spinenet.training import strategies
from spinenet.training import train_lib

ConfigError = parsing.ConfigError


def load_experiment(gin_files: Sequence[str], gin_params: Sequence[str] = ()):
  """Parses gin; returns the bound `(task, optimizer_options, trainer_options)`."""
  parsing.parse_config(gin_files, gin_params)
  return registrations.experiment()


def train_from_config(gin_files: Sequence[str], gin_params: Sequence[str] = (),
                      *, mode: str = 'train', model_dir: str,
                      strategy: str = 'auto', tpu: Optional[str] = None):
  """Parses gin and runs `train_lib.run_experiment` with the bound experiment.

  Writes `model_dir/config.gin` before and `operative_config.gin` once the
  model is built (chief only).

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
  parsing.parse_config(gin_files, gin_params)
  try:
    strategy_obj = strategies.get_strategy(strategy, tpu)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  chief = strategies.is_chief(strategy_obj)
  if chief:
    parsing.write_config(model_dir)

  def on_built(experiment):
    del experiment
    if chief:
      parsing.write_config(model_dir, operative=True)

  logging.info('running %s in %s with gin files %s', mode, model_dir,
               list(gin_files))
  task, optimizer_options, trainer_options = registrations.experiment()
  return train_lib.run_experiment(
      task, mode, model_dir, strategy_obj, optimizer_options, trainer_options,
      on_built=on_built)


def _task_records_and_label_map(gin_files, gin_params, label_map_path):
  """The experiment's task, its [eval, train] file patterns and label map."""
  task, _, _ = load_experiment(gin_files, gin_params)
  patterns = [getattr(getattr(task, split, None), 'file_pattern', '')
              for split in ('eval_data', 'train_data')]
  return task, patterns, export_lib.label_map_for(label_map_path, patterns)


def export_from_config(gin_files: Sequence[str], gin_params: Sequence[str],
                       export_dir: str, *, checkpoint: Optional[str],
                       version: Optional[int] = None,
                       label_map_path: Optional[str] = None,
                       options: export_lib.ExportOptions = export_lib.ExportOptions()
                       ) -> export_lib.ExportResult:
  """`export_lib.export_saved_model` for the model of a gin experiment.

  The label map is `label_map_path`, else the one
  `spinenet-create-coco-tfrecord` wrote next to the experiment's evaluation
  (or training) records, else none (class names are the category ids).

  Raises:
    ConfigError: bad gin files or bindings.
    ValueError: see `export_lib.export_saved_model`.
  """
  task, _, label_map = _task_records_and_label_map(
      gin_files, gin_params, label_map_path)
  return export_lib.export_saved_model(
      task.build_model, export_dir, checkpoint=checkpoint, version=version,
      label_map=label_map, options=options)


def export_tflite_from_config(gin_files: Sequence[str], gin_params: Sequence[str],
                              export_dir: str, *, checkpoint: Optional[str],
                              label_map_path: Optional[str] = None,
                              calibration_file_pattern: Optional[str] = None,
                              options: tflite_export.TFLiteOptions = tflite_export.TFLiteOptions()
                              ) -> tflite_export.TFLiteExportResult:
  """`tflite_export.export_tflite` for the model of a gin experiment.

  int8 calibrates on `calibration_file_pattern`, else the experiment's
  training records (`train_data.file_pattern`). The label map as for
  `export_from_config`.

  Raises:
    ConfigError: bad gin files or bindings.
    ValueError: see `tflite_export.export_tflite`.
  """
  task, patterns, label_map = _task_records_and_label_map(
      gin_files, gin_params, label_map_path)
  images = None
  if options.quantization == 'int8':
    pattern = calibration_file_pattern or patterns[1]
    if not pattern:
      raise ConfigError('--quantization=int8 calibrates on the training records: '
                        'bind train_data.file_pattern (TRAIN_FILE_PATTERN) or pass '
                        '--calibration_file_pattern.')
    images = tflite_export.read_record_images(pattern, options.calibration_images)
  return tflite_export.export_tflite(
      task.build_model, export_dir, checkpoint=checkpoint, label_map=label_map,
      calibration_images=images, options=options)


def _read_search_settings(gin_files, gin_params):
  """The `search(...)` bindings, read before the data patterns may be set."""
  parsing.parse_config(gin_files, gin_params, finalize=False)
  try:
    return registrations.search_settings()
  except (ValueError, TypeError) as e:
    raise ConfigError(f'Bad gin configuration: {e}') from None


def proxy_trial(gin_files, gin_params, reward_metric, count_flops, block_specs,
                trial_dir):
  """One proxy trial (run in a search worker): gin + block specs -> reward dict.

  See `spinenet.search.proxy.run_proxy_trial`.
  """
  specs = tuple(tuple(s) for s in block_specs)
  parsing.parse_config(gin_files, list(gin_params) +
                       [f'build_retinanet.block_specs = {specs!r}'])
  parsing.write_config(trial_dir)
  task, optimizer_options, trainer_options = registrations.experiment()
  return proxy.run_proxy_trial(task, optimizer_options, trainer_options,
                               trial_dir, reward_metric, count_flops)


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
  settings = _read_search_settings(gin_files, gin_params)
  params = []
  if settings['builtin_dataset'] is not None:
    data = proxy.prepare_builtin_dataset(
        os.path.join(os.path.abspath(search_dir), 'data'),
        settings['builtin_dataset'])
    params = [f"TRAIN_FILE_PATTERN = '{data['train_pattern']}'",
              f"EVAL_FILE_PATTERN = '{data['val_pattern']}'",
              f"EVAL_ANNOTATIONS_JSON = '{data['val_json']}'"]
  params += list(gin_params)
  load_experiment(gin_files, params)  # fails now, not in a worker, if wrong
  files = [os.path.abspath(parsing.resolve_file(f)) for f in gin_files]
  includes = [parsing.include_path(f) for f in gin_files]
  metric = settings['reward_metric']
  evaluate_fn = functools.partial(proxy_trial, files, params, metric,
                                  settings['count_flops'])

  def on_best(record):
    best_lib.write_best(search_dir, dict(record, reward_metric=metric),
                        includes, params)

  def on_trial(records):
    report.plot_reward_curve(
        records, os.path.join(search_dir, 'reward_curve.png'),
        title=f"Search ({settings['options'].algorithm}): {len(records)} trials")

  return driver.run_search(
      evaluate_fn, search_dir, num_trials, num_workers,
      options=settings['options'], space=space.SearchSpace(),
      on_best=on_best, on_trial=on_trial)
