"""The scale-permuted search space of SpineNet (paper, sections 3.1 and 5).

An architecture is 15 blocks after a fixed 2-block L2 stem, built in order:
10 intermediate blocks, then 5 output blocks (one per level L3..L7). It is
chosen by four kinds of decisions:

* Scale permutation: the order of the intermediate blocks (a permutation of
  the base levels `BASE_INTERMEDIATE_LEVELS`) and of the output blocks (a
  permutation of L3..L7).
* Cross-scale connections: two different parents per block. An intermediate
  block picks them among the last `parent_window` (5) blocks built (the stem
  included); an output block among all blocks built before it.
* Level adjustment: each intermediate block shifts its base level by one of
  {-1, 0, +1, +2}.
* Block type: each block is a bottleneck or a residual block.

The base blocks are R0-SP53's, the all-bottleneck scale-permuted ResNet-50 of
the paper: ResNet-50's per-level blocks (L2 3, L3 4, L4 6, L5 3) with one L5
block moved to L6 and an L7 block added, 17 blocks = 3 x 17 + 2 = 53 layers.
The first two L2 blocks are the stem; one block per level L3..L7 is an output
block; the other 10 (L2 1, L3 3, L4 5, L5 1) are the intermediate blocks.
SpineNet-49 is a point of this space (`from_block_specs(SPINENET_49)`).

`Architecture` is the genotype (what the search algorithms sample and
mutate); `to_block_specs` turns it into the block specs the model builder
reads. Every genotype that passes `validate` builds.
"""
import collections
import dataclasses
import itertools
import math
from typing import Dict, Sequence, Tuple

import numpy as np

from spinenet.modeling import block_specs as specs_lib

BASE_INTERMEDIATE_LEVELS = (2, 3, 3, 3, 4, 4, 4, 4, 4, 5)
OUTPUT_LEVELS = (3, 4, 5, 6, 7)
LEVEL_SHIFTS = (-1, 0, 1, 2)
BLOCK_FNS = ('bottleneck', 'residual')
PARENT_WINDOW = 5


