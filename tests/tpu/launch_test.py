"""tpu/launch.py --dry_run prints the gcloud commands and runs nothing."""
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = os.path.join(REPO_ROOT, 'tpu', 'launch.py')


def _run(*args):
  return subprocess.run([sys.executable, LAUNCH, *args], capture_output=True,
                        text=True, timeout=60, env=dict(os.environ, PATH='/nonexistent'))


def test_dry_run_prints_commands_with_passthrough_flags():
  proc = _run('--name=sn49', '--zone=us-central2-b', '--accelerator_type=v4-32',
              '--model_dir=gs://b/runs/sn49', '--preemptible', '--dry_run', '--',
              '--gin_file=experiments/coco_spinenet49_tpu.gin', '--mode=train_and_eval',
              "--gin_param=TRAIN_FILE_PATTERN = 'gs://b/coco/train-*'")
  assert proc.returncode == 0, proc.stderr  # gcloud is not on PATH: nothing ran
  out = proc.stdout
  assert ('gcloud compute tpus tpu-vm create sn49 --zone us-central2-b '
          '--accelerator-type v4-32 --version tpu-ubuntu2204-base --spot') in out
  assert 'gcloud compute tpus tpu-vm ssh sn49' in out
  assert '--worker=all' in out
  assert 'spinenet-train --flagfile=' in out
  for flag in ('--tpu=local', '--model_dir=gs://b/runs/sn49', '--mode=train_and_eval',
               "--gin_param=TRAIN_FILE_PATTERN = 'gs://b/coco/train-*'"):
    assert f'#   {flag}\n' in out


def test_bad_arguments():
  proc = _run('--name=x', '--zone=z', '--model_dir=/local/dir', '--dry_run')
  assert proc.returncode != 0 and 'gs://' in proc.stderr
  proc = _run('--name=x', '--zone=z', '--model_dir=gs://b/m', '--dry_run', '--', '--tpu=other')
  assert proc.returncode != 0 and 'set by the launcher' in proc.stderr
