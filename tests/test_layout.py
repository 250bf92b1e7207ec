"""The package's layout: each job in the subpackage named after it, dependencies that run one way (no import cycle;
the math imports no infrastructure; data/ and runs/ import no training, evaluation or command line; the library
never imports the command line; nothing imports the original's faces in tpu_utils/), one module of checks, imports at
the top of files, modules small enough to read, and errors with one home and one way out. Read from the source with
ast."""

import ast
import os

import pytest

from diffusion_tf import errors  # pure Python: imports nothing else of the project
from support.scripts import REPO, SCRIPTS

PACKAGE = 'diffusion_tf'
# The command line's package: the scripts import it, the library never does.
CLI = PACKAGE + '.cli'
# The original release's modules of tpu_utils/, kept as its faces: they re-export, nothing of the package imports them.
FACES = PACKAGE + '.tpu_utils'
FACE_MODULES = {'tpu_utils', 'datasets', 'classifier_metrics_numpy', 'simple_eval_worker', 'tpu_summaries'}
# The math: the diffusion processes, samplers, layers and the U-Net. They import only each other and the leaf modules.
MATH = {PACKAGE + '.' + m for m in ('diffusion_utils', 'diffusion_utils_2', 'diffusion_core', 'nn', 'utils', 'noise',
                                    'samplers', 'sampler_schedules', 'solvers', 'solver_schedules', 'editing',
                                    'editing_schedules', 'precision', 'models',
                                    'models.unet', 'models.configs')}
# Leaf modules: they import nothing of the package but each other (errors, pure checks, TF-version shims, the
# checkpoint format's names, the metadata server's region).
LEAVES = {PACKAGE + '.' + m for m in ('errors', 'checks', 'compat', 'gcp', 'unet_layout', 'diffusers_config')}
# The subpackages of the infrastructure, and the ones each must not import (dependencies run one way).
SUBPACKAGES = ('data', 'runs', 'train', 'evaluation', 'generate', 'experiments', 'cli', 'tpu_utils', 'models')
MUST_NOT_IMPORT = {
  'data': ('train', 'evaluation', 'generate', 'experiments', 'cli', 'runs'),
  'runs': ('train', 'evaluation', 'generate', 'experiments', 'cli', 'data'),
  'experiments': ('train', 'evaluation', 'generate', 'cli'),
  'generate': ('train', 'evaluation', 'cli'),
  'train': ('evaluation', 'generate', 'cli'),
  'evaluation': ('train', 'cli'),
}
MAX_LINES = 400
LONG_MODULE_MARK = 'over 400 lines'
# Long modules whose split by job is still to do; reported as skipped so that they stay in sight.
NOT_YET_SPLIT = set()


def _modules():
  """{dotted module name: path} of every .py file of the package (a package is named by its __init__.py)."""
  out = {}
  for root, _, files in os.walk(os.path.join(REPO, PACKAGE)):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        parts = os.path.relpath(path, REPO)[:-len('.py')].split(os.sep)
        if parts[-1] == '__init__':
          parts = parts[:-1]
        out['.'.join(parts)] = path
  return out


MODULES = _modules()


def _parse(path):
  with open(path) as f:
    return ast.parse(f.read(), path)


def _imports(module, path):
  """[(imported dotted name, ast node, whether the import sits inside a function or class)] of a module."""
  is_package = path.endswith('__init__.py')
  package = module.split('.') if is_package else module.split('.')[:-1]
  out = []

  def visit(node, nested):
    for child in ast.iter_child_nodes(node):
      inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
      if isinstance(child, ast.Import):
        out.extend((alias.name, child, nested) for alias in child.names)
      elif isinstance(child, ast.ImportFrom):
        base = package[:len(package) - child.level + 1] if child.level else []
        target = '.'.join(base + (child.module.split('.') if child.module else []))
        for alias in child.names:
          sub = target + '.' + alias.name
          out.append((sub if sub in MODULES else target, child, nested))
      visit(child, inner)

  visit(_parse(path), False)
  return out


def _graph():
  """{module: set of the package's modules it imports} (importing a.b.c also runs the packages a and a.b)."""
  graph = {}
  for module, path in MODULES.items():
    deps = set()
    for name, _, _ in _imports(module, path):
      parts = name.split('.')
      deps.update(p for p in ('.'.join(parts[:i]) for i in range(1, len(parts) + 1)) if p in MODULES)
    deps.discard(module)
    graph[module] = deps
  return graph


def find_cycle(graph):
  """One import cycle [m0, m1, ..., m0] of a {module: deps} graph, or None."""
  state, stack = {}, []

  def dfs(node):
    state[node] = 'open'
    stack.append(node)
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == 'open':
        return stack[stack.index(dep):] + [dep]
      if dep not in state:
        cycle = dfs(dep)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = dfs(node)
      if cycle:
        return cycle
  return None


def test_find_cycle_finds_a_cycle_and_accepts_a_tree():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None


