"""A training run's directory: its kwargs.json (the flags it was trained with) and its checkpoints: finding the
newest readable one, resolving a --checkpoint / --load_ckpt flag, reading the step, and restoring (EMA) weights.
"""

import json
import os
import sys

import tensorflow.compat.v1 as tf

from .. import provenance, utils
from ..errors import UsageError
from ..unet_layout import EMA_SUFFIX
from . import checkpoint_recovery
from .paths import is_url

KWARGS_FILE = 'kwargs.json'
# What sets the size of a script's model, for the error of a checkpoint that does not fit it.
SIZE_FLAGS_HINT = ('the U-Net\'s size is set by --model_name (its ch, ch_mult, num_res_blocks, attn_resolutions), '
                   '--dataset / --resolution (the image size), --block_size (run_celebahq.py, run_lsun.py) and '
                   '--model_var_type=learned (twice the output channels); a run\'s kwargs.json or a converted '
                   'checkpoint\'s unet_hparams.json beside the checkpoint sets them')


def write_kwargs_json(model_dir, kwargs):
  """Write kwargs.json (sorted keys) atomically."""
  utils.write_json_atomic(os.path.join(model_dir, KWARGS_FILE), kwargs)


def load_train_kwargs(model_dir):
  """The training kwargs a model_dir was created with (its kwargs.json)."""
  path = os.path.join(model_dir, KWARGS_FILE)
  if not tf.io.gfile.exists(path):
    raise UsageError('{} does not exist; expected the model_dir of a training run (it holds kwargs.json and '
                     'model.ckpt-* files)'.format(path))
  with tf.io.gfile.GFile(path, 'r') as f:
    try:
      kwargs = json.loads(f.read())
    except ValueError as e:
      raise UsageError('{} is not valid JSON ({})'.format(path, e)) from None
  if not isinstance(kwargs, dict):
    raise UsageError('{} holds {}; expected a JSON object of training kwargs'.format(path, type(kwargs).__name__))
  return kwargs


def latest_checkpoint(model_dir, warn=None):
  """Path prefix of the newest readable checkpoint in model_dir, or None. Newer unreadable ones (truncated or corrupt
  data or index, a missing shard) are moved aside to model_dir/unreadable/ after one warning line each (to `warn`,
  default stderr), and the `checkpoint` state file is rewritten to match (checkpoint_recovery)."""
  if not model_dir or not tf.io.gfile.isdir(model_dir):
    return None
  return checkpoint_recovery.newest_readable_checkpoint(model_dir, warn=warn)


def checkpoint_exists(path):
  return tf.io.gfile.exists(path + '.index')


def resolve_checkpoint(path):
  """A checkpoint prefix (model.ckpt-N) or a directory (its latest checkpoint) -> the prefix; UsageError if none."""
  if path is None:
    raise UsageError('no checkpoint given')
  if tf.io.gfile.isdir(path):
    ckpt = latest_checkpoint(path)
    if ckpt is None:
      raise UsageError('{} has no checkpoint that can be read (no "checkpoint" file listing a readable model.ckpt-*); '
                       'expected a directory with TF checkpoints or a checkpoint prefix such as '
                       '{}/model.ckpt-1000'.format(path, path))
    return ckpt
  if not checkpoint_exists(path):
    raise UsageError('checkpoint {} does not exist (no {}.index); expected a TF checkpoint prefix such as '
                     'model_dir/model.ckpt-1000, or a directory holding checkpoints'.format(path, path))
  problem = checkpoint_recovery.checkpoint_problem(path)
  if problem is not None:
    raise UsageError('checkpoint {} cannot be read ({}); expected an intact checkpoint (give its directory to use '
                     'the newest readable one)'.format(path, problem))
  return path


def resolve_load_ckpt(model_dir, load_ckpt, resolve_path=None):
  """The checkpoint a --load_ckpt flag names: a name relative to model_dir as in the original
  (`model.ckpt-790000`), else a checkpoint prefix or a directory (passed through resolve_path first, e.g.
  Paths.resolve for the bucket layout); None: model_dir's latest checkpoint. UsageError if there is none."""
  if load_ckpt is None:
    return resolve_checkpoint(model_dir)
  load_ckpt = str(load_ckpt)
  if model_dir and not is_url(load_ckpt) and not os.path.isabs(load_ckpt):
    inside = os.path.join(model_dir, load_ckpt)
    if checkpoint_exists(inside):
      return resolve_checkpoint(inside)
  return resolve_checkpoint(resolve_path(load_ckpt) if resolve_path else load_ckpt)


def checkpoint_step(ckpt):
  """The global step stored in a checkpoint (0 if it has none)."""
  reader = tf.train.load_checkpoint(ckpt)
  if reader.has_tensor('global_step'):
    return int(reader.get_tensor('global_step'))
  return checkpoint_recovery.step_in_name(ckpt, default=0)


def restore_weights(sess, ckpt, *, ema, var_list=None):
  """Restore the variables of the current graph (default: all global variables) from `ckpt`.

  With `ema`, each variable `v` is loaded from the checkpoint's EMA shadow `v/ExponentialMovingAverage` (what
  utils.ema_scope reads during training); variables without a shadow (global_step) are loaded as they are. EMA
  slots that a converted checkpoint's provenance.json marks as copies of non-EMA weights get one warning line.
  """
  var_list = tf.global_variables() if var_list is None else var_list
  trainable = set(tf.trainable_variables())
  reader = tf.train.load_checkpoint(ckpt)
  shapes = reader.get_variable_to_shape_map()
  name_map, missing = {}, []
  for v in var_list:
    name = v.op.name
    src = name + EMA_SUFFIX if (ema and name != 'global_step' and name + EMA_SUFFIX in shapes) else name
    if ema and name != 'global_step' and v in trainable and src == name:
      missing.append(name + EMA_SUFFIX)
      continue
    if src not in shapes:
      missing.append(src)
      continue
    if list(shapes[src]) != v.shape.as_list():
      raise UsageError('checkpoint {}: {} has shape {}, but the model built from the flags/kwargs.json needs {}; '
                       'expected a checkpoint of the same model configuration: {}'.format(
                         ckpt, src, shapes[src], v.shape.as_list(), SIZE_FLAGS_HINT))
    name_map[src] = v
  if missing:
    raise UsageError('checkpoint {} lacks {} variable(s) the model needs, e.g. {}{}'.format(
      ckpt, len(missing), missing[0], ' (use --noema to load the raw weights)' if ema and
      missing[0].endswith(EMA_SUFFIX) else '; expected a checkpoint of the same model configuration'))
  tf.train.Saver(var_list=name_map).restore(sess, ckpt)
  warning = provenance.ema_warning(ckpt) if ema else None
  if warning:
    print(warning, file=sys.stderr)


def find_train_kwargs(model_dir, ckpt):
  """(kwargs, path of kwargs.json) of the run that wrote checkpoint `ckpt`: from model_dir, else from the checkpoint's
  directory; (None, None) when neither has a kwargs.json (a released or converted checkpoint)."""
  for d in [model_dir, ckpt and os.path.dirname(ckpt)]:
    if d and tf.io.gfile.exists(os.path.join(d, KWARGS_FILE)):
      return load_train_kwargs(d), os.path.join(d, KWARGS_FILE)
  return None, None


def open_restored_session(dist, ckpt, ema):
  """A session of `dist` on the current graph with its local variables initialized and its weights restored from
  `ckpt` (the EMA weights if `ema`)."""
  sess = dist.session()
  sess.run(tf.local_variables_initializer())
  restore_weights(sess, ckpt, ema=ema)
  return sess
