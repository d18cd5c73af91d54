r"""Search algorithms compared on a cheap surrogate reward, several seeds.

  python -m benchmarks.search_surrogate --num_samples=200 --seeds=5

The reward is `spinenet.search.surrogate.closeness` to SpineNet-49's block
specs (1.0 = SpineNet-49), so a run takes seconds instead of the proxy task's
minutes per architecture. Prints the best reward after N samples for every
algorithm and seed, the means (also after fewer samples), and the margin of
REINFORCE and evolution over random search; the last line is one JSON object
(with `env`: the machine, CPU flags and versions; the rewards do not depend on
it, the seconds per run do).
"""
import json
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import _machine
from spinenet.search import algorithms
from spinenet.search import space as space_lib
from spinenet.search import surrogate

_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 200, 'Samples per run.')
_SEEDS = flags.DEFINE_integer('seeds', 5, 'Runs per algorithm (seeds 0..n-1).')
_ALGORITHMS = flags.DEFINE_list('algorithms', list(algorithms.ALGORITHMS),
                                'Algorithms to compare.')


def compare(names, num_samples, seeds):
  """`{name: {'curves': [seeds, num_samples] array, 'seconds': float}}`."""
  space = space_lib.SearchSpace()
  out = {}
  for name in names:
    start = time.monotonic()
    curves = [surrogate.best_so_far(
        algorithms.make_algorithm(name, space, seed=seed), num_samples)
              for seed in range(seeds)]
    out[name] = {'curves': np.array(curves),
                 'seconds': time.monotonic() - start}
  return out


def main(argv):
  del argv
  n, seeds = _NUM_SAMPLES.value, _SEEDS.value
  results = compare(_ALGORITHMS.value, n, seeds)
  marks = [m for m in (25, 50, 100, n) if m <= n]
  print(f'best closeness to SpineNet-49 after {n} samples, seeds 0..{seeds - 1}')
  print(f"{'algorithm':<11}{'per seed':<{7 * seeds + 2}}" +
        ''.join(f'{"mean@" + str(m):>10}' for m in marks) + f'{"s/run":>8}')
  summary = {}
  for name, r in results.items():
    final = r['curves'][:, -1]
    means = {m: float(r['curves'][:, m - 1].mean()) for m in marks}
    print(f'{name:<11}' + ' '.join(f'{v:.3f}' for v in final).ljust(7 * seeds + 2)
          + ''.join(f'{means[m]:>10.3f}' for m in marks)
          + f"{r['seconds'] / seeds:>8.1f}")
    summary[name] = {'best_per_seed': [round(float(v), 4) for v in final],
                     'mean_best': round(means[n], 4),
                     'mean_best_at': {str(m): round(v, 4) for m, v in means.items()}}
  if 'random' in summary:
    for name in summary:
      if name != 'random':
        margin = summary[name]['mean_best'] - summary['random']['mean_best']
        summary[name]['margin_over_random'] = round(margin, 4)
        print(f'{name} - random: {margin:+.3f} (mean best after {n} samples)')
  print(json.dumps({'benchmark': 'search_surrogate', 'num_samples': n,
                    'seeds': seeds, 'results': summary, 'env': _machine.env_summary()},
                   sort_keys=True))


if __name__ == '__main__':
  app.run(main)
