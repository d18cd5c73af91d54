"""benchmarks/finetune.py end to end at toy scale: data, pretraining, both runs.

Checks the plumbing, not the numbers (that is the benchmark's job): the
target classes differ from the pretraining ones, the fine-tuned run starts
from the pretrained checkpoint with the class predictor re-initialized, the
scratch run does not, and both are evaluated on the same split.
"""
import json
import os
import sys

import pytest

from benchmarks import finetune
from spinenet.data import coco_json

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'training'))
import tiny  # noqa: E402  pylint: disable=g-import-not-at-top


@pytest.mark.slow
def test_toy_run(tmp_path):
  model_args = dict(finetune.MODEL_ARGS, filter_size_scale=0.25,
                    endpoints_num_filters=16, head_filters=16, head_convs=1,
                    block_specs=tiny.BLOCK_SPECS)
  settings = finetune.Settings(
      workdir=str(tmp_path), steps=2, pretrain_steps=2, batch_size=2,
      num_pretrain_images=4, num_target_images=4, num_val_images=2,
      model_args=tuple(sorted(model_args.items())))
  summary = finetune.run(settings)
  assert summary['steps'] == 2
  for key in ('scratch_ap50', 'finetuned_ap50'):
    assert 0.0 <= summary[key] <= 1.0
  target = coco_json.load_coco(str(tmp_path / 'data_target' / 'shapes' /
                                   'annotations' / 'val.json'))
  assert sorted(target.categories.values()) == sorted(finetune.TARGET_CLASSES)
  runs = {p.name: p for p in tmp_path.iterdir() if p.name.startswith(('finetuned', 'scratch'))}
  [finetuned] = [p for n, p in runs.items() if n.startswith('finetuned')]
  [scratch] = [p for n, p in runs.items() if n.startswith('scratch')]
  record = json.loads((finetuned / 'init_checkpoint.json').read_text())
  assert record['checkpoint'].startswith(str(tmp_path / 'pretrained_2'))
  assert list(record['reinitialized']) == ['class predictor']
  assert not (scratch / 'init_checkpoint.json').exists()
  for run in (finetuned, scratch):
    metrics = json.loads((run / 'eval' / 'metrics.json').read_text())
    assert metrics['step'] == 2 and 'AP50' in metrics
