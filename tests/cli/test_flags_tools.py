"""The flags of evaluate_samples.py, convert_diffusers_checkpoint.py, prepare_lsun.py and merge_samples.py change
what runs the way their documentation says (demo.py's flags are checked by tests/cli/test_demo.py).

Every command runs through its command line (fire, in this process) and its output is compared with an
independent computation written here, so that a flag whose value were dropped after validation fails a test:
- evaluate_samples.py: the stand-in Inception graph (tests/helpers_inception.py) is evaluated in numpy, with TF's
  v1 bilinear resize to 299 x 299 written out as interpolation matrices, and IS = exp(mean KL(p(y|x) || p(y))) per
  split (mean and std over splits) and FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) are written out with
  scipy. Sample counts are multiples of the split counts, so no split-boundary convention is involved.
- convert_diffusers_checkpoint.py: safetensors files are parsed here by the file format (8-byte header size, JSON
  header, raw little-endian data), TF checkpoints read with tf.train.load_checkpoint; tensors are compared with the
  source arrays under the documented name mapping (unet_layout.unet_param_specs, checked against the original
  release's variable list in test_checkpoints.py) and the PyTorch -> TF layouts written out here.
- prepare_lsun.py: images written here; each record is decoded here from its tf.train.Example and compared with a
  centre crop + PIL Lanczos resize computed here, in the order predicted from sorted paths and
  RandomState(seed).shuffle (StyleGAN2's exporter's permutation).
- merge_samples.py: shards cut here from a known dump by the documented rule (batch b goes to shard b % n).
"""

import glob
import hashlib
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from support import inception as helpers_inception
from support.data import block_network
from support.metrics import frechet_distance as _fid
from support.metrics import gaussian as _gaussian
from support.metrics import inception_score as _inception_score
from support.metrics import split_inception_score as _split_inception_score
from support.scripts import REPO, load_npz, load_script, run_main

from diffusion_tf import inception
from diffusion_tf.cli import runner as cli
from diffusion_tf.data import catalog as datasets
from diffusion_tf.evaluation import digits_classifier, protocol, reference_stats as fid_stats
from diffusion_tf.generate import shards as sample_shards
from diffusion_tf.unet_layout import UnetHParams, unet_param_specs

ROOT = REPO
TINY = os.path.join(ROOT, 'tests', 'fixtures', 'diffusers_tiny')  # a real diffusers UNet2DModel (see tests/fixtures)


@pytest.fixture(autouse=True)
def offline_private_cache(monkeypatch, tmp_path):
  """No network; the cache directory (Inception graph, FID statistics) is the test's own and starts empty."""
  block_network(monkeypatch)
  monkeypatch.setenv(inception.CACHE_ENV_VAR, str(tmp_path / 'cache'))
  monkeypatch.delenv(inception.GRAPH_ENV_VAR, raising=False)


def _run_cli(capsys, command, argv, name):
  """command's command line in this process; fails the test on a non-zero exit. Returns stdout."""
  try:
    cli.run_cli(command, argv=[str(a) for a in argv], name=name)
  except SystemExit as e:
    pytest.fail('{} {} exited with {}: {}'.format(name, argv, e.code, capsys.readouterr().err))
  return capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# evaluate_samples.py

POOL_DIM = 16  # pool_3 features of the stand-in: full-rank covariances from 20-30 images, and a cheap FID


@pytest.fixture(scope='module')
def graphs(tmp_path_factory):
  """Two different stand-in graphs: {seed: (tarball path, sha256 of its .pb)}."""
  out = {}
  for seed in (1, 2):
    d = tmp_path_factory.mktemp('graph{}'.format(seed))
    tar = helpers_inception.make_standin_inception(d, seed=seed, pool_dim=POOL_DIM)
    with open(os.path.join(str(d), helpers_inception.PB_NAME), 'rb') as f:
      out[seed] = (tar, hashlib.sha256(f.read()).hexdigest())
  return out


def _images(n, seed, low=0, high=256, size=8):
  return np.random.RandomState(seed).randint(low, high, size=[n, size, size, 3]).astype(np.uint8)


def _v1_bilinear_matrix(n_in, n_out):
  """[n_out, n_in]: TF's v1 resize_bilinear (no aligned corners, no half-pixel centres) along one axis. Output i
  reads the input at x = i n_in / n_out, between pixels floor(x) and floor(x) + 1 (clamped to the last pixel)."""
  x = np.arange(n_out) * (n_in / n_out)
  lo = np.floor(x).astype(int)
  hi = np.minimum(lo + 1, n_in - 1)
  m = np.zeros([n_out, n_in])
  np.add.at(m, (np.arange(n_out), lo), 1. - (x - lo))
  np.add.at(m, (np.arange(n_out), hi), x - lo)
  return m


