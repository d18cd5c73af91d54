"""Ratios of our times to the Model Garden's: like with like, and best against best.

A benchmark times several variants on each side, each at one precision
(`float32`, `mixed_bfloat16`, `bfloat16`...). Dividing our fastest variant by
the Model Garden's float32 one would credit us with a precision change the
Model Garden could make too, so:

* `ratio_<precision>`: our fastest variant at that precision over the Model
  Garden's fastest at the same precision, for every precision both sides
  timed;
* `ratio`: our fastest variant overall over the Model Garden's fastest
  overall (best against best), both named.

Example:
  >>> compare({'ours_float32': ('float32', 90.0), 'ours_bf16': ('mixed_bfloat16', 40.0)},
  ...         {'mg_float32': ('float32', 100.0), 'mg_bf16': ('mixed_bfloat16', 50.0)})
  {'ratio_float32': 0.9, 'ratio_mixed_bfloat16': 0.8, 'ratio': 0.8,
   'ours_best': 'ours_bf16', 'mg_best': 'mg_bf16',
   'pairs': {'float32': ['ours_float32', 'mg_float32'],
             'mixed_bfloat16': ['ours_bf16', 'mg_bf16']}}
"""
from typing import Mapping, Optional, Tuple

# {variant name: (precision, median ms)}
Timings = Mapping[str, Tuple[str, float]]


def _fastest(timings: Timings, precision: Optional[str] = None) -> Optional[str]:
  """Name of the fastest variant (at `precision` if given); None if there is none."""
  names = [n for n, (p, _) in timings.items() if precision is None or p == precision]
  return min(names, key=lambda n: timings[n][1]) if names else None


def compare(ours: Timings, theirs: Timings, digits: int = 3) -> dict:
  """Per-precision ratios and the best-against-best ratio (lower is better for us).

  Args:
    ours: `{variant: (precision, median ms)}` of our variants.
    theirs: the same for the Model Garden's.
    digits: decimals the ratios are rounded to.

  Returns:
    dict with `ratio_<precision>` for each precision timed on both sides (in
    the order our variants first have it), `ratio`, `ours_best` and
    `mg_best` (absent when either side timed nothing), and `pairs`:
    `{precision: [our variant, Model Garden variant]}` behind each
    `ratio_<precision>`. Precisions timed on one side only get no ratio.
  """
  report, pairs = {}, {}
  for precision in dict.fromkeys(p for p, _ in ours.values()):
    mine, reference = _fastest(ours, precision), _fastest(theirs, precision)
    if reference is None:
      continue
    pairs[precision] = [mine, reference]
    report[f'ratio_{precision}'] = round(ours[mine][1] / theirs[reference][1], digits)
  best, reference_best = _fastest(ours), _fastest(theirs)
  if best is not None and reference_best is not None:
    report['ratio'] = round(ours[best][1] / theirs[reference_best][1], digits)
    report['ours_best'] = best
    report['mg_best'] = reference_best
  report['pairs'] = pairs
  return report
