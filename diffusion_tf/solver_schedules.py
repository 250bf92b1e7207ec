"""The few-step solvers as data: small pure float64 numpy functions giving, for every network call, the timestep, the
noise levels and the weights that combine network outputs. solvers.py's TF loop only gathers these rows.

Noise levels: sigma_t = sqrt((1 - alphabar_t) / alphabar_t) (Karras et al. 2022's sigma; `noise_levels`). The VP
sample is x_t = alpha x_0 + s eps with alpha = 1 / sqrt(sigma^2 + 1), s = sigma alpha, so the log-SNR is
lambda = log(alpha / s) = -log sigma, and the x_0 prediction of an eps-network is x0 = sqrt(sigma^2 + 1) x_t - sigma eps
(VE sample z = x_t / alpha: x0 = z - sigma eps). The last noise level is 0 (diffusers' final_sigmas_type='zero'),
where every solver returns its x_0 prediction.

A plan has one row per network call k (N rows; the sampler's state u is x_t for the multistep solvers, z for
euler / euler_ancestral / heun, and u = init_scale x_T at the start):
  eps_k = eps_theta(in_scale[k] u, t_model[k]);   m_k = m_u[k] u + m_eps[k] eps_k   (the x_0 prediction)
  M = [m_k, m_{k-1}, m_{k-2}, m_{k-3}]              (a register of the last four, newest first)
  c = c_u[k] u + c_last[k] last + sum_j c_w[k, j] M_j        (UniPC's corrector; c = u for the others)
  u <- p_u[k] c + p_last[k] last + sum_j p_w[k, j] M_j + p_z[k] z_k,    last <- c
with z_k ~ N(0, I) for the stochastic solvers (sde-dpmsolver++, euler_ancestral).
"""

import numpy as np

from .sampler_schedules import (
  DEFAULT_SKIP_TYPES, SAMPLER_SKIP_TYPES, SOLVER_ORDERS, check_num_inference_steps, inference_timesteps,
  karras_sigmas, noise_levels, sigma_to_t, trailing_timesteps)

REGISTER = 4  # x_0 predictions kept: UniPC's order-3 corrector reads m_k .. m_{k-3}
MULTISTEP = ('dpmsolver++', 'sde-dpmsolver++', 'unipc')  # diffusers' VP multistep schedulers
STOCHASTIC = ('sde-dpmsolver++', 'euler_ancestral')


def solver_noise_levels(alphas_cumprod, num_inference_steps, skip_type, sampler):
  """The timesteps the network is called at and the noise levels of sampler's steps, in calling order:
  (t_model float64 [S], sigmas float64 [S + 1], sigmas[S] = 0), as diffusers' schedulers set them:

  uniform, quad: `inference_timesteps` (DDIM's grids; for euler / heun uniform is their 'leading' spacing; the
    multistep schedulers take it as custom timesteps), sigma = sigma_t.
  linspace: multistep: round(i (T-1) / S) for i = S..1; euler / heun: i (T-1) / (S-1) for i = S-1..0 in float32,
    sigma interpolated linearly in t (the network sees a fractional t when S - 1 does not divide T - 1).
  trailing: `trailing_timesteps`.
  karras: the Karras noise levels (eq. 5) from sigma_{T-1} to sigma_0; t = `sigma_to_t`, rounded for the multistep
    schedulers and fractional (float32) for euler / heun, as diffusers does.
  """
  abar = np.asarray(alphas_cumprod, dtype=np.float64)
  T, = abar.shape
  S = check_num_inference_steps(num_inference_steps, T)
  table = noise_levels(abar)
  multistep = sampler in MULTISTEP
  if skip_type in ('uniform', 'quad'):
    t_model = inference_timesteps(T, S, skip_type)[::-1].astype(np.float64)
  elif skip_type == 'linspace' and multistep:
    t_model = np.linspace(0, T - 1, S + 1).round()[::-1][:-1]
  elif skip_type == 'linspace':
    t_model = np.linspace(0, T - 1, S, dtype=np.float32)[::-1].astype(np.float64)
  elif skip_type == 'trailing':
    t_model = trailing_timesteps(T, S).astype(np.float64)
  elif skip_type == 'karras':
    sigmas = karras_sigmas(table[0], table[-1], S)
    t_model = sigma_to_t(sigmas, abar)
    t_model = np.round(t_model) if multistep else t_model.astype(np.float32).astype(np.float64)
    return t_model, np.append(sigmas, 0.)
  else:
    raise ValueError('unknown skip_type {!r}; expected one of {}'.format(skip_type, SAMPLER_SKIP_TYPES[sampler]))
  sigmas = np.interp(t_model, np.arange(T), table)
  if np.any(np.diff(sigmas) >= 0):
    raise ValueError('{} with skip_type {!r} and num_inference_steps={} repeats timesteps; use fewer steps'.format(
      sampler, skip_type, S))
  assert t_model.shape == (S,)
  return t_model, np.append(sigmas, 0.)


