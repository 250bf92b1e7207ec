"""Running a command line: fire with the project's errors reported as one `error: ...` line and exit status 1, and
TensorFlow kept quiet. Pure Python: scripts may import it before TensorFlow (which quiet_tensorflow loads).
"""

import errno
import functools
import os
import sys
import warnings

import fire

from .. import errors


def run_cli(commands, argv=None, name=None):
  """fire.Fire(commands) with bad input reported as one `error: ...` line on stderr and exit status 1.

  The one place where an error becomes a command line's `error:` line and exit status. Expected errors are the
  project's (diffusion_tf.errors.Error), ValueErrors (the dataset code reports missing or malformed data
  with them) and OSErrors of a write without space or rights (a full disk, a read-only file system); set
  DIFFUSION_TF_DEBUG=1 for the full traceback.
  """
  if hasattr(sys.stdout, 'reconfigure'):  # progress lines reach a log file (a job scheduler's) as they are printed
    sys.stdout.reconfigure(line_buffering=True)
  try:
    fire.Fire(commands, command=argv, name=name)
  except (errors.Error, ValueError) as e:
    if os.environ.get('DIFFUSION_TF_DEBUG'):
      raise
    message = str(e).strip().splitlines()
    print('error: {}'.format(message[0] if message else type(e).__name__), file=sys.stderr)
    sys.exit(getattr(e, 'exit_code', 1))  # TrainingStopped: 128 + the signal, as a shell reports a signal's end
  except OSError as e:
    if os.environ.get('DIFFUSION_TF_DEBUG') or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
      raise
    print('error: cannot write {}: {}'.format(e.filename, e.strerror), file=sys.stderr)
    sys.exit(1)


def quiet_tensorflow():
  """Keep TensorFlow's C++ and Python logs to warnings and errors; our progress lines go to stdout."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow.compat.v1 as tf  # only now: the log level above must be set before TensorFlow loads
  tf.logging.set_verbosity(tf.logging.ERROR)
  warnings.filterwarnings('ignore', category=FutureWarning)
  warnings.filterwarnings('ignore', category=DeprecationWarning)


def subcommands(**commands):
  """The fire command table, each command wrapped so that it returns nothing (fire would print a return value)."""
  def _wrap(fn):
    @functools.wraps(fn)
    def _command(*args, **kwargs):
      fn(*args, **kwargs)
    return _command
  return {name: _wrap(fn) for name, fn in commands.items()}
