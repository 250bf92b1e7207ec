"""Few-step solvers over the plans of solver_schedules.py, for eps-prediction networks:

- 'dpmsolver++' / 'sde-dpmsolver++': multistep DPM-Solver++ (Lu et al. 2022, arXiv 2211.01095), orders 1-3 / 1-2.
- 'unipc': UniPC predictor-corrector (Zhao et al. 2023, arXiv 2302.04867), bh2, data prediction, orders 1-3.
- 'euler' / 'euler_ancestral' / 'heun': Euler, ancestral Euler and Heun steps on the probability-flow ODE in the
  noise levels sigma of Karras et al. 2022.

Each equals the diffusers 0.42.1 scheduler named in docs/samplers.md for the same network outputs and noise
(tests/test_solvers.py). The coefficients are float64 numpy rows (solver_schedules.solver_plan); the TF loop below
only gathers them and combines network outputs in one tf.while_loop (samplers._sampling_loop).
"""

import numpy as np
import tensorflow.compat.v1 as tf

from .sampler_schedules import DEFAULT_FAST_STEPS, check_solver_order
from .samplers import _at, _sampling_loop
from .solver_schedules import REGISTER, solver_plan


class SolverMixin:
  """The solvers for GaussianDiffusionBase. Needs from the host class: alphas_cumprod, _model_eps (network output ->
  eps; a learned-variance network's eps half) and SamplerMixin's _check_shape / _initial_noise / _noise_at.

  Noise: x_T = noise_fn(shape=shape, dtype=tf.float32) first (unless `x_T` is given); the stochastic solvers
  (sde-dpmsolver++, euler_ancestral) then call noise_fn once per step in step order, or take step k's noise from
  `step_noise` [S, *shape]. x_0 is never clipped (as in diffusers).
  """

  def _solver_loop(self, denoise_fn, *, plan, shape, noise_fn, x_T, step_noise, record=False):
    """Run the rows of `plan`; with `record`, also return the state u after every row [N, *shape] (calling order)."""
    N, = plan['t_model'].shape
    stochastic = plan['stochastic']
    if step_noise is not None and not stochastic:
      raise ValueError('step_noise applies to the stochastic samplers (sde-dpmsolver++, euler_ancestral) only')
    x_T, step_noise = self._check_shape(shape, x_T, step_noise, N)
    B = shape[0]
    # diffusers calls the network at fractional timesteps only where its spacing makes them (euler / heun)
    integral = bool(np.all(plan['t_model'] == np.round(plan['t_model'])))
    t_dtype = tf.int32 if integral else tf.float32

    def _step(k, u, last, register):
      # u: the solver's state (x_t, or z = x_t / alpha for euler / heun); last: the previous corrected state;
      # register [REGISTER, *shape]: the x_0 predictions of the last calls, newest first
      t = tf.fill([B], _at(plan['t_model'], k, t_dtype))
      eps = self._model_eps(denoise_fn, _at(plan['in_scale'], k) * u, t)
      assert eps.shape.as_list() == list(shape)
      x0 = _at(plan['m_u'], k) * u + _at(plan['m_eps'], k) * eps
      register = tf.concat([x0[None], register[:-1]], axis=0)
      corrected = _at(plan['c_u'], k) * u + _at(plan['c_last'], k) * last
      u_next = _at(plan['p_last'], k) * last
      for j in range(REGISTER):
        corrected += _at(plan['c_w'][:, j], k) * register[j]
        u_next += _at(plan['p_w'][:, j], k) * register[j]
      u_next += _at(plan['p_u'], k) * corrected
      if stochastic:
        u_next += _at(plan['p_z'], k) * self._noise_at(k, u, shape, noise_fn, step_noise)
      assert u_next.shape.as_list() == list(shape) and register.shape.as_list() == [REGISTER, *shape]
      new_vars = [u_next, corrected, register]
      return (new_vars, u_next) if record else new_vars

    u_init = plan['init_scale'] * self._initial_noise(shape, noise_fn, x_T)
    init_vars = [u_init, tf.zeros(shape), tf.zeros([REGISTER, *shape])]
    if record:
      (u_final, _, _), us = _sampling_loop(N, _step, init_vars, record_shape=list(shape))
      return u_final, us
    u_final, _, _ = _sampling_loop(N, _step, init_vars)
    return u_final  # sigma = 0 after the last row: z = x_t = x_0

  def solver_sample_loop(self, denoise_fn, *, shape, sampler, num_inference_steps=DEFAULT_FAST_STEPS,
                         solver_order=None, skip_type=None, noise_fn=tf.random_normal, x_T=None, step_noise=None):
    """Generate samples [shape] with one of the few-step solvers ('dpmsolver++', 'sde-dpmsolver++', 'unipc',
    'euler', 'euler_ancestral', 'heun'; see docs/samplers.md) over S = num_inference_steps noise levels
    (`solver_schedules.solver_noise_levels`; skip_type None: the sampler's diffusers default, 'linspace').
    solver_order (1-3; 1-2 for sde-dpmsolver++; default 2) applies to the multistep solvers only. Network calls: S
    (2S - 1 for heun). Raises ValueError on a bad option."""
    solver_order = check_solver_order(sampler, solver_order)
    plan = solver_plan(sampler, self.alphas_cumprod, num_inference_steps, skip_type, solver_order)
    return self._solver_loop(denoise_fn, plan=plan, shape=shape, noise_fn=noise_fn, x_T=x_T, step_noise=step_noise)
