"""Editing with a trained diffusion, over the coefficient tables of diffusion_core.GaussianDiffusionBase:

- `inpaint_loop`: RePaint (Lugmayr et al. 2022): fill the unknown part of an image, resampling with jumps back in
  time so that the generated part harmonises with the known one.
- `ddim_inversion_loop`: x_0 -> x_T along the deterministic DDIM ODE (Song et al. 2020, sec. 4.3), which
  `ddim_sample_loop` (eta 0, the same steps) decodes back to the image.
- `img2img_loop` (also `sample_loop(..., x_start=, strength=)`): SDEdit (Meng et al. 2022): diffuse an image part
  of the way with q(x_t | x_0) and let any sampler of samplers.py / solvers.py redraw it from there.

The numbers of the first two equal diffusers 0.42.1's RePaintScheduler + RePaintPipeline loop and
DDIMInverseScheduler for the same network outputs and noise (tests/test_editing.py); the coefficient sequences are
in editing_schedules.py.
"""

import numpy as np
import tensorflow.compat.v1 as tf

from . import checks
from .editing_schedules import (  # noqa: F401 (the editing loops' names)
  DEFAULT_JUMP_LENGTH, DEFAULT_JUMP_N_SAMPLE, DEFAULT_REPAINT_STEPS, check_strength, ddim_inversion_coefficients,
  repaint_plan, repaint_timesteps, sdedit_num_timesteps)
from .sampler_schedules import DEFAULT_FAST_STEPS, SOLVERS, check_solver_order
from .samplers import _at, _sampling_loop
from .solver_schedules import solver_plan


def _image_tensor(name, value, shape=None):
  value = tf.convert_to_tensor(value, dtype=tf.float32)
  dims = value.shape.as_list()
  if len(dims) < 2 or any(d is None for d in dims):
    raise ValueError('{} must have a static shape [B, ...], got {}'.format(name, dims))
  if shape is not None and dims != list(shape):
    raise ValueError('{} must have shape {}, got {}'.format(name, list(shape), dims))
  return value


