"""surrogate: the closeness reward on hand-scored architectures, and best_so_far."""
import types

from absl.testing import absltest

from spinenet.modeling import block_specs as specs_lib
from spinenet.search import surrogate

TARGET = [(3, 'bottleneck', (0, 1), False), (4, 'residual', (0, 2), True)]


class _ReplayAlgorithm:
  """Asks the given architectures in order and records what it is told."""

  def __init__(self, archs):
    self._archs = list(archs)
    self.told = []
    self.space = types.SimpleNamespace(to_block_specs=lambda arch: arch)

  def ask(self):
    return self._archs.pop(0)

  def tell(self, arch, reward):
    self.told.append((arch, reward))


class ClosenessTest(absltest.TestCase):

  def test_the_target_scores_one(self):
    self.assertEqual(surrogate.closeness(TARGET, TARGET), 1.0)

  def test_mean_of_level_type_and_shared_parents(self):
    specs = [(3, 'residual', (1, 0), False),   # level, both parents: (1 + 0 + 1) / 3
             (5, 'residual', (0, 3), True)]    # type, one parent: (0 + 1 + 0.5) / 3
    self.assertAlmostEqual(surrogate.closeness(specs, TARGET), (2 / 3 + 1.5 / 3) / 2)

  def test_outputs_do_not_count_and_nothing_in_common_scores_zero(self):
    flipped = [(l, b, p, not o) for l, b, p, o in TARGET]
    self.assertEqual(surrogate.closeness(flipped, TARGET), 1.0)
    other = [(5, 'residual', (2, 3), False), (6, 'bottleneck', (1, 3), True)]
    self.assertEqual(surrogate.closeness(other, TARGET), 0.0)

  def test_lengths_must_agree_and_specs_be_well_formed(self):
    with self.assertRaisesRegex(ValueError, 'block_specs has 1 blocks, the target 2'):
      surrogate.closeness(TARGET[:1], TARGET)
    with self.assertRaisesRegex(ValueError, r'block_specs\[1\]'):
      surrogate.closeness([TARGET[0], (4, 'residual', (0,), True)], TARGET)


class BestSoFarTest(absltest.TestCase):

  def test_running_best_of_the_rewards_told(self):
    exact = list(specs_lib.SPINENET_49)
    one_off = [list(s) for s in exact]
    one_off[0][0] += 1   # one level wrong: 1/3 of one block of 15
    two_off = [list(s) for s in one_off]
    two_off[3][1] = 'residual' if exact[3][1] == 'bottleneck' else 'bottleneck'
    algorithm = _ReplayAlgorithm([one_off, exact, two_off])
    curve = surrogate.best_so_far(algorithm, 3)
    rewards = [1 - 1 / 45, 1.0, 1 - 2 / 45]
    self.assertSequenceAlmostEqual([r for _, r in algorithm.told], rewards)
    self.assertSequenceAlmostEqual(curve, [1 - 1 / 45, 1.0, 1.0])
    self.assertIs(algorithm.told[1][0], exact)


if __name__ == '__main__':
  absltest.main()
