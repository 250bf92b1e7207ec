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

Everything here is plain numpy and file I/O, except `write_tf_checkpoint` / `read_tf_checkpoint`, which use TF's own
checkpoint format (the op tf.train.Saver saves with, in a fresh graph; tf.train.load_checkpoint).
"""

import collections
import json
import os
import pickle
import re
import shutil
import tempfile
import zipfile

import numpy as np

from .errors import CheckpointError

EMA_SUFFIX = '/ExponentialMovingAverage'
CONFIG_NAME = 'config.json'
SAFETENSORS_NAME = 'diffusion_pytorch_model.safetensors'
BIN_NAME = 'diffusion_pytorch_model.bin'
# The diffusers release whose UNet2DModel source this mapping was checked against (written into exported configs).
DIFFUSERS_VERSION = '0.42.1'

# The hyper-parameters of our unet.model() that the weights determine, plus the image size.
UnetHParams = collections.namedtuple(
  'UnetHParams', ['ch', 'ch_mult', 'num_res_blocks', 'attn_resolutions', 'resolution', 'in_ch', 'out_ch'])


# ---------------------------------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin,
# end)}, "__metadata__": {str: str}}, then the raw little-endian C-order data; offsets are relative to the data start.

_ST_DTYPES = {
  'F64': np.dtype('<f8'), 'F32': np.dtype('<f4'), 'F16': np.dtype('<f2'),
  'I64': np.dtype('<i8'), 'I32': np.dtype('<i4'), 'I16': np.dtype('<i2'), 'I8': np.dtype('i1'),
  'U64': np.dtype('<u8'), 'U32': np.dtype('<u4'), 'U16': np.dtype('<u2'), 'U8': np.dtype('u1'),
  'BOOL': np.dtype('?'),
  'BF16': np.dtype('<u2'),  # numpy has no bfloat16: read as uint16 bits, then widened exactly to float32
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def bfloat16_bits_to_float32(bits):
  """bfloat16 is the upper half of a float32: f32 bits = bf16 bits << 16 (exact)."""
  bits = np.asarray(bits, dtype=np.uint16)
  return (bits.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path):
  """Reads a .safetensors file -> (OrderedDict name -> np.ndarray, metadata dict). BF16 is returned as float32."""
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(8)
    if len(head) != 8:
      raise CheckpointError('{}: not a safetensors file (shorter than its 8-byte header length)'.format(path))
    n = int(np.frombuffer(head, dtype='<u8')[0])
    if n > min(size - 8, _MAX_HEADER_BYTES):
      raise CheckpointError('{}: not a safetensors file (header length {} but file size {})'.format(path, n, size))
    try:
      header = json.loads(f.read(n).decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as e:
      raise CheckpointError('{}: not a safetensors file (bad JSON header: {})'.format(path, e))
  if not isinstance(header, dict):
    raise CheckpointError('{}: not a safetensors file (header is not a JSON object)'.format(path))
  metadata = header.pop('__metadata__', None) or {}
  data_start, data_size = 8 + n, size - 8 - n
  mm = np.memmap(path, dtype=np.uint8, mode='r', offset=data_start, shape=(data_size,)) if data_size else None
  out = collections.OrderedDict()
  # Tensors in file order, so that a read-write round trip keeps the layout.
  for name, info in sorted(header.items(), key=lambda kv: tuple(kv[1].get('data_offsets', (0, 0)))):
    try:
      dtype, shape, (begin, end) = _ST_DTYPES[info['dtype']], [int(d) for d in info['shape']], info['data_offsets']
    except (KeyError, TypeError, ValueError):
      raise CheckpointError('{}: tensor {!r} has a bad header entry {} (expected dtype in {}, shape, '
                            'data_offsets)'.format(path, name, info, sorted(_ST_DTYPES)))
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not (0 <= begin <= end <= data_size and end - begin == nbytes):
      raise CheckpointError('{}: tensor {!r} has data_offsets {} that do not hold {} bytes for shape {} within the '
                            '{} data bytes'.format(path, name, [begin, end], nbytes, shape, data_size))
    arr = np.array(mm[begin:end]).view(dtype).reshape(shape) if nbytes else np.zeros(shape, dtype)
    if info['dtype'] == 'BF16':
      out[name] = bfloat16_bits_to_float32(arr)
    else:
      out[name] = arr.astype(dtype.newbyteorder('='))
  del mm
  return out, metadata


def write_safetensors(path, tensors, metadata=None):
  """Writes name -> np.ndarray to `path` in the safetensors format (in the given order), via a temp file + rename."""
  rev = {v: k for k, v in _ST_DTYPES.items() if k != 'BF16'}
  header = collections.OrderedDict()
  if metadata:
    header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}
  arrays, offset = [], 0
  for name, arr in tensors.items():
    arr = np.asarray(arr)
    key = arr.dtype.newbyteorder('<') if arr.dtype.itemsize > 1 else arr.dtype
    if key not in rev:
      raise CheckpointError('cannot write tensor {!r} of dtype {} to safetensors (supported: {})'.format(
        name, arr.dtype, sorted(str(d) for d in rev)))
    data = np.ascontiguousarray(arr, dtype=key).tobytes()
    header[name] = {'dtype': rev[key], 'shape': list(arr.shape), 'data_offsets': [offset, offset + len(data)]}
    arrays.append(data)
    offset += len(data)
  blob = json.dumps(header, separators=(',', ':')).encode('utf-8')
  blob += b' ' * (-len(blob) % 8)  # pad the header with spaces so the data starts 8-byte aligned
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    f.write(np.array([len(blob)], dtype='<u8').tobytes())
    f.write(blob)
    for data in arrays:
      f.write(data)
  os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------------
# PyTorch .bin (torch.save zip format, torch >= 1.6): <root>/data.pkl is a pickle whose tensors are
# torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) calls over persistent ids
# ('storage', torch.<Type>Storage, key, location, numel); storage `key` is the raw file <root>/data/<key>.
# The unpickler below resolves only those few names, to numpy stand-ins, and refuses every other global, so that
# loading runs no code from the file.

_TORCH_STORAGES = {
  'FloatStorage': np.dtype('f4'), 'DoubleStorage': np.dtype('f8'), 'HalfStorage': np.dtype('f2'),
  'BFloat16Storage': None, 'LongStorage': np.dtype('i8'), 'IntStorage': np.dtype('i4'),
  'ShortStorage': np.dtype('i2'), 'CharStorage': np.dtype('i1'), 'ByteStorage': np.dtype('u1'),
  'BoolStorage': np.dtype('?'),
}


class _StorageType(object):
  def __init__(self, name):
    self.name = name


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """A numpy copy of the strided view storage[offset + sum_i idx_i * stride_i]; bounds are checked first."""
  if not isinstance(storage, np.ndarray):
    raise pickle.UnpicklingError('tensor storage is a {}, not a storage'.format(type(storage).__name__))
  size, stride, storage_offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(storage_offset)
  if len(size) != len(stride) or any(s < 0 for s in size + stride) or storage_offset < 0:
    raise pickle.UnpicklingError('bad tensor size {} / stride {} / offset {}'.format(size, stride, storage_offset))
  numel = int(np.prod(size, dtype=np.int64))
  if numel == 0:
    return np.zeros(size, dtype=storage.dtype)
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size:
    raise pickle.UnpicklingError('tensor of size {} / stride {} / offset {} reads past its storage of {} '
                                 'elements'.format(size, stride, storage_offset, storage.size))
  view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=size,
                                         strides=[s * storage.itemsize for s in stride])
  return np.array(view)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
  del requires_grad, backward_hooks
  return data


class _RestrictedUnpickler(pickle.Unpickler):
  """Reconstructs torch.save'd dicts of tensors into numpy arrays; any other global raises UnpicklingError."""

  _ALLOWED = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
  }

  def __init__(self, f, load_storage):
    super().__init__(f)
    self._load_storage = load_storage

  def find_class(self, module, name):
    if (module, name) in self._ALLOWED:
      return self._ALLOWED[(module, name)]
    if module == 'torch' and name in _TORCH_STORAGES:
      return _StorageType(name)
    raise pickle.UnpicklingError('refusing to load {}.{}: only dicts of tensors are read'.format(module, name))

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage' and isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError('unsupported persistent id {!r}'.format(pid[:2] if isinstance(pid, tuple)
                                                                          else pid))
    return self._load_storage(pid[1].name, str(pid[2]))