def _alpha_s_lambda(sigma):
  """VP coefficients of noise level sigma > 0: alpha = 1 / sqrt(sigma^2 + 1), s = sigma alpha, lambda = -log sigma."""
  alpha = 1. / np.sqrt(sigma ** 2 + 1.)
  return alpha, sigma * alpha, -np.log(sigma)


def _empty_plan(N):
  plan = {key: np.zeros(N) for key in ('t_model', 'in_scale', 'm_u', 'm_eps', 'c_u', 'c_last', 'p_u', 'p_last', 'p_z')}
  plan.update(c_w=np.zeros((N, REGISTER)), p_w=np.zeros((N, REGISTER)))
  plan['c_u'][:] = 1.
  return plan


def _vp_rows(plan, t_model, sigmas):
  """Network input x_t itself, x0 = sqrt(sigma^2 + 1) x_t - sigma eps."""
  S = t_model.shape[0]
  plan['t_model'][:], plan['in_scale'][:] = t_model, 1.
  plan['m_u'][:], plan['m_eps'][:] = np.sqrt(sigmas[:S] ** 2 + 1.), -sigmas[:S]


def dpm_solver_order(k, num_steps, solver_order):
  """The order of DPM-Solver++ step k of S (diffusers: warm-up from order 1, order 1 at the last step
  (final_sigmas_type='zero'), at most 2 at the one before when S < 15 (lower_order_final))."""
  if solver_order == 1 or k < 1 or k == num_steps - 1:
    return 1
  if solver_order == 2 or k < 2 or (k == num_steps - 2 and num_steps < 15):
    return 2
  return 3


def dpm_solver_plan(alphas_cumprod, num_inference_steps, skip_type='linspace', solver_order=2, sde=False):
  """Multistep DPM-Solver++ (Lu et al. 2022, arXiv 2211.01095) with data prediction m = x0, from s = sigma_k to
  t = sigma_{k+1}, h = lambda_t - lambda_s, r_i = h_i / h over the previous log-SNR steps h_0, h_1:

    order 1 (eq. 5 of DPM-Solver++, = DDIM):  x_t = (s_t / s_s) x_s + alpha_t (1 - e^{-h}) m_k
    order 2 (Algorithm 2, midpoint):        x_t = ... + alpha_t (1 - e^{-h}) (D0 + D1 / 2), D0 = m_k,
                                              D1 = (m_k - m_{k-1}) / r_0
    order 3 (diffusers' multistep third order): + alpha_t ((e^{-h} - 1) / h + 1) D1' - alpha_t ((e^{-h} - 1 + h) / h^2
      - 1/2) D2, D1' = D1_0 + r_0 / (r_0 + r_1) (D1_0 - D1_1), D2 = (D1_0 - D1_1) / (r_0 + r_1)
  sde (SDE-DPM-Solver++, sec. 4 of the paper, orders 1-2): x_t = (s_t / s_s) e^{-h} x_s + alpha_t (1 - e^{-2h})
    (D0 + D1 / 2) + s_t sqrt(1 - e^{-2h}) z. Returns the plan (module docstring), N = S rows.
  """
  sampler = 'sde-dpmsolver++' if sde else 'dpmsolver++'
  t_model, sigmas = solver_noise_levels(alphas_cumprod, num_inference_steps, skip_type, sampler)
  S = t_model.shape[0]
  plan = _empty_plan(S)
  _vp_rows(plan, t_model, sigmas)
  lam = -np.log(sigmas[:S])
  for k in range(S):
    if sigmas[k + 1] == 0:  # alpha_t = 1, s_t = 0, h = inf: the step returns x0
      plan['p_w'][k, 0] = 1.
      continue
    alpha_t, s_t, lam_t = _alpha_s_lambda(sigmas[k + 1])
    _, s_s, _ = _alpha_s_lambda(sigmas[k])
    h = lam_t - lam[k]
    order = dpm_solver_order(k, S, solver_order)
    D0 = np.array([1., 0., 0., 0.])
    if order >= 2:
      r0 = (lam[k] - lam[k - 1]) / h
      D1_0 = np.array([1., -1., 0., 0.]) / r0
    if sde:
      plan['p_u'][k] = s_t / s_s * np.exp(-h)
      base = alpha_t * -np.expm1(-2. * h)
      plan['p_w'][k] = base * (D0 + 0.5 * D1_0) if order == 2 else base * D0
      plan['p_z'][k] = s_t * np.sqrt(-np.expm1(-2. * h))
      continue
    plan['p_u'][k] = s_t / s_s
    base = alpha_t * -np.expm1(-h)
    if order == 1:
      plan['p_w'][k] = base * D0
    elif order == 2:
      plan['p_w'][k] = base * (D0 + 0.5 * D1_0)
    else:
      r1 = (lam[k - 1] - lam[k - 2]) / h
      D1_1 = np.array([0., 1., -1., 0.]) / r1
      D1 = D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1)
      D2 = (D1_0 - D1_1) / (r0 + r1)
      plan['p_w'][k] = (base * D0 + alpha_t * (np.expm1(-h) / h + 1.) * D1 -
                        alpha_t * ((np.expm1(-h) + h) / h ** 2 - 0.5) * D2)
  return plan


