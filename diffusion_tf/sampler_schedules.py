"""The samplers' coefficient sequences, small pure float64 numpy functions: which timesteps a fast sampler visits,
the respaced betas of a shortened DDPM chain, the DDIM coefficients (eq. 12) and the PNDM plan (pseudo Runge-Kutta
warm-up, then PLMS). samplers.py's TF loops only gather these tables and combine network outputs.

Timestep notation: t = 0..T-1 index the paper's 1..T (as in diffusion_core); a sub-sequence t_0 < t_1 < ... < t_{S-1}
is sampled from t_{S-1} down to t_0, and "alphabar before t_0" is 1 (the sample after the last step is x_0).
"""

import numpy as np

from . import checks

# the few-step solvers of solver_schedules.py; their diffusers schedulers in docs/samplers.md
SOLVERS = ('dpmsolver++', 'sde-dpmsolver++', 'unipc', 'euler', 'euler_ancestral', 'heun')
SAMPLERS = ('ddpm', 'ddim', 'pndm') + SOLVERS
SKIP_TYPES = ('uniform', 'quad', 'linspace', 'trailing', 'karras')
# what each sampler supports and its default (the default of its diffusers scheduler; uniform = DDIM's 'leading')
SAMPLER_SKIP_TYPES = dict({'pndm': ('uniform',), 'euler_ancestral': ('uniform', 'quad', 'linspace', 'trailing')},
                          **{name: SKIP_TYPES for name in ('ddpm', 'ddim', 'dpmsolver++', 'sde-dpmsolver++', 'unipc',
                                                           'euler', 'heun')})
DEFAULT_SKIP_TYPES = dict({'ddpm': 'uniform', 'ddim': 'uniform', 'pndm': 'uniform'}, **{s: 'linspace' for s in SOLVERS})
SOLVER_ORDERS = {'dpmsolver++': (1, 2, 3), 'sde-dpmsolver++': (1, 2), 'unipc': (1, 2, 3)}
DEFAULT_SOLVER_ORDER = 2
DEFAULT_FAST_STEPS = 50  # num_inference_steps of every sampler but ddpm when not given (diffusers' pipelines use 50)
KARRAS_RHO = 7.  # Karras et al. 2022, eq. 5 (and diffusers' use_karras_sigmas)

# PLMS (Adams-Bashforth) weights over the register of the last 4 recorded eps (oldest first), by how many exist
_PLMS_WEIGHTS = {
  1: np.array([0., 0., 0., 1.]),
  2: np.array([0., 0., -1., 3.]) / 2.,
  3: np.array([0., 5., -16., 23.]) / 12.,
  4: np.array([-9., 37., -59., 55.]) / 24.,
}


def check_num_inference_steps(num_inference_steps, num_timesteps):
  """Raise a ValueError unless num_inference_steps is an integer in 1..num_timesteps; returns it as int."""
  if not checks.is_int(num_inference_steps) or not 1 <= num_inference_steps <= num_timesteps:
    raise ValueError('num_inference_steps must be an integer in 1..{} (the number of training timesteps T), '
                     'got {!r}'.format(num_timesteps, num_inference_steps))
  return int(num_inference_steps)


def noise_levels(alphas_cumprod):
  """sigma_t = sqrt((1 - alphabar_t) / alphabar_t) [T], float64: the noise level of x_t / sqrt(alphabar_t) = x_0 +
  sigma_t eps, the variance-exploding view of the same chain (Karras et al. 2022, sec. 2; diffusers' `sigmas`)."""
  abar = np.asarray(alphas_cumprod, dtype=np.float64)
  return np.sqrt((1. - abar) / abar)


def karras_sigmas(sigma_min, sigma_max, num_inference_steps, rho=KARRAS_RHO):
  """Karras et al. 2022, eq. 5: sigma_i = (sigma_max^(1/rho) + i / (S-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
  for i = 0..S-1 (descending, calling order; S = 1 gives sigma_max). float64 [S]."""
  ramp = np.linspace(0., 1., int(num_inference_steps))
  inv_max, inv_min = sigma_max ** (1. / rho), sigma_min ** (1. / rho)
  return (inv_max + ramp * (inv_min - inv_max)) ** rho


