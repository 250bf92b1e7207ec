"""Few-step solvers (diffusion_tf/solvers.py, solver_schedules.py) and the new spacings of ddim / ddpm.

Checked against diffusers 0.42.1's DPMSolverMultistepScheduler, UniPCMultistepScheduler, EulerDiscreteScheduler,
EulerAncestralDiscreteScheduler, HeunDiscreteScheduler and DDPMScheduler (the fixture tests/fixtures/solver_parity.npz,
made by tests/fixtures/make_solver_fixture.py with the toy network eps(x, t) = tanh(x) + 0.01 t / T), against closed
forms and by identities between samplers.
"""

import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from diffusion_tf import sampler_schedules, samplers, solver_schedules
from diffusion_tf.diffusion_utils import GaussianDiffusion
from diffusion_tf.diffusion_utils_2 import GaussianDiffusion2, get_beta_schedule
from support.scripts import FIXTURES

FIXTURE = os.path.join(FIXTURES, 'solver_parity.npz')
T = 1000
SHAPE = [2, 2, 2, 3]
BETAS = get_beta_schedule('linear', beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=T)
ABAR = np.cumprod(1. - BETAS)


@pytest.fixture(scope='module')
def fixture():
  with np.load(FIXTURE) as f:
    return {k: f[k] for k in f.files}


def _diffusion2(mean='eps', var='fixedsmall'):
  return GaussianDiffusion2(betas=BETAS, model_mean_type=mean, model_var_type=var,
                            loss_type='kl' if var == 'learned' else 'mse')


def _toy_eps(x, t):
  """The fixture's stand-in network: eps(x, t) = tanh(x) + 0.01 t / T (t int32 or, where diffusers' timesteps are
  fractional, float32)."""
  return tf.tanh(x) + 0.01 * tf.cast(t, tf.float32)[:, None, None, None] / T


def _toy_learned(x, t):
  """eps and a variance half ([B, H, W, 2C]), as a 'learned' network outputs them."""
  return tf.concat([_toy_eps(x, t), -3. + 0.1 * tf.sin(x)], axis=-1)


def _run(build):
  with tf.Graph().as_default():
    tf.set_random_seed(1234)
    out = build()
    with tf.Session() as sess:
      return sess.run(out)


def _configs(fixture):
  """[(key, sampler, S, skip_type, solver_order or None)] of the fixture's solver runs."""
  out = []
  for key in sorted(k[:-len('_final')] for k in fixture if k.endswith('_final') and not k.startswith('ddpm_')):
    sampler, s, skip, o = key.rsplit('_', 3)
    out.append((key, sampler, int(s[1:]), skip, int(o[1:]) or None))
  return out


# ---------------------------------------------------------------------------------------------------------------
# Coefficient sequences (numpy)

def test_fixture_covers_every_sampler_spacing_and_order(fixture):
  seen = {(sampler, skip, order) for _, sampler, _, skip, order in _configs(fixture)}
  expected = {(sampler, skip, order)
              for sampler in sampler_schedules.SOLVERS for skip in sampler_schedules.SAMPLER_SKIP_TYPES[sampler]
              for order in sampler_schedules.SOLVER_ORDERS.get(sampler, (None,))}
  assert seen == expected
  assert {S for _, _, S, _, _ in _configs(fixture)} == {10, 25}
  assert str(fixture['diffusers_version']) == '0.42.1'


def test_plans_call_the_network_at_diffusers_timesteps_and_noise_levels(fixture):
  for key, sampler, S, skip, order in _configs(fixture):
    plan = solver_schedules.solver_plan(sampler, ABAR, S, skip, order or 2)
    ref_t = fixture[key + '_timesteps']
    if np.all(ref_t == np.round(ref_t)):
      np.testing.assert_array_equal(plan['t_model'], ref_t, err_msg=key)
    else:  # euler / heun's fractional timesteps (linspace, karras): diffusers interpolates in its float32 table
      np.testing.assert_allclose(plan['t_model'], ref_t, rtol=0, atol=1e-2, err_msg=key)
    _, sigmas = solver_schedules.solver_noise_levels(ABAR, S, skip, sampler)
    ref = fixture[key + '_sigmas']
    if sampler == 'heun':  # diffusers interleaves s_0, s_1, s_1, ..., s_{S-1}, s_{S-1}, 0
      ref = np.append(ref[::2], 0.)
    # diffusers' float32 alphabar loses ~1e-4 of sigma_0 = sqrt(beta_0 / (1 - beta_0)) (the Karras sigma_min)
    np.testing.assert_allclose(sigmas, ref, rtol=1e-4, err_msg=key)


