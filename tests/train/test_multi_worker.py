"""Multi-worker training driven by TF_CONFIG: worker processes of `run_cifar.py train` on 127.0.0.1 ports, a tiny
U-Net on 8x8 digits on the CPU. Every process has a deadline and is killed at the end of its test."""

import json
import os
import re
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from support.scripts import PYTHON, REPO, assert_one_error, checkpoint_steps, error_lines, run_main

from diffusion_tf.tpu_utils import tpu_utils

pytestmark = pytest.mark.slow  # real processes and whole training runs (pytest.ini)

# Deadlines. The watchdog's clock starts before the worker joins the cluster, so STARTUP_TIMEOUT
# (--worker_startup_secs) covers joining it, building the graph, restoring and the first step: more than 120 s when
# the machine's 2 cores also run the other test process. STEP_TIMEOUT (--worker_timeout_secs) bounds every later
# step, which takes well under a second for this model: the dead-worker test waits up to STEP_TIMEOUT after the kill.
STARTUP_TIMEOUT, STEP_TIMEOUT = 240, 40
RUN_DEADLINE = 900
TRAIN_FLAGS = ['--exp_name=mw', '--model_name=tiny', '--dataset=digits', '--resolution=8',
               '--num_diffusion_timesteps=10', '--total_bs=4', '--warmup=1', '--log_every_steps=1',
               '--save_summary_steps=1']
TIMEOUT_FLAGS = ['--worker_startup_secs={}'.format(STARTUP_TIMEOUT), '--worker_timeout_secs={}'.format(STEP_TIMEOUT)]
STEP_RE = re.compile(r'^step (\d+)  loss (\S+)', re.M)


def _loopback_addresses(n):
  """n free 127.0.0.1 ports (bound together, so they differ, then released for the workers)."""
  socks = []
  try:
    for _ in range(n):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind(('127.0.0.1', 0))
      socks.append(s)
    return ['127.0.0.1:{}'.format(s.getsockname()[1]) for s in socks]
  finally:
    for s in socks:
      s.close()


class _Cluster:
  """Worker processes of one TF_CONFIG cluster; their output goes to files in `log_dir`."""

  def __init__(self, log_dir, name, spec_types, flags, started=None):
    """One process per task of `spec_types` (or only the first `started` of them: the others never start)."""
    addresses = _loopback_addresses(len(spec_types))
    spec = {}
    for task_type, address in zip(spec_types, addresses):
      spec.setdefault(task_type, []).append(address)
    self.procs, self.logs = [], []
    tasks = [(task_type, index) for task_type in spec for index in range(len(spec[task_type]))]
    for task_type, index in tasks[:started]:
      tf_config = json.dumps({'cluster': spec, 'task': {'type': task_type, 'index': index}})
      env = dict(os.environ, TF_CONFIG=tf_config, CUDA_VISIBLE_DEVICES='', PYTHONPATH=REPO)
      env.pop('DIFFUSION_TF_DEBUG', None)
      log = os.path.join(log_dir, '{}_{}{}'.format(name, task_type, index))
      self.logs.append(log)
      with open(log + '.out', 'w') as out, open(log + '.err', 'w') as err:
        self.procs.append(subprocess.Popen(
          [PYTHON, os.path.join(REPO, 'scripts', 'run_cifar.py'), 'train'] + TRAIN_FLAGS + flags,
          env=env, stdout=out, stderr=err, cwd=REPO))

  def output(self, i):
    with open(self.logs[i] + '.out') as out, open(self.logs[i] + '.err') as err:
      return out.read(), err.read()

  def wait(self, deadline_secs):
    end = time.time() + deadline_secs
    for p in self.procs:
      p.wait(timeout=max(end - time.time(), 1))
    return [p.returncode for p in self.procs]

  def kill(self):
    for p in self.procs:
      if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)


