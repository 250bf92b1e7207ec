"""Stopping training cleanly on SIGTERM (how cloud VMs and job schedulers preempt) or SIGINT (Ctrl-C).

While a `StopSignals` context is active (run_training wraps Estimator.train in one), the first SIGTERM or SIGINT
only records the signal; `StopOnSignalHook` then asks the training loop to stop after the current step (on a TPU:
the current loop of iterations_per_loop steps), and the Estimator's CheckpointSaverHook saves that step when the
session ends (all variables: weights, EMA shadows, optimizer slots, global_step). The first signal also puts back
the default action, so a second signal ends the process at once, even in the middle of that save: TF's Saver
writes the data, then the index, and lists a checkpoint in the `checkpoint` state file only after both are
complete, so a save cut short is never what a rerun resumes from.
"""

import signal
import threading

import tensorflow.compat.v1 as tf

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
  """Context manager; `signum` is the first stop signal received inside it (None if none). Handlers can only be
  installed from the main thread; elsewhere it does nothing and signals keep their usual effect."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    for s in STOP_SIGNALS:
      signal.signal(s, signal.SIG_DFL)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in STOP_SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc_info):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
    return False

  @property
  def name(self):
    return signal.Signals(self.signum).name if self.signum is not None else None


class StopOnSignalHook(tf.train.SessionRunHook):
  """Requests a stop after the step during which `stop_signals` received a signal."""

  def __init__(self, stop_signals, printer=print):
    self._stop_signals = stop_signals
    self._print = printer

  def begin(self):
    self._step = tf.train.get_global_step()

  def after_run(self, run_context, run_values):
    if self._stop_signals.signum is not None and not run_context.stop_requested:
      self._print('stopping on {}: saving step {}'.format(
        self._stop_signals.name, int(run_context.session.run(self._step))))
      run_context.request_stop()
