"""Checkpoint interop with diffusers (diffusion_tf/checkpoints.py, scripts/convert_diffusers_checkpoint.py).

The fixture tests/fixtures/diffusers_tiny was made by tests/fixtures/make_diffusers_fixture.py with the real
diffusers/PyTorch: a tiny random UNet2DModel with the DDPM architecture, its output on fixed inputs, and a
torch.save'd .bin.
"""

import collections
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from diffusion_tf import checkpoints as C
from diffusion_tf.models import unet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, 'tests', 'fixtures')
TINY = os.path.join(DATA, 'diffusers_tiny')
SCRIPT = os.path.join(ROOT, 'scripts', 'convert_diffusers_checkpoint.py')
PEER_PYTHON = os.path.join(ROOT, '.venv-peer', 'bin', 'python')

CIFAR10_HP = C.UnetHParams(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), resolution=32,
                           in_ch=3, out_ch=3)
HP_256 = C.UnetHParams(ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,),
                       resolution=256, in_ch=3, out_ch=3)

# The config.json of google/ddpm-cifar10-32 as published (diffusers 0.1-era: the keys added later are absent and
# take diffusers' defaults).
HUB_CIFAR10_CONFIG = {
  '_class_name': 'UNet2DModel', '_diffusers_version': '0.1.1', 'act_fn': 'silu', 'attention_head_dim': None,
  'block_out_channels': [128, 256, 256, 256], 'center_input_sample': False,
  'down_block_types': ['DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D', 'DownBlock2D'], 'downsample_padding': 0,
  'flip_sin_to_cos': False, 'freq_shift': 1, 'in_channels': 3, 'layers_per_block': 2, 'mid_block_scale_factor': 1,
  'norm_eps': 1e-06, 'norm_num_groups': 32, 'out_channels': 3, 'sample_size': 32, 'time_embedding_type': 'positional',
  'up_block_types': ['UpBlock2D', 'UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'],
}


def read_reference(name):
  """tests/fixtures/unet_*_variables.txt -> OrderedDict name -> shape (the original release's variables)."""
  out = collections.OrderedDict()
  with open(os.path.join(DATA, name)) as f:
    for line in f:
      if line.startswith('#') or not line.strip():
        continue
      var, shape = line.split(' ', 1)
      out[var] = tuple(json.loads(shape))
  return out


@pytest.fixture(scope='module')
def tiny():
  """(config, hparams, state dict, io) of the diffusers fixture."""
  config, hp, state = C.read_diffusers_dir(TINY)
  io = dict(np.load(os.path.join(TINY, 'io.npz')))
  return config, hp, state, io


@pytest.fixture(scope='module')
def tiny_ckpt(tiny, tmp_path_factory):
  """The fixture converted to a TF checkpoint directory (live weights + EMA shadows, global_step 1234)."""
  _, hp, state, _ = tiny
  path = str(tmp_path_factory.mktemp('ckpt') / 'tiny')
  prefix = C.write_tf_checkpoint(path, C.diffusers_to_tf(state, hp), global_step=1234)
  return path, prefix


# ---------------------------------------------------------------------------------------------------------------------
# safetensors