def read_torch_bin(path):
  """Reads a torch.save'd state dict (zip format) -> OrderedDict name -> np.ndarray, with numpy only.

  bfloat16 tensors are widened exactly to float32 (numpy has no bfloat16).
  """
  if not zipfile.is_zipfile(path):
    raise CheckpointError('{}: not a torch zip checkpoint (the legacy pre-1.6 torch format is not supported; '
                          'use the .safetensors file instead)'.format(path))
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkls = [n for n in names if n.endswith('data.pkl') and n.count('/') == 1]
    if len(pkls) != 1:
      raise CheckpointError('{}: expected one <root>/data.pkl in the torch zip, found {}'.format(path, pkls))
    root = pkls[0][:-len('data.pkl')]
    byteorder = zf.read(root + 'byteorder').decode().strip() if root + 'byteorder' in names else 'little'
    if byteorder not in ('little', 'big'):
      raise CheckpointError('{}: unknown byteorder {!r}'.format(path, byteorder))
    storages = {}

    def load_storage(type_name, key):
      if key not in storages:
        dtype = _TORCH_STORAGES[type_name]
        raw = zf.read(root + 'data/' + key)
        if dtype is None:  # bfloat16
          storages[key] = bfloat16_bits_to_float32(np.frombuffer(raw, dtype=('<u2' if byteorder == 'little'
                                                                              else '>u2')))
        else:
          dt = dtype.newbyteorder('<' if byteorder == 'little' else '>') if dtype.itemsize > 1 else dtype
          storages[key] = np.frombuffer(raw, dtype=dt).astype(dtype.newbyteorder('='))
      return storages[key]

    try:
      obj = _RestrictedUnpickler(zf.open(pkls[0]), load_storage).load()
    except (pickle.UnpicklingError, KeyError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
      raise CheckpointError('{}: cannot read torch checkpoint: {}'.format(path, e))
  if not (isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())):
    raise CheckpointError('{}: expected a state dict (name -> tensor), got {}'.format(path, type(obj).__name__))
  return collections.OrderedDict(obj)


