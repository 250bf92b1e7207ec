"""Fast samplers over the coefficient tables of diffusion_core.GaussianDiffusionBase.

- 'ddpm': ancestral sampling (DDPM Algorithm 2), optionally respaced to S < T steps as in improved-diffusion
  (Nichol & Dhariwal 2021, sec. 4): betas'_i = 1 - alphabar_{t_i} / alphabar_{t_{i-1}} over the kept timesteps,
  the network still called with the original timestep t_i.
- 'ddim': DDIM (Song et al. 2020, eq. 12) over S of the T timesteps, deterministic for eta = 0.
- 'pndm': PNDM (Liu et al. 2022): pseudo Runge-Kutta warm-up, then pseudo linear multi-step (PLMS).

The coefficient sequences are small pure float64 numpy functions (the top half of this file); the TF loops (the
`SamplerMixin` methods) only gather them and combine network outputs. The numbers match diffusers' DDIMScheduler,
PNDMScheduler and (respaced ddpm) DDPMScheduler (see docs/samplers.md and tests/test_samplers.py).

Timestep notation: t = 0..T-1 index the paper's 1..T (as in diffusion_core); a sub-sequence t_0 < t_1 < ... < t_{S-1}
is sampled from t_{S-1} down to t_0, and "alphabar before t_0" is 1 (the sample after the last step is x_0).
"""

import inspect

import numpy as np
import tensorflow.compat.v1 as tf

from .noise import step_noise_like

SAMPLERS = ('ddpm', 'ddim', 'pndm')
SKIP_TYPES = ('uniform', 'quad')
DEFAULT_FAST_STEPS = 50  # num_inference_steps of ddim / pndm when not given (diffusers' pipelines use 50 too)

# PLMS (Adams-Bashforth) weights over the register of the last 4 recorded eps (oldest first), by how many exist
_PLMS_WEIGHTS = {
  1: np.array([0., 0., 0., 1.]),
  2: np.array([0., 0., -1., 3.]) / 2.,
  3: np.array([0., 5., -16., 23.]) / 12.,
  4: np.array([-9., 37., -59., 55.]) / 24.,
}


# ---------------------------------------------------------------------------------------------------------------
# Coefficient sequences (pure numpy, float64)

def check_num_inference_steps(num_inference_steps, num_timesteps):
  """Raise a ValueError unless num_inference_steps is an integer in 1..num_timesteps; returns it as int."""
  if (isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer))
      or not 1 <= num_inference_steps <= num_timesteps):
    raise ValueError('num_inference_steps must be an integer in 1..{} (the number of training timesteps T), '
                     'got {!r}'.format(num_timesteps, num_inference_steps))
  return int(num_inference_steps)