@dataclasses.dataclass(frozen=True)
class Architecture:
  """One point of the search space (the genotype).

  Attributes:
    base_levels: int per intermediate block, in build order: the base level
      it was permuted from (a permutation of `BASE_INTERMEDIATE_LEVELS`).
    level_shifts: int per intermediate block, one of `LEVEL_SHIFTS`.
    output_levels: int per output block, in build order (a permutation of
      `OUTPUT_LEVELS`).
    block_fns: str per block (intermediate blocks first), one of
      `BLOCK_FNS`.
    parents: `(a, b)` with `a < b` per block: indices into the running list
      of built blocks (0 and 1 are the stem, 2 + k is block k).
  """
  base_levels: Tuple[int, ...]
  level_shifts: Tuple[int, ...]
  output_levels: Tuple[int, ...]
  block_fns: Tuple[str, ...]
  parents: Tuple[Tuple[int, int], ...]

  def to_dict(self) -> dict:
    """JSON-serializable form (lists); `from_dict` inverts it."""
    return {'base_levels': list(self.base_levels),
            'level_shifts': list(self.level_shifts),
            'output_levels': list(self.output_levels),
            'block_fns': list(self.block_fns),
            'parents': [list(p) for p in self.parents]}

  @classmethod
  def from_dict(cls, d: dict) -> 'Architecture':
    return cls(tuple(int(x) for x in d['base_levels']),
               tuple(int(x) for x in d['level_shifts']),
               tuple(int(x) for x in d['output_levels']),
               tuple(str(x) for x in d['block_fns']),
               tuple((int(a), int(b)) for a, b in d['parents']))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """The search space; defaults are the paper's.

  Attributes:
    base_intermediate_levels: base level of each intermediate block.
    output_levels: one output block per level, in [min_level, max_level].
    level_shifts: allowed level adjustments of intermediate blocks.
    block_fns: allowed block types.
    parent_window: an intermediate block's parents are among the last this
      many blocks built.
    num_stem_blocks: blocks of the fixed stem (level 2, bottleneck).
  """
  base_intermediate_levels: Tuple[int, ...] = BASE_INTERMEDIATE_LEVELS
  output_levels: Tuple[int, ...] = OUTPUT_LEVELS
  level_shifts: Tuple[int, ...] = LEVEL_SHIFTS
  block_fns: Tuple[str, ...] = BLOCK_FNS
  parent_window: int = PARENT_WINDOW
  num_stem_blocks: int = specs_lib.NUM_STEM_BLOCKS

  def __post_init__(self):
    if self.parent_window < 2:
      raise ValueError('`parent_window` must be >= 2 (a block has two parents). '
                       f'Received: parent_window={self.parent_window}')
    if sorted(self.output_levels) != list(range(min(self.output_levels),
                                                max(self.output_levels) + 1)):
      raise ValueError('`output_levels` must be consecutive levels, one each. '
                       f'Received: output_levels={self.output_levels}')
    lo, hi = self.level_range
    if lo < 1:
      raise ValueError(f'Intermediate levels go down to {lo}; the builder needs '
                       f'levels >= 1. Received: base_intermediate_levels='
                       f'{self.base_intermediate_levels}, level_shifts='
                       f'{self.level_shifts}')

  # === Shape of the space ===
  @property
  def num_intermediate(self) -> int:
    return len(self.base_intermediate_levels)

  @property
  def num_blocks(self) -> int:
    return self.num_intermediate + len(self.output_levels)

  @property
  def level_range(self) -> Tuple[int, int]:
    """Lowest and highest level a block can have."""
    lo = min(self.base_intermediate_levels) + min(self.level_shifts)
    hi = max(self.base_intermediate_levels) + max(self.level_shifts)
    return min(lo, min(self.output_levels)), max(hi, max(self.output_levels))

  @property
  def min_level(self) -> int:
    return min(self.output_levels)

  @property
  def max_level(self) -> int:
    return max(self.output_levels)

  def parent_candidates(self, block: int) -> range:
    """Running-list indices block `block` may take its parents from."""
    built = self.num_stem_blocks + block
    if block < self.num_intermediate:
      return range(max(0, built - self.parent_window), built)
    return range(0, built)

  # === Sampling ===
  def sample(self, rng: np.random.Generator) -> Architecture:
    """A uniformly random genotype (each decision uniform and independent)."""
    base = tuple(int(x) for x in rng.permutation(self.base_intermediate_levels))
    shifts = tuple(int(x) for x in rng.choice(self.level_shifts, self.num_intermediate))
    outputs = tuple(int(x) for x in rng.permutation(self.output_levels))
    fns = tuple(str(x) for x in rng.choice(self.block_fns, self.num_blocks))
    parents = tuple(self.sample_parents(i, rng) for i in range(self.num_blocks))
    return Architecture(base, shifts, outputs, fns, parents)

  def sample_parents(self, block: int, rng: np.random.Generator) -> Tuple[int, int]:
    """Two different parents of `block`, uniformly, as a sorted pair."""
    a, b = rng.choice(self.parent_candidates(block), 2, replace=False)
    return (int(min(a, b)), int(max(a, b)))

  # === Genotype <-> block specs ===
  def levels(self, arch: Architecture) -> Tuple[int, ...]:
    """Level of each block, in build order."""
    inter = tuple(b + s for b, s in zip(arch.base_levels, arch.level_shifts))
    return inter + tuple(arch.output_levels)

  def to_block_specs(self, arch: Architecture) -> Tuple[tuple, ...]:
    """`(level, block_fn, (parent_a, parent_b), is_output)` per block.

    Raises:
      ValueError: if `arch` is not in the space (see `validate`).
    """
    self.validate(arch)
    return tuple((level, fn, tuple(p), i >= self.num_intermediate)
                 for i, (level, fn, p) in enumerate(
                     zip(self.levels(arch), arch.block_fns, arch.parents)))

  def from_block_specs(self, block_specs: Sequence) -> Architecture:
    """The genotype of block specs that lie in the space.

    Base levels are matched to the intermediate levels in sorted order (the
    shifts all have the same width, so this finds a valid matching whenever
    one exists); equal final specs give equal genotypes.

    Raises:
      ValueError: naming the block that is outside the space.
    """
    specs = specs_lib.to_block_specs(block_specs)
    n = self.num_intermediate
    if len(specs) != self.num_blocks:
      raise ValueError(f'block_specs has {len(specs)} blocks; the search space '
                       f'has {self.num_blocks} ({n} intermediate, then '
                       f'{len(self.output_levels)} outputs).')
    for i, s in enumerate(specs):
      if s.is_output != (i >= n):
        raise ValueError(f'block_specs[{i}]: is_output={s.is_output}; the space '
                         f'builds {n} intermediate blocks, then the outputs.')
    levels = [s.level for s in specs[:n]]
    order = sorted(range(n), key=lambda i: levels[i])
    base = [0] * n
    for position, b in zip(order, sorted(self.base_intermediate_levels)):
      base[position] = b
      if levels[position] - b not in self.level_shifts:
        raise ValueError(
            f'block_specs[{position}]: intermediate levels {levels} cannot be '
            f'reached from base levels {self.base_intermediate_levels} with '
            f'shifts {self.level_shifts}.')
    arch = Architecture(
        tuple(base), tuple(l - b for l, b in zip(levels, base)),
        tuple(s.level for s in specs[n:]), tuple(s.block_fn for s in specs),
        tuple(tuple(sorted(s.parents)) for s in specs))
    self.validate(arch)
    return arch

  # === Validity ===
  def validate(self, arch: Architecture) -> None:
    """Raises `ValueError` naming the field and block outside the space."""
    n, total = self.num_intermediate, self.num_blocks
    lengths = {'base_levels': n, 'level_shifts': n,
               'output_levels': len(self.output_levels), 'block_fns': total,
               'parents': total}
    for name, expected in lengths.items():
      got = len(getattr(arch, name))
      if got != expected:
        raise ValueError(f'Architecture.{name} has {got} entries; expected '
                         f'{expected}.')
    if sorted(arch.base_levels) != sorted(self.base_intermediate_levels):
      raise ValueError(f'Architecture.base_levels {arch.base_levels} is not a '
                       f'permutation of {self.base_intermediate_levels}.')
    if sorted(arch.output_levels) != sorted(self.output_levels):
      raise ValueError(f'Architecture.output_levels {arch.output_levels} is not '
                       f'a permutation of {self.output_levels}.')
    for i, s in enumerate(arch.level_shifts):
      if s not in self.level_shifts:
        raise ValueError(f'Architecture.level_shifts[{i}] = {s}; expected one '
                         f'of {self.level_shifts}.')
    for i, fn in enumerate(arch.block_fns):
      if fn not in self.block_fns:
        raise ValueError(f'Architecture.block_fns[{i}] = {fn!r}; expected one '
                         f'of {self.block_fns}.')
    for i, (a, b) in enumerate(arch.parents):
      candidates = self.parent_candidates(i)
      if not (a < b and a in candidates and b in candidates):
        raise ValueError(
            f'Architecture.parents[{i}] = {(a, b)}; expected two increasing '
            f'indices in [{candidates.start}, {candidates.stop - 1}].')
    lo, hi = self.level_range
    specs = specs_lib.to_block_specs(
        [(level, fn, p, i >= n) for i, (level, fn, p) in enumerate(
            zip(self.levels(arch), arch.block_fns, arch.parents))])
    specs_lib.validate(specs, self.min_level, self.max_level,
                       valid_levels=range(lo, hi + 1),
                       num_stem_blocks=self.num_stem_blocks)

  # === Size ===
  def num_level_sequences(self) -> int:
    """Distinct intermediate level sequences reachable by permuting + shifting.

    A multiset of final levels is reachable iff sorted final levels minus
    sorted base levels are all allowed shifts (equal-width shift intervals
    make the sorted matching optimal); each reachable multiset contributes
    its number of orderings, n! / prod(count!).
    """
    lo, hi = self.level_range
    base = sorted(self.base_intermediate_levels)
    n = len(base)
    total = 0
    for finals in itertools.combinations_with_replacement(range(lo, hi + 1), n):
      if all(f - b in self.level_shifts for f, b in zip(finals, base)):
        orderings = math.factorial(n)
        for count in collections.Counter(finals).values():
          orderings //= math.factorial(count)
        total += orderings
    return total

  def size(self) -> Dict[str, int]:
    """Sizes of the space, exactly, by factor.

    Returns:
      dict with `level_sequences` (distinct intermediate level orders),
      `output_permutations` (m!), `block_types` (|types|^N), `parents`
      (prod over blocks of C(candidates, 2)), `architectures` (distinct
      block-spec lists: their product; every one is valid), `genotypes`
      (distinct decision sequences: distinct base orders x shifts x the
      rest; several genotypes can give one architecture) and `paper_formula`
      (section 3.1's count, (N-5)! 5! 4^(N-5) 2^N prod_{i=2}^{N+1} C(i, 2):
      equal-level blocks counted as distinct, and parents from any earlier
      block, without the window of 5).
    """
    n, total = self.num_intermediate, self.num_blocks
    parents = 1
    for i in range(total):
      parents *= math.comb(len(self.parent_candidates(i)), 2)
    types = len(self.block_fns) ** total
    outputs = math.factorial(len(self.output_levels))
    level_sequences = self.num_level_sequences()
    base_orders = math.factorial(n)
    for count in collections.Counter(self.base_intermediate_levels).values():
      base_orders //= math.factorial(count)
    shifts = len(self.level_shifts) ** n
    all_parents = 1  # the paper's count lets every block pick any earlier one
    for i in range(total):
      all_parents *= math.comb(self.num_stem_blocks + i, 2)
    paper = math.factorial(n) * outputs * shifts * types * all_parents
    return {
        'level_sequences': level_sequences,
        'output_permutations': outputs,
        'block_types': types,
        'parents': parents,
        'architectures': level_sequences * outputs * types * parents,
        'genotypes': base_orders * shifts * outputs * types * parents,
        'paper_formula': paper,
    }
