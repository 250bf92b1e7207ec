"""`evaluation` and `simple_eval` (run_cifar.py; run_celebahq.py and run_lsun.py `evaluation`): every flag changes
what runs the way an independent computation says, so a flag dropped after validation makes a test fail.

The run: the conftest's tiny run (the 'tiny' U-Net on the embedded digits at 8x8, T = 10, checkpoints at steps
0..3) with a large lr and EMA decay 0.5, which make the raw and the EMA weights of steps 2 and 3 four different
networks.
References computed here, not by the code under test:
- samples: the ancestral sampler (DDPM Algorithm 2: clipped x_0 prediction, posterior mean eq. 7, variance beta_t
  (fixedlarge, run_cifar) or beta~_t (run_celebahq/run_lsun)) written out in numpy. It calls the script's network
  with weights read from the checkpoint by name: the EMA shadow `<v>/ExponentialMovingAverage` or the raw `<v>` (not
  through run_dir.restore_weights, which --ema/--noema select). Its noise is the documented seeded noise: draw k of
  batch b on replica r is stateless_normal(seed=(seed, (64 b + r) 2^20 + k)); k = 1 is x_T, then one per step.
- metrics: the stand-in Inception graph's features of those unrounded samples and of the real digits; the Inception
  Score and the FID (eigenvalues of sigma_1 sigma_2) written out in numpy.
- bits/dim: the variational bound (DDPM eq. 5) in numpy: Gaussian KLs for L_1 .. L_{T-1}, the discretized decoder
  (eq. 13, with the original's tanh approximation of the normal CDF) for L_0 and the closed-form prior L_T. The only
  change made to the code under test: q_sample's noise is drawn as stateless_normal(seed=(s, t)) (fixture
  `known_q_noise`) instead of unseeded, so that the bound is a deterministic function of the weights and images.
- watch mode: a spy around tf.train.checkpoints_iterator (the real one does the polling) publishes a new checkpoint
  after the first evaluation and records when checkpoints arrive and when the watch ends.

Not provable on this machine: --num_gpus > 0 needs GPUs. The tests show that the value reaches the device choice
(with the GPU count faked: one GPU asked of none is an error; --num_gpus=1 of two samples on one replica, the default
on two, soft placement running the "GPUs" on the CPU). --tpu_name, --bucket_name_prefix, --region: TPU/GCS only.
run_celebahq's --tfds_data_dir reads celeb_a_hq, whose tfds builder needs the manual 30,000-image archive; its code
path (script_utils.evaluation_from_flags) is run_cifar's, shown with a cifar10 look-alike.
"""

import glob
import json
import os
import shutil
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from support.data import make_tiny_cifar10, make_tiny_lsun
from support.inception import make_standin_inception
from support.metrics import frechet_distance, gaussian
from support.metrics import inception_score as _inception_score
from support.network import CheckpointNetwork
from support.scripts import (
  LARGE_LR_FLAGS, assert_one_error, checkpoint_steps, copy_run, load_npz, load_script, read_scalars, run_main)

from diffusion_tf import inception
from diffusion_tf.diffusion_core import GaussianDiffusionBase
from diffusion_tf.experiments import celebahq_lsun as celebahq_lsun_model
from diffusion_tf.data import catalog as datasets
from diffusion_tf.runs import devices
from diffusion_tf.evaluation import simple_eval as simple_eval_worker

T = 10
BETA_END = 0.5  # T = 10 with the paper's 0.02 leaves alphabar_T = 0.9: the network would barely matter
SHAPE = (8, 8, 3)
EMA = '/ExponentialMovingAverage'
NUM_TRAIN_DIGITS = 1500  # the digits' training split; the other 297 are the test split
# The conftest's tiny run with a large lr and EMA decay 0.5 (shared with test_flags_reproduce_editing.py)
TRAIN_FLAGS = LARGE_LR_FLAGS
assert TRAIN_FLAGS['beta_end'] == BETA_END
# the same for the runs trained here on other data
OWN_TRAIN_FLAGS = dict(num_diffusion_timesteps=T, model_name='tiny', total_bs=4, warmup=0, dropout=0., randflip=0,
                       seed=0, **TRAIN_FLAGS)


# ---------------------------------------------------------------------------------------------------------------
# References in numpy

class _Schedule:
  """DDPM's coefficients (sec. 2) for linear betas 1e-4 .. beta_end, float64; t = 0..T-1 is the paper's 1..T."""

  def __init__(self, beta_end=BETA_END):
    self.betas = np.linspace(1e-4, beta_end, T)
    self.abar = np.cumprod(1. - self.betas)
    self.abar_prev = np.append(1., self.abar[:-1])
    self.post_var = self.betas * (1. - self.abar_prev) / (1. - self.abar)  # beta~_t, eq. 7

  def x0_from_eps(self, x, eps, t):
    """x_0 of x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps (eq. 4), clipped to the data range."""
    return np.clip((x - np.sqrt(1. - self.abar[t]) * eps) / np.sqrt(self.abar[t]), -1., 1.)

  def posterior_mean(self, x0, x, t):
    """mu~_t(x_t, x_0), eq. 7."""
    b, a, a_prev = self.betas[t], self.abar[t], self.abar_prev[t]
    return b * np.sqrt(a_prev) / (1. - a) * x0 + (1. - a_prev) * np.sqrt(1. - b) / (1. - a) * x


SCHEDULE = _Schedule()


