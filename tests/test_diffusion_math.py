"""The diffusion math of GaussianDiffusion2 / GaussianDiffusion checked against closed forms and numpy."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from scipy import stats

from diffusion_tf import diffusion_utils, utils
from diffusion_tf.diffusion_utils_2 import GaussianDiffusion2, get_beta_schedule, normal_kl

T = 50
SHAPE = [3, 4, 4, 2]


def _betas(T=T):
  return get_beta_schedule('linear', beta_start=1e-4, beta_end=0.2, num_diffusion_timesteps=T)


def _run(fn):
  """Build fn() in a fresh graph and evaluate it."""
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    out = fn()
    with tf.Session() as sess:
      return sess.run(out)


def _diffusion(mean='eps', var='fixedlarge', loss='mse', T=T):
  return GaussianDiffusion2(betas=_betas(T), model_mean_type=mean, model_var_type=var, loss_type=loss)


def _np_tables(betas):
  """The DDPM coefficients recomputed independently from their definitions (sec. 2)."""
  alphas = 1 - betas
  abar = np.array([np.prod(alphas[:t + 1]) for t in range(len(betas))])
  abar_prev = np.concatenate([[1.], abar[:-1]])
  post_var = betas * (1 - abar_prev) / (1 - abar)
  return alphas, abar, abar_prev, post_var


# ---------------------------------------------------------------------------------------------------------------
# Schedules

@pytest.mark.parametrize('name', ['quad', 'linear', 'warmup10', 'warmup50', 'const', 'jsd'])
def test_beta_schedule_shapes_and_endpoints(name):
  b = get_beta_schedule(name, beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=1000)
  assert b.shape == (1000,) and b.dtype == np.float64
  if name == 'jsd':
    np.testing.assert_allclose([b[0], b[-1]], [1. / 1000, 1.])
  elif name == 'const':
    np.testing.assert_allclose(b, 0.02)
  else:
    np.testing.assert_allclose([b[0], b[-1]], [1e-4, 0.02], rtol=1e-12)
    assert np.all(np.diff(b) >= 0)
  if name == 'warmup10':
    np.testing.assert_allclose(b[100:], 0.02)
    assert b[99] == 0.02 and b[0] == 1e-4


def test_linear_schedule_is_the_papers():
  b = get_beta_schedule('linear', beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=1000)
  np.testing.assert_allclose(b, 1e-4 + np.arange(1000) * (0.02 - 1e-4) / 999, rtol=1e-12)
  # sec. 4: the signal left at x_T is tiny (L_T ~ 1e-5 bits/dim in the paper)
  assert np.sqrt(np.prod(1 - b)) < 7e-3


def test_unknown_schedule_and_options_are_rejected():
  with pytest.raises(NotImplementedError, match='cosine'):
    get_beta_schedule('cosine', beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=10)
  with pytest.raises(NotImplementedError, match='model_mean_type'):
    _diffusion(mean='v')
  with pytest.raises(NotImplementedError, match='model_var_type'):
    _diffusion(var='fixed')
  with pytest.raises(ValueError, match='learned'):
    _diffusion(var='learned', loss='mse')
  with pytest.raises(ValueError, match='betas'):
    GaussianDiffusion2(betas=np.array([0.1, 1.5]), model_mean_type='eps', model_var_type='fixedlarge',
                       loss_type='mse')
  with pytest.raises(NotImplementedError, match='loss_type'):
    diffusion_utils.GaussianDiffusion(betas=_betas(), loss_type='mse')


def test_coefficient_tables_match_definitions():
  d = _diffusion()
  alphas, abar, abar_prev, post_var = _np_tables(d.betas)
  np.testing.assert_allclose(d.alphas_cumprod, abar, rtol=1e-12)
  np.testing.assert_allclose(d.alphas_cumprod_prev, abar_prev, rtol=1e-12)
  np.testing.assert_allclose(d.posterior_variance, post_var, rtol=1e-12)
  np.testing.assert_allclose(d.posterior_log_variance_clipped[1:], np.log(post_var[1:]), rtol=1e-12)
  assert d.posterior_log_variance_clipped[0] == d.posterior_log_variance_clipped[1]
  assert d.posterior_variance[0] == 0.
  for table in ['alphas_cumprod', 'posterior_mean_coef1', 'sqrt_recipm1_alphas_cumprod']:
    assert getattr(d, table).dtype == np.float64


# ---------------------------------------------------------------------------------------------------------------
# Forward process and posterior

def test_q_sample_moments_match_q_xt_given_x0():
  d = _diffusion()
  x0 = np.linspace(-1, 1, 8).astype(np.float32).reshape([1, 2, 2, 2])
  n, t = 4000, 30

  def build():
    xs = tf.tile(tf.constant(x0), [n, 1, 1, 1])
    return d.q_sample(xs, t=tf.fill([n], t)), d.q_mean_variance(tf.constant(x0), tf.constant([t]))

  xt, (mean, var, logvar) = _run(build)
  abar = _np_tables(d.betas)[1][t]
  np.testing.assert_allclose(mean[0], np.sqrt(abar) * x0[0], rtol=1e-5)
  np.testing.assert_allclose(var.ravel(), 1 - abar, rtol=1e-5)
  np.testing.assert_allclose(logvar.ravel(), np.log(1 - abar), rtol=1e-5)
  # 4000 draws: standard error of the mean ~ 0.016 * sqrt(1 - abar)
  np.testing.assert_allclose(xt.mean(0), np.sqrt(abar) * x0[0], atol=0.06)
  np.testing.assert_allclose(xt.var(0), np.full(x0.shape[1:], 1 - abar), rtol=0.1)


def test_q_sample_with_given_noise_is_the_reparameterisation():
  d = _diffusion()
  rng = np.random.RandomState(0)
  x0 = rng.uniform(-1, 1, SHAPE).astype(np.float32)
  eps = rng.randn(*SHAPE).astype(np.float32)
  t = np.array([0, 10, 49])
  xt = _run(lambda: d.q_sample(tf.constant(x0), tf.constant(t), noise=tf.constant(eps)))
  abar = _np_tables(d.betas)[1][t][:, None, None, None]
  np.testing.assert_allclose(xt, np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps, rtol=1e-5, atol=1e-6)


def test_posterior_matches_gaussian_product():
  """q(x_{t-1}|x_t,x_0) is proportional to q(x_t|x_{t-1}) q(x_{t-1}|x_0): combine the two Gaussians in x_{t-1}."""
  d = _diffusion()
  rng = np.random.RandomState(1)
  x0 = rng.uniform(-1, 1, SHAPE)
  xt = rng.randn(*SHAPE)
  t = np.array([1, 20, 49])
  mean, var, logvar = _run(lambda: d.q_posterior_mean_variance(
    tf.constant(x0, tf.float32), tf.constant(xt, tf.float32), tf.constant(t)))
  alphas, abar, abar_prev, _ = _np_tables(d.betas)
  a, ab_prev = alphas[t][:, None, None, None], abar_prev[t][:, None, None, None]
  # N(x_t; sqrt(a) x_{t-1}, 1 - a) as a function of x_{t-1}: precision a / (1 - a), mean x_t / sqrt(a)
  prec1, mean1 = a / (1 - a), xt / np.sqrt(a)
  prec2, mean2 = 1 / (1 - ab_prev), np.sqrt(ab_prev) * x0
  want_var = 1 / (prec1 + prec2)
  want_mean = want_var * (prec1 * mean1 + prec2 * mean2)
  np.testing.assert_allclose(var, want_var, rtol=1e-5)
  np.testing.assert_allclose(logvar, np.log(want_var), rtol=1e-5)
  np.testing.assert_allclose(mean, want_mean, rtol=1e-4, atol=1e-5)


def test_eps_xstart_xprev_conversions_invert_each_other():
  d = _diffusion()
  rng = np.random.RandomState(2)
  x0 = rng.uniform(-1, 1, SHAPE).astype(np.float32)
  eps = rng.randn(*SHAPE).astype(np.float32)

  def build():
    t = tf.constant([1, 25, 49])
    xt = d.q_sample(tf.constant(x0), t, noise=tf.constant(eps))
    xprev = d.q_posterior_mean_variance(tf.constant(x0), xt, t)[0]
    return (d._predict_xstart_from_eps(xt, t, tf.constant(eps)), d._predict_eps_from_xstart(xt, t, tf.constant(x0)),
            d._predict_xstart_from_xprev(xt, t, xprev))

  x0_from_eps, eps_from_x0, x0_from_xprev = _run(build)
  np.testing.assert_allclose(x0_from_eps, x0, atol=2e-3)
  np.testing.assert_allclose(eps_from_x0, eps, atol=2e-3)
  np.testing.assert_allclose(x0_from_xprev, x0, atol=2e-3)


# ---------------------------------------------------------------------------------------------------------------
# KL and the discretized decoder

def test_normal_kl_zero_for_equal_gaussians_and_matches_closed_form():
  rng = np.random.RandomState(3)
  m1, m2 = rng.randn(2, 100)
  lv1, lv2 = rng.randn(2, 100)
  kl, kl_same = _run(lambda: (normal_kl(m1, lv1, m2, lv2), normal_kl(m1, lv1, m1, lv1)))
  np.testing.assert_allclose(kl_same, 0., atol=1e-12)
  s1, s2 = np.exp(0.5 * lv1), np.exp(0.5 * lv2)
  want = np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5
  np.testing.assert_allclose(kl, want, rtol=1e-10)
  # and against numerical integration for one pair
  xs = np.linspace(-30, 30, 200001)
  logp, logq = stats.norm.logpdf(xs, m1[0], s1[0]), stats.norm.logpdf(xs, m2[0], s2[0])
  np.testing.assert_allclose(kl[0], np.trapz(np.exp(logp) * (logp - logq), xs), rtol=1e-4)


def test_discretized_likelihood_sums_to_one_over_256_bins():
  bins = np.arange(256) / 127.5 - 1.  # every pixel value, rescaled to [-1, 1]
  means = np.array([-1.2, -0.3, 0., 0.55, 1.])
  log_scales = np.log(np.array([0.01, 0.1, 0.5, 0.03, 2.]))
  x = np.tile(bins[:, None], [1, len(means)]).astype(np.float32)
  m = np.tile(means[None], [256, 1]).astype(np.float32)
  ls = np.tile(log_scales[None], [256, 1]).astype(np.float32)
  logp = _run(lambda: utils.discretized_gaussian_log_likelihood(
    tf.constant(x), means=tf.constant(m), log_scales=tf.constant(ls)))
  np.testing.assert_allclose(np.exp(logp).sum(0), 1., atol=1e-4)
  # each bin's probability is close to the exact Gaussian mass of that bin (the CDF is a tanh approximation)
  s = np.exp(log_scales)
  upper = np.where(bins[:, None] > 0.999, np.inf, bins[:, None] + 1 / 255.)
  lower = np.where(bins[:, None] < -0.999, -np.inf, bins[:, None] - 1 / 255.)
  exact = stats.norm.cdf(upper, means, s) - stats.norm.cdf(lower, means, s)
  np.testing.assert_allclose(np.exp(logp), exact, atol=2e-3)


# ---------------------------------------------------------------------------------------------------------------
# Losses

def _np_target(mean_type, d, x0, t, eps):
  _, abar, abar_prev, _ = _np_tables(d.betas)
  ab = abar[t][:, None, None, None]
  xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
  if mean_type == 'eps':
    return eps
  if mean_type == 'xstart':
    return x0
  b, abp = d.betas[t][:, None, None, None], abar_prev[t][:, None, None, None]
  return b * np.sqrt(abp) / (1 - ab) * x0 + (1 - abp) * np.sqrt(1 - b) / (1 - ab) * xt


@pytest.mark.parametrize('mean_type', ['eps', 'xstart', 'xprev'])
def test_mse_loss_is_zero_for_the_exact_target_and_matches_numpy(mean_type):
  d = _diffusion(mean=mean_type)
  rng = np.random.RandomState(4)
  x0 = rng.uniform(-1, 1, SHAPE).astype(np.float32)
  eps = rng.randn(*SHAPE).astype(np.float32)
  t = np.array([0, 17, 49])
  target = _np_target(mean_type, d, x0, t, eps).astype(np.float32)
  off = 0.3 * rng.randn(*SHAPE).astype(np.float32)

  def build():
    exact = d.training_losses(lambda x_, t_: tf.constant(target), tf.constant(x0), tf.constant(t),
                              noise=tf.constant(eps))
    wrong = d.training_losses(lambda x_, t_: tf.constant(target + off), tf.constant(x0), tf.constant(t),
                              noise=tf.constant(eps))
    return exact, wrong

  exact, wrong = _run(build)
  assert exact.shape == (3,)
  np.testing.assert_allclose(exact, 0., atol=1e-9)
  np.testing.assert_allclose(wrong, (off ** 2).mean(axis=(1, 2, 3)), rtol=1e-4)


def _np_discretized_loglik(x, mean, log_scale):
  """Independent numpy version of DDPM eq. 13 with the same tanh CDF approximation."""
  cdf = lambda v: 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))
  inv = np.exp(-log_scale)
  cdf_plus, cdf_min = cdf(inv * (x - mean + 1 / 255.)), cdf(inv * (x - mean - 1 / 255.))
  return np.where(x < -0.999, np.log(np.maximum(cdf_plus, 1e-12)),
                  np.where(x > 0.999, np.log(np.maximum(1 - cdf_min, 1e-12)),
                           np.log(np.maximum(cdf_plus - cdf_min, 1e-12))))


def test_kl_loss_at_t0_is_the_decoder_nll_in_bits():
  d = _diffusion(loss='kl')
  rng = np.random.RandomState(5)
  x0 = (rng.randint(0, 256, SHAPE) / 127.5 - 1).astype(np.float32)
  eps = rng.randn(*SHAPE).astype(np.float32)
  model_eps = lambda x_, t_: 0.9 * x_  # any network
  losses = _run(lambda: d.training_losses(model_eps, tf.constant(x0), tf.fill([3], 0), noise=tf.constant(eps)))
  _, abar, _, post_var = _np_tables(d.betas)
  xt = np.sqrt(abar[0]) * x0 + np.sqrt(1 - abar[0]) * eps
  x0_pred = (xt - np.sqrt(1 - abar[0]) * 0.9 * xt) / np.sqrt(abar[0])  # no clipping in the loss
  mean = d.posterior_mean_coef1[0] * x0_pred + d.posterior_mean_coef2[0] * xt
  log_scale = 0.5 * np.log(post_var[1])  # fixedlarge: beta~_1 at the first step
  want = -_np_discretized_loglik(x0, mean, log_scale).mean(axis=(1, 2, 3)) / np.log(2.)
  np.testing.assert_allclose(losses, want, rtol=1e-4)


def test_kl_loss_at_t_positive_is_the_posterior_kl():
  d = _diffusion(loss='kl', var='fixedsmall')
  rng = np.random.RandomState(6)
  x0 = rng.uniform(-1, 1, SHAPE).astype(np.float32)
  eps = rng.randn(*SHAPE).astype(np.float32)
  t = np.array([5, 5, 5])
  # a network that predicts the true noise: model mean = true posterior mean, fixedsmall variance = beta~_t
  losses = _run(lambda: d.training_losses(lambda x_, t_: tf.constant(eps), tf.constant(x0), tf.constant(t),
                                          noise=tf.constant(eps)))
  np.testing.assert_allclose(losses, 0., atol=1e-5)
  # a network off by delta in eps: KL = (mean difference)^2 / (2 beta~_t) per dim, in bits
  delta = 0.1
  losses = _run(lambda: d.training_losses(lambda x_, t_: tf.constant(eps + delta), tf.constant(x0),
                                          tf.constant(t), noise=tf.constant(eps)))
  _, abar, _, post_var = _np_tables(d.betas)
  mean_diff = d.posterior_mean_coef1[5] * np.sqrt(1 / abar[5] - 1) * delta
  np.testing.assert_allclose(losses, mean_diff ** 2 / (2 * post_var[5]) / np.log(2), rtol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# Sampling

def _np_p_sample(d, var_type, x, t, eps_pred, z, clip=True):
  _, abar, _, post_var = _np_tables(d.betas)
  x0 = np.sqrt(1 / abar[t]) * x - np.sqrt(1 / abar[t] - 1) * eps_pred
  if clip:
    x0 = np.clip(x0, -1, 1)
  mean = d.posterior_mean_coef1[t] * x0 + d.posterior_mean_coef2[t] * x
  if var_type == 'fixedlarge':
    var = post_var[1] if t == 0 else d.betas[t]
  else:
    var = post_var[max(t, 1)]
  return mean + (t > 0) * np.sqrt(var) * z, x0


@pytest.mark.parametrize('var_type', ['fixedlarge', 'fixedsmall'])
def test_p_sample_matches_numpy_and_adds_no_noise_at_t0(var_type):
  d = _diffusion(var=var_type)
  rng = np.random.RandomState(7)
  x = (1.5 * rng.randn(*SHAPE)).astype(np.float32)
  z = rng.randn(*SHAPE).astype(np.float32)
  fn = lambda x_, t_: 0.5 * tf.tanh(x_)
  for t in [0, 1, 30]:
    out, x0 = _run(lambda: d.p_sample(fn, x=tf.constant(x), t=tf.fill([3], t),
                                      noise_fn=lambda shape, dtype: tf.constant(z),
                                      return_pred_xstart=True))
    want, want_x0 = _np_p_sample(d, var_type, x, t, 0.5 * np.tanh(x), z)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x0, want_x0, rtol=1e-4, atol=1e-4)
  # t = 0: the sample is the mean whatever the noise
  a, b = _run(lambda: (d.p_sample(fn, x=tf.constant(x), t=tf.fill([3], 0), noise_fn=tf.random_normal,
                                  return_pred_xstart=False),
                       d.p_mean_variance(fn, x=tf.constant(x), t=tf.fill([3], 0), clip_denoised=True,
                                         return_pred_xstart=False)[0]))
  np.testing.assert_array_equal(a, b)


def test_p_sample_loop_runs_the_reverse_chain_in_numpy_order():
  """x_T from the first noise_fn call, then T steps t = T-1..0 (the per-step noise is 0 here, so the chain is
  deterministic; p_sample's noise scale is checked above)."""
  d = _diffusion(T=12)
  x_T = np.random.RandomState(8).randn(*SHAPE).astype(np.float32)
  fn = lambda x_, t_: 0.3 * x_ + 0.01 * tf.cast(t_, tf.float32)[:, None, None, None]
  calls = []

  def noise_fn(shape, dtype):
    calls.append(shape)
    return tf.constant(x_T) if len(calls) == 1 else tf.zeros(shape, dtype)

  out = _run(lambda: d.p_sample_loop(fn, shape=SHAPE, noise_fn=noise_fn))
  assert len(calls) == 2 and list(calls[0]) == SHAPE
  x = x_T
  for t in range(11, -1, -1):
    x, _ = _np_p_sample(d, 'fixedlarge', x, t, 0.3 * x + 0.01 * t, np.zeros(SHAPE))
  np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-4)


