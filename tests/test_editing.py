"""Editing loops (diffusion_tf/editing.py, editing_schedules.py): RePaint inpainting, DDIM inversion and SDEdit.

Checked against diffusers 0.42.1's RePaintPipeline + RePaintScheduler and DDIMInverseScheduler (the fixture
tests/fixtures/editing_parity.npz, made by tests/fixtures/make_editing_fixture.py with the toy network
eps(x, t) = tanh(x) + 0.01 t / T), on both diffusion classes, and by identities: the known pixels come back exactly,
inversion of a constant-eps network has a closed form, and SDEdit with a network that predicts the very noise it
added returns the input for every deterministic sampler.
"""

import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from diffusion_tf import editing
from diffusion_tf.diffusion_utils import GaussianDiffusion
from diffusion_tf.diffusion_utils_2 import GaussianDiffusion2, get_beta_schedule
from support.scripts import FIXTURES

FIXTURE = os.path.join(FIXTURES, 'editing_parity.npz')
SHAPE = [2, 4, 4, 3]
REPAINT_T, INVERSION_T = 100, 1000
REPAINT_BETAS = get_beta_schedule('linear', beta_start=1e-3, beta_end=0.2, num_diffusion_timesteps=REPAINT_T)
BETAS = get_beta_schedule('linear', beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=INVERSION_T)
# diffusers computes alphabar in float32, we in float64: agreement to float32 precision
TOL = dict(rtol=2e-5, atol=3e-5)


@pytest.fixture(scope='module')
def fixture():
  with np.load(FIXTURE) as f:
    return {k: f[k] for k in f.files}


def _both_classes(betas):
  return [GaussianDiffusion(betas=betas, loss_type='noisepred'),
          GaussianDiffusion2(betas=betas, model_mean_type='eps', model_var_type='fixedlarge', loss_type='mse')]


def _toy_eps(T):
  def eps(x, t):
    return tf.tanh(x) + 0.01 * tf.cast(t, tf.float32)[:, None, None, None] / T
  return eps


def _run(build):
  with tf.Graph().as_default():
    tf.set_random_seed(1234)
    out = build()
    with tf.Session() as sess:
      return sess.run(out)


def _repaint_configs(fixture):
  """[(key, S, jump_length, jump_n_sample, eta, clip)] of the fixture's RePaint runs."""
  out = []
  for key in sorted(k[:-len('_final')] for k in fixture if k.startswith('repaint_s') and k.endswith('_final')):
    _, s, j, n, eta, clip = key.split('_')
    out.append((key, int(s[1:]), int(j[1:]), int(n[1:]), float(eta[3:]), clip == 'clip1'))
  return out


# ---------------------------------------------------------------------------------------------------------------
# Schedules (numpy)

def test_repaint_schedule_is_diffusers_and_draws_one_noise_per_row(fixture):
  configs = _repaint_configs(fixture)
  assert len(configs) == 6 and {c[4] for c in configs} == {0., 0.5, 1.} and {c[3] for c in configs} >= {1, 2, 3}
  abar = np.cumprod(1. - REPAINT_BETAS)
  for key, S, L, n, eta, _ in configs:
    order = editing.repaint_timesteps(REPAINT_T, S, L, n)
    np.testing.assert_array_equal(order, fixture[key + '_timesteps'], err_msg=key)
    plan = editing.repaint_plan(abar, REPAINT_BETAS, S, L, n, eta)
    assert plan['denoise'].shape[0] == fixture[key + '_noise'].shape[0], key
    descents = 1 + int(np.sum(np.diff(order) < 0))
    assert plan['num_network_calls'] == descents == S + (n - 1) * L * len(range(0, S - L, L)), key
  with pytest.raises(ValueError, match='jump_length must be an integer >= 1'):
    editing.repaint_timesteps(REPAINT_T, 10, 0, 2)
  with pytest.raises(ValueError, match=r'num_inference_steps must be an integer in 1\.\.100'):
    editing.repaint_timesteps(REPAINT_T, 250, 10, 10)