def sigma_to_t(sigmas, alphas_cumprod):
  """The fractional training timestep of each noise level: linear interpolation of t in log sigma_t between the two
  neighbouring timesteps, clamped to [0, T-1] (diffusers' `_sigma_to_t`). float64, the shape of `sigmas`."""
  log_table = np.log(noise_levels(alphas_cumprod))  # increasing in t
  return np.interp(np.log(np.maximum(np.asarray(sigmas, dtype=np.float64), 1e-10)), log_table,
                   np.arange(log_table.shape[0], dtype=np.float64))


def karras_timesteps(alphas_cumprod, num_inference_steps):
  """The S Karras noise levels from sigma_{T-1} down to sigma_0 (eq. 5) and their timesteps rounded to integers as
  diffusers' multistep schedulers do: (sigmas float64 [S], timesteps int64 [S]), both in calling order."""
  sigma = noise_levels(alphas_cumprod)
  sigmas = karras_sigmas(sigma[0], sigma[-1], num_inference_steps)
  return sigmas, np.round(sigma_to_t(sigmas, alphas_cumprod)).astype(np.int64)


def trailing_timesteps(num_timesteps, num_inference_steps):
  """diffusers' 'trailing' spacing (arXiv 2305.08891, Table 2): round(T - i T / S) - 1 for i = 0..S-1, in calling
  order (descending, starting at T-1). int64 [S]."""
  T, S = int(num_timesteps), int(num_inference_steps)
  timesteps = np.round(np.arange(T, 0, -T / S)).astype(np.int64) - 1
  assert timesteps.shape == (S,), (T, S, timesteps.shape)
  return timesteps


