"""Search algorithms behind one interface: ask for an architecture, tell its reward.

The interface, `SearchAlgorithm`, lives in `algorithm_base` (which the
algorithms here and in `reinforce` subclass) and is re-exported here;
`make_algorithm` builds any of them by name.

* `RandomSearch`: every architecture sampled uniformly (`SearchSpace.sample`).
* `RegularizedEvolution` (Real et al., 2019): a population of the latest
  rewarded architectures; each new one mutates the best of a random
  tournament; the oldest member dies.
* `reinforce.ReinforceController` (the paper's method): an RNN controller
  trained with REINFORCE.

Every algorithm is deterministic given its seed and the sequence of
`ask`/`tell` calls, and its whole state (RNG, population, weights) round-trips
through `get_state` / `set_state`, so an interrupted search resumes where it
stopped. `ask` may be called several times before the matching `tell`s
(parallel workers).
"""
import collections

import numpy as np

from spinenet.search import algorithm_base
from spinenet.search import reinforce
from spinenet.search import space as space_lib

ALGORITHMS = ('reinforce', 'evolution', 'random')

SearchAlgorithm = algorithm_base.SearchAlgorithm


class RandomSearch(SearchAlgorithm):
  """Uniform random sampling: the baseline every method must beat."""

  name = 'random'

  def _ask(self):
    return self.space.sample(self.rng)


MUTATIONS = ('intermediate_order', 'level_shift', 'block_fn', 'parents',
             'output_order')


def mutate(space: space_lib.SearchSpace, arch: space_lib.Architecture,
           rng: np.random.Generator) -> space_lib.Architecture:
  """One random change of `arch` that stays in `space` and changes it.

  A mutation, chosen uniformly among `MUTATIONS`, swaps two intermediate
  blocks of different base levels, changes one level shift, flips one
  block type, re-draws one block's parents, or swaps two output levels.
  """
  while True:
    kind = MUTATIONS[rng.integers(len(MUTATIONS))]
    base, shifts = list(arch.base_levels), list(arch.level_shifts)
    outputs, fns = list(arch.output_levels), list(arch.block_fns)
    parents = list(arch.parents)
    if kind == 'intermediate_order':
      i, j = rng.choice(len(base), 2, replace=False)
      base[i], base[j] = base[j], base[i]
    elif kind == 'level_shift':
      i = rng.integers(len(shifts))
      shifts[i] = int(rng.choice([s for s in space.level_shifts if s != shifts[i]]))
    elif kind == 'block_fn':
      i = rng.integers(len(fns))
      fns[i] = str(rng.choice([f for f in space.block_fns if f != fns[i]]))
    elif kind == 'parents':
      i = int(rng.integers(len(parents)))
      parents[i] = space.sample_parents(i, rng)
    else:
      i, j = rng.choice(len(outputs), 2, replace=False)
      outputs[i], outputs[j] = outputs[j], outputs[i]
    child = space_lib.Architecture(tuple(base), tuple(shifts), tuple(outputs),
                                   tuple(fns), tuple(parents))
    if child != arch:
      return child


class RegularizedEvolution(SearchAlgorithm):
  """Aging evolution (Real et al., 2019).

  The first `population_size` architectures are random; after that each is
  a mutation (`mutate`) of the best of `tournament_size` members drawn from
  the population, which holds the `population_size` most recently rewarded
  architectures.

  Args:
    space: `space.SearchSpace`.
    seed: int.
    population_size: int.
    tournament_size: int, <= population_size.
  """

  name = 'evolution'

  def __init__(self, space, seed=0, population_size=20, tournament_size=5):
    super().__init__(space, seed)
    if not 1 <= tournament_size <= population_size:
      raise ValueError('`tournament_size` must be in [1, population_size]. '
                       f'Received: tournament_size={tournament_size}, '
                       f'population_size={population_size}')
    self.population_size = population_size
    self.tournament_size = tournament_size
    self.population = collections.deque(maxlen=population_size)

  def _ask(self):
    if self.num_asked <= self.population_size or not self.population:
      return self.space.sample(self.rng)
    size = min(self.tournament_size, len(self.population))
    picks = self.rng.choice(len(self.population), size, replace=False)
    parent = max((self.population[i] for i in picks), key=lambda m: m[1])[0]
    return mutate(self.space, parent, self.rng)

  def _tell(self, arch, reward):
    self.population.append((arch, reward))

  def get_state(self):
    state = super().get_state()
    state['json']['population'] = [(a.to_dict(), r) for a, r in self.population]
    return state

  def set_state(self, state):
    super().set_state(state)
    self.population.clear()
    for a, r in state['json']['population']:
      self.population.append((space_lib.Architecture.from_dict(a), float(r)))


def make_algorithm(name: str, space: space_lib.SearchSpace, seed: int = 0,
                   **kwargs) -> SearchAlgorithm:
  """Builds the algorithm `name` ('reinforce', 'evolution' or 'random').

  Args:
    name: one of `ALGORITHMS`.
    space: `space.SearchSpace`.
    seed: int.
    **kwargs: the algorithm's own arguments (e.g. `population_size`,
      `learning_rate`).
  """
  classes = {'reinforce': reinforce.ReinforceController,
             'evolution': RegularizedEvolution, 'random': RandomSearch}
  if name not in classes:
    raise ValueError(f'Unknown search algorithm {name!r}; expected one of '
                     f'{ALGORITHMS}. Received: algorithm={name!r}')
  return classes[name](space, seed=seed, **kwargs)
