"""The proxy task: train a sampled architecture briefly, reward = COCO AP.

The paper's proxy trains each sampled SpineNet at widths x0.25, resampling
alpha 0.25 and a 64-wide head for 5 epochs at 512 px and rewards the AP on a
held-out slice of COCO train2017. Here the task, model and recipe come from
the caller (a gin file, e.g. configs/search/proxy_builtin.gin: the built-in
shapes dataset at 128 px and a few hundred steps on a CPU), and the trial is
one `train_lib` experiment in `train_and_eval` mode: the same trainer,
parsers and COCO evaluator as `spinenet-train`.
"""
import dataclasses
import os
import time
from typing import Dict

from absl import logging
import tf_keras as keras

from spinenet.data import builtin_dataset
from spinenet.data import coco_converter
from spinenet.modeling import profile
from spinenet.modeling import winograd_conv
from spinenet.training import strategies
from spinenet.training import train_lib

REWARD_METRICS = ('AP', 'AP50', 'AP75')


@dataclasses.dataclass(frozen=True)
class BuiltinDataset:
  """The built-in shapes dataset as the proxy task's data.

  Attributes:
    num_train: training images.
    num_val: held-out images the reward is measured on.
    image_size: side of the generated images in pixels.
    seed: seed of the generator.
  """
  num_train: int = 400
  num_val: int = 100
  image_size: int = 128
  seed: int = 0


def prepare_builtin_dataset(data_dir: str,
                            options: BuiltinDataset = BuiltinDataset()) -> Dict[str, str]:
  """Generates the shapes dataset and its TFRecords once (reused if present).

  Args:
    data_dir: directory for the images, annotations and records.
    options: `BuiltinDataset`.

  Returns:
    dict with `train_pattern`, `val_pattern` (TFRecord globs) and
    `val_json` (COCO ground truth of the held-out split).
  """
  records = os.path.join(data_dir, 'records')
  done = os.path.join(records, '.complete')
  shapes = os.path.join(data_dir, 'shapes')
  if not os.path.exists(done):
    start = time.monotonic()
    paths = builtin_dataset.generate(shapes, num_train=options.num_train,
                                     num_val=options.num_val,
                                     image_size=options.image_size,
                                     seed=options.seed)
    for split in ('train', 'val'):
      coco_converter.convert_coco(paths[f'{split}_images'], paths[f'{split}_json'],
                                  os.path.join(records, split), num_shards=2,
                                  num_workers=0)
    with open(done, 'w') as f:
      f.write(f'{dataclasses.asdict(options)}\n')
    logging.info('built-in dataset ready in %s (%.0f s)', data_dir,
                 time.monotonic() - start)
  return {'train_pattern': os.path.join(records, 'train-*.tfrecord'),
          'val_pattern': os.path.join(records, 'val-*.tfrecord'),
          'val_json': os.path.join(shapes, 'annotations', 'val.json')}


def run_proxy_trial(task, optimizer_options, trainer_options, trial_dir: str,
                    reward_metric: str = 'AP', count_flops: bool = True) -> dict:
  """Trains `task`'s model for `trainer_options.train_steps`, then evaluates.

  Args:
    task: a `RetinaNetTask` whose model is the sampled architecture.
    optimizer_options: `optimization.OptimizerOptions`.
    trainer_options: `train_lib.TrainerOptions` (the proxy's short run).
    trial_dir: the trial's model directory.
    reward_metric: the COCO metric that is the reward ('AP', 'AP50' or
      'AP75').
    count_flops: also count the model's multiply-adds at its input size.

  Returns:
    dict with `reward`, `reward_metric`, `metrics` (all COCO metrics), `params` (total
    weights of the detector), `flops` (multiply-adds per image, or None),
    `steps`.

  Raises:
    ValueError: for an unknown `reward_metric`.
    trainer.NonFiniteLossError: if the loss diverged.
  """
  if reward_metric not in REWARD_METRICS:
    raise ValueError(f'`reward_metric` must be one of {REWARD_METRICS}. '
                     f'Received: {reward_metric!r}')
  keras.backend.clear_session()  # a worker runs many trials: start each afresh
  experiment = train_lib.build_experiment(
      task, 'train_and_eval', trial_dir, strategies.get_strategy('one_device'),
      optimizer_options, trainer_options)
  try:
    result = train_lib.run(experiment, 'train_and_eval')
    model = experiment.model
    params = profile.count_params(model)['total']
    flops = None
    if count_flops:
      size = task.info.input_size
      # The architecture's multiply-adds, whatever algorithm trained it.
      winograd_conv.use_direct_convolutions(model)
      flops = profile.count_flops(lambda x: model(x, training=False),
                                  (1, *size, 3))
  finally:
    experiment.close()
  metrics = {k: float(v) for k, v in (result['eval'] or {}).items()}
  if reward_metric not in metrics:
    raise ValueError(f'The evaluation returned no {reward_metric!r} (got '
                     f'{sorted(metrics)}); is the eval split empty?')
  return {'reward': metrics[reward_metric], 'reward_metric': reward_metric,
          'metrics': metrics,
          'params': params, 'flops': flops, 'steps': result['step']}
