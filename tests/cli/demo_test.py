"""`spinenet-demo` (what `make demo` runs), end to end at a tiny scale.

Data generation, conversion, training, COCO evaluation, export and one drawn
prediction all run for real; only the sizes are cut (8 training images, 2
steps), so the numbers it prints are not the demo's.
"""
import json
import os
import subprocess
import sys
import tempfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2')
TINY = ['TrainerOptions.train_steps = 2', 'TrainerOptions.steps_per_loop = 1',
        'TrainerOptions.checkpoint_interval = 2', 'TRAIN_BATCH_SIZE = 2',
        'EVAL_BATCH_SIZE = 2', 'OptimizerOptions.warmup_steps = 1']


def _demo(*args, timeout=1200):
  return subprocess.run([sys.executable, '-m', 'spinenet.cli.demo', *args],
                        cwd=REPO_ROOT, env=ENV, capture_output=True, text=True,
                        timeout=timeout)


@pytest.mark.slow
def test_demo_runs_every_step_and_reports():
  out = os.path.join(tempfile.mkdtemp(), 'demo')
  done = _demo(f'--output_dir={out}', '--num_train=8', '--num_val=4',
               *[f'--gin_param={p}' for p in TINY])
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'COCO box AP50 = ' in done.stdout
  assert 'trained 2 steps' in done.stdout
  with open(os.path.join(out, 'model', 'eval', 'metrics.json')) as f:
    metrics = json.load(f)
  assert 0.0 <= metrics['AP50'] <= 1.0
  assert os.path.exists(os.path.join(out, 'export', '1', 'saved_model.pb'))
  assert os.path.getsize(os.path.join(out, 'prediction.png')) > 0


# The tiny Mask R-CNN of tests/training/tiny_maskrcnn.py at 128 px.
TINY_MASKRCNN = [
    'build_maskrcnn.input_size = 128', 'build_maskrcnn.filter_size_scale = 0.25',
    'build_maskrcnn.endpoints_num_filters = 16', 'build_maskrcnn.rpn_filters = 16',
    'build_maskrcnn.box_filters = 16', 'build_maskrcnn.fc_dims = 32',
    'build_maskrcnn.mask_filters = 16', 'build_maskrcnn.mask_convs = 1',
    'ProposalConfig.num_proposals = 64', 'ProposalConfig.test_num_proposals = 64',
    'ROISamplerConfig.num_sampled_rois = 32', 'ROISamplerConfig.num_sampled_masks = 8',
    'MaskRCNNDetectionConfig.max_detections = 10']


@pytest.mark.slow
def test_maskrcnn_demo_runs_every_step_and_reports_box_and_mask_ap():
  out = os.path.join(tempfile.mkdtemp(), 'demo')
  done = _demo('--task=maskrcnn', f'--output_dir={out}', '--num_train=8', '--num_val=4',
               *[f'--gin_param={p}' for p in TINY + TINY_MASKRCNN])
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'COCO box AP   = ' in done.stdout and 'COCO mask AP  = ' in done.stdout
  assert 'trained 2 steps' in done.stdout
  with open(os.path.join(out, 'model', 'eval', 'metrics.json')) as f:
    metrics = json.load(f)
  assert 0.0 <= metrics['AP50'] <= 1.0 and 0.0 <= metrics['mask_AP50'] <= 1.0
  # The records carry masks; the export and the drawn prediction exist.
  assert os.listdir(os.path.join(out, 'records_masks'))
  assert os.path.exists(os.path.join(out, 'export', '1', 'saved_model.pb'))
  assert os.path.getsize(os.path.join(out, 'prediction.png')) > 0


@pytest.mark.slow
def test_classification_demo_runs_and_reports():
  out = os.path.join(tempfile.mkdtemp(), 'demo')
  done = _demo('--task=classification', f'--output_dir={out}', '--num_train=16',
               '--num_val=8', *[f'--gin_param={p}' for p in TINY])
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'top-1 accuracy = ' in done.stdout
  assert 'trained 2 steps' in done.stdout
  with open(os.path.join(out, 'model', 'eval', 'metrics.json')) as f:
    metrics = json.load(f)
  assert 0.0 <= metrics['top_1_accuracy'] <= 1.0
  assert len(os.listdir(os.path.join(out, 'samples'))) == 8  # one image per class


def test_bad_flags_and_bindings_are_refused_by_name():
  bad = _demo('--output_dri=x', timeout=300)
  assert bad.returncode != 0
  assert 'output_dri' in bad.stderr
  bad = _demo('--task=segmentation', timeout=300)
  assert bad.returncode != 0
  assert 'task' in bad.stderr and 'classification' in bad.stderr
  assert 'maskrcnn' in bad.stderr
  out = os.path.join(tempfile.mkdtemp(), 'demo')
  bad = _demo('--task=classification', f'--output_dir={out}', '--num_train=8',
              '--num_val=8', '--gin_param=TrainerOptions.train_stpes = 2', timeout=300)
  assert bad.returncode != 0
  assert "doesn't have a parameter named 'train_stpes'" in bad.stderr
  assert 'Traceback' not in bad.stderr
