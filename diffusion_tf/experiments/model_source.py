"""Which model a checkpoint needs, for every command that reads one (sample, reproduce, evaluation, simple_eval,
interpolate, denoising_trajectory): the checkpoint prefix, the training kwargs the model is built from, where they
came from, and what the model needs to know about its images (DatasetInfo).

The kwargs come, in this order of preference, from
  1. the run's kwargs.json (in --model_dir, else beside the checkpoint): what it was trained with;
  2. a converted checkpoint's unet_hparams.json (scripts/convert_diffusers_checkpoint.py to_tf writes it beside
     the checkpoint): the script's train() defaults with the converted U-Net's architecture (kwargs['unet_config'],
     its image size and dropout);
  3. the script's train() defaults (a released checkpoint), when the command allows it.
Flags given on the command line win over all three; a flag that contradicts the architecture or image size of a
converted U-Net is one UsageError naming both.
"""

import collections
import json
import os

import tensorflow.compat.v1 as tf

from ..checks import check_int, check_known_flags, default_kwargs
from ..data.catalog import DatasetInfo, image_size_of
from ..errors import UsageError
from ..provenance import read_provenance
from ..runs import run_dir
from .model import CONVERTED, UNET_KEYS, describe_unet, same_unet

UNET_HPARAMS_FILE = 'unet_hparams.json'

ModelSource = collections.namedtuple('ModelSource', [
  'checkpoint',   # the checkpoint prefix, or None (a run being watched that has none yet)
  'kwargs',       # the training kwargs the model is built from (flags applied, validated)
  'origin',       # where they came from: a kwargs.json or unet_hparams.json path, or "<script> train() defaults"
  'kwargs_json',  # the kwargs.json path, or None
  'provenance',   # the converted checkpoint's provenance.json (provenance.read_provenance), or None
  'ds_info',      # DatasetInfo: the image size and classes the model is built for
])


def read_unet_hparams(directory):
  """The converter's unet_hparams.json in `directory` as a dict, or None if there is none."""
  if not directory:
    return None
  path = os.path.join(directory, UNET_HPARAMS_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    try:
      hparams = json.loads(f.read())
    except ValueError as e:
      raise UsageError('{} is not valid JSON ({}); expected the file scripts/convert_diffusers_checkpoint.py to_tf '
                       'writes'.format(path, e)) from None
  missing = [k for k in UNET_KEYS + ('resolution',) if not isinstance(hparams, dict) or k not in hparams]
  if missing:
    raise UsageError('{} lacks {}; expected the file scripts/convert_diffusers_checkpoint.py to_tf writes'.format(
      path, ', '.join(missing)))
  return hparams


def unet_config_from_hparams(hparams):
  """The unet.model architecture kwargs (ch, ch_mult, num_res_blocks, attn_resolutions) of a unet_hparams.json."""
  return {'ch': int(hparams['ch']), 'ch_mult': [int(m) for m in hparams['ch_mult']],
          'num_res_blocks': int(hparams['num_res_blocks']),
          'attn_resolutions': [int(r) for r in hparams['attn_resolutions']]}


def converted_kwargs(defaults, hparams, overrides, configs, path):
  """Training kwargs for a converted checkpoint: train() defaults, the U-Net of unet_hparams.json (`hparams`, read
  from `path`) and its image size and dropout, then the flags `overrides`, which must agree with the U-Net."""
  config = unet_config_from_hparams(hparams)
  size = check_int('resolution in ' + path, hparams['resolution'])
  named = [name for name in sorted(configs) if same_unet(configs[name], config, size)]
  kwargs = dict(defaults, model_name=named[0] if named else CONVERTED, unet_config=config, image_size=size,
                resolution=size, dropout=float(hparams.get('dropout', defaults.get('dropout', 0.))))
  given = overrides.get('model_name')
  if given is not None and given != kwargs['model_name']:
    want = ('--model_name={} (its configuration) or no --model_name'.format(named[0]) if named else
            'no --model_name (the checkpoint\'s U-Net is used as converted)')
    theirs = describe_unet(configs[given]) if given in configs else 'no configuration of this script'
    raise UsageError('--model_name={} ({}) contradicts the converted checkpoint\'s U-Net in {} ({}); expected '
                     '{}'.format(given, theirs, path, describe_unet(config), want))
  for flag in ('resolution', 'image_size'):
    if overrides.get(flag) is not None and overrides[flag] != size:
      raise UsageError('--{}={!r} contradicts the converted checkpoint\'s image size {} in {}; expected no --{} '
                       '(the U-Net was converted for {}x{} images)'.format(flag, overrides[flag], size, path, flag,
                                                                           size, size))
  return dict(kwargs, **{k: v for k, v in overrides.items() if k not in ('model_name', 'resolution', 'image_size')})


def resolve_model_source(script, model_dir, checkpoint, overrides, *, command, allow_defaults=True,
                         need_checkpoint=True, printer=print):
  """The ModelSource of --model_dir / --checkpoint with the training-kwargs flags `overrides` (see the module
  docstring). `script` gives train_fn (its defaults and accepted keys), validate_kwargs, model_configs and name;
  `command` names the command in errors. allow_defaults=False: a checkpoint with neither kwargs.json nor
  unet_hparams.json is an error (evaluation needs to know the run); need_checkpoint=False: a --model_dir without a
  checkpoint yet is accepted (an evaluation that waits for one)."""
  defaults = default_kwargs(script.train_fn)
  check_known_flags('{} {}'.format(script.name, command), sorted(overrides), defaults)
  if model_dir is None and checkpoint is None:
    raise UsageError('give --model_dir (a training run) or --checkpoint (a checkpoint prefix or directory)')
  if model_dir is not None and not tf.io.gfile.isdir(model_dir):
    raise UsageError('model_dir={!r} does not exist; expected a training run directory'.format(model_dir))
  if need_checkpoint or checkpoint is not None:
    ckpt = run_dir.resolve_checkpoint(checkpoint or model_dir)
  else:
    ckpt = run_dir.latest_checkpoint(model_dir)
  kwargs, kwargs_path = run_dir.find_train_kwargs(model_dir, ckpt)
  if kwargs is not None:
    origin = kwargs_path
    kwargs = dict(kwargs, **overrides)
  else:
    hparams_dir = next((d for d in [model_dir, ckpt and os.path.dirname(ckpt)] if read_unet_hparams(d)), None)
    if hparams_dir is not None:
      origin = os.path.join(hparams_dir, UNET_HPARAMS_FILE)
      kwargs = converted_kwargs(defaults, read_unet_hparams(hparams_dir), overrides, script.model_configs, origin)
      printer('no kwargs.json next to {}: using {} train() defaults with the U-Net of {}'.format(
        ckpt or model_dir, script.name, origin))
    elif allow_defaults:
      origin = '{} train() defaults'.format(script.name)
      kwargs = dict(defaults, **overrides)
      printer('no kwargs.json next to {}: using {}'.format(ckpt, origin))
    else:
      run_dir.load_train_kwargs(model_dir or os.path.dirname(ckpt))  # raises: says which kwargs.json is missing
  try:
    script.validate_kwargs(kwargs)
  except UsageError as e:
    raise UsageError('{} (model settings from {})'.format(e, origin)) from None
  return ModelSource(checkpoint=ckpt, kwargs=kwargs, origin=origin, kwargs_json=kwargs_path,
                     provenance=read_provenance(ckpt), ds_info=DatasetInfo(image_size_of(kwargs)))
