"""Spec validation: every invalid case names the offending block."""
import pytest

from spinenet.modeling import block_specs as bs
from spinenet.modeling import spinenet as sn

# A tiny valid network: outputs at levels 3..5.
TINY = (
    (3, 'bottleneck', (0, 1), False),
    (4, 'residual', (0, 2), False),
    (3, 'bottleneck', (2, 3), True),
    (4, 'bottleneck', (3, 4), True),
    (5, 'residual', (4, 5), True),
)


def _validate(specs, min_level=3, max_level=5):
  bs.validate(bs.to_block_specs(specs), min_level, max_level, valid_levels=range(1, 8))


def test_tiny_spec_is_valid():
  _validate(TINY)


def test_paper_specs_are_valid():
  _validate(bs.SPINENET_49, 3, 7)
  _validate(bs.MOBILE_SPINENET_49, 3, 7)


@pytest.mark.parametrize('specs, message', [
    (TINY[:1] + ((4, 'residual', (0, 3), False),) + TINY[2:],
     r'block_specs\[1\]: parent 3 is not built yet'),
    (TINY[:1] + ((9, 'residual', (0, 2), False),) + TINY[2:],
     r'block_specs\[1\]: level 9 is out of range'),
    (TINY[:4] + ((4, 'residual', (4, 5), True),),
     r'block_specs\[4\]: a second output block at level 4'),
    (TINY[:4], r'No output block for endpoint level\(s\) \[5\]'),
    (TINY[:1] + ((4, 'conv', (0, 2), False),) + TINY[2:],
     r"block_specs\[1\]: unknown block_fn 'conv'"),
    (TINY[:1] + ((4, 'residual', (2, 2), False),) + TINY[2:],
     r'block_specs\[1\]: both parents are 2'),
    (TINY[:1] + ((4, 'residual', (-1, 2), False),) + TINY[2:],
     r'block_specs\[1\]: parent -1 is not built yet'),
])
def test_invalid_specs_name_the_block(specs, message):
  with pytest.raises(ValueError, match=message):
    _validate(specs)


def test_malformed_tuple_is_named():
  with pytest.raises(ValueError, match=r'block_specs\[0\]: expected \(level'):
    bs.to_block_specs([(3, 'bottleneck', (0,), False)])


def test_builder_validates_before_building():
  with pytest.raises(ValueError, match=r'No output block for endpoint level\(s\) \[6, 7\]'):
    sn.build_spinenet(TINY, input_shape=(64, 64, 3))
  with pytest.raises(ValueError, match=r'input_shape must be \(height, width, 3\)'):
    sn.build_spinenet(TINY, input_shape=(64, 64), max_level=5)
  with pytest.raises(ValueError, match=r'input_shape .* got \(0, 64, 3\)'):
    sn.build_spinenet(TINY, input_shape=(0, 64, 3), max_level=5)
  with pytest.raises(ValueError, match='mix mbconv'):
    sn.build_spinenet(((3, 'mbconv', (0, 1), True),) + TINY[1:], max_level=5)


def _merged(specs, filter_size_scale=1.0):
  return {k: list(v) for k, v in bs.merge_plan(specs, filter_size_scale).merged.items()}


def test_merge_rule_absorbs_only_unconsumed_same_level_same_width_blocks():
  # Block 0 (L3 bottleneck, index 2) is consumed by block 1; block 1 (L4
  # residual, index 3) is never consumed: it is merged into the L4 output only
  # if widths agree. A residual L4 block has width C, a bottleneck input 4C.
  specs = (
      (3, 'bottleneck', (0, 1), False),   # index 2
      (4, 'residual', (0, 2), False),     # index 3, never a parent
      (3, 'bottleneck', (1, 2), True),    # index 4: P3
      (4, 'residual', (2, 4), True),      # index 5: P4, same width as index 3
      (5, 'bottleneck', (4, 5), True),    # index 6: P5
  )
  assert _merged(specs) == {2: [], 3: [3], 4: []}
  # The same block is not merged into a bottleneck output (4C != C).
  specs_b = specs[:3] + ((4, 'bottleneck', (2, 4), True),) + specs[4:]
  assert _merged(specs_b) == {2: [], 3: [], 4: []}


def test_a_block_is_merged_once_and_only_into_a_later_output():
  specs = (
      (4, 'residual', (0, 1), False),     # index 2, never a parent
      (3, 'bottleneck', (0, 1), True),    # index 3: P3
      (4, 'residual', (1, 3), True),      # index 4: P4 absorbs index 2
      (5, 'residual', (3, 4), True),      # index 5: P5
  )
  assert _merged(specs) == {1: [], 2: [2], 3: []}
  # Index 2 is already merged into P4 when P4' below is reached: not twice.
  specs_twice = specs[:3] + ((4, 'residual', (3, 4), True),)
  assert _merged(specs_twice) == {1: [], 2: [2], 3: []}


def test_spinenet49_merges_block_9_into_p5():
  # The paper's SpineNet-49: block 9 (running index 11) has no consumer and
  # joins the P5 output (block 12); nothing else is merged.
  plan = bs.merge_plan(bs.SPINENET_49)
  assert {k: v for k, v in plan.merged.items() if v} == {12: (11,)}
  assert plan.block(9).level == plan.block(12).level == 5


@pytest.mark.parametrize('specs', [bs.SPINENET_49, bs.MOBILE_SPINENET_49])
def test_filter_size_scale_changes_widths_but_not_the_merge(specs):
  # Every block at one level is scaled alike, so which blocks merge is the
  # same at any scale; the planned widths are `int(C * scale)`.
  full, scaled = bs.merge_plan(specs), bs.merge_plan(specs, 0.65)
  assert scaled.merged == full.merged
  assert [b.filters for b in scaled.blocks] == [int(b.filters * 0.65) for b in full.blocks]
  assert [b.level for b in scaled.blocks] == [b.level for b in full.blocks]


def test_plan_widths_and_stem():
  plan = bs.merge_plan(bs.SPINENET_49, 1.3)
  assert [(b.level, b.block_fn, b.filters) for b in plan.stem] == [(2, 'bottleneck', 83)] * 2
  assert plan.block(0).out_filters == 4 * 83
  assert plan.block(1).out_filters == int(256 * 1.3)  # residual: C
  mobile = bs.merge_plan(bs.MOBILE_SPINENET_49)
  assert [(b.level, b.filters) for b in mobile.stem] == [(1, 16), (2, 24)]
  with pytest.raises(ValueError, match='mix mbconv'):
    bs.merge_plan(((3, 'mbconv', (0, 1), True), (4, 'residual', (0, 2), True)))
