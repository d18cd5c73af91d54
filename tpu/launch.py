r"""Creates a Cloud TPU VM and runs `spinenet-train` on it.

  python tpu/launch.py --name=spinenet-49 --zone=us-central2-b \
    --accelerator_type=v4-32 --version=tpu-ubuntu2204-base \
    --model_dir=gs://my-bucket/runs/spinenet49 -- \
    --gin_file=experiments/coco_spinenet49_tpu.gin --mode=train_and_eval \
    --gin_param="TRAIN_FILE_PATTERN = 'gs://my-bucket/coco/train-*'" \
    --gin_param="EVAL_FILE_PATTERN = 'gs://my-bucket/coco/val-*'"

Everything after `--` goes to `spinenet-train` unchanged (through a flag
file copied to each worker); `--tpu=local` and `--model_dir` are added. Steps (each a `gcloud` command; `--dry_run` prints
them instead):

1. `gcloud compute tpus tpu-vm create` (skipped with `--skip_create`),
2. copy the repository's committed files (`git archive HEAD`) and the flag
   file to every TPU VM worker,
3. install it there (`pip install -e .` plus the TPU build of TensorFlow),
4. start `spinenet-train` on all workers in a detached `tmux` session, with
   output in `~/spinenet-train.log` on each worker.

Re-running with `--skip_create` restarts training; it resumes from the
latest checkpoint in `--model_dir`. Requires the Google Cloud SDK and a
project with TPU quota (`gcloud config set project ...`).
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv):
  """Splits `argv` at `--` into launcher options and `spinenet-train` flags."""
  if '--' in argv:
    split = argv.index('--')
    own, train_flags = argv[:split], argv[split + 1:]
  else:
    own, train_flags = argv, []
  parser = argparse.ArgumentParser(
      prog='tpu/launch.py', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--name', required=True, help='TPU VM name.')
  parser.add_argument('--zone', required=True, help='e.g. us-central2-b.')
  parser.add_argument('--accelerator_type', default='v4-8',
                      help='e.g. v4-8, v4-32, v5litepod-16.')
  parser.add_argument('--version', default='tpu-ubuntu2204-base',
                      help='TPU VM software version (runtime image).')
  parser.add_argument('--project', default=None, help='GCP project.')
  parser.add_argument('--model_dir', required=True,
                      help='gs:// directory for checkpoints and summaries.')
  parser.add_argument('--preemptible', action='store_true',
                      help='Create a preemptible (spot) TPU VM.')
  parser.add_argument('--skip_create', action='store_true',
                      help='Use an existing TPU VM.')
  parser.add_argument('--tf_tpu_package', default='tensorflow-tpu~=2.20.0',
                      help='pip requirement of the TPU build of TensorFlow.')
  parser.add_argument('--dry_run', action='store_true',
                      help='Print the commands instead of running them.')
  args = parser.parse_args(own)
  if not args.model_dir.startswith('gs://'):
    parser.error(f'--model_dir must be a gs:// path (TPU workers write there). '
                 f'Received: {args.model_dir!r}')
  for flag in train_flags:
    if flag.startswith(('--tpu=', '--model_dir=')) or flag in ('--tpu', '--model_dir'):
      parser.error(f'{flag.split("=")[0]} is set by the launcher; remove it '
                   'after `--`.')
  return args, train_flags


def flagfile_text(args, train_flags):
  """The `spinenet-train` flags, one per line (absl `--flagfile` format)."""
  return '\n'.join(['--tpu=local', f'--model_dir={args.model_dir}',
                    *train_flags]) + '\n'


def build_commands(args, flagfile, archive):
  """The commands (git archive, then gcloud), as argument lists, in order.

  Args:
    args: parsed launcher options.
    flagfile: local path of the `spinenet-train` flag file (copied to each
      worker, so no flag is quoted through ssh).
    archive: local path for the tarball of the repository's committed files.
  """
  scope = ['--zone', args.zone] + (['--project', args.project] if args.project else [])
  tpu_vm = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  commands = [['git', '-C', REPO_ROOT, 'archive', '--format=tar.gz', '-o', archive,
               'HEAD']]
  if not args.skip_create:
    create = tpu_vm + ['create', args.name, *scope,
                       '--accelerator-type', args.accelerator_type,
                       '--version', args.version]
    if args.preemptible:
      create.append('--spot')
    commands.append(create)
  for local, remote in ((archive, '~/spinenet.tar.gz'),
                        (flagfile, '~/spinenet_train.flags')):
    commands.append(tpu_vm + ['scp', local, f'{args.name}:{remote}', *scope,
                              '--worker=all'])
  install = ('rm -rf ~/spinenet && mkdir ~/spinenet && '
             'tar xzf ~/spinenet.tar.gz -C ~/spinenet && '
             'cd ~/spinenet && python3 -m pip install -q --upgrade pip && '
             f'python3 -m pip install -q -e . {shlex.quote(args.tf_tpu_package)} '
             '-f https://storage.googleapis.com/libtpu-releases/index.html')
  commands.append(tpu_vm + ['ssh', args.name, *scope, '--worker=all',
                            '--command', install])
  run = ('cd ~/spinenet && tmux new-session -d -s spinenet "TF_USE_LEGACY_KERAS=1 '
         '~/.local/bin/spinenet-train --flagfile=$HOME/spinenet_train.flags '
         '2>&1 | tee ~/spinenet-train.log"')
  commands.append(tpu_vm + ['ssh', args.name, *scope, '--worker=all',
                            '--command', run])
  return commands


def main(argv=None):
  args, train_flags = parse_args(sys.argv[1:] if argv is None else argv)
  text = flagfile_text(args, train_flags)
  workdir = tempfile.mkdtemp(prefix='spinenet_launch_')
  flagfile = os.path.join(workdir, 'spinenet_train.flags')
  with open(flagfile, 'w') as f:
    f.write(text)
  try:
    commands = build_commands(args, flagfile, os.path.join(workdir, 'spinenet.tar.gz'))
    print(f'# {flagfile} (spinenet-train flags):', flush=True)
    for line in text.splitlines():
      print(f'#   {line}')
    for command in commands:
      print(shlex.join(command), flush=True)
      if not args.dry_run:
        subprocess.run(command, check=True)
  finally:
    shutil.rmtree(workdir)
  if not args.dry_run:
    print(f'training started on {args.name}; logs: gcloud compute tpus tpu-vm '
          f'ssh {args.name} --zone {args.zone} --worker=0 --command '
          '"tail -f ~/spinenet-train.log"; TensorBoard: '
          f'tensorboard --logdir {args.model_dir}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
