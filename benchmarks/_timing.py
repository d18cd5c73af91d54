"""Wall-clock timing shared by the benchmarks, so every number is measured alike.

`time_fn` times one callable; `time_interleaved` times several in alternation,
round by round, so that a change in background load on a shared machine hits
every variant alike. Results are copied to the host inside the timed region.

Example:
  >>> median_ms, min_ms, all_ms = time_fn(tf.function(model), (images,))
  >>> timed = time_interleaved({'a': fn_a, 'b': fn_b}, (images,), iters=5)
"""
import statistics
import time
from typing import Callable, Mapping, Optional, Sequence

import tensorflow as tf


def time_fn(fn: Callable, args: Sequence, warmup: int = 3, iters: int = 10,
            on_iteration: Optional[Callable[[int, float], None]] = None):
  """Wall-clock time of `fn(*args)`, results copied to the host.

  Args:
    fn: callable returning a nest of tensors.
    args: positional arguments of `fn`.
    warmup: untimed calls first (tracing, compilation, caches).
    iters: timed calls.
    on_iteration: optional `f(i, ms)` called after each timed call (progress).

  Returns:
    `(median_ms, min_ms, all_ms)`.
  """
  for _ in range(warmup):
    tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
  times = []
  for i in range(iters):
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
    times.append((time.perf_counter() - start) * 1e3)
    if on_iteration is not None:
      on_iteration(i, times[-1])
  return statistics.median(times), min(times), times


def time_interleaved(fns: Mapping[str, Callable], args: Sequence, warmup: int = 3,
                     iters: int = 10,
                     on_round: Optional[Callable[[int, Mapping[str, float]], None]] = None,
                     iters_per_fn: Optional[Mapping[str, int]] = None,
                     warmup_per_fn: Optional[Mapping[str, int]] = None):
  """Times several callables in alternation, so load drift hits them alike.

  Every callable gets `warmup` untimed calls, then each round calls every
  callable once (in the given order) until each has `iters` timed calls. On a
  shared machine this keeps a change in background load from favouring
  whichever variant happened to run in the quiet minute.

  Args:
    fns: `{name: callable}`, each returning a nest of tensors.
    args: positional arguments of every callable.
    warmup: untimed calls per callable.
    iters: timed calls per callable.
    on_round: optional `f(round_index, {name: ms})` after each round.
    iters_per_fn: optional `{name: iters}` overriding `iters` for some
      callables (e.g. a very slow variant); a callable with fewer iterations
      takes part in the first rounds only, still interleaved with the others.
    warmup_per_fn: optional `{name: warmup}` overriding `warmup` likewise.

  Returns:
    `{name: (median_ms, min_ms, all_ms)}`.
  """
  iters_of = {name: (iters_per_fn or {}).get(name, iters) for name in fns}
  for name, fn in fns.items():
    for _ in range((warmup_per_fn or {}).get(name, warmup)):
      tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
  times = {name: [] for name in fns}
  for i in range(max(iters_of.values(), default=0)):
    this_round = {}
    for name, fn in fns.items():
      if i >= iters_of[name]:
        continue
      start = time.perf_counter()
      tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
      this_round[name] = (time.perf_counter() - start) * 1e3
      times[name].append(this_round[name])
    if on_round is not None:
      on_round(i, this_round)
  return {name: (statistics.median(t), min(t), t) for name, t in times.items()}


def variant_table(variants: Mapping[str, dict], skipped: Mapping[str, str],
                  width: int) -> list:
  """Lines of the timing table: header, one row per timed variant, then the
  variants that did not compile. `variants[name]` holds `median_ms`, `min_ms`
  and `description`; `width` is the name column's width."""
  lines = [f"{'variant':<{width}} {'median ms':>10} {'min ms':>9}  what"]
  for name, v in variants.items():
    lines.append(f"{name:<{width}} {v['median_ms']:>10.1f} {v['min_ms']:>9.1f}  "
                 f"{v['description']}")
  for name, description in skipped.items():
    lines.append(f"{name:<{width}} {'n/a':>10} {'':>9}  {description}: does not compile")
  return lines
