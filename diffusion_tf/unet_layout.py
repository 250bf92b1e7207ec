"""The U-Net's weights by name: for every TF variable of models/unet.model, its shape, its diffusers key and the
layout conversion (NHWC <-> NCHW), and the name mappings between the two (see checkpoints.py for the table)."""

import collections
import re

import numpy as np

from .diffusers_config import UnetHParams, attn_levels
from .errors import CheckpointError

# The EMA shadow of variable v is the variable v/ExponentialMovingAverage (tf.train.ExponentialMovingAverage's name,
# which the released checkpoints use).
EMA_NAME = 'ExponentialMovingAverage'
EMA_SUFFIX = '/' + EMA_NAME

# ---------------------------------------------------------------------------------------------------------------------
# Name and layout mapping. One walk over the architecture (the same order as unet.model) gives, for every TF
# variable, its shape, its diffusers key and the layout conversion.

ParamSpec = collections.namedtuple('ParamSpec', ['tf_name', 'tf_shape', 'diffusers_name', 'layout'])


def unet_param_specs(hp):
  """UnetHParams -> [ParamSpec] for every trainable variable of unet.model, names without the model prefix."""
  specs = []
  temb_ch = 4 * hp.ch

  def add(tf_name, shape, dname, layout):
    specs.append(ParamSpec(tf_name, tuple(shape), dname, layout))

  def dense(tf_scope, dscope, n_in, n_out, layout='linear'):
    add(tf_scope + '/W', [n_in, n_out], dscope + '.weight', layout)
    add(tf_scope + '/b', [n_out], dscope + '.bias', 'vector')

  def conv(tf_scope, dscope, n_in, n_out):
    add(tf_scope + '/W', [3, 3, n_in, n_out], dscope + '.weight', 'conv')
    add(tf_scope + '/b', [n_out], dscope + '.bias', 'vector')

  def norm(tf_scope, dscope, c):
    add(tf_scope + '/beta', [c], dscope + '.bias', 'vector')
    add(tf_scope + '/gamma', [c], dscope + '.weight', 'vector')

  def resnet(tf_scope, dscope, c_in, c_out):
    norm(tf_scope + '/norm1', dscope + '.norm1', c_in)
    conv(tf_scope + '/conv1', dscope + '.conv1', c_in, c_out)
    dense(tf_scope + '/temb_proj', dscope + '.time_emb_proj', temb_ch, c_out)
    norm(tf_scope + '/norm2', dscope + '.norm2', c_out)
    conv(tf_scope + '/conv2', dscope + '.conv2', c_out, c_out)
    if c_in != c_out:
      dense(tf_scope + '/nin_shortcut', dscope + '.conv_shortcut', c_in, c_out, layout='conv1x1')

  def attn(tf_scope, dscope, c):
    norm(tf_scope + '/norm', dscope + '.group_norm', c)
    for tf_n, d_n in [('q', 'to_q'), ('k', 'to_k'), ('v', 'to_v'), ('proj_out', 'to_out.0')]:
      dense(tf_scope + '/' + tf_n, dscope + '.' + d_n, c, c)

  levels = attn_levels(hp)
  num_levels = len(hp.ch_mult)
  dense('temb/dense0', 'time_embedding.linear_1', hp.ch, temb_ch)
  dense('temb/dense1', 'time_embedding.linear_2', temb_ch, temb_ch)
  conv('conv_in', 'conv_in', hp.in_ch, hp.ch)
  hs = [hp.ch]  # channels of the skip connections, as unet.model stacks them
  for i in range(num_levels):
    for j in range(hp.num_res_blocks):
      c_out = hp.ch * hp.ch_mult[i]
      resnet('down_{}/block_{}'.format(i, j), 'down_blocks.{}.resnets.{}'.format(i, j), hs[-1], c_out)
      if i in levels:
        attn('down_{}/attn_{}'.format(i, j), 'down_blocks.{}.attentions.{}'.format(i, j), c_out)
      hs.append(c_out)
    if i != num_levels - 1:
      conv('down_{}/downsample/conv'.format(i), 'down_blocks.{}.downsamplers.0.conv'.format(i), hs[-1], hs[-1])
      hs.append(hs[-1])
  c = hs[-1]
  resnet('mid/block_1', 'mid_block.resnets.0', c, c)
  attn('mid/attn_1', 'mid_block.attentions.0', c)
  resnet('mid/block_2', 'mid_block.resnets.1', c, c)
  for i in reversed(range(num_levels)):
    k = num_levels - 1 - i  # diffusers' up_blocks are in processing order
    for j in range(hp.num_res_blocks + 1):
      c_out = hp.ch * hp.ch_mult[i]
      resnet('up_{}/block_{}'.format(i, j), 'up_blocks.{}.resnets.{}'.format(k, j), c + hs.pop(), c_out)
      c = c_out
      if i in levels:
        attn('up_{}/attn_{}'.format(i, j), 'up_blocks.{}.attentions.{}'.format(k, j), c)
    if i != 0:
      conv('up_{}/upsample/conv'.format(i), 'up_blocks.{}.upsamplers.0.conv'.format(k), c, c)
  assert not hs
  norm('norm_out', 'conv_norm_out', c)
  conv('conv_out', 'conv_out', c, hp.out_ch)
  return specs