def test_safetensors_round_trip_keeps_names_dtypes_values(tmp_path):
  rng = np.random.RandomState(0)
  tensors = collections.OrderedDict([
    ('b.f32', rng.randn(3, 4).astype(np.float32)), ('a.f64', rng.randn(2).astype(np.float64)),
    ('f16', rng.randn(5, 1, 2).astype(np.float16)), ('i64', np.arange(-4, 4, dtype=np.int64)),
    ('i32', np.arange(6, dtype=np.int32).reshape(2, 3)), ('u8', np.arange(250, 256, dtype=np.uint8)),
    ('i8', np.arange(-3, 3, dtype=np.int8)), ('bool', np.array([True, False])), ('scalar', np.float32(2.5)),
    ('empty', np.zeros((0, 3), np.float32)), ('fortran', np.asfortranarray(rng.randn(3, 5).astype(np.float32))),
    ('big_endian', np.arange(4, dtype='>i4')),
  ])
  path = str(tmp_path / 'x.safetensors')
  C.write_safetensors(path, tensors, metadata={'format': 'pt'})
  back, meta = C.read_safetensors(path)
  assert meta == {'format': 'pt'}
  assert list(back) == list(tensors)
  for k, v in tensors.items():
    assert back[k].dtype == np.asarray(v).dtype.newbyteorder('='), k
    assert back[k].shape == np.shape(v), k
    np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_safetensors_layout_is_the_documented_format(tmp_path):
  """Parse our file by the spec independently: u64 LE header length, JSON header, data aligned to 8 bytes."""
  path = str(tmp_path / 'x.safetensors')
  a, b = np.arange(3, dtype=np.float32), np.array([[1, 2]], dtype=np.int64)
  C.write_safetensors(path, collections.OrderedDict([('a', a), ('b', b)]))
  raw = open(path, 'rb').read()
  n = int.from_bytes(raw[:8], 'little')
  assert (8 + n) % 8 == 0
  header = json.loads(raw[8:8 + n].decode())
  assert header['a'] == {'dtype': 'F32', 'shape': [3], 'data_offsets': [0, 12]}
  assert header['b'] == {'dtype': 'I64', 'shape': [1, 2], 'data_offsets': [12, 28]}
  assert raw[8 + n:] == a.astype('<f4').tobytes() + b.astype('<i8').tobytes()


def test_safetensors_reads_bfloat16_as_exact_float32(tmp_path):
  values = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)  # exactly representable in bfloat16
  bits = (values.view(np.uint32) >> 16).astype('<u2')
  header = json.dumps({'x': {'dtype': 'BF16', 'shape': [4], 'data_offsets': [0, 8]}}).encode()
  path = str(tmp_path / 'bf16.safetensors')
  with open(path, 'wb') as f:
    f.write(len(header).to_bytes(8, 'little') + header + bits.tobytes())
  back, _ = C.read_safetensors(path)
  assert back['x'].dtype == np.float32
  np.testing.assert_array_equal(back['x'], values)


def test_safetensors_reader_reads_the_reference_writer(tiny):
  """The fixture's weights file was written by the safetensors library itself (float16)."""
  _, _, state, _ = tiny
  assert state['conv_in.weight'].dtype == np.float16 and state['conv_in.weight'].shape == (32, 3, 3, 3)
  assert len(state) == 144


@pytest.mark.parametrize('corrupt', ['truncated', 'bad_offsets', 'bad_json'])
def test_safetensors_rejects_corrupt_files(tmp_path, corrupt):
  path = str(tmp_path / 'x.safetensors')
  C.write_safetensors(path, {'a': np.arange(4, dtype=np.float32)})
  raw = open(path, 'rb').read()
  n = int.from_bytes(raw[:8], 'little')
  if corrupt == 'truncated':
    raw = raw[:-4]
  elif corrupt == 'bad_offsets':
    raw = raw.replace(b'[0,16]', b'[0,12]')
  else:
    raw = raw[:8] + b'{' * n + raw[8 + n:]
  open(path, 'wb').write(raw)
  with pytest.raises(C.CheckpointError, match='x.safetensors'):
    C.read_safetensors(path)


# ---------------------------------------------------------------------------------------------------------------------
# torch .bin (restricted unpickler)

