"""Fast samplers (diffusion_tf/samplers.py): DDIM, PNDM and respaced ancestral DDPM.

Checked against diffusers' DDIMScheduler / PNDMScheduler / DDPMScheduler (the fixture
tests/fixtures/scheduler_parity.npz, made by tests/fixtures/make_scheduler_fixture.py in the peer venv with the same
toy network eps(x, t) = tanh(x) + 0.01 t / T), against an independent numpy implementation of the respaced chain,
against closed forms, and by identities between samplers.
"""

import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from diffusion_tf import samplers
from diffusion_tf.diffusion_utils import GaussianDiffusion
from diffusion_tf.diffusion_utils_2 import GaussianDiffusion2, get_beta_schedule
from support.scripts import FIXTURES

FIXTURE = os.path.join(FIXTURES, 'scheduler_parity.npz')
T = 1000
SHAPE = [2, 2, 2, 3]
BETAS = get_beta_schedule('linear', beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=T)


@pytest.fixture(scope='module')
def fixture():
  with np.load(FIXTURE) as f:
    return {k: f[k] for k in f.files}


def _diffusion2(mean='eps', var='fixedsmall', betas=BETAS):
  return GaussianDiffusion2(betas=betas, model_mean_type=mean, model_var_type=var,
                            loss_type='kl' if var == 'learned' else 'mse')


def _toy_eps(x, t):
  """The fixture's stand-in network: eps(x, t) = tanh(x) + 0.01 t / T."""
  return tf.tanh(x) + 0.01 * tf.cast(t, tf.float32)[:, None, None, None] / T


def _np_toy_eps(x, t):
  return np.tanh(x) + 0.01 * t / T


def _np_toy_logvar(x, t):
  return -3. - 4. * t / T + 0.1 * np.sin(x)


def _toy_learned(x, t):
  """eps and a log variance, as a 'learned' network outputs them ([B, H, W, 2C])."""
  tf_t = tf.cast(t, tf.float32)[:, None, None, None]
  return tf.concat([_toy_eps(x, t), -3. - 4. * tf_t / T + 0.1 * tf.sin(x)], axis=-1)


def _run(build):
  """Build build() in a fresh graph and evaluate it."""
  with tf.Graph().as_default():
    tf.set_random_seed(1234)
    out = build()
    with tf.Session() as sess:
      return sess.run(out)


def _constant_noise_fn(seed):
  """noise_fn returning the same standard normal draw at every call: p_sample_loop's draws inside its while loop
  are not ordered with the steps (a seeded noise_fn there is not reproducible), so the comparisons with it use
  order-free noise; the distinct per-step noise is checked through `step_noise` instead."""
  z = np.random.RandomState(seed).randn(*SHAPE).astype(np.float32)
  return lambda shape, dtype=tf.float32: tf.constant(z, dtype=dtype, shape=shape)


# ---------------------------------------------------------------------------------------------------------------
# Coefficient sequences (numpy)