@pytest.mark.parametrize('S', [10, 25, 30, 1])
def test_ddim_linspace_and_trailing_timesteps_are_diffusers(fixture, S):
  for skip in ('linspace', 'trailing'):
    ours = samplers.inference_timesteps(T, S, skip)
    np.testing.assert_array_equal(ours[::-1], fixture['ddim_timesteps_s{}_{}'.format(S, skip)], err_msg=skip)


def test_karras_sigmas_are_eq5_and_their_timesteps_invert_the_noise_levels():
  sigma = sampler_schedules.noise_levels(ABAR)
  ks = sampler_schedules.karras_sigmas(sigma[0], sigma[-1], 12)
  assert ks[0] == pytest.approx(sigma[-1]) and ks[-1] == pytest.approx(sigma[0])
  np.testing.assert_allclose(np.diff(ks ** (1. / 7.)), (sigma[0] ** (1. / 7.) - sigma[-1] ** (1. / 7.)) / 11.)
  t = np.array([0, 17, 400, 999])
  np.testing.assert_allclose(sampler_schedules.sigma_to_t(sigma[t], ABAR), t, atol=1e-9)
  between = np.exp(0.5 * (np.log(sigma[400]) + np.log(sigma[401])))
  assert sampler_schedules.sigma_to_t(between, ABAR) == pytest.approx(400.5)


@pytest.mark.parametrize('sampler', ['dpmsolver++', 'unipc', 'euler', 'heun'])
def test_plans_keep_the_exact_trajectory_of_a_constant_x0_model(sampler):
  """If x_0 = 1 and eps = e are the same at every point, the ODE's solution is x_t = alpha_t + s_t e (z = 1 + sigma e
  for euler / heun), which every deterministic solver of any order reproduces exactly: run the rows on scalars."""
  e = 0.7
  for order in sampler_schedules.SOLVER_ORDERS.get(sampler, (2,)):
    plan = solver_schedules.solver_plan(sampler, ABAR, 12, None, order)
    vp = sampler in solver_schedules.MULTISTEP
    sigma = lambda k: np.sqrt((plan['m_u'][k] if vp else 1. / plan['in_scale'][k]) ** 2 - 1.)  # noqa: E731
    on_path = lambda s: (1. + s * e) / np.sqrt(s ** 2 + 1.) if vp else 1. + s * e  # noqa: E731
    u, last, register = on_path(sigma(0)), 0., np.zeros(solver_schedules.REGISTER)
    for k in range(plan['t_model'].shape[0]):
      eps = (plan['in_scale'][k] * u - 1. / np.sqrt(sigma(k) ** 2 + 1.)) / (sigma(k) / np.sqrt(sigma(k) ** 2 + 1.))
      assert eps == pytest.approx(e, abs=1e-9), (order, k)
      register = np.append(plan['m_u'][k] * u + plan['m_eps'][k] * eps, register[:-1])
      corrected = plan['c_u'][k] * u + plan['c_last'][k] * last + plan['c_w'][k] @ register
      u, last = plan['p_u'][k] * corrected + plan['p_last'][k] * last + plan['p_w'][k] @ register, corrected
    assert u == pytest.approx(1., abs=1e-9), order


# ---------------------------------------------------------------------------------------------------------------
# Parity with diffusers

