"""The session hooks of the training loop: progress lines and the NaN/inf check (ProgressHook, and
ProgressHookFactory, which finds the Estimator's loss), the --max_train_secs bound (StopAfterSecsHook), and the
watchdog that ends a worker of a cluster whose peers are gone (WorkerWatchdogHook).
"""

import os
import subprocess
import sys
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
  """Ends this worker when no training step has finished for `timeout_secs`, or when the first has not finished
  `startup_secs` (default: `timeout_secs`) after `start()`.

  The all-reduce of a multi-worker step waits for every peer without a timeout: a peer that never started or has
  died leaves the others blocked inside TensorFlow (TF 1.15 in session.run, TF 2.15 already while joining the
  cluster, in the strategy's constructor, holding Python's lock), where no hook, exception, signal handler or thread
  of the worker can act. So the watch runs in a process of its own (watchdog_process.py): after_run tells it of each
  step, and when a bound passes it writes one `error:` line and kills the worker. start() is called before the worker
  joins the cluster, so the first bound covers joining it, building the graph, restoring the checkpoint and the
  first step, which can take far longer than a step of a running job; from the first step on, each step must follow
  the one before within `timeout_secs`. stop() (or the end of the session) ends the watch.
  """

  def __init__(self, timeout_secs, cluster, startup_secs=None):
    self._timeout, self._cluster = timeout_secs, cluster
    # the first step's bound, and the flag that set it (for the error line)
    self._startup = (timeout_secs, 'worker_timeout_secs') if startup_secs is None else (
      startup_secs, 'worker_startup_secs')
    self._proc = None

  def _message(self, what, flag, bound):
    return worker_lost_message(self._cluster, '{} in {{idle}} s (--{}={})'.format(what, flag, bound))

  def start(self):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'watchdog_process.py')
    self._proc = subprocess.Popen(
      [sys.executable, '-I', script, str(os.getpid()), str(self._startup[0]), str(self._timeout),
       self._message('the first training step did not finish', self._startup[1], self._startup[0]),
       self._message('no training step finished', 'worker_timeout_secs', self._timeout)],
      stdin=subprocess.PIPE, close_fds=True)
    os.set_blocking(self._proc.stdin.fileno(), False)

  def stop(self):
    if self._proc is not None and self._proc.poll() is None:
      self._proc.stdin.close()  # the end of the watch
      self._proc.wait()

  def after_run(self, run_context, run_values):
    try:
      os.write(self._proc.stdin.fileno(), b'.')
    except OSError:  # a full pipe already holds news of a step
      pass

  def end(self, session):
    self.stop()
