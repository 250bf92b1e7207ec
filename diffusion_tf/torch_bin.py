"""PyTorch .bin weight files (torch.save's zip format) read with numpy alone, by an unpickler that runs no code from
the file."""

import collections
import pickle
import zipfile

import numpy as np

from .errors import CheckpointError
from .safetensors_io import bfloat16_bits_to_float32

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
