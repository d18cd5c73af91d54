"""The machine a benchmark ran on, for the last JSON line of every benchmark.

Numbers from different CPUs are not comparable, and on x86 the instruction
sets decide which precisions run natively: without AVX512-BF16 (or AMX)
TensorFlow emulates bfloat16 and mixed-bfloat16 variants are many times
slower than float32. So every report names the CPU model and says whether
AVX-512, AVX512-BF16 and AMX are present, read from `/proc/cpuinfo`.

Example:
  >>> cpu_summary('model name : AMD EPYC\\nflags : fpu avx512f avx512_bf16\\n')
  {'cpu_model': 'AMD EPYC', 'avx512': True, 'avx512_bf16': True, 'amx': False}
"""
import os
import platform
from typing import Optional

import tensorflow as tf
import tf_keras

CPUINFO = '/proc/cpuinfo'

# cpuinfo flag -> report key; AMX counts when either AMX unit is listed.
_FLAG_KEYS = (('avx512', ('avx512f',)),
              ('avx512_bf16', ('avx512_bf16',)),
              ('amx', ('amx_tile', 'amx_bf16')))


def cpu_summary(cpuinfo_text: Optional[str]) -> dict:
  """CPU model and instruction-set booleans from the text of `/proc/cpuinfo`.

  Args:
    cpuinfo_text: the file's contents (`key : value` lines, one block per
      logical CPU; the first `model name` and `flags` lines are read), or
      None where there is no such file (the model is then
      `platform.processor()` and the flags are unknown).

  Returns:
    `{'cpu_model': str, 'avx512': bool|None, 'avx512_bf16': bool|None,
    'amx': bool|None}`; None means "not known" (no flags line).
  """
  fields = {}
  for line in (cpuinfo_text or '').splitlines():
    key, sep, value = line.partition(':')
    key = key.strip()
    if sep and key in ('model name', 'flags', 'Features') and key not in fields:
      fields[key] = value.strip()
  flag_text = fields.get('flags', fields.get('Features'))
  flags = set(flag_text.split()) if flag_text is not None else None
  summary = {'cpu_model': fields.get('model name') or platform.processor() or 'unknown'}
  for key, names in _FLAG_KEYS:
    summary[key] = None if flags is None else any(n in flags for n in names)
  return summary


def read_cpuinfo(path: str = CPUINFO) -> Optional[str]:
  """The text of `path`, or None when it cannot be read (not Linux)."""
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return None


def env_summary() -> dict:
  """Machine, versions, thread pools and load average, for benchmark reports.

  Returns:
    dict: `cpu_model`, `avx512`, `avx512_bf16`, `amx` (see `cpu_summary`),
    `cpus`, `tensorflow`, `tf_keras`, `python`, `intra_op_threads`,
    `inter_op_threads`, `onednn` (the `TF_ENABLE_ONEDNN_OPTS` setting) and
    `load_average` (1, 5, 15 minutes).
  """
  return {
      **cpu_summary(read_cpuinfo()),
      'cpus': os.cpu_count(),
      'tensorflow': tf.__version__,
      'tf_keras': tf_keras.__version__,
      'python': platform.python_version(),
      'intra_op_threads': tf.config.threading.get_intra_op_parallelism_threads(),
      'inter_op_threads': tf.config.threading.get_inter_op_parallelism_threads(),
      'onednn': os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset: TF enables it only on CPUs with AVX512-VNNI, AVX512-BF16 or AMX)'),
      'load_average': tuple(round(x, 2) for x in os.getloadavg()),
  }
