"""Running the fire scripts (scripts/run_*.py) inside the test process, and small helpers on their outputs."""

import glob
import importlib.util
import os
import sys

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
SCRIPTS = os.path.join(REPO, 'scripts')
PYTHON = sys.executable


def load_script(name):
  """The module scripts/<name>.py (imported once; the scripts have no side effects beyond quieting TF logs)."""
  if name in sys.modules:
    return sys.modules[name]
  if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)
  spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS, name + '.py'))
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def run_main(capsys, script, argv):
  """Run `script.main(argv)` like the command line would: returns (exit code, stdout, stderr)."""
  module = load_script(script)
  code = 0
  try:
    module.main([str(a) for a in argv])
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else 1
  out, err = capsys.readouterr()
  return code, out, err


def error_lines(err):
  return [line for line in err.splitlines() if line.startswith('error:')]


def assert_one_error(code, err, *needles):
  """A failed command: non-zero exit and exactly one `error:` line that contains every needle."""
  assert code != 0, 'expected a non-zero exit'
  lines = error_lines(err)
  assert len(lines) == 1, 'expected one error line, got {!r}'.format(err)
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  return lines[0]


def checkpoint_steps(model_dir):
  """Sorted global steps of the model.ckpt-* files in model_dir."""
  return sorted(int(p.split('-')[-1].split('.')[0]) for p in glob.glob(os.path.join(model_dir, 'model.ckpt-*.index')))


def read_scalars(model_dir):
  """{tag: {step: value}} of all scalar summaries in model_dir's event files."""
  import tensorflow.compat.v1 as tf
  out = {}
  for path in glob.glob(os.path.join(model_dir, 'events.out.tfevents.*')):
    try:
      for event in tf.train.summary_iterator(path):
        for v in event.summary.value:
          if v.HasField('simple_value'):
            out.setdefault(v.tag, {})[int(event.step)] = v.simple_value
    except tf.errors.DataLossError:  # the last record of a killed writer may be cut short
      pass
  return out


def load_npz(path, key='arr_0'):
  with np.load(path) as f:
    return f[key]
