"""The editing loops' coefficient sequences, small pure float64 numpy functions (editing.py's TF loops only gather
them): RePaint's schedule with its jumps back in time (Lugmayr et al. 2022, sec. 4.2), the steps of DDIM inversion
(x_0 -> x_T along the DDIM ODE, Song et al. 2020, sec. 4.3) and where an SDEdit run starts (Meng et al. 2022).

Timestep notation as in sampler_schedules.py: t = 0..T-1 index the paper's 1..T.
"""

import numpy as np

from . import checks
from .sampler_schedules import check_eta, check_num_inference_steps

DEFAULT_REPAINT_STEPS = 250  # RePaint's and diffusers' RePaintPipeline's defaults
DEFAULT_JUMP_LENGTH = 10
DEFAULT_JUMP_N_SAMPLE = 10


def check_positive_int(name, value):
  """Raise a ValueError unless value is an integer >= 1; returns it as int."""
  if not checks.is_int(value) or value < 1:
    raise ValueError('{} must be an integer >= 1, got {!r}'.format(name, value))
  return int(value)


def repaint_timesteps(num_timesteps, num_inference_steps, jump_length, jump_n_sample):
  """RePaint's visiting order (the schedule of its Algorithm 1 with resampling; diffusers' RePaintScheduler): step
  indices i go down from S-1 to 0, and after reaching each i = j (j = 0, L, 2L, ... < S - L; L = jump_length) the
  first jump_n_sample - 1 times, they go back up j+1 .. j+L before coming down again. Returns the timesteps i * r,
  r = T // S, int64 [M] in visiting order: a timestep below its predecessor is a denoising step at it, one above is a
  move back up (one index, r forward-process steps)."""
  T = int(num_timesteps)
  S = check_num_inference_steps(num_inference_steps, T)
  L = check_positive_int('jump_length', jump_length)
  n = check_positive_int('jump_n_sample', jump_n_sample)
  jumps_left = {j: n - 1 for j in range(0, S - L, L)}
  order, i = [], S
  while i >= 1:
    i -= 1
    order.append(i)
    if jumps_left.get(i, 0) > 0:
      jumps_left[i] -= 1
      order.extend(range(i + 1, i + L + 1))
      i += L
  return np.asarray(order, dtype=np.int64) * (T // S)


def repaint_plan(alphas_cumprod, betas, num_inference_steps, jump_length, jump_n_sample, eta):
  """RePaint (Lugmayr et al. 2022, Algorithm 1) as rows, one per noise draw, in calling order.

  A denoising row at timestep t (from the level of t to prev = t - r, alphabar_prev = 1 below 0) with the network's
  eps and one draw z:
    x0 = (x_t - sqrt(1 - alphabar_t) eps) / sqrt(alphabar_t)  (clipped to [-1, 1] if asked)
    unknown = sqrt(alphabar_prev) x0 + sqrt(1 - alphabar_prev - sigma^2) eps + sigma z   (DDIM eq. 12, eta)
    known = sqrt(alphabar_prev) image + sqrt(1 - alphabar_prev) z                       (q(x_prev | x_0))
    x_prev = mask known + (1 - mask) unknown,
  sigma = eta sqrt((1 - alphabar_prev) / (1 - alphabar_t) (1 - alphabar_t / alphabar_prev)) (0 at t = 0).
  A move back up from t_last (the timestep of the previous entry of `repaint_timesteps`) is r rows, each one
  forward step x <- sqrt(1 - beta) x + sqrt(beta) z with beta = betas[t_last + i], i = 0..r-1, as diffusers'
  RePaintScheduler.undo_step (whose betas are those of the r steps above t_last, not below it).

  Returns a dict of arrays with leading dimension N (rows): denoise (1. for a network call, 0. for a forward step),
  t_model (int64; 0 on forward rows), sqrt_alphas_cumprod_prev, sqrt_one_minus_alphas_cumprod_prev, dir_coef, sigma
  (denoising rows), keep and add (forward rows: sqrt(1 - beta), sqrt(beta)); and num_network_calls.
  """
  abar = np.asarray(alphas_cumprod, dtype=np.float64)
  betas = np.asarray(betas, dtype=np.float64)
  T, = abar.shape
  eta = check_eta(eta)
  order = repaint_timesteps(T, num_inference_steps, jump_length, jump_n_sample)
  r = T // int(num_inference_steps)
  rows = []
  t_last = order[0] + 1
  for t in order:
    if t < t_last:
      a_t, a_prev = abar[t], (abar[t - r] if t - r >= 0 else 1.)
      sigma = eta * np.sqrt((1. - a_prev) / (1. - a_t) * (1. - a_t / a_prev))
      rows.append(dict(denoise=1., t_model=t, sqrt_alphas_cumprod_prev=np.sqrt(a_prev),
                       sqrt_one_minus_alphas_cumprod_prev=np.sqrt(1. - a_prev),
                       dir_coef=np.sqrt(max(1. - a_prev - sigma ** 2, 0.)), sigma=sigma, keep=0., add=0.))
    else:
      for i in range(r):
        beta = betas[t_last + i]
        rows.append(dict(denoise=0., t_model=0, sqrt_alphas_cumprod_prev=0., sqrt_one_minus_alphas_cumprod_prev=0.,
                         dir_coef=0., sigma=0., keep=np.sqrt(1. - beta), add=np.sqrt(beta)))
    t_last = t
  plan = {key: np.asarray([row[key] for row in rows]) for key in rows[0]}
  plan['t_model'] = plan['t_model'].astype(np.int64)
  plan['num_network_calls'] = int(plan['denoise'].sum())
  N = len(rows)
  assert all(v.shape == (N,) for k, v in plan.items() if k != 'num_network_calls')
  return plan


def ddim_inversion_coefficients(alphas_cumprod, num_inference_steps):
  """The steps of DDIM inversion (deterministic DDIM, eq. 12 with eta = 0, run from x_0 towards noise; diffusers'
  DDIMInverseScheduler with set_alpha_to_one=False, timestep_spacing='leading', steps_offset=0). With r = T // S,
  step k = 0..S-1 calls the network at t_k = k r on x at the level alphabar_from and moves it to alphabar_to:
    x0 = (x - sqrt(1 - alphabar_from) eps) / sqrt(alphabar_from)  (clipped if asked),
    x <- sqrt(alphabar_to) x0 + sqrt(1 - alphabar_to) eps,
  alphabar_to = alphabar_{t_k}, alphabar_from = alphabar_{t_{k-1}} (alphabar_{t=0} at k = 0, so that the first step
  only clips). Returns a dict of [S] arrays in calling order: t_model (int64), alphas_cumprod_from,
  alphas_cumprod_to."""
  abar = np.asarray(alphas_cumprod, dtype=np.float64)
  T, = abar.shape
  S = check_num_inference_steps(num_inference_steps, T)
  t_model = np.arange(S, dtype=np.int64) * (T // S)
  out = dict(t_model=t_model, alphas_cumprod_to=abar[t_model],
             alphas_cumprod_from=np.append(abar[0], abar[t_model[:-1]]))
  assert all(v.shape == (S,) for v in out.values())
  return out


def check_strength(strength):
  """Raise a ValueError unless strength is a number in (0, 1]; returns it as float."""
  if not checks.is_number(strength) or not 0. < strength <= 1.:
    raise ValueError('strength must be a number in (0, 1] (the fraction of the diffusion to go back: 1 is '
                     'sampling from noise), got {!r}'.format(strength))
  return float(strength)


def sdedit_num_timesteps(num_timesteps, strength):
  """How many of the T timesteps an SDEdit run with `strength` goes back: max(1, round(strength T)); the image is
  diffused to t = that - 1 (the paper's t = round(strength T)) and denoised from there."""
  return max(1, int(np.round(check_strength(strength) * int(num_timesteps))))