# ---------------------------------------------------------------------------------------------------------------------
# diffusers config <-> our hyper-parameters.

# UNet2DModel.__init__ defaults (diffusers 0.42.1): a key missing from an (older) config.json takes this value.
DIFFUSERS_DEFAULTS = {
  'sample_size': None, 'in_channels': 3, 'out_channels': 3, 'center_input_sample': False,
  'time_embedding_type': 'positional', 'time_embedding_dim': None, 'freq_shift': 0, 'flip_sin_to_cos': True,
  'down_block_types': ('DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D'),
  'mid_block_type': 'UNetMidBlock2D',
  'up_block_types': ('AttnUpBlock2D', 'AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'),
  'block_out_channels': (224, 448, 672, 896), 'layers_per_block': 2, 'mid_block_scale_factor': 1,
  'downsample_padding': 1, 'downsample_type': 'conv', 'upsample_type': 'conv', 'dropout': 0.0, 'act_fn': 'silu',
  'attention_head_dim': 8, 'norm_num_groups': 32, 'attn_norm_num_groups': None, 'norm_eps': 1e-5,
  'resnet_time_scale_shift': 'default', 'add_attention': True, 'class_embed_type': None, 'num_class_embeds': None,
  'num_train_timesteps': None,
}

# What the DDPM U-Net is, in diffusers' terms: (key, accepted values, why).
_DDPM_ARCH = [
  ('center_input_sample', (False,), 'inputs are already in [-1, 1]'),
  ('time_embedding_type', ('positional',), 'sinusoidal timestep embedding'),
  ('freq_shift', (1,), 'frequencies exp(-log(10000) i / (half - 1))'),
  ('flip_sin_to_cos', (False,), 'embedding is [sin, cos]'),
  ('mid_block_type', ('UNetMidBlock2D',), 'resnet-attention-resnet middle'),
  ('mid_block_scale_factor', (1,), 'unscaled residuals'),
  ('downsample_padding', (0,), 'stride-2 SAME convolution pads only bottom/right'),
  ('downsample_type', ('conv',), 'convolutional downsampling'),
  ('upsample_type', ('conv',), 'nearest x2 + convolution'),
  ('act_fn', ('silu', 'swish'), 'swish nonlinearity'),
  ('norm_num_groups', (32,), 'group norm with 32 groups'),
  ('attn_norm_num_groups', (None, 32), 'group norm with 32 groups'),
  ('norm_eps', (1e-6,), 'group norm epsilon 1e-6'),
  ('resnet_time_scale_shift', ('default',), 'timestep embedding added, not scale-shift'),
  ('add_attention', (True,), 'attention in the middle block'),
  ('class_embed_type', (None,), 'unconditional'),
  ('num_class_embeds', (None,), 'unconditional'),
]


def _cfg(config, key):
  return config[key] if key in config else DIFFUSERS_DEFAULTS[key]