def test_torch_bin_reader_matches_torch(tmp_path):
  """tensors.bin was written by torch.save (several dtypes, a transposed view, two views of one storage)."""
  got = C.read_torch_bin(os.path.join(TINY, 'tensors.bin'))
  want = np.load(os.path.join(TINY, 'tensors_expected.npz'))
  assert sorted(got) == sorted(want.files)
  for k in want.files:
    assert got[k].dtype == want[k].dtype, k
    assert got[k].shape == want[k].shape, k
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _fake_torch_modules(monkeypatch):
  """Stand-ins named like torch's pickled globals, so that the tests can write torch-format pickles without torch.

  Returns ({numpy dtype: storage class}, rebuild function)."""
  torch_mod, utils_mod = types.ModuleType('torch'), types.ModuleType('torch._utils')
  storages = {}
  for name, dtype in [('FloatStorage', np.float32), ('HalfStorage', np.float16)]:
    cls = type(name, (object,), {})
    cls.__module__, cls.__qualname__ = 'torch', name
    setattr(torch_mod, name, cls)
    storages[np.dtype(dtype)] = cls

  def _rebuild_tensor_v2(*args):
    raise AssertionError('never called when pickling')

  _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = 'torch._utils', '_rebuild_tensor_v2'
  torch_mod._utils, utils_mod._rebuild_tensor_v2 = utils_mod, _rebuild_tensor_v2
  monkeypatch.setitem(sys.modules, 'torch', torch_mod)
  monkeypatch.setitem(sys.modules, 'torch._utils', utils_mod)
  return storages, _rebuild_tensor_v2


class _Tensor(object):
  """Pickles like torch's tensor: _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""

  def __init__(self, key, offset, size, stride, rebuild):
    self.args, self.rebuild = (('storage', key), offset, size, stride, False, collections.OrderedDict()), rebuild

  def __reduce__(self):
    return self.rebuild, self.args


def _write_torch_zip(path, obj, storages, storage_classes):
  """torch.save's zip layout: archive/data.pkl (protocol 2, persistent ids for storages), archive/data/<key>."""
  class P(pickle.Pickler):
    def persistent_id(self, o):
      if isinstance(o, tuple) and len(o) == 2 and o[0] == 'storage':
        arr = storages[o[1]]
        return ('storage', storage_classes[arr.dtype], o[1], 'cpu', arr.size)
      return None

  buf = io.BytesIO()
  P(buf, protocol=2).dump(obj)
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('archive/data.pkl', buf.getvalue())
    zf.writestr('archive/byteorder', 'little')
    for key, arr in storages.items():
      zf.writestr('archive/data/' + key, arr.astype(arr.dtype.newbyteorder('<')).tobytes())


def test_torch_bin_reader_refuses_out_of_bounds_strides(tmp_path, monkeypatch):
  classes, rebuild = _fake_torch_modules(monkeypatch)
  path = str(tmp_path / 'oob.bin')
  storages = {'0': np.arange(6, dtype=np.float32)}
  _write_torch_zip(path, {'ok': _Tensor('0', 1, (2, 2), (2, 1), rebuild)}, storages, classes)
  np.testing.assert_array_equal(C.read_torch_bin(path)['ok'], [[1, 2], [3, 4]])
  _write_torch_zip(path, {'bad': _Tensor('0', 1, (2, 4), (4, 1), rebuild)}, storages, classes)
  with pytest.raises(C.CheckpointError, match='past its storage'):
    C.read_torch_bin(path)


