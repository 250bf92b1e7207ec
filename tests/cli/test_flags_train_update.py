"""`train --lr --warmup --optimizer --grad_clip --ema_decay --num_cpu_replicas`: each flag changes the applied update
the way the update rule says.

Every run is `run_cifar.py train` on the digits at 8x8 (tiny U-Net, T = 10, batch 4, no dropout or flips, --seed), with
a checkpoint after every step (model.ckpt-0 holds the initial weights) and the summaries of every step. Runs that
differ only in an optimizer flag share the graph seed, batch, t and noise, so they see the same gradient g at step 0.
The U-Net's output convolution starts at ~0 (variance scaling 1e-10, the original's init_scale=0), so at step 0 the
other layers' gradients, which pass through it, are ~1e-7 per element: the update comparisons are made on its weights
(their update, ~1e-4 from |w_0| ~ 1e-6, is resolved to float32 precision), and its gradient's norm is the logged
train/gnorm to < 1e-8. The numpy update rules written here are tf.train's (utils.make_optimizer):
RMSProp (decay .95, momentum .9, eps 1e-8; its mean square starts at 1) and Adam (eps 1e-8, beta2 .999).

- rmsprop + lr: inverting the RMSProp step elementwise with the given lr recovers g; its norm must be the logged
  train/gnorm (another lr, or another rule, gives another norm).
- adam + lr: Adam's first step, lr g / (|g| + eps / sqrt(1 - beta2)), of that same g.
- grad_clip and warmup, one run (--warmup=2 --grad_clip=0.25): step 0 at lr 0 leaves the weights unchanged and
  RMSProp's mean square at .95 + .05 (g c / ||g||)^2 (its checkpointed slot); step 1 at lr / 2, inverted from that
  mean square, recovers a gradient of norm c, below the logged unclipped norm.
- ema_decay: the shadows after steps 0 and 1 are w_1 and d w_1 + (1 - d) w_2, from the raw weights: the average
  reads the weights after the optimizer step (training.py; in the original the two raced).
- num_cpu_replicas: on a model without randomness (monkeypatched into the script) two replicas of one example each
  take exactly the one-replica step of both examples, computed in numpy; the logged norm is one replica's.
run_celebahq.py and run_lsun.py hand the same flags to the same training.run_training
(test_every_script_hands_the_optimizer_flags_to_run_training), so what is proven here through run_cifar.py holds
for them. Per-replica clipping is proven by tests/test_training.py (test_mirrored_clipping_...).
"""

import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from support.data import make_tiny_lsun
from support.scripts import checkpoint_steps, load_script, read_scalars

from diffusion_tf.cli import cifar10 as cifar_commands
from diffusion_tf.data import catalog as datasets
from diffusion_tf.experiments import model
from diffusion_tf.train import loop as training
from diffusion_tf.checks import default_kwargs
from diffusion_tf.unet_layout import EMA_SUFFIX

SEED = 1
LR = 3e-3  # not any script's default lr, so a dropped --lr shows
RHO, MOMENTUM, EPS = .95, .9, 1e-8  # utils.make_optimizer's RMSProp
ADAM_BETA2 = .999
OUT = ('model/conv_out/W', 'model/conv_out/b')  # the U-Net's last layer, ~0 at initialisation

TINY = dict(exp_name='upd', dataset='digits', resolution=8, model_name='tiny', num_diffusion_timesteps=10,
            total_bs=4, dropout=0., randflip=0, seed=SEED, save_checkpoints_steps=1, keep_checkpoint_max=5,
            save_summary_steps=1, log_every_steps=1)
# rmsprop at LR without warm-up or clipping; ema_decay 0.5 so that one EMA step is far from float32 rounding
BASE = dict(TINY, optimizer='rmsprop', lr=LR, warmup=0, grad_clip=1e9, ema_decay=0.5, max_steps=2)


# ---------------------------------------------------------------------------------------------------------------
# The update rules (tf.train's), and their inverses

def _rmsprop_step(g, lr, ms=1., mom=0.):
  """One tf.train.RMSPropOptimizer update of a variable from its slots: (delta, new ms, new mom)."""
  ms = RHO * ms + (1. - RHO) * g ** 2
  mom = MOMENTUM * mom + lr * g / np.sqrt(ms + EPS)
  return -mom, ms, mom


