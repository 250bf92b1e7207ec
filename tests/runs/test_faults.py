"""Runs that survive faults, injected for real: unreadable checkpoints (bytes flipped, files cut short, a missing
shard), SIGTERM/SIGINT during training (real processes and signals), a full or read-only file system (a real tmpfs:
1 MB, and 64 MB for a training run, whose checkpoints are 13 MB each; skipped where this user cannot mount), and two
trainers on one run directory. Tiny configs: the embedded digits at 8x8, the 2-level 'tiny' U-Net, T = 10."""

import glob
import json
import os
import signal
import socket
import subprocess
import time

import pytest
import tensorflow.compat.v1 as tf

from support.scripts import PYTHON, SCRIPTS, assert_one_error, checkpoint_steps, copy_run, load_script, run_main

from diffusion_tf.runs import checkpoint_recovery, run_dir
from diffusion_tf.tpu_utils import tpu_utils

pytestmark = pytest.mark.slow  # real processes and whole training runs (pytest.ini)

TINY = ['--dataset=digits', '--resolution=8', '--model_name=tiny', '--num_diffusion_timesteps=10', '--total_bs=4',
        '--warmup=2', '--dropout=0', '--randflip=0']
TIMEOUT = 600  # seconds, for every subprocess (TF 2.15 takes minutes to start training on a busy machine)


def _train_argv(model_dir, *extra):
  return ['train', '--exp_name=f'] + TINY + ['--model_dir={}'.format(model_dir), '--log_every_steps=1'] + list(extra)


def _train_cmd(model_dir, *extra):
  return [PYTHON, os.path.join(SCRIPTS, 'run_cifar.py')] + _train_argv(model_dir, *extra)


@pytest.fixture(scope='module')
def trained(tiny_run):
  """A run directory with checkpoints at steps 0, 2 and 4 (all listed in the state file); read-only: see run_copy."""
  model_dir = tiny_run('run_cifar', warmup=2, max_steps=4, save_checkpoints_steps=2)
  assert checkpoint_steps(model_dir) == [0, 2, 4]
  return model_dir


@pytest.fixture
def run_copy(trained, tmp_path):
  model_dir = copy_run(trained, tmp_path / 'run')
  # the state file names the checkpoints relative to the directory, so the copy is a run of its own
  assert tf.train.latest_checkpoint(model_dir) == os.path.join(model_dir, 'model.ckpt-4')
  return model_dir


def _flip_data(prefix):
  path = prefix + '.data-00000-of-00001'
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0xff
  open(path, 'wb').write(bytes(data))


def _cut(path):
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) // 2])


CORRUPTIONS = {
  'flipped_data_byte': _flip_data,
  'truncated_data': lambda prefix: _cut(prefix + '.data-00000-of-00001'),
  'truncated_index': lambda prefix: _cut(prefix + '.index'),
  'missing_shard': lambda prefix: os.remove(prefix + '.data-00000-of-00001'),
}


def _moved_aside(model_dir, name):
  return glob.glob(os.path.join(model_dir, checkpoint_recovery.UNREADABLE_DIR, '*', name + '.*'))


@pytest.mark.parametrize('kind', sorted(CORRUPTIONS))
def test_lookup_skips_an_unreadable_latest_checkpoint_and_moves_it_aside(run_copy, kind):
  bad = os.path.join(run_copy, 'model.ckpt-4')
  CORRUPTIONS[kind](bad)
  # given explicitly, a bad checkpoint is an error naming it, not a fallback
  with pytest.raises(tpu_utils.UsageError, match='checkpoint {} cannot be read'.format(bad)):
    tpu_utils.resolve_checkpoint(bad)
  warnings = []
  assert tpu_utils.latest_checkpoint(run_copy, warn=warnings.append) == os.path.join(run_copy, 'model.ckpt-2')
  assert len(warnings) == 1 and bad in warnings[0] and 'cannot be read' in warnings[0], warnings
  # moved, not deleted; the state file (what Estimator resumes from) agrees with the lookup
  assert _moved_aside(run_copy, 'model.ckpt-4') and checkpoint_steps(run_copy) == [0, 2]
  assert tf.train.latest_checkpoint(run_copy) == os.path.join(run_copy, 'model.ckpt-2')
  assert tpu_utils.resolve_checkpoint(run_copy) == os.path.join(run_copy, 'model.ckpt-2')


