r"""Does starting from trained weights pay? Fine-tuning vs training from scratch.

  python -m benchmarks.finetune --workdir=/tmp/finetune_bench

1. Pretrain a small SpineNet-49S RetinaNet on the built-in shapes dataset
   (circle, square, triangle, cross; `--pretrain_steps`).
2. Fine-tune it for `--steps` N steps on a different class set: the built-in
   variant with rings, diamonds and hexagons (category ids 1..3, so 4 classes
   with background instead of 5). `init_checkpoint_parts='all'`: backbone,
   head towers and box predictor are restored, the class predictor does not
   fit (5 vs 4 classes) and is re-initialized with the focal-loss prior bias.
3. Train the same model on the same data for the same N steps from scratch,
   with the same optimizer settings.
4. Evaluate both on the same validation split of the new classes (COCO
   AP50 against its JSON).

Prints a table and, last, one JSON line: `scratch_ap50`, `finetuned_ap50`,
`steps` (N), `pretrain_steps`, their APs, wall times and `env` (the machine).
The goal is `finetuned_ap50 >= scratch_ap50 + 0.15` at an N where scratch is
still poor, the whole run under 20 minutes on 2 CPU cores. The default N = 60
is such an N: from scratch the detector has not found the objects yet (AP50
near 0), while the pretrained one only has to learn the new class predictor.
Both runs use the same optimizer settings (peak 0.08, 30 warmup steps, cosine
to 0); `--finetune_learning_rate` changes the fine-tuning one. `--workdir`
keeps the data and the pretrained model: a second run reuses them.
"""
import dataclasses
import functools
import json
import os
import time
from typing import Dict, Optional

from absl import app
from absl import flags
from absl import logging

from benchmarks import _machine
from spinenet.data import builtin_dataset
from spinenet.data import coco_converter
from spinenet.modeling import registry
from spinenet.training import optimization
from spinenet.training import retinanet_task
from spinenet.training import strategies
from spinenet.training import train_lib

PRETRAIN_CLASSES = builtin_dataset.CLASS_NAMES
TARGET_CLASSES = ('ring', 'diamond', 'hexagon')
# The demo's narrow SpineNet-49S (experiments/demo_cpu.gin) at 128 px, where
# the shapes are 8-50 px: anchors of 2 strides (16 px at level 3) reach
# more of the small ones than the default 3.
MODEL_ARGS = dict(input_size=128, filter_size_scale=0.35,
                  endpoints_num_filters=48, head_filters=48, head_convs=2,
                  init_stochastic_depth_rate=0.0, norm_momentum=0.9,
                  anchor_size=2.0)


@dataclasses.dataclass(frozen=True)
class Settings:
  """One benchmark run (the flags)."""
  workdir: str
  steps: int = 60
  pretrain_steps: int = 500
  batch_size: int = 8
  image_size: int = 128
  num_pretrain_images: int = 400
  num_target_images: int = 200
  num_val_images: int = 100
  learning_rate: float = 0.08
  finetune_learning_rate: Optional[float] = None  # None: learning_rate
  warmup_steps: int = 30
  parts: str = 'all'
  freeze_backbone: bool = False
  seed: int = 0
  model_args: tuple = tuple(sorted(MODEL_ARGS.items()))


def make_data(directory: str, class_names, num_train: int, num_val: int,
              image_size: int, seed: int) -> Dict[str, str]:
  """Generates a built-in variant and its records (once per directory)."""
  records = os.path.join(directory, 'records')
  done = os.path.join(records, '.complete')
  paths = {'train': os.path.join(records, 'train-*.tfrecord'),
           'val': os.path.join(records, 'val-*.tfrecord'),
           'val_json': os.path.join(directory, 'shapes', 'annotations', 'val.json')}
  if os.path.exists(done):
    return paths
  generated = builtin_dataset.generate(
      os.path.join(directory, 'shapes'), num_train=num_train, num_val=num_val,
      image_size=image_size, seed=seed, class_names=class_names)
  for split in ('train', 'val'):
    if split == 'val' and not num_val:
      continue
    coco_converter.convert_coco(generated[f'{split}_images'],
                                generated[f'{split}_json'],
                                os.path.join(records, split), num_shards=2,
                                num_workers=0)
  open(done, 'w').close()
  return paths