def test_solvers_match_diffusers(fixture):
  diffusion = _diffusion2()
  configs = _configs(fixture)
  assert len(configs) == 108

  def _build():
    outs = {}
    for key, sampler, S, skip, order in configs:
      plan = solver_schedules.solver_plan(sampler, ABAR, S, skip, order or 2)
      noise = fixture['noise_s{}'.format(S)] if plan['stochastic'] else None
      outs[key] = diffusion._solver_loop(_toy_eps, plan=plan, shape=SHAPE, noise_fn=None,
                                         x_T=fixture['x_T_s{}'.format(S)], step_noise=noise, record=True)
    return outs

  outs = _run(_build)
  for key, *_ in configs:
    final, xs = outs[key]
    ref = fixture[key + '_xs']
    scale = max(1., np.abs(ref).max())  # euler / heun states are z = x_t / alpha (up to ~160 at the top)
    np.testing.assert_allclose(xs / scale, ref / scale, rtol=0, atol=5e-5, err_msg=key)
    np.testing.assert_allclose(final / scale, fixture[key + '_final'] / scale, rtol=0, atol=5e-5, err_msg=key)


def test_ddpm_on_the_new_spacings_matches_diffusers_ddpm_scheduler(fixture):
  diffusion = _diffusion2()
  keys = sorted(k[:-len('_final')] for k in fixture if k.startswith('ddpm_') and k.endswith('_final'))
  assert len(keys) == 6

  def _build():
    outs = {}
    for key in keys:
      _, s, skip = key.split('_')
      S = int(s[1:])
      outs[key] = diffusion.sample_loop(_toy_eps, shape=SHAPE, sampler='ddpm', num_inference_steps=S, skip_type=skip,
                                        x_T=fixture['x_T_s{}'.format(S)], step_noise=fixture['noise_s{}'.format(S)])
    return outs

  outs = _run(_build)
  for key in keys:
    _, s, skip = key.split('_')
    np.testing.assert_array_equal(samplers.inference_timesteps(T, int(s[1:]), skip, ABAR)[::-1],
                                  fixture[key + '_timesteps'], err_msg=key)
    # karras visits t = 0, 3, ..., where diffusers' float32 alphabar is least precise
    np.testing.assert_allclose(outs[key], fixture[key + '_final'], rtol=1e-4, atol=1e-4, err_msg=key)


# ---------------------------------------------------------------------------------------------------------------
# Identities and closed forms

@pytest.mark.parametrize('skip_type', ['uniform', 'quad', 'trailing'])
def test_dpmsolver_order1_equals_ddim_eta0_on_the_same_timesteps(skip_type):
  """DPM-Solver++ of order 1 is DDIM (Lu et al. 2022, sec. 3.1): same timesteps (DDIM's grids and diffusers'
  trailing are shared by both), same x_T, no clipping."""
  diffusion = _diffusion2()
  x_T = np.random.RandomState(0).randn(*SHAPE).astype(np.float32)
  kw = dict(shape=SHAPE, num_inference_steps=12, skip_type=skip_type, x_T=x_T)
  dpm, ddim, dpm2 = _run(lambda: [
    diffusion.sample_loop(_toy_eps, sampler='dpmsolver++', solver_order=1, **kw),
    diffusion.sample_loop(_toy_eps, sampler='ddim', eta=0., clip_denoised=False, **kw),
    diffusion.sample_loop(_toy_eps, sampler='dpmsolver++', solver_order=2, **kw)])
  np.testing.assert_allclose(dpm, ddim, rtol=1e-5, atol=1e-5)
  assert np.abs(dpm2 - ddim).max() > 1e-4


def _linear_eps(a, b):
  return lambda x, t: a * x + b + 0. * tf.cast(t, tf.float32)[:, None, None, None]