def _rmsprop_gradient(delta, lr, ms=1.):
  """The g whose RMSProp update at lr, from mean square ms and zero momentum, is delta: solves
  delta = -lr g / sqrt(rho ms + (1 - rho) g^2 + eps) elementwise (NaN where no g gives delta)."""
  a = RHO * ms + EPS
  with np.errstate(invalid='ignore', divide='ignore'):
    return -np.sign(delta) * np.abs(delta) * np.sqrt(a / (lr ** 2 - (1. - RHO) * delta ** 2))


def _adam_first_step(g, lr):
  """Adam's first update: lr_1 = lr sqrt(1 - b2) / (1 - b1), m = (1 - b1) g, v = (1 - b2) g^2, -lr_1 m / (sqrt(v) +
  eps) = -lr g / (|g| + eps / sqrt(1 - b2))."""
  return -lr * g / (np.abs(g) + EPS / np.sqrt(1. - ADAM_BETA2))


def _norm(arrays):
  """Global norm of a dict of arrays (tf.clip_by_global_norm's)."""
  return float(np.sqrt(sum(np.sum(np.square(a)) for a in arrays.values())))


def _map(fn, *dicts):
  return {k: fn(*[d[k] for d in dicts]) for k in dicts[0]}


class _Run:
  """A finished training run: raw weights and EMA shadows (float64) of checkpoint k, and its summaries."""

  def __init__(self, model_dir):
    self.model_dir = model_dir
    self.scalars = read_scalars(model_dir)

  def logged(self, tag, step):
    """Summary `tag` of training step `step` (global step k -> k + 1): the Estimator's summary hook records it at
    global step k + 1."""
    return self.scalars[tag][step + 1]

  def _reader(self, step):
    return tf.train.load_checkpoint(os.path.join(self.model_dir, 'model.ckpt-{}'.format(step)))

  def tensor(self, step, name):
    """Any variable of checkpoint `step` (e.g. an optimizer slot), float64."""
    return self._reader(step).get_tensor(name).astype(np.float64)

  def weights(self, step):
    reader = self._reader(step)
    names = [n[:-len(EMA_SUFFIX)] for n in reader.get_variable_to_shape_map() if n.endswith(EMA_SUFFIX)]
    assert names
    return {n: reader.get_tensor(n).astype(np.float64) for n in names}

  def shadows(self, step):
    reader = self._reader(step)
    return {n: reader.get_tensor(n + EMA_SUFFIX).astype(np.float64) for n in self.weights(step)}

  def delta(self, step):
    """The update of the output layer (OUT) by step `step`: its weights in checkpoint step + 1 minus step."""
    before, after = self.weights(step), self.weights(step + 1)
    return {n: after[n] - before[n] for n in OUT}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """runs(name) trains run `name` once (see _RUNS) and returns it as a _Run."""
  root = tmp_path_factory.mktemp('flags_train_update')
  done = {}

  def get(name):
    if name not in done:
      flags = _RUNS[name](get)
      model_dir = str(root / name)
      load_script('run_cifar').train(model_dir=model_dir, **flags)
      assert checkpoint_steps(model_dir) == list(range(flags['max_steps'] + 1))
      done[name] = _Run(model_dir)
    return done[name]

  return get


def _base_gradient(runs):
  """The step-0 gradient g of the output layer (the same in every run below), from the base run's RMSProp update."""
  return _map(lambda d: _rmsprop_gradient(d, LR), runs('base').delta(0))


CLIP = 0.25  # below the gradient norms of steps 0 and 1 (~0.65), and far from the default 1

_RUNS = {
  'base': lambda runs: BASE,
  'adam': lambda runs: dict(BASE, optimizer='adam', max_steps=1),
  # the two flags that act where the base run's step does not: step 0 at lr 0, step 1 at lr/2, both clipped
  'warmup_clip': lambda runs: dict(BASE, warmup=2, grad_clip=CLIP, max_steps=2),
}


