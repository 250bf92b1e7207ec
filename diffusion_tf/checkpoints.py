"""Weights interop between the DDPM U-Net (models/unet.py) and the diffusers `UNet2DModel` format.

The DDPM checkpoints published for diffusers (google/ddpm-cifar10-32, google/ddpm-ema-celebahq-256,
google/ddpm-ema-church-256, ...) are directories holding `config.json` and `diffusion_pytorch_model.safetensors`
(or `.bin`). This module maps them, without PyTorch, to the variable names and layouts of the original TF release
and back:

  TF (ours, NHWC)                          diffusers (PyTorch, NCHW)
  conv W [kh, kw, in, out] (HWIO)          conv weight [out, in, kh, kw] (OIHW)
  dense W [in, out]                        Linear weight [out, in]
  nin W [in, out] (q, k, v, proj_out,      Linear weight [out, in] (to_q, to_k, to_v, to_out.0; older files:
    nin_shortcut)                            query, key, value, proj_attn), 1x1 conv [out, in, 1, 1] (conv_shortcut)
  group norm gamma, beta [C]               GroupNorm weight, bias [C]

Levels: our `up_{i}` is named by its resolution level i (the lowest resolution, i = L-1, runs first), while
diffusers' `up_blocks[k]` are in processing order, so up_{i} <-> up_blocks[L-1-i].

The formats and mappings live in safetensors_io.py, torch_bin.py, diffusers_config.py and unet_layout.py (re-exported
here); this module reads and writes whole diffusers directories and TF checkpoints. Everything is plain numpy and
file I/O, except `write_tf_checkpoint` / `read_tf_checkpoint`, which use TF's own
checkpoint format (the op tf.train.Saver saves with, in a fresh graph; tf.train.load_checkpoint).
"""

import collections
import json
import os
import re
import shutil
import tempfile

import numpy as np

from .diffusers_config import (  # noqa: F401 (this module's names)
  DIFFUSERS_DEFAULTS, DIFFUSERS_VERSION, UnetHParams, diffusers_config_from_unet_hparams,
  unet_hparams_from_diffusers_config)
from .errors import CheckpointError
from .safetensors_io import bfloat16_bits_to_float32, read_safetensors, write_safetensors  # noqa: F401
from .torch_bin import read_torch_bin
from .unet_layout import EMA_SUFFIX
from .unet_layout import (  # noqa: F401 (this module's names)
  canonical_diffusers_names, diffusers_to_tf, from_tf_layout, tf_to_diffusers, to_tf_layout, unet_hparams_from_tf,
  unet_param_specs)

CONFIG_NAME = 'config.json'
SAFETENSORS_NAME = 'diffusion_pytorch_model.safetensors'
BIN_NAME = 'diffusion_pytorch_model.bin'


# ---------------------------------------------------------------------------------------------------------------------
# diffusers model directories.

_LFS_POINTER = b'version https://git-lfs'


def read_diffusers_dir(path):
  """A diffusers UNet2DModel directory -> (config dict, UnetHParams, state dict name -> np.ndarray)."""
  if not os.path.isdir(path):
    raise CheckpointError('{}: not a directory; expected a diffusers model directory with {} and {} (or {})'.format(
      path, CONFIG_NAME, SAFETENSORS_NAME, BIN_NAME))
  cfg_path = os.path.join(path, CONFIG_NAME)
  if not os.path.isfile(cfg_path):
    raise CheckpointError('{}: no {}; expected a diffusers model directory (e.g. a clone of '
                          'huggingface.co/google/ddpm-cifar10-32, or its unet/ subfolder)'.format(path, CONFIG_NAME))
  try:
    with open(cfg_path) as f:
      config = json.load(f)
  except ValueError as e:
    raise CheckpointError('{}: not valid JSON: {}'.format(cfg_path, e))
  if not isinstance(config, dict):
    raise CheckpointError('{}: expected a JSON object'.format(cfg_path))
  try:
    hp = unet_hparams_from_diffusers_config(config)
  except CheckpointError as e:
    raise CheckpointError('{}: {}'.format(cfg_path, e))
  st_path, bin_path = os.path.join(path, SAFETENSORS_NAME), os.path.join(path, BIN_NAME)
  weights = st_path if os.path.isfile(st_path) else bin_path if os.path.isfile(bin_path) else None
  if weights is None:
    raise CheckpointError('{}: no {} or {}; expected a diffusers model directory'.format(
      path, SAFETENSORS_NAME, BIN_NAME))
  with open(weights, 'rb') as f:
    if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
      raise CheckpointError('{}: is a git-lfs pointer, not the weights; run `git lfs pull` in the clone (see '
                            'docs/pretrained.md)'.format(weights))
  state = read_safetensors(weights)[0] if weights == st_path else read_torch_bin(weights)
  return config, hp, state


def write_diffusers_dir(path, hp, state_dict, *, dropout=0.0):
  """Writes config.json + diffusion_pytorch_model.safetensors for diffusers' UNet2DModel.from_pretrained(path)."""
  config = diffusers_config_from_unet_hparams(hp, dropout=dropout)

  def write(tmp_dir):
    with open(os.path.join(tmp_dir, CONFIG_NAME), 'w') as f:
      json.dump(config, f, indent=2)
      f.write('\n')
    write_safetensors(os.path.join(tmp_dir, SAFETENSORS_NAME), state_dict, metadata={'format': 'pt'})

  _write_dir_atomically(path, write)
  return config


