"""The machine summary of the benchmark reports, from fake /proc/cpuinfo texts."""
import pytest

from benchmarks import _machine

_EPYC_BF16 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu vme sse2 avx2 avx512f avx512dq avx512_vnni avx512_bf16 fma
bugs\t\t: sysret_ss_attrs

processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu vme sse2 avx2 avx512f avx512dq avx512_vnni avx512_bf16 fma
"""

_SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""

_ZEN3 = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
"""

_ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16
"""


@pytest.mark.parametrize('text, expected', [
    (_EPYC_BF16, {'cpu_model': 'AMD EPYC 9R14 96-Core Processor', 'avx512': True,
                  'avx512_bf16': True, 'amx': False}),
    (_SAPPHIRE_RAPIDS, {'cpu_model': 'Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz',
                        'avx512': True, 'avx512_bf16': True, 'amx': True}),
    (_ZEN3, {'cpu_model': 'AMD EPYC 7B13', 'avx512': False, 'avx512_bf16': False,
             'amx': False}),
])
def test_model_and_flags_from_cpuinfo(text, expected):
  assert _machine.cpu_summary(text) == expected


def test_amx_counts_either_unit():
  text = 'model name : X\nflags : avx512f amx_tile\n'
  assert _machine.cpu_summary(text)['amx'] is True
  text = 'model name : X\nflags : avx512f amx_bf16\n'
  assert _machine.cpu_summary(text)['amx'] is True


def test_flags_are_whole_words():
  # `avx512fp16` is not `avx512f`; `avx512_bf16x` would not be `avx512_bf16`.
  summary = _machine.cpu_summary('model name : X\nflags : avx512fp16 avx512_bf16x\n')
  assert summary['avx512'] is False and summary['avx512_bf16'] is False


def test_arm_features_line_is_read_and_x86_flags_are_absent():
  summary = _machine.cpu_summary(_ARM)
  assert (summary['avx512'], summary['avx512_bf16'], summary['amx']) == (False, False, False)
  assert summary['cpu_model']  # falls back to platform.processor() or 'unknown'


@pytest.mark.parametrize('text', [None, '', 'processor : 0\n'])
def test_unknown_flags_are_none_not_false(text):
  summary = _machine.cpu_summary(text)
  assert (summary['avx512'], summary['avx512_bf16'], summary['amx']) == (None, None, None)
  assert isinstance(summary['cpu_model'], str) and summary['cpu_model']


def test_unreadable_cpuinfo_is_none(tmp_path):
  assert _machine.read_cpuinfo(str(tmp_path / 'missing')) is None
  path = tmp_path / 'cpuinfo'
  path.write_text(_ZEN3)
  assert _machine.read_cpuinfo(str(path)) == _ZEN3


def test_env_summary_carries_the_machine_fields():
  env = _machine.env_summary()
  for key in ('cpu_model', 'avx512', 'avx512_bf16', 'amx', 'cpus', 'tensorflow',
              'tf_keras', 'python', 'load_average'):
    assert key in env, key
  # The summary is this machine's cpuinfo, parsed the same way.
  assert {k: env[k] for k in ('cpu_model', 'avx512', 'avx512_bf16', 'amx')} == (
      _machine.cpu_summary(_machine.read_cpuinfo()))


def test_model_garden_module_still_exports_env_summary():
  from benchmarks import _model_garden  # pylint: disable=g-import-not-at-top
  assert _model_garden.env_summary is _machine.env_summary
