"""Fast samplers over the coefficient tables of diffusion_core.GaussianDiffusionBase.

- 'ddpm': ancestral sampling (DDPM Algorithm 2), optionally respaced to S < T steps as in improved-diffusion
  (Nichol & Dhariwal 2021, sec. 4): betas'_i = 1 - alphabar_{t_i} / alphabar_{t_{i-1}} over the kept timesteps,
  the network still called with the original timestep t_i.
- 'ddim': DDIM (Song et al. 2020, eq. 12) over S of the T timesteps, deterministic for eta = 0.
- 'pndm': PNDM (Liu et al. 2022): pseudo Runge-Kutta warm-up, then pseudo linear multi-step (PLMS).
- the few-step solvers (DPM-Solver++, UniPC, Euler, Heun): solvers.py, reached through `sample_loop`.

The coefficient sequences are small pure float64 numpy functions (sampler_schedules.py); the TF loops (the
`SamplerMixin` methods) only gather them and combine network outputs. The numbers match diffusers' DDIMScheduler,
PNDMScheduler and (respaced ddpm) DDPMScheduler (see docs/samplers.md and tests/test_samplers.py).

Timestep notation: t = 0..T-1 index the paper's 1..T (as in diffusion_core); a sub-sequence t_0 < t_1 < ... < t_{S-1}
is sampled from t_{S-1} down to t_0, and "alphabar before t_0" is 1 (the sample after the last step is x_0).
"""

import inspect

import numpy as np
import tensorflow.compat.v1 as tf

from . import checks
from .noise import step_noise_like
from .sampler_schedules import (  # noqa: F401 (the samplers' names)
  DEFAULT_FAST_STEPS, DEFAULT_SKIP_TYPES, SAMPLERS, SKIP_TYPES, SOLVERS, check_eta, check_num_inference_steps,
  ddim_coefficients, inference_timesteps, pndm_plan, pndm_transfer, resolve_sampler_options, respaced_betas)


# ---------------------------------------------------------------------------------------------------------------
# TF loops

def _sampling_loop(num_steps, step_fn, init_vars, record_shape=None):
  """Run vars <- step_fn(k, *vars) for k = 0, ..., num_steps - 1 (k counts network calls from x_T) in one
  tf.while_loop without gradients; loop variables keep their static shapes. With `record_shape`, step_fn returns
  (new_vars, record) and the records are also returned, stacked as [num_steps, *record_shape] in k order.
  """
  init_vars = list(init_vars)
  n = len(init_vars)
  recording = record_shape is not None

  def _body(k, *args):
    vars_ = args[:n]
    if recording:
      new_vars, record = step_fn(k, *vars_)
      assert record.shape.as_list() == list(record_shape), (record.shape, record_shape)
      return [k + 1, *new_vars, args[n].write(k, record)]
    new_vars = step_fn(k, *vars_)
    assert len(new_vars) == n
    return [k + 1, *new_vars]

  loop_vars = [tf.constant(0, dtype=tf.int32), *init_vars]
  if recording:
    loop_vars.append(tf.TensorArray(tf.float32, size=num_steps, element_shape=record_shape))
  out = tf.while_loop(cond=lambda k, *_: tf.less(k, num_steps), body=_body, loop_vars=loop_vars, back_prop=False)
  if recording:
    records = out[n + 1].stack()
    records.set_shape([num_steps, *record_shape])
    return out[1:n + 1], records
  return out[1:]


def _at(table, k, dtype=tf.float32):
  """The entry k (an int32 scalar tensor) of a numpy table, as a tensor (float tables are cast to float32)."""
  return tf.gather(tf.constant(np.asarray(table).astype(dtype.as_numpy_dtype)), k)


