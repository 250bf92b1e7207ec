"""Training infrastructure: resuming after SIGKILL, stopping on a NaN loss, TPU host-call summaries, the multi-replica
(mirrored) path. Tiny configs: the embedded digits at 8x8, a 2-level U-Net with 32 channels, T = 10."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from support.scripts import PYTHON, SCRIPTS, checkpoint_steps, load_script, read_scalars

from diffusion_tf import checks
from diffusion_tf.data import catalog as datasets
from diffusion_tf.errors import UsageError
from diffusion_tf.train import loop as training
from diffusion_tf.train import summaries as tpu_summaries
from diffusion_tf.tpu_utils import tpu_utils

TINY_DIGITS = ['--dataset=digits', '--resolution=8', '--model_name=tiny', '--num_diffusion_timesteps=10',
               '--total_bs=4', '--warmup=2']


def _train_cmd(model_dir, *extra):
  return [PYTHON, os.path.join(SCRIPTS, 'run_cifar.py'), 'train', '--exp_name=kill'] + TINY_DIGITS + [
    '--model_dir={}'.format(model_dir), '--save_summary_steps=1', '--log_every_steps=1'] + list(extra)


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_from_the_last_checkpoint(tmp_path):
  model_dir = str(tmp_path / 'run')
  with open(str(tmp_path / 'first.log'), 'w') as log:
    proc = subprocess.Popen(_train_cmd(model_dir, '--save_checkpoints_steps=2', '--max_steps=100000'),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
      deadline = time.time() + 240
      while time.time() < deadline:  # wait until a checkpoint after step 0 is listed, then kill without warning
        ckpt = tf.train.latest_checkpoint(model_dir) if os.path.isdir(model_dir) else None
        if ckpt and tpu_utils.checkpoint_step(ckpt) >= 4:
          break
        assert proc.poll() is None, open(str(tmp_path / 'first.log')).read()
        time.sleep(0.2)
      else:
        pytest.fail('no checkpoint after step 4 within 240 s')
    finally:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
  killed_at = tpu_utils.checkpoint_step(tf.train.latest_checkpoint(model_dir))
  assert killed_at >= 4

  # The same command (with a bound on the steps) continues from there, without asking anything
  result = subprocess.run(_train_cmd(model_dir, '--save_checkpoints_steps=2', '--max_steps={}'.format(killed_at + 3)),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
  out = result.stdout.decode()
  assert result.returncode == 0, out
  assert 'resuming from' in out and '(step {})'.format(killed_at) in out, out
  assert max(checkpoint_steps(model_dir)) == killed_at + 3
  loss_steps = sorted(read_scalars(model_dir)['train/loss'])
  assert max(loss_steps) == killed_at + 3  # the step count continued
  # kwargs.json is there and describes the run
  assert tpu_utils.load_train_kwargs(model_dir)['model_name'] == 'tiny'


class _NanAtStep3:
  """A run_cifar Model whose loss becomes NaN from global step 3 on."""

  def __new__(cls, **kwargs):
    run_cifar = load_script('run_cifar')

    class Model(run_cifar.Model):
      def train_fn(self, x, y):
        loss = super().train_fn(x, y)['loss']
        nan_from_3 = tf.where(tf.train.get_or_create_global_step() >= 3, np.float32(np.nan), np.float32(0.))
        return {'loss': loss + nan_from_3}

    return Model(**kwargs)


def test_nan_loss_stops_training_naming_the_step(tmp_path):
  from diffusion_tf.diffusion_utils_2 import get_beta_schedule
  ds = datasets.get_dataset('digits', resolution=8)
  model_dir = str(tmp_path / 'run')
  make_model = lambda: _NanAtStep3(
    model_name='tiny', betas=get_beta_schedule('linear', beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=10),
    model_mean_type='eps', model_var_type='fixedlarge', loss_type='mse', num_classes=1, dropout=0., randflip=0)
  with pytest.raises(tpu_utils.NonFiniteLossError) as info:
    tpu_utils.run_training(model_constructor=make_model, train_input_fn=ds.train_input_fn, total_bs=4,
                           optimizer='adam', lr=1e-3, warmup=0, grad_clip=1., model_dir=model_dir,
                           save_checkpoints_steps=2, max_steps=10, printer=lambda *_: None)
  message = str(info.value)
  assert info.value.step == 3 and 'at step 3' in message and 'model.ckpt-2' in message, message
  # the last good checkpoint is kept and finite
  assert checkpoint_steps(model_dir) == [0, 2]
  reader = tf.train.load_checkpoint(os.path.join(model_dir, 'model.ckpt-2'))
  for name in reader.get_variable_to_shape_map():
    value = reader.get_tensor(name)
    if np.issubdtype(np.asarray(value).dtype, np.floating):
      assert np.all(np.isfinite(value)), name


def _scalar_events(log_dir):
  """{tag: {step: value}} of TF 2 summaries (stored as tensors) in log_dir."""
  out = {}
  for name in os.listdir(log_dir):
    for event in tf.train.summary_iterator(os.path.join(log_dir, name)):
      for v in event.summary.value:
        out.setdefault(v.tag, {})[int(event.step)] = float(tf.make_ndarray(v.tensor))
  return out


def test_tpu_host_call_reduces_per_core_values_and_writes_every_n_steps(tmp_path):
  """The host side of TPU summaries: values arrive as [num_cores] (here 2 cores); the host writes their mean every
  save_summary_steps steps."""
  from tensorflow.python.ops import gen_summary_ops, summary_ops_v2
  with tf.Graph().as_default():
    global_step = tf.train.get_or_create_global_step()
    summ = tpu_summaries.TpuSummaries(str(tmp_path), save_summary_steps=2)
    summ.scalar('train/loss', tf.constant(1.0))
    summ.scalar('train/lr', tf.constant(0.5))
    host_fn, tensors = summ.get_host_call()
    assert [t.shape.as_list() for t in tensors] == [[1], [1], [1]]
    two_cores = [tf.concat([t, t], 0) for t in tensors]
    two_cores[1] = tf.constant([1.0, 2.0])  # the two cores' losses differ
    ops = host_fn(*two_cores)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      sess.run(summary_ops_v2.summary_writer_initializer_op())
      for _ in range(5):
        sess.run(ops)
        sess.run(global_step.assign_add(1))
      sess.run(gen_summary_ops.flush_summary_writer(summary_ops_v2.summary_writer_initializer_op()[0].inputs[0]))
  events = _scalar_events(str(tmp_path))
  assert events['train/loss'] == {0: 1.5, 2: 1.5, 4: 1.5}
  assert events['train/lr'] == {0: 0.5, 2: 0.5, 4: 0.5}


@pytest.mark.slow
def test_mirrored_training_on_two_cpu_replicas(tmp_path, capsys):
  """The multi-device path (an Estimator with a MirroredStrategy, as for several GPUs) of the tiny U-Net on 2 CPU
  devices: per-replica batches, summaries, and EMA shadows (built in cross-replica context) that average the weights
  after each step, for every variable: w_1 after step 0 (decay ~0), 0.5 w_1 + 0.5 w_2 after step 1 (--ema_decay=0.5).
  The replicas draw their own t and noise, so the U-Net's step is not comparable with a one-replica step here; that
  the two-replica step is the one-replica step is proven on a model without randomness by
  test_flags_train_update.test_two_cpu_replicas_take_the_one_replica_step."""
  run_cifar = load_script('run_cifar')
  model_dir = str(tmp_path / 'run')
  run_cifar.train(exp_name='m', dataset='digits', resolution=8, model_name='tiny', num_diffusion_timesteps=10,
                  total_bs=4, warmup=0, model_dir=model_dir, max_steps=2, save_checkpoints_steps=1,
                  keep_checkpoint_max=3, save_summary_steps=1, num_cpu_replicas=2, ema_decay=0.5)
  out = capsys.readouterr().out
  assert 'mirrored, replicas=2' in out and 'per replica 2' in out, out
  assert checkpoint_steps(model_dir) == [0, 1, 2]
  readers = [tf.train.load_checkpoint(os.path.join(model_dir, 'model.ckpt-{}'.format(k))) for k in range(3)]
  suffix = '/ExponentialMovingAverage'
  names = [n[:-len(suffix)] for n in readers[2].get_variable_to_shape_map() if n.endswith(suffix)]
  assert 'model/conv_in/W' in names and 'model/conv_out/W' in names
  for name in names:
    w1, w2 = [r.get_tensor(name).astype(np.float64) for r in readers[1:]]
    np.testing.assert_allclose(readers[1].get_tensor(name + suffix), w1, rtol=1e-6, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(readers[2].get_tensor(name + suffix), 0.5 * w1 + 0.5 * w2, rtol=1e-6, atol=1e-7,
                               err_msg=name)
  # both steps moved the (zero-initialised) output layer far beyond those tolerances: the shadows are not the
  # weights before each step
  w0, w1, w2 = [r.get_tensor('model/conv_out/W') for r in readers]
  assert np.abs(w1 - w0).max() > 1e-5 and np.abs(w2 - w1).max() > 1e-5
  assert {'train/loss', 'train/gnorm', 'train/pnorm', 'train/lr'} <= set(read_scalars(model_dir))


class _QuadraticModel(tpu_utils.Model):
  """loss = 0.5 mean_b ||w - s_b a||^2, s_b the mean of example b's pixels in [-1, 1]: gradient w - mean_b(s_b) a."""

  A = np.array([1., 2., 2.], np.float32)  # norm 3

  def train_fn(self, x, y):
    w = tf.get_variable('w', initializer=np.zeros(3, np.float32))
    s = tf.reduce_mean(x, axis=[1, 2, 3])  # [B]
    return {'loss': 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(w[None] - s[:, None] * self.A[None]), axis=1))}


