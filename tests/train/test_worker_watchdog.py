"""The multi-worker watchdog's watcher process (diffusion_tf/train/watchdog_process.py) on a stand-in worker: a
`sleep` process it watches and kills. The whole path in real clusters: test_multi_worker.py."""

import os
import subprocess
import sys
import time

from diffusion_tf.train import watchdog_process

SCRIPT = watchdog_process.__file__


def _watch(worker, startup, step):
  return subprocess.Popen(
    [sys.executable, '-I', SCRIPT, str(worker.pid), str(startup), str(step), 'first {idle}', 'step {idle}'],
    stdin=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def test_steps_keep_the_worker_alive_and_a_late_one_kills_it_with_one_error_line():
  worker = subprocess.Popen(['sleep', '60'])
  try:
    watcher = _watch(worker, startup=1.5, step=1.)
    t0 = time.time()
    for _ in range(4):  # 2 s in all: longer than either bound, but each step is in time
      time.sleep(0.5)
      watcher.stdin.write('.')
      watcher.stdin.flush()
    assert worker.poll() is None
    assert watcher.wait(timeout=10) == 1  # stdin still open: the worker is alive but its steps stopped
    err = watcher.stderr.read()
    assert worker.wait(timeout=10) == -9  # SIGKILL: a worker blocked in TensorFlow handles no other signal
    assert 2. + 1. <= time.time() - t0 < 2. + 6.
    assert err == 'error: step 1\n', err  # the step bound's message, its {idle} the seconds waited
  finally:
    worker.kill()


def test_the_first_step_has_the_startup_bound():
  worker = subprocess.Popen(['sleep', '60'])
  try:
    t0 = time.time()
    watcher = _watch(worker, startup=2., step=0.5)
    assert watcher.wait(timeout=10) == 1
    err = watcher.stderr.read()
    assert worker.wait(timeout=10) == -9
    assert 2. <= time.time() - t0 < 8.
    assert err == 'error: first 2\n', err
  finally:
    worker.kill()


def test_the_end_of_stdin_ends_the_watch_and_leaves_the_worker():
  worker = subprocess.Popen(['sleep', '60'])
  try:
    watcher = _watch(worker, startup=1., step=1.)
    _, err = watcher.communicate(input='..', timeout=10)  # two steps, then the worker closes the pipe
    assert watcher.returncode == 0 and err == ''
    time.sleep(1.5)  # past both bounds
    assert worker.poll() is None
  finally:
    worker.kill()


def test_the_watcher_imports_nothing_but_the_standard_library():
  # it runs with -I and from its own directory; TensorFlow in it would cost seconds and memory on every worker
  out = subprocess.run([sys.executable, '-I', '-c', 'import runpy, sys; sys.argv = ["x"]; '
                        'runpy.run_path({!r}, run_name="not_main"); '
                        'print(sorted(m for m in sys.modules if m.startswith(("tensorflow", "numpy", "diffusion_tf"))))'
                        .format(SCRIPT)], stdout=subprocess.PIPE, universal_newlines=True, cwd=os.path.dirname(SCRIPT))
  assert out.returncode == 0 and out.stdout.strip() == '[]', out