def _warmup_clip_step1_gradient(runs, lr):
  """The output layer's step-1 gradient (after clipping) of the warmup_clip run, recovered from its step-1 update
  inverted at `lr` from the mean square that step 0 left, ms_0 = .95 + .05 g_0c^2 (g_0c: the base run's step-0
  gradient clipped to CLIP; step 0, at lr 0, left the momentum at 0)."""
  run = runs('warmup_clip')
  g0c = _map(lambda g: g * CLIP / max(run.logged('train/gnorm', 0), CLIP), _base_gradient(runs))
  return _map(lambda d, g: _rmsprop_gradient(d, lr, RHO + (1. - RHO) * g ** 2), run.delta(1), g0c)


# ---------------------------------------------------------------------------------------------------------------
# --optimizer, --lr, --grad_clip, --warmup

def test_rmsprop_step_inverted_at_lr_gives_the_logged_gradient_norm(runs):
  """--optimizer=rmsprop --lr: the step-0 update d = -lr g / sqrt(.95 + .05 g^2 + eps) inverted elementwise at
  lr = --lr recovers a gradient whose global norm equals train/gnorm of step 0 (computed by clip_by_global_norm).
  With the default lr (2e-4) the recovered norm would be 15x too large; under Adam's rule (every |d| ~ lr) the
  inversion gives |g| ~ 1 in every element."""
  base = runs('base')
  gnorm = base.logged('train/gnorm', 0)
  assert base.logged('train/lr', 0) == pytest.approx(LR)
  # the premise: the output layer starts at ~0 and every other weight moves < 1e-3 as much (its gradient ~1e-7)
  w0, w1 = base.weights(0), base.weights(1)
  d = base.delta(0)
  assert max(np.abs(w0[n]).max() for n in OUT) < 1e-5
  assert max(np.abs(w1[n] - w0[n]).max() for n in w0 if n not in OUT) < 1e-3 * np.abs(d[OUT[0]]).max()
  g = _base_gradient(runs)
  assert all(np.all(np.isfinite(v)) for v in g.values())
  assert _norm(g) == pytest.approx(gnorm, rel=1e-5)
  # what the run would show if it had used the default lr, or Adam's first step
  assert _norm(_map(lambda x: _rmsprop_gradient(x, 2e-4), d)) > 10 * gnorm
  adam_d = _map(lambda x: _adam_first_step(x, LR), g)
  assert abs(_norm(_map(lambda x: _rmsprop_gradient(x, LR), adam_d)) / gnorm - 1.) > 0.5


def test_adam_first_step_is_lr_times_g_over_its_magnitude(runs):
  """--optimizer=adam --lr: Adam's first update of the output layer is -lr g / (|g| + eps / sqrt(1 - beta2)), g the
  step-0 gradient recovered from the RMSProp run (the same seed and inputs: the same train/gnorm). Fails if the flag
  were ignored (RMSProp's d ~ lr g is 10-1000x smaller here) or if lr were (the update is proportional to lr)."""
  adam = runs('adam')
  assert adam.logged('train/gnorm', 0) == runs('base').logged('train/gnorm', 0)
  g = _base_gradient(runs)
  d = adam.delta(0)
  for name in g:
    np.testing.assert_allclose(d[name], _adam_first_step(g[name], LR), rtol=1e-5, atol=1e-12, err_msg=name)
  rms = runs('base').delta(0)[OUT[0]]
  assert np.abs(d[OUT[0]]).max() > 5 * np.abs(rms).max()


def test_grad_clip_scales_the_gradient_to_the_clip_norm(runs):
  """--grad_clip=0.25, below both steps' gradient norms (~0.65, logged unclipped as train/gnorm): at step 0 (lr 0 in
  this run) RMSProp's mean square, its slot in model.ckpt-1, becomes .95 + .05 (g c / ||g||)^2 elementwise, g the
  base run's gradient (clip_by_global_norm: every variable scaled by one factor); the step-1 update inverted at lr/2
  gives a gradient of norm exactly c. Fails if the flag were ignored: with the default 1 (or the base run's 1e9)
  nothing is clipped, the mean square holds g^2 and the recovered norm is the logged one."""
  run = runs('warmup_clip')
  gnorm0, gnorm1 = run.logged('train/gnorm', 0), run.logged('train/gnorm', 1)
  assert gnorm0 == runs('base').logged('train/gnorm', 0)
  assert 1.5 * CLIP < min(gnorm0, gnorm1) and max(gnorm0, gnorm1) < 1.
  g = _base_gradient(runs)
  for name in OUT:
    ms = run.tensor(1, name + '/RMSProp')
    np.testing.assert_allclose(ms, RHO + (1. - RHO) * (g[name] * CLIP / gnorm0) ** 2, rtol=0, atol=2e-7, err_msg=name)
  # what no clipping would have left, far beyond that tolerance
  ms = run.tensor(1, OUT[0] + '/RMSProp')
  assert np.abs(ms - (RHO + (1. - RHO) * g[OUT[0]] ** 2)).max() > 1e-5
  assert _norm(_warmup_clip_step1_gradient(runs, LR / 2)) == pytest.approx(CLIP, rel=1e-5)