def test_inversion_schedule_is_diffusers(fixture):
  for S in (10, 50):
    coef = editing.ddim_inversion_coefficients(np.cumprod(1. - BETAS), S)
    np.testing.assert_array_equal(coef['t_model'], fixture['inversion_s{}_clip1_timesteps'.format(S)])
    assert coef['alphas_cumprod_from'][0] == coef['alphas_cumprod_to'][0]  # set_alpha_to_one=False


def test_strength_checks_and_start():
  assert editing.sdedit_num_timesteps(1000, 1.) == 1000 and editing.sdedit_num_timesteps(1000, 0.25) == 250
  assert editing.sdedit_num_timesteps(1000, 1e-6) == 1
  for bad in (0., -0.1, 1.5, float('nan'), '0.5', True):
    with pytest.raises(ValueError, match=r'strength must be a number in \(0, 1\]'):
      editing.check_strength(bad)


# ---------------------------------------------------------------------------------------------------------------
# Parity with diffusers

@pytest.mark.parametrize('diffusion', _both_classes(REPAINT_BETAS), ids=['GaussianDiffusion', 'GaussianDiffusion2'])
def test_inpaint_loop_matches_diffusers_repaint(fixture, diffusion):
  configs = _repaint_configs(fixture)
  image, mask = fixture['repaint_image'], fixture['repaint_mask']
  outs = _run(lambda: {key: diffusion.inpaint_loop(
    _toy_eps(REPAINT_T), image=image, mask=mask, num_inference_steps=S, jump_length=L, jump_n_sample=n, eta=eta,
    clip_denoised=clip, x_T=fixture[key + '_x_T'], step_noise=fixture[key + '_noise'])
    for key, S, L, n, eta, clip in configs})
  for key, *_ in configs:
    np.testing.assert_allclose(outs[key], fixture[key + '_final'], err_msg=key, **TOL)
    np.testing.assert_allclose(np.clip(outs[key] / 2 + 0.5, 0, 1), fixture[key + '_output'], err_msg=key, **TOL)
  # the fixture keeps apart what it compares: eta, clipping and the jumps change the result
  finals = {key: fixture[key + '_final'] for key, *_ in configs}
  assert np.abs(finals['repaint_s20_j5_n3_eta0_clip1'] - finals['repaint_s20_j5_n3_eta1_clip1']).max() > 1e-2
  assert np.abs(finals['repaint_s20_j5_n3_eta1_clip1'] - finals['repaint_s20_j5_n3_eta1_clip0']).max() > 1e-2


@pytest.mark.parametrize('diffusion', _both_classes(BETAS), ids=['GaussianDiffusion', 'GaussianDiffusion2'])
def test_ddim_inversion_matches_diffusers_inverse_scheduler(fixture, diffusion):
  runs = [(S, clip) for S in (10, 50) for clip in (True, False)]
  outs = _run(lambda: [diffusion.ddim_inversion_loop(_toy_eps(INVERSION_T), x_0=fixture['inversion_x0'],
                                                     num_inference_steps=S, clip_denoised=clip) for S, clip in runs])
  for (S, clip), ours in zip(runs, outs):
    key = 'inversion_s{}_clip{:d}_final'.format(S, clip)
    np.testing.assert_allclose(ours, fixture[key], err_msg=key, **TOL)
  assert np.abs(fixture['inversion_s50_clip1_final'] - fixture['inversion_s50_clip0_final']).max() > 1e-2


# ---------------------------------------------------------------------------------------------------------------
# Identities

