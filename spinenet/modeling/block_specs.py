"""Block specifications: the architecture of a scale-permuted network as data.

A block spec is `(level, block_fn, (parent_a, parent_b), is_output)`. Parents
index a running list whose first `num_stem_blocks` entries (2) are the stem's
blocks and whose entry `num_stem_blocks + k` is block `k`.
"""
import dataclasses
from typing import Sequence, Tuple

NUM_STEM_BLOCKS = 2
BLOCK_FNS = ('bottleneck', 'residual', 'mbconv')


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """One block of a scale-permuted network.

  Attributes:
    level: int. Feature level; the block runs at stride `2**level`.
    block_fn: str. 'bottleneck', 'residual' or 'mbconv'.
    parents: (int, int). Indices into the running list of built blocks.
    is_output: bool. Whether the block is an output (P-level) block.
  """
  level: int
  block_fn: str
  parents: Tuple[int, int]
  is_output: bool

  def as_tuple(self):
    return (self.level, self.block_fn, tuple(self.parents), self.is_output)


# SpineNet-49 (paper, Figure 4 and appendix; 15 blocks after the stem).
SPINENET_49 = (
    (2, 'bottleneck', (0, 1), False),
    (4, 'residual', (0, 1), False),
    (3, 'bottleneck', (2, 3), False),
    (4, 'bottleneck', (2, 4), False),
    (6, 'residual', (3, 5), False),
    (4, 'bottleneck', (3, 5), False),
    (5, 'residual', (6, 7), False),
    (7, 'residual', (6, 8), False),
    (5, 'bottleneck', (8, 9), False),
    (5, 'bottleneck', (8, 10), False),
    (4, 'bottleneck', (5, 10), True),
    (3, 'bottleneck', (4, 10), True),
    (5, 'bottleneck', (7, 12), True),
    (7, 'bottleneck', (5, 14), True),
    (6, 'bottleneck', (12, 14), True),
)

# Mobile SpineNet: the same permutation with MBConv blocks. Its stem yields an
# L1 and an L2 block, so there is one more L2 block at the front and every
# parent index shifts by one.
MOBILE_SPINENET_49 = (
    (2, 'mbconv', (0, 1), False),
    (2, 'mbconv', (1, 2), False),
    (4, 'mbconv', (1, 2), False),
    (3, 'mbconv', (3, 4), False),
    (4, 'mbconv', (3, 5), False),
    (6, 'mbconv', (4, 6), False),
    (4, 'mbconv', (4, 6), False),
    (5, 'mbconv', (7, 8), False),
    (7, 'mbconv', (7, 9), False),
    (5, 'mbconv', (9, 10), False),
    (5, 'mbconv', (9, 11), False),
    (4, 'mbconv', (6, 11), True),
    (3, 'mbconv', (5, 11), True),
    (5, 'mbconv', (8, 13), True),
    (7, 'mbconv', (6, 15), True),
    (6, 'mbconv', (13, 15), True),
)


def to_block_specs(specs: Sequence) -> Tuple[BlockSpec, ...]:
  """Converts tuples (or `BlockSpec`s) to a tuple of `BlockSpec`."""
  out = []
  for i, s in enumerate(specs):
    if isinstance(s, BlockSpec):
      out.append(s)
      continue
    try:
      level, block_fn, parents, is_output = s
      parents = tuple(int(p) for p in parents)
      if len(parents) != 2:
        raise ValueError
    except (TypeError, ValueError):
      raise ValueError(
          f'block_specs[{i}]: expected (level, block_fn, (parent_a, parent_b), '
          f'is_output). Received: {s!r}') from None
    out.append(BlockSpec(int(level), str(block_fn), parents, bool(is_output)))
  return tuple(out)


def validate(specs: Sequence[BlockSpec], min_level: int, max_level: int,
             valid_levels: Sequence[int],
             num_stem_blocks: int = NUM_STEM_BLOCKS) -> None:
  """Raises `ValueError` naming the first offending block.

  Checks: a known block type; a level in `valid_levels`; two distinct parents
  that are already built; at most one output block per level; an output block
  for every endpoint level in `[min_level, max_level]`.
  """
  if not specs:
    raise ValueError('block_specs is empty; a network needs at least one block.')
  if min_level > max_level:
    raise ValueError(f'`min_level` must be <= `max_level`. Received: '
                     f'min_level={min_level}, max_level={max_level}')
  outputs = {}
  lo, hi = min(valid_levels), max(valid_levels)
  for i, s in enumerate(specs):
    if s.block_fn not in BLOCK_FNS:
      raise ValueError(f'block_specs[{i}]: unknown block_fn {s.block_fn!r}; '
                       f'expected one of {BLOCK_FNS}.')
    if s.level not in valid_levels:
      raise ValueError(f'block_specs[{i}]: level {s.level} is out of range; '
                       f'levels must be in [{lo}, {hi}].')
    built = num_stem_blocks + i
    for p in s.parents:
      if p < 0 or p >= built:
        raise ValueError(
            f'block_specs[{i}]: parent {p} is not built yet; parents must be in '
            f'[0, {built - 1}] (0..{num_stem_blocks - 1} are the stem, '
            f'{num_stem_blocks} + k is block k).')
    if s.parents[0] == s.parents[1]:
      raise ValueError(f'block_specs[{i}]: both parents are {s.parents[0]}; a '
                       'block merges two different parents.')
    if s.is_output:
      if s.level in outputs:
        raise ValueError(
            f'block_specs[{i}]: a second output block at level {s.level} '
            f'(block_specs[{outputs[s.level]}] is already the output of that '
            'level).')
      outputs[s.level] = i
  missing = [l for l in range(min_level, max_level + 1) if l not in outputs]
  if missing:
    raise ValueError(
        f'No output block for endpoint level(s) {missing}: min_level='
        f'{min_level}, max_level={max_level} need one output block per level; '
        f'output levels present: {sorted(outputs)}.')