def unet_hparams_from_diffusers_config(config):
  """diffusers UNet2DModel config (dict) -> UnetHParams, or CheckpointError if it is not the DDPM U-Net."""
  cls = config.get('_class_name')
  if cls != 'UNet2DModel':
    raise CheckpointError('config _class_name is {!r}; expected "UNet2DModel"'.format(cls))
  for key, accepted, why in _DDPM_ARCH:
    value = _cfg(config, key)
    if value not in accepted or isinstance(value, bool) != isinstance(accepted[0], bool):
      raise CheckpointError('config {} = {!r} is not the DDPM U-Net (expected {}: {})'.format(
        key, value, ' or '.join(repr(a) for a in accepted), why))
  chans = [int(c) for c in _cfg(config, 'block_out_channels')]
  ch = chans[0]
  if any(c % ch for c in chans):
    raise CheckpointError('config block_out_channels = {} is not ch * ch_mult (each a multiple of {})'.format(
      chans, ch))
  num_levels = len(chans)
  down, up = list(_cfg(config, 'down_block_types')), list(_cfg(config, 'up_block_types'))
  if len(down) != num_levels or len(up) != num_levels:
    raise CheckpointError('config has {} block_out_channels but {} down_block_types and {} up_block_types'.format(
      num_levels, len(down), len(up)))
  attn_levels = []
  for i, (d, u) in enumerate(zip(down, reversed(up))):
    if (d, u) == ('AttnDownBlock2D', 'AttnUpBlock2D'):
      attn_levels.append(i)
    elif (d, u) != ('DownBlock2D', 'UpBlock2D'):
      raise CheckpointError('config level {} has down block {!r} and up block {!r}; expected DownBlock2D/UpBlock2D '
                            'or AttnDownBlock2D/AttnUpBlock2D'.format(i, d, u))
  head_dim = _cfg(config, 'attention_head_dim')
  for c in [chans[i] for i in attn_levels] + [chans[-1]]:
    if head_dim is not None and head_dim != c:
      raise CheckpointError('config attention_head_dim = {!r} makes multi-head attention; the DDPM U-Net has one '
                            'head (expected null or {})'.format(head_dim, c))
  temb_dim = _cfg(config, 'time_embedding_dim')
  if temb_dim not in (None, 4 * ch):
    raise CheckpointError('config time_embedding_dim = {!r}; expected null or {}'.format(temb_dim, 4 * ch))
  size = _cfg(config, 'sample_size')
  if isinstance(size, (list, tuple)):
    if len(size) != 2 or size[0] != size[1]:
      raise CheckpointError('config sample_size = {!r}; expected a square size'.format(size))
    size = size[0]
  if not isinstance(size, int) or size % (2 ** (num_levels - 1)):
    raise CheckpointError('config sample_size = {!r}; expected an int divisible by {}'.format(
      size, 2 ** (num_levels - 1)))
  return UnetHParams(ch=ch, ch_mult=tuple(c // ch for c in chans), num_res_blocks=int(_cfg(config,
                     'layers_per_block')), attn_resolutions=tuple(size // 2 ** i for i in attn_levels),
                     resolution=size, in_ch=int(_cfg(config, 'in_channels')),
                     out_ch=int(_cfg(config, 'out_channels')))


def _attn_levels(hp):
  """The levels i whose resolution (resolution / 2^i) is in attn_resolutions."""
  sizes = [hp.resolution // 2 ** i for i in range(len(hp.ch_mult))]
  if any(r not in sizes for r in hp.attn_resolutions):
    raise CheckpointError('attn_resolutions {} are not among the level resolutions {} of a {}px U-Net with '
                          'ch_mult {}'.format(list(hp.attn_resolutions), sizes, hp.resolution, list(hp.ch_mult)))
  return [i for i, r in enumerate(sizes) if r in hp.attn_resolutions]


def diffusers_config_from_unet_hparams(hp, *, dropout=0.0):
  """UnetHParams -> a complete diffusers UNet2DModel config dict for the DDPM U-Net."""
  levels = _attn_levels(hp)
  down = ['AttnDownBlock2D' if i in levels else 'DownBlock2D' for i in range(len(hp.ch_mult))]
  up = ['AttnUpBlock2D' if i in levels else 'UpBlock2D' for i in reversed(range(len(hp.ch_mult)))]
  config = collections.OrderedDict([('_class_name', 'UNet2DModel'), ('_diffusers_version', DIFFUSERS_VERSION)])
  config.update(sorted(DIFFUSERS_DEFAULTS.items()))
  config.update({key: accepted[0] for key, accepted, _ in _DDPM_ARCH})
  config.update(
    sample_size=hp.resolution, in_channels=hp.in_ch, out_channels=hp.out_ch, attention_head_dim=None,
    block_out_channels=[hp.ch * m for m in hp.ch_mult], down_block_types=down, up_block_types=up,
    layers_per_block=hp.num_res_blocks, dropout=dropout)
  return config


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

  levels = _attn_levels(hp)
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
  from .tpu_utils import checkpoint_recovery  # needs TF too: imported with it

  if os.path.isdir(path):  # its newest readable checkpoint; unreadable newer ones are moved aside with a warning
    ckpt = checkpoint_recovery.newest_readable_checkpoint(path)
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
  live = [n for n in values if n.startswith(p) and '/ExponentialMovingAverage' not in n and not
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
