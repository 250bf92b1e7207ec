"""Finding a checkpoint that can be read, and setting unreadable ones aside.

A checkpoint prefix `model.ckpt-N` is readable when its index parses, every data shard is there and every tensor's
stored checksum matches (all tensors are read once, one at a time). In a run directory the candidates are the
checkpoints the `checkpoint` state file lists (TF's Saver writes that file only after the index and the data are
complete, so a save cut short is never listed); only when that file is missing or cannot be parsed are the
`*.index` files on disk the candidates. An unreadable candidate is moved, never deleted, to
<model_dir>/unreadable/<time>-<host>-<pid>/ and the state file is rewritten to list the checkpoints that remain, so
that Estimator (which reads the state file) resumes from the same checkpoint this lookup returns (when none remains,
the state file goes aside with them).
"""

import glob
import os
import re
import socket
import sys
import time

import tensorflow.compat.v1 as tf

from .. import compat

UNREADABLE_DIR = 'unreadable'


def _first_line(e):
  message = getattr(e, 'message', None) or str(e)
  lines = message.strip().splitlines()
  return '{}: {}'.format(type(e).__name__, lines[0] if lines else '')


def checkpoint_problem(ckpt):
  """None if checkpoint prefix `ckpt` can be read completely, else why not (one line)."""
  try:
    reader = tf.train.load_checkpoint(ckpt)
    for name in sorted(reader.get_variable_to_shape_map()):
      reader.get_tensor(name)
  except compat.CHECKPOINT_READ_ERRORS as e:
    return _first_line(e)
  return None


def step_in_name(prefix, default=None):
  """N of a checkpoint prefix named <name>-N (model.ckpt-N, as Saver names them), else `default`."""
  match = re.search(r'-(\d+)$', str(prefix))
  return int(match.group(1)) if match else default


def _step_of(prefix):
  return step_in_name(prefix, default=-1)  # unnumbered prefixes sort last


def _listed_checkpoints(model_dir):
  """Checkpoint prefixes the state file lists, newest first; None if there is no usable state file."""
  try:
    state = tf.train.get_checkpoint_state(model_dir)
  except (tf.errors.OpError, ValueError):  # a state file that does not parse
    return None
  if state is None or not state.model_checkpoint_path:
    return None
  paths = list(state.all_model_checkpoint_paths)
  if state.model_checkpoint_path not in paths:
    paths.append(state.model_checkpoint_path)
  paths = [p if os.path.isabs(p) or '://' in p else os.path.join(model_dir, p) for p in paths]
  return sorted(set(paths), key=_step_of, reverse=True)


def _checkpoints_on_disk(model_dir):
  return sorted((p[:-len('.index')] for p in tf.io.gfile.glob(os.path.join(model_dir, '*.index'))),
                key=_step_of, reverse=True)


def move_aside(ckpt):
  """Move the files of checkpoint prefix `ckpt` into <its directory>/unreadable/<time>-<host>-<pid>/; returns that
  directory (files that vanished meanwhile, e.g. deleted by the trainer, are skipped)."""
  dest = os.path.join(os.path.dirname(ckpt), UNREADABLE_DIR, '{}-{}-{}'.format(
    time.strftime('%Y%m%d-%H%M%S'), socket.gethostname(), os.getpid()))
  tf.io.gfile.makedirs(dest)
  for path in tf.io.gfile.glob(glob.escape(ckpt) + '.*'):
    try:
      tf.io.gfile.rename(path, os.path.join(dest, os.path.basename(path)))
    except tf.errors.NotFoundError:
      pass
  return dest


def set_aside(ckpt, problem, warn=None, then=''):
  """Move unreadable checkpoint `ckpt` aside (move_aside) after one warning line naming it, `problem` and where it
  went, to `warn` (default: stderr)."""
  warn = warn or (lambda line: print(line, file=sys.stderr))
  dest = move_aside(ckpt)
  warn('warning: checkpoint {} cannot be read ({}); moved it to {}{}'.format(ckpt, problem, dest, then))
  return dest


def _relative(model_dir, path):
  return os.path.basename(path) if os.path.dirname(path) == model_dir.rstrip('/') else path


def newest_readable_checkpoint(model_dir, warn=None):
  """The newest readable checkpoint prefix in model_dir, or None.

  Each unreadable newer one is moved aside (see the module docstring) after one line to `warn` (default: stderr)
  naming it and the reason; the state file then lists the checkpoints that remain, the returned one as the latest.
  """
  model_dir = model_dir.rstrip('/')
  listed = _listed_checkpoints(model_dir)
  candidates = listed if listed is not None else _checkpoints_on_disk(model_dir)
  bad, found, dest = [], None, None
  for ckpt in candidates:
    problem = checkpoint_problem(ckpt)
    if problem is None:
      found = ckpt
      break
    dest = set_aside(ckpt, problem, warn, then='; trying the previous one' if ckpt != candidates[-1] else
                     '; no older checkpoint is left')
    bad.append(ckpt)
  if bad and found is not None:
    older = [p for p in (listed or candidates) if p not in bad and _step_of(p) <= _step_of(found)]
    tf.train.update_checkpoint_state(model_dir, _relative(model_dir, found),
                                     all_model_checkpoint_paths=[_relative(model_dir, p) for p in reversed(older)])
  elif bad and listed is not None:  # the state file lists only checkpoints that were moved aside: it goes too
    tf.io.gfile.rename(os.path.join(model_dir, 'checkpoint'), os.path.join(dest, 'checkpoint'))
  return found
