"""Introspection (what help(), pydoc and IDEs do: dir, inspect.getmembers, pydoc's rendering) of every module of the
package works offline and opens no socket; the original's INCEPTION_GRAPH_DEF is still there when read by name
(tests/test_original_api.py::test_lazy_module_constants)."""

import importlib
import inspect
import pkgutil
import pydoc

import pytest

import diffusion_tf

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(diffusion_tf.__path__, 'diffusion_tf.'))


def test_the_walk_finds_the_packages_modules():
  assert {'diffusion_tf.tpu_utils.tpu_utils', 'diffusion_tf.inception', 'diffusion_tf.cli.runner'} <= set(MODULES)


@pytest.mark.parametrize('name', MODULES)
def test_introspection_opens_no_socket(name, private_inception_cache):
  """No Inception graph anywhere and no network: a name that dir() lists and that loads the graph when read would
  try to download it here (an attempt recorded, or InceptionGraphError)."""
  module = importlib.import_module(name)
  names = dir(module)
  members = dict(inspect.getmembers(module))
  assert set(members) <= set(names)
  assert pydoc.render_doc(module, renderer=pydoc.plaintext)
  assert private_inception_cache['attempts'] == []