def _write_dir_atomically(path, write):
  """Runs write(tmp_dir) in a sibling temp directory, then renames it to `path` (which must not exist or be empty)."""
  path = os.path.abspath(path)
  if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
    raise CheckpointError('{}: already exists and is not an empty directory; choose a new output '
                          'directory'.format(path))
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.' + os.path.basename(path) + '.tmp-', dir=parent)
  try:
    write(tmp)
    os.chmod(tmp, 0o755)
    if os.path.isdir(path):
      os.rmdir(path)
    os.rename(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


# ---------------------------------------------------------------------------------------------------------------------
# TF checkpoints.

def write_tf_checkpoint(path, arrays, *, global_step=0, with_ema=True, basename='model.ckpt', extra_files=None):
  """Writes a TF checkpoint directory `path` (new or empty) holding `arrays` (name -> np.ndarray).

  With `with_ema`, every array is also saved as the shadow `<name>/ExponentialMovingAverage`, so that code restoring
  either the live weights or the EMA weights (the released checkpoints' evaluation mode) finds them. Also saves the
  int64 `global_step`. `extra_files` (file name -> text) are written beside it. Returns the checkpoint prefix
  `<path>/<basename>-<global_step>`.
  """
  import tensorflow.compat.v1 as tf  # imported here: the numpy-only functions above must not need TF

  values = collections.OrderedDict(arrays)
  if with_ema:
    for name, arr in arrays.items():
      values[name + EMA_SUFFIX] = arr
  if 'global_step' in values:
    raise CheckpointError('arrays must not contain global_step (pass it as global_step=)')
  values['global_step'] = np.asarray(global_step, dtype=np.int64)

  ckpt_name = '{}-{}'.format(basename, int(global_step))

  def write(tmp_dir):
    # The op tf.train.Saver saves with (SaveV2), run directly: the arrays are fed through placeholders, so large
    # weights stay out of the GraphDef, and no variables (slow to create by the hundred) are needed.
    with tf.Graph().as_default():
      names = list(values)
      placeholders = [tf.placeholder(np.asarray(values[n]).dtype, np.shape(values[n])) for n in names]
      save = tf.raw_ops.SaveV2(prefix=os.path.join(tmp_dir, ckpt_name), tensor_names=names,
                               shape_and_slices=[''] * len(names), tensors=placeholders)
      with tf.Session(config=tf.ConfigProto(device_count={'GPU': 0})) as sess:
        sess.run(save, feed_dict={ph: np.asarray(values[n]) for ph, n in zip(placeholders, names)})
    # The `checkpoint` state file, with a relative path so that the directory can be moved.
    tf.train.update_checkpoint_state(tmp_dir, ckpt_name, all_model_checkpoint_paths=[ckpt_name])
    for fname, text in (extra_files or {}).items():
      with open(os.path.join(tmp_dir, fname), 'w') as f:
        f.write(text)

  _write_dir_atomically(path, write)
  return os.path.join(os.path.abspath(path), ckpt_name)


def read_tf_checkpoint(path):
  """A TF checkpoint (prefix, or a directory: its latest checkpoint) -> OrderedDict name -> np.ndarray."""
  import tensorflow.compat.v1 as tf  # imported here: the numpy-only functions above must not need TF

  if os.path.isdir(path):  # the checkpoint its state file names (run_dir.resolve_checkpoint also sets bad ones aside)
    ckpt = tf.train.latest_checkpoint(path)
    if ckpt is None:
      raise CheckpointError('{}: directory has no readable TF checkpoint (no "checkpoint" state file listing '
                            'one)'.format(path))
    path = ckpt
  try:
    reader = tf.train.load_checkpoint(path)
    names = sorted(reader.get_variable_to_shape_map())
    return collections.OrderedDict((n, reader.get_tensor(n)) for n in names)
  except (tf.errors.OpError, ValueError) as e:
    raise CheckpointError('{}: cannot read TF checkpoint: {}'.format(path, str(e).splitlines()[0])) from None


def unet_weights_from_tf(values, *, ema, prefix='model'):
  """Picks the U-Net weights out of a checkpoint's values: the EMA shadows (under the live names) if `ema`, else the
  live weights; optimizer slots, global_step and other variables are dropped."""
  p = prefix + '/'
  live = [n for n in values if n.startswith(p) and EMA_SUFFIX not in n and not
          re.search(r'/(Adam|Adam_1|Momentum|RMSProp|RMSProp_1)$', n)]
  if not live:
    raise CheckpointError('no variables under {!r} in the checkpoint (found e.g. {})'.format(p, sorted(values)[:3]))
  if not ema:
    return collections.OrderedDict((n, values[n]) for n in live)
  missing = [n for n in live if n + EMA_SUFFIX not in values]
  if missing:
    raise CheckpointError('the checkpoint has no EMA shadow for {} variables (e.g. {}); export the live weights '
                          'with ema=False'.format(len(missing), missing[0] + EMA_SUFFIX))
  return collections.OrderedDict((n, values[n + EMA_SUFFIX]) for n in live)
