"""The second-generation diffusion class of the original release, used for CIFAR-10 (DDPM sec. 4):
configurable mean parameterisation (eps, x_0 or x_{t-1}), variance (fixed or learned) and loss (simplified MSE or the
variational bound), plus the bits/dim evaluation.
"""

import numpy as np
import tensorflow.compat.v1 as tf

from . import checks, nn
from . import utils
from .diffusion_core import GaussianDiffusionBase
from .noise import noise_like, step_noise_like  # noqa: F401 (noise_like: API)

MODEL_MEAN_TYPES = ('eps', 'xstart', 'xprev')
MODEL_VAR_TYPES = ('fixedlarge', 'fixedsmall', 'learned')
LOSS_TYPES = ('mse', 'kl')
BETA_SCHEDULES = ('quad', 'linear', 'warmup10', 'warmup50', 'const', 'jsd')


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise:
  0.5 (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2)).
  """
  return 0.5 * (-1.0 + logvar2 - logvar1 + tf.exp(logvar1 - logvar2)
                + tf.squared_difference(mean1, mean2) * tf.exp(-logvar2))


def _warmup_beta(beta_start, beta_end, num_diffusion_timesteps, warmup_frac):
  betas = beta_end * np.ones(num_diffusion_timesteps, dtype=np.float64)
  warmup_time = int(num_diffusion_timesteps * warmup_frac)
  betas[:warmup_time] = np.linspace(beta_start, beta_end, warmup_time, dtype=np.float64)
  return betas


def get_beta_schedule(beta_schedule, *, beta_start, beta_end, num_diffusion_timesteps):
  """beta_1..beta_T as float64 [T]. The paper uses 'linear' from 1e-4 to 0.02 over T = 1000 steps (sec. 4).

  quad: linear in sqrt(beta); warmup10/50: linear over the first 10%/50% of steps, then beta_end; const: beta_end;
  jsd: 1/T, 1/(T-1), ..., 1.
  """
  T = num_diffusion_timesteps
  checks.check_int('num_diffusion_timesteps', T)
  if beta_schedule == 'quad':
    betas = np.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=np.float64) ** 2
  elif beta_schedule == 'linear':
    betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
  elif beta_schedule == 'warmup10':
    betas = _warmup_beta(beta_start, beta_end, T, 0.1)
  elif beta_schedule == 'warmup50':
    betas = _warmup_beta(beta_start, beta_end, T, 0.5)
  elif beta_schedule == 'const':
    betas = beta_end * np.ones(T, dtype=np.float64)
  elif beta_schedule == 'jsd':  # 1/T, 1/(T-1), 1/(T-2), ..., 1
    betas = 1. / np.linspace(T, 1, T, dtype=np.float64)
  else:
    raise NotImplementedError('unknown beta_schedule {!r}; expected one of {}'.format(beta_schedule, BETA_SCHEDULES))
  assert betas.shape == (T,)
  return betas


class GaussianDiffusion2(GaussianDiffusionBase):
  """Contains utilities for the diffusion model.

  model_mean_type: what the network predicts: 'eps' (the noise, DDPM eq. 11), 'xstart' (x_0) or 'xprev' (x_{t-1}).
  model_var_type: 'fixedlarge' (sigma_t^2 = beta_t), 'fixedsmall' (sigma_t^2 = beta~_t), or 'learned' (the network
    outputs a second half of channels holding log sigma_t^2).
  loss_type: 'mse' (the simplified objective, eq. 14) or 'kl' (the variational bound, eq. 5).
  """

  def __init__(self, *, betas, model_mean_type, model_var_type, loss_type):
    for value, allowed, what in [(model_mean_type, MODEL_MEAN_TYPES, 'model_mean_type'),
                                 (model_var_type, MODEL_VAR_TYPES, 'model_var_type'),
                                 (loss_type, LOSS_TYPES, 'loss_type')]:
      if value not in allowed:
        raise NotImplementedError('unknown {} {!r}; expected one of {}'.format(what, value, allowed))
    if loss_type == 'mse' and model_var_type == 'learned':
      raise ValueError("model_var_type 'learned' needs loss_type 'kl': the mse loss does not train the variance")
    self.model_mean_type = model_mean_type
    self.model_var_type = model_var_type
    self.loss_type = loss_type
    super().__init__(betas)

  def _fixed_variance(self):
    """(variance, log variance) tables of the fixed variance types.

    fixedlarge: sigma_t^2 = beta_t, but the log variance uses beta~_1 at the first step (t = 0), which gives a
    better decoder likelihood; fixedsmall: sigma_t^2 = beta~_t (clipped log).
    """
    if self.model_var_type == 'fixedlarge':
      return self.betas, np.log(np.append(self.posterior_variance[1], self.betas[1:]))
    return self.posterior_variance, self.posterior_log_variance_clipped

  def _split_model_output(self, model_output, x):
    """Network output -> (mean-parameter output [B,H,W,C], log variance [B,H,W,C] or None for fixed types)."""
    B, H, W, C = x.shape.as_list()
    if self.model_var_type == 'learned':
      assert model_output.shape.as_list() == [B, H, W, C * 2]
      model_output, model_log_variance = tf.split(model_output, 2, axis=-1)
      return model_output, model_log_variance
    assert model_output.shape.as_list() == [B, H, W, C]
    return model_output, None

  def _model_eps(self, denoise_fn, x, t):
    model_output, _ = self._split_model_output(denoise_fn(x, t), x)
    if self.model_mean_type == 'eps':
      return model_output
    if self.model_mean_type == 'xstart':
      return self._predict_eps_from_xstart(x_t=x, t=t, pred_xstart=model_output)
    pred_xstart = self._predict_xstart_from_xprev(x_t=x, t=t, xprev=model_output)
    return self._predict_eps_from_xstart(x_t=x, t=t, pred_xstart=pred_xstart)

  def p_mean_variance(self, denoise_fn, *, x, t, clip_denoised: bool, return_pred_xstart: bool):
    """Mean, variance and log variance of p(x_{t-1} | x_t) (and the implied x_0 prediction).

    With the eps parameterisation the mean is mu~_t(x_0 = (x_t - sqrt(1 - alphabar_t) eps) / sqrt(alphabar_t), x_t),
    which equals DDPM eq. 11; `clip_denoised` clips that x_0 to [-1, 1] first.
    """
    B, H, W, C = x.shape.as_list()
    assert t.shape.as_list() == [B]
    model_output, model_log_variance = self._split_model_output(denoise_fn(x, t), x)

    # Variance
    if model_log_variance is not None:
      model_variance = tf.exp(model_log_variance)
    else:
      variance_table, log_variance_table = self._fixed_variance()
      model_variance = self._extract(variance_table, t, x.shape) * tf.ones(x.shape.as_list())
      model_log_variance = self._extract(log_variance_table, t, x.shape) * tf.ones(x.shape.as_list())

    # Mean
    _maybe_clip = lambda x_: (tf.clip_by_value(x_, -1., 1.) if clip_denoised else x_)
    if self.model_mean_type == 'xprev':  # the model predicts x_{t-1}
      pred_xstart = _maybe_clip(self._predict_xstart_from_xprev(x_t=x, t=t, xprev=model_output))
      model_mean = model_output
    elif self.model_mean_type == 'xstart':  # the model predicts x_0
      pred_xstart = _maybe_clip(model_output)
      model_mean, _, _ = self.q_posterior_mean_variance(x_start=pred_xstart, x_t=x, t=t)
    else:  # the model predicts epsilon
      pred_xstart = _maybe_clip(self._predict_xstart_from_eps(x_t=x, t=t, eps=model_output))
      model_mean, _, _ = self.q_posterior_mean_variance(x_start=pred_xstart, x_t=x, t=t)

    assert model_mean.shape.as_list() == model_log_variance.shape.as_list() == pred_xstart.shape.as_list() \
        == x.shape.as_list()
    if return_pred_xstart:
      return model_mean, model_variance, model_log_variance, pred_xstart
    return model_mean, model_variance, model_log_variance

  # ------------------------------------------------------------------------------------------------------------
  # Sampling (DDPM Algorithm 2)

  def p_sample(self, denoise_fn, *, x, t, noise_fn, clip_denoised=True, return_pred_xstart: bool):
    """Sample x_{t-1} ~ p(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I)."""
    model_mean, _, model_log_variance, pred_xstart = self.p_mean_variance(
      denoise_fn, x=x, t=t, clip_denoised=clip_denoised, return_pred_xstart=True)
    noise = step_noise_like(x, noise_fn)
    sample = self._sample_from_mean(model_mean, model_log_variance, t, noise)
    assert sample.shape.as_list() == pred_xstart.shape.as_list()
    return (sample, pred_xstart) if return_pred_xstart else sample

  def p_sample_loop(self, denoise_fn, *, shape, noise_fn=tf.random_normal):
    """Generate samples: x_T ~ N(0, I), then x_{t-1} ~ p(x_{t-1} | x_t) for t = T..1."""
    assert isinstance(shape, (tuple, list))
    img_final, = self._reverse_loop(
      lambda i_, img_: [self.p_sample(denoise_fn=denoise_fn, x=img_, t=tf.fill([shape[0]], i_), noise_fn=noise_fn,
                                      return_pred_xstart=False)],
      [noise_fn(shape=shape, dtype=tf.float32)])
    assert img_final.shape.as_list() == list(shape)
    return img_final

  def p_sample_loop_progressive(self, denoise_fn, *, shape, noise_fn=tf.random_normal, include_xstartpred_freq=50):
    """Generate samples and keep the x_0 predictions every `include_xstartpred_freq` steps:
    returns (samples [B, ...], xstartpreds [B, T // freq, ...]), slot k holding the prediction at t = k * freq.
    """
    assert isinstance(shape, (tuple, list))
    num_recorded_xstartpred = self.num_timesteps // include_xstartpred_freq
    xstartpreds_0 = tf.zeros([shape[0], num_recorded_xstartpred, *shape[1:]], dtype=tf.float32)

    def _step(i_, img_, xstartpreds_):
      sample, pred_xstart = self.p_sample(denoise_fn=denoise_fn, x=img_, t=tf.fill([shape[0]], i_),
                                          noise_fn=noise_fn, return_pred_xstart=True)
      assert sample.shape.as_list() == pred_xstart.shape.as_list() == list(shape)
      # Record the prediction in slot i // freq: the last write for each slot is t = slot * freq
      insert_mask = tf.equal(tf.floordiv(i_, include_xstartpred_freq),
                             tf.range(num_recorded_xstartpred, dtype=tf.int32))
      insert_mask = tf.reshape(tf.cast(insert_mask, dtype=tf.float32),
                               [1, num_recorded_xstartpred, *([1] * len(shape[1:]))])
      new_xstartpreds = insert_mask * pred_xstart[:, None, ...] + (1. - insert_mask) * xstartpreds_
      return [sample, new_xstartpreds]

    img_final, xstartpreds_final = self._reverse_loop(_step, [noise_fn(shape=shape, dtype=tf.float32), xstartpreds_0])
    assert img_final.shape.as_list() == list(shape)
    assert xstartpreds_final.shape.as_list() == xstartpreds_0.shape.as_list()
    return img_final, xstartpreds_final

  # ------------------------------------------------------------------------------------------------------------
  # Log likelihood (DDPM eq. 5, in bits per dimension)

  def _vb_terms_bpd(self, denoise_fn, x_start, x_t, t, *, clip_denoised: bool, return_pred_xstart: bool):
    """One term of the variational bound, in bits/dim: L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for
    t > 0, and the discretized decoder L_0 = -log p(x_0 | x_1) at t = 0."""
    true_mean, _, true_log_variance_clipped = self.q_posterior_mean_variance(x_start=x_start, x_t=x_t, t=t)
    model_mean, _, model_log_variance, pred_xstart = self.p_mean_variance(
      denoise_fn, x=x_t, t=t, clip_denoised=clip_denoised, return_pred_xstart=True)
    kl = normal_kl(true_mean, true_log_variance_clipped, model_mean, model_log_variance)
    kl = nn.meanflat(kl) / np.log(2.)

    decoder_nll = -utils.discretized_gaussian_log_likelihood(
      x_start, means=model_mean, log_scales=0.5 * model_log_variance)
    assert decoder_nll.shape.as_list() == x_start.shape.as_list()
    decoder_nll = nn.meanflat(decoder_nll) / np.log(2.)

    # At the first timestep return the decoder NLL, otherwise the KL of the posterior to the model
    assert kl.shape.as_list() == decoder_nll.shape.as_list() == t.shape.as_list() == [x_start.shape[0]]
    output = tf.where(tf.equal(t, 0), decoder_nll, kl)
    return (output, pred_xstart) if return_pred_xstart else output

  def training_losses(self, denoise_fn, x_start, t, noise=None):
    """Training loss per example [B]: the simplified objective ||target - model output||^2 averaged over
    dimensions (DDPM eq. 14; the target is eps, x_0 or mu~_t for the three mean types), or the bound term (kl)."""
    assert t.shape.as_list() == [x_start.shape[0]]
    if noise is None:
      noise = tf.random_normal(shape=x_start.shape, dtype=x_start.dtype)
    assert noise.shape.as_list() == x_start.shape.as_list() and noise.dtype == x_start.dtype
    x_t = self.q_sample(x_start=x_start, t=t, noise=noise)

    if self.loss_type == 'kl':  # the variational bound
      losses = self._vb_terms_bpd(denoise_fn=denoise_fn, x_start=x_start, x_t=x_t, t=t, clip_denoised=False,
                                  return_pred_xstart=False)
    elif self.loss_type == 'mse':  # unweighted MSE
      assert self.model_var_type != 'learned'
      target = {
        'xprev': lambda: self.q_posterior_mean_variance(x_start=x_start, x_t=x_t, t=t)[0],
        'xstart': lambda: x_start,
        'eps': lambda: noise,
      }[self.model_mean_type]()
      model_output = denoise_fn(x_t, t)
      assert model_output.shape.as_list() == target.shape.as_list() == x_start.shape.as_list()
      losses = nn.meanflat(tf.squared_difference(target, model_output))
    else:
      raise NotImplementedError(self.loss_type)

    assert losses.shape.as_list() == t.shape.as_list()
    return losses

  def _prior_bpd(self, x_start):
    """L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim, per example [B]."""
    B, T = x_start.shape.as_list()[0], self.num_timesteps
    qt_mean, _, qt_log_variance = self.q_mean_variance(x_start, t=tf.fill([B], tf.constant(T - 1, dtype=tf.int32)))
    kl_prior = normal_kl(mean1=qt_mean, logvar1=qt_log_variance,
                         mean2=tf.zeros_like(qt_mean), logvar2=tf.zeros_like(qt_log_variance))
    assert kl_prior.shape.as_list() == x_start.shape.as_list()
    return nn.meanflat(kl_prior) / np.log(2.)

  def calc_bpd_loop(self, denoise_fn, x_start, *, clip_denoised=True):
    """The full variational bound in bits/dim, one fresh x_t ~ q(x_t | x_0) per term.

    Returns total_bpd [B] = sum_t terms + prior, terms_bpd [B, T] (L_0 .. L_{T-1}), prior_bpd [B] (L_T), and
    mse [B, T], the squared error of the x_0 prediction at each t.
    """
    (B, H, W, C), T = x_start.shape.as_list(), self.num_timesteps  # noqa: F841 (the shape contract, named)

    def _step(t_, cur_vals_bt_, cur_mse_bt_):
      assert t_.shape.as_list() == []
      t_b = tf.fill([B], t_)
      new_vals_b, pred_xstart = self._vb_terms_bpd(
        denoise_fn, x_start=x_start, x_t=self.q_sample(x_start=x_start, t=t_b), t=t_b,
        clip_denoised=clip_denoised, return_pred_xstart=True)
      new_mse_b = nn.meanflat(tf.squared_difference(pred_xstart, x_start))
      # Write the new values into column t of the [B, T] tables
      mask_bt = tf.cast(tf.equal(t_b[:, None], tf.range(T)[None, :]), dtype=tf.float32)
      cur_vals_bt_ = cur_vals_bt_ * (1. - mask_bt) + new_vals_b[:, None] * mask_bt
      cur_mse_bt_ = cur_mse_bt_ * (1. - mask_bt) + new_mse_b[:, None] * mask_bt
      assert mask_bt.shape.as_list() == cur_vals_bt_.shape.as_list() == cur_mse_bt_.shape.as_list() == [B, T]
      return [cur_vals_bt_, cur_mse_bt_]

    terms_bpd_bt, mse_bt = self._reverse_loop(_step, [tf.zeros([B, T]), tf.zeros([B, T])])

    prior_bpd_b = self._prior_bpd(x_start)
    total_bpd_b = tf.reduce_sum(terms_bpd_bt, axis=1) + prior_bpd_b
    assert terms_bpd_bt.shape.as_list() == mse_bt.shape.as_list() == [B, T]
    assert total_bpd_b.shape.as_list() == prior_bpd_b.shape.as_list() == [B]
    return total_bpd_b, terms_bpd_bt, prior_bpd_b, mse_bt
