"""Code written against the original release imports the same public names from the same modules, with the same
parameters (names, order, kinds and defaults), as listed in tests/fixtures/original_api.txt."""

import ast
import importlib
import inspect
import os
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from support.scripts import REPO, load_script

API_FILE = os.path.join(REPO, 'tests', 'fixtures', 'original_api.txt')


def _parse_api(path):
  """[(module file, qualified name, kind, signature text or None)] of every public name in the listing."""
  entries, module, cls = [], None, None
  with open(path) as f:
    for line in f:
      line = line.rstrip('\n')
      if line.startswith('## '):
        module, cls = line[3:].strip(), None
        continue
      if not line.strip() or line.lstrip().startswith('#'):
        continue
      indent = len(line) - len(line.lstrip())
      text = line.strip()
      match = re.match(r'^(def|class) (\w+)\((.*)\)$', text)
      if match:
        kind, name, params = match.groups()
        if indent == 0:
          cls = name if kind == 'class' else None
          entries.append((module, name, kind, params if kind == 'def' else None))
        else:  # a method of the class above
          entries.append((module, '{}.{}'.format(cls, name), 'method', params))
        continue
      match = re.match(r'^(\w+) = ', text)
      assert match and indent == 0, line
      cls = None
      entries.append((module, match.group(1), 'constant', None))
  return [e for e in entries if not any(part.startswith('_') and part != '__init__' for part in e[1].split('.'))]


def _import(module_file):
  if module_file.startswith('scripts/'):
    return load_script(os.path.basename(module_file)[:-len('.py')])
  return importlib.import_module(module_file[:-len('.py')].replace('/', '.'))


def _expected_parameters(params_text):
  """[(name, kind, default expression node or None)] of a signature as the listing writes it."""
  tree = ast.parse('def f({}): pass'.format(params_text)).body[0].args
  positional = tree.args
  defaults = [None] * (len(positional) - len(tree.defaults)) + list(tree.defaults)
  out = [(a.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, d) for a, d in zip(positional, defaults)]
  return out + [(a.arg, inspect.Parameter.KEYWORD_ONLY, d) for a, d in zip(tree.kwonlyargs, tree.kw_defaults)]


def _same_default(actual, node):
  """The listing's defaults are literals, int(...) or tf names: evaluate them with tf in scope."""
  expected = eval(compile(ast.Expression(node), '<listing>', 'eval'), {'tf': tf, 'int': int})
  if isinstance(expected, float) or isinstance(actual, float):
    return isinstance(actual, (int, float)) and not isinstance(actual, bool) and np.isclose(actual, expected)
  return actual is expected or (type(actual) is type(expected) and actual == expected)


def _check_signature(fn, params_text, where):
  """The original parameters come first, in the original order and kind, with the original defaults; later
  parameters may be added if they have defaults; a parameter the original required may have a default."""
  if isinstance(fn, staticmethod):
    fn = fn.__func__
  actual = list(inspect.signature(fn).parameters.values())
  expected = _expected_parameters(params_text)
  problems = []
  names = [p.name for p in actual]
  if names[:len(expected)] != [e[0] for e in expected]:
    problems.append('parameters {} do not start with the original {}'.format(names, [e[0] for e in expected]))
  else:
    for p, (name, kind, default) in zip(actual, expected):
      if p.kind != kind:
        problems.append('{}: {} instead of {}'.format(name, p.kind, kind))
      if default is not None and (p.default is inspect.Parameter.empty or not _same_default(p.default, default)):
        problems.append('{}: default {!r} instead of the original {}'.format(name, p.default, ast.dump(default)))
    for p in actual[len(expected):]:
      if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
        problems.append('added parameter {} has no default'.format(p.name))
  return ['{}: {}'.format(where, m) for m in problems]


ENTRIES = _parse_api(API_FILE)


def test_listing_is_complete():
  """The copy of the listing holds every module of the original (guards against a truncated copy)."""
  modules = sorted(set(e[0] for e in ENTRIES))
  assert len(modules) == 13, modules
  assert len(ENTRIES) > 120