def _rmsprop_first_step(grad, lr, decay=.95, momentum=.9, eps=1e-8):
  """tf.train.RMSPropOptimizer's first update of a variable (its mean square starts at 1, its momentum at 0)."""
  ms = decay * 1. + (1. - decay) * grad ** 2
  return -(momentum * 0. + lr * grad / np.sqrt(ms + eps))


def test_mirrored_clipping_averages_each_replicas_clipped_gradient(tmp_path):
  """2 CPU replicas, one example each: replica 0's gradient has norm 3 (clipped at grad_clip = 1), replica 1's
  norm ~0.01 (not clipped). The step applies mean_i clip(g_i, 1), recomputed here in numpy, through RMSProp (whose
  first step, unlike Adam's, depends on the gradient's scale)."""
  pixels = np.array([255, 128], np.int32)  # example k: every pixel equals pixels[k]

  def input_fn(params):
    images = np.repeat(pixels, 2 * 2 * 3).reshape(2, 2, 2, 3)
    ds = tf.data.Dataset.from_tensor_slices({'image': images, 'label': np.zeros(2, np.int32)})
    return ds.repeat().batch(params['batch_size'], drop_remainder=True)

  lr, grad_clip = 0.1, 1.
  model_dir = str(tmp_path / 'run')
  tpu_utils.run_training(model_constructor=_QuadraticModel, train_input_fn=input_fn, total_bs=2, optimizer='rmsprop',
                         lr=lr, warmup=0, grad_clip=grad_clip, model_dir=model_dir, save_checkpoints_steps=1,
                         max_steps=1, num_cpu_replicas=2, printer=lambda *_: None)
  w1 = tf.train.load_checkpoint(os.path.join(model_dir, 'model.ckpt-1')).get_tensor('w')

  a = _QuadraticModel.A.astype(np.float64)
  grads = [0. - (p / 127.5 - 1.) * a for p in pixels]  # per replica, at w = 0
  clip = lambda g, c: g * min(1., c / np.linalg.norm(g))
  assert np.linalg.norm(grads[0]) > grad_clip > np.linalg.norm(grads[1])
  expected = _rmsprop_first_step(np.mean([clip(g, grad_clip) for g in grads], axis=0), lr)
  np.testing.assert_allclose(w1, expected, rtol=1e-5)
  # what other clipping rules would give is far from it: the test can tell them apart
  for other in [clip(np.mean(grads, axis=0), grad_clip),  # clip the averaged gradient
                np.sum([clip(g / 2, grad_clip) for g in grads], axis=0)]:  # clip at grad_clip after the 1/N scaling
    assert np.abs(_rmsprop_first_step(other, lr) - expected).max() > 100 * 1e-5 * np.abs(expected).max()


