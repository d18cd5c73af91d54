"""The paper's search algorithm: an RNN controller trained with REINFORCE.

The controller is an LSTM that emits an architecture as a sequence of
categorical decisions (Zoph & Le, 2017), one step per decision, each block
in build order:

  intermediate block: base level, level shift, block type, parent a, parent b
  output block:       output level, block type, parent a, parent b

Each step has its own softmax layer over that step's options and feeds the
embedding of its choice to the next step. Options that would leave the space
are masked: a base or output level already used up, a first parent with no
later candidate, a second parent not after the first (so parents come out
sorted and every architecture has exactly one decision sequence: `encode`
and `decode` are inverse). With zero-initialized softmax layers the first
samples are uniform over each step's valid options.

Training: after each reward R, one Adam step on
`-(R - baseline) * sum_t log p(a_t) - entropy_weight * sum_t H(p_t)`, with an
exponential moving-average baseline. The LSTM is small (default 64 units) and
runs in NumPy with hand-written backpropagation through time: the controller
lives in the search driver's process, next to the workers that train, and
takes milliseconds per decision sequence.
"""
from typing import List, Tuple

import numpy as np

from spinenet.search import algorithm_base
from spinenet.search import space as space_lib


def _sigmoid(x):
  return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _views(flat, shapes):
  """`{name: view of flat reshaped to shape}`, consecutive in `shapes` order."""
  views, start = {}, 0
  for name, shape in shapes.items():
    size = int(np.prod(shape))
    views[name] = flat[start:start + size].reshape(shape)
    start += size
  return views


class DecisionSequence:
  """The decision steps of a search space, and architecture <-> indices.

  Args:
    space: `space.SearchSpace`.

  Attributes:
    steps: list of `(kind, block, options)`; `options` is the tuple of
      values a step chooses from.
  """

  def __init__(self, space: space_lib.SearchSpace):
    self.space = space
    self.steps: List[Tuple[str, int, tuple]] = []
    bases = tuple(sorted(set(space.base_intermediate_levels)))
    for i in range(space.num_blocks):
      candidates = tuple(space.parent_candidates(i))
      if i < space.num_intermediate:
        self.steps += [('base_level', i, bases),
                       ('level_shift', i, tuple(space.level_shifts))]
      else:
        self.steps.append(('output_level', i, tuple(space.output_levels)))
      self.steps += [('block_fn', i, tuple(space.block_fns)),
                     ('parent_a', i, candidates), ('parent_b', i, candidates)]

  def __len__(self):
    return len(self.steps)

  def mask(self, t: int, previous: List[int]) -> np.ndarray:
    """bool `[len(options)]`: the valid options of step `t` after `previous`."""
    state = self.start()
    for s, a in enumerate(previous[:t]):
      self.advance(s, a, state)
    return self.valid(t, state)

  def start(self) -> dict:
    """Bookkeeping of the masks along one sequence (see `valid`, `advance`)."""
    return {'bases_left': list(self.space.base_intermediate_levels),
            'outputs_left': list(self.space.output_levels), 'last': None}

  def valid(self, t: int, state: dict) -> np.ndarray:
    """bool `[len(options)]`: the valid options of step `t` in `state`."""
    kind, _, options = self.steps[t]
    if kind == 'base_level':
      return np.array([o in state['bases_left'] for o in options])
    if kind == 'output_level':
      return np.array([o in state['outputs_left'] for o in options])
    if kind == 'parent_a':
      return np.arange(len(options)) < len(options) - 1
    if kind == 'parent_b':
      return np.arange(len(options)) > state['last']
    return np.ones(len(options), bool)

  def advance(self, t: int, a: int, state: dict) -> None:
    """Records choice `a` of step `t` in `state`."""
    kind, _, options = self.steps[t]
    if kind == 'base_level':
      state['bases_left'].remove(options[a])
    elif kind == 'output_level':
      state['outputs_left'].remove(options[a])
    state['last'] = a

  def decode(self, indices: List[int]) -> space_lib.Architecture:
    """Option indices (one per step) -> `Architecture`."""
    values = {}
    for (kind, block, options), a in zip(self.steps, indices):
      values[kind, block] = options[a]
    n, total = self.space.num_intermediate, self.space.num_blocks
    return space_lib.Architecture(
        tuple(values['base_level', i] for i in range(n)),
        tuple(values['level_shift', i] for i in range(n)),
        tuple(values['output_level', i] for i in range(n, total)),
        tuple(values['block_fn', i] for i in range(total)),
        tuple((values['parent_a', i], values['parent_b', i])
              for i in range(total)))

  def encode(self, arch: space_lib.Architecture) -> List[int]:
    """`Architecture` -> option indices (one per step)."""
    self.space.validate(arch)
    n = self.space.num_intermediate
    indices = []
    for kind, block, options in self.steps:
      value = {
          'base_level': lambda i: arch.base_levels[i],
          'level_shift': lambda i: arch.level_shifts[i],
          'output_level': lambda i: arch.output_levels[i - n],
          'block_fn': lambda i: arch.block_fns[i],
          'parent_a': lambda i: arch.parents[i][0],
          'parent_b': lambda i: arch.parents[i][1],
      }[kind](block)
      indices.append(options.index(value))
    return indices