def test_the_import_graph_reads_relative_imports():
  graph = _graph()
  assert 'diffusion_tf.samplers' in graph['diffusion_tf.diffusion_core']
  assert 'diffusion_tf.gcp' in graph['diffusion_tf.utils']
  assert {'diffusion_tf.runs', 'diffusion_tf.runs.run_dir'} <= graph['diffusion_tf.train.loop']  # package + module


def _subpackage(module):
  parts = module.split('.')
  return parts[1] if len(parts) > 2 else None


def test_every_module_lives_in_a_subpackage_named_after_its_job_or_is_math_or_a_leaf():
  """One level of subpackages, each in SUBPACKAGES; tpu_utils/ holds the original's five modules and nothing else."""
  for module in MODULES:
    parts = module.split('.')
    assert len(parts) <= 3, '{}: at most one level of subpackages'.format(module)
    if len(parts) == 3:
      assert parts[1] in SUBPACKAGES, '{}: {} is not one of the subpackages {}'.format(module, parts[1], SUBPACKAGES)
  faces = {m.split('.')[-1] for m in MODULES if m.startswith(FACES + '.')}
  assert faces == FACE_MODULES, 'tpu_utils/ holds {}; expected only the original\'s {}'.format(
    sorted(faces), sorted(FACE_MODULES))


def test_nothing_of_the_package_imports_the_faces_and_the_faces_only_re_export():
  graph = _graph()
  bad = [(m, d) for m, deps in graph.items() if not m.startswith(FACES) for d in deps if d.startswith(FACES)]
  assert not bad, bad
  for module in MODULES:
    if module.startswith(FACES + '.'):
      tree = _parse(MODULES[module])
      defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and
              n.name not in ('__getattr__', '__dir__')]
      assert not defs, '{} defines {}; a face only re-exports'.format(module, defs)


def test_the_math_imports_only_math_and_leaf_modules():
  graph = _graph()
  bad = ['{} imports {}'.format(m, d) for m in MATH for d in graph[m] if d not in MATH | LEAVES | {PACKAGE}]
  assert not bad, bad
  bad = ['{} imports {}'.format(m, d) for m in LEAVES for d in graph[m] if d not in LEAVES | {PACKAGE}]
  assert not bad, bad


@pytest.mark.parametrize('subpackage', sorted(MUST_NOT_IMPORT))
def test_dependencies_between_subpackages_run_one_way(subpackage):
  graph = _graph()
  bad = ['{} imports {}'.format(m, d) for m, deps in graph.items() if _subpackage(m) == subpackage
         for d in deps if _subpackage(d) in MUST_NOT_IMPORT[subpackage]]
  assert not bad, bad


def test_checks_live_once_in_a_pure_python_module():
  """checks.py imports nothing but the errors (no TensorFlow, numpy aside), and no other module defines a check_*
  of the same name."""
  path = MODULES[PACKAGE + '.checks']
  top = {name for name, _, _ in _imports(PACKAGE + '.checks', path)}
  assert top <= {'difflib', 'inspect', 'numpy', PACKAGE + '.errors', PACKAGE}, top
  names = {n.name for n in _parse(path).body if isinstance(n, ast.FunctionDef) and n.name.startswith('check_')}
  elsewhere = ['{}: {}'.format(m, n.name) for m, p in MODULES.items() if m != PACKAGE + '.checks'
               for n in ast.walk(_parse(p)) if isinstance(n, ast.FunctionDef) and n.name in names]
  assert not elsewhere, elsewhere


# Where a bool is told apart for a reason other than "is this an integer": a diffusers config's flags must be JSON
# booleans, and its numbers must not be.
BOOL_TYPE_TESTS_ELSEWHERE = {PACKAGE + '.diffusers_config'}


def test_the_integer_rule_lives_once_in_checks():
  """"An integer, but not True/False" is checks.is_int (and check_int); no other module spells out
  isinstance(x, bool) or np.integer."""
  bad = []
  for module, path in sorted(MODULES.items()):
    if module == PACKAGE + '.checks' or module in BOOL_TYPE_TESTS_ELSEWHERE:
      continue
    for node in ast.walk(_parse(path)):
      if isinstance(node, ast.Attribute) and node.attr == 'integer' and isinstance(node.value, ast.Name) and (
          node.value.id == 'np'):
        bad.append('{}:{} np.integer'.format(module, node.lineno))
      if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'isinstance' and any(
          isinstance(n, ast.Name) and n.id == 'bool' for n in ast.walk(node.args[1])):
        bad.append('{}:{} isinstance(..., bool)'.format(module, node.lineno))
  assert not bad, bad


def test_no_import_cycle_in_the_package():
  cycle = find_cycle(_graph())
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_the_library_never_imports_the_command_line():
  scripts = {name[:-len('.py')] for name in os.listdir(SCRIPTS) if name.endswith('.py')}
  assert CLI in MODULES
  bad = []
  for module, path in MODULES.items():
    for name, node, _ in _imports(module, path):
      in_cli = lambda m: m == CLI or m.startswith(CLI + '.')
      if name.split('.')[0] in scripts | {'scripts'} or (not in_cli(module) and in_cli(name)):
        bad.append('{}:{} imports {}'.format(os.path.relpath(path, REPO), node.lineno, name))
  assert not bad, bad


