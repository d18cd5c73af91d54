"""Shared by the training tests: a tiny dataset and a tiny RetinaNet.

The model is the SpineNet-49S builder at 128 px with quarter widths, 16-wide
endpoints, a one-conv head of 16 filters (5 classes) and five blocks (one
output block per level instead of SpineNet-49's fifteen): every code path of
training at a fraction of the graph, so tracing and XLA compilation are quick.
"""
import functools
import os
import sys

from spinenet.data import builtin_dataset
from spinenet.data import coco_converter
from spinenet.modeling import registry

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 5
INPUT_SIZE = 128
# (level, block, (parent a, parent b), is output); 0 and 1 are the stem.
BLOCK_SPECS = ((3, 'bottleneck', (0, 1), True),
               (4, 'residual', (0, 2), True),
               (5, 'residual', (2, 3), True),
               (7, 'residual', (3, 4), True),
               (6, 'bottleneck', (4, 5), True))
MODEL_ARGS = dict(num_classes=NUM_CLASSES, input_size=INPUT_SIZE,
                  filter_size_scale=0.25, endpoints_num_filters=16,
                  head_filters=16, head_convs=1, block_specs=BLOCK_SPECS)

# The same model through gin, on top of experiments/demo_cpu.gin.
GIN_PARAMS = [
    f'build_retinanet.input_size = {INPUT_SIZE}',
    'build_retinanet.filter_size_scale = 0.25',
    'build_retinanet.endpoints_num_filters = 16',
    'build_retinanet.head_filters = 16',
    'build_retinanet.head_convs = 1',
    f'build_retinanet.block_specs = {BLOCK_SPECS!r}',
    'TRAIN_BATCH_SIZE = 4',
    'EVAL_BATCH_SIZE = 4',
    'train/DataOptions.shuffle_buffer = 8',
    'OptimizerOptions.warmup_steps = 2',
]


def model_fn(**overrides):
  """No-argument builder of the tiny RetinaNet (`overrides` win)."""
  return functools.partial(registry.build_retinanet, '49S',
                           **dict(MODEL_ARGS, **overrides))


def make_records(directory, num_train=8, num_val=4):
  """Writes the built-in dataset at 128 px and its TFRecords (2 shards each).

  Returns:
    dict with `train`, `val` (file patterns) and `val_json`.
  """
  paths = builtin_dataset.generate(os.path.join(directory, 'shapes'),
                                   num_train=num_train, num_val=num_val,
                                   image_size=INPUT_SIZE)
  for split in ('train', 'val'):
    coco_converter.convert_coco(paths[f'{split}_images'], paths[f'{split}_json'],
                                os.path.join(directory, 'records', split),
                                num_shards=2, num_workers=0)
  return {'train': os.path.join(directory, 'records', 'train-*.tfrecord'),
          'val': os.path.join(directory, 'records', 'val-*.tfrecord'),
          'val_json': paths['val_json']}


def gin_params(records, **trainer):
  """GIN_PARAMS plus the file patterns and `TrainerOptions.<k> = v`."""
  params = GIN_PARAMS + [f"TRAIN_FILE_PATTERN = '{records['train']}'",
                         f"EVAL_FILE_PATTERN = '{records['val']}'"]
  return params + [f'TrainerOptions.{k} = {v!r}' for k, v in trainer.items()]


def subprocess_env(**extra):
  """Environment for a child Python: the repo importable, TF quiet, 1 thread each."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', TF_USE_LEGACY_KERAS='1',
             PYTHONPATH=os.pathsep.join([REPO_ROOT, os.path.dirname(__file__)]
                                        + sys.path))
  env.update(extra)
  return env