def test_warmup_gives_lr_zero_then_lr_over_warmup(runs):
  """--warmup=2 (lr * min(step / 2, 1)): train/lr is 0 then lr/2; step 0 leaves every weight unchanged (it only
  moves RMSProp's mean square); the step-1 update inverted at lr/2 recovers a gradient of the norm that clipping
  gives it (see the previous test). Without the warm-up (lr at step 0) the weights would move at step 0 and the
  inversion at lr would give another norm; with the default 5000 steps, lr/5000 cannot produce the step-1 update
  (the inversion has no solution)."""
  run = runs('warmup_clip')
  lr = [run.logged('train/lr', k) for k in range(2)]
  assert lr[0] == 0. and lr[1] == pytest.approx(LR / 2)
  w0, w1 = run.weights(0), run.weights(1)
  for name in w0:
    np.testing.assert_array_equal(w1[name], w0[name], err_msg=name)
  assert _norm(_warmup_clip_step1_gradient(runs, LR / 2)) == pytest.approx(CLIP, rel=1e-5)
  assert abs(_norm(_warmup_clip_step1_gradient(runs, LR)) / CLIP - 1.) > 0.3
  assert not np.isfinite(_norm(_warmup_clip_step1_gradient(runs, LR / 5000)))


# ---------------------------------------------------------------------------------------------------------------
# --ema_decay

def test_ema_decay_averages_the_weights_after_each_step(runs):
  """--ema_decay=0.5: the EMA update runs after the optimizer's, with decay ~0 after step 0 (the shadow becomes the
  updated weights w_1) and 0.5 after step 1: shadow_2 = 0.5 w_1 + 0.5 w_2 (raw weights of model.ckpt-1, -2). Fails if
  the flag were ignored (0.9999 leaves shadow_2 ~ w_1) or if the average read the weights before the step
  (shadow_1 = w_0)."""
  base = runs('base')
  w0, w1, w2 = base.weights(0), base.weights(1), base.weights(2)
  s1, s2 = base.shadows(1), base.shadows(2)
  out = OUT[0]
  for name in w1:
    np.testing.assert_allclose(s1[name], w1[name], rtol=1e-6, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(s2[name], 0.5 * w1[name] + 0.5 * w2[name], rtol=1e-6, atol=1e-7, err_msg=name)
  # the alternatives are far beyond those tolerances on the output layer
  assert np.abs(w1[out] - w0[out]).max() > 1e-4
  assert np.abs((0.9999 * w1[out] + 0.0001 * w2[out]) - s2[out]).max() > 1e-4


# ---------------------------------------------------------------------------------------------------------------
# --num_cpu_replicas

class _PixelMeanModel(model.Model):
  """No randomness: loss = 0.5 mean_b ||w - s_b A||^2, s_b the mean of example b's pixels in [-1, 1], so the
  gradient is w - mean_b(s_b) A and one example's is w - s_b A (norm 3 |s_b| at w = 0)."""

  A = np.array([1., 2., 2.])

  def train_fn(self, x, y):
    w = tf.get_variable('w', initializer=np.zeros(3, np.float32))
    s = tf.reduce_mean(x, axis=[1, 2, 3])  # [B]
    return {'loss': 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(w[None] - s[:, None] * self.A[None]), axis=1))}


