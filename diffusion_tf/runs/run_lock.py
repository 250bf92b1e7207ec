"""One trainer per run directory: <model_dir>/train.lock names the host and pid of the process training there.
The same lock keeps one `sample` dump per output directory (<out_dir>/sample.lock; generate/dump.py).

Local (and NFS) directories: the file is held with an exclusive flock(2) for as long as the trainer runs, so the
kernel releases it when that process ends in any way (even SIGKILL); a lock file left behind by a dead process locks
nothing. A second trainer is refused with a PathError naming the holder.

gs:// (and other URLs): object stores have no lock and tf.io.gfile no atomic create-if-absent, so this is best
effort: an existing lock file refuses a second trainer unless it names this host and a pid that is no longer
running (then it is taken over); after writing its own lock the trainer reads it back and gives up if another
trainer's write won. Two trainers started within the same second on different hosts can both pass, and a lock left
by a trainer killed on another host stays until it is deleted by hand (the error says which file).
"""

import fcntl
import json
import os
import socket
import time

import tensorflow.compat.v1 as tf

from .paths import PathError, is_url

LOCK_FILE = 'train.lock'
SAMPLE_LOCK_FILE = 'sample.lock'


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's live process
    return True
  return True


def _describe(holder):
  if not holder:
    return 'a process whose lock is being written'
  return 'host {} pid {} (since {})'.format(holder.get('host'), holder.get('pid'), holder.get('started'))


def _parse(text):
  try:
    holder = json.loads(text)
  except ValueError:
    return None
  return holder if isinstance(holder, dict) else None


class RunLock:
  """`RunLock(model_dir).acquire()` ... `release()`: see the module docstring. `lock_file`, `activity` and `rule`
  name the lock and say in the refusal what the holder does ('trained') and what is allowed ('one trainer per run
  directory')."""

  def __init__(self, model_dir, *, lock_file=LOCK_FILE, activity='trained', rule='one trainer per run directory'):
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, lock_file)
    self._activity, self._rule = activity, rule
    self._file = None
    self._me = dict(host=socket.gethostname(), pid=os.getpid(), started=time.strftime('%Y-%m-%d %H:%M:%S'))

  def _refuse(self, holder):
    raise PathError('{} is being {} by another process: {} holds {}; expected {} (wait for it to end or stop '
                    'it{})'.format(self.model_dir, self._activity, _describe(holder), self.path, self._rule,
                                   '; if it is gone, delete that file' if is_url(self.path) else ''))

  def acquire(self):
    if is_url(self.path):
      self._acquire_best_effort()
      return self
    while True:
      f = open(self.path, 'a+')
      try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        f.seek(0)
        holder = _parse(f.read())
        f.close()
        self._refuse(holder)
      # the holder before us may have removed the file after we opened it: lock the file that is there now
      try:
        same = os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      f.close()
    f.seek(0)
    f.truncate()
    f.write(json.dumps(self._me) + '\n')
    f.flush()
    os.fsync(f.fileno())
    self._file = f
    return self

  def _read(self):
    try:
      with tf.io.gfile.GFile(self.path, 'r') as f:
        return _parse(f.read())
    except tf.errors.NotFoundError:
      return None

  def _acquire_best_effort(self):
    if tf.io.gfile.exists(self.path):
      holder = self._read()
      pid = holder.get('pid') if holder else None
      stale = (holder.get('host') == self._me['host'] and isinstance(pid, int) and pid > 0 and
               not _pid_alive(pid)) if holder else False
      if not stale:
        self._refuse(holder)
    with tf.io.gfile.GFile(self.path, 'w') as f:
      f.write(json.dumps(self._me) + '\n')
    holder = self._read()
    if holder != self._me:
      self._refuse(holder)
    self._file = True

  def release(self):
    if self._file is None:
      return
    if is_url(self.path):
      if self._read() == self._me:
        tf.io.gfile.remove(self.path)
    else:
      os.remove(self.path)  # while still holding the flock; see acquire
      self._file.close()
    self._file = None