@pytest.mark.parametrize('sampler', ['euler', 'heun'])
def test_euler_and_heun_steps_on_a_linear_eps_model_match_the_closed_form(sampler):
  """eps(x_t) = a x_t + b with x_t = z / sqrt(sigma^2 + 1): Euler's step is z' = z + (sigma' - sigma) eps(z, sigma),
  Heun's averages the slopes at both ends (Karras et al. 2022, Algorithm 1), written here from the definitions."""
  a, b = 0.3, 0.2
  S = 6
  plan = solver_schedules.solver_plan(sampler, ABAR, S, 'linspace')
  _, sigmas = solver_schedules.solver_noise_levels(ABAR, S, 'linspace', sampler)
  x_T = np.random.RandomState(1).randn(*SHAPE).astype(np.float64)

  def slope(z, s):
    return a * z / np.sqrt(s ** 2 + 1.) + b

  z = x_T * sigmas[0]  # diffusers' init_noise_sigma for linspace
  for i in range(S):
    s, s_next = sigmas[i], sigmas[i + 1]
    d = slope(z, s)
    if sampler == 'euler' or s_next == 0:
      z = z + (s_next - s) * d
    else:
      z_tilde = z + (s_next - s) * d
      z = z + (s_next - s) * 0.5 * (d + slope(z_tilde, s_next))
  ours = _run(lambda: _diffusion2()._solver_loop(_linear_eps(a, b), plan=plan, shape=SHAPE, noise_fn=None,
                                                 x_T=x_T.astype(np.float32), step_noise=None))
  np.testing.assert_allclose(ours, z, rtol=1e-4, atol=1e-4)


def test_euler_ancestral_with_zero_noise_is_euler_with_the_ancestral_step_sizes():
  """With z_k = 0 the ancestral step is the Euler step to sigma_down; with sigma_up = 0 it would be euler itself, so
  compare against euler's plan with sigma_down as the next level and check the noise then enters with sigma_up."""
  S = 8
  x_T = np.random.RandomState(2).randn(*SHAPE).astype(np.float32)
  zeros, ones = np.zeros([S, *SHAPE], np.float32), np.ones([S, *SHAPE], np.float32)
  _, sigmas = solver_schedules.solver_noise_levels(ABAR, S, 'linspace', 'euler_ancestral')
  s, s_next = sigmas[:-1], sigmas[1:]
  s_down = np.sqrt(s_next ** 2 - s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2)
  diffusion = _diffusion2()
  kw = dict(shape=SHAPE, sampler='euler_ancestral', num_inference_steps=S, x_T=x_T)
  ancestral0, ancestral1, euler = _run(lambda: [
    diffusion.sample_loop(_toy_eps, step_noise=zeros, **kw), diffusion.sample_loop(_toy_eps, step_noise=ones, **kw),
    diffusion.sample_loop(_toy_eps, shape=SHAPE, sampler='euler', num_inference_steps=S, x_T=x_T)])
  z = x_T.astype(np.float64) * sigmas[0]
  for i in range(S):
    z = z + (s_down[i] - s[i]) * (np.tanh(z / np.sqrt(s[i] ** 2 + 1.)) + 0.01 * np.linspace(0, T - 1, S)[::-1][i] / T)
  np.testing.assert_allclose(ancestral0, z, rtol=1e-4, atol=1e-4)
  assert np.abs(ancestral1 - ancestral0).max() > 1e-2 and np.abs(euler - ancestral0).max() > 1e-3
  zero_noise_plan = solver_schedules.solver_plan('euler_ancestral', ABAR, S)
  euler_plan = solver_schedules.solver_plan('euler', ABAR, S)
  np.testing.assert_allclose(zero_noise_plan['p_u'][-1:], euler_plan['p_u'][-1:])  # both end at x0


def test_euler_ancestral_without_noise_equals_euler_when_sigma_up_vanishes():
  """sigma_up = 0 exactly when the next level is 0 or equal; on a one-step schedule both samplers give x0."""
  x_T = np.random.RandomState(3).randn(*SHAPE).astype(np.float32)
  diffusion = _diffusion2()
  a, e = _run(lambda: [
    diffusion.sample_loop(_toy_eps, shape=SHAPE, sampler='euler_ancestral', num_inference_steps=1, x_T=x_T,
                          step_noise=np.zeros([1, *SHAPE], np.float32)),
    diffusion.sample_loop(_toy_eps, shape=SHAPE, sampler='euler', num_inference_steps=1, x_T=x_T)])
  np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('sampler', ['dpmsolver++', 'unipc', 'heun'])
