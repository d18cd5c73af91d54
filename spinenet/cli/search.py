r"""spinenet-search: the scale-permuted architecture search on a proxy task.

  spinenet-search --gin_file=configs/search/proxy_builtin.gin \
    --search_dir=/tmp/search --num_trials=20 --num_workers=1

Each trial trains a sampled architecture briefly (the gin file's task, model
widths and recipe) and is rewarded with its COCO AP on the held-out split.
The search directory records every trial (trials.jsonl) and the search state;
running the same command again resumes an interrupted search without losing
or repeating trials (a larger --num_trials extends a finished one). The best
architecture so far is DIR/best.gin, which `spinenet-train --gin_file=
DIR/best.gin --model_dir=...` trains as is, and its block graph DIR/best.png.
See docs/search.md.
"""
from absl import app
from absl import flags

from spinenet import config

_GIN_FILE = flags.DEFINE_multi_string(
    'gin_file', [], 'Gin file(s) of the proxy task and search, applied in order.')
_GIN_PARAM = flags.DEFINE_multi_string(
    'gin_param', [], 'Gin binding(s) applied after the files, e.g. '
    "\"SearchOptions.algorithm = 'evolution'\" (repeatable).")
_SEARCH_DIR = flags.DEFINE_string(
    'search_dir', None, 'Directory of the search (trials, state, best.gin).')
_NUM_TRIALS = flags.DEFINE_integer(
    'num_trials', 20, 'Total trials of the search directory.')
_NUM_WORKERS = flags.DEFINE_integer(
    'num_workers', 1, 'Worker processes training trials in parallel.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not _GIN_FILE.value:
    raise app.UsageError('--gin_file is required, e.g. '
                         '--gin_file=configs/search/proxy_builtin.gin')
  if not _SEARCH_DIR.value:
    raise app.UsageError('--search_dir is required (a local directory).')
  try:
    result = config.search_from_config(
        _GIN_FILE.value, _GIN_PARAM.value, search_dir=_SEARCH_DIR.value,
        num_trials=_NUM_TRIALS.value, num_workers=_NUM_WORKERS.value)
  except config.ConfigError as e:
    raise app.UsageError(str(e)) from None
  best = result['best']
  print(f"{len(result['trials'])} trials in {_SEARCH_DIR.value} "
        f"({result['num_new']} new)")
  if best is not None:
    print(f"best: trial {best['trial']}, reward {best['reward']:.4f}; "
          f'{_SEARCH_DIR.value}/best.gin, {_SEARCH_DIR.value}/best.png')


def run():
  app.run(main)


if __name__ == '__main__':
  run()