def _digits_pixel_means(num_batches, batch_size):
  """s_b of the first batches that the digits training input fn yields under graph seed SEED (its shuffle has its
  own op seed): [num_batches, batch_size]."""
  with tf.Graph().as_default():
    tf.set_random_seed(SEED)
    batch = tf.data.make_one_shot_iterator(
      datasets.get_dataset('digits', resolution=8).train_input_fn({'batch_size': batch_size})).get_next()
    with tf.Session() as sess:
      images = [sess.run(batch)['image'] for _ in range(num_batches)]
  return np.array([(im.astype(np.float64) / 127.5 - 1.).mean(axis=(1, 2, 3)) for im in images])


def test_two_cpu_replicas_take_the_one_replica_step(tmp_path, monkeypatch):
  """--num_cpu_replicas=2, global batch 2, RMSProp without clipping, 2 steps: each replica differentiates its own
  example; the applied step is the one-replica step on both examples (the mean of the per-replica gradients), equal
  to the numpy RMSProp run on the digits' pixel means, and the EMA (--ema_decay=0.5, built in cross-replica context)
  follows the weights as on one replica. The logged gnorm is a replica's ||g_i / 2||, not ||mean g||: that is
  where the flag shows (ignored, the run would log the one-replica norm)."""
  monkeypatch.setattr(cifar_commands, '_load_model', lambda kwargs, ds: _PixelMeanModel())
  flags = dict(TINY, total_bs=2, optimizer='rmsprop', lr=LR, warmup=0, grad_clip=1e9, ema_decay=0.5, max_steps=2)
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  load_script('run_cifar').train(model_dir=one, **flags)
  load_script('run_cifar').train(model_dir=two, num_cpu_replicas=2, **flags)
  one, two = _Run(one), _Run(two)

  s = _digits_pixel_means(2, 2)  # [step, example]
  w, ms, mom = np.zeros(3), 1., 0.
  expected = [w]
  for step in range(2):
    g = w - s[step].mean() * _PixelMeanModel.A
    d, ms, mom = _rmsprop_step(g, LR, ms, mom)
    w = w + d
    expected.append(w)
  for step in range(3):
    np.testing.assert_allclose(one.weights(step)['w'], expected[step], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(two.weights(step)['w'], expected[step], rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(two.shadows(1)['w'], expected[1], rtol=1e-5)
  np.testing.assert_allclose(two.shadows(2)['w'], 0.5 * expected[1] + 0.5 * expected[2], rtol=1e-5)

  norm_of_mean = 3. * abs(s[0].mean())
  per_replica = sorted(3. * abs(s[0]) / 2.)
  assert one.logged('train/gnorm', 0) == pytest.approx(norm_of_mean, rel=1e-5)
  assert min(abs(two.logged('train/gnorm', 0) - v) for v in per_replica) < 1e-5 * norm_of_mean
  assert min(abs(norm_of_mean - v) for v in per_replica) > 1e-2 * norm_of_mean


# ---------------------------------------------------------------------------------------------------------------
# run_celebahq.py, run_lsun.py

def test_every_script_hands_the_optimizer_flags_to_run_training(tmp_path, monkeypatch):
  """run_cifar, run_celebahq and run_lsun `train` pass --lr, --warmup, --optimizer, --grad_clip, --ema_decay and
  --num_cpu_replicas unchanged to training.run_training (through script_utils.train_from_kwargs), whose use of them
  the tests above prove. The values differ from every script's defaults, so a script that dropped one fails."""
  calls = {}
  monkeypatch.setattr(training, 'run_training', lambda **kw: calls.setdefault(len(calls), kw))
  flags = dict(optimizer='rmsprop', lr=LR, warmup=7, grad_clip=0.25, ema_decay=0.5, num_cpu_replicas=2)
  tfr = str(tmp_path / 'lsun.tfrecords')
  make_tiny_lsun(tfr, 4, 8)
  common = dict(exp_name='pass', model_name='tiny', num_diffusion_timesteps=10, total_bs=2)
  digits = dict(dataset='digits', resolution=8)
  scripts = [('run_cifar', digits), ('run_celebahq', digits),
             ('run_lsun', dict(tfr_file=tfr))]
  for i, (name, extra) in enumerate(scripts):
    train = load_script(name).train
    defaults = default_kwargs(train)
    assert all(defaults[k] != v for k, v in flags.items()), name
    train(model_dir=str(tmp_path / name), **common, **extra, **flags)
    assert {k: calls[i][k] for k in flags} == flags, name
  assert len(calls) == len(scripts)