def test_inpainting_keeps_the_known_pixels_exactly():
  diffusion = _both_classes(REPAINT_BETAS)[1]
  rng = np.random.RandomState(0)
  image = rng.uniform(-1, 1, size=SHAPE).astype(np.float32)
  mask = (rng.uniform(size=SHAPE[:3] + [1]) < 0.5).astype(np.float32)
  kw = dict(image=image, num_inference_steps=10, jump_length=3, jump_n_sample=2)
  all_known, some_known, channel_mask, other_seed = _run(lambda: [
    diffusion.inpaint_loop(_toy_eps(REPAINT_T), mask=np.ones(SHAPE[:3] + [1], np.float32), eta=1., **kw),
    diffusion.inpaint_loop(_toy_eps(REPAINT_T), mask=mask, eta=1., **kw),
    diffusion.inpaint_loop(_toy_eps(REPAINT_T), mask=np.repeat(mask, 3, axis=-1), eta=1., **kw),
    diffusion.inpaint_loop(_toy_eps(REPAINT_T), mask=mask, noise_fn=lambda shape, dtype: tf.random_normal(
      shape, dtype=dtype, seed=7), **kw)])
  np.testing.assert_array_equal(all_known, image)
  known = np.broadcast_to(mask, SHAPE) == 1
  for out in (some_known, channel_mask, other_seed):
    np.testing.assert_array_equal(out[known], image[known])
    assert np.abs(out[~known] - image[~known]).max() > 0.1  # the unknown part is generated
  with tf.Graph().as_default():
    with pytest.raises(ValueError, match=r'mask must have shape \[2, 4, 4, 1\] or \[2, 4, 4, 3\]'):
      diffusion.inpaint_loop(_toy_eps(REPAINT_T), mask=np.ones([2, 4, 4, 2], np.float32), **kw)