@pytest.mark.parametrize('module_file', sorted(set(e[0] for e in ENTRIES)))
def test_original_public_names_and_signatures(module_file):
  module = _import(module_file)
  problems = []
  for _, name, kind, params in [e for e in ENTRIES if e[0] == module_file]:
    where = '{} {}'.format(module_file, name)
    owner, attr = (module, name) if '.' not in name else (getattr(module, name.split('.')[0], None),
                                                           name.split('.')[1])
    if kind == 'constant':  # some are loaded on first use (test_lazy_module_constants): only listed here
      if name not in dir(module) and name not in getattr(module, '_LOADED_ON_FIRST_USE', ()):
        problems.append('{}: missing'.format(where))
      continue
    if owner is None or not hasattr(owner, attr):
      problems.append('{}: missing'.format(where))
      continue
    obj = inspect.getattr_static(owner, attr) if kind == 'method' else getattr(owner, attr)
    if kind == 'class':
      if not inspect.isclass(obj):
        problems.append('{}: not a class'.format(where))
    elif kind in ('def', 'method'):
      if isinstance(obj, property):
        if params.strip() != 'self':
          problems.append('{}: a property, not a method'.format(where))
      elif not callable(obj) and not isinstance(obj, (staticmethod, classmethod)):
        problems.append('{}: not callable'.format(where))
      else:
        if kind == 'method' and params.split(',')[0].strip() not in ('self',) and not isinstance(obj, staticmethod):
          problems.append('{}: expected a staticmethod'.format(where))
        problems += _check_signature(obj, params, where)
  assert not problems, '\n'.join(problems)


def test_lazy_module_constants(tmp_path, monkeypatch):
  """INCEPTION_GRAPH_DEF (downloaded at import in the original) is read on first use, here from a local stand-in;
  tpu_summaries.summary is tf.contrib.summary."""
  from support import inception as helpers_inception
  from support.data import block_network
  from diffusion_tf import inception
  from diffusion_tf.tpu_utils import tpu_summaries, tpu_utils
  attempts = block_network(monkeypatch)
  monkeypatch.setenv(inception.GRAPH_ENV_VAR, helpers_inception.make_standin_inception(tmp_path, pool_dim=8))
  graph_def = tpu_utils.INCEPTION_GRAPH_DEF
  assert isinstance(graph_def, tf.GraphDef) and any(node.name == 'pool_3' for node in graph_def.node)
  assert not attempts
  from diffusion_tf import compat
  if compat.STACK == 'tf1':  # TF 2.15 has no tf.contrib, so no `summary` alias there (docs/fidelity.md)
    from tensorflow.contrib import summary
    assert tpu_summaries.summary is summary
  assert tpu_utils.normalize_data(255.) == 1. and tpu_utils.unnormalize_data(-1.) == 0.


def test_thin_wrappers_behave_as_the_original(capfd):
  from diffusion_tf import nn, utils
  from diffusion_tf import gcp
  from diffusion_tf.tpu_utils import classifier_metrics_numpy as metrics, tpu_utils
  assert nn.DEFAULT_DTYPE == tf.float32 and utils.get_gcp_region is gcp.get_gcp_region
  x = np.array([[1., 2., 3.], [0., 0., 5.]])
  by_column = metrics.log_softmax(x, axis=0)  # the original's explicit axis
  np.testing.assert_allclose(np.exp(by_column).sum(axis=0), 1.)
  np.testing.assert_allclose(by_column, metrics.log_softmax(x.T, -1).T)
  with tf.Graph().as_default():
    value = tf.constant([1., 3.])
    printed = nn.debug_print(value, 'name')
    step = tf.train.get_or_create_global_step()
    w = tf.get_variable('w', initializer=2.)
    ema, update = tpu_utils.make_ema(step, 0.9, [w])
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      assert list(sess.run(printed)) == [1., 3.]
      sess.run(update)
      assert ema.average(w).op.name == 'w/ExponentialMovingAverage' and sess.run(ema.average(w)) == 2.
  err = capfd.readouterr().err
  assert 'name 2 1 1 3' in err  # name, mean, std, min, max