def test_progressive_sampling_records_xstart_predictions():
  d = _diffusion(T=20)
  fn = lambda x_, t_: tf.zeros_like(x_)  # predicts eps = 0, so x0_pred = x_t / sqrt(abar_t), clipped
  samples, preds = _run(lambda: d.p_sample_loop_progressive(fn, shape=SHAPE, include_xstartpred_freq=5))
  assert samples.shape == tuple(SHAPE) and preds.shape == (SHAPE[0], 4, *SHAPE[1:])
  assert np.abs(preds).max() <= 1. and np.abs(preds).sum() > 0
  # slot 0 holds the prediction at t = 0, which is the (clipped) final x_0 prediction = the final sample mean
  np.testing.assert_allclose(samples, d.posterior_mean_coef1[0] * preds[:, 0], atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Bits/dim

def test_calc_bpd_loop_total_is_terms_plus_prior():
  d = _diffusion(T=20, loss='kl')
  rng = np.random.RandomState(9)
  x0 = (rng.randint(0, 256, SHAPE) / 127.5 - 1).astype(np.float32)
  total, terms, prior, mse = _run(lambda: d.calc_bpd_loop(lambda x_, t_: 0.5 * x_, tf.constant(x0)))
  assert total.shape == prior.shape == (3,) and terms.shape == mse.shape == (3, 20)
  np.testing.assert_allclose(total, terms.sum(1) + prior, rtol=1e-5)
  assert np.all(terms > 0) and np.all(mse >= 0)
  # the prior term, KL(q(x_T|x_0) || N(0, I)) per dim, from the closed form
  abar = _np_tables(d.betas)[1][-1]
  m, v = np.sqrt(abar) * x0, 1 - abar
  want = (0.5 * (-1 - np.log(v) + v + m ** 2)).mean(axis=(1, 2, 3)) / np.log(2)
  np.testing.assert_allclose(prior, want, rtol=1e-4)


def test_bpd_of_the_true_denoiser_is_small_at_every_t():
  """An oracle that knows x_0 predicts eps exactly: every KL term is ~0, only the decoder and the prior remain."""
  d = _diffusion(T=10, var='fixedsmall', loss='kl')
  rng = np.random.RandomState(10)
  x0 = (rng.randint(0, 256, SHAPE) / 127.5 - 1).astype(np.float32)

  def build():
    x0_t = tf.constant(x0)
    oracle = lambda x_, t_: d._predict_eps_from_xstart(x_, t_, x0_t)
    return d.calc_bpd_loop(oracle, x0_t)

  total, terms, prior, mse = _run(build)
  np.testing.assert_allclose(terms[:, 1:], 0., atol=1e-3)
  np.testing.assert_allclose(mse, 0., atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# The first-generation class gives the same numbers as GaussianDiffusion2(eps, fixedsmall)

def test_gaussian_diffusion_v1_matches_v2_eps_fixedsmall():
  betas = _betas()
  d1 = diffusion_utils.GaussianDiffusion(betas=betas, loss_type='noisepred')
  d2 = GaussianDiffusion2(betas=betas, model_mean_type='eps', model_var_type='fixedsmall', loss_type='mse')
  rng = np.random.RandomState(11)
  x = rng.randn(*SHAPE).astype(np.float32)
  z = rng.randn(*SHAPE).astype(np.float32)
  fn = lambda x_, t_: 0.2 * x_

  def build():
    t = tf.constant([0, 5, 49])
    s1 = d1.p_sample(fn, x=tf.constant(x), t=t, noise_fn=lambda shape, dtype: tf.constant(z))
    s2 = d2.p_sample(fn, x=tf.constant(x), t=t, noise_fn=lambda shape, dtype: tf.constant(z), return_pred_xstart=False)
    l1 = d1.p_losses(fn, tf.constant(x), t, noise=tf.constant(z))
    l2 = d2.training_losses(fn, tf.constant(x), t, noise=tf.constant(z))
    return s1, s2, l1, l2

  s1, s2, l1, l2 = _run(build)
  np.testing.assert_allclose(s1, s2, rtol=1e-6)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)


def test_repeat_noise_shares_one_draw_across_the_batch():
  n = _run(lambda: diffusion_utils.noise_like([4, 3, 3, 1], repeat=True))
  for i in range(1, 4):
    np.testing.assert_array_equal(n[0], n[i])


def test_trajectory_and_interpolation_shapes_and_endpoints():
  d1 = diffusion_utils.GaussianDiffusion(betas=_betas(T=8), loss_type='noisepred')
  fn = lambda x_, t_: tf.zeros_like(x_)
  times, imgs = _run(lambda: d1.p_sample_loop_trajectory(fn, shape=SHAPE, repeat_noise_steps=2))
  np.testing.assert_array_equal(times, np.arange(7, -2, -1))
  assert imgs.shape == (9, *SHAPE)
  # the first two steps share their noise across the batch: x_T and the first updates are identical per example
  np.testing.assert_allclose(imgs[1][0], imgs[1][1], rtol=1e-6)
  assert not np.allclose(imgs[-1][0], imgs[-1][1])

  with tf.Graph().as_default():
    x1, x2, lam, x_interp, t = d1.interpolate(fn, shape=SHAPE)
    with tf.Session() as sess:
      a = np.full(SHAPE, -0.5, np.float32)
      tf.set_random_seed(1)
      out = sess.run(x_interp, {x1: a, x2: a, lam: 0.3, t: 0})
  # t = 0: one diffusion step of a constant image, then the final denoising step
  assert out.shape == tuple(SHAPE) and np.abs(out - (-0.5)).max() < 0.05


@pytest.mark.parametrize('cls', ['v1', 'v2'])
def test_seeded_sampling_is_reproducible(cls):
  """The per-step noise is drawn after x_t exists, so a seeded run gives the same samples every time."""
  if cls == 'v1':
    d = diffusion_utils.GaussianDiffusion(betas=_betas(T=30), loss_type='noisepred')
  else:
    d = _diffusion(T=30)
  fn = lambda x_, t_: 0.3 * tf.tanh(x_)
  runs = [_run(lambda: d.p_sample_loop(fn, shape=SHAPE)) for _ in range(3)]
  np.testing.assert_array_equal(runs[0], runs[1])
  np.testing.assert_array_equal(runs[0], runs[2])


def test_progressive_sampler_of_GaussianDiffusion_follows_algorithm_2_and_records_x0_predictions():
  """GaussianDiffusion.p_sample_loop_progressive against a numpy rerun of DDPM Algorithm 2 with a fixed network
  (eps = 0.1 x) and fixed noise: the same samples as p_sample_loop, and slot k holds the clipped x_0 prediction
  made at t = k * freq."""
  d = diffusion_utils.GaussianDiffusion(betas=_betas(), loss_type='noisepred')
  shape, freq, c = [2, 3, 3, 1], 3, 0.7
  fn = lambda x_, t_: 0.1 * x_
  noise_fn = lambda shape, dtype: tf.fill(shape, tf.constant(c, dtype))
  (samples, preds), plain = _run(lambda: (d.p_sample_loop_progressive(fn, shape=shape, noise_fn=noise_fn,
                                                                      include_xstartpred_freq=freq),
                                          d.p_sample_loop(fn, shape=shape, noise_fn=noise_fn)))
  K = d.num_timesteps // freq
  x, expected_preds = np.full(shape, c), np.zeros([shape[0], K] + shape[1:])
  for t in range(d.num_timesteps - 1, -1, -1):
    x0 = np.clip(d.sqrt_recip_alphas_cumprod[t] * x - d.sqrt_recipm1_alphas_cumprod[t] * 0.1 * x, -1., 1.)
    if t // freq < K and t % freq == 0:
      expected_preds[:, t // freq] = x0
    mean = d.posterior_mean_coef1[t] * x0 + d.posterior_mean_coef2[t] * x
    x = mean + (t > 0) * np.exp(0.5 * d.posterior_log_variance_clipped[t]) * c
  np.testing.assert_allclose(samples, x, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(samples, plain, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(preds, expected_preds, rtol=1e-4, atol=1e-5)
