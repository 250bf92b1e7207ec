"""safetensors files read and written with numpy alone (no PyTorch, no safetensors package)."""

import collections
import json
import os

import numpy as np

from .errors import CheckpointError

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
