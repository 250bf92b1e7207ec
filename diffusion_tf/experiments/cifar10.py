"""The model of run_cifar.py (DDPM sec. 4: CIFAR-10 at 32x32, and the offline digits): `GaussianDiffusion2` (mean
and variance types, the 'mse' or 'kl' loss) around the U-Net, with its configurations by name, the checks of its
settings, and the name of its training runs. run_cifar.py and demo.py describe their experiment with it.
"""

import functools

import tensorflow.compat.v1 as tf

from ..diffusion_utils_2 import LOSS_TYPES, MODEL_MEAN_TYPES, MODEL_VAR_TYPES, GaussianDiffusion2, get_beta_schedule
from ..errors import UsageError
from .. import checks, precision
from ..data import catalog
from ..models import configs, unet
from . import model

# U-Net configurations by name (models/configs.py): 'unet2d16b2' is the paper's; the small ones are for the offline demo
# and tests; the others the models of other image sizes (a folder of images: configs.BY_RESOLUTION).
MODEL_CONFIGS = {name: configs.CONFIGS[name] for name in ('unet2d16b2', 'demo', 'tiny') + tuple(
  sorted(set(configs.BY_RESOLUTION.values()) - {'unet2d16b2'}))}
PAPER_MODEL_NAME = 'unet2d16b2'
DATASETS = ('cifar10', 'digits', 'folder')


class Model(model.Model):
  def __init__(self, *, model_name, betas, model_mean_type: str, model_var_type: str, loss_type: str,
               num_classes: int, dropout: float, randflip, unet_config=None, recompute=False, precision='float32'):
    """unet_config: the U-Net's architecture (models/configs.py keys) when it is not one of MODEL_CONFIGS, e.g. a
    converted checkpoint's; then model_name is only its label. recompute: gradient checkpointing of the U-Net's
    residual blocks (--recompute). precision: the type the U-Net computes in (--precision)."""
    self.model_name = model_name
    self.unet_config = unet_config
    self.precision = precision
    self.diffusion = GaussianDiffusion2(
      betas=betas, model_mean_type=model_mean_type, model_var_type=model_var_type, loss_type=loss_type)
    self.num_classes = num_classes
    self.dropout = dropout
    self.randflip = randflip
    self.recompute = recompute

  def _denoise(self, x, t, y, dropout):
    B, H, W, C = x.shape.as_list()
    assert x.dtype == tf.float32
    assert t.shape == [B] and t.dtype in [tf.int32, tf.int64, tf.float32]  # float: the solvers' fractional t
    assert y.shape == [B] and y.dtype in [tf.int32, tf.int64]
    out_ch = (C * 2) if self.diffusion.model_var_type == 'learned' else C
    y = None
    config = model.unet_config_of(self.model_name, self.unet_config, MODEL_CONFIGS)
    return unet.model(x, t=t, y=y, name='model', out_ch=out_ch, num_classes=self.num_classes, dropout=dropout,
                      recompute=self.recompute, dtype=precision.compute_dtype(self.precision), **config)

  def samples_fn(self, dummy_noise, y, noise_fn=tf.random_normal):
    # model.Model.samples_fn under the original run_cifar.py's parameter names
    return super().samples_fn(dummy_noise, y, noise_fn=noise_fn)

  def _losses(self, denoise_fn, x_start, t):
    return self.diffusion.training_losses(denoise_fn=denoise_fn, x_start=x_start, t=t)

  def bpd_fn(self, x, y):
    total_bpd_b, terms_bpd_bt, prior_bpd_b, mse_bt = self.diffusion.calc_bpd_loop(
      denoise_fn=functools.partial(self._denoise, y=y, dropout=0),
      x_start=x)
    return {
      'total_bpd': total_bpd_b,
      'terms_bpd': terms_bpd_bt,
      'prior_bpd': prior_bpd_b,
      'mse': mse_bt
    }


def load_model(kwargs, ds):
  return Model(
    model_name=kwargs['model_name'],
    betas=get_beta_schedule(
      kwargs['beta_schedule'], beta_start=kwargs['beta_start'], beta_end=kwargs['beta_end'],
      num_diffusion_timesteps=kwargs['num_diffusion_timesteps']),
    model_mean_type=kwargs['model_mean_type'],
    model_var_type=kwargs['model_var_type'],
    loss_type=kwargs['loss_type'],
    num_classes=ds.num_classes,
    dropout=kwargs['dropout'],
    randflip=kwargs['randflip'],
    unet_config=kwargs.get('unet_config'),
    recompute=kwargs.get('recompute', False),
    precision=kwargs.get('precision', 'float32'))


def validate_kwargs(kwargs):
  """Check the model/diffusion/optimizer settings of train() (or of a kwargs.json) before anything is built."""
  c = checks
  c.check_choice('dataset', kwargs['dataset'], DATASETS)
  configs = model.unet_configs(kwargs, MODEL_CONFIGS)
  c.check_choice('model_name', kwargs['model_name'], sorted(configs))
  c.check_choice('model_mean_type', kwargs['model_mean_type'], MODEL_MEAN_TYPES)
  c.check_choice('model_var_type', kwargs['model_var_type'], MODEL_VAR_TYPES)
  c.check_choice('loss_type', kwargs['loss_type'], LOSS_TYPES)
  if kwargs['model_var_type'] == 'learned' and kwargs['loss_type'] == 'mse':
    raise UsageError("model_var_type='learned' with loss_type='mse': the mse loss does not train the "
                     "variance; expected loss_type='kl' (or a fixed variance type)")
  model.check_beta_schedule(kwargs)
  c.check_number('dropout', kwargs['dropout'], low=0., high=1., high_inclusive=False)
  c.check_bool('randflip', kwargs['randflip'])
  c.check_choice('precision', kwargs.get('precision', 'float32'), c.PRECISIONS)  # older runs: float32
  if kwargs.get('resolution') is not None:
    c.check_int('resolution', kwargs['resolution'])
    if kwargs['dataset'] not in ('digits', 'folder') and kwargs['resolution'] != catalog.IMAGE_SIZES[kwargs['dataset']]:
      raise UsageError('resolution={!r}: {} images are {}x{}; only digits has other sizes'.format(
        kwargs['resolution'], kwargs['dataset'], *[catalog.IMAGE_SIZES[kwargs['dataset']]] * 2))
  checks.check_model_config(kwargs['model_name'], configs, catalog.image_size_of(kwargs))


def validate_train_kwargs(kwargs):
  model.check_folder_kwargs(kwargs, PAPER_MODEL_NAME, MODEL_CONFIGS)
  validate_kwargs(kwargs)
  checks.check_train_flags(kwargs)


def exp_name(kwargs):
  """The training run's name: the experiment name followed by its settings, as in the original."""
  return (
    '{exp_name}_{dataset}_{model_name}_{optimizer}_bs{total_bs}_lr{lr}w{warmup}_beta{beta_start}-{beta_end}-'
    '{beta_schedule}_t{num_diffusion_timesteps}_{model_mean_type}-{model_var_type}-{loss_type}_dropout{dropout}_'
    'randflip{randflip}').format(**kwargs)
