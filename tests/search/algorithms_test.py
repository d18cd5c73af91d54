"""Search algorithms: mutation, evolution, determinism, state, and who wins."""
from absl.testing import parameterized
import numpy as np

from spinenet.modeling import block_specs as specs_lib
from spinenet.search import algorithms
from spinenet.search import space as space_lib
from spinenet.search import surrogate


class SurrogateTest(parameterized.TestCase):

  def test_closeness(self):
    self.assertEqual(surrogate.closeness(specs_lib.SPINENET_49), 1.0)
    specs = [list(s) for s in specs_lib.SPINENET_49]
    specs[0][0] = 3  # one level wrong: loses 1/3 of one block of 15
    self.assertAlmostEqual(surrogate.closeness(specs), 1 - 1 / 45)
    specs[14][2] = (0, 1)  # and no parent in common in the last block
    self.assertAlmostEqual(surrogate.closeness(specs), 1 - 2 / 45)
    with self.assertRaisesRegex(ValueError, '14 blocks'):
      surrogate.closeness(specs[:14])


class AlgorithmsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.space = space_lib.SearchSpace()

  def test_mutation_changes_one_thing_and_stays_valid(self):
    rng = np.random.default_rng(0)
    arch = self.space.from_block_specs(specs_lib.SPINENET_49)
    for _ in range(200):
      child = algorithms.mutate(self.space, arch, rng)
      self.space.validate(child)
      self.assertNotEqual(child, arch)
      changed = [f for f in ('base_levels', 'level_shifts', 'output_levels',
                             'block_fns', 'parents')
                 if getattr(child, f) != getattr(arch, f)]
      self.assertLen(changed, 1)

  def test_evolution_mutates_tournament_winners_of_a_bounded_population(self):
    evolution = algorithms.RegularizedEvolution(self.space, seed=0,
                                                population_size=4,
                                                tournament_size=4)
    rewards = {}
    for step in range(10):
      arch = evolution.ask()
      if step >= 4:  # after the random start: a child of the current best
        best = max(evolution.population, key=lambda m: m[1])[0]
        diffs = sum(getattr(arch, f) != getattr(best, f) for f in vars(arch))
        self.assertEqual(diffs, 1)
      rewards[arch] = surrogate.closeness(self.space.to_block_specs(arch))
      evolution.tell(arch, rewards[arch])
      self.assertLessEqual(len(evolution.population), 4)
    self.assertEqual([m[1] for m in evolution.population],
                     [rewards[m[0]] for m in evolution.population])

  @parameterized.parameters('random', 'evolution', 'reinforce')
  def test_same_seed_same_search_and_state_resumes_it(self, name):
    def run(algorithm, n):
      out = []
      for _ in range(n):
        arch = algorithm.ask()
        algorithm.tell(arch, surrogate.closeness(self.space.to_block_specs(arch)))
        out.append(arch)
      return out
    first = algorithms.make_algorithm(name, self.space, seed=4)
    straight = run(first, 8)
    interrupted = algorithms.make_algorithm(name, self.space, seed=4)
    head = run(interrupted, 5)
    resumed = algorithms.make_algorithm(name, self.space, seed=123)
    resumed.set_state(interrupted.get_state())
    self.assertEqual(head + run(resumed, 3), straight)
    self.assertNotEqual(
        run(algorithms.make_algorithm(name, self.space, seed=5), 8), straight)

  def test_unknown_algorithm_and_wrong_state(self):
    with self.assertRaisesRegex(ValueError, 'evolution'):
      algorithms.make_algorithm('bayes', self.space)
    state = algorithms.RandomSearch(self.space).get_state()
    with self.assertRaisesRegex(ValueError, "'random', not 'evolution'"):
      algorithms.RegularizedEvolution(self.space).set_state(state)

  def test_reinforce_and_evolution_beat_random_search(self):
    # Best closeness to SpineNet-49 after 100 samples, mean over 3 seeds
    # (benchmarks/search_surrogate.py runs 200 samples x 5 seeds).
    means = {}
    for name in algorithms.ALGORITHMS:
      means[name] = np.mean([surrogate.best_so_far(
          algorithms.make_algorithm(name, self.space, seed=seed), 100)[-1]
                             for seed in range(3)])
    self.assertGreater(means['reinforce'], means['random'] + 0.08, means)
    self.assertGreater(means['evolution'], means['random'] + 0.08, means)


if __name__ == '__main__':
  from absl.testing import absltest  # pylint: disable=g-import-not-at-top
  absltest.main()
