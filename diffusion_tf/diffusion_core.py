"""The Gaussian diffusion process shared by `GaussianDiffusion` (diffusion_utils.py) and `GaussianDiffusion2`
(diffusion_utils_2.py): the coefficient tables of DDPM (Ho et al. 2020) computed once in float64, the forward
process q, its posterior, and the reverse-process sampling loop.

Notation (DDPM sec. 2): beta_t, alpha_t = 1 - beta_t, alphabar_t = prod_{s<=t} alpha_s; here t = 0..T-1 indexes
the paper's t = 1..T.
"""

import numpy as np
import tensorflow.compat.v1 as tf

from . import editing, samplers, solvers


def check_betas(betas):
  """Validate a beta schedule: a 1-D float array with 0 < beta_t <= 1. Returns it as float64."""
  if not isinstance(betas, np.ndarray) or betas.ndim != 1 or betas.size == 0:
    raise ValueError('betas must be a non-empty 1-D numpy array, got {!r}'.format(betas))
  betas = betas.astype(np.float64)
  if not ((betas > 0).all() and (betas <= 1).all()):
    raise ValueError('betas must lie in (0, 1], got min {} max {}'.format(betas.min(), betas.max()))
  return betas


class GaussianDiffusionBase(samplers.SamplerMixin, solvers.SolverMixin, editing.EditingMixin):
  """Coefficient tables and the math common to both diffusion classes.

  Subclasses say how the network's output becomes an epsilon prediction (`_model_eps`), which is all the generic
  samplers (samplers.py), solvers (solvers.py) and editing loops (editing.py) need.
  """

  def __init__(self, betas):
    self.betas = betas = check_betas(betas)
    timesteps, = betas.shape
    self.num_timesteps = int(timesteps)

    alphas = 1. - betas
    self.alphas_cumprod = np.cumprod(alphas, axis=0)                          # alphabar_t
    self.alphas_cumprod_prev = np.append(1., self.alphas_cumprod[:-1])        # alphabar_{t-1}, alphabar_0 := 1
    assert self.alphas_cumprod_prev.shape == (timesteps,)

    # q(x_t | x_0) = N(sqrt(alphabar_t) x_0, (1 - alphabar_t) I)   (DDPM eq. 4)
    self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
    self.sqrt_one_minus_alphas_cumprod = np.sqrt(1. - self.alphas_cumprod)
    self.log_one_minus_alphas_cumprod = np.log(1. - self.alphas_cumprod)
    # x_0 = sqrt(1 / alphabar_t) x_t - sqrt(1 / alphabar_t - 1) eps   (inverse of eq. 4)
    self.sqrt_recip_alphas_cumprod = np.sqrt(1. / self.alphas_cumprod)
    self.sqrt_recipm1_alphas_cumprod = np.sqrt(1. / self.alphas_cumprod - 1)

    # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, betatilde_t I)   (DDPM eqs. 6-7)
    self.posterior_variance = betas * (1. - self.alphas_cumprod_prev) / (1. - self.alphas_cumprod)
    # betatilde_0 = 0, so the log is clipped by using betatilde_1 at t = 0 (it only matters for t > 0 anyway)
    self.posterior_log_variance_clipped = np.log(
      np.append(self.posterior_variance[1], self.posterior_variance[1:]) if timesteps > 1
      else np.maximum(self.posterior_variance, 1e-20))
    self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1. - self.alphas_cumprod)
    self.posterior_mean_coef2 = (1. - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1. - self.alphas_cumprod)

  @staticmethod
  def _extract(a, t, x_shape):
    """Gather the float64 table `a` at the int timesteps t [B] as float32, shaped [B, 1, ..., 1] to broadcast."""
    bs, = t.shape.as_list()
    x_shape = list(x_shape)
    assert x_shape[0] == bs, (x_shape, bs)
    out = tf.gather(tf.convert_to_tensor(np.asarray(a, dtype=np.float32)), t)
    assert out.shape.as_list() == [bs]
    return tf.reshape(out, [bs] + ((len(x_shape) - 1) * [1]))

  # ------------------------------------------------------------------------------------------------------------
  # The forward process q

  def q_mean_variance(self, x_start, t):
    """Mean, variance and log variance of q(x_t | x_0) = N(sqrt(alphabar_t) x_0, (1 - alphabar_t) I)."""
    mean = self._extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
    variance = self._extract(1. - self.alphas_cumprod, t, x_start.shape)
    log_variance = self._extract(self.log_one_minus_alphas_cumprod, t, x_start.shape)
    return mean, variance, log_variance

  def q_sample(self, x_start, t, noise=None):
    """Sample x_t ~ q(x_t | x_0): x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps   (DDPM eq. 4)."""
    if noise is None:
      noise = tf.random_normal(shape=x_start.shape, dtype=x_start.dtype)
    assert noise.shape.as_list() == x_start.shape.as_list()
    return (self._extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start +
            self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

  def q_posterior_mean_variance(self, x_start, x_t, t):
    """Mean, variance and clipped log variance of the posterior q(x_{t-1} | x_t, x_0)   (DDPM eqs. 6-7):
    mu~_t = beta_t sqrt(alphabar_{t-1}) / (1 - alphabar_t) x_0
            + (1 - alphabar_{t-1}) sqrt(alpha_t) / (1 - alphabar_t) x_t,
    beta~_t = (1 - alphabar_{t-1}) / (1 - alphabar_t) beta_t.
    """
    assert x_start.shape.as_list() == x_t.shape.as_list()
    posterior_mean = (self._extract(self.posterior_mean_coef1, t, x_t.shape) * x_start +
                      self._extract(self.posterior_mean_coef2, t, x_t.shape) * x_t)
    posterior_variance = self._extract(self.posterior_variance, t, x_t.shape)
    posterior_log_variance_clipped = self._extract(self.posterior_log_variance_clipped, t, x_t.shape)
    assert posterior_mean.shape[0] == posterior_variance.shape[0] == posterior_log_variance_clipped.shape[0]
    return posterior_mean, posterior_variance, posterior_log_variance_clipped

  def _predict_xstart_from_eps(self, x_t, t, eps):
    """x_0 = (x_t - sqrt(1 - alphabar_t) eps) / sqrt(alphabar_t)."""
    assert x_t.shape.as_list() == eps.shape.as_list()
    return (self._extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t -
            self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)

  def _predict_eps_from_xstart(self, x_t, t, pred_xstart):
    """eps = (x_t / sqrt(alphabar_t) - x_0) / sqrt(1 / alphabar_t - 1)."""
    assert x_t.shape.as_list() == pred_xstart.shape.as_list()
    return ((self._extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart) /
            self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

  def _predict_xstart_from_xprev(self, x_t, t, xprev):
    """Invert the posterior mean: x_0 = (mu~ - coef2 x_t) / coef1."""
    assert x_t.shape.as_list() == xprev.shape.as_list()
    return (self._extract(1. / self.posterior_mean_coef1, t, x_t.shape) * xprev -
            self._extract(self.posterior_mean_coef2 / self.posterior_mean_coef1, t, x_t.shape) * x_t)

  # ------------------------------------------------------------------------------------------------------------
  # The reverse process p

  def _model_eps(self, denoise_fn, x, t):
    """The network's prediction of the noise eps in x_t (subclasses map their parameterisation to it)."""
    raise NotImplementedError

  @staticmethod
  def _sample_from_mean(model_mean, model_log_variance, t, noise):
    """x_{t-1} = mean + sigma_t z, with no noise added at the last step t = 0   (DDPM Algorithm 2)."""
    assert model_mean.shape.as_list() == noise.shape.as_list()
    nonzero_mask = tf.reshape(1 - tf.cast(tf.equal(t, 0), tf.float32),
                              [model_mean.shape[0]] + [1] * (len(model_mean.shape) - 1))
    return model_mean + nonzero_mask * tf.exp(0.5 * model_log_variance) * noise

  def _reverse_loop(self, step_fn, init_vars, first_t=None):
    """Run vars <- step_fn(t, *vars) for t = first_t (default T - 1) down to 0 in a tf.while_loop, without
    gradients. step_fn returns the list of new values; returns the final values as a list.
    """
    i_0 = tf.constant(self.num_timesteps - 1, dtype=tf.int32) if first_t is None else first_t
    loop_vars = [i_0, *init_vars]

    def _body(i_, *vars_):
      out = step_fn(i_, *vars_)
      assert len(out) == len(vars_)
      return [i_ - 1, *out]

    out = tf.while_loop(
      cond=lambda i_, *_: tf.greater_equal(i_, 0),
      body=_body,
      loop_vars=loop_vars,
      shape_invariants=[v.shape for v in loop_vars],
      back_prop=False)
    return out[1:]