def _samples(net, *, n, batch_size, seed, variance='fixedlarge', replicas=1, schedule=SCHEDULE, with_x0=False):
  """n float samples of the ancestral sampler in batches of batch_size split over `replicas`, from the seeded noise;
  with_x0: also the clipped x_0 predictions [n, T, ...] at t = T-1 .. 0."""
  samples, x0_preds = [], []
  local = batch_size // replicas
  for b in range(-(-n // batch_size)):
    for r in range(replicas):
      def draw(k, stream0=(64 * b + r) * 2 ** 20):
        return net.noise(seed, stream0 + k, [local] + net._shape)

      x, preds = draw(1), []
      for k, t in enumerate(range(T - 1, -1, -1)):
        x0 = schedule.x0_from_eps(x, net.eps(x, t), t)
        preds.append(x0)
        mean = schedule.posterior_mean(x0, x, t)
        var = schedule.betas[t] if variance == 'fixedlarge' else schedule.post_var[t]
        x = mean + np.sqrt(var) * draw(k + 2) if t > 0 else mean  # no noise at the last step
      samples.append(x)
      x0_preds.append(np.stack(preds, axis=1))
  samples, x0_preds = np.concatenate(samples)[:n], np.concatenate(x0_preds)[:n]
  return (samples, x0_preds) if with_x0 else samples


def _normal_kl(mean1, logvar1, mean2, logvar2):
  return 0.5 * (-1. + logvar2 - logvar1 + np.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * np.exp(-logvar2))


def _approx_cdf(x):
  """The original's approximation of the standard normal CDF: 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
  return 0.5 * (1. + np.tanh(np.sqrt(2. / np.pi) * (x + 0.044715 * x ** 3)))


def _decoder_nll(x0, mean, log_scale):
  """-log p(x_0 | x_1) of pixels {0..255} scaled to [-1, 1] (eq. 13): the Gaussian mass of each pixel's bin of
  width 2/255, the edge bins open to -inf and +inf."""
  inv_std = np.exp(-log_scale)
  cdf_plus = _approx_cdf(inv_std * (x0 - mean + 1. / 255.))
  cdf_min = _approx_cdf(inv_std * (x0 - mean - 1. / 255.))
  log_p = np.where(x0 < -0.999, np.log(np.maximum(cdf_plus, 1e-12)),
                   np.where(x0 > 0.999, np.log(np.maximum(1. - cdf_min, 1e-12)),
                            np.log(np.maximum(cdf_plus - cdf_min, 1e-12))))
  return -log_p


def _bound_bpd(net, images, q_noise_seed, schedule=SCHEDULE):
  """The variational bound (eq. 5) in bits/dim of uint8 images [B, H, W, C], one batch, x_t drawn with the known
  noise stateless_normal(seed=(q_noise_seed, t)) [B, H, W, C]; run_cifar's fixedlarge variance (beta_t, and
  beta~_1 at the first step). Returns dict(total_bpd [B], terms_bpd [B, T], prior_bpd [B], mse [B, T])."""
  x0 = images.astype(np.float64) / 127.5 - 1.
  B = len(x0)
  per_image = lambda v: v.reshape(B, -1).mean(axis=1)
  terms, mse = np.zeros([B, T]), np.zeros([B, T])
  for t in range(T):
    a = schedule.abar[t]
    x_t = np.sqrt(a) * x0 + np.sqrt(1. - a) * net.noise(q_noise_seed, t, x0.shape)
    pred = schedule.x0_from_eps(x_t, net.eps(x_t, t), t)
    model_mean = schedule.posterior_mean(pred, x_t, t)
    if t == 0:  # L_0: the decoder
      nats = _decoder_nll(x0, model_mean, 0.5 * np.log(schedule.post_var[1]))
    else:  # L_{t}: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
      nats = _normal_kl(schedule.posterior_mean(x0, x_t, t), np.log(schedule.post_var[t]), model_mean,
                        np.log(schedule.betas[t]))
    terms[:, t] = per_image(nats) / np.log(2.)
    mse[:, t] = per_image((pred - x0) ** 2)
  a_T = schedule.abar[-1]
  prior = per_image(_normal_kl(np.sqrt(a_T) * x0, np.log(1. - a_T), 0., 0.)) / np.log(2.)  # L_T
  return dict(total_bpd=terms.sum(axis=1) + prior, terms_bpd=terms, prior_bpd=prior, mse=mse)


def _prior_bpd(images, schedule=SCHEDULE):
  x0 = images.astype(np.float64) / 127.5 - 1.
  a_T = schedule.abar[-1]
  return _normal_kl(np.sqrt(a_T) * x0, np.log(1. - a_T), 0., 0.).reshape(len(x0), -1).mean(axis=1) / np.log(2.)








def _fid(real_pool, pool):
  return frechet_distance(gaussian(real_pool), gaussian(pool))


def _uint8(x):
  return np.clip(np.round((x + 1.) * 127.5), 0, 255).astype(np.uint8)


def _assert_same_images(images, reference):
  """uint8 images equal to float references up to float32-vs-float64 rounding: at most 1 level, on few pixels."""
  assert images.shape == reference.shape and images.dtype == np.uint8, (images.shape, images.dtype)
  diff = np.abs(images.astype(int) - _uint8(reference).astype(int))
  assert diff.max() <= 1 and (diff > 0).mean() < 0.02, (diff.max(), (diff > 0).mean())


def _assert_different(a, b):
  assert np.abs(_uint8(a).astype(int) - _uint8(b).astype(int)).max() > 2, 'the two would give the same images'


def _assert_metrics(result, expected):
  for key, value in expected.items():
    assert result[key] == pytest.approx(value, rel=1e-3), key


# ---------------------------------------------------------------------------------------------------------------
# Fixtures

@pytest.fixture(scope='module')
def run(tiny_run, checkpoint_network):
  """The run_cifar digits run (checkpoints 0..3; read-only) and a numpy-callable copy of its network."""
  model_dir = tiny_run('run_cifar', **TRAIN_FLAGS)
  assert checkpoint_steps(model_dir) == [0, 1, 2, 3]
  net = checkpoint_network(load_script('run_cifar').Model(
    model_name='tiny', betas=SCHEDULE.betas, model_mean_type='eps', model_var_type='fixedlarge', loss_type='mse',
    num_classes=1, dropout=0., randflip=0), SHAPE)
  return dict(model_dir=model_dir, net=net, ckpt=lambda step: os.path.join(model_dir, 'model.ckpt-{}'.format(step)))


@pytest.fixture(scope='module')
def standin(tmp_path_factory):
  """The stand-in Inception graph (64 pool features: FID of few samples stays cheap) and an extractor of it."""
  path = make_standin_inception(tmp_path_factory.mktemp('standin'), seed=3, pool_dim=64)
  with inception.InceptionExtractor(path=path) as extractor:
    yield dict(path=path, features=extractor.features)


@pytest.fixture(scope='module')
def digits(standin):
  """The digits at 8x8 and the stand-in's features of them: train / test pool_3 and logits."""
  images = datasets.load_digits_images(8)
  train_pool, train_logits = standin['features'](images[:NUM_TRAIN_DIGITS])
  test_pool, test_logits = standin['features'](images[NUM_TRAIN_DIGITS:])
  return dict(images=images, train_pool=train_pool, train_logits=train_logits, test_pool=test_pool,
              test_logits=test_logits)


@pytest.fixture
def known_q_noise(monkeypatch):
  """q_sample draws its noise (when given none, as calc_bpd_loop does) as stateless_normal(seed=(holder['seed'],
  t)) of x_0's shape; set holder['seed'] before a command builds its graph."""
  holder = {'seed': 11}
  real_q_sample = GaussianDiffusionBase.q_sample

  def _q_sample(self, x_start, t, noise=None):
    if noise is None:
      noise = tf.random.stateless_normal(x_start.shape.as_list(), seed=tf.stack(
        [tf.constant(holder['seed'], tf.int64), tf.cast(t[0], tf.int64)]))
    return real_q_sample(self, x_start, t, noise=noise)

  monkeypatch.setattr(GaussianDiffusionBase, 'q_sample', _q_sample)
  return holder


def _copy_checkpoint(src_dir, dest_dir, step):
  for path in glob.glob(os.path.join(src_dir, 'model.ckpt-{}.*'.format(step))):
    if not path.endswith('.meta'):
      shutil.copy(path, dest_dir)


def _set_latest(model_dir, steps):
  paths = [os.path.join(model_dir, 'model.ckpt-{}'.format(s)) for s in steps]
  tf.train.update_checkpoint_state(model_dir, paths[-1], all_model_checkpoint_paths=paths)


def _copy_run(run, dest, steps=(0, 1, 2, 3)):
  """A run directory of the test's own (evaluations write into it) with the fixture's checkpoints at `steps`."""
  dest = str(dest)
  os.makedirs(dest)
  shutil.copy(os.path.join(run['model_dir'], 'kwargs.json'), dest)
  for step in steps:
    _copy_checkpoint(run['model_dir'], dest, step)
  _set_latest(dest, steps)
  return dest


def _eval_files(model_dir, suffix):
  return sorted(f for f in os.listdir(os.path.join(model_dir, 'eval')) if f.endswith(suffix))


def _no_watch(*args, **kwargs):
  raise AssertionError('the watch loop (tf.train.checkpoints_iterator) ran although --once was given')


# ---------------------------------------------------------------------------------------------------------------
# evaluation

def test_evaluation_dumps_the_samples_of_load_ckpt_both_weights_seed_count_and_batches(run, private_inception_cache,
                                                                                       capsys, tmp_path):
  """--load_ckpt, --dump_samples_only, --samples_dir, --non_ema_pass, --seed, --num_inception_samples and the
  sampling batch --total_bs: the dumps are the numpy sampler's images of step 2's EMA and raw weights, seed 5, 6
  samples in batches of 4 (samples 4 and 5 come from batch 1's noise); every ignored flag would give other images
  (step 3, seed 0, one batch) or other files. Metrics are never computed: no Inception graph is reachable."""
  model_dir = _copy_run(run, tmp_path / 'run')
  samples_dir = str(tmp_path / 'dumps')
  code, out, err = run_main(capsys, 'run_cifar', [
    'evaluation', '--model_dir={}'.format(model_dir), '--load_ckpt=model.ckpt-2', '--dump_samples_only',
    '--samples_dir={}'.format(samples_dir), '--non_ema_pass', '--seed=5', '--num_inception_samples=6',
    '--total_bs=4'])
  assert code == 0, err
  assert sorted(os.listdir(samples_dir)) == ['step00000002_ema_samples.npz', 'step00000002_noema_samples.npz']
  assert _eval_files(model_dir, '.npz') == [] and _eval_files(model_dir, '.json') == []
  net = run['net']
  dumps, refs = {}, {}
  for ema in (True, False):
    dumps[ema] = load_npz(os.path.join(samples_dir, 'step00000002_{}_samples.npz'.format('ema' if ema else 'noema')))
    refs[ema] = _samples(net.load(run['ckpt'](2), ema), n=6, batch_size=4, seed=5)
    _assert_same_images(dumps[ema], refs[ema])
  _assert_different(refs[True], refs[False])
  # what each flag, ignored, would have given instead
  _assert_different(refs[True], _samples(net.load(run['ckpt'](3), True), n=6, batch_size=4, seed=5))
  _assert_different(refs[True], _samples(net.load(run['ckpt'](2), True), n=6, batch_size=4, seed=0))
  _assert_different(refs[True][4:], _samples(net.load(run['ckpt'](2), True), n=6, batch_size=6, seed=5)[4:])


def test_evaluation_metrics_once_with_stats_dir_reused_and_the_non_ema_pass(run, standin, digits,
                                                                            private_inception_cache, capsys,
                                                                            tmp_path, monkeypatch):
  """--once (the latest checkpoint, no watch loop), --inception_graph, --stats_dir, --total_bs (the reference sets'
  drop-remainder batches and the sampling batch) and --non_ema_pass: IS and FID equal numpy's of the sampler's
  images against the first 1500 training and 295 (= 297 // 5 * 5) test digits. The statistics cached in --stats_dir
  are read back: after shifting the cached test mean by 3 in every feature, the raw weights' pass (prefix eval/)
  reports exactly the FID of the shifted mean, and the EMA pass, already evaluated, is skipped."""
  monkeypatch.setattr(tf.train, 'checkpoints_iterator', _no_watch)
  model_dir = _copy_run(run, tmp_path / 'run')
  stats_dir = str(tmp_path / 'stats')
  argv = ['evaluation', '--model_dir={}'.format(model_dir), '--once', '--inception_graph={}'.format(standin['path']),
          '--stats_dir={}'.format(stats_dir), '--total_bs=5', '--num_inception_samples=6']
  code, out, err = run_main(capsys, 'run_cifar', argv)
  assert code == 0, err
  assert _eval_files(model_dir, '.json') == ['step00000003_ema_metrics.json']
  ema = json.load(open(os.path.join(model_dir, 'eval', 'step00000003_ema_metrics.json')))
  assert ema['ref_num_images_train'] == 1500 and ema['ref_num_images_test'] == 295 and ema['num_samples'] == 6
  assert sorted(os.listdir(stats_dir)) == sorted(os.path.basename(ema['ref_stats_' + k]) for k in ('train', 'test'))
  assert all(os.path.dirname(ema['ref_stats_' + k]) == stats_dir for k in ('train', 'test'))
  net = run['net']
  train_pool, test_pool = digits['train_pool'][:1500], digits['test_pool'][:295]
  ema_pool, ema_logits = standin['features'](_samples(net.load(run['ckpt'](3), True), n=6, batch_size=5, seed=0))
  _assert_metrics(ema, {'samples/inception6': _inception_score(ema_logits),
                        'samples/trainfid6': _fid(train_pool, ema_pool), 'samples/fid6': _fid(test_pool, ema_pool),
                        'real_inception_score_train': _inception_score(digits['train_logits'][:1500]),
                        'real_inception_score': _inception_score(digits['test_logits'][:295])})

  with np.load(ema['ref_stats_test']) as f:
    cached = dict(f)
  cached['mu'] = cached['mu'] + 3.
  np.savez(ema['ref_stats_test'], **cached)
  code, out, err = run_main(capsys, 'run_cifar', argv + ['--non_ema_pass'])
  assert code == 0, err
  assert 'already evaluated' in out
  assert json.load(open(os.path.join(model_dir, 'eval', 'step00000003_ema_metrics.json'))) == ema
  raw = json.load(open(os.path.join(model_dir, 'eval', 'step00000003_noema_metrics.json')))
  assert raw['weights'] == 'noema' and raw['step'] == 3
  raw_pool, raw_logits = standin['features'](_samples(net.load(run['ckpt'](3), False), n=6, batch_size=5, seed=0))
  mu_test, sigma_test = gaussian(test_pool)
  expected = {'samples/inception6': _inception_score(raw_logits), 'samples/trainfid6': _fid(train_pool, raw_pool),
              'samples/fid6': frechet_distance((mu_test + 3., sigma_test), gaussian(raw_pool))}
  _assert_metrics(raw, expected)
  assert abs(expected['samples/trainfid6'] - ema['samples/trainfid6']) > 1e-2 * ema['samples/trainfid6']
  assert expected['samples/fid6'] > _fid(test_pool, raw_pool) + 100.
  scalars = read_scalars(os.path.join(model_dir, 'eval'))
  assert scalars['eval/samples/fid6'] == {3: pytest.approx(raw['samples/fid6'], rel=1e-5)}
  assert scalars['eval_ema/samples/fid6'] == {3: pytest.approx(ema['samples/fid6'], rel=1e-5)}


def _dpm_solver1_samples(net, *, n, batch_size, seed, timesteps, schedule=SCHEDULE):
  """n samples of first-order DPM-Solver++ (Lu et al. 2022, eq. 8 at order 1: x_s = (sigma_s / sigma_t) x_t -
  alpha_s (e^{-h} - 1) x0_pred, which is DDIM with eta 0 and no clipping) over `timesteps` (calling order), the last
  step to sigma = 0 (x0_pred), from the seeded x_T of each batch."""
  samples = []
  for b in range(-(-n // batch_size)):
    x = net.noise(seed, 64 * b * 2 ** 20 + 1, [batch_size] + net._shape)
    for i, t in enumerate(timesteps):
      a, eps = schedule.abar[t], net.eps(x, t)
      x0 = (x - np.sqrt(1. - a) * eps) / np.sqrt(a)
      a_next = schedule.abar[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.
      x = np.sqrt(a_next) * x0 + np.sqrt(1. - a_next) * eps
    samples.append(x)
  return np.concatenate(samples)[:n]


def test_evaluation_sampler_steps_order_and_spacing_make_a_fast_track_named_after_them(
    run, standin, digits, private_inception_cache, capsys, tmp_path, monkeypatch):
  """--sampler, --num_inference_steps, --solver_order and --skip_type of `evaluation`: IS and FID equal numpy's of
  first-order DPM-Solver++ over diffusers' 'trailing' timesteps [9, 7, 4, 1] (round(T - i T / S) - 1), written
  under tags and a file named dpmsolver++4_order1_trailing, beside (not instead of) the original's DDPM track. A
  dropped flag would give other images (the default order 2 and linspace spacing, 50 -> T steps) or other names;
  an x_0-predicting model is refused before anything is sampled."""
  monkeypatch.setattr(tf.train, 'checkpoints_iterator', _no_watch)
  model_dir = _copy_run(run, tmp_path / 'run')
  name = 'dpmsolver++4_order1_trailing'
  code, out, err = run_main(capsys, 'run_cifar', [
    'evaluation', '--model_dir={}'.format(model_dir), '--once', '--inception_graph={}'.format(standin['path']),
    '--stats_dir={}'.format(tmp_path / 'stats'), '--total_bs=5', '--num_inception_samples=6',
    '--sampler=dpmsolver++', '--num_inference_steps=4', '--solver_order=1', '--skip_type=trailing'])
  assert code == 0, err
  assert _eval_files(model_dir, '.json') == ['step00000003_ema_{}_metrics.json'.format(name)]
  result = json.load(open(os.path.join(model_dir, 'eval', 'step00000003_ema_{}_metrics.json'.format(name))))
  assert {k: result['sampler'][k] for k in ('sampler', 'num_inference_steps', 'solver_order', 'skip_type')} == dict(
    sampler='dpmsolver++', num_inference_steps=4, solver_order=1, skip_type='trailing')
  net = run['net'].load(run['ckpt'](3), True)
  samples = _dpm_solver1_samples(net, n=6, batch_size=5, seed=0, timesteps=[9, 7, 4, 1])
  pool, logits = standin['features'](samples)
  _assert_metrics(result, {'samples/inception6': _inception_score(logits),
                           'samples/trainfid6': _fid(digits['train_pool'][:1500], pool),
                           'samples/fid6': _fid(digits['test_pool'][:295], pool)})
  _assert_different(samples, _dpm_solver1_samples(net, n=6, batch_size=5, seed=0, timesteps=[9, 7, 4, 2]))
  scalars = read_scalars(os.path.join(model_dir, 'eval'))
  assert scalars['eval_ema/{}/samples/fid6'.format(name)] == {3: pytest.approx(result['samples/fid6'], rel=1e-5)}
  assert 'eval_ema/samples/fid6' not in scalars
  # a solver needs an eps-prediction network: refused from the run's kwargs, before sampling
  kwargs_path = os.path.join(model_dir, 'kwargs.json')
  kwargs = json.load(open(kwargs_path))
  json.dump(dict(kwargs, model_mean_type='xstart'), open(kwargs_path, 'w'))
  code, out, err = run_main(capsys, 'run_cifar', ['evaluation', '--model_dir={}'.format(model_dir), '--once',
                                                  '--sampler=unipc', '--num_inference_steps=4'])
  assert_one_error(code, err, 'unipc', "'xstart'")
  assert 'evaluating' not in out


def test_evaluation_watch_mode_evaluates_a_new_checkpoint_then_times_out(run, standin, digits, private_inception_cache,
                                                                         capsys, tmp_path, monkeypatch):
  """Without --once: the latest checkpoint (step 2; step 1 is older) is evaluated, then step 3, which appears while
  the evaluation polls, and the watch ends --timeout_secs after it. The real checkpoints_iterator runs; a spy
  around it checks that it polls every --poll_secs (arrivals at least that far apart) and ends no earlier than
  --timeout_secs after the last checkpoint (an ignored timeout would watch forever: the spy refuses None).
  --full_reference_sets: FID against all 1500 training and all 297 test digits (total_bs 4 would drop one)."""
  model_dir = _copy_run(run, tmp_path / 'run', steps=(1, 2))
  real_iterator = tf.train.checkpoints_iterator
  calls, arrivals, resumed, ends = [], [], [], []

  def _spy(checkpoint_dir, min_interval_secs=0, timeout=None, timeout_fn=None):
    calls.append((min_interval_secs, timeout))
    assert timeout is not None, 'no timeout: the watch would never end'
    for ckpt in real_iterator(checkpoint_dir, min_interval_secs=min_interval_secs, timeout=timeout):
      arrivals.append(time.time())
      yield ckpt
      resumed.append(time.time())
      if len(arrivals) == 1:  # the trainer writes step 3 while the evaluation watches
        _copy_checkpoint(run['model_dir'], model_dir, 3)
        _set_latest(model_dir, (1, 2, 3))
    ends.append(time.time())

  monkeypatch.setattr(tf.train, 'checkpoints_iterator', _spy)
  code, out, err = run_main(capsys, 'run_cifar', [
    'evaluation', '--model_dir={}'.format(model_dir), '--inception_graph={}'.format(standin['path']),
    '--stats_dir={}'.format(tmp_path / 'stats'), '--total_bs=4', '--num_inception_samples=6', '--poll_secs=3',
    '--timeout_secs=3', '--full_reference_sets'])
  assert code == 0, err
  assert calls == [(3, 3)]
  assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 2.9
  # the iterator looks once a second and gives up when the next look would pass the timeout: >= timeout - 1 s
  assert len(ends) == 1 and ends[0] - resumed[-1] >= 2.
  assert _eval_files(model_dir, '.json') == ['step00000002_ema_metrics.json', 'step00000003_ema_metrics.json']
  scalars = read_scalars(os.path.join(model_dir, 'eval'))
  for step in (2, 3):
    result = json.load(open(os.path.join(model_dir, 'eval', 'step{:08d}_ema_metrics.json'.format(step))))
    assert result['reference_images'] == 'full'
    assert result['ref_num_images_train'] == 1500 and result['ref_num_images_test'] == 297
    pool, logits = standin['features'](_samples(run['net'].load(run['ckpt'](step), True), n=6, batch_size=4,
                                                seed=0))
    _assert_metrics(result, {'samples/inception6': _inception_score(logits),
                             'samples/trainfid6': _fid(digits['train_pool'], pool),
                             'samples/fid6': _fid(digits['test_pool'], pool),
                             'real_inception_score': _inception_score(digits['test_logits'])})
    assert scalars['eval_ema/samples/fid6'][step] == pytest.approx(result['samples/fid6'], rel=1e-5)


def test_evaluation_num_gpus_chooses_the_replicas(run, private_inception_cache, capsys, tmp_path, monkeypatch):
  """--num_gpus (GPU-only; the GPU count is faked): one GPU asked of none is an error naming the count; with two
  "GPUs", --num_gpus=1 samples on one replica and the default (all visible) on two, replica r of batch b drawing
  its noise from stream (64 b + r) 2^20 + k (soft placement runs both replicas on the CPU)."""
  model_dir = _copy_run(run, tmp_path / 'run', steps=(2,))
  argv = ['evaluation', '--model_dir={}'.format(model_dir), '--once', '--dump_samples_only', '--total_bs=4',
          '--num_inception_samples=4', '--seed=1']
  monkeypatch.setattr(devices, '_count_local_gpus', lambda: 0)
  code, _, err = run_main(capsys, 'run_cifar', argv + ['--num_gpus=1'])
  assert_one_error(code, err, 'num_gpus=1', '0 visible GPU')
  code, _, err = run_main(capsys, 'run_cifar', ['simple_eval', '--model_dir={}'.format(model_dir), '--num_gpus=1',
                                                '--mode=progressive_samples', '--num_samples=2', '--total_bs=2'])
  assert_one_error(code, err, 'num_gpus=1', '0 visible GPU')
  monkeypatch.setattr(devices, '_count_local_gpus', lambda: 2)
  net = run['net'].load(run['ckpt'](2), True)
  one, two = (_samples(net, n=4, batch_size=4, seed=1, replicas=r) for r in (1, 2))
  _assert_different(one, two)
  for flags, reference in [(['--num_gpus=1', '--samples_dir={}'.format(tmp_path / 'one')], one),
                           (['--samples_dir={}'.format(tmp_path / 'two')], two)]:
    code, _, err = run_main(capsys, 'run_cifar', argv + flags)
    assert code == 0, err
    _assert_same_images(load_npz(os.path.join(flags[-1].split('=', 1)[1], 'step00000002_ema_samples.npz')),
                        reference)


# ---------------------------------------------------------------------------------------------------------------
# simple_eval

def _assert_bound(result, reference):
  """Bits/dim as the numpy bound: the KL terms tightly; the decoder term L_0 (float32 differences of CDFs near 1 on
  the far side of a bin) and the sums that hold it a little looser."""
  np.testing.assert_allclose(result['terms_bpd'][:, 1:], reference['terms_bpd'][:, 1:], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(result['prior_bpd'], reference['prior_bpd'], rtol=1e-5)
  np.testing.assert_allclose(result['mse'], reference['mse'], rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(result['terms_bpd'][:, 0], reference['terms_bpd'][:, 0], rtol=1e-3)
  np.testing.assert_allclose(result['total_bpd'], reference['total_bpd'], rtol=1e-3)


def _assert_bound_differs(result, other):
  assert np.abs(result['total_bpd'] - other['total_bpd']).max() > 1e-2 * np.abs(other['total_bpd']).max()


class _JumpingClock:
  """A `time` module whose clock moves a minute on every reading: simple_eval saves its progress after each batch."""

  def __init__(self):
    self.now = 0.

  def time(self):
    self.now += 60.
    return self.now


def test_simple_eval_bpd_eval_raw_weights_of_load_ckpt_max_batches_and_resume(run, known_q_noise, capsys, tmp_path,
                                                                              monkeypatch):
  """--mode=bpd_eval --noema --load_ckpt=model.ckpt-2 --total_bs=3 --max_batches=2: the bound of the first 6 test
  digits under step 2's raw weights, as numpy computes it. The first run is interrupted while saving batch 2's
  progress, its q noise drawn with seed 21; the rerun (seed 22) resumes: batch 1 comes from the partial file (seed
  21), batch 2 is the next 3 test digits (seed 22)."""
  model_dir = _copy_run(run, tmp_path / 'run')
  argv = ['simple_eval', '--model_dir={}'.format(model_dir), '--mode=bpd_eval', '--noema', '--load_ckpt=model.ckpt-2',
          '--total_bs=3', '--max_batches=2']
  real_save, saves = simple_eval_worker.save_npz_atomic, []

  def _interrupted_save(path, **arrays):
    saves.append(path)
    if len(saves) == 2:
      raise KeyboardInterrupt('interrupted while saving batch 2')
    return real_save(path, **arrays)

  known_q_noise['seed'] = 21
  monkeypatch.setattr(simple_eval_worker, 'time', _JumpingClock())
  monkeypatch.setattr(simple_eval_worker, 'save_npz_atomic', _interrupted_save)
  with pytest.raises(KeyboardInterrupt):
    run_main(capsys, 'run_cifar', argv)
  monkeypatch.setattr(simple_eval_worker, 'time', time)
  monkeypatch.setattr(simple_eval_worker, 'save_npz_atomic', real_save)
  bpd_dir = os.path.join(model_dir, 'simple_eval', 'bpd')
  assert os.listdir(bpd_dir) == ['bpd_eval_ema0_step000000002_2batches.partial.npz']

  known_q_noise['seed'] = 22
  code, out, err = run_main(capsys, 'run_cifar', argv)
  assert code == 0, err
  assert 'resuming after 1 batches' in out
  assert os.listdir(bpd_dir) == ['bpd_eval_ema0_step000000002_2batches.npz']
  with np.load(os.path.join(bpd_dir, 'bpd_eval_ema0_step000000002_2batches.npz')) as f:
    result = {k: f[k] for k in ('total_bpd', 'terms_bpd', 'prior_bpd', 'mse')}
  assert result['terms_bpd'].shape == (6, T)
  test_digits = datasets.load_digits_images(8)[NUM_TRAIN_DIGITS:]
  net = run['net'].load(run['ckpt'](2), False)
  batches = [_bound_bpd(net, test_digits[:3], 21), _bound_bpd(net, test_digits[3:6], 22)]
  reference = {k: np.concatenate([b[k] for b in batches]) for k in result}
  _assert_bound(result, reference)
  # the EMA weights, step 3, or batch 1 recomputed with seed 22 would give other numbers
  _assert_bound_differs(result, _bound_bpd(run['net'].load(run['ckpt'](2), True), test_digits[:6], 21))
  _assert_bound_differs(result, _bound_bpd(run['net'].load(run['ckpt'](3), False), test_digits[:6], 21))
  _assert_bound_differs({k: v[:3] for k, v in result.items()},
                        _bound_bpd(run['net'].load(run['ckpt'](2), False), test_digits[:3], 22))


def test_simple_eval_bpd_train_with_the_ema_weights_of_the_latest_checkpoint(run, known_q_noise, capsys, tmp_path):
  """--mode=bpd_train (default --ema, latest checkpoint) --total_bs=4 --max_batches=1: the bound of the first 4
  training digits under step 3's EMA weights; the raw weights would give other numbers."""
  model_dir = _copy_run(run, tmp_path / 'run')
  code, _, err = run_main(capsys, 'run_cifar', ['simple_eval', '--model_dir={}'.format(model_dir), '--mode=bpd_train',
                                                '--total_bs=4', '--max_batches=1'])
  assert code == 0, err
  with np.load(os.path.join(model_dir, 'simple_eval', 'bpd', 'bpd_train_ema1_step000000003_1batches.npz')) as f:
    result = {k: f[k] for k in ('total_bpd', 'terms_bpd', 'prior_bpd', 'mse')}
  train_digits = datasets.load_digits_images(8)[:4]
  _assert_bound(result, _bound_bpd(run['net'].load(run['ckpt'](3), True), train_digits, known_q_noise['seed']))
  _assert_bound_differs(result, _bound_bpd(run['net'].load(run['ckpt'](3), False), train_digits,
                                           known_q_noise['seed']))


def test_simple_eval_progressive_samples_seed_num_samples_batch_and_checkpoint(run, capsys, tmp_path):
  """--mode=progressive_samples --num_samples=5 --total_bs=3 --seed=7 --load_ckpt=model.ckpt-2: the samples and the
  clipped x_0 predictions (t = T-1 .. 0) of the numpy sampler with step 2's EMA weights (sample 3 and 4 from batch
  1's noise); seed 0, step 3 or one batch of 5 would give other images."""
  model_dir = _copy_run(run, tmp_path / 'run')
  code, _, err = run_main(capsys, 'run_cifar', [
    'simple_eval', '--model_dir={}'.format(model_dir), '--mode=progressive_samples', '--num_samples=5',
    '--total_bs=3', '--seed=7', '--load_ckpt=model.ckpt-2'])
  assert code == 0, err
  out_dir = os.path.join(model_dir, 'simple_eval', 'progressive_samples')
  assert sorted(f for f in os.listdir(out_dir) if f.endswith('.npz')) == [
    'samples_xstartpred_ema1_step000000002_part000000.npz']
  with np.load(os.path.join(out_dir, 'samples_xstartpred_ema1_step000000002_part000000.npz')) as f:
    samples, progressive = f['samples'], f['progressive_samples']
  net = run['net'].load(run['ckpt'](2), True)
  ref, ref_x0 = _samples(net, n=5, batch_size=3, seed=7, with_x0=True)
  _assert_same_images(samples, ref)
  _assert_same_images(progressive, ref_x0)
  _assert_different(ref, _samples(net, n=5, batch_size=3, seed=0))
  _assert_different(ref[3:], _samples(net, n=5, batch_size=5, seed=7)[3:])
  _assert_different(ref, _samples(run['net'].load(run['ckpt'](3), True), n=5, batch_size=3, seed=7))


# ---------------------------------------------------------------------------------------------------------------
# The other scripts' evaluation, and the data directory flags

def _celebahq_lsun_network(image_shape):
  return CheckpointNetwork(celebahq_lsun_model.Model(model_name='tiny', betas=SCHEDULE.betas, loss_type='noisepred',
                                            num_classes=1, dropout=0., randflip=0, block_size=1), image_shape)


@pytest.mark.slow
def test_run_celebahq_evaluation_end_to_end(tiny_run, standin, digits, private_inception_cache, capsys,
                                             tmp_path):
  """run_celebahq.py train then evaluation --once --non_ema_pass on the digits: each pass's IS and FID are numpy's
  of the posterior-variance (beta~_t) sampler with its own weights."""
  # the conftest's run shared with test_flags_reproduce_editing.py; evaluation writes into the run: a copy
  model_dir = copy_run(tiny_run('run_celebahq', max_steps=2, **TRAIN_FLAGS), tmp_path / 'run')
  code, _, err = run_main(capsys, 'run_celebahq', [
    'evaluation', '--model_dir={}'.format(model_dir), '--once', '--non_ema_pass', '--total_bs=4',
    '--num_inception_samples=6', '--seed=2', '--inception_graph={}'.format(standin['path']),
    '--stats_dir={}'.format(tmp_path / 'stats')])
  assert code == 0, err
  net = _celebahq_lsun_network(SHAPE)
  try:
    for ema, tag in [(True, 'ema'), (False, 'noema')]:
      result = json.load(open(os.path.join(model_dir, 'eval', 'step00000002_{}_metrics.json'.format(tag))))
      assert result['ref_num_images_train'] == 1500 and result['ref_num_images_test'] == 296
      samples = _samples(net.load(os.path.join(model_dir, 'model.ckpt-2'), ema), n=6, batch_size=4, seed=2,
                         variance='fixedsmall')
      pool, logits = standin['features'](samples)
      _assert_metrics(result, {'samples/inception6': _inception_score(logits),
                               'samples/trainfid6': _fid(digits['train_pool'], pool),
                               'samples/fid6': _fid(digits['test_pool'][:296], pool)})
  finally:
    net.close()


@pytest.mark.slow
def test_run_lsun_evaluation_reads_tfr_file_and_caches_statistics_beside_it(standin, private_inception_cache, capsys,
                                                                            tmp_path):
  """run_lsun.py evaluation --tfr_file=<other TFRecords>: the reference set is those 8 images (IS and FID), and the
  statistics are cached beside them (the default --stats_dir), named after the file; the run trained on others."""
  train_tfr = str(tmp_path / 'train' / 'church-r04.tfrecords')
  make_tiny_lsun(train_tfr, 8, 16, seed=0)
  eval_tfr = str(tmp_path / 'other' / 'bedroom-r04.tfrecords')
  eval_images = make_tiny_lsun(eval_tfr, 8, 16, seed=1)
  model_dir = str(tmp_path / 'run')
  load_script('run_lsun').train(exp_name='l', tfr_file=train_tfr, model_dir=model_dir, max_steps=2,
                                save_checkpoints_steps=2, **OWN_TRAIN_FLAGS)
  code, _, err = run_main(capsys, 'run_lsun', [
    'evaluation', '--model_dir={}'.format(model_dir), '--once', '--tfr_file={}'.format(eval_tfr), '--total_bs=4',
    '--num_inception_samples=4', '--inception_graph={}'.format(standin['path'])])
  assert code == 0, err
  result = json.load(open(os.path.join(model_dir, 'eval', 'step00000002_ema_metrics.json')))
  assert result['ref_num_images_train'] == 8 and 'samples/fid4' not in result  # LSUN has no test split
  stats = os.listdir(os.path.join(str(tmp_path / 'other'), 'fid_stats'))
  assert len(stats) == 1 and stats[0].startswith('bedroom-r04_')
  net = _celebahq_lsun_network((16, 16, 3))
  try:
    samples = _samples(net.load(os.path.join(model_dir, 'model.ckpt-2'), True), n=4, batch_size=4, seed=0,
                       variance='fixedsmall')
  finally:
    net.close()
  pool, logits = standin['features'](samples)
  real_pool, real_logits = standin['features'](eval_images)
  _assert_metrics(result, {'samples/inception4': _inception_score(logits), 'samples/trainfid4': _fid(real_pool, pool),
                           'real_inception_score_train': _inception_score(real_logits)})


@pytest.mark.slow
def test_tfds_data_dir_of_evaluation_and_simple_eval(standin, private_inception_cache, capsys, tmp_path):
  """run_cifar on a cifar10 look-alike; evaluation and simple_eval with --tfds_data_dir=<another look-alike>: the
  real images' IS (train and test) is that of the other images, its statistics are cached in <dir>/fid_stats (the
  default --stats_dir), and the prior term of simple_eval's bits/dim is the closed form of its test images."""
  train_data, eval_data = str(tmp_path / 'tfds_train'), str(tmp_path / 'tfds_eval')
  make_tiny_cifar10(train_data, n_train=8, n_test=4, seed=0)
  other = make_tiny_cifar10(eval_data, n_train=8, n_test=4, seed=1)
  model_dir = str(tmp_path / 'run')
  load_script('run_cifar').train(exp_name='t', dataset='cifar10', tfds_data_dir=train_data, model_dir=model_dir,
                                 max_steps=1, save_checkpoints_steps=1, **OWN_TRAIN_FLAGS)
  code, _, err = run_main(capsys, 'run_cifar', [
    'evaluation', '--model_dir={}'.format(model_dir), '--once', '--tfds_data_dir={}'.format(eval_data),
    '--total_bs=2', '--num_inception_samples=2', '--inception_graph={}'.format(standin['path'])])
  assert code == 0, err
  result = json.load(open(os.path.join(model_dir, 'eval', 'step00000001_ema_metrics.json')))
  assert result['ref_num_images_train'] == 8 and result['ref_num_images_test'] == 4
  assert len(os.listdir(os.path.join(eval_data, 'fid_stats'))) == 2
  _assert_metrics(result, {'real_inception_score_train': _inception_score(standin['features'](other['train'])[1]),
                           'real_inception_score': _inception_score(standin['features'](other['test'])[1])})
  code, _, err = run_main(capsys, 'run_cifar', [
    'simple_eval', '--model_dir={}'.format(model_dir), '--mode=bpd_eval', '--tfds_data_dir={}'.format(eval_data),
    '--total_bs=2', '--max_batches=1'])
  assert code == 0, err
  with np.load(os.path.join(model_dir, 'simple_eval', 'bpd', 'bpd_eval_ema1_step000000001_1batches.npz')) as f:
    prior = f['prior_bpd']
  # tfds may order the test images its own way: each prior is that of one of the other look-alike's test images
  candidates = _prior_bpd(other['test'])
  assert all(np.min(np.abs(candidates - p)) < 1e-5 * p for p in prior), (prior, candidates)
  assert len(set(np.argmin(np.abs(candidates - p)) for p in prior)) == 2