class ReinforceController(algorithm_base.SearchAlgorithm):
  """LSTM controller + REINFORCE with a moving-average baseline.

  Args:
    space: `space.SearchSpace`.
    seed: int; initial weights and sampling.
    hidden_size: LSTM units.
    embedding_size: width of the embedding of each decision.
    learning_rate: Adam learning rate.
    entropy_weight: weight of the entropy bonus.
    baseline_decay: the baseline is `decay * baseline + (1 - decay) * R`.
    init_scale: weights start uniform in `[-init_scale, init_scale]`
      (softmax layers at zero).
  """

  name = 'reinforce'

  def __init__(self, space, seed=0, hidden_size=64, embedding_size=32,
               learning_rate=0.01, entropy_weight=1e-3, baseline_decay=0.9,
               init_scale=0.1):
    super().__init__(space, seed)
    self.decisions = DecisionSequence(space)
    self.hidden_size, self.embedding_size = hidden_size, embedding_size
    self.learning_rate = learning_rate
    self.entropy_weight = entropy_weight
    self.baseline_decay = baseline_decay
    self.baseline = None
    h, e = hidden_size, embedding_size
    shapes = {'go': (e,), 'lstm_kernel': (e + h, 4 * h), 'lstm_bias': (4 * h,)}
    for t, (_, _, options) in enumerate(self.decisions.steps):
      shapes[f'softmax_kernel_{t}'] = (h, len(options))
      shapes[f'softmax_bias_{t}'] = (len(options),)
      shapes[f'embedding_{t}'] = (len(options), e)
    # All weights live in one flat vector (one Adam update for all); the
    # dict holds views into it.
    self._flat = np.zeros(sum(int(np.prod(v)) for v in shapes.values()))
    self.params = _views(self._flat, shapes)
    init = np.random.default_rng([seed, 1])
    for name in ('go', 'lstm_kernel') + tuple(k for k in shapes
                                                if k.startswith('embedding_')):
      self.params[name][...] = init.uniform(-init_scale, init_scale, shapes[name])
    self.params['lstm_bias'][h:2 * h] = 1.0  # forget gate starts open
    self._shapes = shapes
    self.adam = {'m': np.zeros_like(self._flat), 'v': np.zeros_like(self._flat),
                 'step': 0}

  # === Forward ===
  def _run(self, indices=None):
    """Samples (indices None) or follows `indices`; returns them and a cache."""
    p, h_size = self.params, self.hidden_size
    h, c = np.zeros(h_size), np.zeros(h_size)
    x = p['go']
    chosen, cache = [], []
    masks = self.decisions.start()
    for t in range(len(self.decisions)):
      xh = np.concatenate([x, h])
      z = xh @ p['lstm_kernel'] + p['lstm_bias']
      gates = _sigmoid(z[:3 * h_size])
      i, f, o = gates[:h_size], gates[h_size:2 * h_size], gates[2 * h_size:]
      g = np.tanh(z[3 * h_size:])
      c_prev = c
      c = f * c_prev + i * g
      tanh_c = np.tanh(c)
      h = o * tanh_c
      logits = h @ p[f'softmax_kernel_{t}'] + p[f'softmax_bias_{t}']
      mask = self.decisions.valid(t, masks)
      logits = np.where(mask, logits, -np.inf)
      probs = np.exp(logits - logits.max())
      probs /= probs.sum()
      if indices is None:
        a = int(min(np.searchsorted(np.cumsum(probs), self.rng.random(),
                                    side='right'), len(probs) - 1))
        while not mask[a]:  # guards rounding at the top of the cumsum
          a -= 1
      else:
        a = int(indices[t])
        if not mask[a]:
          raise ValueError(f'Decision {t} ({self.decisions.steps[t][0]} of '
                           f'block {self.decisions.steps[t][1]}) = {a} is masked.')
      chosen.append(a)
      self.decisions.advance(t, a, masks)
      cache.append(dict(xh=xh, i=i, f=f, o=o, g=g, c_prev=c_prev, tanh_c=tanh_c,
                        h=h, probs=probs, mask=mask))
      x = p[f'embedding_{t}'][a]
    return chosen, cache

  def log_prob(self, arch: space_lib.Architecture) -> float:
    """log-probability that the controller samples `arch`."""
    indices, cache = self._run(self.decisions.encode(arch))
    return float(sum(np.log(k['probs'][a]) for a, k in zip(indices, cache)))

  # === Backward ===
  def gradients(self, indices, advantage):
    """Gradients of the REINFORCE loss (module docstring) and the loss.

    Returns:
      `(grads, loss)`: `grads` is a flat vector laid out like the weights
      (`grad_dict` names its parts), `loss` a float.
    """
    p, h_size, e = self.params, self.hidden_size, self.embedding_size
    indices, cache = self._run(indices)
    flat = np.zeros_like(self._flat)
    grads = _views(flat, self._shapes)
    loss = 0.0
    dh_next, dc_next = np.zeros(h_size), np.zeros(h_size)
    xhs, dzs = [], []
    for t in reversed(range(len(indices))):
      k, a = cache[t], indices[t]
      probs, mask = k['probs'], k['mask']
      log_p = np.log(np.where(mask, probs, 1.0))
      entropy = -np.sum(probs * log_p)
      loss += -advantage * log_p[a] - self.entropy_weight * entropy
      dlogits = self.entropy_weight * probs * (log_p + entropy) + advantage * probs
      dlogits[a] -= advantage
      grads[f'softmax_kernel_{t}'][...] = np.outer(k['h'], dlogits)
      grads[f'softmax_bias_{t}'][...] = dlogits
      dh = p[f'softmax_kernel_{t}'] @ dlogits + dh_next
      dc = dh * k['o'] * (1 - k['tanh_c']**2) + dc_next
      i, f, o, g = k['i'], k['f'], k['o'], k['g']
      dz = np.concatenate([dc * g * i * (1 - i), dc * k['c_prev'] * f * (1 - f),
                           dh * k['tanh_c'] * o * (1 - o), dc * i * (1 - g**2)])
      xhs.append(k['xh'])
      dzs.append(dz)
      dxh = p['lstm_kernel'] @ dz
      dh_next, dc_next = dxh[e:], dc * f
      if t == 0:
        grads['go'][...] += dxh[:e]
      else:
        grads[f'embedding_{t - 1}'][indices[t - 1]] += dxh[:e]
    grads['lstm_kernel'][...] = np.stack(xhs).T @ np.stack(dzs)
    grads['lstm_bias'][...] = np.sum(dzs, axis=0)
    return flat, loss

  def grad_dict(self, flat):
    """Named views of a flat gradient from `gradients`."""
    return _views(flat, self._shapes)

  def _apply(self, grads, beta1=0.9, beta2=0.999, epsilon=1e-8):
    self.adam['step'] += 1
    step = self.adam['step']
    rate = self.learning_rate * np.sqrt(1 - beta2**step) / (1 - beta1**step)
    m, v = self.adam['m'], self.adam['v']
    m *= beta1
    m += (1 - beta1) * grads
    v *= beta2
    v += (1 - beta2) * grads**2
    self._flat -= rate * m / (np.sqrt(v) + epsilon)

  # === SearchAlgorithm ===
  def _ask(self):
    indices, _ = self._run()
    return self.decisions.decode(indices)

  def _tell(self, arch, reward):
    if self.baseline is None:
      self.baseline = reward
    advantage = reward - self.baseline
    grads, _ = self.gradients(self.decisions.encode(arch), advantage)
    self._apply(grads)
    self.baseline = (self.baseline_decay * self.baseline
                     + (1 - self.baseline_decay) * reward)

  def get_state(self):
    state = super().get_state()
    state['json'].update(baseline=self.baseline, adam_step=self.adam['step'],
                         shapes={k: list(v) for k, v in self._shapes.items()})
    state['arrays'] = {'weights': self._flat.copy(), 'adam_m': self.adam['m'].copy(),
                       'adam_v': self.adam['v'].copy()}
    return state

  def set_state(self, state):
    super().set_state(state)
    shapes = {k: tuple(v) for k, v in state['json']['shapes'].items()}
    if shapes != self._shapes:
      raise ValueError('The saved controller has other weight shapes than this '
                       'one; resume with the same search space, hidden_size and '
                       'embedding_size (or use a new search directory).')
    self.baseline = state['json']['baseline']
    self.adam['step'] = state['json']['adam_step']
    self._flat[...] = state['arrays']['weights']
    self.adam['m'][...] = state['arrays']['adam_m']
    self.adam['v'][...] = state['arrays']['adam_v']