def _standin_features(images, seed):
  """(pool_3 [N, D], logits [N, 1008]) of uint8 images under stand-in graph `seed`, all in numpy: pixels resized
  to 299 x 299, mapped to (x - 128) / 128 (TF-GAN's preprocessing), then the stand-in network."""
  _, H, W, _ = images.shape
  ry, rx = _v1_bilinear_matrix(H, 299), _v1_bilinear_matrix(W, 299)
  pools, logits = [], []
  for start in range(0, len(images), 8):
    x = np.einsum('yh,nhwc->nywc', ry, images[start:start + 8].astype(np.float64))
    x = np.einsum('nywc,xw->nyxc', x, rx)
    pool, logit = helpers_inception.standin_reference((x - 128.) / 128., seed=seed, pool_dim=POOL_DIM)
    pools.append(pool)
    logits.append(logit)
  return np.concatenate(pools), np.concatenate(logits)










def _save_stats(path, pool):
  """A statistics file as other FID tools write it: mu and sigma only."""
  mu, sigma = _gaussian(pool)
  np.savez(path, mu=mu, sigma=sigma)
  return path


def _evaluate(capsys, out_json, *flags):
  """evaluate_samples.py with flags and --out_json=out_json; returns the JSON it wrote."""
  _run_cli(capsys, load_script('evaluate_samples').main, list(flags) + ['--out_json={}'.format(out_json)],
           'evaluate_samples.py')
  with open(str(out_json)) as f:
    return json.load(f)


def _assert_distinct(*values):
  """The numbers a test tells apart differ by much more than its tolerance (else a swapped flag could pass)."""
  values = sorted(values)
  for a, b in zip(values, values[1:]):
    assert b - a > 1e-2 * max(abs(a), abs(b)), values


def test_evaluate_npz_ref_stats_ref_images_and_graph_match_numpy(graphs, tmp_path, capsys):
  """--samples (.npz), --ref_stats, --ref_stats_test, --ref_images, --inception_graph, --out_json: the IS of 10
  splits of 3 and the three FIDs are numpy's on the features of the graph given; another graph gives its own
  numbers. Three references of different pixel ranges give FIDs far apart, so a reference swapped or dropped shows."""
  samples, ref_train, ref_test, ref_imgs = (_images(30, 10), _images(20, 11), _images(20, 12, high=160),
                                            _images(20, 13, low=96))
  np.savez(str(tmp_path / 'samples.npz'), samples)
  np.savez(str(tmp_path / 'ref_images.npz'), ref_imgs)
  pool, logits = _standin_features(samples, 1)
  ref_pools = {name: _standin_features(images, 1)[0]
               for name, images in [('train', ref_train), ('test', ref_test), ('images', ref_imgs)]}
  _save_stats(str(tmp_path / 'train_stats.npz'), ref_pools['train'])
  _save_stats(str(tmp_path / 'test_stats.npz'), ref_pools['test'])
  graph1, sha1 = graphs[1]

  out = _evaluate(capsys, tmp_path / 'metrics.json', '--samples={}'.format(tmp_path / 'samples.npz'),
                  '--ref_stats={}'.format(tmp_path / 'train_stats.npz'),
                  '--ref_stats_test={}'.format(tmp_path / 'test_stats.npz'),
                  '--ref_images={}'.format(tmp_path / 'ref_images.npz'), '--inception_graph={}'.format(graph1))
  is_mean, is_std = _split_inception_score(logits, 10)
  assert out['num_samples'] == 30 and out['image_shape'] == [8, 8, 3] and out['inception_score_num_splits'] == 10
  assert out['samples'] == str(tmp_path / 'samples.npz')
  assert out['inception_score_mean'] == pytest.approx(is_mean, rel=1e-4)
  assert out['inception_score_std'] == pytest.approx(is_std, rel=1e-3)
  assert out['inception_score_one_split'] == pytest.approx(_inception_score(logits), rel=1e-4)
  fids = {'fid_ref_stats': _fid(_gaussian(ref_pools['train']), _gaussian(pool)),
          'fid_ref_stats_test': _fid(_gaussian(ref_pools['test']), _gaussian(pool)),
          'fid_ref_images': _fid(_gaussian(ref_pools['images']), _gaussian(pool))}
  _assert_distinct(*fids.values())
  for key, value in fids.items():
    assert out[key] == pytest.approx(value, rel=1e-4), key
  assert out['ref_stats'] == {'path': str(tmp_path / 'train_stats.npz')}
  assert out['ref_stats_test'] == {'path': str(tmp_path / 'test_stats.npz')}
  assert out['ref_images']['path'] == str(tmp_path / 'ref_images.npz') and out['ref_images']['num_samples'] == 20
  assert out['inception_graph'] == {'path': graph1, 'sha256': sha1}

  graph2, sha2 = graphs[2]
  out2 = _evaluate(capsys, tmp_path / 'metrics2.json', '--samples={}'.format(tmp_path / 'samples.npz'),
                   '--ref_images={}'.format(tmp_path / 'ref_images.npz'), '--inception_graph={}'.format(graph2))
  pool2, logits2 = _standin_features(samples, 2)
  fid2 = _fid(_gaussian(_standin_features(ref_imgs, 2)[0]), _gaussian(pool2))
  _assert_distinct(fid2, fids['fid_ref_images'])
  assert out2['fid_ref_images'] == pytest.approx(fid2, rel=1e-4)
  assert out2['inception_score_mean'] == pytest.approx(_split_inception_score(logits2, 10)[0], rel=1e-4)
  assert out2['inception_graph'] == {'path': graph2, 'sha256': sha2}
  assert sorted(k for k in out2 if k.startswith('fid')) == ['fid_ref_images']