@pytest.mark.slow
def test_lsun_warm_start_initialises_every_variable(tmp_path):
  """run_lsun --warm_start_model_dir warms all variables as the original's vars_to_warm_start=['.*']: the weights,
  Adam's slots and power accumulators, the EMA shadows and the global step."""
  from support.data import make_tiny_lsun
  run_lsun = load_script('run_lsun')
  tfr = str(tmp_path / 'tiny-r04.tfrecords')
  make_tiny_lsun(tfr, 8, 16)
  common = dict(model_name='tiny', num_diffusion_timesteps=10, total_bs=2, warmup=0, lr=1e-3, tfr_file=tfr,
                save_checkpoints_steps=1)
  source, warmed = str(tmp_path / 'source'), str(tmp_path / 'warmed')
  run_lsun.train(exp_name='s', model_dir=source, max_steps=2, **common)
  run_lsun.train(exp_name='w', model_dir=warmed, max_steps=3, warm_start_model_dir=source, **common)
  src = tf.train.load_checkpoint(os.path.join(source, 'model.ckpt-2'))
  assert checkpoint_steps(warmed) == [2, 3]  # the step count continued from 2: one step was trained
  dst = tf.train.load_checkpoint(os.path.join(warmed, 'model.ckpt-3'))
  # Adam's beta1 power is 0.9^(steps + 1): 0.9^3 after the source's 2 steps, 0.9^4 after one more
  assert src.get_tensor('beta1_power') == pytest.approx(0.9 ** 3)
  assert dst.get_tensor('beta1_power') == pytest.approx(0.9 ** 4)
  # the EMA shadow moved from the source's by (1 - 0.9999) of one step: it was warm-started, not reinitialised
  w_ema = 'model/conv_in/W/ExponentialMovingAverage'
  np.testing.assert_allclose(dst.get_tensor(w_ema), src.get_tensor(w_ema), atol=1e-5)
  assert np.abs(src.get_tensor(w_ema) - src.get_tensor('model/conv_in/W')).max() < 1e-2
  # and the weights: one Adam step (about lr = 1e-3 per element) from the source's, not a new init (U(-0.14, 0.14))
  assert np.abs(dst.get_tensor('model/conv_in/W') - src.get_tensor('model/conv_in/W')).max() < 5e-3


