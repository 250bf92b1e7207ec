"""Checks of settings, in pure Python before any graph is built, shared by the library and the command line: each
returns the checked value or raises UsageError with a message that names the value and says what was expected.
"""

import difflib
import inspect

import numpy as np

from .errors import UsageError

OPTIMIZERS = ('adam', 'rmsprop')
# --precision: the type the U-Net computes in (precision.py); float32 is the original's.
PRECISIONS = ('float32', 'bfloat16', 'float16')


def check_choice(name, value, choices):
  if value not in choices:
    raise UsageError('{}={!r} is not supported; expected one of {}'.format(name, value, ', '.join(map(str, choices))))
  return value


def is_int(value):
  """Whether value is an integer (Python or numpy); True and False are not (bool is a subclass of int)."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value):
  """Whether value is a finite real number (Python or numpy), bool excluded."""
  return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and
          bool(np.isfinite(value)))


def check_int(name, value, *, minimum=1, allow_none=False):
  if value is None and allow_none:
    return value
  if not is_int(value) or value < minimum:
    raise UsageError('{}={!r}; expected an integer >= {}'.format(name, value, minimum))
  return int(value)


def check_number(name, value, *, low=None, high=None, low_inclusive=True, high_inclusive=True):
  if not is_number(value):
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


def check_run_settings(settings):
  """The optimizer and run-control settings of a training run (train.loop.run_training's, and every script's
  train() flags): a dict holding at least these keys."""
  check_choice('optimizer', settings['optimizer'], OPTIMIZERS)
  check_int('total_bs', settings['total_bs'])
  check_number('grad_clip', settings['grad_clip'], low=0., low_inclusive=False)
  check_number('lr', settings['lr'], low=0., low_inclusive=False)
  check_int('warmup', settings['warmup'], minimum=0)
  check_number('ema_decay', settings['ema_decay'], low=0., high=1., high_inclusive=False)
  for name in ['keep_checkpoint_max', 'iterations_per_loop', 'log_every_steps', 'save_summary_steps',
               'worker_timeout_secs']:
    check_int(name, settings[name])
  for name in ['max_steps', 'save_checkpoints_steps', 'save_checkpoints_secs', 'max_train_secs',
               'worker_startup_secs']:
    check_int(name, settings[name], allow_none=True)
  if settings['save_checkpoints_steps'] is not None and settings['save_checkpoints_secs'] is not None:
    raise UsageError('give --save_checkpoints_steps or --save_checkpoints_secs, not both')
  check_int('seed', settings['seed'], minimum=0, allow_none=True)
  check_microbatches(settings['total_bs'], settings.get('grad_accum_steps', 1))


def check_microbatches(total_bs, grad_accum_steps, num_replicas=1):
  """--grad_accum_steps=K: a positive integer that splits each replica's share of the batch (total_bs / replicas,
  which the devices check divides evenly) into K equal microbatches."""
  check_int('grad_accum_steps', grad_accum_steps)
  local_bs = total_bs // num_replicas
  if local_bs % grad_accum_steps:
    raise UsageError('grad_accum_steps={} does not divide the batch of {} examples per replica (total_bs={}{}); '
                     'expected a divisor of {}'.format(
                       grad_accum_steps, local_bs, total_bs,
                       '' if num_replicas == 1 else ' over {} replicas'.format(num_replicas), local_bs))
  return grad_accum_steps


def check_train_flags(kwargs):
  """The optimizer and run-control flags of every script's train()."""
  check_str('exp_name', kwargs['exp_name'])
  if kwargs.get('date_str') is not None:  # fire turns --date_str=20210203 into an int; the run's path needs text
    kwargs['date_str'] = check_str('date_str', kwargs['date_str'])
  if 'recompute' in kwargs:
    kwargs['recompute'] = check_bool('recompute', kwargs['recompute'])
  check_run_settings(kwargs)
  check_train_precision(kwargs)


def check_train_precision(kwargs):
  """--precision of a training run: float16's loss scaling (train/loss_scale.py) runs on one device; TPUs and
  several replicas train in bfloat16."""
  precision = check_choice('precision', kwargs.get('precision', 'float32'), PRECISIONS)
  several = [flag for flag in ('num_gpus', 'num_cpu_replicas') if (kwargs.get(flag) or 1) > 1]
  if precision == 'float16' and (kwargs.get('tpu_name') is not None or several):
    raise UsageError('precision=float16 with {}: its loss scaling runs on one device; expected --precision=bfloat16 '
                     '(TPUs and GPUs from Ampere on compute in it without loss scaling)'.format(
                       '--tpu_name' if kwargs.get('tpu_name') is not None else '--{}={}'.format(
                         several[0], kwargs[several[0]])))
  return precision


def warmup_warning(warmup, max_steps, lr):
  """The line a command prints when the learning-rate warm-up (linear over `warmup` steps) outlasts --max_steps:
  such a short run trains, at lr * max_steps / warmup at most; None when the warm-up ends within the run."""
  if max_steps is None or warmup <= max_steps:
    return None
  return ('warning: the learning rate never reaches --lr={:g} within --max_steps={}: the warm-up takes --warmup={} '
          'steps, so it ends at {:.3g}'.format(lr, max_steps, warmup, lr * max_steps / warmup))


def check_known_flags(command, given, known):
  """Raises UsageError naming every flag of `given` that `command` does not take, each with the closest of `known`
  (difflib), so that a misspelled --max_step stops before any work instead of being ignored."""
  known = sorted(known)
  unknown = [name for name in given if name not in known]
  if not unknown:
    return
  hints = []
  for name in unknown:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if close:
      hints.append('--{} (did you mean --{}?)'.format(name, close[0]))
    elif len(known) <= 8:
      hints.append('--{} (expected one of {})'.format(name, ', '.join('--' + k for k in known) or 'no flags'))
    else:
      hints.append('--{} (no flag of that name; see {} --help)'.format(name, command))
  raise UsageError('unknown flag{} for {}: {}'.format('s' if len(unknown) > 1 else '', command, ', '.join(hints)))