def test_learned_variance_networks_use_the_eps_half_and_both_classes_agree(sampler):
  x_T = np.random.RandomState(4).randn(*SHAPE).astype(np.float32)
  kw = dict(shape=SHAPE, sampler=sampler, num_inference_steps=7, x_T=x_T)
  eps_only, learned, core = _run(lambda: [
    _diffusion2().sample_loop(_toy_eps, **kw), _diffusion2(var='learned').sample_loop(_toy_learned, **kw),
    GaussianDiffusion(betas=BETAS, loss_type='noisepred').sample_loop(_toy_eps, **kw)])
  # the same float32 arithmetic up to the order of fused ops (samples reach ~80 with the toy network)
  np.testing.assert_allclose(learned, eps_only, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(core, eps_only, rtol=1e-5, atol=1e-5)


def test_sde_dpmsolver_draws_one_noise_per_step_from_noise_fn():
  calls = []

  def _counting_noise_fn(shape, dtype):
    calls.append(list(shape))
    return tf.zeros(shape, dtype=dtype)

  x_T = np.random.RandomState(5).randn(*SHAPE).astype(np.float32)
  kw = dict(shape=SHAPE, sampler='sde-dpmsolver++', num_inference_steps=6, x_T=x_T)
  drawn, replayed = _run(lambda: [_diffusion2().sample_loop(_toy_eps, noise_fn=_counting_noise_fn, **kw),
                                  _diffusion2().sample_loop(_toy_eps, step_noise=np.zeros([6, *SHAPE], np.float32),
                                                            **kw)])
  assert calls == [SHAPE]  # one draw built inside the loop body (run once per step); x_T was given
  np.testing.assert_allclose(drawn, replayed, rtol=1e-6, atol=1e-6)


def test_solver_options_defaults_and_errors():
  resolve = samplers.resolve_sampler_options
  for sampler in sampler_schedules.SOLVERS:
    assert resolve(T, sampler=sampler, skip_type=None) == 50
    assert sampler_schedules.DEFAULT_SKIP_TYPES[sampler] == 'linspace'
  assert resolve(T, sampler='unipc', solver_order=3, skip_type='karras') == 50
  bad = [
    (dict(sampler='euler', solver_order=2), 'solver_order only applies to samplers dpmsolver\\+\\+'),
    (dict(sampler='sde-dpmsolver++', solver_order=3), 'solver_order for sde-dpmsolver\\+\\+ must be one of 1, 2'),
    (dict(sampler='unipc', solver_order=4), 'must be one of 1, 2, 3, got 4'),
    (dict(sampler='euler_ancestral', skip_type='karras'), 'euler_ancestral supports skip_type uniform, quad'),
    (dict(sampler='heun', eta=0.5), 'only applies to sampler ddim'),
    (dict(sampler='unipc', skip_type='quad', num_inference_steps=60), 'repeats timesteps'),
    (dict(sampler='ddpm', skip_type='karras', num_inference_steps=200, alphas_cumprod=ABAR), 'repeats timesteps'),
    (dict(sampler='dpmsolver++', model_mean_type='xstart'), "needs an eps-prediction network"),
    (dict(sampler='ddim', skip_type='karras'), None),
  ]
  for kwargs, message in bad:
    if message is None:
      assert resolve(T, **kwargs) == 50
      continue
    with pytest.raises(ValueError, match=message):
      resolve(T, **kwargs)
  with tf.Graph().as_default():
    with pytest.raises(ValueError, match="needs an eps-prediction network"):
      _diffusion2(mean='xstart').sample_loop(_toy_eps, shape=SHAPE, sampler='unipc')
    with pytest.raises(ValueError, match='step_noise applies to the stochastic samplers'):
      _diffusion2().sample_loop(_toy_eps, shape=SHAPE, sampler='euler', step_noise=np.zeros([50, *SHAPE]))