def inference_timesteps(num_timesteps, num_inference_steps, skip_type='uniform', alphas_cumprod=None):
  """The S timesteps t_0 <= ... <= t_{S-1} (int64 [S], ascending) that ddim / ddpm visit, from t_{S-1} down.

  uniform: t_i = i * (T // S) (DDIM's `range(0, T, T // S)`, cut to S entries; diffusers' 'leading' spacing with
    steps_offset=0).
  quad: t_i = int((i * sqrt(0.8 T) / (S - 1))^2) (DDIM's quadratic sequence; repeats small t when S > ~sqrt(0.8 T),
    as the DDIM code does).
  linspace: t_i = round(i (T - 1) / (S - 1)) (diffusers' DDIMScheduler / DDPMScheduler 'linspace').
  trailing: `trailing_timesteps` (diffusers' 'trailing': the top step is T - 1).
  karras: the rounded timesteps of the Karras noise levels (`karras_timesteps`; needs alphas_cumprod); may repeat
    small t.
  """
  T = int(num_timesteps)
  S = check_num_inference_steps(num_inference_steps, T)
  if skip_type == 'uniform':
    timesteps = np.arange(S, dtype=np.int64) * (T // S)
  elif skip_type == 'quad':
    timesteps = (np.linspace(0, np.sqrt(T * 0.8), S) ** 2).astype(np.int64)
  elif skip_type == 'linspace':
    timesteps = np.linspace(0, T - 1, S).round().astype(np.int64)
  elif skip_type == 'trailing':
    timesteps = trailing_timesteps(T, S)[::-1]
  elif skip_type == 'karras':
    if alphas_cumprod is None:
      raise ValueError("skip_type 'karras' needs the diffusion's alphas_cumprod (its noise levels)")
    timesteps = karras_timesteps(alphas_cumprod, S)[1][::-1]
  else:
    raise ValueError('unknown skip_type {!r}; expected one of {}'.format(skip_type, SKIP_TYPES))
  timesteps = np.ascontiguousarray(timesteps)
  assert timesteps.shape == (S,) and timesteps[0] >= 0 and timesteps[-1] < T
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
  if not checks.is_number(eta) or not 0. <= eta <= 1.:
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


def check_solver_order(sampler, solver_order):
  """Raise a ValueError unless solver_order suits sampler (None where it has no orders); returns it, None meaning
  DEFAULT_SOLVER_ORDER for the multistep solvers."""
  if sampler not in SOLVER_ORDERS:
    if solver_order is not None:
      raise ValueError('solver_order only applies to samplers {}, not {}'.format(', '.join(SOLVER_ORDERS), sampler))
    return None
  if solver_order is None:
    return DEFAULT_SOLVER_ORDER
  if not checks.is_int(solver_order) or solver_order not in SOLVER_ORDERS[sampler]:
    raise ValueError('solver_order for {} must be one of {}, got {!r}'.format(
      sampler, ', '.join(map(str, SOLVER_ORDERS[sampler])), solver_order))
  return int(solver_order)


def sampler_settings_name(sampler, num_inference_steps, *, skip_type, solver_order=None, eta=None,
                          use_clipped_model_output=False, skip_prk_steps=False):
  """The sampler's settings as one name for directories, result files and TensorBoard tags:
  <sampler><steps>[_eta<eta>][_clipped][_noprk][_order<k>][_<skip_type>], e.g. ddim50_eta0_quad or
  dpmsolver++10_order2_linspace. num_inference_steps None (the original ddpm chain) leaves the steps out; eta is
  named when given for ddim; the spacing when it is not 'uniform', and always for the solvers (theirs defaults to
  linspace), so that every name says what made the samples."""
  name = '{}{}'.format(sampler, '' if num_inference_steps is None else int(num_inference_steps))
  if eta is not None and sampler == 'ddim':
    name += '_eta{:g}'.format(eta)
  name += '_clipped' if use_clipped_model_output else ''
  name += '_noprk' if skip_prk_steps else ''
  name += '' if solver_order is None else '_order{}'.format(int(solver_order))
  if skip_type != 'uniform' or sampler in SOLVERS:
    name += '_' + skip_type
  return name


def resolve_sampler_options(num_timesteps, *, sampler='ddpm', num_inference_steps=None, eta=0.,
                            use_clipped_model_output=False, skip_prk_steps=False, skip_type='uniform',
                            solver_order=None, model_mean_type='eps', alphas_cumprod=None):
  """Validate sampler options (before any graph is built) and return num_inference_steps with its default filled
  in: T for 'ddpm', min(50, T) for every other sampler. Raises ValueError naming the bad value and what is allowed;
  an option that only another sampler uses (e.g. eta with 'ddpm') is an error rather than silently ignored.

  skip_type None means the sampler's default (DEFAULT_SKIP_TYPES); solver_order None means 2 where it applies
  (SOLVER_ORDERS). model_mean_type is the network's parameterisation (the solvers need 'eps'); alphas_cumprod, when
  given, lets the repeated-timestep check see the 'karras' timesteps too.
  """
  T = int(num_timesteps)
  if sampler not in SAMPLERS:
    raise ValueError('unknown sampler {!r}; expected one of {}'.format(sampler, SAMPLERS))
  if skip_type is None:
    skip_type = DEFAULT_SKIP_TYPES[sampler]
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
  check_solver_order(sampler, solver_order)
  if sampler == 'pndm':
    if skip_type != 'uniform':
      raise ValueError("pndm needs skip_type 'uniform' (its multistep weights assume equal steps), got {!r}".format(
        skip_type))
    if not skip_prk_steps and S < 4:
      raise ValueError('pndm with the Runge-Kutta warm-up needs num_inference_steps >= 4 (got {}); use '
                       'skip_prk_steps=True for fewer steps'.format(S))
  if skip_type not in SAMPLER_SKIP_TYPES[sampler]:
    raise ValueError('{} supports skip_type {} (as its diffusers scheduler), got {!r}'.format(
      sampler, ', '.join(SAMPLER_SKIP_TYPES[sampler]), skip_type))
  if sampler in SOLVERS and model_mean_type != 'eps':
    raise ValueError("sampler {} needs an eps-prediction network (model_mean_type 'eps', as diffusers' "
                     "prediction_type='epsilon'), got model_mean_type {!r}; use ddim or ddpm".format(
                       sampler, model_mean_type))
  # ddpm (a respaced chain) and the solvers (their steps divide by the log-SNR step) cannot repeat a timestep, which
  # only quad (and karras for ddpm) can; the solvers' karras timesteps may repeat: their noise levels stay distinct
  needs_distinct = sampler == 'ddpm' or (sampler in SOLVERS and skip_type == 'quad')
  if needs_distinct and (skip_type != 'karras' or alphas_cumprod is not None):
    timesteps = inference_timesteps(T, S, skip_type, alphas_cumprod)
    if len(set(timesteps.tolist())) < S:
      raise ValueError("skip_type {!r} with num_inference_steps={} repeats timesteps, which sampler {} cannot use; "
                       "use fewer steps or skip_type 'uniform'".format(skip_type, S, sampler))
  return S