def test_evaluate_png_folder_num_samples_and_num_splits(graphs, tmp_path, capsys):
  """--samples (a PNG folder, read in name order), --num_samples (the first N), --num_splits (IS mean and std over
  that many splits): 24 PNGs whose name order differs from the order they were drawn in."""
  images = _images(24, 20)
  names = np.random.RandomState(21).permutation(24)  # image i is saved as <names[i]>.png
  os.makedirs(str(tmp_path / 'pngs'))
  for i, image in enumerate(images):
    Image.fromarray(image).save(str(tmp_path / 'pngs' / '{:03d}.png'.format(names[i])))
  in_name_order = images[np.argsort(names)]
  ref_pool = _standin_features(_images(20, 22), 1)[0]
  _save_stats(str(tmp_path / 'stats.npz'), ref_pool)
  graph = '--inception_graph={}'.format(graphs[1][0])

  out = _evaluate(capsys, tmp_path / 'first12.json', '--samples={}'.format(tmp_path / 'pngs'), '--num_samples=12',
                  '--num_splits=4', '--ref_stats={}'.format(tmp_path / 'stats.npz'), graph)
  pool12, logits12 = _standin_features(in_name_order[:12], 1)
  assert out['num_samples'] == 12 and out['inception_score_num_splits'] == 4
  mean4, std4 = _split_inception_score(logits12, 4)
  # what ignoring --num_samples (all 24) or reading the PNGs in drawing order would give
  _assert_distinct(mean4, _split_inception_score(_standin_features(in_name_order, 1)[1], 4)[0])
  other_order = _standin_features(images[:12], 1)
  assert out['inception_score_mean'] == pytest.approx(mean4, rel=1e-4)
  assert out['inception_score_std'] == pytest.approx(std4, rel=1e-3)
  assert out['inception_score_one_split'] == pytest.approx(_inception_score(logits12), rel=1e-4)
  fid12 = _fid(_gaussian(ref_pool), _gaussian(pool12))
  _assert_distinct(fid12, _fid(_gaussian(ref_pool), _gaussian(other_order[0])))
  assert out['fid_ref_stats'] == pytest.approx(fid12, rel=1e-4)

  out = _evaluate(capsys, tmp_path / 'all.json', '--samples={}'.format(tmp_path / 'pngs'), '--num_splits=3', graph)
  mean3, std3 = _split_inception_score(_standin_features(in_name_order, 1)[1], 3)
  assert out['num_samples'] == 24 and out['inception_score_num_splits'] == 3
  assert out['inception_score_mean'] == pytest.approx(mean3, rel=1e-4)
  assert out['inception_score_std'] == pytest.approx(std3, rel=1e-3)


@pytest.fixture
def graph_calls(monkeypatch):
  """The number of images fed to each Session.run that feeds images (the Inception graph's runs)."""
  calls = []
  real_run = tf.Session.run

  def run(self, fetches, feed_dict=None, *args, **kwargs):
    calls.extend(len(v) for v in (feed_dict or {}).values() if np.ndim(v) == 4)
    return real_run(self, fetches, feed_dict, *args, **kwargs)

  monkeypatch.setattr(tf.Session, 'run', run)
  return calls


def test_evaluate_batch_size_sets_the_images_per_graph_run(graphs, tmp_path, capsys, graph_calls):
  """--batch_size: the graph sees at most batch_size images per run, every image once. The numbers do not change
  (each image's features do not depend on its batch mates), and that is the point of checking them: a batch loop
  that dropped the last partial batch (2 and 6 images here) or fed one twice would change IS and FID."""
  samples, refs = _images(30, 30), _images(20, 31, low=64)
  np.savez(str(tmp_path / 'samples.npz'), samples)
  np.savez(str(tmp_path / 'refs.npz'), refs)
  pool, logits = _standin_features(samples, 1)
  fid = _fid(_gaussian(_standin_features(refs, 1)[0]), _gaussian(pool))
  is_mean, _ = _split_inception_score(logits, 10)
  for batch_size in (7, 100):  # 5 + 3 runs of at most 7 images, against one run per set
    del graph_calls[:]
    out = _evaluate(
      capsys, tmp_path / 'bs{}.json'.format(batch_size), '--samples={}'.format(tmp_path / 'samples.npz'),
      '--ref_images={}'.format(tmp_path / 'refs.npz'), '--stats_cache_dir={}'.format(tmp_path / str(batch_size)),
      '--batch_size={}'.format(batch_size), '--inception_graph={}'.format(graphs[1][0]))
    expected = [min(batch_size, n - start) for n in (30, 20) for start in range(0, n, batch_size)]
    assert graph_calls == expected, batch_size  # samples first, then the reference images
    assert out['inception_score_mean'] == pytest.approx(is_mean, rel=1e-4)
    assert out['fid_ref_images'] == pytest.approx(fid, rel=1e-4)