@pytest.mark.parametrize('S', [10, 30, 50])
def test_uniform_timesteps_are_diffusers_leading_spacing(fixture, S):
  ours = samplers.inference_timesteps(T, S, 'uniform')
  np.testing.assert_array_equal(ours[::-1], fixture['ddim_s{}_eta0_clip0_ucmo0_timesteps'.format(S)])
  if T % S == 0:
    np.testing.assert_array_equal(ours, np.arange(0, T, T // S))


def test_quad_timesteps_are_ddims_quadratic_sequence():
  ours = samplers.inference_timesteps(T, 10, 'quad')
  np.testing.assert_array_equal(ours, [int((i * np.sqrt(800.) / 9) ** 2) for i in range(10)])
  assert ours[-1] == 800 and len(set(ours)) == 10
  assert len(set(samplers.inference_timesteps(T, 50, 'quad'))) < 50  # repeats small t, as DDIM's code does


def test_respaced_betas_keep_the_marginals_q_xt_given_x0():
  diffusion = _diffusion2()
  timesteps = samplers.inference_timesteps(T, 25, 'quad')
  betas = samplers.respaced_betas(diffusion.alphas_cumprod, timesteps)
  assert np.all((betas > 0) & (betas < 1))
  np.testing.assert_allclose(np.cumprod(1. - betas), diffusion.alphas_cumprod[timesteps], rtol=1e-12)
  np.testing.assert_allclose(samplers.respaced_betas(diffusion.alphas_cumprod, np.arange(T)), BETAS, rtol=1e-9)
  with pytest.raises(ValueError, match='strictly increasing'):
    samplers.respaced_betas(diffusion.alphas_cumprod, [0, 5, 5, 9])


def test_ddim_sigma_at_eta1_is_the_respaced_posterior_variance():
  diffusion = _diffusion2()
  timesteps = samplers.inference_timesteps(T, 20, 'uniform')
  coef = samplers.ddim_coefficients(diffusion.alphas_cumprod, timesteps, eta=1.)
  respaced = _diffusion2(betas=samplers.respaced_betas(diffusion.alphas_cumprod, timesteps))
  np.testing.assert_allclose(coef['sigma'] ** 2, respaced.posterior_variance, rtol=1e-10, atol=1e-300)
  assert coef['sigma'][0] == 0 and coef['alphas_cumprod_prev'][0] == 1
  half = samplers.ddim_coefficients(diffusion.alphas_cumprod, timesteps, eta=0.5)
  np.testing.assert_allclose(half['sigma'], 0.5 * coef['sigma'])
  np.testing.assert_allclose(half['dir_coef'] ** 2 + half['sigma'] ** 2, 1. - half['alphas_cumprod_prev'])
  assert np.all(samplers.ddim_coefficients(diffusion.alphas_cumprod, timesteps, eta=0)['sigma'] == 0)


def test_pndm_transfer_is_the_deterministic_ddim_step():
  rng = np.random.RandomState(0)
  a_t = rng.uniform(1e-5, 0.99, size=100)
  a_prev = np.minimum(a_t * rng.uniform(1., 50., size=100), 1.)
  c_x, c_eps = samplers.pndm_transfer(a_t, a_prev)
  np.testing.assert_allclose(c_x, np.sqrt(a_prev / a_t))
  np.testing.assert_allclose(c_eps, np.sqrt(1. - a_prev) - np.sqrt(a_prev * (1. - a_t) / a_t), rtol=1e-7, atol=1e-12)


def test_pndm_plan_calls_the_network_at_diffusers_timesteps(fixture):
  abar = _diffusion2().alphas_cumprod
  keys = [k for k in fixture if k.startswith('pndm_timesteps_')]
  assert len(keys) >= 15
  for key in keys:
    S, prk = int(key.split('_s')[1].split('_')[0]), key.endswith('prk1')
    plan = samplers.pndm_plan(abar, S, skip_prk_steps=not prk)
    np.testing.assert_array_equal(plan['t_model'], fixture[key], err_msg=key)
  with pytest.raises(ValueError, match='needs num_inference_steps >= 4'):
    samplers.pndm_plan(abar, 3, skip_prk_steps=False)


@pytest.mark.parametrize('skip_prk_steps', [False, True])
def test_pndm_plan_combines_a_constant_eps_into_itself(skip_prk_steps):
  """Every eps' is an affine combination (weights summing to 1) of evaluations: run the plan on scalars with eps = 1."""
  plan = samplers.pndm_plan(_diffusion2().alphas_cumprod, 20, skip_prk_steps)
  ets, acc = np.zeros(4), 0.
  for k in range(len(plan['t_model'])):
    if plan['push'][k]:
      ets = np.append(ets[1:], 1.)
    acc = plan['acc_keep'][k] * acc + plan['acc_in'][k] * 1.
    eps_comb = plan['w_eps'][k] + plan['w_acc'][k] * acc + plan['w_ets'][k] @ ets
    assert abs(eps_comb - 1.) < 1e-12, (k, eps_comb)


# ---------------------------------------------------------------------------------------------------------------
# Parity with diffusers

def _fixture_configs(fixture, prefix):
  return sorted(k[:-len('_final')] for k in fixture if k.startswith(prefix) and k.endswith('_final'))


def test_ddim_pndm_and_respaced_ddpm_match_diffusers(fixture):
  diffusion = _diffusion2()
  ddim_keys, pndm_keys = _fixture_configs(fixture, 'ddim_'), _fixture_configs(fixture, 'pndm_s')
  ddpm_keys = _fixture_configs(fixture, 'ddpm_')
  assert len(ddim_keys) == 18 and len(pndm_keys) == 5 and len(ddpm_keys) == 5
  diffusions = {var: _diffusion2(var=var) for var in ('fixedsmall', 'fixedlarge')}

  def _build():
    outs = {}
    for key in ddim_keys:
      _, s, eta, clip, ucmo = key.split('_')
      S = int(s[1:])
      outs[key] = diffusion.ddim_sample_loop_progressive(
        _toy_eps, shape=SHAPE, num_inference_steps=S, eta=float(eta[3:]), clip_denoised=clip == 'clip1',
        use_clipped_model_output=ucmo == 'ucmo1', x_T=fixture['x_T_s{}'.format(S)],
        step_noise=fixture['noise_s{}'.format(S)])
    for key in pndm_keys:
      _, s, prk = key.split('_')
      S = int(s[1:])
      outs[key] = diffusion._pndm_loop(_toy_eps, shape=SHAPE, num_inference_steps=S, skip_prk_steps=prk == 'prk0',
                                       noise_fn=None, x_T=fixture['x_T_s{}'.format(S)], record=True)
    for key in ddpm_keys:  # diffusers' DDPMScheduler with S < T steps is the respaced chain
      _, s, var, clip = key.split('_')
      S = int(s[1:])
      outs[key] = diffusions[var].ddpm_sample_loop(
        _toy_eps, shape=SHAPE, num_inference_steps=S, clip_denoised=clip == 'clip1',
        x_T=fixture['x_T_s{}'.format(S)], step_noise=fixture['noise_s{}'.format(S)])
    return outs

  outs = _run(_build)
  # diffusers computes alphabar in float32, we in float64: agreement to float32 precision, relative to the values
  tol = dict(rtol=2e-5, atol=2e-5)
  for key in ddim_keys:
    samples, xstartpreds = outs[key]
    np.testing.assert_allclose(samples, fixture[key + '_final'], err_msg=key, **tol)
    # slot i holds the prediction at t_i (ascending); diffusers lists them in calling order (t descending)
    np.testing.assert_allclose(np.moveaxis(xstartpreds, 1, 0)[::-1], fixture[key + '_x0'], err_msg=key, **tol)
  for key in pndm_keys:
    samples, xs = outs[key]
    np.testing.assert_allclose(samples, fixture[key + '_final'], err_msg=key, **tol)
    np.testing.assert_allclose(xs, fixture[key + '_xs'], err_msg=key, **tol)
  for key in ddpm_keys:
    np.testing.assert_allclose(outs[key], fixture[key + '_final'], err_msg=key, **tol)
  # the fixture exercises clipping both ways and keeps apart the options it compares
  clipped = fixture['ddim_s50_eta0_clip1_ucmo0_x0']
  assert np.mean(np.abs(clipped) == 1.) > 0.05 and np.mean(np.abs(clipped) < 1.) > 0.5
  assert np.abs(fixture['ddim_s50_eta0_clip1_ucmo0_final'] - fixture['ddim_s50_eta0_clip1_ucmo1_final']).max() > 1e-2
  assert np.abs(fixture['pndm_s50_prk1_final'] - fixture['pndm_s50_prk0_final']).max() > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# Identities and closed forms

@pytest.mark.parametrize('diffusion', [GaussianDiffusion(betas=BETAS, loss_type='noisepred'), _diffusion2()],
                         ids=['GaussianDiffusion', 'GaussianDiffusion2_fixedsmall'])
def test_ddim_all_steps_eta1_equals_ancestral_sampling(diffusion):
  """DDIM with S = T and eta = 1 is DDPM with sigma_t^2 = beta~_t; p_sample_loop clips x_0, which DDIM matches when
  eps is recomputed from the clipped x_0."""
  rng = np.random.RandomState(5)
  x_T, step_noise = rng.randn(*SHAPE).astype(np.float32), rng.randn(T, *SHAPE).astype(np.float32)
  ddim_kw = dict(shape=SHAPE, num_inference_steps=T, eta=1., clip_denoised=True, use_clipped_model_output=True)
  ancestral, ddim, other_noise, ancestral_replayed, ddim_replayed = _run(lambda: [
    diffusion.p_sample_loop(_toy_eps, shape=SHAPE, noise_fn=_constant_noise_fn(0)),
    diffusion.ddim_sample_loop(_toy_eps, noise_fn=_constant_noise_fn(0), **ddim_kw),
    diffusion.ddim_sample_loop(_toy_eps, noise_fn=_constant_noise_fn(1), **ddim_kw),
    diffusion.ddpm_sample_loop(_toy_eps, shape=SHAPE, x_T=x_T, step_noise=step_noise),
    diffusion.ddim_sample_loop(_toy_eps, x_T=x_T, step_noise=step_noise, **ddim_kw)])
  np.testing.assert_allclose(ddim, ancestral, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(ddim_replayed, ancestral_replayed, rtol=1e-4, atol=1e-4)
  assert np.abs(other_noise - ancestral).max() > 0.1 and np.abs(ddim_replayed - ddim).max() > 0.1


@pytest.mark.parametrize('diffusion', [GaussianDiffusion(betas=BETAS, loss_type='noisepred'), _diffusion2(),
                                       _diffusion2(var='fixedlarge'), _diffusion2(var='learned')],
                         ids=['GaussianDiffusion', 'fixedsmall', 'fixedlarge', 'learned'])
def test_ddpm_all_steps_is_p_sample_loop(diffusion):
  model = _toy_learned if getattr(diffusion, 'model_var_type', None) == 'learned' else _toy_eps
  ancestral, ours = _run(lambda: [
    diffusion.p_sample_loop(model, shape=SHAPE, noise_fn=_constant_noise_fn(0)),
    diffusion.sample_loop(model, shape=SHAPE, sampler='ddpm', noise_fn=_constant_noise_fn(0))])
  np.testing.assert_allclose(ours, ancestral, rtol=1e-6, atol=1e-6)


def test_ddim_eta0_is_deterministic_given_x_T():
  diffusion = _diffusion2()
  calls = []

  def _counting_noise_fn(shape, dtype):
    calls.append(shape)
    return tf.random_normal(shape, dtype=dtype)

  rng = np.random.RandomState(0)
  x_T, noise_a, noise_b = [rng.randn(*shape).astype(np.float32) for shape in [SHAPE, [20, *SHAPE], [20, *SHAPE]]]
  kw = dict(shape=SHAPE, num_inference_steps=20, x_T=x_T)
  a, b, c, d, e = _run(lambda: [
    diffusion.ddim_sample_loop(_toy_eps, eta=0., step_noise=noise_a, **kw),
    diffusion.ddim_sample_loop(_toy_eps, eta=0., step_noise=noise_b, **kw),
    diffusion.ddim_sample_loop(_toy_eps, eta=0., noise_fn=_counting_noise_fn, **kw),
    diffusion.ddim_sample_loop(_toy_eps, eta=0.5, step_noise=noise_a, **kw),
    diffusion.ddim_sample_loop(_toy_eps, eta=0.5, step_noise=noise_b, **kw)])
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, c)
  assert calls == []  # x_T given and eta = 0: no noise at all
  assert np.abs(d - e).max() > 1e-2


def test_ddim_and_pndm_with_constant_eps_recover_the_closed_form():
  """With eps(x, t) = c the reverse ODE is solved exactly: x_t = sqrt(alphabar_t) x0 + sqrt(1 - alphabar_t) c, x0
  fixed by x_T at the first timestep. DDIM ends at x0 (alphabar = 1 after the last step), PNDM at alphabar_{t=0}."""
  diffusion = _diffusion2()
  rng = np.random.RandomState(1)
  x_T, c = rng.randn(*SHAPE).astype(np.float32), rng.randn(*SHAPE).astype(np.float32)
  constant_eps = lambda x, t: tf.constant(c) + 0. * x  # noqa: E731
  S = 20
  abar = diffusion.alphas_cumprod
  x0 = (x_T - np.sqrt(1 - abar[(S - 1) * (T // S)]) * c) / np.sqrt(abar[(S - 1) * (T // S)])
  ddim, ddim_quad, pndm, plms = _run(lambda: [
    diffusion.ddim_sample_loop(constant_eps, shape=SHAPE, num_inference_steps=S, clip_denoised=False, x_T=x_T),
    diffusion.ddim_sample_loop(constant_eps, shape=SHAPE, num_inference_steps=S, clip_denoised=False, x_T=x_T,
                               skip_type='quad'),
    diffusion.pndm_sample_loop(constant_eps, shape=SHAPE, num_inference_steps=S, x_T=x_T),
    diffusion.pndm_sample_loop(constant_eps, shape=SHAPE, num_inference_steps=S, skip_prk_steps=True, x_T=x_T)])
  np.testing.assert_allclose(ddim, x0, rtol=1e-4, atol=1e-4)
  t_quad = samplers.inference_timesteps(T, S, 'quad')[-1]
  x0_quad = (x_T - np.sqrt(1 - abar[t_quad]) * c) / np.sqrt(abar[t_quad])
  np.testing.assert_allclose(ddim_quad, x0_quad, rtol=1e-4, atol=1e-4)
  expected_pndm = np.sqrt(abar[0]) * x0 + np.sqrt(1 - abar[0]) * c
  np.testing.assert_allclose(pndm, expected_pndm, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(plms, expected_pndm, rtol=1e-4, atol=1e-4)


def _np_respaced_ddpm(abar_full, timesteps, *, x_T, step_noise, mean_type, var_type, clip, log_var_floor=False):
  """Ancestral sampling over the kept timesteps, from the definitions (DDPM eqs. 6-7, 11; improved-diffusion
  respacing), in float64."""
  abar = abar_full[timesteps]
  abar_prev = np.concatenate([[1.], abar[:-1]])
  betas = 1. - abar / abar_prev
  post_var = betas * (1. - abar_prev) / (1. - abar)
  coef_x0 = betas * np.sqrt(abar_prev) / (1. - abar)
  coef_xt = (1. - abar_prev) * np.sqrt(1. - betas) / (1. - abar)
  log_var = {'fixedlarge': np.log(np.append(post_var[1], betas[1:])),
             'fixedsmall': np.log(np.append(post_var[1], post_var[1:]))}.get(var_type)
  x = x_T.astype(np.float64)
  S = len(timesteps)
  for k in range(S):
    i, t = S - 1 - k, timesteps[S - 1 - k]
    eps = _np_toy_eps(x, t)
    x0 = eps if mean_type == 'xstart' else (x - np.sqrt(1. - abar[i]) * eps) / np.sqrt(abar[i])
    if clip:
      x0 = np.clip(x0, -1., 1.)
    mean = coef_x0[i] * x0 + coef_xt[i] * x
    lv = _np_toy_logvar(x, t) if var_type == 'learned' else log_var[i]
    x = mean + (i > 0) * np.exp(0.5 * lv) * step_noise[k]
  return x


@pytest.mark.parametrize('mean_type,var_type,clip', [
  ('eps', 'fixedlarge', True), ('eps', 'fixedsmall', False), ('xstart', 'fixedsmall', True),
  ('eps', 'learned', True), ('GaussianDiffusion', 'fixedsmall', True)])
def test_respaced_ddpm_matches_numpy(mean_type, var_type, clip):
  if mean_type == 'GaussianDiffusion':
    diffusion, model, mean_type = GaussianDiffusion(betas=BETAS, loss_type='noisepred'), _toy_eps, 'eps'
  else:
    diffusion = _diffusion2(mean=mean_type, var=var_type)
    model = _toy_learned if var_type == 'learned' else _toy_eps
  S = 10
  rng = np.random.RandomState(2)
  x_T, step_noise = rng.randn(*SHAPE).astype(np.float32), rng.randn(S, *SHAPE).astype(np.float32)
  for skip_type in ('uniform', 'quad'):
    ours = _run(lambda: diffusion.sample_loop(model, shape=SHAPE, sampler='ddpm', num_inference_steps=S,
                                              skip_type=skip_type, clip_denoised=clip, x_T=x_T,
                                              step_noise=step_noise))
    expected = _np_respaced_ddpm(diffusion.alphas_cumprod, samplers.inference_timesteps(T, S, skip_type), x_T=x_T,
                                 step_noise=step_noise, mean_type=mean_type, var_type=var_type, clip=clip)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4, err_msg=skip_type)


def test_ddim_eta1_equals_respaced_ddpm_fixedsmall():
  diffusion = _diffusion2()
  S = 10
  rng = np.random.RandomState(3)
  x_T, step_noise = rng.randn(*SHAPE).astype(np.float32), rng.randn(S, *SHAPE).astype(np.float32)
  kw = dict(shape=SHAPE, num_inference_steps=S, x_T=x_T, step_noise=step_noise)
  ddim, ddpm, ddim_unclipped_eps = _run(lambda: [
    diffusion.ddim_sample_loop(_toy_eps, eta=1., use_clipped_model_output=True, **kw),
    diffusion.ddpm_sample_loop(_toy_eps, **kw),
    diffusion.ddim_sample_loop(_toy_eps, eta=1., use_clipped_model_output=False, **kw)])
  np.testing.assert_allclose(ddim, ddpm, rtol=1e-5, atol=1e-5)
  assert np.abs(ddim_unclipped_eps - ddpm).max() > 1e-3


def test_sample_loop_dispatches_to_the_samplers():
  diffusion = _diffusion2()
  rng = np.random.RandomState(4)
  x_T, step_noise = rng.randn(*SHAPE).astype(np.float32), rng.randn(8, *SHAPE).astype(np.float32)
  kw = dict(shape=SHAPE, num_inference_steps=8, x_T=x_T)
  outs = _run(lambda: [
    diffusion.sample_loop(_toy_eps, sampler='ddim', eta=0.3, skip_type='quad', step_noise=step_noise, **kw),
    diffusion.ddim_sample_loop(_toy_eps, eta=0.3, skip_type='quad', step_noise=step_noise, **kw),
    diffusion.sample_loop(_toy_eps, sampler='pndm', skip_prk_steps=True, **kw),
    diffusion.pndm_sample_loop(_toy_eps, skip_prk_steps=True, **kw),
    diffusion.sample_loop(_toy_eps, sampler='ddpm', clip_denoised=False, step_noise=step_noise, **kw),
    diffusion.ddpm_sample_loop(_toy_eps, clip_denoised=False, step_noise=step_noise, **kw)])
  for ours, direct in zip(outs[::2], outs[1::2]):
    np.testing.assert_array_equal(ours, direct)
  assert np.abs(outs[0] - outs[2]).max() > 1e-3 and np.abs(outs[2] - outs[4]).max() > 1e-3


def test_sampler_options_defaults_and_errors():
  resolve = samplers.resolve_sampler_options
  assert resolve(T, sampler='ddpm') == T and resolve(T, sampler='ddim') == 50 and resolve(T, sampler='pndm') == 50
  assert resolve(20, sampler='ddim') == 20
  assert resolve(T, sampler='pndm', num_inference_steps=3, skip_prk_steps=True) == 3
  bad = [
    (dict(sampler='lms'), "unknown sampler 'lms'"),
    (dict(sampler='ddim', num_inference_steps=0), r'must be an integer in 1\.\.1000'),
    (dict(sampler='ddim', num_inference_steps=1001), r'must be an integer in 1\.\.1000'),
    (dict(sampler='ddpm', num_inference_steps=2.5), r'must be an integer in 1\.\.1000'),
    (dict(sampler='ddim', eta=1.5), r'eta must be a number in \[0, 1\]'),
    (dict(sampler='ddpm', eta=0.5), 'only applies to sampler ddim'),
    (dict(sampler='pndm', use_clipped_model_output=True), 'only applies to sampler ddim'),
    (dict(sampler='ddim', skip_prk_steps=True), 'only applies to sampler pndm'),
    (dict(sampler='pndm', num_inference_steps=3), 'needs num_inference_steps >= 4'),
    (dict(sampler='pndm', skip_type='quad'), "pndm needs skip_type 'uniform'"),
    (dict(sampler='ddim', skip_type='log'), "unknown skip_type 'log'"),
    (dict(sampler='ddpm', num_inference_steps=50, skip_type='quad'), 'repeats timesteps'),
  ]
  for kwargs, message in bad:
    with pytest.raises(ValueError, match=message):
      resolve(T, **kwargs)
  diffusion = _diffusion2(mean='xprev')
  with tf.Graph().as_default():
    with pytest.raises(ValueError, match="needs model_mean_type 'eps' or 'xstart'"):
      diffusion.sample_loop(_toy_eps, shape=SHAPE, sampler='ddpm', num_inference_steps=10)
    with pytest.raises(ValueError, match=r'step_noise must have shape \[10, 2, 2, 2, 3\]'):
      diffusion.sample_loop(_toy_eps, shape=SHAPE, sampler='ddim', num_inference_steps=10, eta=1.,
                            step_noise=np.zeros([9, *SHAPE], np.float32))
    with pytest.raises(ValueError, match='x_T must have shape'):
      diffusion.sample_loop(_toy_eps, shape=SHAPE, sampler='pndm', x_T=np.zeros([1, 2, 2, 3], np.float32))
