"""The three scripts are recipes alike: each `train` takes the original's flags with the paper's defaults (then, for
run_cifar.py and run_celebahq.py, the flags of a folder of images, data/folder.py FOLDER_FLAGS), then the
same run-control flags (cli/commands.py RUN_CONTROL_FLAGS) with the same defaults, and every command the original
script had is there, defined in the package (diffusion_tf/cli/<dataset>.py) rather than in the script."""

import inspect

import pytest

from diffusion_tf.cli import commands
from diffusion_tf.data import folder
from support.scripts import load_script
from test_original_api import API_FILE, _parse_api

RECIPES = {'run_cifar': 'diffusion_tf.cli.cifar10', 'run_celebahq': 'diffusion_tf.cli.celebahq',
           'run_lsun': 'diffusion_tf.cli.lsun'}
# The one default a recipe sets apart from the table: the original run_cifar trained with 2000 iterations per loop.
RECIPE_DEFAULTS = {'run_cifar': {'iterations_per_loop': 2000}}
# The recipes that train on a folder of images take its flags (data/folder.py FOLDER_FLAGS) right after the
# original's own.
FOLDER_RECIPES = ('run_cifar', 'run_celebahq')


def _original_train_parameters(script):
  """The parameter names of the original script's train(), in order (tests/fixtures/original_api.txt)."""
  for module, name, kind, params in _parse_api(API_FILE):
    if module == 'scripts/{}.py'.format(script) and name == 'train':
      return [p.split('=')[0].strip() for p in params.split(',')]
  raise AssertionError('no train() of {} in {}'.format(script, API_FILE))


@pytest.mark.parametrize('script', sorted(RECIPES))
def test_train_takes_the_originals_flags_then_the_run_control_flags_with_their_defaults(script):
  params = inspect.signature(load_script(script).train).parameters
  original = _original_train_parameters(script)
  assert list(params)[:len(original)] == original
  rest = [name for name in params if name not in original]
  folder_flags = list(folder.FOLDER_FLAGS) if script in FOLDER_RECIPES else []
  assert rest[:len(folder_flags)] == folder_flags
  for name in folder_flags:
    assert params[name].default == folder.FOLDER_FLAGS[name], (script, name)
  rest = rest[len(folder_flags):]
  expected = [name for name in commands.RUN_CONTROL_FLAGS if name not in original]
  assert rest == expected, 'run-control flags of {} train: {}; expected {}'.format(script, rest, expected)
  for name in expected:
    want = RECIPE_DEFAULTS.get(script, {}).get(name, commands.RUN_CONTROL_FLAGS[name])
    assert params[name].default == want, '{} train --{} defaults to {!r}; expected {!r}'.format(
      script, name, params[name].default, want)


@pytest.mark.parametrize('script', sorted(RECIPES))
def test_the_commands_live_in_the_package_and_the_script_only_runs_them(script, monkeypatch):
  from diffusion_tf.cli import runner
  captured = {}
  monkeypatch.setattr(runner, 'run_cli', lambda commands, argv=None, name=None: captured.update(commands))
  module = load_script(script)
  module.main([])
  assert 'train' in captured and 'sample' in captured and 'evaluation' in captured
  for name, fn in captured.items():  # the recipe's own commands, or the ones it makes from cli/'s shared ones
    assert inspect.unwrap(fn).__module__.startswith('diffusion_tf.cli.'), '{} {} is defined in {}'.format(
      script, name, inspect.unwrap(fn).__module__)
  assert inspect.unwrap(captured['train']).__module__ == RECIPES[script]