def test_evaluate_stats_cache_dir_writes_then_reuses_the_reference_statistics(graphs, tmp_path, capsys, graph_calls):
  """--stats_cache_dir: the statistics of --ref_images are written there (named by the file's and the graph's
  sha256), and a second run reads them instead of running the graph on the references: statistics tampered with
  in the cache give the FID numpy predicts for them; another cache directory computes them afresh."""
  samples, refs = _images(30, 40), _images(20, 41, low=64)
  np.savez(str(tmp_path / 'samples.npz'), samples)
  np.savez(str(tmp_path / 'refs.npz'), refs)
  graph, graph_sha = graphs[1]
  with open(str(tmp_path / 'refs.npz'), 'rb') as f:
    refs_sha = hashlib.sha256(f.read()).hexdigest()
  gen = _gaussian(_standin_features(samples, 1)[0])
  ref_mu, ref_sigma = _gaussian(_standin_features(refs, 1)[0])
  flags = ['--samples={}'.format(tmp_path / 'samples.npz'), '--ref_images={}'.format(tmp_path / 'refs.npz'),
           '--inception_graph={}'.format(graph)]

  out = _evaluate(capsys, tmp_path / 'first.json', '--stats_cache_dir={}'.format(tmp_path / 'stats'), *flags)
  cached, = glob.glob(str(tmp_path / 'stats' / '*.npz'))
  assert refs_sha[:12] in os.path.basename(cached) and graph_sha[:12] in os.path.basename(cached)
  assert out['ref_images']['cached_stats_path'] == cached
  assert not os.path.exists(str(tmp_path / 'cache' / 'fid_stats'))  # not the default directory
  with np.load(cached) as f:
    contents = {k: f[k] for k in f.files}
  np.testing.assert_allclose(contents['mu'], ref_mu, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(contents['sigma'], ref_sigma, rtol=1e-4, atol=1e-4)
  assert out['fid_ref_images'] == pytest.approx(_fid((ref_mu, ref_sigma), gen), rel=1e-4)

  shift = np.linspace(-2., 2., POOL_DIM)
  np.savez(cached, **dict(contents, mu=contents['mu'] + shift))
  del graph_calls[:]
  out = _evaluate(capsys, tmp_path / 'tampered.json', '--stats_cache_dir={}'.format(tmp_path / 'stats'), *flags)
  assert graph_calls == [30]  # the samples only
  tampered = _fid((contents['mu'] + shift, contents['sigma']), gen)
  _assert_distinct(tampered, _fid((ref_mu, ref_sigma), gen))
  assert out['fid_ref_images'] == pytest.approx(tampered, rel=1e-4)

  out = _evaluate(capsys, tmp_path / 'fresh.json', '--stats_cache_dir={}'.format(tmp_path / 'other'), *flags)
  assert out['fid_ref_images'] == pytest.approx(_fid((ref_mu, ref_sigma), gen), rel=1e-4)
  assert out['ref_images']['cached_stats_path'] == str(tmp_path / 'other' / os.path.basename(cached))


def test_evaluate_features_digits_gives_the_numbers_of_the_reproduce_protocol(tmp_path, capsys):
  """--features=digits: IS and FID with the offline digits classifier, the numbers protocol.measure (run_cifar.py
  reproduce --features=digits) gives for the same images and references; no Inception graph, no network. The
  samples are digits blurred by noise, so that the FID is far from 0 and a swapped reference would show."""
  digits = datasets.load_digits_images(8)
  noise = np.random.RandomState(0).randint(-60, 61, size=[40, 8, 8, 1])
  samples = np.clip(digits[datasets.DIGITS_NUM_TRAIN:][:40].astype(int) + noise, 0, 255).astype(np.uint8)
  refs = digits[:60]
  np.savez(str(tmp_path / 'samples.npz'), samples)
  np.savez(str(tmp_path / 'refs.npz'), refs)
  out = _evaluate(capsys, tmp_path / 'metrics.json', '--samples={}'.format(tmp_path / 'samples.npz'),
                  '--ref_images={}'.format(tmp_path / 'refs.npz'), '--features=digits', '--num_splits=4')

  classifier = digits_classifier.DigitsClassifier()
  ref_stats = fid_stats.compute_statistics([refs], classifier)
  want = protocol.measure(samples, classifier, {'ref_images': (ref_stats, 'refs.npz')}, num_splits=4)
  assert out['inception_score_mean'] == pytest.approx(want['inception_score'], rel=1e-6)
  assert out['inception_score_std'] == pytest.approx(want['inception_score_std'], rel=1e-6)
  assert out['fid_ref_images'] == pytest.approx(want['fid_ref_images'], rel=1e-6)
  assert out['fid_ref_images'] > 1e-2 * out['inception_score_mean']
  assert out['features'] == 'digits' and 'inception_graph' not in out
  assert out['feature_network'] == {'path': classifier.graph_path, 'sha256': classifier.graph_sha256}


@pytest.mark.parametrize('size, flags, expected', [
  (8, ['--features=digits', '--inception_graph=graph.tgz'],
   r'--inception_graph=graph.tgz with --features=digits; expected --inception_graph only with --features=inception'),
  (12, ['--features=digits'], r'images of 12x12 for --features=digits; expected square images whose side is a '
                              r'multiple of 8'),
  (8, ['--features=clip'], r"features='clip'"),
])
def test_evaluate_features_refuses_what_the_network_cannot_measure(tmp_path, capsys, size, flags, expected):
  np.savez(str(tmp_path / 'samples.npz'), _images(20, 0, size=size))
  with pytest.raises(SystemExit):
    cli.run_cli(load_script('evaluate_samples').main, argv=['--samples={}'.format(tmp_path / 'samples.npz')] + flags,
                name='evaluate_samples.py')
  err = capsys.readouterr().err
  assert re.search(expected, err) and err.count('\n') == 1, err


# ---------------------------------------------------------------------------------------------------------------
# convert_diffusers_checkpoint.py

# tests/fixtures/diffusers_tiny/config.json: block_out_channels [32, 64], layers_per_block 1, attention in the second
# down block (8 x 8 of a 16 x 16 image)
TINY_HP = UnetHParams(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16, in_ch=3,
                      out_ch=3)
_ST_DTYPES = {'F16': '<f2', 'F32': '<f4', 'F64': '<f8'}


def _read_safetensors(path):
  """name -> array by the safetensors format: u64 little-endian header size n, n bytes of JSON
  {name: {dtype, shape, data_offsets [begin, end)}} (and __metadata__), then the data, offsets counted from there."""
  with open(path, 'rb') as f:
    raw = f.read()
  n = int.from_bytes(raw[:8], 'little')
  header = json.loads(raw[8:8 + n].decode('utf-8'))
  header.pop('__metadata__', None)
  out = {}
  for name, entry in header.items():
    begin, end = entry['data_offsets']
    out[name] = np.frombuffer(raw[8 + n + begin:8 + n + end], _ST_DTYPES[entry['dtype']]).reshape(entry['shape'])
  return out


def _write_safetensors(path, tensors):
  """float32 tensors in the safetensors format (see _read_safetensors), data in name order."""
  header, data, offset = {}, [], 0
  for name in sorted(tensors):
    arr = np.ascontiguousarray(tensors[name], '<f4')
    header[name] = {'dtype': 'F32', 'shape': list(arr.shape), 'data_offsets': [offset, offset + arr.nbytes]}
    data.append(arr.tobytes())
    offset += arr.nbytes
  text = json.dumps(header).encode('utf-8')
  text += b' ' * (-len(text) % 8)
  with open(path, 'wb') as f:
    f.write(len(text).to_bytes(8, 'little') + text + b''.join(data))


def _pytorch_to_tf_layout(arr, layout):
  """conv OIHW -> HWIO; Linear [out, in] and 1x1 conv [out, in, 1, 1] -> [in, out]; vectors unchanged."""
  if layout == 'conv':
    return arr.transpose(2, 3, 1, 0)
  if layout in ('linear', 'conv1x1'):
    return arr.reshape(arr.shape[:2]).T
  return arr


def _expected_tf(state):
  """{our variable name (no prefix): float32 array in our layout} of a diffusers state dict."""
  return {s.tf_name: _pytorch_to_tf_layout(state[s.diffusers_name].astype(np.float32), s.layout)
          for s in unet_param_specs(TINY_HP)}


@pytest.fixture(scope='module')
def tiny_state():
  state = _read_safetensors(os.path.join(TINY, 'diffusion_pytorch_model.safetensors'))
  assert len(state) == 144 and state['conv_in.weight'].dtype == np.float16
  return state


def _read_checkpoint(out_dir):
  """(checkpoint prefix, {name: array}) of the newest checkpoint in out_dir."""
  prefix = tf.train.latest_checkpoint(str(out_dir))
  reader = tf.train.load_checkpoint(prefix)
  return prefix, {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def _converter(capsys, *argv):
  """convert_diffusers_checkpoint.py argv; returns stdout."""
  script = load_script('convert_diffusers_checkpoint')
  try:
    script.main([str(a) for a in argv])
  except SystemExit as e:
    pytest.fail('convert_diffusers_checkpoint.py {} exited with {}: {}'.format(argv, e.code, capsys.readouterr().err))
  return capsys.readouterr().out


def test_to_tf_global_step_with_ema_and_prefix(tiny_state, tmp_path, capsys):
  """--out, --global_step (the stored int64 step and the checkpoint's name), --with_ema (the shadows
  <name>/ExponentialMovingAverage equal the weights; without it there are none), --prefix (the top scope)."""
  expected = _expected_tf(tiny_state)
  _converter(capsys, 'to_tf', '--src', TINY, '--out', tmp_path / 'a', '--global_step', 42)
  prefix, values = _read_checkpoint(tmp_path / 'a')
  assert prefix == str(tmp_path / 'a' / 'model.ckpt-42')
  assert values['global_step'] == 42 and values['global_step'].dtype == np.int64
  assert set(values) == ({'model/' + n for n in expected} | {'model/{}/ExponentialMovingAverage'.format(n)
                                                              for n in expected} | {'global_step'})
  for name, arr in expected.items():
    np.testing.assert_array_equal(values['model/' + name], arr, err_msg=name)
    np.testing.assert_array_equal(values['model/{}/ExponentialMovingAverage'.format(name)], arr, err_msg=name)

  _converter(capsys, 'to_tf', '--src', TINY, '--out', tmp_path / 'b', '--with_ema=False', '--prefix=net')
  prefix, values = _read_checkpoint(tmp_path / 'b')
  assert prefix == str(tmp_path / 'b' / 'model.ckpt-0') and values['global_step'] == 0
  assert set(values) == {'net/' + n for n in expected} | {'global_step'}
  for name, arr in expected.items():
    np.testing.assert_array_equal(values['net/' + name], arr, err_msg=name)


def test_to_tf_src_repo_id_and_source_weights(tiny_state, tmp_path, capsys):
  """--src (the weights come from it; a pipeline folder's unet/ is used), --repo_id and --source_weights (recorded in
  provenance.json beside the checkpoint, docs/pretrained.md: ddpm-ema-* -> ema, google/ddpm-* -> non-ema with a
  warning, other names -> unknown; --source_weights wins over the name)."""
  other = {k: 2. * v.astype(np.float32) + 0.5 for k, v in tiny_state.items()}
  unet_dir = tmp_path / 'hub' / 'ddpm-ema-tiny' / 'unet'
  os.makedirs(str(unet_dir))
  shutil.copyfile(os.path.join(TINY, 'config.json'), str(unet_dir / 'config.json'))
  _write_safetensors(str(unet_dir / 'diffusion_pytorch_model.safetensors'), other)

  def provenance(out):
    with open(str(tmp_path / out / 'provenance.json')) as f:
      return json.load(f)

  _converter(capsys, 'to_tf', '--src', tmp_path / 'hub' / 'ddpm-ema-tiny', '--out', tmp_path / 'other')
  _, values = _read_checkpoint(tmp_path / 'other')
  for name, arr in _expected_tf(other).items():
    np.testing.assert_array_equal(values['model/' + name], arr, err_msg=name)
  record = provenance('other')
  assert record['source'] == str(tmp_path / 'hub' / 'ddpm-ema-tiny')
  assert record['repo_id'] is None and record['source_weights'] == 'ema'

  printed = _converter(capsys, 'to_tf', '--src', TINY, '--out', tmp_path / 'named', '--repo_id',
                       'google/ddpm-cifar10-32')
  record = provenance('named')
  assert record['repo_id'] == 'google/ddpm-cifar10-32' and record['source_weights'] == 'non-ema'
  assert 'warning: the EMA weights of' in printed and 'google/ddpm-cifar10-32' in printed

  _converter(capsys, 'to_tf', '--src', TINY, '--out', tmp_path / 'given', '--repo_id', 'google/ddpm-cifar10-32',
             '--source_weights', 'ema')
  record = provenance('given')
  assert record['source_weights'] == 'ema' and '--source_weights' in record['known_from']

  _converter(capsys, 'to_tf', '--src', TINY, '--out', tmp_path / 'plain')
  assert provenance('plain')['source_weights'] == 'unknown'  # the folder's name, diffusers_tiny, does not say


def test_to_diffusers_ckpt_ema_prefix_and_resolution(tiny_state, tmp_path, capsys):
  """--ckpt (a directory: its checkpoint; or a prefix), --ema (the shadows, else the live weights), --prefix (which
  top scope is exported), --resolution (config.json's sample_size), --out. One checkpoint holds two U-Nets,
  model/ and other/, each with shadows that differ from its live weights, so every choice gives other numbers."""
  live = _expected_tf(tiny_state)
  arrays = {}
  # elementwise maps commute with the layout transposes: the diffusers tensors are the same maps of the source's
  variants = {'model': (lambda w: w, lambda w: w + 1.), 'other': (lambda w: 3. * w, lambda w: 3. * w - 1.)}
  for scope, (raw, ema) in variants.items():
    for name, arr in live.items():
      arrays['{}/{}'.format(scope, name)] = raw(arr)
      arrays['{}/{}/ExponentialMovingAverage'.format(scope, name)] = ema(arr)
  ckpt_dir = tmp_path / 'ckpt'
  ckpt_prefix = str(ckpt_dir / 'model.ckpt-5')
  with tf.Graph().as_default(), tf.Session() as sess:  # the op tf.train.Saver saves with, without 576 variables
    names = sorted(arrays)
    sess.run(tf.raw_ops.SaveV2(prefix=ckpt_prefix, tensor_names=names, shape_and_slices=[''] * len(names),
                               tensors=[tf.constant(arrays[n]) for n in names]))
  tf.train.update_checkpoint_state(str(ckpt_dir), ckpt_prefix)
  with open(os.path.join(TINY, 'config.json')) as f:
    tiny_config = json.load(f)

  cases = [('ema_dir', ['--ckpt', ckpt_dir, '--resolution', 16], variants['model'][1], 16),
           ('live', ['--ckpt', ckpt_dir, '--resolution', 16, '--ema=False'], variants['model'][0], 16),
           ('other_ema', ['--ckpt', ckpt_prefix, '--resolution', 32, '--prefix', 'other'], variants['other'][1], 32)]
  for out, flags, fn, resolution in cases:
    _converter(capsys, 'to_diffusers', '--out', tmp_path / out, *flags)
    assert sorted(os.listdir(str(tmp_path / out))) == ['config.json', 'diffusion_pytorch_model.safetensors']
    with open(str(tmp_path / out / 'config.json')) as f:
      assert json.load(f) == dict(tiny_config, sample_size=resolution), out
    got = _read_safetensors(str(tmp_path / out / 'diffusion_pytorch_model.safetensors'))
    assert sorted(got) == sorted(tiny_state)
    for name, arr in tiny_state.items():
      assert got[name].dtype == np.float32 and got[name].shape == arr.shape, name
      np.testing.assert_allclose(got[name], fn(arr.astype(np.float32)), rtol=1e-6, atol=1e-6, err_msg=(out, name))


# ---------------------------------------------------------------------------------------------------------------
# prepare_lsun.py

# relative path -> (height, width): wide, tall, larger than the output (a resize), square, in a sub-folder
LSUN_IMAGES = {'a.png': (8, 13), 'b.png': (14, 8), 'c.png': (20, 12), 'e.png': (16, 16), 'sub/d.png': (11, 9),
               'f.png': (9, 10)}


@pytest.fixture
def image_dir(tmp_path):
  """The images of LSUN_IMAGES under tmp_path/imgs, plus a file that is not an image: {relative path: pixels}."""
  out = {}
  for i, (rel, (h, w)) in enumerate(sorted(LSUN_IMAGES.items())):
    out[rel] = np.random.RandomState(50 + i).randint(0, 256, size=[h, w, 3]).astype(np.uint8)
    os.makedirs(os.path.dirname(str(tmp_path / 'imgs' / rel)), exist_ok=True)
    Image.fromarray(out[rel]).save(str(tmp_path / 'imgs' / rel))
  (tmp_path / 'imgs' / 'notes.txt').write_text('not an image')
  return out


def _crop_resize(img, resolution):
  """The central min(H, W) square (offsets rounded down), Lanczos-resized to resolution unless it has that size."""
  H, W, _ = img.shape
  c = min(H, W)
  square = img[(H - c) // 2:(H - c) // 2 + c, (W - c) // 2:(W - c) // 2 + c]
  if c == resolution:
    return square
  return np.asarray(Image.fromarray(square).resize((resolution, resolution), Image.LANCZOS))


def _read_records(path):
  """The images of a StyleGAN2-format TFRecord file: 'shape' (C, H, W) and 'data' (raw CHW uint8) -> [H, W, C]."""
  images = []
  for record in tf.io.tf_record_iterator(str(path)):
    feature = tf.train.Example.FromString(record).features.feature
    shape = list(feature['shape'].int64_list.value)
    data = np.frombuffer(feature['data'].bytes_list.value[0], np.uint8)
    images.append(data.reshape(shape).transpose(1, 2, 0))
  return images


def _prepare_lsun(capsys, tmp_path, out_dir, *flags):
  """prepare_lsun.py --image_dir=tmp_path/imgs --out_dir=tmp_path/out_dir flags; returns the files it wrote."""
  _run_cli(capsys, load_script('prepare_lsun').prepare_lsun,
           ['--image_dir={}'.format(tmp_path / 'imgs'), '--out_dir={}'.format(tmp_path / out_dir)] + list(flags),
           'prepare_lsun.py')
  return sorted(os.listdir(str(tmp_path / out_dir)))


def _assert_images(got, image_dir, order, resolution):
  assert len(got) == len(order)
  for image, rel in zip(got, order):
    np.testing.assert_array_equal(image, _crop_resize(image_dir[rel], resolution), err_msg=rel)


def test_prepare_lsun_dirs_resolution_and_prefix(image_dir, tmp_path, capsys):
  """--image_dir (searched recursively, in path order), --out_dir, --resolution (the crop + resize and rNN in the
  file name), --prefix (the file name; default the name of --out_dir)."""
  in_order = sorted(image_dir)
  assert _prepare_lsun(capsys, tmp_path, 'church', '--resolution=8') == ['church-r03.tfrecords']
  _assert_images(_read_records(tmp_path / 'church' / 'church-r03.tfrecords'), image_dir, in_order, 8)
  assert _prepare_lsun(capsys, tmp_path, 'out4', '--resolution=4', '--prefix=bedroom') == ['bedroom-r02.tfrecords']
  _assert_images(_read_records(tmp_path / 'out4' / 'bedroom-r02.tfrecords'), image_dir, in_order, 4)


def test_prepare_lsun_shuffle_seed_and_max_images(image_dir, tmp_path, capsys):
  """--shuffle writes path order permuted as StyleGAN2's exporter does (order = arange(n);
  RandomState(seed).shuffle(order)), --seed picks the permutation (default 123), --max_images keeps the first
  ones of that order."""
  in_order = sorted(image_dir)

  def permuted(seed):
    order = np.arange(len(in_order))
    np.random.RandomState(seed).shuffle(order)
    return [in_order[i] for i in order]

  assert len({tuple(permuted(s)) for s in (7, 8, 123)} | {tuple(in_order)}) == 4
  cases = [('first4', ['--max_images=4'], in_order[:4]), ('seed7', ['--shuffle', '--seed=7'], permuted(7)),
           ('seed8', ['--shuffle', '--seed=8'], permuted(8)), ('default_seed', ['--shuffle'], permuted(123)),
           ('seed7_3', ['--shuffle', '--seed=7', '--max_images=3'], permuted(7)[:3])]
  for out_dir, flags, order in cases:
    files = _prepare_lsun(capsys, tmp_path, out_dir, '--resolution=4', *flags)
    _assert_images(_read_records(tmp_path / out_dir / files[0]), image_dir, order, 4)


# ---------------------------------------------------------------------------------------------------------------
# merge_samples.py

def test_merge_samples_puts_the_shards_back_in_dump_order(tmp_path, capsys):
  """Shard directories (positional, in any order) and --out_dir: 7 samples in batches of 2 drawn on 3 machines;
  batch b is on shard b % 3 (the sample command's rule), so shard 0 holds samples 0, 1, 6. The merge writes the
  dump in order to --out_dir, and grid.png tiles it row by row."""
  whole = np.random.RandomState(60).randint(0, 256, size=[7, 4, 4, 3]).astype(np.uint8)
  info = dict({k: 'same' for k in sample_shards.RUN_KEYS}, num_samples=7, batch_size=2)
  shard_dirs = []
  for i in range(3):
    index = np.array([s for b in range(i, 4, 3) for s in (2 * b, 2 * b + 1) if s < 7], np.int64)
    shard_dirs.append(tmp_path / 'shard{}'.format(i))
    os.makedirs(str(shard_dirs[-1]))
    np.savez(str(shard_dirs[-1] / 'samples.npz'), arr_0=whole[index], sample_index=index)
    with open(str(shard_dirs[-1] / 'info.json'), 'w') as f:
      json.dump(dict(info, shard=[i, 3], checkpoint='/ckpt/model.ckpt-1'), f)
  code, out, err = run_main(capsys, 'merge_samples', [shard_dirs[2], shard_dirs[0], shard_dirs[1],
                                                      '--out_dir={}'.format(tmp_path / 'merged')])
  assert code == 0, err
  assert sorted(os.listdir(str(tmp_path / 'merged'))) == ['grid.png', 'info.json', 'samples.npz']
  np.testing.assert_array_equal(load_npz(str(tmp_path / 'merged' / 'samples.npz')), whole)
  with Image.open(str(tmp_path / 'merged' / 'grid.png')) as img:
    grid = np.asarray(img)
  assert grid.shape == (3 * 6 - 2, 3 * 6 - 2, 3)  # 3 x 3 cells of 4 + 2 pixels, the outer frame cropped
  for k in range(7):
    np.testing.assert_array_equal(grid[k // 3 * 6:k // 3 * 6 + 4, k % 3 * 6:k % 3 * 6 + 4], whole[k])
  with open(str(tmp_path / 'merged' / 'info.json')) as f:
    merged_info = json.load(f)
  assert merged_info['merged_from'] == [str(d) for d in shard_dirs] and merged_info['num_samples'] == 7
  assert 'shard' not in merged_info
