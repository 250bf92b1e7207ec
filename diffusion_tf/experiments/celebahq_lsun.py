"""The model of run_celebahq.py and run_lsun.py (DDPM sec. 4: CelebA-HQ and LSUN at 256x256): `GaussianDiffusion`
(eps prediction, the 'noisepred' loss, fixed small variance) around the U-Net, with its configurations by name, the
checks of its settings, and the name of its training runs. Both scripts describe their experiment with it.
"""

import functools

import tensorflow.compat.v1 as tf

from ..diffusion_utils import LOSS_TYPES, GaussianDiffusion, get_beta_schedule
from .. import checks, precision
from ..data import catalog
from ..models import configs, unet
from . import model

# U-Net configurations by name (models/configs.py): the paper's 256x256 model, a small one for tests, and the models
# of 64x64 and 128x128 images (a folder of images: configs.BY_RESOLUTION; at 32x32, run_cifar.py's model).
MODEL_CONFIGS = {name: configs.CONFIGS[name] for name in (
  'unet2d16b2c112244', 'tiny', configs.BY_RESOLUTION[64], configs.BY_RESOLUTION[128])}
PAPER_MODEL_NAME = 'unet2d16b2c112244'
DATASETS = ('celebahq256', 'cifar10', 'digits', 'folder')


class Model(model.Model):
  def __init__(self, *, model_name, betas, loss_type: str, num_classes: int, dropout: float, randflip,
               block_size: int, unet_config=None, recompute=False, precision='float32'):
    """unet_config: the U-Net's architecture (models/configs.py keys) when it is not one of MODEL_CONFIGS, e.g. a
    converted checkpoint's; then model_name is only its label. recompute: gradient checkpointing of the U-Net's
    residual blocks (--recompute). precision: the type the U-Net computes in (--precision)."""
    self.model_name = model_name
    self.unet_config = unet_config
    self.precision = precision
    self.diffusion = GaussianDiffusion(betas=betas, loss_type=loss_type)
    self.num_classes = num_classes
    self.dropout = dropout
    self.randflip = randflip
    self.recompute = recompute
    self.block_size = block_size

  def _denoise(self, x, t, y, dropout):
    B, H, W, C = x.shape.as_list()
    assert x.dtype == tf.float32
    assert t.shape == [B] and t.dtype in [tf.int32, tf.int64, tf.float32]  # float: the solvers' fractional t
    assert y.shape == [B] and y.dtype in [tf.int32, tf.int64]
    orig_out_ch = out_ch = C
    if self.block_size != 1:  # the U-Net sees (H / b) x (W / b) images with C * b^2 channels
      x = tf.nn.space_to_depth(x, self.block_size)
      out_ch *= self.block_size ** 2
    y = None
    config = model.unet_config_of(self.model_name, self.unet_config, MODEL_CONFIGS)
    out = unet.model(x, t=t, y=y, name='model', out_ch=out_ch, num_classes=self.num_classes, dropout=dropout,
                     recompute=self.recompute, dtype=precision.compute_dtype(self.precision), **config)
    if self.block_size != 1:
      out = tf.nn.depth_to_space(out, self.block_size)
    assert out.shape.as_list() == [B, H, W, orig_out_ch]
    return out

  def samples_fn(self, dummy_noise, y, noise_fn=tf.random_normal):
    # model.Model.samples_fn under the original run_celebahq.py's parameter names
    return super().samples_fn(dummy_noise, y, noise_fn=noise_fn)

  def _losses(self, denoise_fn, x_start, t):
    return self.diffusion.p_losses(denoise_fn=denoise_fn, x_start=x_start, t=t)

  def samples_fn_denoising_trajectory(self, dummy_noise, y, repeat_noise_steps=0, noise_fn=tf.random_normal):
    """The whole ancestral chain: {'samples': x_0 [B, H, W, C], 'denoising_trajectory_times': [T + 1] (T-1 .. -1),
    'denoising_trajectory_images': [T + 1, B, H, W, C] (x_T first)}; the first repeat_noise_steps steps draw one
    noise for the whole batch."""
    times, imgs = self.diffusion.p_sample_loop_trajectory(
      denoise_fn=functools.partial(self._denoise, y=y, dropout=0), shape=dummy_noise.shape.as_list(),
      noise_fn=noise_fn, repeat_noise_steps=repeat_noise_steps)
    return {'samples': imgs[-1], 'denoising_trajectory_times': times, 'denoising_trajectory_images': imgs}

  def interpolate_fn(self, dummy_noise, y, noise_fn=tf.random_normal):
    """Latent interpolation (GaussianDiffusion.interpolate): placeholders 'x1', 'x2' (images [B, H, W, C] in
    [-1, 1]), 'lam' (scalar weight), 't' (scalar depth), and the result 'x_interp' [B, H, W, C]."""
    x1, x2, lam, x_interp, t = self.diffusion.interpolate(
      denoise_fn=functools.partial(self._denoise, y=y, dropout=0), shape=dummy_noise.shape.as_list(),
      noise_fn=noise_fn)
    return {'x1': x1, 'x2': x2, 'lam': lam, 't': t, 'x_interp': x_interp}


def load_model(kwargs, ds):
  return Model(
    model_name=kwargs['model_name'],
    betas=get_beta_schedule(
      kwargs['beta_schedule'], beta_start=kwargs['beta_start'], beta_end=kwargs['beta_end'],
      num_diffusion_timesteps=kwargs['num_diffusion_timesteps']),
    loss_type=kwargs['loss_type'],
    num_classes=ds.num_classes,
    dropout=kwargs['dropout'],
    randflip=kwargs['randflip'],
    unet_config=kwargs.get('unet_config'),
    recompute=kwargs.get('recompute', False),
    block_size=kwargs['block_size'],
    precision=kwargs.get('precision', 'float32'))


def validate_kwargs(kwargs, datasets_allowed=DATASETS):
  c = checks
  c.check_choice('dataset', kwargs['dataset'], datasets_allowed)
  configs = model.unet_configs(kwargs, MODEL_CONFIGS)
  c.check_choice('model_name', kwargs['model_name'], sorted(configs))
  c.check_choice('loss_type', kwargs['loss_type'], LOSS_TYPES)
  model.check_beta_schedule(kwargs)
  c.check_number('dropout', kwargs['dropout'], low=0., high=1., high_inclusive=False)
  c.check_bool('randflip', kwargs['randflip'])
  c.check_choice('precision', kwargs.get('precision', 'float32'), c.PRECISIONS)  # older runs: float32
  c.check_int('block_size', kwargs['block_size'])
  if kwargs.get('resolution') is not None:
    c.check_int('resolution', kwargs['resolution'])
  checks.check_model_config(kwargs['model_name'], configs, catalog.image_size_of(kwargs),
                           block_size=kwargs['block_size'])


def validate_train_kwargs(kwargs, datasets_allowed=DATASETS):
  model.check_folder_kwargs(kwargs, PAPER_MODEL_NAME, MODEL_CONFIGS)
  validate_kwargs(kwargs, datasets_allowed)
  checks.check_train_flags(kwargs)


def exp_name(kwargs):
  """The training run's name: the experiment name followed by its settings, as in the original."""
  return (
    '{exp_name}_{dataset}_{model_name}_{optimizer}_bs{total_bs}_lr{lr}w{warmup}_beta{beta_start}-{beta_end}-'
    '{beta_schedule}_t{num_diffusion_timesteps}_{loss_type}_dropout{dropout}_randflip{randflip}_blk{block_size}'
  ).format(**kwargs)