@pytest.fixture(scope='module')
def cluster_run(tmp_path_factory):
  """Two workers (the workers-only form of TF_CONFIG: worker 0 is the chief) train 4 steps, a checkpoint every 2."""
  root = tmp_path_factory.mktemp('multi_worker')
  model_dir = str(root / 'run')
  cluster = _Cluster(str(root), 'first', ['worker', 'worker'],
                     TIMEOUT_FLAGS + ['--model_dir={}'.format(model_dir), '--max_steps=4',
                                      '--save_checkpoints_steps=2'])
  try:
    codes = cluster.wait(RUN_DEADLINE)
  finally:
    cluster.kill()
  return dict(root=root, model_dir=model_dir, codes=codes, outputs=[cluster.output(i) for i in range(2)])


def _variables(ckpt):
  reader = tf.train.load_checkpoint(ckpt)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_workers_train_together_and_only_the_chief_writes_the_run(cluster_run):
  model_dir, outputs = cluster_run['model_dir'], cluster_run['outputs']
  assert cluster_run['codes'] == [0, 0], outputs
  steps = []
  for i, (out, err) in enumerate(outputs):
    assert not error_lines(err), err
    assert 'Traceback' not in out + err, err  # TF 1.15's server torn down at interpreter exit printed one
    assert 'worker {} of 2 workers{}'.format(i, ' (chief)' if i == 0 else '') in out
    assert 'global batch 4, per replica 2' in out  # replicas of both workers share the global batch
    assert 'input pipeline {} of 2'.format(i) in out  # each worker reads its own shard of the data
    steps.append(STEP_RE.findall(out))
  assert [int(s) for s, _ in steps[0]] == [1, 2, 3, 4]
  assert steps[0] == steps[1]  # the same steps with the same (global) loss on both workers
  # the chief writes the run: checkpoints, one event file, kwargs.json
  assert checkpoint_steps(model_dir)[-2:] == [2, 4]
  assert len([f for f in os.listdir(model_dir) if f.startswith('events.out.tfevents')]) == 1
  assert json.load(open(os.path.join(model_dir, 'kwargs.json')))['total_bs'] == 4
  # worker 1 saved its throw-away copy (TensorFlow's design): its weights are the chief's, bit for bit
  chief = _variables(os.path.join(model_dir, 'model.ckpt-4'))
  worker = _variables(os.path.join(model_dir, 'tmp_worker_1', 'model.ckpt-4'))
  assert set(chief) == set(worker) and 'model/conv_in/W/ExponentialMovingAverage' in chief
  for name in chief:
    np.testing.assert_array_equal(chief[name], worker[name], err_msg=name)
  before = _variables(os.path.join(model_dir, 'model.ckpt-2'))
  assert not np.array_equal(before['model/conv_in/W'], chief['model/conv_in/W'])  # training moved the weights


def test_the_chiefs_checkpoint_restores(cluster_run, capsys, tmp_path):
  assert cluster_run['codes'] == [0, 0]
  code, out, err = run_main(capsys, 'run_cifar', [
    'sample', '--model_dir={}'.format(cluster_run['model_dir']), '--num_samples=2', '--batch_size=2',
    '--sampler=ddim', '--num_inference_steps=2', '--out_dir={}'.format(tmp_path / 'samples')])
  assert code == 0, err
  assert json.load(open(str(tmp_path / 'samples' / 'info.json')))['step'] == 4


