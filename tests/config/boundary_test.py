"""Package boundaries of the config edge (docs: /DESIGN.md).

gin is imported by `spinenet/config/` only, and no `spinenet.serving` module
pulls in the training package, the config layer or gin: a fresh interpreter
imports them one by one and `sys.modules` is inspected after each.
"""
import json
import os
import pkgutil
import re
import subprocess
import sys

import spinenet
from spinenet import serving

PACKAGE_DIR = os.path.dirname(os.path.abspath(spinenet.__file__))
FORBIDDEN_IN_SERVING = ('spinenet.training', 'spinenet.config', 'gin')
_GIN_IMPORT = re.compile(r'^\s*(import gin\b|from gin\b)', re.MULTILINE)

# Imports each module named in argv in turn and prints, per module, the
# forbidden packages loaded so far (one JSON object).
_PROBE = """
import importlib, json, sys
modules, forbidden = sys.argv[1].split(','), sys.argv[2].split(',')
def loaded():
  return sorted(m for m in sys.modules
                if any(m == f or m.startswith(f + '.') for f in forbidden))
print(json.dumps({m: (importlib.import_module(m), loaded())[1] for m in modules}))
"""


def _serving_modules():
  return sorted(f'spinenet.serving.{m.name}'
                for m in pkgutil.iter_modules(serving.__path__))


def test_only_the_config_package_imports_gin():
  importers = []
  for root, _, files in os.walk(PACKAGE_DIR):
    for name in files:
      path = os.path.join(root, name)
      if name.endswith('.py') and _GIN_IMPORT.search(open(path).read()):
        importers.append(os.path.relpath(path, PACKAGE_DIR))
  assert importers and all(p.startswith('config' + os.sep) for p in importers), importers


def test_serving_imports_no_training_config_or_gin():
  modules = _serving_modules()
  assert 'spinenet.serving.export_lib' in modules and len(modules) > 5
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='3')
  done = subprocess.run(
      [sys.executable, '-c', _PROBE, ','.join(modules), ','.join(FORBIDDEN_IN_SERVING)],
      capture_output=True, text=True, env=env, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  loaded = json.loads(done.stdout.strip().splitlines()[-1])
  assert list(loaded) == modules
  # The first module listing a forbidden package is the one that imports it.
  assert {m: f for m, f in loaded.items() if f} == {}