def unipc_bh2_weights(lam_s, lam_t, lam_prev, corrector):
  """UniPC with B(h) = e^{-h} - 1 (bh2) and data prediction (Zhao et al. 2023, arXiv 2302.04867, Algorithms 1-2):
  the rhos solving R rho = b, R_ij = r_j^(i-1), b_i = i! phi_{i+1}(-h) (-h) / B(h) for the log-SNR ratios
  r_j = (lambda_{s_j} - lambda_s) / h of the previous points (lam_prev, newest first), h = lam_t - lam_s; the
  corrector also has r = 1 (the new point t). Order 2 predictor: rho = 1/2; order 1 corrector: rho = 1/2.
  Returns (r [p-1 or p], rho) as diffusers computes them."""
  h = lam_t - lam_s
  rks = [(lam_i - lam_s) / h for lam_i in lam_prev] + [1.]
  order = len(lam_prev) + 1
  hh = -h
  h_phi_1 = np.expm1(hh)
  B_h = np.expm1(hh)
  h_phi_k, factorial, b = h_phi_1 / hh - 1., 1., []
  for i in range(1, order + 1):
    b.append(h_phi_k * factorial / B_h)
    factorial *= i + 1
    h_phi_k = h_phi_k / hh - 1. / factorial
  R = np.array([np.power(rks, i - 1) for i in range(1, order + 1)])
  b = np.array(b)
  if corrector:
    rho = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
  else:
    rho = np.array([0.5]) if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1]) if order > 2 else np.zeros(0)
  return np.array(rks[:-1]), rho


