"""Search space: SpineNet-49 is in it, samples are valid and build, sizes are exact."""
import itertools

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from spinenet.modeling import block_specs as specs_lib
from spinenet.modeling import spinenet as spinenet_lib
from spinenet.search import space as space_lib


def _as_tuples(specs):
  return tuple((l, f, tuple(p), o) for l, f, p, o in specs)


class SearchSpaceTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.space = space_lib.SearchSpace()

  def test_spinenet_49_is_in_the_space(self):
    arch = self.space.from_block_specs(specs_lib.SPINENET_49)
    self.assertEqual(self.space.to_block_specs(arch),
                     _as_tuples(specs_lib.SPINENET_49))
    self.assertCountEqual(arch.base_levels, space_lib.BASE_INTERMEDIATE_LEVELS)

  def test_base_blocks_are_r0_sp53(self):
    # Stem (2 x L2) + intermediate + outputs: ResNet-50's 3 L2 / 4 L3 / 6 L4
    # blocks, its L5 blocks spread over L5 (2) and L6, and one L7: 17 blocks.
    levels = [2, 2] + list(self.space.base_intermediate_levels) + list(
        self.space.output_levels)
    self.assertEqual({l: levels.count(l) for l in set(levels)},
                     {2: 3, 3: 4, 4: 6, 5: 2, 6: 1, 7: 1})
    self.assertEqual(3 * len(levels) + 2, 53)

  def test_samples_are_valid_and_follow_the_parent_rules(self):
    rng = np.random.default_rng(0)
    n = self.space.num_intermediate
    for _ in range(300):
      arch = self.space.sample(rng)
      specs = specs_lib.to_block_specs(self.space.to_block_specs(arch))
      specs_lib.validate(specs, 3, 7, valid_levels=range(1, 8))
      for i, s in enumerate(specs):
        built = 2 + i
        lowest = built - 5 if i < n else 0
        self.assertTrue(all(max(lowest, 0) <= p < built for p in s.parents), s)
        self.assertNotEqual(*s.parents)
      self.assertEqual(sorted(s.level for s in specs[n:]), [3, 4, 5, 6, 7])
      self.assertEqual(self.space.to_block_specs(
          self.space.from_block_specs(self.space.to_block_specs(arch))),
                       self.space.to_block_specs(arch))

  def test_samples_cover_every_shift_and_type(self):
    rng = np.random.default_rng(1)
    archs = [self.space.sample(rng) for _ in range(50)]
    self.assertEqual({s for a in archs for s in a.level_shifts}, {-1, 0, 1, 2})
    self.assertEqual({f for a in archs for f in a.block_fns},
                     {'bottleneck', 'residual'})

  @parameterized.named_parameters(
      ('parent_outside_window', lambda a: a.__class__(
          a.base_levels, a.level_shifts, a.output_levels, a.block_fns,
          a.parents[:9] + ((0, 1),) + a.parents[10:]), 'parents[9]'),
      ('unsorted_parents', lambda a: a.__class__(
          a.base_levels, a.level_shifts, a.output_levels, a.block_fns,
          ((1, 0),) + a.parents[1:]), 'parents[0]'),
      ('not_a_permutation', lambda a: a.__class__(
          (5,) + a.base_levels[1:], a.level_shifts, a.output_levels,
          a.block_fns, a.parents), 'base_levels'),
      ('bad_shift', lambda a: a.__class__(
          a.base_levels, (3,) + a.level_shifts[1:], a.output_levels,
          a.block_fns, a.parents), 'level_shifts[0]'),
      ('bad_type', lambda a: a.__class__(
          a.base_levels, a.level_shifts, a.output_levels,
          ('mbconv',) + a.block_fns[1:], a.parents), 'block_fns[0]'),
      ('repeated_output', lambda a: a.__class__(
          a.base_levels, a.level_shifts, (3, 3, 5, 6, 7), a.block_fns,
          a.parents), 'output_levels'),
  )
  def test_validate_names_the_bad_field(self, corrupt, field):
    arch = self.space.from_block_specs(specs_lib.SPINENET_49)
    with self.assertRaisesRegex(ValueError, field.replace('[', r'\[')):
      self.space.validate(corrupt(arch))

  def test_from_block_specs_rejects_what_is_outside(self):
    specs = list(_as_tuples(specs_lib.SPINENET_49))
    specs[4] = (7, 'residual', (3, 5), False)  # needs a +3 shift somewhere
    specs[7] = (7, 'residual', (6, 8), False)
    specs[1] = (7, 'residual', (0, 1), False)
    with self.assertRaisesRegex(ValueError, 'cannot be reached'):
      self.space.from_block_specs(specs)
    with self.assertRaisesRegex(ValueError, 'has 14 blocks'):
      self.space.from_block_specs(specs[:14])

  def test_level_sequences_match_brute_force(self):
    space = space_lib.SearchSpace(base_intermediate_levels=(2, 3, 3, 4, 5))
    seen = set()
    for order in set(itertools.permutations(space.base_intermediate_levels)):
      for shifts in itertools.product(space.level_shifts, repeat=len(order)):
        seen.add(tuple(b + s for b, s in zip(order, shifts)))
    self.assertEqual(space.num_level_sequences(), len(seen))

  def test_architecture_count_matches_enumeration(self):
    space = space_lib.SearchSpace(base_intermediate_levels=(2, 4),
                                  output_levels=(3, 4), block_fns=('bottleneck',),
                                  parent_window=2)
    distinct = set()
    for order in set(itertools.permutations(space.base_intermediate_levels)):
      for shifts in itertools.product(space.level_shifts, repeat=2):
        for outputs in itertools.permutations(space.output_levels):
          for parents in itertools.product(*[
              list(itertools.combinations(space.parent_candidates(i), 2))
              for i in range(space.num_blocks)]):
            arch = space_lib.Architecture(order, shifts, outputs,
                                          ('bottleneck',) * 4, parents)
            distinct.add(space.to_block_specs(arch))
    self.assertEqual(space.size()['architectures'], len(distinct))

  def test_size_of_the_paper_space(self):
    size = self.space.size()
    self.assertEqual(size['architectures'],
                     size['level_sequences'] * 120 * 2**15 * size['parents'])
    self.assertLess(size['architectures'], size['genotypes'])
    self.assertGreater(size['architectures'], 1e30)


class SampledSpecsBuildTest(tf.test.TestCase):

  def test_sampled_and_extreme_specs_build(self):
    space = space_lib.SearchSpace()
    rng = np.random.default_rng(7)
    archs = [space.sample(rng)]
    spine = space.from_block_specs(specs_lib.SPINENET_49)
    # Every intermediate block as low (L1) or as high (L7) as the space allows.
    for shift in (-1, 2):
      archs.append(space_lib.Architecture(
          spine.base_levels, (shift,) * 10, spine.output_levels,
          ('residual',) * 15, spine.parents))
    for arch in archs:
      model = spinenet_lib.build_spinenet(
          space.to_block_specs(arch), input_shape=(128, 128, 3),
          filter_size_scale=0.25, resample_alpha=0.25, endpoints_num_filters=8)
      outputs = model(tf.zeros([1, 128, 128, 3]))
      self.assertEqual({k: tuple(v.shape) for k, v in outputs.items()},
                       {str(l): (1, 128 // 2**l, 128 // 2**l, 8)
                        for l in range(3, 8)})


if __name__ == '__main__':
  tf.test.main()
