"""spinenet-describe end to end: JSON last line, plot, bad flags."""
import json
import os
import subprocess
import sys

from spinenet.modeling import profile
from spinenet.modeling import registry


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, '-m', 'spinenet.cli.describe', *args],
                        capture_output=True, text=True, env=env, timeout=600)


def test_json_and_plot(tmp_path):
  png = tmp_path / 'graph.png'
  proc = _run('--model', 'mobile-49XS', '--image_size', '128', '--json',
              '--plot', str(png))
  assert proc.returncode == 0, proc.stderr[-2000:]
  last = json.loads(proc.stdout.strip().splitlines()[-1])
  model = registry.build_retinanet('mobile-49XS', 91, 128)
  assert last['params'] == profile.count_params(model)['total']
  assert last['flops'] == profile.count_flops(lambda x: model(x, training=False),
                                              (1, 128, 128, 3))
  detail = last['params_detail']
  assert detail['backbone']['total'] + detail['head']['total'] == last['params']
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 10_000


def test_backbone_task_and_bad_model_flag():
  proc = _run('--model', 'mobile-49XS', '--image_size', '128', '--task', 'backbone',
              '--json')
  assert proc.returncode == 0, proc.stderr[-2000:]
  last = json.loads(proc.stdout.strip().splitlines()[-1])
  assert last['params'] == profile.count_params(
      registry.build_backbone('mobile-49XS', 128))['total']
  bad = _run('--model', '50')
  assert bad.returncode != 0
  assert "--model: Unknown model id '50'" in bad.stderr


def test_maskrcnn_task():
  proc = _run('--model', 'mobile-49XS', '--image_size', '128', '--task', 'maskrcnn',
              '--json')
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  last = json.loads(lines[-1])
  model = registry.build_maskrcnn('mobile-49XS', 91, 128)
  assert last['task'] == 'maskrcnn'
  assert last['params'] == profile.count_params(model)['total']
  detail = last['params_detail']
  assert sum(detail[p]['total'] for p in ('backbone', 'rpn_head', 'box_head',
                                          'mask_head')) == last['params']
  flops = last['flops_detail']
  assert flops['backbone'] + flops['rpn_head'] + flops['second_stage'] == last['flops']
  assert min(flops.values()) > 0
  assert any(line.startswith('second_stage') for line in lines)