def test_all_checkpoints_unreadable_leaves_none(run_copy):
  for step in (0, 2, 4):
    _flip_data(os.path.join(run_copy, 'model.ckpt-{}'.format(step)))
  warnings = []
  assert tpu_utils.latest_checkpoint(run_copy, warn=warnings.append) is None
  assert len(warnings) == 3 and checkpoint_steps(run_copy) == []
  assert tf.train.latest_checkpoint(run_copy) is None  # the state file went aside with them


def test_training_resumes_from_the_newest_readable_checkpoint(run_copy, capsys):
  _flip_data(os.path.join(run_copy, 'model.ckpt-4'))
  code, out, err = run_main(capsys, 'run_cifar', _train_argv(run_copy, '--max_steps=3', '--save_checkpoints_steps=2'))
  assert code == 0, err
  warnings = [line for line in err.splitlines() if line.startswith('warning:')]
  assert len(warnings) == 1 and 'model.ckpt-4' in warnings[0], err
  assert 'resuming from {} (step 2)'.format(os.path.join(run_copy, 'model.ckpt-2')) in out, out
  assert checkpoint_steps(run_copy)[-2:] == [2, 3]
  assert _moved_aside(run_copy, 'model.ckpt-4')


def test_sample_falls_back_for_a_directory_and_names_an_explicit_bad_checkpoint(run_copy, capsys, tmp_path):
  bad = os.path.join(run_copy, 'model.ckpt-4')
  _cut(bad + '.data-00000-of-00001')
  explicit = ['sample', '--checkpoint={}'.format(bad), '--num_samples=2', '--batch_size=2',
              '--out_dir={}'.format(tmp_path / 'explicit')]
  code, out, err = run_main(capsys, 'run_cifar', explicit)
  assert_one_error(code, err, bad, 'cannot be read')
  assert 'Traceback' not in err and not (tmp_path / 'explicit').exists()
  code, out, err = run_main(capsys, 'run_cifar', ['sample', '--model_dir={}'.format(run_copy), '--num_samples=2',
                                                  '--batch_size=2', '--out_dir={}'.format(tmp_path / 'dir')])
  assert code == 0, err
  assert 'warning: checkpoint {} cannot be read'.format(bad) in err
  assert json.load(open(str(tmp_path / 'dir' / 'info.json')))['step'] == 2


def test_evaluation_and_simple_eval_fall_back(run_copy, capsys):
  _cut(os.path.join(run_copy, 'model.ckpt-4.index'))
  code, out, err = run_main(capsys, 'run_cifar', ['evaluation', '--model_dir={}'.format(run_copy), '--once',
                                                  '--dump_samples_only', '--num_inception_samples=2',
                                                  '--total_bs=2'])
  assert code == 0, err
  assert 'model.ckpt-4 cannot be read' in err
  assert os.path.exists(os.path.join(run_copy, 'eval', 'step00000002_ema_samples.npz'))
  _flip_data(os.path.join(run_copy, 'model.ckpt-2'))
  code, out, err = run_main(capsys, 'run_cifar', ['simple_eval', '--model_dir={}'.format(run_copy),
                                                  '--mode=progressive_samples', '--total_bs=2', '--num_samples=2'])
  assert code == 0, err
  assert 'model.ckpt-2 cannot be read' in err
  parts = glob.glob(os.path.join(run_copy, 'simple_eval', 'progressive_samples', 'samples_xstartpred_ema1_*.npz'))
  assert [os.path.basename(p) for p in parts] == ['samples_xstartpred_ema1_step000000000_part000000.npz'], parts


