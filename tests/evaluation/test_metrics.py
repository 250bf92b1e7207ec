"""IS / FID numpy metrics and the FID statistics cache, against definitions, closed forms, scipy and TF-GAN."""

import os

import numpy as np
import pytest
import scipy.linalg
import scipy.special

from diffusion_tf.evaluation import metrics as metrics
from diffusion_tf.evaluation import reference_stats as fid_stats


pytestmark = pytest.mark.usefixtures('no_network')  # the conftest's: any connection or lookup fails


def _is_from_definition(logits):
  """exp(E_x KL(p(y|x) || p(y))) straight from the definition, with scipy's softmax."""
  p = scipy.special.softmax(np.asarray(logits, np.float64), axis=1)
  q = p.mean(axis=0)
  return np.exp(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def _confident_logits(classes, margin=60., num_classes=1008):
  """Logits that put (numerically) all mass on the given classes, one row per entry."""
  logits = np.zeros([len(classes), num_classes])
  logits[np.arange(len(classes)), classes] = margin
  return logits


def _fid_scipy(a, b):
  """FID with scipy.linalg.sqrtm of the (non-symmetric) product and np.cov: an independent computation."""
  mu1, mu2 = a.mean(0), b.mean(0)
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  covmean = scipy.linalg.sqrtm(s1.dot(s2)).real
  return np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)


def test_inception_score_matches_definition():
  logits = np.random.RandomState(0).randn(300, 1008) * 3
  assert metrics.classifier_score_from_logits(logits) == pytest.approx(_is_from_definition(logits), rel=1e-10)


def test_inception_score_of_identical_predictions_is_one():
  logits = np.tile(np.random.RandomState(1).randn(1, 1008) * 5, [50, 1])
  assert metrics.classifier_score_from_logits(logits) == pytest.approx(1.0, abs=1e-12)


def test_inception_score_of_n_equally_likely_confident_classes_is_n():
  for n in [1, 7, 10]:
    logits = _confident_logits(np.repeat(np.arange(n) * 13, 5))
    assert metrics.classifier_score_from_logits(logits) == pytest.approx(n, rel=1e-9)


