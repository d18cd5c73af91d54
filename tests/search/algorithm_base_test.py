"""SearchAlgorithm: ask/tell counting, state round trip, wrong-state refusal."""
from absl.testing import absltest
import numpy as np

from spinenet.search import algorithm_base
from spinenet.search import space as space_lib


class _Recorder(algorithm_base.SearchAlgorithm):
  """Samples from the space and keeps the rewards it is told."""

  name = 'recorder'

  def __init__(self, space, seed=0):
    super().__init__(space, seed)
    self.told = []

  def _ask(self):
    return self.space.sample(self.rng)

  def _tell(self, arch, reward):
    self.told.append((arch, reward))


class _Other(_Recorder):
  name = 'other'


class SearchAlgorithmTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.space = space_lib.SearchSpace()

  def test_counts_asks_and_tells_and_passes_float_rewards(self):
    algorithm = _Recorder(self.space, seed=0)
    first, second = algorithm.ask(), algorithm.ask()
    algorithm.tell(first, np.float32(0.25))
    self.assertEqual((algorithm.num_asked, algorithm.num_told), (2, 1))
    self.assertEqual(algorithm.told, [(first, 0.25)])
    self.assertIs(type(algorithm.told[0][1]), float)
    self.space.validate(second)

  def test_state_round_trip_continues_the_same_draws(self):
    algorithm = _Recorder(self.space, seed=3)
    algorithm.tell(algorithm.ask(), 1.0)
    state = algorithm.get_state()
    expected = [algorithm.ask() for _ in range(3)]
    resumed = _Recorder(self.space, seed=99)
    resumed.set_state(state)
    self.assertEqual((resumed.num_asked, resumed.num_told), (1, 1))
    self.assertEqual([resumed.ask() for _ in range(3)], expected)
    self.assertEqual(state['arrays'], {})

  def test_refuses_the_state_of_another_algorithm(self):
    state = _Recorder(self.space).get_state()
    with self.assertRaisesRegex(ValueError, "'recorder', not 'other'"):
      _Other(self.space).set_state(state)


if __name__ == '__main__':
  absltest.main()