def to_tf_layout(arr, layout):
  """A diffusers (PyTorch) weight -> our layout: OIHW -> HWIO, [out, in] -> [in, out], [out, in, 1, 1] -> [in, out]."""
  if layout == 'conv':
    assert arr.ndim == 4, arr.shape
    return np.transpose(arr, (2, 3, 1, 0))
  if layout in ('linear', 'conv1x1'):
    if arr.ndim == 4:  # a 1x1 convolution stored as [out, in, 1, 1]
      assert arr.shape[2:] == (1, 1), arr.shape
      arr = arr[:, :, 0, 0]
    assert arr.ndim == 2, arr.shape
    return arr.T
  assert layout == 'vector' and arr.ndim == 1, (layout, arr.shape)
  return arr


def from_tf_layout(arr, layout):
  """Our weight -> the diffusers (PyTorch) layout; the inverse of to_tf_layout (conv1x1 back to [out, in, 1, 1])."""
  if layout == 'conv':
    assert arr.ndim == 4, arr.shape
    return np.transpose(arr, (3, 2, 0, 1))
  if layout == 'linear':
    assert arr.ndim == 2, arr.shape
    return arr.T
  if layout == 'conv1x1':
    assert arr.ndim == 2, arr.shape
    return arr.T[:, :, None, None]
  assert layout == 'vector' and arr.ndim == 1, (layout, arr.shape)
  return arr


def _diffusers_shape(spec):
  return from_tf_layout(np.empty(spec.tf_shape, dtype=np.uint8), spec.layout).shape


# Older diffusers checkpoints (the original google/ddpm-* uploads) name the attention layers differently.
_LEGACY_ATTN = re.compile(r'^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$')
_LEGACY_ATTN_NEW = {'query': 'to_q', 'key': 'to_k', 'value': 'to_v', 'proj_attn': 'to_out.0'}
_LEGACY_CONV = re.compile(r'^(.*\.(?:downsamplers|upsamplers)\.0)\.Conv2d_0\.(weight|bias)$')


def canonical_diffusers_names(state_dict):
  """Renames legacy diffusers keys (query/key/value/proj_attn, Conv2d_0) to the current ones."""
  out = collections.OrderedDict()
  for name, arr in state_dict.items():
    m = _LEGACY_ATTN.match(name)
    if m:
      name = '{}.{}.{}'.format(m.group(1), _LEGACY_ATTN_NEW[m.group(2)], m.group(3))
    m = _LEGACY_CONV.match(name)
    if m:
      name = '{}.conv.{}'.format(m.group(1), m.group(2))
    if name in out:
      if not np.array_equal(out[name], arr):
        raise CheckpointError('state dict has two different tensors for {!r} (current and legacy name)'.format(name))
      continue
    out[name] = arr
  return out