def inference_timesteps(num_timesteps, num_inference_steps, skip_type='uniform'):
  """The S timesteps t_0 < ... < t_{S-1} (int64 [S], ascending) a fast sampler visits, from t_{S-1} down.

  uniform: t_i = i * (T // S) (DDIM's `range(0, T, T // S)`, cut to S entries; diffusers' 'leading' spacing with
    steps_offset=0).
  quad: t_i = int((i * sqrt(0.8 T) / (S - 1))^2) (DDIM's quadratic sequence; repeats small t when S > ~sqrt(0.8 T),
    as the DDIM code does).
  """
  T = int(num_timesteps)
  S = check_num_inference_steps(num_inference_steps, T)
  if skip_type == 'uniform':
    timesteps = np.arange(S, dtype=np.int64) * (T // S)
  elif skip_type == 'quad':
    timesteps = (np.linspace(0, np.sqrt(T * 0.8), S) ** 2).astype(np.int64)
  else:
    raise ValueError('unknown skip_type {!r}; expected one of {}'.format(skip_type, SKIP_TYPES))
  assert timesteps.shape == (S,) and timesteps[0] == 0 and timesteps[-1] < T
  assert np.all(np.diff(timesteps) >= 0)
  return timesteps


def respaced_betas(alphas_cumprod, timesteps):
  """Betas of the Markov chain over the kept timesteps with the same marginals q(x_{t_i} | x_0) (improved-diffusion
  respacing): beta'_i = 1 - alphabar_{t_i} / alphabar_{t_{i-1}}, alphabar_{t_{-1}} := 1. float64 [S].
  """
  alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
  timesteps = np.asarray(timesteps)
  if np.any(np.diff(timesteps) <= 0):
    raise ValueError('respacing needs strictly increasing timesteps, got {}'.format(timesteps.tolist()))
  abar = alphas_cumprod[timesteps]
  abar_prev = np.append(1., abar[:-1])
  betas = 1. - abar / abar_prev
  assert betas.shape == timesteps.shape
  return betas


def check_eta(eta):
  """Raise a ValueError unless eta is a number in [0, 1]; returns it as float."""
  if isinstance(eta, bool) or not isinstance(eta, (int, float, np.floating, np.integer)) or not 0. <= eta <= 1.:
    raise ValueError('eta must be a number in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {!r}'.format(eta))
  return float(eta)


def ddim_coefficients(alphas_cumprod, timesteps, eta):
  """Per-step coefficients of the DDIM update (Song et al. 2020, eq. 12), for step i from t_i to t_{i-1}:

    x_{t_{i-1}} = sqrt(alphabar_prev) x0_pred + sqrt(1 - alphabar_prev - sigma_i^2) eps + sigma_i z,
    sigma_i = eta sqrt((1 - alphabar_prev) / (1 - alphabar_t)) sqrt(1 - alphabar_t / alphabar_prev)   (eq. 16),

  with alphabar_t = alphabar_{t_i}, alphabar_prev = alphabar_{t_{i-1}} and alphabar_prev = 1 at i = 0. eta = 1 gives
  the DDPM posterior variance of the respaced chain, eta = 0 the deterministic DDIM.
  Returns a dict of float64 [S] arrays (index i as in `timesteps`): alphas_cumprod, alphas_cumprod_prev,
  sqrt_alphas_cumprod_prev, dir_coef (sqrt(1 - alphabar_prev - sigma^2)), sigma.
  """
  eta = check_eta(eta)
  abar = np.asarray(alphas_cumprod, dtype=np.float64)[np.asarray(timesteps)]
  abar_prev = np.append(1., abar[:-1])
  sigma = eta * np.sqrt((1. - abar_prev) / (1. - abar) * (1. - abar / abar_prev))
  # sigma^2 <= 1 - alphabar_prev for eta <= 1; the max only removes rounding below 0
  dir_coef = np.sqrt(np.maximum(1. - abar_prev - sigma ** 2, 0.))
  out = dict(alphas_cumprod=abar, alphas_cumprod_prev=abar_prev, sqrt_alphas_cumprod_prev=np.sqrt(abar_prev),
             dir_coef=dir_coef, sigma=sigma)
  assert all(v.shape == abar.shape for v in out.values())
  return out


def pndm_transfer(alphabar_t, alphabar_prev):
  """Coefficients (c_x, c_eps) of PNDM's transfer x_prev = c_x x_t + c_eps eps (Liu et al. 2022, eq. 9):

    c_x = sqrt(alphabar_prev / alphabar_t),
    c_eps = -(alphabar_prev - alphabar_t) / (alphabar_t sqrt(1 - alphabar_prev)
                                              + sqrt(alphabar_t (1 - alphabar_t) alphabar_prev)),

  which is the deterministic DDIM step (eq. 12, eta = 0) written without cancellation.
  """
  a_t = np.asarray(alphabar_t, dtype=np.float64)
  a_p = np.asarray(alphabar_prev, dtype=np.float64)
  c_x = np.sqrt(a_p / a_t)
  c_eps = -(a_p - a_t) / (a_t * np.sqrt(1. - a_p) + np.sqrt(a_t * (1. - a_t) * a_p))
  return c_x, c_eps


def pndm_plan(alphas_cumprod, num_inference_steps, skip_prk_steps=False):
  """The network calls of PNDM as data, in calling order (diffusers' PNDMScheduler with timestep_spacing='leading',
  steps_offset=0, set_alpha_to_one=False). With r = T // S, the grid is t = 0, r, ..., (S-1) r.

  PRK warm-up (skip_prk_steps=False, needs S >= 4): three pseudo Runge-Kutta steps d -> c = d - r from the top of the
  grid, each with four evaluations (h = r // 2): e1 = eps(x_d, d); e2 = eps(phi(x_d, e1, d -> d - h), c + h);
  e3 = eps(phi(x_d, e2, d -> c + h), c + h); e4 = eps(phi(x_d, e3, d -> c), c);
  x_c = phi(x_d, (e1 + 2 e2 + 2 e3 + e4) / 6, d -> c). Then PLMS steps t -> t - r for t = (S-4) r .. 0 with
  eps' = (55 e_t - 59 e_{t+r} + 37 e_{t+2r} - 9 e_{t+3r}) / 24 (e of the first evaluation of each step so far).
  PLMS only (skip_prk_steps=True): the first step is improved Euler (x_T moved with the mean of the eps at both
  ends), then Adams-Bashforth of order 2, 3 and 4 over the recorded eps.
  phi is `pndm_transfer`; the last step goes to alphabar_{t=0} (set_alpha_to_one=False), so it leaves x unchanged.

  Each call k evaluates e_k = eps(x_k, t_model[k]); then, in order:
    anchor = x_k if set_anchor[k];  if push[k]: ets = [ets[1:], e_k] (a register of 4 recorded eps, newest last);
    acc = acc_keep[k] acc + acc_in[k] e_k;
    eps' = w_eps[k] e_k + w_acc[k] acc + sum_j w_ets[k, j] ets[j];
    x_{k+1} = c_x[k] (anchor if from_anchor[k] else x_k) + c_eps[k] eps'.
  Returns a dict of numpy arrays with leading dimension N, the number of calls (S + 9 with PRK, S + 1 without, 1 for
  S = 1); t_model, t_from and t_to (the transfer's timesteps; -1 is the final alphabar) are int64.
  """
  alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
  T, = alphas_cumprod.shape
  S = check_num_inference_steps(num_inference_steps, T)
  if not skip_prk_steps and S < 4:
    raise ValueError('pndm with the Runge-Kutta warm-up needs num_inference_steps >= 4 (got {}); use '
                     'skip_prk_steps=True for fewer steps'.format(S))
  r = T // S
  h = r // 2
  grid = np.arange(S, dtype=np.int64) * r

  calls = []

  def _call(t_model, t_from, t_to, *, set_anchor=0., from_anchor=0., push=0., acc_keep=0., acc_in=0., w_eps=0.,
            w_acc=0., w_ets=(0., 0., 0., 0.)):
    calls.append(dict(t_model=t_model, t_from=t_from, t_to=t_to, set_anchor=set_anchor, from_anchor=from_anchor,
                      push=push, acc_keep=acc_keep, acc_in=acc_in, w_eps=w_eps, w_acc=w_acc,
                      w_ets=np.asarray(w_ets, dtype=np.float64)))

  if not skip_prk_steps:
    for s in range(3):
      d = grid[S - 1 - s]
      c = d - r
      # Runge-Kutta weights 1/6, 1/3, 1/3, 1/6 summed in acc; the transfers all start from x_d (the anchor)
      _call(d, d, d - h, set_anchor=1., from_anchor=1., push=1., acc_in=1. / 6, w_eps=1.)
      _call(c + h, d, c + h, from_anchor=1., acc_keep=1., acc_in=1. / 3, w_eps=1.)
      _call(c + h, d, c, from_anchor=1., acc_keep=1., acc_in=1. / 3, w_eps=1.)
      _call(c, d, c, from_anchor=1., acc_keep=1., w_eps=1. / 6, w_acc=1.)
    for t in grid[:-3][::-1]:
      _call(t, t, t - r, push=1., w_ets=_PLMS_WEIGHTS[4])
  else:
    ts = np.concatenate([grid[:-1], grid[-2:-1], grid[-1:]])[::-1]
    num_recorded = 0
    for k, t in enumerate(ts):
      if k == 1:  # improved Euler: back to x_T with the mean of the eps at t_{S-1} and at the predicted x_{t_{S-2}}
        _call(t, t + r, t, from_anchor=1., w_eps=0.5, w_ets=(0., 0., 0., 0.5))
        continue
      num_recorded += 1
      _call(t, t, t - r, set_anchor=float(k == 0), push=1., w_ets=_PLMS_WEIGHTS[min(num_recorded, 4)])

  plan = {key: np.stack([c[key] for c in calls]) for key in calls[0]}
  for key in ('t_model', 't_from', 't_to'):
    plan[key] = plan[key].astype(np.int64)
  for key in ('set_anchor', 'from_anchor', 'push', 'acc_keep', 'acc_in', 'w_eps', 'w_acc'):
    plan[key] = plan[key].astype(np.float64)
  plan['t_to'] = np.maximum(plan['t_to'], -1)
  final_alphabar = alphas_cumprod[0]  # diffusers' set_alpha_to_one=False
  abar_to = np.where(plan['t_to'] >= 0, alphas_cumprod[np.maximum(plan['t_to'], 0)], final_alphabar)
  plan['c_x'], plan['c_eps'] = pndm_transfer(alphas_cumprod[plan['t_from']], abar_to)
  N = S + 9 if not skip_prk_steps else S + min(S - 1, 1)
  assert all(v.shape[0] == N for v in plan.values()), {k: v.shape for k, v in plan.items()}
  assert plan['w_ets'].shape == (N, 4)
  return plan


def resolve_sampler_options(num_timesteps, *, sampler='ddpm', num_inference_steps=None, eta=0.,
                            use_clipped_model_output=False, skip_prk_steps=False, skip_type='uniform'):
  """Validate sampler options (before any graph is built) and return num_inference_steps with its default filled
  in: T for 'ddpm', min(50, T) for 'ddim' and 'pndm'. Raises ValueError naming the bad value; an option that only
  another sampler uses (e.g. eta with 'ddpm') is an error rather than silently ignored.
  """
  T = int(num_timesteps)
  if sampler not in SAMPLERS:
    raise ValueError('unknown sampler {!r}; expected one of {}'.format(sampler, SAMPLERS))
  if skip_type not in SKIP_TYPES:
    raise ValueError('unknown skip_type {!r}; expected one of {}'.format(skip_type, SKIP_TYPES))
  if num_inference_steps is None:
    num_inference_steps = T if sampler == 'ddpm' else min(DEFAULT_FAST_STEPS, T)
  S = check_num_inference_steps(num_inference_steps, T)
  if sampler == 'ddim':
    check_eta(eta)
  elif eta != 0:
    raise ValueError('eta={!r} only applies to sampler ddim, not {}'.format(eta, sampler))
  if use_clipped_model_output and sampler != 'ddim':
    raise ValueError('use_clipped_model_output only applies to sampler ddim, not {}'.format(sampler))
  if skip_prk_steps and sampler != 'pndm':
    raise ValueError('skip_prk_steps only applies to sampler pndm, not {}'.format(sampler))
  if sampler == 'pndm':
    if skip_type != 'uniform':
      raise ValueError("pndm needs skip_type 'uniform' (its multistep weights assume equal steps), got {!r}".format(
        skip_type))
    if not skip_prk_steps and S < 4:
      raise ValueError('pndm with the Runge-Kutta warm-up needs num_inference_steps >= 4 (got {}); use '
                       'skip_prk_steps=True for fewer steps'.format(S))
  if sampler == 'ddpm' and len(set(inference_timesteps(T, S, skip_type).tolist())) < S:
    raise ValueError("skip_type 'quad' with num_inference_steps={} repeats timesteps, which a respaced ddpm chain "
                     "cannot use; use fewer steps or skip_type 'uniform'".format(S))
  return S


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
  epsilon) and p_sample (for the respaced ddpm chain).

  Noise: every loop draws x_T = noise_fn(shape=shape, dtype=tf.float32) first (unless `x_T` is given), then calls
  noise_fn once per step when the sampler is stochastic (ddpm, ddim with eta > 0), in step order. `step_noise`
  [S, *shape] replaces those per-step calls (step k uses step_noise[k], k = 0 the step from x_T), which replays a
  fixed noise sequence exactly.
  """

  @staticmethod
  def _check_shape(shape, x_T, step_noise, num_steps):
    """Validate `shape` and the optional x_T [shape] / step_noise [num_steps, *shape]; returns them as tensors."""
    if not (isinstance(shape, (tuple, list)) and len(shape) >= 1 and
            all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape)):
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
    timesteps = inference_timesteps(T, num_inference_steps, skip_type)
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
    return type(self)(betas=respaced_betas(self.alphas_cumprod, timesteps), **kwargs)

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
    timesteps = inference_timesteps(T, S, skip_type)
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
                  noise_fn=tf.random_normal, skip_type='uniform', x_T=None, step_noise=None):
    """Generate samples [shape] with `sampler` ('ddpm', 'ddim' or 'pndm'; see docs/samplers.md).

    num_inference_steps: 1..T; None means T for ddpm and min(50, T) for ddim / pndm. eta and
    use_clipped_model_output apply to ddim only, skip_prk_steps to pndm only, skip_type to ddpm / ddim;
    clip_denoised applies to ddpm / ddim (PNDM never clips, as in diffusers). Raises ValueError on a bad option
    (`resolve_sampler_options`).
    """
    S = resolve_sampler_options(self.num_timesteps, sampler=sampler, num_inference_steps=num_inference_steps,
                                eta=eta, use_clipped_model_output=use_clipped_model_output,
                                skip_prk_steps=skip_prk_steps, skip_type=skip_type)
    if sampler == 'ddpm':
      return self.ddpm_sample_loop(denoise_fn, shape=shape, num_inference_steps=S, skip_type=skip_type,
                                   clip_denoised=clip_denoised, noise_fn=noise_fn, x_T=x_T, step_noise=step_noise)
    if sampler == 'ddim':
      return self.ddim_sample_loop(denoise_fn, shape=shape, num_inference_steps=S, eta=eta, skip_type=skip_type,
                                   clip_denoised=clip_denoised, use_clipped_model_output=use_clipped_model_output,
                                   noise_fn=noise_fn, x_T=x_T, step_noise=step_noise)
    return self.pndm_sample_loop(denoise_fn, shape=shape, num_inference_steps=S, skip_prk_steps=skip_prk_steps,
                                 noise_fn=noise_fn, x_T=x_T)
