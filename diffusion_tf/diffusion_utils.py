"""The first-generation diffusion class of the original release, used for CelebA-HQ and LSUN (DDPM sec. 4):
the epsilon-prediction ('noisepred') model with the simplified loss (eq. 14) and the posterior variance beta~_t.
"""

import numpy as np
import tensorflow.compat.v1 as tf

from . import nn
from .diffusion_core import GaussianDiffusionBase
from .noise import noise_like, step_noise_like  # noqa: F401 (noise_like: API)
from .diffusion_utils_2 import get_beta_schedule, normal_kl  # noqa: F401 (the original's names in this module)

LOSS_TYPES = ('noisepred',)


class GaussianDiffusion(GaussianDiffusionBase):
  """Contains utilities for the diffusion model (eps prediction, fixedsmall variance)."""

  def __init__(self, *, betas, loss_type, tf_dtype=tf.float32):
    if loss_type not in LOSS_TYPES:
      raise NotImplementedError('unknown loss_type {!r}; expected one of {}'.format(loss_type, LOSS_TYPES))
    if tf_dtype != tf.float32:
      raise NotImplementedError('only tf.float32 is supported, got {}'.format(tf_dtype))
    self.loss_type = loss_type
    super().__init__(betas)
    self.np_betas = self.betas
    # This class clips the log of beta~_0 = 0 at 1e-20 rather than substituting beta~_1; the t = 0 step adds no
    # noise, so samples are the same either way.
    self.posterior_log_variance_clipped = np.log(np.maximum(self.posterior_variance, 1e-20))

  def predict_start_from_noise(self, x_t, t, noise):
    """x_0 = (x_t - sqrt(1 - alphabar_t) eps) / sqrt(alphabar_t)."""
    return self._predict_xstart_from_eps(x_t, t, noise)

  def q_posterior(self, x_start, x_t, t):
    """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0) (DDPM eqs. 6-7)."""
    return self.q_posterior_mean_variance(x_start, x_t, t)

  def _model_eps(self, denoise_fn, x, t):
    return denoise_fn(x, t)

  def p_losses(self, denoise_fn, x_start, t, noise=None):
    """Training loss per example [B]: ||eps - eps_theta(sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps, t)||^2,
    averaged over dimensions (DDPM eq. 14)."""
    B, H, W, C = x_start.shape.as_list()
    assert t.shape.as_list() == [B]
    if noise is None:
      noise = tf.random_normal(shape=x_start.shape, dtype=x_start.dtype)
    assert noise.shape.as_list() == x_start.shape.as_list() and noise.dtype == x_start.dtype
    x_noisy = self.q_sample(x_start=x_start, t=t, noise=noise)
    x_recon = denoise_fn(x_noisy, t)
    assert x_recon.shape.as_list() == x_start.shape.as_list()
    losses = nn.meanflat(tf.squared_difference(noise, x_recon))
    assert losses.shape.as_list() == [B]
    return losses

  def p_mean_variance(self, denoise_fn, *, x, t, clip_denoised: bool):
    """Mean, variance and log variance of p(x_{t-1} | x_t): the posterior at the predicted (optionally clipped) x_0."""
    x_recon = self.predict_start_from_noise(x, t=t, noise=denoise_fn(x, t))
    if clip_denoised:
      x_recon = tf.clip_by_value(x_recon, -1., 1.)
    model_mean, posterior_variance, posterior_log_variance = self.q_posterior(x_start=x_recon, x_t=x, t=t)
    assert model_mean.shape.as_list() == x_recon.shape.as_list() == x.shape.as_list()
    assert posterior_variance.shape.as_list() == posterior_log_variance.shape.as_list() == \
        [x.shape[0], 1, 1, 1]
    return model_mean, posterior_variance, posterior_log_variance

  def p_sample(self, denoise_fn, *, x, t, noise_fn, clip_denoised=True, repeat_noise=False):
    """Sample x_{t-1} ~ p(x_{t-1} | x_t) = N(mu_theta, beta~_t I) (DDPM Algorithm 2)."""
    model_mean, _, model_log_variance = self.p_mean_variance(denoise_fn, x=x, t=t, clip_denoised=clip_denoised)
    noise = step_noise_like(x, noise_fn, repeat=repeat_noise)
    return self._sample_from_mean(model_mean, model_log_variance, t, noise)

  def p_sample_loop(self, denoise_fn, *, shape, noise_fn=tf.random_normal):
    """Generate samples: x_T ~ N(0, I), then x_{t-1} ~ p(x_{t-1} | x_t) for t = T..1."""
    assert isinstance(shape, (tuple, list))
    img_final, = self._reverse_loop(
      lambda i_, img_: [self.p_sample(denoise_fn=denoise_fn, x=img_, t=tf.fill([shape[0]], i_), noise_fn=noise_fn)],
      [noise_fn(shape=shape, dtype=tf.float32)])
    assert img_final.shape.as_list() == list(shape)
    return img_final

  def p_sample_loop_progressive(self, denoise_fn, *, shape, noise_fn=tf.random_normal, include_xstartpred_freq=50):
    """Generate samples as p_sample_loop and keep the clipped x_0 predictions every `include_xstartpred_freq` steps
    (as GaussianDiffusion2.p_sample_loop_progressive): returns (samples [B, ...], xstartpreds [B, T // freq, ...]),
    slot k holding the prediction at t = k * freq."""
    assert isinstance(shape, (tuple, list))
    B = shape[0]
    num_recorded = self.num_timesteps // include_xstartpred_freq

    def _step(i_, img_, xstartpreds_):
      t = tf.fill([B], i_)
      # one p_sample step (DDPM Algorithm 2), keeping its x_0 prediction
      x_recon = tf.clip_by_value(self.predict_start_from_noise(img_, t=t, noise=denoise_fn(img_, t)), -1., 1.)
      model_mean, _, model_log_variance = self.q_posterior(x_start=x_recon, x_t=img_, t=t)
      sample = self._sample_from_mean(model_mean, model_log_variance, t, step_noise_like(img_, noise_fn))
      insert_mask = tf.reshape(tf.cast(tf.equal(tf.floordiv(i_, include_xstartpred_freq), tf.range(num_recorded)),
                                       tf.float32), [1, num_recorded] + [1] * (len(shape) - 1))
      return [sample, insert_mask * x_recon[:, None] + (1. - insert_mask) * xstartpreds_]

    samples, xstartpreds = self._reverse_loop(
      _step, [noise_fn(shape=shape, dtype=tf.float32), tf.zeros([B, num_recorded] + list(shape[1:]))])
    assert samples.shape.as_list() == list(shape)
    assert xstartpreds.shape.as_list() == [B, num_recorded] + list(shape[1:])
    return samples, xstartpreds

  def p_sample_loop_trajectory(self, denoise_fn, *, shape, noise_fn=tf.random_normal, repeat_noise_steps=-1):
    """Generate samples, returning the whole trajectory: times [T + 1] (T-1, ..., 0, -1) and imgs [T + 1, *shape]
    (x_T first). The first `repeat_noise_steps` steps share one noise draw across the batch."""
    assert isinstance(shape, (tuple, list))
    i_0 = tf.constant(self.num_timesteps - 1, dtype=tf.int32)
    img_0 = noise_like(shape, noise_fn, repeat=repeat_noise_steps >= 0)
    times_0 = i_0[None]
    imgs_0 = img_0[None]

    def _step(times_, imgs_, repeat_noise):
      t_ = times_[-1]
      img = self.p_sample(denoise_fn=denoise_fn, x=imgs_[-1], t=tf.fill([shape[0]], t_), noise_fn=noise_fn,
                          repeat_noise=repeat_noise)
      return [tf.concat([times_, [t_ - 1]], 0), tf.concat([imgs_, img[None]], 0)]

    invariants = [tf.TensorShape([None]), tf.TensorShape([None, *shape])]
    # Steps with repeated noise
    times, imgs = tf.while_loop(
      cond=lambda times_, _: tf.less_equal(self.num_timesteps - times_[-1], repeat_noise_steps),
      body=lambda times_, imgs_: _step(times_, imgs_, True),
      loop_vars=[times_0, imgs_0], shape_invariants=invariants, back_prop=False)
    # Steps with different noise for each batch element
    times, imgs = tf.while_loop(
      cond=lambda times_, _: tf.greater_equal(times_[-1], 0),
      body=lambda times_, imgs_: _step(times_, imgs_, False),
      loop_vars=[times, imgs], shape_invariants=invariants, back_prop=False)
    return times, imgs

  def interpolate(self, denoise_fn, *, shape, noise_fn=tf.random_normal):
    """Interpolate between images in latent space (DDPM sec. 4.3, fig. 8).

    Returns placeholders x1, x2 (images in [-1, 1]), lam (mixing weight) and t (how many steps to diffuse; t = 0
    diffuses one step), and the tensor x_interp: both images are diffused to x_t with q, mixed linearly,
    (1 - lam) x1_t + lam x2_t, then denoised with the reverse process from t. Every draw comes from noise_fn: x1's
    forward noise, x2's, then one per reverse step.
    """
    assert isinstance(shape, (tuple, list))
    x1 = tf.placeholder(tf.float32, shape)
    x2 = tf.placeholder(tf.float32, shape)
    lam = tf.placeholder(tf.float32, shape=())
    t = tf.placeholder(tf.int32, shape=())
    t_batched = tf.fill([shape[0]], t)
    # one draw per image, x2's after x1's: a counting noise_fn (seeded.SeededNoise) gives x1 draw 1, x2 draw 2
    noise1 = noise_fn(shape=shape, dtype=tf.float32)
    with tf.control_dependencies([noise1]):
      noise2 = noise_fn(shape=shape, dtype=tf.float32)
    xt1 = self.q_sample(x1, t=t_batched, noise=noise1)
    xt2 = self.q_sample(x2, t=t_batched, noise=noise2)
    xt_interp = (1 - lam) * xt1 + lam * xt2
    x_interp, = self._reverse_loop(
      lambda i_, img_: [self.p_sample(denoise_fn=denoise_fn, x=img_, t=tf.fill([shape[0]], i_), noise_fn=noise_fn)],
      [xt_interp], first_t=t)
    return x1, x2, lam, x_interp, t
