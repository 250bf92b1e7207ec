"""The model interface of the training and evaluation loops: what a script's model provides (`Model`), with the
original's training loss and ancestral sampler wired to its diffusion.
"""

import functools

import tensorflow.compat.v1 as tf

from .. import inception, utils
from ..checks import check_choice, check_int, check_number, check_str
from ..diffusion_utils_2 import BETA_SCHEDULES
from ..errors import UsageError
from ..models import configs


# The unet.model keyword arguments that fix the U-Net's architecture (models/configs.py).
UNET_KEYS = ('ch', 'ch_mult', 'num_res_blocks', 'attn_resolutions')
# model_name of a U-Net given by its hyper-parameters (kwargs['unet_config'], e.g. a converted checkpoint's) rather
# than by the name of one of a script's configurations.
CONVERTED = 'converted'


def same_unet(a, b, image_size):
  """Whether two U-Net configurations (dicts of UNET_KEYS; tuples or lists) build the same network for images of
  image_size: attention resolutions that no level of the U-Net reaches make no difference."""
  def norm(c):
    levels = {image_size // 2 ** i for i in range(len(c['ch_mult']))}
    return (c['ch'], tuple(c['ch_mult']), c['num_res_blocks'], tuple(sorted(set(c['attn_resolutions']) & levels)))
  return norm(a) == norm(b)


def describe_unet(config):
  return ', '.join('{}={}'.format(k, tuple(config[k]) if isinstance(config[k], (list, tuple)) else config[k])
                   for k in UNET_KEYS)


def unet_configs(kwargs, configs):
  """The configurations a run's model_name names: a script's `configs`, plus CONVERTED -> kwargs['unet_config'] when
  the run gives its U-Net by hyper-parameters."""
  config = kwargs.get('unet_config')
  if config is None:
    return configs
  if not isinstance(config, dict) or sorted(config) != sorted(UNET_KEYS):
    raise UsageError('unet_config={!r}; expected a dict of {}'.format(config, ', '.join(UNET_KEYS)))
  check_int('ch', config['ch'])
  check_int('num_res_blocks', config['num_res_blocks'])
  if not config['ch_mult'] or not all(isinstance(m, int) and m >= 1 for m in config['ch_mult']):
    raise UsageError('unet_config ch_mult={!r}; expected positive integers'.format(config['ch_mult']))
  return dict(configs, **{CONVERTED: {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}})


def unet_config_of(model_name, unet_config, configs):
  """unet.model's architecture kwargs: `unet_config` if given, else the configuration named model_name."""
  if unet_config is not None:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in unet_config.items()}
  if model_name not in configs:
    raise NotImplementedError(model_name)
  return configs[model_name]


