"""The session hooks of the training loop: progress lines and the NaN/inf check (ProgressHook, and
ProgressHookFactory, which finds the Estimator's loss), the --max_train_secs bound (StopAfterSecsHook), and the
watchdog that ends a worker of a cluster whose peers are gone (WorkerWatchdogHook).
"""

import os
import sys
import threading
import time

import numpy as np
import tensorflow.compat.v1 as tf

from ..errors import NonFiniteLossError
from ..runs.devices import CLUSTER_TASK_TYPES, TF_CONFIG_VAR
from ..runs.run_dir import latest_checkpoint


class ProgressHook(tf.train.SessionRunHook):
  """Prints step, loss and steps/s every `every_n_steps` steps (on TPU: once per loop of iterations_per_loop), and
  stops with NonFiniteLossError on a NaN/inf loss (on CPU/GPU the in-graph check fires first)."""

  def __init__(self, loss, every_n_steps, max_steps, model_dir, printer):
    self._loss, self._every, self._max_steps, self._model_dir = loss, every_n_steps, max_steps, model_dir
    self._print = printer
    self._last_time = self._last_step = None

  def begin(self):
    self._step_tensor = tf.train.get_global_step()

  def after_create_session(self, session, coord):
    self._last_step = int(session.run(self._step_tensor))
    self._last_time = time.time()

  def before_run(self, run_context):
    return tf.train.SessionRunArgs({'loss': self._loss, 'step': self._step_tensor})

  def after_run(self, run_context, run_values):
    loss, step = float(run_values.results['loss']), int(run_values.results['step'])
    if not np.isfinite(loss):
      raise NonFiniteLossError(step, loss, latest_checkpoint(self._model_dir))
    if step + 1 - self._last_step >= self._every or step + 1 >= self._max_steps:
      step = int(run_context.session.run(self._step_tensor))  # after this run's update
      now = time.time()
      rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
      self._print('step {:d}  loss {:.5f}  {:.2f} steps/s'.format(step, loss, rate))
      self._last_step, self._last_time = step, now


class ProgressHookFactory(tf.train.SessionRunHook):
  """A ProgressHook on the loss the Estimator's model_fn builds: it finds the loss tensor (the LOSSES collection)
  once the graph exists, which is after the hooks are made."""

  def __init__(self, every_n_steps, max_steps, model_dir, printer):
    self._args = (every_n_steps, max_steps, model_dir, printer)
    self._hook = None

  def begin(self):
    losses = tf.get_collection(tf.GraphKeys.LOSSES)
    self._hook = ProgressHook(losses[-1] if losses else tf.constant(0.), *self._args)
    self._hook.begin()

  def after_create_session(self, session, coord):
    self._hook.after_create_session(session, coord)

  def before_run(self, run_context):
    return self._hook.before_run(run_context)

  def after_run(self, run_context, run_values):
    self._hook.after_run(run_context, run_values)


class StopAfterSecsHook(tf.train.SessionRunHook):
  """Requests a stop (the Estimator then saves a checkpoint) once `secs` seconds have passed since the session
  was created."""

  def __init__(self, secs, printer):
    self._secs, self._print = secs, printer
    self._deadline = None

  def after_create_session(self, session, coord):
    self._deadline = time.time() + self._secs

  def after_run(self, run_context, run_values):
    if time.time() > self._deadline:
      self._print('stopping: --max_train_secs={} reached'.format(self._secs))
      run_context.request_stop()


def worker_lost_message(cluster, detail):
  return ('{}: {}; a worker of the {} cluster ({}) is missing, has died or cannot be reached; restart every worker '
          'with the same command to resume from the latest checkpoint'.format(
            cluster, detail, TF_CONFIG_VAR, ', '.join(a for t in CLUSTER_TASK_TYPES for a in cluster.spec.get(t, []))))


class WorkerWatchdogHook(tf.train.SessionRunHook):
  """Ends this worker when no training step has finished for `timeout_secs`.

  The all-reduce of a multi-worker step waits for every peer, and in TF 1.15 a collective op has no timeout: a peer
  that never started or has died leaves the others blocked inside session.run, where neither a hook nor an
  exception can reach them. A watchdog thread is the one way out: it prints one `error:` line and exits the process
  (status 1). The clock starts when the session is being created (joining the cluster counts) and restarts after
  every step.
  """

  def __init__(self, timeout_secs, cluster):
    self._timeout, self._cluster = timeout_secs, cluster
    self._last = None
    self._done = threading.Event()

  def begin(self):
    self._last = time.time()
    threading.Thread(target=self._watch, name='worker_watchdog', daemon=True).start()

  def after_run(self, run_context, run_values):
    self._last = time.time()

  def end(self, session):
    self._done.set()

  def _watch(self):
    while not self._done.wait(min(5., self._timeout / 10.)):
      idle = time.time() - self._last
      if idle > self._timeout:
        print('error: {}'.format(worker_lost_message(
          self._cluster, 'no training step finished in {:.0f} s (--worker_timeout_secs={})'.format(
            idle, self._timeout))), file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)