class SamplerMixin:
  """Fast samplers for GaussianDiffusionBase. Needs from the host class: the float64 tables (alphas_cumprod, ...),
  num_timesteps, _extract, _predict_xstart_from_eps, _predict_eps_from_xstart, _model_eps (network output ->
  epsilon), p_sample (for the respaced ddpm chain) and, for `sample_loop`'s solvers, solvers.SolverMixin.

  Noise: every loop draws x_T = noise_fn(shape=shape, dtype=tf.float32) first (unless `x_T` is given), then calls
  noise_fn once per step when the sampler is stochastic (ddpm, ddim with eta > 0), in step order. `step_noise`
  [S, *shape] replaces those per-step calls (step k uses step_noise[k], k = 0 the step from x_T), which replays a
  fixed noise sequence exactly.
  """

  @staticmethod
  def _check_shape(shape, x_T, step_noise, num_steps):
    """Validate `shape` and the optional x_T [shape] / step_noise [num_steps, *shape]; returns them as tensors."""
    if not (isinstance(shape, (tuple, list)) and len(shape) >= 1 and
            all(checks.is_int(d) and d >= 1 for d in shape)):
      raise ValueError('shape must be a static list of positive ints [B, ...], got {!r}'.format(shape))
    if x_T is not None:
      x_T = tf.convert_to_tensor(x_T, dtype=tf.float32)
      if x_T.shape.as_list() != list(shape):
        raise ValueError('x_T must have shape {}, got {}'.format(list(shape), x_T.shape.as_list()))
    if step_noise is not None:
      step_noise = tf.convert_to_tensor(step_noise, dtype=tf.float32)
      if step_noise.shape.as_list() != [num_steps, *shape]:
        raise ValueError('step_noise must have shape {} (one draw per step), got {}'.format(
          [num_steps, *shape], step_noise.shape.as_list()))
    return x_T, step_noise

  @staticmethod
  def _initial_noise(shape, noise_fn, x_T):
    return noise_fn(shape=list(shape), dtype=tf.float32) if x_T is None else x_T

  @staticmethod
  def _noise_at(k, x, shape, noise_fn, step_noise):
    """The noise of step k: step_noise[k], or a fresh noise_fn draw made after x_k exists so draws follow the steps."""
    if step_noise is not None:
      return step_noise[k]
    noise = step_noise_like(x, noise_fn)
    assert noise.shape.as_list() == list(shape)
    return noise

  # ------------------------------------------------------------------------------------------------------------
  # DDIM

  def _ddim_loop(self, denoise_fn, *, shape, num_inference_steps, eta, skip_type, clip_denoised,
                 use_clipped_model_output, noise_fn, x_T, step_noise, progressive):
    T = self.num_timesteps
    timesteps = inference_timesteps(T, num_inference_steps, skip_type, self.alphas_cumprod)
    S, = timesteps.shape
    coef = ddim_coefficients(self.alphas_cumprod, timesteps, eta)
    x_T, step_noise = self._check_shape(shape, x_T, step_noise, S)
    B = shape[0]

    def _step(k, x):
      i = S - 1 - k  # index into the ascending timesteps
      t = tf.fill([B], _at(timesteps, i, tf.int32))
      eps = self._model_eps(denoise_fn, x, t)
      assert eps.shape.as_list() == list(shape)
      pred_xstart = self._predict_xstart_from_eps(x_t=x, t=t, eps=eps)
      if clip_denoised:
        pred_xstart = tf.clip_by_value(pred_xstart, -1., 1.)
      if use_clipped_model_output:  # the eps that the clipped x_0 implies (diffusers' use_clipped_model_output)
        eps = self._predict_eps_from_xstart(x_t=x, t=t, pred_xstart=pred_xstart)
      x_prev = _at(coef['sqrt_alphas_cumprod_prev'], i) * pred_xstart + _at(coef['dir_coef'], i) * eps
      if eta > 0:
        x_prev += _at(coef['sigma'], i) * self._noise_at(k, x, shape, noise_fn, step_noise)
      assert x_prev.shape.as_list() == pred_xstart.shape.as_list() == list(shape)
      return ([x_prev], pred_xstart) if progressive else [x_prev]

    x_init = self._initial_noise(shape, noise_fn, x_T)
    if not progressive:
      x_final, = _sampling_loop(S, _step, [x_init])
      return x_final
    (x_final,), xstartpreds = _sampling_loop(S, _step, [x_init], record_shape=list(shape))
    # [S, B, ...] in calling order (t descending) -> [B, S, ...] with slot i holding the prediction at t_i
    xstartpreds = tf.transpose(tf.reverse(xstartpreds, axis=[0]), [1, 0, *range(2, len(shape) + 1)])
    assert xstartpreds.shape.as_list() == [B, S, *shape[1:]]
    return x_final, xstartpreds

  def ddim_sample_loop(self, denoise_fn, *, shape, num_inference_steps=DEFAULT_FAST_STEPS, eta=0.,
                       skip_type='uniform', clip_denoised=True, use_clipped_model_output=False,
                       noise_fn=tf.random_normal, x_T=None, step_noise=None):
    """Generate samples with DDIM (Song et al. 2020, eq. 12) over S = num_inference_steps timesteps
    (`inference_timesteps`): from x_T ~ N(0, I), for i = S-1 .. 0,
      x0_pred = (x_{t_i} - sqrt(1 - alphabar_{t_i}) eps) / sqrt(alphabar_{t_i})  (clipped to [-1, 1] if clip_denoised),
      x_{t_{i-1}} = sqrt(alphabar_{t_{i-1}}) x0_pred + sqrt(1 - alphabar_{t_{i-1}} - sigma_i^2) eps + sigma_i z,
    alphabar_{t_{-1}} = 1, sigma_i from `ddim_coefficients` (eta = 0: deterministic given x_T). With
    use_clipped_model_output, eps is recomputed from the clipped x0_pred. Equals diffusers' DDIMScheduler(
    clip_sample=clip_denoised, set_alpha_to_one=True, steps_offset=0, timestep_spacing='leading') for
    skip_type='uniform'. Returns samples [shape].
    """
    return self._ddim_loop(denoise_fn, shape=shape, num_inference_steps=num_inference_steps, eta=eta,
                           skip_type=skip_type, clip_denoised=clip_denoised,
                           use_clipped_model_output=use_clipped_model_output, noise_fn=noise_fn, x_T=x_T,
                           step_noise=step_noise, progressive=False)

  def ddim_sample_loop_progressive(self, denoise_fn, *, shape, num_inference_steps=DEFAULT_FAST_STEPS, eta=0.,
                                   skip_type='uniform', clip_denoised=True, use_clipped_model_output=False,
                                   noise_fn=tf.random_normal, x_T=None, step_noise=None):
    """`ddim_sample_loop` that also returns the x_0 prediction of every step: (samples [B, ...],
    xstartpreds [B, S, ...]), slot i holding the prediction made at timestep t_i (ascending, as in
    p_sample_loop_progressive, so slot S-1 is the first step and slot 0 the last)."""
    return self._ddim_loop(denoise_fn, shape=shape, num_inference_steps=num_inference_steps, eta=eta,
                           skip_type=skip_type, clip_denoised=clip_denoised,
                           use_clipped_model_output=use_clipped_model_output, noise_fn=noise_fn, x_T=x_T,
                           step_noise=step_noise, progressive=True)

  # ------------------------------------------------------------------------------------------------------------
  # PNDM

  def _pndm_loop(self, denoise_fn, *, shape, num_inference_steps, skip_prk_steps, noise_fn, x_T, record=False):
    """PNDM over `pndm_plan`; with `record`, also returns x after every call [N, *shape] (calling order)."""
    plan = pndm_plan(self.alphas_cumprod, num_inference_steps, skip_prk_steps)
    N, = plan['t_model'].shape
    x_T, _ = self._check_shape(shape, x_T, None, N)
    B = shape[0]

    def _step(k, x, anchor, ets, acc):
      # ets [4, *shape]: the register of recorded eps, newest last; acc: the running Runge-Kutta sum
      t = tf.fill([B], _at(plan['t_model'], k, tf.int32))
      eps = self._model_eps(denoise_fn, x, t)
      assert eps.shape.as_list() == list(shape)
      set_anchor, push = _at(plan['set_anchor'], k), _at(plan['push'], k)
      anchor = set_anchor * x + (1. - set_anchor) * anchor
      ets = push * tf.concat([ets[1:], eps[None]], axis=0) + (1. - push) * ets
      acc = _at(plan['acc_keep'], k) * acc + _at(plan['acc_in'], k) * eps
      eps_comb = _at(plan['w_eps'], k) * eps + _at(plan['w_acc'], k) * acc
      for j in range(4):
        eps_comb += _at(plan['w_ets'][:, j], k) * ets[j]
      from_anchor = _at(plan['from_anchor'], k)
      source = from_anchor * anchor + (1. - from_anchor) * x
      x_next = _at(plan['c_x'], k) * source + _at(plan['c_eps'], k) * eps_comb
      assert x_next.shape.as_list() == list(shape) and ets.shape.as_list() == [4, *shape]
      new_vars = [x_next, anchor, ets, acc]
      return (new_vars, x_next) if record else new_vars

    x_init = self._initial_noise(shape, noise_fn, x_T)
    init_vars = [x_init, tf.zeros(shape), tf.zeros([4, *shape]), tf.zeros(shape)]
    if record:
      (x_final, _, _, _), xs = _sampling_loop(N, _step, init_vars, record_shape=list(shape))
      return x_final, xs
    x_final, _, _, _ = _sampling_loop(N, _step, init_vars)
    return x_final

  def pndm_sample_loop(self, denoise_fn, *, shape, num_inference_steps=DEFAULT_FAST_STEPS, skip_prk_steps=False,
                       noise_fn=tf.random_normal, x_T=None):
    """Generate samples with PNDM (Liu et al. 2022): x_T ~ N(0, I), then the pseudo Runge-Kutta warm-up and pseudo
    linear multi-step steps of `pndm_plan` (S + 9 network calls; S + 1 with skip_prk_steps, i.e. PLMS only).
    Deterministic given x_T; x_0 is not clipped. Equals diffusers' PNDMScheduler(skip_prk_steps=skip_prk_steps,
    set_alpha_to_one=False, steps_offset=0, timestep_spacing='leading'). Returns samples [shape].
    """
    return self._pndm_loop(denoise_fn, shape=shape, num_inference_steps=num_inference_steps,
                           skip_prk_steps=skip_prk_steps, noise_fn=noise_fn, x_T=x_T)

  # ------------------------------------------------------------------------------------------------------------
  # Respaced ancestral sampling

  def _respaced(self, timesteps):
    """The same diffusion (same class and options) over the kept timesteps, with `respaced_betas`."""
    return self._with_betas(respaced_betas(self.alphas_cumprod, timesteps))

  def _with_betas(self, betas):
    """The same diffusion (same class and options) with another beta schedule."""
    init = inspect.signature(type(self).__init__)
    kwargs = {}
    for name, param in init.parameters.items():
      if name in ('self', 'betas') or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
        continue
      if hasattr(self, name):
        kwargs[name] = getattr(self, name)
      elif param.default is param.empty:
        raise TypeError('cannot respace {}: constructor argument {!r} is not an attribute'.format(
          type(self).__name__, name))
    return type(self)(betas=betas, **kwargs)

  def ddpm_sample_loop(self, denoise_fn, *, shape, num_inference_steps=None, skip_type='uniform', clip_denoised=True,
                       noise_fn=tf.random_normal, x_T=None, step_noise=None):
    """Ancestral sampling (DDPM Algorithm 2) over S = num_inference_steps timesteps (`inference_timesteps`).

    S < T respaces the chain as improved-diffusion does: the same class with betas'_i = 1 - alphabar_{t_i} /
    alphabar_{t_{i-1}} (`respaced_betas`), whose fixedlarge / fixedsmall variances are recomputed from betas'; the
    network is called with the original timestep t_i, and a learned log variance is used as the network outputs it.
    S = T (or None) is exactly p_sample_loop, here with optional clip_denoised=False, x_T and step_noise. For eps
    networks with fixed variances this equals diffusers' DDPMScheduler(variance_type='fixed_small' / 'fixed_large',
    clip_sample=clip_denoised, steps_offset=0, timestep_spacing='leading') with S inference steps.
    Returns samples [shape].
    """
    T = self.num_timesteps
    S = check_num_inference_steps(T if num_inference_steps is None else num_inference_steps, T)
    timesteps = inference_timesteps(T, S, skip_type, self.alphas_cumprod)
    x_T, step_noise = self._check_shape(shape, x_T, step_noise, S)
    B = shape[0]
    if S == T and skip_type == 'uniform':
      diffusion = self
    else:
      if getattr(self, 'model_mean_type', 'eps') == 'xprev':
        raise ValueError("respaced ddpm (num_inference_steps={} < T={}) needs model_mean_type 'eps' or 'xstart': an "
                         "x_{{t-1}} prediction belongs to the one-step chain; use sampler ddim".format(S, T))
      diffusion = self._respaced(timesteps)

    def _mapped_denoise_fn(x, i):  # the respaced chain's step index i -> the original timestep t_i
      return denoise_fn(x, tf.gather(tf.constant(timesteps.astype(np.int32)), i))

    # GaussianDiffusion2.p_sample requires return_pred_xstart (as in the original release); GaussianDiffusion's has none
    extra = {'return_pred_xstart': False} if 'return_pred_xstart' in inspect.signature(
      diffusion.p_sample).parameters else {}

    def _step(k, x):
      def _step_noise_fn(**unused_shape_and_dtype):  # p_sample asks for noise like x
        return self._noise_at(k, x, shape, noise_fn, step_noise)
      x_prev = diffusion.p_sample(_mapped_denoise_fn, x=x, t=tf.fill([B], S - 1 - k), noise_fn=_step_noise_fn,
                                  clip_denoised=clip_denoised, **extra)
      assert x_prev.shape.as_list() == list(shape)
      return [x_prev]

    x_final, = _sampling_loop(S, _step, [self._initial_noise(shape, noise_fn, x_T)])
    return x_final

  # ------------------------------------------------------------------------------------------------------------
  # Dispatcher

  def sample_loop(self, denoise_fn, *, shape, sampler='ddpm', num_inference_steps=None, eta=0.,
                  use_clipped_model_output=False, skip_prk_steps=False, clip_denoised=True,
                  noise_fn=tf.random_normal, skip_type=None, solver_order=None, x_T=None, step_noise=None,
                  x_start=None, strength=None):
    """Generate samples [shape] with `sampler` (one of SAMPLERS: 'ddpm', 'ddim', 'pndm' and the solvers of
    solvers.py; see docs/samplers.md).

    num_inference_steps: 1..T; None means T for ddpm and min(50, T) for the others. skip_type None means the
    sampler's default (uniform for ddpm / ddim / pndm, linspace for the solvers, as their diffusers schedulers).
    eta and use_clipped_model_output apply to ddim only, skip_prk_steps to pndm only, solver_order to dpmsolver++,
    sde-dpmsolver++ and unipc; clip_denoised applies to ddpm / ddim (pndm and the solvers never clip, as in
    diffusers). Raises ValueError on a bad option (`resolve_sampler_options`) before building anything.
    With x_start (images [shape]) and strength in (0, 1]: SDEdit from x_start (editing.EditingMixin.img2img_loop).
    """
    if x_start is not None or strength is not None:
      if x_start is None or strength is None:
        raise ValueError('x_start and strength go together (SDEdit), got x_start={} and strength={!r}'.format(
          'None' if x_start is None else 'images', strength))
      x_start = tf.convert_to_tensor(x_start, dtype=tf.float32)
      if x_start.shape.as_list() != list(shape):
        raise ValueError('x_start must have shape {}, got {}'.format(list(shape), x_start.shape.as_list()))
      return self.img2img_loop(
        denoise_fn, x_start=x_start, strength=strength, sampler=sampler, num_inference_steps=num_inference_steps,
        eta=eta, use_clipped_model_output=use_clipped_model_output, skip_prk_steps=skip_prk_steps,
        clip_denoised=clip_denoised, noise_fn=noise_fn, skip_type=skip_type, solver_order=solver_order, x_T=x_T,
        step_noise=step_noise)
    skip_type = DEFAULT_SKIP_TYPES.get(sampler, 'uniform') if skip_type is None else skip_type
    S = resolve_sampler_options(self.num_timesteps, sampler=sampler, num_inference_steps=num_inference_steps,
                                eta=eta, use_clipped_model_output=use_clipped_model_output,
                                skip_prk_steps=skip_prk_steps, skip_type=skip_type, solver_order=solver_order,
                                model_mean_type=getattr(self, 'model_mean_type', 'eps'),
                                alphas_cumprod=self.alphas_cumprod)
    if sampler in SOLVERS:
      return self.solver_sample_loop(denoise_fn, shape=shape, sampler=sampler, num_inference_steps=S,
                                     solver_order=solver_order, skip_type=skip_type, noise_fn=noise_fn, x_T=x_T,
                                     step_noise=step_noise)
    if sampler == 'ddpm':
      return self.ddpm_sample_loop(denoise_fn, shape=shape, num_inference_steps=S, skip_type=skip_type,
                                   clip_denoised=clip_denoised, noise_fn=noise_fn, x_T=x_T, step_noise=step_noise)
    if sampler == 'ddim':
      return self.ddim_sample_loop(denoise_fn, shape=shape, num_inference_steps=S, eta=eta, skip_type=skip_type,
                                   clip_denoised=clip_denoised, use_clipped_model_output=use_clipped_model_output,
                                   noise_fn=noise_fn, x_T=x_T, step_noise=step_noise)
    return self.pndm_sample_loop(denoise_fn, shape=shape, num_inference_steps=S, skip_prk_steps=skip_prk_steps,
                                 noise_fn=noise_fn, x_T=x_T)
