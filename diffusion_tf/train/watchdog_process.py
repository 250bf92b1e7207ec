"""The watcher process of a multi-worker training job (hooks.WorkerWatchdogHook starts it): it ends its parent, the
worker, when no training step has finished for too long. Standard library only: it runs as a script
(`python -I watchdog_process.py ...`) and never imports TensorFlow or this package.

A process, not a thread of the worker: while a TF 2.15 worker waits for a missing peer to join the cluster it holds
Python's lock inside TensorFlow, and no thread of its own can run.

    watchdog_process.py PARENT_PID STARTUP_SECS STEP_SECS STARTUP_MESSAGE STEP_MESSAGE

Every byte on stdin is a finished step. The first step must come STARTUP_SECS after the start, each later one
STEP_SECS after the one before; when one does not, the watcher writes `error: ` and the message of that bound (its
`{idle}` replaced by the seconds waited) to stderr, which it shares with the worker, and kills the worker (SIGKILL:
a worker blocked in TensorFlow handles no other signal). End of stdin (the worker closed it, or ended) ends the watch.
"""

import os
import select
import signal
import sys
import time


def watch(parent_pid, startup_secs, step_secs, startup_message, step_message, stdin_fd=0, stderr=sys.stderr):
  """Returns 0 at the end of stdin, 1 after killing the parent."""
  last, stepped = time.time(), False
  while True:
    bound, message = (step_secs, step_message) if stepped else (startup_secs, startup_message)
    remaining = last + bound - time.time()
    if remaining <= 0:
      stderr.write('error: {}\n'.format(message.replace('{idle}', '{:.0f}'.format(time.time() - last))))
      stderr.flush()
      try:
        os.kill(parent_pid, signal.SIGKILL)
      except OSError:  # already gone
        pass
      return 1
    readable, _, _ = select.select([stdin_fd], [], [], remaining)
    if readable:
      if not os.read(stdin_fd, 4096):
        return 0
      last, stepped = time.time(), True


if __name__ == '__main__':
  pid, startup, step, startup_msg, step_msg = sys.argv[1:]
  sys.exit(watch(int(pid), float(startup), float(step), startup_msg, step_msg))