def test_watching_evaluation_skips_an_unreadable_new_checkpoint(run_copy, capsys):
  bad = os.path.join(run_copy, 'model.ckpt-4')
  _flip_data(bad)
  code, out, err = run_main(capsys, 'run_cifar', ['evaluation', '--model_dir={}'.format(run_copy),
                                                  '--dump_samples_only', '--num_inception_samples=2', '--total_bs=2',
                                                  '--poll_secs=1', '--timeout_secs=2'])
  assert code == 0, err
  assert 'warning: checkpoint {} cannot be read'.format(bad) in err
  assert _moved_aside(run_copy, 'model.ckpt-4')
  assert not os.path.exists(os.path.join(run_copy, 'eval', 'step00000004_ema_samples.npz'))


def test_converter_falls_back_for_a_directory_and_names_an_explicit_bad_checkpoint(run_copy, capsys, tmp_path):
  script = load_script('convert_diffusers_checkpoint')
  bad = os.path.join(run_copy, 'model.ckpt-4')
  _flip_data(bad)
  with pytest.raises(SystemExit) as info:
    script.main(['to_diffusers', '--ckpt', bad, '--out', str(tmp_path / 'explicit'), '--resolution', '8'])
  err = capsys.readouterr().err
  assert info.value.code != 0
  assert_one_error(1, err, bad, 'cannot be read')
  script.main(['to_diffusers', '--ckpt', run_copy, '--out', str(tmp_path / 'dir'), '--resolution', '8'])
  captured = capsys.readouterr()
  assert 'warning: checkpoint {} cannot be read'.format(bad) in captured.err
  assert os.path.exists(str(tmp_path / 'dir' / 'config.json'))


# ---------------------------------------------------------------------------------------------------------------
# SIGTERM / SIGINT during training, and one trainer per run directory (real processes and signals)

