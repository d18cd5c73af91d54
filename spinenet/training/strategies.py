"""Picks the `tf.distribute.Strategy` a run uses.

| name | what | when `auto` picks it |
|---|---|---|
| `tpu` | `TPUStrategy` on the TPU named by `tpu` (name, `grpc://` address or 'local' on a TPU VM) | `tpu` is given |
| `multi_worker_mirrored` | `MultiWorkerMirroredStrategy`, workers from `TF_CONFIG` | `TF_CONFIG` lists more than one worker |
| `mirrored` | `MirroredStrategy` over this machine's GPUs (or CPUs) | more than one GPU |
| `one_device` | `OneDeviceStrategy` on GPU 0, else the CPU | otherwise |
"""
import json
import os

from absl import logging
import tensorflow as tf

STRATEGIES = ('auto', 'tpu', 'multi_worker_mirrored', 'mirrored', 'one_device')


def _num_workers_in_tf_config():
  """Workers (chief included) listed in the `TF_CONFIG` environment variable."""
  raw = os.environ.get('TF_CONFIG')
  if not raw:
    return 0
  try:
    config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(f'TF_CONFIG is not valid JSON ({e}): {raw[:200]!r}') from None
  cluster = config.get('cluster', {}) if isinstance(config, dict) else None
  if not isinstance(cluster, dict):
    raise ValueError('TF_CONFIG must be a JSON object with a "cluster" object, '
                     'e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                     f'"task": {{"type": "worker", "index": 0}}}}. Received: {raw[:200]!r}')
  count = 0
  for job in ('worker', 'chief'):
    addresses = cluster.get(job, [])
    if not isinstance(addresses, list):
      raise ValueError(f'TF_CONFIG cluster.{job} must be a list of "host:port" '
                       f'addresses. Received: {addresses!r}')
    count += len(addresses)
  return count


def resolve_name(name: str, tpu=None) -> str:
  """The concrete strategy name for `name` ('auto' resolved), checked."""
  if name not in STRATEGIES:
    raise ValueError(f'Unknown strategy {name!r}; expected one of {STRATEGIES}.')
  if name != 'auto':
    if name == 'tpu' and not tpu:
      raise ValueError("strategy 'tpu' needs a TPU: pass `tpu` (a TPU name, "
                       "a grpc:// address, or 'local' on a TPU VM).")
    return name
  if tpu:
    return 'tpu'
  if _num_workers_in_tf_config() > 1:
    return 'multi_worker_mirrored'
  if len(tf.config.list_logical_devices('GPU')) > 1:
    return 'mirrored'
  return 'one_device'


def get_strategy(name: str = 'auto', tpu=None,
                 devices=None) -> tf.distribute.Strategy:
  """Builds the strategy `name` (see the module docstring).

  Args:
    name: one of `STRATEGIES`.
    tpu: TPU name or address (TPU strategies only).
    devices: optional device list for 'mirrored' (default: all GPUs, else
      all logical CPUs).

  Returns:
    A `tf.distribute.Strategy`.

  Raises:
    ValueError: for an unknown name or a TPU strategy without `tpu`.
  """
  name = resolve_name(name, tpu)
  if name == 'tpu':
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu='' if tpu == 'local' else tpu)
    if tpu != 'local':
      tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    strategy = tf.distribute.TPUStrategy(resolver)
  elif name == 'multi_worker_mirrored':
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO))
  elif name == 'mirrored':
    if devices is None:
      gpus = tf.config.list_logical_devices('GPU')
      devices = [d.name for d in (gpus or tf.config.list_logical_devices('CPU'))]
    strategy = tf.distribute.MirroredStrategy(devices)
  else:
    gpus = tf.config.list_logical_devices('GPU')
    strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else '/cpu:0')
  logging.info('strategy: %s with %d replica(s)', name,
               strategy.num_replicas_in_sync)
  return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes checkpoints and summaries for the run."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type is None:
    return True
  has_chief = 'chief' in resolver.cluster_spec().as_dict()
  return task_type == 'chief' or (not has_chief and task_type == 'worker'
                                  and task_id == 0)


def worker_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """Where this process writes: `model_dir` on the chief, a scratch dir elsewhere.

  Every multi-worker process must take part in saving a checkpoint; the
  non-chief ones write theirs under `model_dir/.workers/<type>_<id>`.
  """
  if is_chief(strategy):
    return model_dir
  resolver = strategy.cluster_resolver
  return os.path.join(model_dir, '.workers',
                      f'{resolver.task_type}_{resolver.task_id}')