def test_inversion_of_a_constant_eps_network_has_the_closed_form_and_decodes_back():
  """With eps(x, t) = c, DDIM moves along x = sqrt(alphabar) x0' + sqrt(1 - alphabar) c for the x0' of the start:
  inversion starts at alphabar_{t=0} (set_alpha_to_one=False), so x0' = (x - sqrt(1 - alphabar_0) c) /
  sqrt(alphabar_0), x_T = sqrt(alphabar_{t_{S-1}}) x0' + sqrt(1 - alphabar_{t_{S-1}}) c, and decoding ends at x0'."""
  diffusion = _both_classes(BETAS)[1]
  abar = diffusion.alphas_cumprod
  rng = np.random.RandomState(1)
  x0, c = rng.uniform(-0.9, 0.9, size=SHAPE).astype(np.float32), 0.5 * rng.randn(*SHAPE).astype(np.float32)
  constant_eps = lambda x, t: tf.constant(c) + 0. * x  # noqa: E731
  S = 20

  def _build():
    latent = diffusion.ddim_inversion_loop(constant_eps, x_0=x0, num_inference_steps=S, clip_denoised=False)
    return [latent, diffusion.ddim_sample_loop(constant_eps, shape=SHAPE, num_inference_steps=S, x_T=latent,
                                               clip_denoised=False)]

  x_T, decoded = _run(_build)
  x0_prime = (x0 - np.sqrt(1. - abar[0]) * c) / np.sqrt(abar[0])
  t_top = (S - 1) * (INVERSION_T // S)
  np.testing.assert_allclose(x_T, np.sqrt(abar[t_top]) * x0_prime + np.sqrt(1. - abar[t_top]) * c, rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(decoded, x0_prime, rtol=1e-4, atol=1e-4)


def test_inversion_then_decoding_reconstructs_the_image_better_with_more_steps(fixture):
  """The round trip x_0 -> x_T -> x_0 with the toy network and no clipping (the toy's x_0 predictions leave [-1, 1],
  where clipping would lose the image), within the error measured for it: max abs 0.22 at S = 50, 0.046 at 200,
  0.003 at 1000 over pixels in [-1, 1] (the ODE's discretisation error; docs/editing.md gives the demo model's)."""
  diffusion = _both_classes(BETAS)[0]
  x0 = fixture['inversion_x0']
  toy = _toy_eps(INVERSION_T)
  kw = dict(shape=SHAPE, clip_denoised=False)
  decoded = _run(lambda: [diffusion.ddim_sample_loop(toy, num_inference_steps=S, x_T=diffusion.ddim_inversion_loop(
    toy, x_0=x0, num_inference_steps=S, clip_denoised=False), **kw) for S in (50, 200, 1000)])
  errors = [np.abs(d - x0).max() for d in decoded]
  assert errors[0] < 0.25 and errors[1] < 0.05 and errors[2] < 0.005, errors
  far = _run(lambda: diffusion.ddim_sample_loop(toy, num_inference_steps=50, x_T=np.zeros(SHAPE, np.float32), **kw))
  assert np.abs(far - x0).max() > 0.5  # decoding another latent does not give the image


@pytest.mark.parametrize('sampler,options', [
  ('ddim', dict(skip_type='trailing')), ('ddim', dict(skip_type='trailing', num_inference_steps=7)),
  ('dpmsolver++', dict(solver_order=3, num_inference_steps=20)), ('unipc', dict(num_inference_steps=20)), ('euler', {}),
  ('heun', dict(num_inference_steps=8)),
  ('dpmsolver++', dict(skip_type='karras', num_inference_steps=12))])
def test_sdedit_with_the_true_noise_returns_the_input(sampler, options):
  """A network that predicts exactly the noise SDEdit added makes every deterministic sampler follow the exact
  trajectory back to the input, if the noised image enters the sampler at the noise level of its first step."""
  diffusion = _both_classes(BETAS)[1]
  rng = np.random.RandomState(2)
  x0, z = rng.uniform(-1, 1, size=SHAPE).astype(np.float32), rng.randn(*SHAPE).astype(np.float32)
  true_noise = lambda x, t: tf.constant(z) + 0. * x  # noqa: E731
  outs = _run(lambda: [diffusion.sample_loop(true_noise, shape=SHAPE, sampler=sampler, x_start=x0, strength=s,
                                             x_T=z, **options) for s in (0.5, 0.05)])
  for out in outs:
    np.testing.assert_allclose(out, x0, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('sampler,options', [('ddpm', {}), ('ddim', dict(eta=1.)), ('euler_ancestral', {}),
                                             ('dpmsolver++', {})])
def test_sdedit_strength_one_is_sampling_and_small_strength_keeps_the_input(sampler, options):
  diffusion = _both_classes(BETAS)[0]
  rng = np.random.RandomState(3)
  x0, z = rng.uniform(-1, 1, size=SHAPE).astype(np.float32), rng.randn(*SHAPE).astype(np.float32)
  toy = _toy_eps(INVERSION_T)
  S = 10 if sampler != 'ddpm' else None
  seeded = lambda shape, dtype: tf.random_normal(shape, dtype=dtype, seed=3)  # noqa: E731
  full, plain, tiny = _run(lambda: [
    diffusion.sample_loop(toy, shape=SHAPE, sampler=sampler, num_inference_steps=S, x_start=x0, strength=1.,
                          x_T=z, noise_fn=seeded, **options),
    diffusion.sample_loop(toy, shape=SHAPE, sampler=sampler, num_inference_steps=S, x_T=z, noise_fn=seeded,
                          **options),
    diffusion.sample_loop(toy, shape=SHAPE, sampler=sampler, x_start=x0, strength=1e-3, x_T=z,
                          num_inference_steps=None if sampler == 'ddpm' else 1, **options)])
  np.testing.assert_array_equal(full, plain)
  # one step from t = 0 (sqrt(1 - alphabar_0) = 0.01): the toy network's wrong eps moves x by about 0.01 |z - eps|
  assert np.abs(tiny - x0).max() < 0.05
  assert np.abs(full - x0).max() > 0.5


def test_sdedit_option_errors():
  diffusion = _both_classes(BETAS)[1]
  x0 = np.zeros(SHAPE, np.float32)
  toy = _toy_eps(INVERSION_T)
  bad = [
    (dict(x_start=x0), 'x_start and strength go together'),
    (dict(strength=0.5), 'x_start and strength go together'),
    (dict(x_start=x0, strength=0.), r'strength must be a number in \(0, 1\]'),
    (dict(x_start=x0, strength=0.02, sampler='ddim', num_inference_steps=50),
     'num_inference_steps=50 is more than the 20 timesteps that strength=0.02 goes back'),
    (dict(x_start=np.zeros([1, 4, 4, 3], np.float32), strength=0.5), r'x_start must have shape \[2, 4, 4, 3\]'),
    (dict(x_start=x0, strength=0.5, sampler='ddim', eta=2.), r'eta must be a number in \[0, 1\]'),
  ]
  for kwargs, message in bad:
    with tf.Graph().as_default():
      with pytest.raises(ValueError, match=message):
        diffusion.sample_loop(toy, shape=SHAPE, **kwargs)