def test_bin_model_directory_with_legacy_names_converts_like_safetensors(tiny, tmp_path, monkeypatch):
  """The published google/ddpm-* directories hold diffusion_pytorch_model.bin with the old attention names
  (query/key/value/proj_attn): write the tiny model that way and check it converts to the same TF weights."""
  _, hp, state, _ = tiny
  classes, rebuild = _fake_torch_modules(monkeypatch)
  storages, obj = {}, collections.OrderedDict()
  for i, (name, arr) in enumerate(state.items()):
    storages[str(i)] = arr.ravel()
    strides = [int(np.prod(arr.shape[d + 1:])) for d in range(arr.ndim)]
    legacy = name.replace('.to_q.', '.query.').replace('.to_k.', '.key.').replace('.to_v.', '.value.').replace(
      '.to_out.0.', '.proj_attn.')
    obj[legacy] = _Tensor(str(i), 0, arr.shape, strides, rebuild)
  assert any('.proj_attn.' in k for k in obj)
  d = tmp_path / 'bin_model'
  d.mkdir()
  (d / 'config.json').write_bytes(open(os.path.join(TINY, 'config.json'), 'rb').read())
  _write_torch_zip(str(d / C.BIN_NAME), obj, storages, classes)
  _, hp2, state2 = C.read_diffusers_dir(str(d))
  want, got = C.diffusers_to_tf(state, hp), C.diffusers_to_tf(state2, hp2)
  assert hp2 == hp and list(got) == list(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


class _Evil(object):
  def __init__(self, target):
    self.target = target

  def __reduce__(self):
    return os.remove, (self.target,)


def test_torch_bin_reader_runs_no_code_from_the_file(tmp_path):
  victim = tmp_path / 'victim.txt'
  victim.write_text('still here')
  path = str(tmp_path / 'evil.bin')
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('archive/data.pkl', pickle.dumps({'w': _Evil(str(victim))}, protocol=2))
  with pytest.raises(C.CheckpointError, match='refusing to load'):
    C.read_torch_bin(path)
  assert victim.read_text() == 'still here'


def test_torch_bin_reader_rejects_non_zip(tmp_path):
  path = tmp_path / 'legacy.bin'
  path.write_bytes(b'\x80\x02legacy torch format')
  with pytest.raises(C.CheckpointError, match='legacy'):
    C.read_torch_bin(str(path))


# ---------------------------------------------------------------------------------------------------------------------
# Mapping: names and shapes

@pytest.mark.parametrize('hp,ref', [(CIFAR10_HP, 'unet_cifar10_variables.txt'), (HP_256, 'unet_256_variables.txt')])
def test_mapping_covers_exactly_the_reference_variables(hp, ref):
  want = read_reference(ref)
  specs = C.unet_param_specs(hp)
  assert collections.OrderedDict(('model/' + s.tf_name, s.tf_shape) for s in specs) == want
  assert len({s.diffusers_name for s in specs}) == len(specs)
  # Inferring the hyper-parameters back from the shapes alone.
  assert C.unet_hparams_from_tf(want, resolution=hp.resolution) == hp


def test_cifar10_mapping_both_ways_matches_reference_and_hub_config():
  """diffusers -> TF of a state dict with google/ddpm-cifar10-32's config and its (legacy) attention names gives
  exactly the reference variables; TF -> diffusers of the reference variables gives back every key."""
  want = read_reference('unet_cifar10_variables.txt')
  hp = C.unet_hparams_from_diffusers_config(HUB_CIFAR10_CONFIG)
  assert hp == CIFAR10_HP
  # A diffusers state dict with the shapes of the PyTorch layers (tiny views, no memory), old attention names.
  state = collections.OrderedDict()
  for s in C.unet_param_specs(hp):
    shape = C.from_tf_layout(np.empty(s.tf_shape, np.uint8), s.layout).shape
    name = s.diffusers_name.replace('.to_q.', '.query.').replace('.to_k.', '.key.').replace(
      '.to_v.', '.value.').replace('.to_out.0.', '.proj_attn.')
    state[name] = np.broadcast_to(np.float32(0), shape)
  assert sum(1 for k in state if '.proj_attn.' in k) == (2 + 3 + 1) * 2  # attn in down_1, up_1, mid; W and b
  arrays = C.diffusers_to_tf(state, hp)
  assert collections.OrderedDict((k, v.shape) for k, v in arrays.items()) == want
  back = C.tf_to_diffusers(arrays, hp)
  assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in C.canonical_diffusers_names(state).items()}
  # The exported config describes the same architecture as the hub's.
  config = C.diffusers_config_from_unet_hparams(hp)
  for key, value in HUB_CIFAR10_CONFIG.items():
    if not key.startswith('_'):
      assert config[key] == value, key


def test_256_hub_config_maps_to_the_256_model():
  config = dict(HUB_CIFAR10_CONFIG, sample_size=256, block_out_channels=[128, 128, 256, 256, 512, 512],
                down_block_types=['DownBlock2D'] * 4 + ['AttnDownBlock2D', 'DownBlock2D'],
                up_block_types=['UpBlock2D', 'AttnUpBlock2D'] + ['UpBlock2D'] * 4)
  assert C.unet_hparams_from_diffusers_config(config) == HP_256


