"""A cheap stand-in for the proxy task: closeness to a target architecture.

Used to compare search algorithms in seconds (benchmarks/search_surrogate.py,
tests) where the proxy task takes minutes per architecture. The reward is in
[0, 1], 1 only for the target itself: per block, the mean of three scores
(level equal, block type equal, shared parents / 2), averaged over blocks.
"""
from typing import List, Sequence

from spinenet.modeling import block_specs as specs_lib


def closeness(block_specs: Sequence,
              target: Sequence = specs_lib.SPINENET_49) -> float:
  """Similarity of two block-spec lists of the same length, in [0, 1].

  Args:
    block_specs: `(level, block_fn, (parent_a, parent_b), is_output)` per
      block (or `BlockSpec`s).
    target: the architecture that scores 1. Defaults to SpineNet-49.

  Raises:
    ValueError: if the lengths differ.
  """
  specs = specs_lib.to_block_specs(block_specs)
  target = specs_lib.to_block_specs(target)
  if len(specs) != len(target):
    raise ValueError(f'block_specs has {len(specs)} blocks, the target '
                     f'{len(target)}; closeness compares blocks one to one.')
  total = 0.0
  for s, t in zip(specs, target):
    shared = len(set(s.parents) & set(t.parents)) / 2
    total += ((s.level == t.level) + (s.block_fn == t.block_fn) + shared) / 3
  return total / len(target)


def best_so_far(algorithm, num_samples: int) -> List[float]:
  """Runs `algorithm` on the closeness reward, one sample at a time.

  Args:
    algorithm: an `algorithms.SearchAlgorithm` (fresh: its seed fixes the run).
    num_samples: architectures to sample and reward.

  Returns:
    list of `num_samples` floats: the best reward after each sample.
  """
  best, curve = float('-inf'), []
  for _ in range(num_samples):
    arch = algorithm.ask()
    reward = closeness(algorithm.space.to_block_specs(arch))
    algorithm.tell(arch, reward)
    best = max(best, reward)
    curve.append(best)
  return curve
