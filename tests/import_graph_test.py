"""The import graph of `spinenet/**`: no cycles, and the package rules hold.

Reads every module's source with `ast` (nothing is imported), counting every
import statement, also those inside functions: a lazy import that closes a
cycle is still a cycle. Edges go to modules of this repository only;
`from package import name` points at `package.name` when that is a module,
else at `package`.

What is asserted (the package rules of the project's design, "Packages
and what each may import"):

* no import cycle among all `spinenet` modules;
* `ops` imports only `ops`; `modeling` only `ops`, `modeling`; `data` only
  `ops`, `data`; `serving` only `ops`, `modeling`, `data`, `serving` (so
  never `training`, the config layer `config`/`configurables`, `search`,
  `cli`). The root `spinenet/__init__.py` (it only selects Keras 2) may be
  imported by all;
* `ops`, `modeling`, `data` and `serving` import no gin, no absl flags and
  nothing of the Model Garden (`official`, `orbit`).

The rules of `training` and `search` are not asserted here.
"""
import ast
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Set

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGE = 'spinenet'

# DESIGN.md: package -> the packages it may import (itself included).
ALLOWED = {
    'ops': {'ops'},
    'modeling': {'ops', 'modeling'},
    'data': {'ops', 'data'},
    'serving': {'ops', 'modeling', 'data', 'serving'},
}
# DESIGN.md: what ops, modeling, data (and, as the config layer is the only
# gin importer, serving) never know about.
FORBIDDEN_EXTERNAL = ('gin', 'absl.flags', 'official', 'orbit')


def module_files(root: str = _ROOT) -> Dict[str, str]:
  """`{dotted module name: path}` of every `.py` file under `spinenet/`."""
  modules = {}
  for directory, _, files in os.walk(os.path.join(root, _PACKAGE)):
    for name in files:
      if not name.endswith('.py'):
        continue
      path = os.path.join(directory, name)
      parts = os.path.relpath(path, root)[:-len('.py')].split(os.sep)
      if parts[-1] == '__init__':
        parts = parts[:-1]
      modules['.'.join(parts)] = path
  return modules


def imported_names(module: str, path: str) -> List[str]:
  """Every absolute dotted name `module` imports, candidates first.

  `from a.b import c` yields `a.b.c` then `a.b` (the caller keeps the first
  that is a known module); `import a.b` yields `a.b`.
  """
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), filename=path)
  is_package = os.path.basename(path) == '__init__.py'
  names = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names += [[alias.name] for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = _absolute(module, is_package, node.level, node.module)
      names += [[f'{base}.{alias.name}', base] for alias in node.names]
  return names


def _absolute(module, is_package, level, name):
  """The absolute name of `from <level dots><name> import ...` in `module`."""
  if not level:
    return name
  parts = module.split('.')
  package = parts if is_package else parts[:-1]
  base = package[:len(package) - (level - 1)]
  return '.'.join(base + ([name] if name else []))


def import_graph(modules: Dict[str, str]) -> Dict[str, Set[str]]:
  """`{module: set of spinenet modules it imports}`."""
  graph = {}
  for module, path in modules.items():
    edges = set()
    for candidates in imported_names(module, path):
      target = _known(candidates, modules)
      if target is not None and target != module:
        edges.add(target)
    graph[module] = edges
  return graph


def _known(candidates, modules):
  """The first candidate that is a module, or its closest known parent."""
  for name in candidates:
    if name in modules:
      return name
  name = candidates[-1]
  while '.' in name:
    name = name.rsplit('.', 1)[0]
    if name in modules:
      return name
  return None


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
  """One cycle `[m0, m1, ..., m0]` of the graph, or None (iterative DFS)."""
  done, on_path = set(), {}
  for start in sorted(graph):
    if start in done:
      continue
    path, stack = [start], [iter(sorted(graph[start]))]
    on_path[start] = 0
    while stack:
      child = next(stack[-1], None)
      if child is None:
        node = path.pop()
        stack.pop()
        del on_path[node]
        done.add(node)
      elif child in on_path:
        return path[on_path[child]:] + [child]
      elif child not in done:
        on_path[child] = len(path)
        path.append(child)
        stack.append(iter(sorted(graph.get(child, ()))))
  return None


def package_of(module: str) -> Optional[str]:
  """`spinenet.<package>...` -> '<package>'; the root package -> None."""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else None


class FindCycleTest(absltest.TestCase):
  """The checker itself finds cycles (so a green graph test means something)."""

  def test_finds_a_cycle_through_a_lazy_import(self):
    graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
    cycle = find_cycle(graph)
    self.assertEqual(cycle[0], cycle[-1])
    self.assertCountEqual(cycle[:-1], ['a', 'b', 'c'])
    self.assertIsNone(find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}))

  def test_reads_relative_lazy_and_from_imports(self):
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root)
    for name, source in (
        ('__init__.py', 'import spinenet.y\n'),
        ('x/__init__.py', 'from . import a\n'),
        ('x/a.py', 'def f():\n  from spinenet.x import b\n'),
        ('x/b.py', 'from .a import f\nfrom .. import y as _\n'),
        ('y.py', 'import os\nimport numpy.linalg\n'),
        ('z.py', 'from spinenet.x import b, missing\n')):
      path = os.path.join(root, 'spinenet', name)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'w') as f:
        f.write(source)
    graph = import_graph(module_files(root))
    self.assertEqual(graph, {
        'spinenet': {'spinenet.y'}, 'spinenet.x': {'spinenet.x.a'},
        'spinenet.x.a': {'spinenet.x.b'},
        'spinenet.x.b': {'spinenet.x.a', 'spinenet.y'},
        'spinenet.y': set(), 'spinenet.z': {'spinenet.x.b', 'spinenet.x'}})
    self.assertEqual(find_cycle(graph),
                     ['spinenet.x.a', 'spinenet.x.b', 'spinenet.x.a'])


class ImportGraphTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.modules = module_files()
    cls.graph = import_graph(cls.modules)

  def test_reads_the_tree(self):
    self.assertIn('spinenet.search.driver', self.graph)
    self.assertIn('spinenet.search.algorithms', self.graph['spinenet.search.driver'])

  def test_no_import_cycle(self):
    cycle = find_cycle(self.graph)
    self.assertIsNone(cycle, 'import cycle: ' + ' -> '.join(cycle or []))

  def test_packages_import_only_what_design_md_allows(self):
    # Rules for ops, modeling, data and serving (DESIGN.md); not training,
    # search, cli or config.
    violations = []
    for module, targets in sorted(self.graph.items()):
      allowed = ALLOWED.get(package_of(module))
      if allowed is None:
        continue
      for target in sorted(targets):
        if package_of(target) is not None and package_of(target) not in allowed:
          violations.append(f'{module} imports {target}')
    self.assertEqual(violations, [], '\n'.join(violations))

  def test_core_packages_know_no_gin_flags_or_model_garden(self):
    violations = []
    for module, path in sorted(self.modules.items()):
      if package_of(module) not in ALLOWED:
        continue
      for candidates in imported_names(module, path):
        full = candidates[0]  # `from absl import flags` -> 'absl.flags'
        if any(full == banned or full.startswith(banned + '.')
               for banned in FORBIDDEN_EXTERNAL):
          violations.append(f'{module} imports {full}')
    self.assertEqual(violations, [], '\n'.join(violations))


if __name__ == '__main__':
  absltest.main()