def test_layout_conversions_match_pytorch_semantics():
  """conv: y[o] = sum_{i,h,w} W_pt[o,i,h,w] x[i,h,w] = sum W_tf[h,w,i,o] x[i,h,w]; linear: W_pt @ x = x @ W_tf."""
  rng = np.random.RandomState(1)
  w_pt, x = rng.randn(5, 4, 3, 3), rng.randn(4, 3, 3)
  w_tf = C.to_tf_layout(w_pt, 'conv')
  np.testing.assert_allclose(np.einsum('oihw,ihw->o', w_pt, x), np.einsum('hwio,ihw->o', w_tf, x))
  lin, v = rng.randn(6, 4), rng.randn(4)
  np.testing.assert_allclose(lin @ v, v @ C.to_tf_layout(lin, 'linear'))
  one = rng.randn(6, 4, 1, 1)
  np.testing.assert_allclose(one[:, :, 0, 0] @ v, v @ C.to_tf_layout(one, 'conv1x1'))
  for arr, layout in [(w_pt, 'conv'), (lin, 'linear'), (one, 'conv1x1')]:
    np.testing.assert_array_equal(C.from_tf_layout(C.to_tf_layout(arr, layout), layout), arr)


# ---------------------------------------------------------------------------------------------------------------------
# End to end on the tiny diffusers model

def _run_unet(ckpt_path, hp, x_nhwc, t):
  """Restores our unet.model from ckpt_path, once from the live weights and once from the EMA shadows (the way
  evaluation code restores them: each variable from `<name>/ExponentialMovingAverage`); returns both outputs."""
  with tf.Graph().as_default():
    x_ph = tf.placeholder(tf.float32, x_nhwc.shape)
    t_ph = tf.placeholder(tf.int32, t.shape)
    out = unet.model(x_ph, t=t_ph, y=None, name='model', num_classes=1, ch=hp.ch, out_ch=hp.out_ch,
                     ch_mult=hp.ch_mult, num_res_blocks=hp.num_res_blocks, attn_resolutions=hp.attn_resolutions,
                     dropout=0.)
    model_vars = tf.trainable_variables()
    live = tf.train.Saver(model_vars)
    ema = tf.train.Saver({v.op.name + '/ExponentialMovingAverage': v for v in model_vars})
    outs = []
    with tf.Session() as sess:
      for saver in [live, ema]:
        sess.run(tf.variables_initializer(model_vars))
        saver.restore(sess, ckpt_path)
        outs.append(sess.run(out, {x_ph: x_nhwc, t_ph: t}))
  return outs


def test_converted_tiny_model_matches_diffusers_output(tiny, tiny_ckpt):
  _, hp, _, io = tiny
  assert hp == C.UnetHParams(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16,
                             in_ch=3, out_ch=3)
  x = np.transpose(io['x'], (0, 2, 3, 1))  # NCHW -> NHWC
  want = np.transpose(io['out'], (0, 2, 3, 1))
  live, ema = _run_unet(tiny_ckpt[1], hp, x, io['t'].astype(np.int32))
  assert np.abs(want).max() > 0.5  # a real signal, not zeros
  np.testing.assert_allclose(live, want, atol=1e-4, rtol=0)
  np.testing.assert_allclose(ema, want, atol=1e-4, rtol=0)


def test_converted_checkpoint_has_ema_shadows_and_global_step(tiny, tiny_ckpt):
  _, hp, state, _ = tiny
  values = C.read_tf_checkpoint(tiny_ckpt[0])
  live = C.diffusers_to_tf(state, hp)
  assert set(values) == set(live) | {k + '/ExponentialMovingAverage' for k in live} | {'global_step'}
  assert values['global_step'] == 1234 and values['global_step'].dtype == np.int64
  for k, v in live.items():
    assert values[k].dtype == np.float32
    np.testing.assert_array_equal(values[k], v)
    np.testing.assert_array_equal(values[k + '/ExponentialMovingAverage'], v)
  with open(os.path.join(tiny_ckpt[0], 'checkpoint')) as f:
    assert 'model_checkpoint_path: "model.ckpt-1234"' in f.read()  # relative: the directory can be moved