class EditingMixin:
  """Inpainting, inversion and image-to-image for GaussianDiffusionBase. Needs from the host class: the float64
  tables, num_timesteps, betas, _extract, _predict_xstart_from_eps, _model_eps and SamplerMixin's helpers
  (_check_shape, _initial_noise, _noise_at, _with_betas, sample_loop)."""

  # ------------------------------------------------------------------------------------------------------------
  # RePaint

  def inpaint_loop(self, denoise_fn, *, image, mask, num_inference_steps=DEFAULT_REPAINT_STEPS,
                   jump_length=DEFAULT_JUMP_LENGTH, jump_n_sample=DEFAULT_JUMP_N_SAMPLE, eta=0., clip_denoised=True,
                   noise_fn=tf.random_normal, x_T=None, step_noise=None):
    """Inpaint `image` [B, H, W, C] (in [-1, 1]) where `mask` is 0 with RePaint (`repaint_plan`): S denoising steps
    over the timesteps i T // S, going back up jump_length steps jump_n_sample - 1 times at every jump_length-th
    step (jump_n_sample=1: no jumps, the known part replaced at every step). mask [B, H, W, 1] or [B, H, W, C] is 1
    where the image is known and kept, 0 where it is generated (diffusers' convention), broadcast over channels;
    after the last step the known pixels are the image's exactly. Equals diffusers' RePaintScheduler(eta=eta,
    clip_sample=clip_denoised) driven by RePaintPipeline's loop.

    Noise, in this order (diffusers' generator order): x_T = noise_fn(shape) (unless `x_T` is given), then one draw
    per row of the plan: every denoising step draws one (the known part's noise and, with eta > 0, the unknown
    part's), every move back up draws T // S (one per forward step). `step_noise` [N, B, H, W, C], N =
    len(repaint_plan(...)['denoise']), replaces the per-row draws. Returns the inpainted images [B, H, W, C].
    """
    image = _image_tensor('image', image)
    shape = image.shape.as_list()
    mask = _image_tensor('mask', mask)
    if mask.shape.as_list() not in (shape, shape[:-1] + [1]):
      raise ValueError('mask must have shape {} or {} (1 where the image is kept), got {}'.format(
        shape[:-1] + [1], shape, mask.shape.as_list()))
    plan = repaint_plan(self.alphas_cumprod, self.betas, num_inference_steps, jump_length, jump_n_sample, eta)
    N, = plan['denoise'].shape
    x_T, step_noise = self._check_shape(shape, x_T, step_noise, N)
    B = shape[0]

    def _denoise_row(k, x, z):
      t = tf.fill([B], _at(plan['t_model'], k, tf.int32))
      eps = self._model_eps(denoise_fn, x, t)
      assert eps.shape.as_list() == shape
      pred_xstart = self._predict_xstart_from_eps(x_t=x, t=t, eps=eps)
      if clip_denoised:
        pred_xstart = tf.clip_by_value(pred_xstart, -1., 1.)
      sqrt_abar_prev = _at(plan['sqrt_alphas_cumprod_prev'], k)
      unknown = sqrt_abar_prev * pred_xstart + _at(plan['dir_coef'], k) * eps + _at(plan['sigma'], k) * z
      known = sqrt_abar_prev * image + _at(plan['sqrt_one_minus_alphas_cumprod_prev'], k) * z
      return mask * known + (1. - mask) * unknown

    def _step(k, x):
      z = self._noise_at(k, x, shape, noise_fn, step_noise)
      # the network runs on denoising rows only; a forward row is one step of q(x_{t+1} | x_t)
      x_next = tf.cond(_at(plan['denoise'], k) > 0.5, lambda: _denoise_row(k, x, z),
                       lambda: _at(plan['keep'], k) * x + _at(plan['add'], k) * z)
      x_next.set_shape(shape)
      return [x_next]

    x_final, = _sampling_loop(N, _step, [self._initial_noise(shape, noise_fn, x_T)])
    return x_final

  # ------------------------------------------------------------------------------------------------------------
  # DDIM inversion

  def ddim_inversion_loop(self, denoise_fn, *, x_0, num_inference_steps=DEFAULT_FAST_STEPS, clip_denoised=True):
    """Encode images x_0 [B, ...] (in [-1, 1]) into their DDIM latents x_T by running deterministic DDIM (eq. 12,
    eta 0) forwards over the S timesteps k T // S (`ddim_inversion_coefficients`; S network calls, no noise).
    Equals diffusers' DDIMInverseScheduler(clip_sample=clip_denoised, set_alpha_to_one=False,
    timestep_spacing='leading', steps_offset=0). `ddim_sample_loop(x_T=..., num_inference_steps=S, eta=0)` decodes
    the result back to about x_0 (docs/editing.md gives how closely). Returns x_T [shape of x_0].
    """
    x_0 = _image_tensor('x_0', x_0)
    shape = x_0.shape.as_list()
    coef = ddim_inversion_coefficients(self.alphas_cumprod, num_inference_steps)
    S, = coef['t_model'].shape
    B = shape[0]
    sqrt_recip_from = 1. / np.sqrt(coef['alphas_cumprod_from'])
    sqrt_recipm1_from = np.sqrt(1. / coef['alphas_cumprod_from'] - 1.)

    def _step(k, x):
      t = tf.fill([B], _at(coef['t_model'], k, tf.int32))
      eps = self._model_eps(denoise_fn, x, t)
      assert eps.shape.as_list() == shape
      pred_xstart = _at(sqrt_recip_from, k) * x - _at(sqrt_recipm1_from, k) * eps
      if clip_denoised:
        pred_xstart = tf.clip_by_value(pred_xstart, -1., 1.)
      x_next = (_at(np.sqrt(coef['alphas_cumprod_to']), k) * pred_xstart +
                _at(np.sqrt(1. - coef['alphas_cumprod_to']), k) * eps)
      assert x_next.shape.as_list() == shape
      return [x_next]

    x_T, = _sampling_loop(S, _step, [x_0])
    return x_T

  # ------------------------------------------------------------------------------------------------------------
  # SDEdit

  def img2img_loop(self, denoise_fn, *, x_start, strength, sampler='ddpm', num_inference_steps=None,
                   noise_fn=tf.random_normal, x_T=None, step_noise=None, **sampler_options):
    """SDEdit (Meng et al. 2022): diffuse x_start [B, ...] (in [-1, 1]) to t = round(strength T) with
    q(x_t | x_0) = N(sqrt(alphabar_t) x_0, (1 - alphabar_t) I) (`sdedit_num_timesteps`: at least one step) and
    denoise it with `sampler` (any of samplers.SAMPLERS, with its options as for `sample_loop`) over the first
    T' = round(strength T) timesteps: the sampler runs on the same diffusion cut to its first T' betas (the same
    alphabar_t for t < T'), so num_inference_steps counts the steps actually taken (1..T'; None: the sampler's
    default for T'). The noised image enters the sampler where x_T would: for the solvers whose state is the
    variance-exploding x_t / sqrt(alphabar) it is scaled so that the network first sees x_t itself.

    Noise: z = noise_fn(shape) first (or `x_T`), x_t = sqrt(alphabar_t) x_start + sqrt(1 - alphabar_t) z, then
    the sampler's per-step draws (or `step_noise`) as in sample_loop. strength = 1 starts from z itself, which is
    ordinary sampling (sample_loop with x_T = z). Returns the edited images [shape of x_start].
    """
    T = self.num_timesteps
    x_start = _image_tensor('x_start', x_start)
    shape = x_start.shape.as_list()
    T_kept = sdedit_num_timesteps(T, strength)
    if num_inference_steps is not None and T_kept < T and (
        not checks.is_int(num_inference_steps) or num_inference_steps > T_kept):
      raise ValueError('num_inference_steps={!r} is more than the {} timesteps that strength={!r} goes back '
                       '(round(strength * T), T={}); expected at most {}'.format(
                         num_inference_steps, T_kept, strength, T, T_kept))
    diffusion = self if T_kept == T else self._with_betas(self.betas[:T_kept])
    if sampler in SOLVERS:  # validate before the first noise op, as sample_loop would
      check_solver_order(sampler, sampler_options.get('solver_order'))
    z = self._initial_noise(shape, noise_fn, self._check_shape(shape, x_T, None, 0)[0])
    if T_kept == T:
      x_t = z
    else:
      t = tf.fill([shape[0]], T_kept - 1)
      x_t = self.q_sample(x_start, t, noise=z)
      if sampler in SOLVERS:
        x_t *= self._solver_entry_scale(diffusion, sampler, num_inference_steps, sampler_options)
    return diffusion.sample_loop(denoise_fn, shape=shape, sampler=sampler, num_inference_steps=num_inference_steps,
                                 noise_fn=noise_fn, x_T=x_t, step_noise=step_noise, **sampler_options)

  @staticmethod
  def _solver_entry_scale(diffusion, sampler, num_inference_steps, options):
    """The factor c such that the solver's state init_scale c x_t is fed to the network as x_t (in_scale[0] = 1
    for the VP multistep solvers, 1 / sqrt(sigma^2 + 1) for euler / heun, whose init_scale assumes pure noise)."""
    S = DEFAULT_FAST_STEPS if num_inference_steps is None else num_inference_steps
    S = min(S, diffusion.num_timesteps)
    order = check_solver_order(sampler, options.get('solver_order'))
    plan = solver_plan(sampler, diffusion.alphas_cumprod, S, options.get('skip_type'), order)
    return float(1. / (plan['in_scale'][0] * plan['init_scale']))