def _start(model_dir, logs, *extra):
  out, err = open(logs + '.out', 'w'), open(logs + '.err', 'w')
  proc = subprocess.Popen(_train_cmd(model_dir, *extra), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
  out.close()
  err.close()
  return proc


def _wait_for_step(proc, logs, step, timeout=TIMEOUT):
  """Wait until the trainer prints its progress line for global step >= `step`."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    for line in open(logs + '.out').read().splitlines():
      if line.startswith('step ') and int(line.split()[1]) >= step:
        return
    if proc.poll() is not None:
      pytest.fail('trainer ended early:\n' + open(logs + '.out').read() + open(logs + '.err').read())
    time.sleep(0.05)
  proc.kill()
  pytest.fail('no progress line for step {} within {} s'.format(step, timeout))


def _listed_are_readable(model_dir):
  state = tf.train.get_checkpoint_state(model_dir)
  listed = [os.path.join(model_dir, p) for p in state.all_model_checkpoint_paths] if state else []
  for ckpt in listed:
    assert checkpoint_recovery.checkpoint_problem(ckpt) is None, ckpt
  return listed


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_saves_the_current_step_and_a_rerun_resumes_there(tmp_path, sig):
  model_dir, logs = str(tmp_path / 'run'), str(tmp_path / 'train')
  proc = _start(model_dir, logs, '--save_checkpoints_steps=100000', '--max_steps=100000')
  try:
    _wait_for_step(proc, logs, 3)
    proc.send_signal(sig)
    proc.wait(timeout=TIMEOUT)
  finally:
    if proc.poll() is None:
      proc.kill()
  err = open(logs + '.err').read()
  assert proc.returncode == 128 + sig, (proc.returncode, err)
  line = assert_one_error(1, err, 'training stopped by {}'.format(signal.Signals(sig).name), 'rerun')
  step = int(line.split(' at step ')[1].split(':')[0])
  ckpt = os.path.join(model_dir, 'model.ckpt-{}'.format(step))
  assert 'saved {};'.format(ckpt) in line, line
  # the periodic saves are 100000 steps apart: this checkpoint is the signal's, of the step reached
  assert step >= 3 and checkpoint_steps(model_dir) == [0, step]
  assert tf.train.latest_checkpoint(model_dir) == ckpt and _listed_are_readable(model_dir)
  reader = tf.train.load_checkpoint(ckpt)
  names = reader.get_variable_to_shape_map()
  assert int(reader.get_tensor('global_step')) == step
  for name in ['model/conv_in/W', 'model/conv_in/W/ExponentialMovingAverage', 'model/conv_in/W/Adam',
               'model/conv_in/W/Adam_1']:
    assert name in names, name
  if sig == signal.SIGTERM:  # the same command resumes at that step
    result = subprocess.run(_train_cmd(model_dir, '--save_checkpoints_steps=100000', '--max_steps={}'.format(
      step + 1)), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert 'resuming from {} (step {})'.format(ckpt, step) in out, out
    assert checkpoint_steps(model_dir)[-1] == step + 1


def test_second_signal_during_the_save_ends_at_once_leaving_only_complete_checkpoints(tmp_path):
  model_dir, logs = str(tmp_path / 'run'), str(tmp_path / 'train')
  proc = _start(model_dir, logs, '--save_checkpoints_steps=100000', '--max_steps=100000')
  try:
    _wait_for_step(proc, logs, 3)
    proc.send_signal(signal.SIGTERM)
    # the trainer announces the save of the current step; the second signal follows at once
    deadline = time.time() + TIMEOUT
    while 'stopping on SIGTERM' not in open(logs + '.out').read() and proc.poll() is None:
      assert time.time() < deadline
      time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    proc.wait(timeout=TIMEOUT)
    assert time.time() - t0 < 10
  finally:
    if proc.poll() is None:
      proc.kill()
  assert 'stopping on SIGTERM: saving step' in open(logs + '.out').read()  # the first signal began a save
  # killed by the signal itself (during the save), or, if the save had just finished, the usual stop
  assert proc.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM), proc.returncode
  listed = _listed_are_readable(model_dir)
  assert listed and tpu_utils.latest_checkpoint(model_dir) == listed[-1]


def test_one_trainer_per_run_directory_and_a_killed_trainer_does_not_lock_it(tmp_path):
  model_dir, logs = str(tmp_path / 'run'), str(tmp_path / 'a')
  first = _start(model_dir, logs, '--save_checkpoints_steps=2', '--max_steps=100000')
  try:
    _wait_for_step(first, logs, 2)
    kwargs_before = open(os.path.join(model_dir, 'kwargs.json')).read()
    second = subprocess.run(_train_cmd(model_dir, '--max_steps=5', '--lr=1e-3'), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    assert_one_error(second.returncode, second.stderr.decode(), model_dir, 'another process',
                     'host {} pid {}'.format(socket.gethostname(), first.pid))
    assert open(os.path.join(model_dir, 'kwargs.json')).read() == kwargs_before  # untouched by the refused one
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=TIMEOUT)
  assert os.path.exists(os.path.join(model_dir, 'train.lock'))  # left by the killed trainer: no longer a lock
  step = tpu_utils.checkpoint_step(tf.train.latest_checkpoint(model_dir))
  third = subprocess.run(_train_cmd(model_dir, '--save_checkpoints_steps=2', '--max_steps={}'.format(step + 1)),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT)
  assert third.returncode == 0, third.stdout.decode()
  assert 'resuming from' in third.stdout.decode()
  assert not os.path.exists(os.path.join(model_dir, 'train.lock'))  # released at the end


# ---------------------------------------------------------------------------------------------------------------
# Full and read-only file systems (a real tmpfs)

@pytest.fixture
def tmpfs(tmp_path):
  """mount(size) -> the path of a fresh tmpfs of that size (e.g. '4m'); unmounted afterwards."""
  mounted = []

  def mount(size):
    path = str(tmp_path / 'disk{}'.format(len(mounted)))
    os.makedirs(path)
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size={}'.format(size), 'tmpfs', path],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if result.returncode != 0:
      pytest.skip('cannot mount a tmpfs here (mount needs root or CAP_SYS_ADMIN): {}'.format(
        result.stdout.decode().strip()))
    mounted.append(path)
    return path

  yield mount
  for path in mounted:
    subprocess.run(['umount', '-l', path], timeout=60)


def _fill(disk, leave_bytes):
  """Fill the file system of `disk` until only about `leave_bytes` are free."""
  stat = os.statvfs(disk)
  free = stat.f_bavail * stat.f_frsize
  with open(os.path.join(disk, 'filler'), 'wb') as f:
    f.write(b'\0' * max(0, free - leave_bytes))


def _no_temp_files(directory):
  return [p for p in glob.glob(os.path.join(directory, '**'), recursive=True) if '.tmp' in p or '_temp_' in p]


def test_atomic_writes_on_a_full_or_read_only_disk_name_the_file_and_keep_the_old_content(tmpfs):
  from diffusion_tf import utils
  disk = tmpfs('1m')
  path = os.path.join(disk, 'kwargs.json')
  utils.atomic_write_bytes(path, b'old')
  _fill(disk, 8192)
  with pytest.raises(utils.WriteError) as info:
    utils.atomic_write_bytes(path, b'new' * 100000)
  assert str(info.value).startswith('cannot write {}: no space left on device'.format(path)), str(info.value)
  assert open(path, 'rb').read() == b'old' and not _no_temp_files(disk)
  os.remove(os.path.join(disk, 'filler'))
  subprocess.run(['mount', '-o', 'remount,ro', disk], check=True, timeout=60)
  with pytest.raises(utils.WriteError, match='cannot write {}: read-only file system'.format(path)):
    utils.atomic_write_bytes(path, b'new')
  assert open(path, 'rb').read() == b'old'


def test_disk_full_while_training_is_one_error_and_earlier_checkpoints_stay_restorable(tmpfs, tmp_path):
  disk = tmpfs('64m')
  model_dir, logs = os.path.join(disk, 'run'), str(tmp_path / 'train')
  proc = _start(model_dir, logs, '--save_checkpoints_steps=2', '--keep_checkpoint_max=10', '--max_steps=100000')
  try:
    _wait_for_step(proc, logs, 1)  # the checkpoint of step 0 is written; the next one, at step 2, will not fit
    _fill(disk, 1 << 20)
    proc.wait(timeout=TIMEOUT)
  finally:
    if proc.poll() is None:
      proc.kill()
  err = open(logs + '.err').read()
  line = assert_one_error(proc.returncode, err, 'cannot write {}/'.format(model_dir), 'no space left on device')
  assert 'Traceback' not in err, err
  listed = _listed_are_readable(model_dir)
  assert os.path.join(model_dir, 'model.ckpt-0') in listed and listed[-1] in line
  assert not _no_temp_files(model_dir)  # the save cut short left nothing behind
  assert tpu_utils.resolve_checkpoint(model_dir) == listed[-1]


def test_the_step_of_a_checkpoint_name_is_read_in_one_place(tmp_path):
  """checkpoint_recovery.step_in_name reads <name>-N; run_dir.checkpoint_step falls back on it for a checkpoint
  without a global_step variable, and the recovery's ordering uses it too."""
  assert checkpoint_recovery.step_in_name('/runs/a/model.ckpt-790000') == 790000
  assert checkpoint_recovery.step_in_name('gs://b/model.ckpt-12') == 12
  assert checkpoint_recovery.step_in_name('/runs/a/model.ckpt') is None
  assert checkpoint_recovery.step_in_name('/runs/a/model.ckpt', default=0) == 0
  prefix = str(tmp_path / 'model.ckpt-37')
  with tf.Graph().as_default():
    tf.get_variable('w', initializer=tf.zeros([2]))
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      tf.train.Saver().save(sess, prefix)
  assert run_dir.checkpoint_step(prefix) == 37
