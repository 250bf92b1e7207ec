"""The project's errors: every error that a user can fix (a bad flag, path, file or setting, a failed run) is a
`diffusion_tf.errors.Error`; the command lines report it as one `error: ...` line on stderr and exit with status 1
(cli/runner.py). Each class also derives from the built-in exception that callers caught before (ValueError,
RuntimeError, OSError), so `except ValueError` keeps working.

Pure Python: importing this module imports nothing else of the project, so any module may raise these.
"""


class Error(Exception):
  """Base class of the project's errors; `exit_code` is the status a command line exits with (1 unless a subclass
  says otherwise)."""

  exit_code = 1


class UsageError(Error, ValueError):
  """A bad flag, path or input; scripts print its message as one line and exit with a non-zero status."""


class PathError(Error, ValueError):
  """A path or bucket setting that cannot be used; the message says what was expected."""


class ShardError(Error, ValueError):
  """Shards that are missing, given twice, damaged, or from different sampling runs."""


class CheckpointError(Error, ValueError):
  """A checkpoint or config that cannot be read or does not match the DDPM U-Net; the message says why."""


class InceptionGraphError(Error, RuntimeError):
  """The Inception graph is missing or unusable; the message says what to download and where to put it."""


class WriteError(Error, OSError):
  """A file could not be written (no space left, no permission, a read-only file system); the message names it."""


class NonFiniteLossError(Error, RuntimeError):
  """Training produced a NaN or inf loss; the weights of the failing step were not applied. `last_checkpoint` is
  the run's last good checkpoint, if any."""

  def __init__(self, step, loss, last_checkpoint=None):
    self.step, self.loss, self.last_checkpoint = step, loss, last_checkpoint
    super().__init__('the training loss is {} at step {}; training stopped before applying that step{}'.format(
      loss, step, '; the last good checkpoint is {}'.format(last_checkpoint) if last_checkpoint else ''))


class TrainingStopped(Error, RuntimeError):
  """Training stopped on SIGTERM or SIGINT after saving the current step; `exit_code` is 128 + the signal number
  (as a shell reports a process that a signal ended)."""

  def __init__(self, signal_name, signum, step, ckpt):
    self.exit_code = 128 + signum
    super().__init__('training stopped by {} at step {}: saved {}; rerun the same command to resume from it'.format(
      signal_name, step, ckpt))


class ClusterError(Error, RuntimeError):
  """Multi-worker training lost a worker (it never joined, died or cannot be reached)."""
