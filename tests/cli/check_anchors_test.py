"""spinenet-check-anchors: the experiment's anchors, JSON and records sources."""
import json
import os
import subprocess
import sys

from absl import app
import numpy as np
import pytest

from spinenet.cli import check_anchors
from spinenet.data import anchor_coverage
from spinenet.data import builtin_dataset
from spinenet.data import coco_converter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIN = [os.path.join(REPO, 'experiments', 'demo_cpu.gin')]
# A small model on demo_cpu.gin, so the build is quick.
SMALL = ['build_retinanet.filter_size_scale = 0.25',
         'build_retinanet.input_size = 128']


def test_records_end_to_end_equals_the_json_report(tmp_path):
  paths = builtin_dataset.generate(str(tmp_path / 'shapes'), num_train=6,
                                   num_val=0, image_size=256)
  coco_converter.convert_coco(paths['train_images'], paths['train_json'],
                              str(tmp_path / 'records' / 'train'), num_workers=0)
  out = tmp_path / 'report.json'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', TF_USE_LEGACY_KERAS='1')
  proc = subprocess.run(
      [sys.executable, '-m', 'spinenet.cli.check_anchors', f'--gin_file={GIN[0]}',
       *[f'--gin_param={p}' for p in SMALL],
       f'--file_pattern={tmp_path}/records/train-*', f'--json_output={out}'],
      capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'boxes no anchor reaches at IoU 0.5' in proc.stdout
  report = json.loads(out.read_text())
  # The experiment's anchors with the bindings: 128 px, the demo's anchor size 3.
  assert report['settings']['input_size'] == [128, 128]
  assert report['settings']['anchor_size'] == 3.0
  # The same boxes from the COCO JSON give the same report.
  images = anchor_coverage.images_from_coco_json(paths['train_json'])
  settings = anchor_coverage.AnchorSettings((128, 128), anchor_size=3.0)
  expected = anchor_coverage.coverage(images, settings)
  assert report['num_boxes'] == expected.num_boxes > 6
  assert np.isclose(report['unreached_share'], expected.unreached_share)


def test_required_macros_get_placeholders_and_no_source_is_named():
  # The fine-tuning recipe requires INIT_CHECKPOINT and NUM_CLASSES; the check
  # needs neither.
  task = check_anchors.load_task(
      [os.path.join(REPO, 'experiments', 'finetune_spinenet49_custom.gin')],
      ['build_retinanet.filter_size_scale = 0.25',
       'build_retinanet.input_size = 128'])
  task.build_model()
  settings = check_anchors.settings_of(task)
  assert settings.input_size == (128, 128) and settings.match_threshold == 0.5
  with pytest.raises(app.UsageError, match='No data'):
    check_anchors.read_images(task)


def test_imports_beside_the_other_cli_modules_the_tests_import():
  # absl flags are process-wide: two CLI modules defining one flag name fail
  # at import when a test worker imports both (the fresh-clone failure).
  modules = ['check_anchors', 'create_coco_tfrecord', 'convert', 'demo_lib']
  proc = subprocess.run(
      [sys.executable, '-c',
       ';'.join(f'import spinenet.cli.{m}' for m in modules)],
      capture_output=True, text=True, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert proc.returncode == 0, proc.stderr[-2000:]