def test_split_inception_score_is_mean_and_std_of_splits():
  # split k (k = 0..9) spreads its 2520 = lcm(1..10) samples evenly over k + 1 confident classes: its score is k + 1
  blocks = [_confident_logits(np.arange(k + 1).repeat(2520 // (k + 1)), num_classes=16) for k in range(10)]
  mean, std = metrics.inception_score_mean_std(np.concatenate(blocks), num_splits=10)
  assert mean == pytest.approx(5.5, rel=1e-9)
  assert std == pytest.approx(np.std(np.arange(1, 11)), rel=1e-9)


def test_split_boundaries_follow_openai_convention():
  logits = np.random.RandomState(2).randn(23, 1008)
  expected = [_is_from_definition(logits[i * 23 // 10:(i + 1) * 23 // 10]) for i in range(10)]
  mean, std = metrics.inception_score_mean_std(logits, num_splits=10)
  assert mean == pytest.approx(np.mean(expected), rel=1e-10)
  assert std == pytest.approx(np.std(expected), rel=1e-10)
  assert metrics.split_boundaries(23, 10)[:3] == [(0, 2), (2, 4), (4, 6)]


def test_split_inception_score_needs_as_many_samples_as_splits():
  with pytest.raises(ValueError, match='num_splits=10'):
    metrics.inception_score_mean_std(np.zeros([9, 1008]), num_splits=10)


def test_mean_and_covariance_are_unbiased():
  a = np.random.RandomState(3).randn(40, 5)
  mu, sigma = metrics.mean_and_covariance(a)
  np.testing.assert_allclose(mu, a.mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(a, rowvar=False, ddof=1), rtol=1e-12)


def test_fid_matches_scipy_sqrtm():
  rng = np.random.RandomState(4)
  a = rng.randn(200, 16)
  b = rng.randn(150, 16).dot(rng.randn(16, 16) * 0.5) + 0.3
  assert metrics.frechet_classifier_distance_from_activations(a, b) == pytest.approx(_fid_scipy(a, b), rel=1e-8)


def test_fid_of_a_set_with_itself_is_zero():
  a = np.random.RandomState(5).randn(100, 32)
  assert abs(metrics.frechet_classifier_distance_from_activations(a, a)) < 1e-8


def test_fid_of_two_gaussians_matches_closed_form():
  # Commuting covariances Q diag(a) Q^T and Q diag(b) Q^T: FID = |m1 - m2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
  rng = np.random.RandomState(6)
  d = 8
  q, _ = np.linalg.qr(rng.randn(d, d))
  var1, var2 = rng.uniform(0.5, 2., d), rng.uniform(0.1, 3., d)
  mu1, mu2 = rng.randn(d), rng.randn(d)
  closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
  sigma1, sigma2 = (q * var1).dot(q.T), (q * var2).dot(q.T)
  assert metrics.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(closed, rel=1e-10)
  # Non-commuting 2-D case: W2^2 = |dm|^2 + Tr(S1) + Tr(S2) - 2 sqrt(Tr(S1 S2) + 2 sqrt(det(S1 S2)))
  s1, s2 = np.array([[2., 0.5], [0.5, 1.]]), np.array([[1., -0.3], [-0.3, 0.5]])
  closed_2d = np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.trace(s1.dot(s2)) + 2 * np.sqrt(np.linalg.det(s1.dot(s2))))
  assert metrics.frechet_distance(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(closed_2d, rel=1e-10)
  # and from samples of the two Gaussians, up to sampling error
  rng = np.random.RandomState(7)
  a = rng.multivariate_normal(mu1, sigma1, size=20000)
  b = rng.multivariate_normal(mu2, sigma2, size=20000)
  assert metrics.frechet_classifier_distance_from_activations(a, b) == pytest.approx(closed, rel=0.03)


def _tfgan_svd_sqrt(mat, eps=1e-10):
  """TF-GAN's _symmetric_matrix_square_root transcribed to numpy's SVD (numpy returns V^T, TF returns V)."""
  u, s, vt = np.linalg.svd(mat)
  si = np.where(s < eps, s, np.sqrt(s))
  return u.dot(np.diag(si)).dot(vt)


def test_symmetric_square_root_matches_tfgan_svd_form():
  rng = np.random.RandomState(8)
  q, _ = np.linalg.qr(rng.randn(6, 6))
  for eigenvalues in [rng.uniform(0.1, 4., 6),  # positive definite
                      np.array([3., 1., 0.5, 1e-12, -1e-13, 0.]),  # tiny ones, left unrooted below eps
                      np.array([2., 1., 0.3, 0.1, -1e-4, -2e-6])]:  # round-off negative ones
    mat = (q * eigenvalues).dot(q.T)
    mat = 0.5 * (mat + mat.T)
    np.testing.assert_allclose(metrics.symmetric_matrix_square_root(mat), _tfgan_svd_sqrt(mat), atol=1e-9)
  pd = (q * rng.uniform(0.1, 4., 6)).dot(q.T)
  root = metrics.symmetric_matrix_square_root(pd)
  np.testing.assert_allclose(root.dot(root), pd, atol=1e-10)
  np.testing.assert_allclose(root, scipy.linalg.sqrtm(pd).real, atol=1e-10)


def test_numpy_metrics_match_tfgan_tensorflow_implementation():
  import tensorflow.compat.v1 as tf
  import tensorflow_gan as tfgan
  rng = np.random.RandomState(9)
  logits = rng.randn(64, 1008) * 4
  real, gen = rng.randn(80, 24), rng.randn(70, 24) * 1.5 + 0.2
  with tf.Graph().as_default(), tf.Session() as sess:
    score = tfgan.eval.classifier_score_from_logits(tf.constant(logits))
    fid = tfgan.eval.frechet_classifier_distance_from_activations(tf.constant(real), tf.constant(gen))
    score, fid = sess.run([score, fid])
  assert metrics.classifier_score_from_logits(logits) == pytest.approx(score, rel=1e-10)
  assert metrics.frechet_classifier_distance_from_activations(real, gen) == pytest.approx(fid, rel=1e-8)


# ---------------------------------------------------------------------------------------------------------------
# Statistics files

class _FakeExtractor:
  """features(images) = fixed projection of mean pixel colours; counts calls. No TensorFlow."""
  graph_sha256 = 'ab' * 32

  def __init__(self):
    self.calls = 0
    rng = np.random.RandomState(10)
    self.w_pool, self.w_logits = rng.randn(3, 6), rng.randn(3, 1008)

  def features(self, images):
    self.calls += 1
    x = np.asarray(images, np.float64).mean(axis=(1, 2)) / 255.
    return np.tanh(x.dot(self.w_pool) + (x ** 2).dot(self.w_pool[::-1])), x.dot(self.w_logits) * 5


def _image_batches(n, batch):
  images = np.random.RandomState(11).randint(0, 256, size=[n, 4, 4, 3]).astype(np.uint8)
  return images, [images[i:i + batch] for i in range(0, n, batch)]


def test_running_moments_match_two_pass_statistics():
  a = np.random.RandomState(12).randn(103, 7) * 0.01 + 1e4  # large offset: naive sums would cancel
  moments = fid_stats.RunningMoments()
  for i in range(0, 103, 10):
    moments.update(a[i:i + 10])
  mu, sigma = moments.mean_and_covariance()
  mu_ref, sigma_ref = metrics.mean_and_covariance(a)
  np.testing.assert_allclose(mu, mu_ref, rtol=1e-13)
  np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-8, atol=1e-14)


def test_compute_statistics_of_batches_equals_statistics_of_all_features():
  extractor = _FakeExtractor()
  images, batches = _image_batches(50, 8)
  stats = fid_stats.compute_statistics(iter(batches), extractor, num_samples=45)
  pool, logits = extractor.features(images[:45])
  mu, sigma = metrics.mean_and_covariance(pool)
  assert stats['num_samples'] == 45
  np.testing.assert_allclose(stats['mu'], mu, rtol=1e-12)
  np.testing.assert_allclose(stats['sigma'], sigma, rtol=1e-9, atol=1e-15)
  assert stats['inception_score'] == pytest.approx(metrics.classifier_score_from_logits(logits), rel=1e-6)
  with pytest.raises(ValueError, match='only 50'):
    fid_stats.compute_statistics(iter(batches), extractor, num_samples=60)


def test_statistics_file_is_cached_and_named_by_dataset_split_graph_and_count(tmp_path):
  extractor = _FakeExtractor()
  _, batches = _image_batches(30, 7)
  batches_calls = []

  def batches_fn():
    batches_calls.append(1)
    return iter(batches)

  stats, path = fid_stats.get_or_compute_statistics(
    str(tmp_path), dataset='cifar10', split='train', batches_fn=batches_fn, extractor=extractor, num_samples=None)
  assert os.path.basename(path) == 'cifar10_train_inception-abababababab_nall.npz'
  assert sorted(os.listdir(str(tmp_path))) == [os.path.basename(path)]  # no temp files left behind
  again, path2 = fid_stats.get_or_compute_statistics(
    str(tmp_path), dataset='cifar10', split='train', batches_fn=batches_fn, extractor=extractor)
  assert path2 == path and len(batches_calls) == 1
  np.testing.assert_array_equal(again['sigma'], stats['sigma'])
  assert again['num_samples'] == 30 and again['dataset'] == 'cifar10' and again['graph_sha256'] == 'ab' * 32
  with np.load(path) as f:
    assert 'logits' not in f.files and f['sigma'].dtype == np.float64
  _, path_n = fid_stats.get_or_compute_statistics(
    str(tmp_path), dataset='cifar10', split='train', batches_fn=batches_fn, extractor=extractor, num_samples=20)
  assert path_n.endswith('_n20.npz') and len(batches_calls) == 2


def test_load_statistics_rejects_image_files_and_bad_names(tmp_path):
  images_path = str(tmp_path / 'images.npz')
  np.savez(images_path, np.zeros([2, 4, 4, 3], np.uint8))
  with pytest.raises(ValueError, match='"mu" and "sigma"'):
    fid_stats.load_statistics(images_path)
  with pytest.raises(FileNotFoundError):
    fid_stats.load_statistics(str(tmp_path / 'missing.npz'))
  with pytest.raises(ValueError, match='dataset name'):
    fid_stats.stats_filename('../x', 'train', num_samples=None, graph_sha256='0' * 64)
  # files of other FID tools (only mu, sigma) load
  fid_stats.save_statistics(str(tmp_path / 'plain.npz'), {'mu': np.zeros(3), 'sigma': np.eye(3)})
  assert set(fid_stats.load_statistics(str(tmp_path / 'plain.npz'))) == {'mu', 'sigma'}