@pytest.mark.parametrize('bad', [dict(total_bs=True), dict(ema_decay=1.), dict(keep_checkpoint_max=0),
                                 dict(save_checkpoints_steps=5, save_checkpoints_secs=60), dict(optimizer='sgd'),
                                 dict(max_train_secs=2.5), dict(worker_timeout_secs=0),
                                 dict(worker_startup_secs=0)])
def test_run_training_refuses_what_the_train_flags_refuse_with_the_same_message(tmp_path, bad):
  """The library entry point and the scripts' flags share one check: the same bad setting gives the same error,
  before any model or device is touched (the constructor would fail if it were called)."""
  settings = dict(total_bs=4, optimizer='adam', lr=1e-4, warmup=0, grad_clip=1., ema_decay=0.9999,
                  keep_checkpoint_max=2, iterations_per_loop=1, log_every_steps=1, save_summary_steps=1,
                  worker_timeout_secs=600, max_steps=10, save_checkpoints_steps=None, save_checkpoints_secs=None,
                  max_train_secs=None, seed=None, worker_startup_secs=None)
  settings.update(bad)
  with pytest.raises(UsageError) as flags_error:
    checks.check_train_flags(dict(settings, exp_name='x', date_str=None))
  with pytest.raises(UsageError) as library_error:
    training.run_training(model_constructor=None, train_input_fn=None, model_dir=str(tmp_path / 'run'), **settings)
  assert str(library_error.value) == str(flags_error.value)
  assert not os.path.exists(str(tmp_path / 'run'))
