"""Ratios against the Model Garden: per precision, and best against best."""
import pytest

from benchmarks import _ratios


def test_each_precision_against_the_same_precision_and_best_against_best():
  ours = {'ours_float32': ('float32', 90.0),
          'ours_float32_winograd': ('float32', 80.0),
          'ours_mixed_bfloat16': ('mixed_bfloat16', 60.0)}
  theirs = {'mg_float32': ('float32', 100.0), 'mg_mixed_bfloat16': ('mixed_bfloat16', 40.0)}
  report = _ratios.compare(ours, theirs)
  assert report['ratio_float32'] == 0.8            # winograd 80 / MG float32 100
  assert report['ratio_mixed_bfloat16'] == 1.5     # 60 / MG bfloat16 40
  # Best against best: our fastest (60) over the Model Garden's fastest (40),
  # not over its float32 step (which would give 0.6).
  assert report['ratio'] == 1.5
  assert (report['ours_best'], report['mg_best']) == ('ours_mixed_bfloat16',
                                                       'mg_mixed_bfloat16')
  assert report['pairs'] == {'float32': ['ours_float32_winograd', 'mg_float32'],
                             'mixed_bfloat16': ['ours_mixed_bfloat16', 'mg_mixed_bfloat16']}


def test_a_precision_timed_on_one_side_only_gets_no_ratio():
  ours = {'float32_folded': ('float32', 50.0), 'bfloat16_folded': ('bfloat16', 30.0)}
  theirs = {'model_garden': ('float32', 200.0)}
  report = _ratios.compare(ours, theirs, digits=4)
  assert report['ratio_float32'] == 0.25
  assert 'ratio_bfloat16' not in report
  assert report['ratio'] == 0.15 and report['ours_best'] == 'bfloat16_folded'
  assert list(report['pairs']) == ['float32']


def test_no_reference_or_no_variants_gives_no_overall_ratio():
  assert _ratios.compare({'ours_float32': ('float32', 1.0)}, {}) == {'pairs': {}}
  assert _ratios.compare({}, {'mg_float32': ('float32', 1.0)}) == {'pairs': {}}


@pytest.mark.parametrize('digits, expected', [(3, 0.333), (1, 0.3)])
def test_ratios_are_rounded(digits, expected):
  report = _ratios.compare({'a': ('float32', 1.0)}, {'b': ('float32', 3.0)}, digits=digits)
  assert report['ratio'] == expected == report['ratio_float32']