def train(settings: Settings, data: Dict[str, str], num_classes: int,
          steps: int, model_dir: str, init_checkpoint: str = '',
          evaluate: bool = True, learning_rate: Optional[float] = None) -> dict:
  """Trains `steps` steps (resuming if `model_dir` has them); evaluates.

  Returns:
    dict with `eval` (COCO metrics or None), `seconds` and `step`.
  """
  s = settings
  lr = learning_rate or s.learning_rate
  model_fn = functools.partial(registry.build_retinanet, '49S',
                               num_classes=num_classes, **dict(s.model_args))
  train_data = retinanet_task.DataOptions(
      data['train'], global_batch_size=s.batch_size, cache=True,
      shuffle_buffer=400, aug_scale_min=0.8, aug_scale_max=1.2, seed=s.seed)
  eval_data = retinanet_task.DataOptions(data['val'], global_batch_size=10)
  task = retinanet_task.RetinaNetTask(
      model_fn, train_data, eval_data if evaluate else None,
      annotation_json=data['val_json'] if evaluate else None)
  optimizer = optimization.OptimizerOptions(
      learning_rate=lr, schedule='cosine',
      warmup_steps=min(s.warmup_steps, steps // 2),
      warmup_learning_rate=lr / 10, weight_decay=4e-5,
      gradient_clip_norm=10.0)
  trainer = train_lib.TrainerOptions(
      train_steps=steps, steps_per_loop=min(50, steps),
      checkpoint_interval=steps, init_checkpoint=init_checkpoint,
      init_checkpoint_parts=s.parts if init_checkpoint else 'all',
      freeze_backbone=s.freeze_backbone and bool(init_checkpoint))
  start = time.monotonic()
  result = train_lib.run_experiment(
      task, 'train_and_eval' if evaluate else 'train', model_dir,
      strategies.get_strategy('one_device'), optimizer, trainer)
  return dict(eval=result['eval'], seconds=time.monotonic() - start,
              step=result['step'])


def run(settings: Settings) -> dict:
  """The whole benchmark; returns the JSON summary (without `env`)."""
  s = settings
  start = time.monotonic()
  pre_data = make_data(os.path.join(s.workdir, 'data_pretrain'),
                       PRETRAIN_CLASSES, s.num_pretrain_images, 0,
                       s.image_size, s.seed)
  target_data = make_data(os.path.join(s.workdir, 'data_target'),
                          TARGET_CLASSES, s.num_target_images,
                          s.num_val_images, s.image_size, s.seed + 1)
  logging.info('data ready in %.0f s', time.monotonic() - start)
  pre_dir = os.path.join(s.workdir, f'pretrained_{s.pretrain_steps}')
  pretrained = train(s, pre_data, len(PRETRAIN_CLASSES) + 1, s.pretrain_steps,
                     pre_dir, evaluate=False)
  n = len(TARGET_CLASSES) + 1
  finetune_lr = s.finetune_learning_rate or s.learning_rate
  tag = (f'{s.steps}_{s.parts}{"_frozen" if s.freeze_backbone else ""}'
         f'_lr{finetune_lr:g}')
  finetuned = train(s, target_data, n, s.steps,
                    os.path.join(s.workdir, f'finetuned_{tag}'),
                    init_checkpoint=pre_dir, learning_rate=finetune_lr)
  scratch = train(s, target_data, n, s.steps,
                  os.path.join(s.workdir, f'scratch_{s.steps}_lr{s.learning_rate:g}'))
  return {
      'scratch_ap50': round(scratch['eval']['AP50'], 4),
      'finetuned_ap50': round(finetuned['eval']['AP50'], 4),
      'steps': s.steps,
      'scratch_ap': round(scratch['eval']['AP'], 4),
      'finetuned_ap': round(finetuned['eval']['AP'], 4),
      'pretrain_steps': s.pretrain_steps,
      'learning_rate': s.learning_rate,
      'finetune_learning_rate': finetune_lr,
      'parts': s.parts,
      'freeze_backbone': s.freeze_backbone,
      'seconds': {'pretrain': round(pretrained['seconds'], 1),
                  'finetune': round(finetuned['seconds'], 1),
                  'scratch': round(scratch['seconds'], 1),
                  'total': round(time.monotonic() - start, 1)},
  }


_WORKDIR = flags.DEFINE_string('workdir', '/tmp/spinenet_finetune_bench',
                               'Data, pretrained model and runs (reused).')
_STEPS = flags.DEFINE_integer('steps', Settings.steps,
                              'N: fine-tuning and from-scratch steps.')
_PRETRAIN_STEPS = flags.DEFINE_integer('pretrain_steps', Settings.pretrain_steps,
                                       'Pretraining steps on the default shapes.')
_BATCH = flags.DEFINE_integer('batch_size', Settings.batch_size, 'Batch size.')
_PARTS = flags.DEFINE_enum('parts', Settings.parts,
                           ['all', 'backbone', 'backbone_and_head_towers'],
                           'TrainerOptions.init_checkpoint_parts of the fine-tuning.')
_FREEZE = flags.DEFINE_bool('freeze_backbone', False,
                            'Fine-tune with a frozen backbone.')
_LR = flags.DEFINE_float('learning_rate', Settings.learning_rate,
                         'Peak learning rate of pretraining and from scratch.')
_FT_LR = flags.DEFINE_float('finetune_learning_rate', None,
                            'Peak learning rate of fine-tuning (default: '
                            '--learning_rate).')


def main(argv):
  del argv
  settings = Settings(workdir=_WORKDIR.value, steps=_STEPS.value,
                      pretrain_steps=_PRETRAIN_STEPS.value,
                      batch_size=_BATCH.value, parts=_PARTS.value,
                      freeze_backbone=_FREEZE.value, learning_rate=_LR.value,
                      finetune_learning_rate=_FT_LR.value)
  summary = run(settings)
  print(f'\nfine-tuning vs from scratch, {summary["steps"]} steps each on '
        f'{TARGET_CLASSES} (pretrained {summary["pretrain_steps"]} steps on '
        f'{PRETRAIN_CLASSES})')
  print(f'{"run":<12}{"AP50":>8}{"AP":>8}{"seconds":>10}')
  for name in ('scratch', 'finetuned'):
    key = 'finetune' if name == 'finetuned' else name
    print(f'{name:<12}{summary[name + "_ap50"]:>8.3f}{summary[name + "_ap"]:>8.3f}'
          f'{summary["seconds"][key]:>10.1f}')
  print(f'gain AP50 {summary["finetuned_ap50"] - summary["scratch_ap50"]:+.3f}; '
        f'total {summary["seconds"]["total"]:.0f} s')
  print(json.dumps(dict(summary, env=_machine.env_summary())))


if __name__ == '__main__':
  app.run(main)