def test_round_trip_tf_to_diffusers_to_tf_is_exact(tiny, tiny_ckpt, tmp_path):
  _, hp, _, _ = tiny
  values = C.read_tf_checkpoint(tiny_ckpt[0])
  # Make the EMA shadows differ from the live weights, to see that the right ones are exported.
  ema_values = collections.OrderedDict((k, v + 1 if k.endswith('/ExponentialMovingAverage') else v)
                                       for k, v in values.items())
  for ema in [True, False]:
    arrays = C.unet_weights_from_tf(ema_values, ema=ema)
    out = str(tmp_path / 'export_{}'.format(ema))
    C.write_diffusers_dir(out, C.unet_hparams_from_tf(arrays, resolution=16), C.tf_to_diffusers(arrays, hp))
    _, hp2, state2 = C.read_diffusers_dir(out)
    assert hp2 == hp
    back = C.diffusers_to_tf(state2, hp2)
    assert set(back) == set(arrays)
    for k in arrays:
      np.testing.assert_array_equal(back[k], arrays[k], err_msg=k)
      np.testing.assert_array_equal(back[k], values[k] + (1 if ema else 0), err_msg=k)


def _load_script():
  spec = importlib.util.spec_from_file_location('convert_diffusers_checkpoint', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_cli_to_tf_and_to_diffusers(tmp_path, capsys):
  """Both commands through fire's argument parsing (in this process, to import TF once)."""
  script = _load_script()
  ck, exp = str(tmp_path / 'ck'), str(tmp_path / 'exp')
  script.main(['to_tf', '--src', TINY, '--out', ck, '--global_step', '7'])
  assert 'ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,)' in capsys.readouterr().out
  assert json.load(open(os.path.join(ck, 'unet_hparams.json')))['attn_resolutions'] == [8]
  assert C.read_tf_checkpoint(ck)['global_step'] == 7
  script.main(['to_diffusers', '--ckpt', ck, '--out', exp, '--resolution', '16'])
  assert sorted(os.listdir(exp)) == ['config.json', 'diffusion_pytorch_model.safetensors']
  assert json.load(open(os.path.join(exp, 'config.json'))) == json.load(open(os.path.join(TINY, 'config.json')))
  with pytest.raises(SystemExit) as e:
    script.main(['to_diffusers', '--ckpt', ck, '--out', str(tmp_path / 'exp2'), '--resolution', '15'])
  assert e.value.code == 1
  assert 'error: resolution = 15; expected the image size' in capsys.readouterr().err


def test_exported_directory_loads_in_diffusers(tiny, tiny_ckpt, tmp_path):
  """Our exporter's output, loaded by the real diffusers, reproduces the fixture output."""
  if not os.path.exists(PEER_PYTHON):
    # `make test` sets DIFFUSION_TF_REQUIRE_PEER=1 after building .venv-peer: there a missing venv is a failure
    message = 'needs the PyTorch/diffusers peer venv .venv-peer: make install-peer'
    if os.environ.get('DIFFUSION_TF_REQUIRE_PEER') == '1':
      pytest.fail(message + ' (DIFFUSION_TF_REQUIRE_PEER=1)')
    pytest.skip(message)
  _, hp, _, _ = tiny
  out = str(tmp_path / 'export')
  arrays = C.unet_weights_from_tf(C.read_tf_checkpoint(tiny_ckpt[0]), ema=True)
  C.write_diffusers_dir(out, hp, C.tf_to_diffusers(arrays, hp))
  code = ('import numpy as np, torch, diffusers, sys; io = np.load(sys.argv[2]); '
          'm = diffusers.UNet2DModel.from_pretrained(sys.argv[1]).eval(); '
          'out = m(torch.from_numpy(io["x"]), torch.from_numpy(io["t"])).sample.detach().numpy(); '
          'print(float(np.abs(out - io["out"]).max()))')
  r = subprocess.run([PEER_PYTHON, '-c', code, out, os.path.join(TINY, 'io.npz')], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, universal_newlines=True)
  assert r.returncode == 0, r.stderr
  assert float(r.stdout.strip().splitlines()[-1]) < 1e-5


# ---------------------------------------------------------------------------------------------------------------------
# Bad inputs: one clear error

def _copy_tiny(tmp_path, config_update=None, drop=()):
  d = tmp_path / 'model'
  d.mkdir()
  config = json.load(open(os.path.join(TINY, 'config.json')))
  config.update(config_update or {})
  for k in drop:
    config.pop(k)
  (d / 'config.json').write_text(json.dumps(config))
  (d / C.SAFETENSORS_NAME).write_bytes(open(os.path.join(TINY, C.SAFETENSORS_NAME), 'rb').read())
  return str(d)


@pytest.mark.parametrize('update,drop,match', [
  ({'_class_name': 'UNet2DConditionModel'}, (), '_class_name'),
  ({'flip_sin_to_cos': True}, (), 'flip_sin_to_cos'),
  ({}, ('flip_sin_to_cos',), 'flip_sin_to_cos = True'),  # a missing key takes diffusers' default
  ({'attention_head_dim': 8}, (), 'attention_head_dim = 8'),
  ({'norm_num_groups': 16}, (), 'norm_num_groups'),
  ({'up_block_types': ['UpBlock2D', 'AttnUpBlock2D']}, (), 'level 0'),
  ({'block_out_channels': [32, 48]}, (), 'block_out_channels'),
])
def test_unknown_architecture_is_rejected(tmp_path, update, drop, match):
  with pytest.raises(C.CheckpointError, match=match):
    C.read_diffusers_dir(_copy_tiny(tmp_path, update, drop))


def test_shape_mismatch_and_missing_keys_are_rejected(tiny):
  _, hp, state, _ = tiny
  bad = collections.OrderedDict(state)
  bad['conv_out.weight'] = np.zeros((3, 64, 3, 3), np.float32)
  with pytest.raises(C.CheckpointError, match=r'conv_out.weight has shape \[3, 64, 3, 3\]; expected \[3, 32, 3, 3\]'):
    C.diffusers_to_tf(bad, hp)
  del bad['conv_out.weight']
  with pytest.raises(C.CheckpointError, match="1 missing .*conv_out.weight"):
    C.diffusers_to_tf(bad, hp)
  with pytest.raises(C.CheckpointError, match='TF variable model/conv_in/W has shape'):
    arrays = C.diffusers_to_tf(state, hp)
    arrays['model/conv_in/W'] = arrays['model/conv_in/W'][:, :, :, :16]
    C.tf_to_diffusers(arrays, hp)


def test_git_lfs_pointer_is_reported(tmp_path):
  d = _copy_tiny(tmp_path)
  with open(os.path.join(d, C.SAFETENSORS_NAME), 'w') as f:
    f.write('version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 1419398\n')
  with pytest.raises(C.CheckpointError, match='git-lfs pointer'):
    C.read_diffusers_dir(d)


def test_cli_errors_are_one_line_and_nonzero(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  cases = [
    (['to_tf', '--src', str(empty), '--out', str(tmp_path / 'o1')], 'no config.json'),
    (['to_tf', '--src', _copy_tiny(tmp_path, {'norm_eps': 1e-5}), '--out', str(tmp_path / 'o2')], 'norm_eps'),
    (['to_tf', '--src', TINY, '--out', TINY], 'already exists'),
  ]
  for args, match in cases:
    r = subprocess.run([sys.executable, SCRIPT] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.startswith('error:')]
    assert len(lines) == 1 and match in lines[0], r.stderr
    assert 'Traceback' not in r.stderr
  assert not os.path.exists(str(tmp_path / 'o1')) and not os.path.exists(str(tmp_path / 'o2'))
