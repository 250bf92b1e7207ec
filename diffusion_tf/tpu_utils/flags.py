"""Checks of command-line settings, in pure Python before any graph is built: each raises UsageError with a message
that says what was expected. Also the settings' vocabularies (image sizes, samplers, output types, optimizers) and
what a model needs to know about its data without reading it (DatasetInfo).
"""

import inspect

import numpy as np

from ..diffusion_utils_2 import BETA_SCHEDULES
from ..errors import UsageError
from ..sampler_schedules import SAMPLERS  # noqa: F401 (a setting's vocabulary, checked here)

IMAGE_SIZES = {'cifar10': 32, 'celebahq256': 256, 'lsun': 256, 'digits': 32}
OUTPUT_TYPES = ('png', 'npz')
OPTIMIZERS = ('adam', 'rmsprop')


def check_choice(name, value, choices):
  if value not in choices:
    raise UsageError('{}={!r} is not supported; expected one of {}'.format(name, value, ', '.join(map(str, choices))))
  return value


def check_int(name, value, *, minimum=1, allow_none=False):
  if value is None and allow_none:
    return value
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
    raise UsageError('{}={!r}; expected an integer >= {}'.format(name, value, minimum))
  return int(value)


def check_number(name, value, *, low=None, high=None, low_inclusive=True, high_inclusive=True):
  if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool) or not np.isfinite(value):
    raise UsageError('{}={!r}; expected a number'.format(name, value))
  bad_low = low is not None and (value < low if low_inclusive else value <= low)
  bad_high = high is not None and (value > high if high_inclusive else value >= high)
  if bad_low or bad_high:
    raise UsageError('{}={!r}; expected a number in {}{}, {}{}'.format(
      name, value, '[' if low_inclusive else '(', '-inf' if low is None else low,
      'inf' if high is None else high, ']' if high_inclusive else ')'))
  return value


def check_bool(name, value):
  if value in (0, 1, True, False) and not isinstance(value, float):
    return bool(value)
  raise UsageError('{}={!r}; expected 0/1 or True/False'.format(name, value))


def check_str(name, value, allow_none=False):
  if value is None and allow_none:
    return value
  if isinstance(value, (int, float)) and not isinstance(value, bool):  # fire turns --exp_name=1 into an int
    value = str(value)
  if not isinstance(value, str) or not value:
    raise UsageError('{}={!r}; expected a non-empty string'.format(name, value))
  return value


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


def check_model_config(model_name, configs, image_size, *, block_size=1):
  """The U-Net of `model_name` must fit images of image_size (after space_to_depth by block_size)."""
  config = configs[check_choice('model_name', model_name, sorted(configs))]
  if image_size % block_size:
    raise UsageError('image size {} is not divisible by block_size={}'.format(image_size, block_size))
  size = image_size // block_size
  factor = 2 ** (len(config['ch_mult']) - 1)
  if size % factor:
    raise UsageError('images of size {} (after block_size={}: {}) do not fit model {!r}: its {} resolution levels '
                       'need a size divisible by {}'.format(image_size, block_size, size, model_name,
                                                            len(config['ch_mult']), factor))
  return config


def default_kwargs(fn):
  """{name: default} of the keyword arguments of fn (a script's `train`)."""
  return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}


class DatasetInfo:
  """What a model needs to know about its data without reading it (sampling from a checkpoint)."""

  def __init__(self, image_size, num_classes=1):
    self.image_size = int(image_size)
    self.num_classes = num_classes

  @property
  def image_shape(self):
    return [self.image_size, self.image_size, 3]


def image_size_of(kwargs):
  """The training image size recorded in kwargs.json, else the dataset's standard size."""
  if kwargs.get('image_size'):
    return int(kwargs['image_size'])
  if kwargs.get('resolution'):
    return int(kwargs['resolution'])
  return IMAGE_SIZES[check_choice('dataset', kwargs.get('dataset'), sorted(IMAGE_SIZES))]


OPTIMIZERS = ('adam', 'rmsprop')


def check_train_flags(kwargs):
  """The optimizer and run-control flags of every script's train()."""
  check_str('exp_name', kwargs['exp_name'])
  if kwargs.get('date_str') is not None:  # fire turns --date_str=20210203 into an int; the run's path needs text
    kwargs['date_str'] = check_str('date_str', kwargs['date_str'])
  check_choice('optimizer', kwargs['optimizer'], OPTIMIZERS)
  check_int('total_bs', kwargs['total_bs'])
  check_number('grad_clip', kwargs['grad_clip'], low=0., low_inclusive=False)
  check_number('lr', kwargs['lr'], low=0., low_inclusive=False)
  check_int('warmup', kwargs['warmup'], minimum=0)
  check_number('ema_decay', kwargs['ema_decay'], low=0., high=1., high_inclusive=False)
  for name in ['keep_checkpoint_max', 'iterations_per_loop', 'log_every_steps', 'save_summary_steps',
               'worker_timeout_secs']:
    check_int(name, kwargs[name])
  for name in ['max_steps', 'save_checkpoints_steps', 'save_checkpoints_secs', 'max_train_secs']:
    check_int(name, kwargs[name], allow_none=True)
  if kwargs['save_checkpoints_steps'] is not None and kwargs['save_checkpoints_secs'] is not None:
    raise UsageError('give --save_checkpoints_steps or --save_checkpoints_secs, not both')
  if kwargs['max_steps'] is not None and kwargs['warmup'] > kwargs['max_steps']:
    raise UsageError('warmup={} is longer than max_steps={}; expected warmup <= max_steps (the learning rate '
                     'would never reach --lr)'.format(kwargs['warmup'], kwargs['max_steps']))
  check_int('seed', kwargs['seed'], minimum=0, allow_none=True)