def test_the_cli_runner_is_pure_python():
  """Scripts import cli.py before TensorFlow (quiet_tensorflow must set the log level first); checks.py, which it
  imports, is pure Python too (test_checks_live_once_in_a_pure_python_module)."""
  path = MODULES[CLI + '.runner']
  top = {name for name, _, nested in _imports(CLI + '.runner', path) if not nested}
  assert not any(name.startswith('tensorflow') for name in top), top
  assert top & set(MODULES) <= {'diffusion_tf', 'diffusion_tf.errors', 'diffusion_tf.checks'}, top


def test_imports_inside_functions_say_why():
  """Imports belong at the top of a file; the few deliberate late ones (TensorFlow in a numpy-only module, a heavy
  optional library) carry a comment on their line that says why."""
  bad = []
  for module, path in MODULES.items():
    with open(path) as f:
      lines = f.read().splitlines()
    for name, node, nested in _imports(module, path):
      if nested and '#' not in lines[node.lineno - 1]:
        bad.append('{}:{} imports {} inside a function'.format(os.path.relpath(path, REPO), node.lineno, name))
  assert not bad, bad


@pytest.mark.parametrize('module', sorted(MODULES))
def test_long_modules_say_why(module):
  path = MODULES[module]
  with open(path) as f:
    num_lines = len(f.read().splitlines())
  assert module not in NOT_YET_SPLIT or num_lines > MAX_LINES, '{} is split: take it off NOT_YET_SPLIT'.format(module)
  if num_lines > MAX_LINES:
    if module in NOT_YET_SPLIT:
      pytest.skip('{} has {} lines: still to split by job'.format(module, num_lines))
    doc = ast.get_docstring(_parse(path)) or ''
    assert LONG_MODULE_MARK in doc, (
      '{} has {} lines; split it by job, or say in its docstring why it is one module ("{} because ...")'.format(
        os.path.relpath(path, REPO), num_lines, LONG_MODULE_MARK))


def _exception_classes(path):
  """[(class name, line)] of the classes in a file that derive directly from a built-in exception."""
  builtin = {'Exception', 'ValueError', 'RuntimeError', 'OSError', 'IOError', 'KeyError', 'TypeError'}
  return [(node.name, node.lineno) for node in ast.walk(_parse(path)) if isinstance(node, ast.ClassDef) and any(
    isinstance(base, ast.Name) and base.id in builtin for base in node.bases)]


def test_errors_live_in_one_module_with_one_base_class():
  scripts = [os.path.join(SCRIPTS, name) for name in os.listdir(SCRIPTS) if name.endswith('.py')]
  elsewhere = ['{}:{} {}'.format(os.path.relpath(path, REPO), line, name)
               for path in list(MODULES.values()) + scripts if path != MODULES['diffusion_tf.errors']
               for name, line in _exception_classes(path)]
  assert not elsewhere, elsewhere
  classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, BaseException)]
  assert len(classes) >= 9 and all(issubclass(c, errors.Error) for c in classes), classes
  assert errors.Error.__bases__ == (Exception,)


def test_every_command_line_reports_errors_through_run_cli():
  """One place turns an error into `error: ...` and the exit status: cli.run_cli. No script catches errors to print
  them itself."""
  for name in sorted(os.listdir(SCRIPTS)):
    if not name.endswith('.py'):
      continue
    tree = _parse(os.path.join(SCRIPTS, name))
    calls = {node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call) and
             isinstance(node.func, ast.Attribute)}
    assert 'run_cli' in calls, '{} does not run its command through cli.run_cli'.format(name)
    assert 'Fire' not in calls, '{} calls fire.Fire itself'.format(name)
    handlers = [node for node in ast.walk(tree) if isinstance(node, ast.ExceptHandler) and any(
      isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == 'exit' for n in ast.walk(node))]
    assert not handlers, '{}:{} exits from an except clause'.format(name, handlers[0].lineno)


def test_no_script_imports_another_script():
  """Shared code lives in the package (demo.py runs run_cifar.py's commands from diffusion_tf/cli/cifar10.py)."""
  scripts = {name[:-len('.py')] for name in os.listdir(SCRIPTS) if name.endswith('.py')}
  bad = []
  for name in sorted(scripts):
    for node in ast.walk(_parse(os.path.join(SCRIPTS, name + '.py'))):
      imported = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                  [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
      bad.extend('{}.py:{} imports {}'.format(name, node.lineno, i) for i in imported if i.split('.')[0] in scripts)
  assert not bad, bad


def test_test_files_have_unique_names():
  """pytest imports each test file by its base name (tests/ has no __init__.py, so its directories are not
  packages): two test files of one name cannot be collected in one process, as under PYTEST_WORKERS=1."""
  seen = {}
  for root, _, files in os.walk(os.path.join(REPO, 'tests')):
    for name in files:
      if name.startswith('test_') and name.endswith('.py'):
        seen.setdefault(name, []).append(os.path.relpath(os.path.join(root, name), REPO))
  assert not {name: paths for name, paths in seen.items() if len(paths) > 1}