def _check_names(what, have, want):
  missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  if missing or extra:
    raise CheckpointError('{} does not match the U-Net: {} missing (e.g. {}), {} unexpected (e.g. {})'.format(
      what, len(missing), missing[:3], len(extra), extra[:3]))


def diffusers_to_tf(state_dict, hp, *, prefix='model'):
  """diffusers state dict (name -> array) -> OrderedDict '<prefix>/<tf name>' -> float32 array in our layout."""
  state = canonical_diffusers_names(state_dict)
  specs = unet_param_specs(hp)
  _check_names('diffusers state dict', state, [s.diffusers_name for s in specs])
  out = collections.OrderedDict()
  for s in specs:
    arr = np.asarray(state[s.diffusers_name])
    if arr.shape != _diffusers_shape(s) and not (s.layout == 'linear' and arr.shape == _diffusers_shape(s) + (1, 1)):
      raise CheckpointError('diffusers tensor {} has shape {}; expected {} (for {})'.format(
        s.diffusers_name, list(arr.shape), list(_diffusers_shape(s)), s.tf_name))
    out[prefix + '/' + s.tf_name] = np.ascontiguousarray(to_tf_layout(arr.astype(np.float32), s.layout))
  return out


def tf_to_diffusers(arrays, hp, *, prefix='model'):
  """OrderedDict '<prefix>/<tf name>' -> array (our layout) -> diffusers state dict (float32, PyTorch layout)."""
  specs = unet_param_specs(hp)
  _check_names('TF weights', arrays, [prefix + '/' + s.tf_name for s in specs])
  out = collections.OrderedDict()
  for s in specs:
    arr = np.asarray(arrays[prefix + '/' + s.tf_name])
    if arr.shape != s.tf_shape:
      raise CheckpointError('TF variable {}/{} has shape {}; expected {}'.format(
        prefix, s.tf_name, list(arr.shape), list(s.tf_shape)))
    out[s.diffusers_name] = np.ascontiguousarray(from_tf_layout(arr.astype(np.float32), s.layout))
  return out


def unet_hparams_from_tf(arrays, *, resolution, prefix='model'):
  """Infers UnetHParams from the shapes of our U-Net's weights (name -> array or shape); `resolution` is the image
  size, which the weights do not determine (it places the attention levels at attn_resolutions)."""
  shapes = {k: tuple(getattr(v, 'shape', v)) for k, v in arrays.items()}
  p = prefix + '/'
  if p + 'conv_in/W' not in shapes or p + 'conv_out/W' not in shapes:
    raise CheckpointError('no {}conv_in/W and {}conv_out/W: not a DDPM U-Net checkpoint (found e.g. {})'.format(
      p, p, sorted(shapes)[:3]))
  _, _, in_ch, ch = shapes[p + 'conv_in/W']
  out_ch = shapes[p + 'conv_out/W'][3]
  ch_mult, attn_levels = [], []
  while p + 'down_{}/block_0/conv1/W'.format(len(ch_mult)) in shapes:
    i = len(ch_mult)
    c_out = shapes[p + 'down_{}/block_0/conv1/W'.format(i)][3]
    if c_out % ch:
      raise CheckpointError('{}down_{}/block_0 has {} channels, not a multiple of ch = {}'.format(p, i, c_out, ch))
    ch_mult.append(c_out // ch)
    if p + 'down_{}/attn_0/q/W'.format(i) in shapes:
      attn_levels.append(i)
  num_res_blocks = 0
  while p + 'down_0/block_{}/conv1/W'.format(num_res_blocks) in shapes:
    num_res_blocks += 1
  if not isinstance(resolution, int) or resolution <= 0 or resolution % 2 ** (len(ch_mult) - 1):
    raise CheckpointError('resolution = {!r}; expected the image size, a positive int divisible by {}'.format(
      resolution, 2 ** (len(ch_mult) - 1)))
  return UnetHParams(ch=ch, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks,
                     attn_resolutions=tuple(resolution // 2 ** i for i in attn_levels), resolution=resolution,
                     in_ch=in_ch, out_ch=out_ch)
