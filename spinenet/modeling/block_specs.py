"""Block specifications: the architecture of a scale-permuted network as data.

A block spec is `(level, block_fn, (parent_a, parent_b), is_output)`. Parents
index a running list whose first `num_stem_blocks` entries (2) are the stem's
blocks and whose entry `num_stem_blocks + k` is block `k`.

`merge_plan` derives from a spec list what the builder builds: every block's
level and width, and which unconsumed blocks each output block absorbs.
"""
import dataclasses
from typing import Dict, Sequence, Tuple

NUM_STEM_BLOCKS = 2
BLOCK_FNS = ('bottleneck', 'residual', 'mbconv')

# Width C of a block at each level, before `filter_size_scale`.
FILTERS = {1: 32, 2: 64, 3: 128, 4: 256, 5: 256, 6: 256, 7: 256}
MOBILE_FILTERS = {0: 8, 1: 16, 2: 24, 3: 40, 4: 80, 5: 112, 6: 112, 7: 112}
# Output width of a block in units of its C (a bottleneck outputs 4C).
BLOCK_EXPANSION = {'residual': 1, 'bottleneck': 4, 'mbconv': 1}


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


def check_blocks(specs: Sequence[BlockSpec],
                 num_stem_blocks: int = NUM_STEM_BLOCKS) -> None:
  """Raises `ValueError` naming the first block with an unknown type or parents.

  Parents must be two different blocks built before this one (levels and
  endpoints are `validate`'s part).
  """
  for i, s in enumerate(specs):
    if s.block_fn not in BLOCK_FNS:
      raise ValueError(f'block_specs[{i}]: unknown block_fn {s.block_fn!r}; '
                       f'expected one of {BLOCK_FNS}.')
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
  check_blocks(specs, num_stem_blocks)
  for i, s in enumerate(specs):
    if s.level not in valid_levels:
      raise ValueError(f'block_specs[{i}]: level {s.level} is out of range; '
                       f'levels must be in [{lo}, {hi}].')
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


def is_mobile(specs: Sequence[BlockSpec]) -> bool:
  """Whether `specs` describe Mobile SpineNet (all 'mbconv' blocks).

  Raises:
    ValueError: if 'mbconv' blocks are mixed with other block types.
  """
  fns = {s.block_fn for s in specs}
  if 'mbconv' in fns and len(fns) > 1:
    raise ValueError(f'block_specs mix mbconv with {sorted(fns - {"mbconv"})}; '
                     'Mobile SpineNet uses mbconv blocks only.')
  return 'mbconv' in fns


def level_widths(mobile: bool) -> Dict[int, int]:
  """Block width C per level, before `filter_size_scale`."""
  return MOBILE_FILTERS if mobile else FILTERS


@dataclasses.dataclass(frozen=True)
class PlannedBlock:
  """One entry of the running list of built blocks.

  Attributes:
    level: int. Feature level.
    block_fn: str. Block type.
    filters: int. Width C (`int(C_level * filter_size_scale)`).
  """
  level: int
  block_fn: str
  filters: int

  @property
  def out_filters(self) -> int:
    """Width of the block's output: C, or 4C for a bottleneck."""
    return self.filters * BLOCK_EXPANSION[self.block_fn]


@dataclasses.dataclass(frozen=True)
class MergePlan:
  """What a spec list builds, as data.

  Attributes:
    blocks: `PlannedBlock` per entry of the running list: the stem's blocks
      first, then one per spec (running index `num_stem_blocks + k` is
      block spec `k`).
    merged: `{spec index k: running indices}` for every output block: the
      blocks that no later block consumes, at the output's level and with its
      input width, that are added to its input. Each block is merged at most
      once.
    num_stem_blocks: int. Stem blocks at the front of `blocks`.
  """
  blocks: Tuple[PlannedBlock, ...]
  merged: Dict[int, Tuple[int, ...]]
  num_stem_blocks: int = NUM_STEM_BLOCKS

  @property
  def stem(self) -> Tuple[PlannedBlock, ...]:
    return self.blocks[:self.num_stem_blocks]

  def block(self, k: int) -> PlannedBlock:
    """The planned block of spec `k`."""
    return self.blocks[self.num_stem_blocks + k]


def merge_plan(block_specs: Sequence, filter_size_scale: float = 1.0) -> MergePlan:
  """Plans block widths and the merge of unconsumed blocks into outputs.

  The stem yields two blocks: at level 2 (bottleneck, width C_2) or, for
  Mobile SpineNet, at levels 1 and 2 (mbconv). Blocks are then taken in
  order; when an output block is reached, every earlier block that has no
  consumer yet, sits at the output's level and whose output width equals the
  output block's input width (its `out_filters`) joins that output's input.

  Widths at one level all scale alike (`int(C * filter_size_scale)`), so the
  merge itself does not depend on `filter_size_scale`; the planned widths do.

  Args:
    block_specs: tuples or `BlockSpec`s; block types and parents are checked
      (`check_blocks`), levels and endpoints are `validate`'s part.
    filter_size_scale: multiplies every block width C.

  Returns:
    A `MergePlan`.

  Raises:
    ValueError: for malformed specs or mbconv mixed with other block types.
  """
  specs = to_block_specs(block_specs)
  check_blocks(specs)
  mobile = is_mobile(specs)
  widths = level_widths(mobile)
  width = lambda level: int(widths[level] * filter_size_scale)  # noqa: E731
  if mobile:
    blocks = [PlannedBlock(level, 'mbconv', width(level)) for level in (1, 2)]
  else:
    blocks = [PlannedBlock(2, 'bottleneck', width(2))] * NUM_STEM_BLOCKS
  consumed = [False] * len(blocks)
  merged = {}
  for k, spec in enumerate(specs):
    block = PlannedBlock(spec.level, spec.block_fn, width(spec.level))
    for p in spec.parents:
      consumed[p] = True
    if spec.is_output:
      merged[k] = tuple(
          j for j, other in enumerate(blocks)
          if not consumed[j] and other.level == block.level
          and other.out_filters == block.out_filters)
      for j in merged[k]:
        consumed[j] = True
    blocks.append(block)
    consumed.append(False)
  return MergePlan(tuple(blocks), merged)