def test_a_killed_worker_stops_the_others_with_an_error_after_resuming(cluster_run):
  """The chief form of TF_CONFIG on the same run directory: both resume from step 4; worker 0 is killed after step 6
  and the chief ends with one error line within the watchdog's step timeout (the start-up had a longer one)."""
  assert cluster_run['codes'] == [0, 0]
  cluster = _Cluster(str(cluster_run['root']), 'resumed', ['chief', 'worker'],
                     TIMEOUT_FLAGS + ['--model_dir={}'.format(cluster_run['model_dir']), '--max_steps=1000000',
                                      '--save_checkpoints_steps=1000'])
  try:
    deadline = time.time() + RUN_DEADLINE
    while not any(int(s) >= 6 for s, _ in STEP_RE.findall(cluster.output(1)[0])):
      assert all(p.poll() is None for p in cluster.procs), [cluster.output(i) for i in range(2)]
      assert time.time() < deadline, 'the resumed cluster did not reach step 6'
      time.sleep(1)
    cluster.procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    cluster.procs[0].wait(timeout=STEP_TIMEOUT + 120)
    waited = time.time() - killed
  finally:
    cluster.kill()
  out, err = cluster.output(0)
  assert 'resuming from {}'.format(os.path.join(cluster_run['model_dir'], 'model.ckpt-4')) in out
  assert [int(s) for s, _ in STEP_RE.findall(out)][0] == 5  # the step count continues
  assert_one_error(cluster.procs[0].returncode, err, 'chief 0 of 2 workers (chief)', 'missing, has died',
                   'no training step finished', '(--worker_timeout_secs={})'.format(STEP_TIMEOUT))
  assert STEP_TIMEOUT - 5 <= waited < STEP_TIMEOUT + 60, waited  # its last step was just before the kill


def test_a_peer_that_never_starts_stops_the_chief_at_the_startup_timeout(tmp_path):
  """A cluster of two whose second worker never starts: the chief waits for it (TF 1.15 in its first step, TF 2.15
  while joining the cluster) and ends with one error line --worker_startup_secs after it began to train, not at the
  (longer) step timeout."""
  startup = 15
  cluster = _Cluster(str(tmp_path), 'alone', ['worker', 'worker'],
                     ['--model_dir={}'.format(tmp_path / 'run'), '--max_steps=4', '--worker_timeout_secs=600',
                      '--worker_startup_secs={}'.format(startup)], started=1)
  try:
    started = time.time()
    cluster.procs[0].wait(timeout=STARTUP_TIMEOUT + 120)  # the process's own start-up, then the 15 s
    waited = time.time() - started
  finally:
    cluster.kill()
  out, err = cluster.output(0)
  assert not STEP_RE.findall(out), out
  assert_one_error(cluster.procs[0].returncode, err, 'worker 0 of 2 workers (chief)', 'missing, has died',
                   'the first training step did not finish', '(--worker_startup_secs={})'.format(startup))
  assert startup <= waited < 600, waited


def test_tf_config_errors_are_one_line(monkeypatch, capsys, tmp_path):
  expected = [
    ('{"cluster": ', 'is not valid JSON'),
    ('{"cluster": {"ps": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}',
     'task type(s) ps'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
     'is not a task of its cluster'),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', 'host:port'),
    ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}',
     'lists an address twice'),
  ]
  for value, needle in expected:
    with pytest.raises(tpu_utils.UsageError, match=re.escape(needle)):
      tpu_utils.cluster_from_tf_config(value)
  assert tpu_utils.cluster_from_tf_config('') is None
  assert tpu_utils.cluster_from_tf_config('{"task": {"type": "worker", "index": 0}}') is None
  cluster = tpu_utils.cluster_from_tf_config(
    '{"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]}, "task": {"type": "worker", "index": 1}}')
  assert (cluster.num_workers, cluster.worker_id, cluster.is_chief) == (3, 2, False)
  # through the command line: one error line, before any graph is built
  monkeypatch.setenv('TF_CONFIG', expected[1][0])
  code, _, err = run_main(capsys, 'run_cifar', ['train'] + TRAIN_FLAGS + ['--model_dir={}'.format(tmp_path / 'r')])
  assert_one_error(code, err, 'TF_CONFIG', 'task type(s) ps')
  monkeypatch.setenv('TF_CONFIG', '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}')
  code, _, err = run_main(capsys, 'run_cifar', ['train'] + TRAIN_FLAGS + [
    '--model_dir={}'.format(tmp_path / 'r'), '--max_train_secs=10'])
  assert_one_error(code, err, 'max_train_secs=10', 'expected --max_steps')
