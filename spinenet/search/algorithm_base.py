"""The interface of every search algorithm: ask for an architecture, tell its reward.

Its own module so that the algorithms (`algorithms`, `reinforce`) import it
and `algorithms.make_algorithm` imports them, with no cycle.
"""
import abc
from typing import Dict

import numpy as np

from spinenet.search import space as space_lib


class SearchAlgorithm(abc.ABC):
  """Proposes architectures and learns from their rewards.

  Args:
    space: `space.SearchSpace`.
    seed: int seed of every random choice.
  """

  name = 'base'

  def __init__(self, space: space_lib.SearchSpace, seed: int = 0):
    self.space = space
    self.rng = np.random.default_rng(seed)
    self.num_asked = 0
    self.num_told = 0

  def ask(self) -> space_lib.Architecture:
    """The next architecture to evaluate."""
    self.num_asked += 1
    return self._ask()

  def tell(self, arch: space_lib.Architecture, reward: float) -> None:
    """Reports the reward (higher is better) of an architecture from `ask`."""
    self.num_told += 1
    self._tell(arch, float(reward))

  @abc.abstractmethod
  def _ask(self) -> space_lib.Architecture:
    ...

  def _tell(self, arch, reward):
    del arch, reward

  # === State ===
  def get_state(self) -> Dict[str, dict]:
    """`{'json': JSON-serializable dict, 'arrays': {name: np.ndarray}}`."""
    return {'json': {'algorithm': self.name, 'rng': self.rng.bit_generator.state,
                     'num_asked': self.num_asked, 'num_told': self.num_told},
            'arrays': {}}

  def set_state(self, state: Dict[str, dict]) -> None:
    """Restores what `get_state` returned (same algorithm and space)."""
    meta = state['json']
    if meta.get('algorithm') != self.name:
      raise ValueError(f'Saved search state is for algorithm '
                       f'{meta.get("algorithm")!r}, not {self.name!r}; use the '
                       'same algorithm to resume, or a new search directory.')
    self.rng.bit_generator.state = meta['rng']
    self.num_asked, self.num_told = meta['num_asked'], meta['num_told']
