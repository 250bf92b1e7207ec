"""The Inception loader, feature extraction and scripts/evaluate_samples.py, with a stand-in graph and no network."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from support import inception as helpers_inception
from diffusion_tf import compat, errors, inception
from diffusion_tf.evaluation import metrics as metrics
from diffusion_tf.evaluation import reference_stats as fid_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'evaluate_samples.py')


@pytest.fixture(autouse=True)
def _offline(private_inception_cache, monkeypatch, tmp_path):
  """Every test runs with the network cut (the conftest's private_inception_cache), an empty cache dir
  tmp_path/cache and without the graph env var."""
  monkeypatch.setenv(inception.CACHE_ENV_VAR, str(tmp_path / 'cache'))


@pytest.fixture(scope='module')
def standin(tmp_path_factory):
  """The stand-in graph with the real sizes: (tarball path, .pb path, sha256 of the .pb)."""
  tmpdir = tmp_path_factory.mktemp('standin')
  tar_path = helpers_inception.make_standin_inception(tmpdir)
  pb_path = os.path.join(str(tmpdir), helpers_inception.PB_NAME)
  with open(pb_path, 'rb') as f:
    return tar_path, pb_path, hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope='module')
def extractor(standin):
  with inception.InceptionExtractor(standin[0], batch_size=16) as ex:
    yield ex


def _images(n, seed, size=32):
  return np.random.RandomState(seed).randint(0, 256, size=[n, size, size, 3]).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# Loading

def test_graph_loads_from_tarball_pb_env_var_and_file_url(standin, monkeypatch, tmp_path):
  tar_path, pb_path, sha = standin
  from_tar = inception.load_inception_graph(tar_path)
  assert from_tar.sha256 == sha and from_tar.path == tar_path
  assert {'Mul', 'pool_3', 'logits'} <= {n.name for n in from_tar.graph_def.node}
  assert inception.load_inception_graph(pb_path).sha256 == sha
  assert inception.load_inception_graph(tar_path) is from_tar  # parsed once

  monkeypatch.setenv(inception.GRAPH_ENV_VAR, pb_path)
  assert inception.load_inception_graph().path == pb_path

  source = str(tmp_path / 'mirror' / helpers_inception.TARBALL_NAME)
  os.makedirs(os.path.dirname(source))
  shutil.copyfile(tar_path, source)
  from_url = inception.load_inception_graph('file://' + source)
  cached = os.path.join(str(tmp_path / 'cache'), 'inception', helpers_inception.TARBALL_NAME)
  assert from_url.path == cached and from_url.sha256 == sha
  os.remove(source)  # the cached copy is used from now on
  assert inception.load_inception_graph('file://' + source).sha256 == sha
  assert [f for f in os.listdir(os.path.dirname(cached))] == [helpers_inception.TARBALL_NAME]  # no temp files


def test_default_graph_is_read_from_the_cache_without_network(standin, tmp_path):
  target = os.path.join(str(tmp_path / 'cache'), 'inception', os.path.basename(inception.INCEPTION_URL))
  os.makedirs(os.path.dirname(target))
  shutil.copyfile(standin[0], target)
  assert inception.load_inception_graph().sha256 == standin[2]


def test_missing_graph_is_one_clear_error(tmp_path):
  with pytest.raises(inception.InceptionGraphError) as info:
    inception.load_inception_graph()  # nothing cached: tries the download, which the test refuses
  message = str(info.value)
  assert '\n' not in message and 'network access blocked in tests' in message
  assert inception.INCEPTION_URL in message and inception.GRAPH_ENV_VAR in message
  assert os.path.join(str(tmp_path / 'cache'), 'inception', os.path.basename(inception.INCEPTION_URL)) in message
  assert not os.listdir(os.path.join(str(tmp_path / 'cache'), 'inception'))  # no partial download left
  with pytest.raises(inception.InceptionGraphError, match='does not exist'):
    inception.load_inception_graph(str(tmp_path / 'nowhere.tar.gz'))
  with pytest.raises(inception.InceptionGraphError, match='does not exist'):
    inception.load_inception_graph('file://' + str(tmp_path / 'nowhere.tar.gz'))


def test_unusable_graph_files_are_rejected(tmp_path):
  empty_tar = str(tmp_path / 'empty.tar.gz')
  with open(str(tmp_path / 'README'), 'w') as f:
    f.write('no graph here')
  with tarfile.open(empty_tar, 'w:gz') as tar:
    tar.add(str(tmp_path / 'README'), arcname='README')
  with pytest.raises(inception.InceptionGraphError, match='contains no inceptionv1_for_inception_score_tpu.pb'):
    inception.load_inception_graph(empty_tar)
  with tf.Graph().as_default() as g:
    tf.placeholder(tf.float32, [None, 299, 299, 3], name='Mul')
    tf.identity(tf.constant(1.), name='pool_3')
  other_pb = str(tmp_path / 'other.pb')
  with open(other_pb, 'wb') as f:
    f.write(g.as_graph_def().SerializeToString())
  with pytest.raises(inception.InceptionGraphError, match="no tensors.*logits:0"):
    inception.load_inception_graph(other_pb)
  with open(str(tmp_path / 'junk.pb'), 'wb') as f:
    f.write(b'\xff\x00 not a protobuf' * 10)
  with pytest.raises(inception.InceptionGraphError, match='not a frozen TensorFlow graph'):
    inception.load_inception_graph(str(tmp_path / 'junk.pb'))


# ---------------------------------------------------------------------------------------------------------------
# Features

def test_extractor_preprocessing_matches_the_standin_computed_in_numpy(extractor):
  # Constant images survive the bilinear resize unchanged, so the network input is known exactly:
  # uint8 v -> (v - 128) / 128; float x -> ((clip(x) + 1) * 127.5 - 128) / 128.
  values = np.array([0, 37, 128, 255], np.uint8)
  images = np.tile(values[:, None, None, None], [1, 20, 24, 3])
  pool, logits = extractor.features(images)
  assert pool.shape == (4, 2048) and logits.shape == (4, 1008) and pool.dtype == logits.dtype == np.float64
  ref_pool, ref_logits = helpers_inception.standin_reference(
    np.tile(((values.astype(np.float64) - 128) / 128)[:, None, None, None], [1, 299, 299, 3]))
  np.testing.assert_allclose(pool, ref_pool, atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=1e-5)

  x = np.array([-3., -1., 0.2, 1.5])  # out-of-range values are clipped
  pool_f, logits_f = extractor.features(np.tile(x[:, None, None, None], [1, 8, 8, 3]).astype(np.float32))
  ref_pool_f, ref_logits_f = helpers_inception.standin_reference(
    np.tile((((np.clip(x, -1, 1) + 1) * 127.5 - 128) / 128)[:, None, None, None], [1, 299, 299, 3]))
  np.testing.assert_allclose(pool_f, ref_pool_f, atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(logits_f, ref_logits_f, atol=1e-4, rtol=1e-5)


@pytest.mark.skipif(compat.STACK != 'tf1', reason='TF-GAN 0.0.0.dev0 (preprocess_image, run_inception of a graph_def), '
                    'which the original used, installs only on the TF 1.15 stack')
def test_extractor_matches_the_original_tfgan_pipeline(standin, extractor):
  """The original: tfgan.eval.run_inception(tfgan.eval.preprocess_image(images)) with [pool_3:0, logits:0]."""
  import tensorflow_gan as tfgan
  images = _images(10, 0)
  samples = np.random.RandomState(1).uniform(-1.2, 1.2, size=[10, 32, 32, 3]).astype(np.float32)
  graph_def = inception.get_inception_graph_def(standin[0])
  with tf.Graph().as_default(), tf.Session() as sess:
    outs = []
    for pixels in [tf.constant(images), (tf.clip_by_value(tf.constant(samples), -1., 1.) + 1.) * 127.5]:
      outs.append(tfgan.eval.run_inception(tfgan.eval.preprocess_image(pixels), graph_def=graph_def,
                                           default_graph_def_fn=None, output_tensor=['pool_3:0', 'logits:0']))
    (pool_u, logits_u), (pool_f, logits_f) = sess.run(outs)
  for ours, theirs in [(extractor.features(images), (pool_u, logits_u)),
                       (extractor.features(samples), (pool_f, logits_f))]:
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6, atol=1e-5)


def test_extractor_is_independent_of_batch_size(standin, extractor):
  images = _images(21, 2)
  with inception.InceptionExtractor(standin[1], batch_size=4) as small:
    pool, logits = small.features(images)
    assert small.graph_sha256 == extractor.graph_sha256 == standin[2]
  pool_ref, logits_ref = extractor.features(images)
  np.testing.assert_allclose(pool, pool_ref, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(logits, logits_ref, rtol=1e-6, atol=1e-5)
  with pytest.raises(ValueError, match=r'shape \[N, H, W, 3\]'):
    extractor.features(images[..., 0])
  with pytest.raises(ValueError, match='dtype int64'):
    extractor.features(images.astype(np.int64))


def test_graph_level_inception_features_match_the_extractor(standin, extractor, monkeypatch):
  images = _images(6, 3)
  samples = images / 127.5 - 1.
  monkeypatch.setenv(inception.GRAPH_ENV_VAR, standin[0])  # graph_def=None: loaded when the graph is built
  with tf.Graph().as_default(), tf.Session() as sess:
    out_u = inception.inception_features(tf.constant(images))
    out_f = inception.inception_features(tf.constant(samples, tf.float32))
    assert out_u['pool_3'].shape.as_list() == [6, 2048] and out_u['logits'].shape.as_list() == [6, 1008]
    (res_u, res_f) = sess.run([out_u, out_f])
  pool, logits = extractor.features(images)
  for res in [res_u, res_f]:
    np.testing.assert_allclose(res['pool_3'], pool, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(res['logits'], logits, rtol=1e-5, atol=1e-4)


def test_real_data_statistics_are_cached_per_graph_and_count(extractor, tmp_path):
  images = _images(30, 4)
  calls = []

  def batches_fn():
    calls.append(1)
    return (images[i:i + 8] for i in range(0, 30, 8))

  stats, path = fid_stats.get_or_compute_statistics(str(tmp_path), dataset='cifar10', split='test',
                                                    batches_fn=batches_fn, extractor=extractor, num_samples=25)
  assert os.path.basename(path) == 'cifar10_test_inception-{}_n25.npz'.format(extractor.graph_sha256[:12])
  pool, logits = extractor.features(images[:25])
  mu, sigma = metrics.mean_and_covariance(pool)
  # float32 network outputs differ in the last bits between batch sizes (batches of 8 here, 25 above)
  np.testing.assert_allclose(stats['mu'], mu, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats['sigma'], sigma, rtol=1e-4, atol=1e-6)
  assert stats['inception_score'] == pytest.approx(metrics.classifier_score_from_logits(logits), rel=1e-6)
  fid_stats.get_or_compute_statistics(str(tmp_path), dataset='cifar10', split='test', batches_fn=batches_fn,
                                      extractor=extractor, num_samples=25)
  assert len(calls) == 1


# ---------------------------------------------------------------------------------------------------------------
# scripts/evaluate_samples.py

def _subprocess_env(tmp_path):
  env = dict(os.environ)
  env.pop(inception.GRAPH_ENV_VAR, None)
  # any network attempt fails at once
  env.update({inception.CACHE_ENV_VAR: str(tmp_path / 'cache'), 'http_proxy': 'http://127.0.0.1:9',
              'https_proxy': 'http://127.0.0.1:9', 'TF_CPP_MIN_LOG_LEVEL': '2'})
  return env


def _run_script(args, tmp_path):
  return subprocess.run([sys.executable, SCRIPT] + args, env=_subprocess_env(tmp_path), cwd=str(tmp_path),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)


@pytest.fixture(scope='module')
def small_standin(tmp_path_factory):
  """A stand-in with 64 pool features: the script reads the size from the graph, and FID stays cheap."""
  return helpers_inception.make_standin_inception(tmp_path_factory.mktemp('small'), seed=1, pool_dim=64)


def test_evaluate_samples_end_to_end(small_standin, tmp_path):
  samples, ref_images, test_images = _images(23, 5), _images(30, 6), _images(12, 7, size=16)
  np.savez(str(tmp_path / 'samples.npz'), samples)
  np.savez(str(tmp_path / 'ref_images.npz'), ref_images)
  with inception.InceptionExtractor(small_standin) as ex:
    pool, logits = ex.features(samples)
    ref_pool, _ = ex.features(ref_images)
    test_pool, _ = ex.features(test_images)
    sha = ex.graph_sha256
    train_stats = fid_stats.compute_statistics([ref_images[:20]], ex)
    test_stats = fid_stats.compute_statistics([test_images], ex)
  fid_stats.save_statistics(str(tmp_path / 'train_stats.npz'), train_stats)
  fid_stats.save_statistics(str(tmp_path / 'test_stats.npz'), test_stats)

  result = _run_script(['--samples=samples.npz', '--ref_stats=train_stats.npz', '--ref_stats_test=test_stats.npz',
                        '--ref_images=ref_images.npz', '--stats_cache_dir=stats_cache',
                        '--inception_graph=' + small_standin, '--out_json=metrics.json'], tmp_path)
  assert result.returncode == 0, result.stderr
  assert 'Inception Score (10 splits)' in result.stdout and 'FID vs --ref_stats_test' in result.stdout
  with open(str(tmp_path / 'metrics.json')) as f:
    out = json.load(f)
  is_mean, is_std = metrics.inception_score_mean_std(logits, 10)
  assert out['num_samples'] == 23 and out['image_shape'] == [32, 32, 3] and out['inception_score_num_splits'] == 10
  assert out['inception_score_mean'] == pytest.approx(is_mean, rel=1e-6)
  assert out['inception_score_std'] == pytest.approx(is_std, rel=1e-5)
  assert out['inception_score_one_split'] == pytest.approx(metrics.classifier_score_from_logits(logits), rel=1e-6)
  assert out['inception_graph'] == {'path': small_standin, 'sha256': sha}
  fid = metrics.frechet_classifier_distance_from_activations
  assert out['fid_ref_stats'] == pytest.approx(fid(ref_pool[:20], pool), rel=1e-6)
  assert out['fid_ref_stats_test'] == pytest.approx(fid(test_pool, pool), rel=1e-6)
  assert out['fid_ref_images'] == pytest.approx(fid(ref_pool, pool), rel=1e-6)
  assert out['ref_stats']['num_samples'] == 20 and out['ref_stats']['graph_sha256'] == sha
  cached = out['ref_images']['cached_stats_path']
  assert os.path.dirname(cached) == str(tmp_path / 'stats_cache') and os.path.isfile(cached)
  assert '_n' in cached and sha[:12] in cached

  # A folder of PNGs holds the same samples (PNG is lossless): same Inception Score. Run in-process to save time.
  os.makedirs(str(tmp_path / 'pngs'))
  for i, image in enumerate(samples):
    Image.fromarray(image).save(str(tmp_path / 'pngs' / '{:05d}.png'.format(i)))
  script = _load_script()
  png_out = script.evaluate(str(tmp_path / 'pngs'), inception_graph=small_standin)
  assert png_out['num_samples'] == 23
  assert png_out['inception_score_mean'] == pytest.approx(is_mean, rel=1e-6)


def _load_script():
  import importlib.util
  spec = importlib.util.spec_from_file_location('evaluate_samples', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _save(directory, images):
  """images as s.npz; None: a JSON file named s.npz."""
  if images is None:
    with open(os.path.join(directory, 's.npz'), 'w') as f:
      f.write('{}')
  else:
    np.savez(os.path.join(directory, 's.npz'), images)


@pytest.mark.parametrize('make_input, args, expected', [
  (None, ['--samples=missing.npz'], 'missing.npz does not exist'),
  (lambda d: _save(d, np.zeros([20, 8, 8, 3], np.float32)), ['--samples=s.npz'], 'uint8'),
  (lambda d: _save(d, np.zeros([20, 8, 8], np.uint8)), ['--samples=s.npz'], r'shape \[N, H, W, 3\]'),
  (lambda d: _save(d, np.zeros([5, 8, 8, 3], np.uint8)), ['--samples=s.npz'], 'fewer than the 10 splits'),
  (lambda d: _save(d, np.zeros([20, 8, 8, 3], np.uint8)), ['--samples=s.npz', '--ref_stats=s.npz'],
   'use --ref_images'),
  (lambda d: _save(d, None), ['--samples=s.npz'], 'not an .npz file'),
  (lambda d: os.makedirs(d + '/empty'), ['--samples=empty'], 'no .png files'),
])
def test_evaluate_samples_rejects_bad_inputs_before_loading_tensorflow(make_input, args, expected, tmp_path):
  if make_input is not None:
    make_input(str(tmp_path))
  # Run the script as __main__ and report whether TensorFlow got imported: bad inputs must fail before that.
  driver = ('import runpy, sys\nsys.argv = [{!r}] + sys.argv[1:]\ntry:\n  runpy.run_path({!r}, run_name="__main__")\n'
            'finally:\n  sys.stderr.write("tensorflow imported: %s\\n" % ("tensorflow" in sys.modules))\n').format(
              SCRIPT, SCRIPT)
  result = subprocess.run([sys.executable, '-c', driver] + args, env=_subprocess_env(tmp_path), cwd=str(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1, result.stderr
  assert len(lines) == 2 and lines[0].startswith('error: '), result.stderr
  assert re.search(expected, lines[0]), lines[0]
  assert lines[1] == 'tensorflow imported: False'


def test_evaluate_samples_reports_a_missing_inception_graph(tmp_path):
  np.savez(str(tmp_path / 's.npz'), _images(10, 8, size=8))
  script = _load_script()
  with pytest.raises(errors.InceptionGraphError, match='wget {}'.format(inception.INCEPTION_URL)):
    script.evaluate(str(tmp_path / 's.npz'), inception_graph=str(tmp_path / 'absent.tar.gz'))