def unipc_plan(alphas_cumprod, num_inference_steps, skip_type='linspace', solver_order=2):
  """UniPC (Zhao et al. 2023) as diffusers' UniPCMultistepScheduler(solver_type='bh2', predict_x0=True,
  lower_order_final=True): at step k of order p = min(solver_order, S - k, k + 1), with h = lambda_{k+1} - lambda_k,
    predictor UniP:  x_{k+1} = (s_{k+1} / s_k) x^c_k + alpha_{k+1} (1 - e^{-h}) m_k
                               - alpha_{k+1} B(h) sum_{i<p} rho_i (m_{k-i} - m_k) / r_i,
    corrector UniC (k >= 1, order of step k-1, using m_k at the predicted x_k):
      x^c_k = (s_k / s_{k-1}) x^c_{k-1} + alpha_k (1 - e^{-h'}) m_{k-1}
              - alpha_k B(h') (sum_i rho_i (m_{k-1-i} - m_{k-1}) / r_i + rho_p (m_k - m_{k-1})),
  x^c_0 = x_T, and m_k the x_0 prediction at the uncorrected x_k. Returns the plan (module docstring), N = S rows.
  """
  t_model, sigmas = solver_noise_levels(alphas_cumprod, num_inference_steps, skip_type, 'unipc')
  S = t_model.shape[0]
  plan = _empty_plan(S)
  _vp_rows(plan, t_model, sigmas)
  lam = -np.log(sigmas[:S])
  orders = [min(solver_order, S - k, k + 1) for k in range(S)]
  for k in range(S):
    if k >= 1:  # corrector of x_k from x^c_{k-1} (last); the register holds m_k, m_{k-1}, ...
      q = orders[k - 1]
      alpha_t, s_t, _ = _alpha_s_lambda(sigmas[k])
      _, s_s, _ = _alpha_s_lambda(sigmas[k - 1])
      h = lam[k] - lam[k - 1]
      rks, rho = unipc_bh2_weights(lam[k - 1], lam[k], [lam[k - 1 - i] for i in range(1, q)], corrector=True)
      w = np.zeros(REGISTER)
      w[1] = alpha_t * -np.expm1(-h)
      for i, (r, rho_i) in enumerate(zip(rks, rho[:-1]), start=1):
        w[1 + i] -= alpha_t * np.expm1(-h) * rho_i / r
        w[1] += alpha_t * np.expm1(-h) * rho_i / r
      w[0] -= alpha_t * np.expm1(-h) * rho[-1]
      w[1] += alpha_t * np.expm1(-h) * rho[-1]
      plan['c_u'][k], plan['c_last'][k], plan['c_w'][k] = 0., s_t / s_s, w
    if sigmas[k + 1] == 0:  # order 1 into sigma = 0: x0
      plan['p_w'][k, 0] = 1.
      continue
    p = orders[k]
    alpha_t, s_t, _ = _alpha_s_lambda(sigmas[k + 1])
    _, s_s, _ = _alpha_s_lambda(sigmas[k])
    lam_t = -np.log(sigmas[k + 1])
    h = lam_t - lam[k]
    rks, rho = unipc_bh2_weights(lam[k], lam_t, [lam[k - i] for i in range(1, p)], corrector=False)
    w = np.zeros(REGISTER)
    w[0] = alpha_t * -np.expm1(-h)
    for i, (r, rho_i) in enumerate(zip(rks, rho), start=1):
      w[i] -= alpha_t * np.expm1(-h) * rho_i / r
      w[0] += alpha_t * np.expm1(-h) * rho_i / r
    plan['p_u'][k], plan['p_w'][k] = s_t / s_s, w
  return plan


def _init_scale(sigmas, skip_type):
  """diffusers' init_noise_sigma of the k-diffusion schedulers: sqrt(sigma_max^2 + 1) for 'leading' (our uniform),
  else sigma_max (their timestep_spacing 'linspace' / 'trailing', and the default 'linspace' for custom timesteps
  and Karras sigmas)."""
  return float(np.sqrt(sigmas[0] ** 2 + 1.) if skip_type == 'uniform' else sigmas[0])


def euler_plan(alphas_cumprod, num_inference_steps, skip_type='linspace', ancestral=False):
  """Euler's method on the probability-flow ODE dz/dsigma = (z - x0) / sigma in the VE sample z = x_t / alpha
  (Karras et al. 2022, Algorithm 1 without churn; diffusers' EulerDiscreteScheduler): z' = z + (sigma' - sigma) eps,
  the network fed x_t = z / sqrt(sigma^2 + 1).
  ancestral (EulerAncestralDiscreteScheduler): sigma_up = sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2), sigma_down
  = sqrt(sigma'^2 - sigma_up^2); z' = z + (sigma_down - sigma) eps + sigma_up z_k.
  Returns the plan (module docstring), N = S rows, with init_scale (z_T = init_scale x_T, `_init_scale`).
  """
  t_model, sigmas = solver_noise_levels(alphas_cumprod, num_inference_steps, skip_type,
                                        'euler_ancestral' if ancestral else 'euler')
  S = t_model.shape[0]
  plan = _empty_plan(S)
  s, s_next = sigmas[:S], sigmas[1:]
  plan['t_model'][:], plan['in_scale'][:] = t_model, 1. / np.sqrt(s ** 2 + 1.)
  plan['m_u'][:], plan['m_eps'][:] = 1., -s
  if ancestral:
    s_up = np.sqrt(s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2)
    s_next = np.sqrt(s_next ** 2 - s_up ** 2)
    plan['p_z'][:] = s_up
  plan['p_u'][:] = s_next / s  # (z - x0) / sigma = eps, so z' = (sigma'/sigma) z + (1 - sigma'/sigma) x0
  plan['p_w'][:, 0] = 1. - s_next / s
  plan['init_scale'] = _init_scale(sigmas, skip_type)
  return plan


