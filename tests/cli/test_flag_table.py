"""tests/README.md's flag table is complete and points at real tests.

The table lists every user-facing flag and the test that proves it. This module reads the commands' signatures (what
fire turns into flags) and checks that the table has one row for each (command, flag), no row for a flag that no
longer exists, and that every row names at least one test as `<dir>/test_<file>.py::<function>` (relative to tests/)
that is defined in that file (or says **no test**, which the table's legend counts). So a new flag without a row, or
a renamed test, fails here. tools/make_flag_table.py writes the table.
"""

import inspect
import os
import re

from support.scripts import REPO, load_script

from diffusion_tf.cli import runner

TABLE = os.path.join(REPO, 'tests', 'README.md')
TESTS = os.path.join(REPO, 'tests')
RUN_SCRIPTS = ('run_cifar', 'run_celebahq', 'run_lsun')


def _subcommands(script, monkeypatch):
  """{command name: function} that the script's main hands to fire."""
  captured = {}

  def capture(commands, argv=None, name=None):
    captured.update(commands)
  monkeypatch.setattr(runner, 'run_cli', capture)
  load_script(script).main([])
  return captured


def _flags(fn):
  """The flags of a fire command: its named parameters (fire also takes positional ones by name)."""
  params = inspect.signature(inspect.unwrap(fn)).parameters.values()
  return {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _commands(monkeypatch):
  """{table name: flags} of every command. A command that the run_* scripts share (the same code, e.g. `sample`)
  is one entry `run_* <command>`."""
  by_script = {s: _subcommands(s, monkeypatch) for s in RUN_SCRIPTS}
  out = {}
  for script, commands in by_script.items():
    for name, fn in commands.items():
      code = inspect.unwrap(fn).__code__
      shared = [s for s in RUN_SCRIPTS if name in by_script[s] and inspect.unwrap(by_script[s][name]).__code__ is code]
      out['run_* ' + name if len(shared) == len(RUN_SCRIPTS) else script + ' ' + name] = _flags(fn)
  for name, fn in _subcommands('convert_diffusers_checkpoint', monkeypatch).items():
    out['convert_diffusers_checkpoint ' + name] = _flags(fn)
  out['evaluate_samples'] = _flags(load_script('evaluate_samples').main)
  out['prepare_lsun'] = _flags(load_script('prepare_lsun').prepare_lsun)
  out['merge_samples'] = _flags(load_script('merge_samples').merge)
  out['demo'] = _flags(load_script('demo').main)
  return out


def _table():
  """{(command, flag): proof text} from the table's rows `| command | `--flag` | proof |`."""
  rows = {}
  with open(TABLE) as f:
    for line in f:
      m = re.match(r'\|\s*([^|]+?)\s*\|\s*`--(\w+)`\s*\|(.*)\|\s*$', line)
      if m:
        key = (m.group(1), m.group(2))
        assert key not in rows, 'two rows for {} --{}'.format(*key)
        rows[key] = m.group(3)
  return rows


def test_every_flag_of_every_command_has_a_row_and_no_row_is_stale(monkeypatch):
  expected = {(command, flag) for command, flags in _commands(monkeypatch).items() for flag in flags}
  rows = set(_table())
  assert not expected - rows, 'flags missing from tests/README.md: {}'.format(sorted(expected - rows))
  assert not rows - expected, 'rows of tests/README.md for flags that do not exist: {}'.format(sorted(rows - expected))


_DEFINED = {}


def _defined(filename):
  if filename not in _DEFINED:
    path = os.path.join(TESTS, filename)
    text = open(path).read() if os.path.exists(path) else ''
    _DEFINED[filename] = set(re.findall(r'^\s*def (\w+)', text, re.M))
  return _DEFINED[filename]


def test_each_row_names_tests_that_exist():
  problems = []
  for (command, flag), proof in sorted(_table().items()):
    refs = re.findall(r'((?:\w+/)?test_\w+\.py)::(\w+)', proof)
    if not refs and '**no test**' not in proof:
      problems.append('{} --{}: names no test as <dir>/test_<file>.py::<function>'.format(command, flag))
    problems += ['{} --{}: {}::{} does not exist'.format(command, flag, filename, function)
                 for filename, function in refs if function not in _defined(filename)]
  assert not problems, '\n'.join(problems)
