"""Running the fire scripts (scripts/run_*.py) inside the test process, and small helpers on their outputs."""

import glob
import importlib.util
import os
import shutil
import sys

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
FIXTURES = os.path.join(REPO, 'tests', 'fixtures')  # data files the tests read, and the scripts that made them
SCRIPTS = os.path.join(REPO, 'scripts')
PYTHON = sys.executable
# A variant of the conftest's tiny run shared by the modules whose references need a network that matters: with
# T = 10, beta_end = 0.02 leaves alphabar_T = 0.9 (the chain barely leaves x_T), 0.5 gives 0.04; the U-Net's output
# layer starts at zero, so that one step at a large lr gives an eps that depends on x and t; EMA decay 0.5 makes the
# EMA weights another network than the raw ones. Users: tiny_run('run_cifar', **LARGE_LR_FLAGS) (test_flags_eval.py),
# the same with max_steps=2 (test_flags_reproduce_editing.py), tiny_run('run_celebahq', max_steps=2, **LARGE_LR_FLAGS)
# (test_original_editing.py, test_flags_reproduce_editing.py and test_flags_eval.py share it).
LARGE_LR_FLAGS = dict(beta_end=0.5, lr=5e-2, ema_decay=0.5)


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


def run_main(capsys, script, argv, entry='main'):
  """Run `script.main(argv)` (or another entry point taking argv: evaluate_samples.py's and demo.py's is
  `command_line`) like the command line would: returns (exit code, stdout, stderr)."""
  module = load_script(script)
  code = 0
  try:
    getattr(module, entry)([str(a) for a in argv])
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


def copy_run(model_dir, dest):
  """A copy of a run directory at dest, for a test that writes into it (the conftest's tiny_run directories are
  read-only): a run of its own, as the state file names its checkpoints relative to the directory. Returns dest."""
  dest = str(dest)
  shutil.copytree(model_dir, dest)
  return dest


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


def write_original_layout(src_ckpt, out_dir, *, global_step, kwargs_json=None):
  """Rewrite a run's checkpoint in the original release's full training layout, name by name: the live weights,
  the Adam slots `<name>/Adam`, `<name>/Adam_1`, `beta1_power`, `beta2_power`, the EMA shadows
  `<name>/ExponentialMovingAverage` and global_step (int64), plus kwargs.json; returns the checkpoint prefix."""
  import tensorflow.compat.v1 as tf
  from diffusion_tf import checkpoints
  reader = tf.train.load_checkpoint(src_ckpt)
  live = sorted(n for n in reader.get_variable_to_shape_map() if n.startswith('model/') and '/Adam' not in n and
                not n.endswith('/ExponentialMovingAverage'))
  rng = np.random.RandomState(0)
  arrays = {}
  for name in live:
    value = reader.get_tensor(name)
    arrays[name] = value
    arrays[name + '/ExponentialMovingAverage'] = reader.get_tensor(name + '/ExponentialMovingAverage')
    arrays[name + '/Adam'] = rng.randn(*value.shape).astype(np.float32) * 1e-3
    arrays[name + '/Adam_1'] = np.abs(rng.randn(*value.shape)).astype(np.float32) * 1e-6
  arrays['beta1_power'] = np.float32(0.9 ** global_step)
  arrays['beta2_power'] = np.float32(0.999 ** global_step)
  extra = {'kwargs.json': open(kwargs_json).read()} if kwargs_json else None
  return checkpoints.write_tf_checkpoint(out_dir, arrays, global_step=global_step, with_ema=False, extra_files=extra)


def write_tiny_checkpoint(prefix):
  """A real, readable TF checkpoint of one scalar variable at `prefix` (no state file): for tests of how checkpoint
  names resolve, which accept readable checkpoints only."""
  import tensorflow.compat.v1 as tf
  with tf.Graph().as_default(), tf.Session() as sess:
    v = tf.get_variable('v', initializer=1.)
    sess.run(v.initializer)
    tf.train.Saver([v]).save(sess, prefix, write_meta_graph=False, write_state=False)
  return prefix