def heun_plan(alphas_cumprod, num_inference_steps, skip_type='linspace'):
  """Heun's second-order method on the same ODE (Karras et al. 2022, Algorithm 1; diffusers' HeunDiscreteScheduler):
  for sigma_i -> sigma_{i+1} > 0, d = (z - x0(z, sigma_i)) / sigma_i, z~ = z + (sigma_{i+1} - sigma_i) d,
  d' = (z~ - x0(z~, sigma_{i+1})) / sigma_{i+1}, z' = z + (sigma_{i+1} - sigma_i) (d + d') / 2; the last step (to
  sigma = 0) is Euler's. N = 2S - 1 rows (network calls) alternating Euler predictor / trapezoid corrector.
  """
  t_model, sigmas = solver_noise_levels(alphas_cumprod, num_inference_steps, skip_type, 'heun')
  S = t_model.shape[0]
  plan = _empty_plan(2 * S - 1)
  for i in range(S):
    s, s_next = sigmas[i], sigmas[i + 1]
    k = 2 * i
    plan['t_model'][k], plan['in_scale'][k], plan['m_u'][k], plan['m_eps'][k] = (
      t_model[i], 1. / np.sqrt(s ** 2 + 1.), 1., -s)
    plan['p_u'][k], plan['p_w'][k, 0] = s_next / s, 1. - s_next / s  # Euler to z~ (to x0 at the last step)
    if s_next == 0:
      continue
    dt = s_next - s  # z' = z + dt / 2 ((z - m_k) / s + (z~ - m_{k+1}) / s'), z = last
    plan['t_model'][k + 1], plan['in_scale'][k + 1], plan['m_u'][k + 1], plan['m_eps'][k + 1] = (
      t_model[i + 1], 1. / np.sqrt(s_next ** 2 + 1.), 1., -s_next)
    plan['p_last'][k + 1], plan['p_u'][k + 1] = 1. + dt / (2. * s), dt / (2. * s_next)
    plan['p_w'][k + 1, 0], plan['p_w'][k + 1, 1] = -dt / (2. * s_next), -dt / (2. * s)
  plan['init_scale'] = _init_scale(sigmas, skip_type)
  return plan


def solver_plan(sampler, alphas_cumprod, num_inference_steps, skip_type=None, solver_order=2):
  """The plan of `sampler` (one of SOLVERS), skip_type None meaning its default; adds init_scale (1 for the VP
  multistep solvers) and the flag `stochastic`."""
  skip_type = DEFAULT_SKIP_TYPES[sampler] if skip_type is None else skip_type
  if skip_type not in SAMPLER_SKIP_TYPES[sampler]:
    raise ValueError('{} supports skip_type {}, got {!r}'.format(sampler, ', '.join(SAMPLER_SKIP_TYPES[sampler]),
                                                                 skip_type))
  if sampler in SOLVER_ORDERS and solver_order not in SOLVER_ORDERS[sampler]:
    raise ValueError('solver_order for {} must be one of {}, got {!r}'.format(
      sampler, ', '.join(map(str, SOLVER_ORDERS[sampler])), solver_order))
  if sampler in ('dpmsolver++', 'sde-dpmsolver++'):
    plan = dpm_solver_plan(alphas_cumprod, num_inference_steps, skip_type, solver_order, sde=sampler != 'dpmsolver++')
  elif sampler == 'unipc':
    plan = unipc_plan(alphas_cumprod, num_inference_steps, skip_type, solver_order)
  elif sampler in ('euler', 'euler_ancestral'):
    plan = euler_plan(alphas_cumprod, num_inference_steps, skip_type, ancestral=sampler == 'euler_ancestral')
  elif sampler == 'heun':
    plan = heun_plan(alphas_cumprod, num_inference_steps, skip_type)
  else:
    raise ValueError('unknown solver {!r}'.format(sampler))
  plan.setdefault('init_scale', 1.)
  plan['stochastic'] = sampler in STOCHASTIC
  N = plan['t_model'].shape[0]
  assert all(v.shape[0] == N for k, v in plan.items() if isinstance(v, np.ndarray))
  return plan