class Model:
  """What a script's model provides. All images, inputs and outputs, are normalized to [-1, 1].

  Subclasses set `self.diffusion` (a GaussianDiffusion or GaussianDiffusion2), `self.dropout`, `self.randflip` and
  `self.precision` (the type their U-Net computes in: precision.py; the training loop scales the loss for float16),
  and implement `_denoise(x, t, y, dropout)` and `_losses(denoise_fn, x_start, t)` (the per-example training loss of
  their diffusion: `training_losses` or `p_losses`).
  """

  diffusion = None
  dropout = 0.
  randflip = False
  precision = 'float32'

  def _denoise(self, x, t, y, dropout):
    raise NotImplementedError

  def _losses(self, denoise_fn, x_start, t):
    raise NotImplementedError

  def train_fn(self, x, y) -> dict:
    """{'loss': scalar} for a batch x [B, H, W, C] of training images (DDPM Algorithm 1: t uniform in 0..T-1, after a
    random horizontal flip if `randflip`)."""
    B, H, W, C = x.shape.as_list()
    if self.randflip:
      x = tf.image.random_flip_left_right(x)
      assert x.shape.as_list() == [B, H, W, C]
    t = tf.random_uniform([B], 0, self.diffusion.num_timesteps, dtype=tf.int32)
    losses = self._losses(functools.partial(self._denoise, y=y, dropout=self.dropout), x_start=x, t=t)
    assert losses.shape == t.shape == [B]
    return {'loss': tf.reduce_mean(losses)}

  def samples_fn(self, dummy_x, y, noise_fn=tf.random_normal) -> dict:
    """{'samples': [B, H, W, C]} from the original ancestral sampler; `dummy_x` only gives the shape."""
    return {
      'samples': self.diffusion.p_sample_loop(
        denoise_fn=functools.partial(self._denoise, y=y, dropout=0),
        shape=dummy_x.shape.as_list(),
        noise_fn=noise_fn)
    }

  def sample_and_run_inception(self, dummy_x, y, clip_samples=True):
    """{key: {'pool_3': [B, 2048], 'logits': [B, 1008]}} of each output of samples_fn: the samples (clipped to
    [-1, 1] if clip_samples) mapped to [0, 255] without rounding, through the Inception graph (as the original)."""
    return {k: inception.run_inception(inception.preprocess_pixels(
      utils.unnormalize_data(tf.clip_by_value(v, -1., 1.) if clip_samples else v)))
      for k, v in self.samples_fn(dummy_x, y).items()}

  def progressive_samples_fn(self, dummy_noise, y, noise_fn=tf.random_normal) -> dict:
    """{'samples': [B, H, W, C], 'progressive_samples': [B, 20, H, W, C]}: ancestral samples with 20 x_0 predictions
    along the chain, slot k holding the one at t = k * T/20 (every 50 steps for T = 1000, as in the original)."""
    samples, progressive_samples = self.diffusion.p_sample_loop_progressive(
      denoise_fn=functools.partial(self._denoise, y=y, dropout=0),
      shape=dummy_noise.shape.as_list(),
      noise_fn=noise_fn,
      include_xstartpred_freq=max(1, self.diffusion.num_timesteps // 20))
    return {'samples': samples, 'progressive_samples': progressive_samples}

  def bpd_fn(self, x, y) -> dict:
    """{'total_bpd', 'terms_bpd', 'prior_bpd', 'mse'} for data x, or None if the model has no likelihood."""
    return None

  def sampler_samples_fn(self, dummy_noise, y, *, sampler, num_inference_steps=None, eta=0.,
                         use_clipped_model_output=False, skip_prk_steps=False, noise_fn=tf.random_normal,
                         skip_type=None, solver_order=None):
    """{'samples': ...} from one of the samplers of diffusion_tf/samplers.py (ddpm (respaced), ddim, pndm and the
    solvers); skip_type / solver_order None mean the sampler's defaults."""
    return {'samples': self.diffusion.sample_loop(
      functools.partial(self._denoise, y=y, dropout=0), shape=dummy_noise.shape.as_list(), sampler=sampler,
      num_inference_steps=num_inference_steps, eta=eta, use_clipped_model_output=use_clipped_model_output,
      skip_prk_steps=skip_prk_steps, noise_fn=noise_fn, skip_type=skip_type, solver_order=solver_order)}

  def inpaint_fn(self, image, mask, y, *, noise_fn=tf.random_normal, **options):
    """{'samples': ...}: RePaint inpainting of `image` where `mask` is 0 (diffusion.inpaint_loop and its options)."""
    return {'samples': self.diffusion.inpaint_loop(functools.partial(self._denoise, y=y, dropout=0), image=image,
                                                   mask=mask, noise_fn=noise_fn, **options)}

  def img2img_fn(self, image, y, *, strength, noise_fn=tf.random_normal, **sampler_options):
    """{'samples': ...}: SDEdit from `image` at `strength` with a sampler of samplers.py (sample_loop's options)."""
    return {'samples': self.diffusion.sample_loop(
      functools.partial(self._denoise, y=y, dropout=0), shape=image.shape.as_list(), x_start=image,
      strength=strength, noise_fn=noise_fn, **sampler_options)}

  def invert_fn(self, image, y, *, num_inference_steps, clip_denoised=True):
    """{'latents': the DDIM inversion of `image`, 'samples': those latents decoded by DDIM (eta 0, the same steps)}."""
    denoise_fn = functools.partial(self._denoise, y=y, dropout=0)
    latents = self.diffusion.ddim_inversion_loop(denoise_fn, x_0=image, num_inference_steps=num_inference_steps,
                                                 clip_denoised=clip_denoised)
    return {'latents': latents, 'samples': self.diffusion.ddim_sample_loop(
      denoise_fn, shape=image.shape.as_list(), num_inference_steps=num_inference_steps, x_T=latents,
      clip_denoised=clip_denoised)}


def make_ema(global_step, ema_decay, trainable_variables):
  """utils.make_ema: (ema, update op) with shadows `<variable>/ExponentialMovingAverage`."""
  return utils.make_ema(global_step=global_step, ema_decay=ema_decay, trainable_variables=trainable_variables)


def check_beta_schedule(kwargs):
  check_choice('beta_schedule', kwargs['beta_schedule'], BETA_SCHEDULES)
  check_int('num_diffusion_timesteps', kwargs['num_diffusion_timesteps'], minimum=1)
  check_number('beta_start', kwargs['beta_start'], low=0., high=1., low_inclusive=False)
  check_number('beta_end', kwargs['beta_end'], low=0., high=1., low_inclusive=False)
  # const and jsd ignore beta_start; the other schedules run from beta_start up to beta_end
  if kwargs['beta_schedule'] not in ('const', 'jsd') and kwargs['beta_start'] > kwargs['beta_end']:
    raise UsageError('beta_start={!r} is larger than beta_end={!r}; expected beta_start <= beta_end (the {} '
                       'schedule increases from beta_start to beta_end)'.format(
                         kwargs['beta_start'], kwargs['beta_end'], kwargs['beta_schedule']))


def check_folder_kwargs(kwargs, paper_model_name, model_configs):
  """A run on dataset folder (data/folder.py): its data_dir, eval_fraction and resolution, and its U-Net: when
  model_name is left at the paper's, the model of the resolution (configs.BY_RESOLUTION, if it is one of the
  script's model_configs), written into kwargs. For the other datasets: no data_dir."""
  if kwargs.get('dataset') != 'folder':
    if kwargs.get('data_dir') is not None:
      raise UsageError('--data_dir={} applies to --dataset=folder; expected no --data_dir with --dataset={}'.format(
        kwargs['data_dir'], kwargs.get('dataset')))
    return
  check_str('data_dir', kwargs.get('data_dir'))
  check_number('eval_fraction', kwargs.get('eval_fraction', 0.), low=0., high=1., high_inclusive=False)
  resolution = kwargs.get('resolution')
  if resolution is None:
    raise UsageError('--dataset=folder needs --resolution, the training image size (models for {})'.format(
      ', '.join(map(str, sorted(configs.BY_RESOLUTION)))))
  check_int('resolution', resolution)
  if kwargs.get('tpu_name') is not None:
    raise UsageError('--dataset=folder decodes the images in this Python process, which a Cloud TPU host cannot; '
                     'write them as TFRecords with scripts/prepare_lsun.py --image_dir and train with run_lsun.py')
  if kwargs['model_name'] == paper_model_name:
    sizes = sorted(size for size, name in configs.BY_RESOLUTION.items() if name in model_configs)
    if resolution not in sizes:
      raise UsageError('resolution={}: no U-Net configuration of this script for that size; expected one of {} or a '
                       '--model_name whose levels divide it'.format(resolution, ', '.join(map(str, sizes))))
    kwargs['model_name'] = configs.BY_RESOLUTION[resolution]
