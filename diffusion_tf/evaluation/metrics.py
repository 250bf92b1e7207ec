"""Inception Score and Frechet Inception Distance in float64 numpy.

The definitions are TF-GAN's classifier metrics (tfgan.eval.classifier_score_from_logits,
frechet_classifier_distance_from_activations), which the original DDPM release evaluated in numpy on features
computed by the Inception graph (see diffusion_tf/inception.py and docs/metrics.md):

  IS  = exp( E_x[ KL(p(y|x) || p(y)) ] ),  p(y) = E_x[p(y|x)]                       (Salimans et al. 2016)
  FID = |mu_r - mu_g|^2 + Tr(C_r + C_g - 2 (C_r C_g)^(1/2))                         (Heusel et al. 2017)

with unbiased (1 / (N - 1)) covariances. The paper's Inception Score is the mean +- std over 10 splits
(`inception_score_mean_std`), the convention of the OpenAI evaluation code.
"""

import numpy as np


def _as_float64_matrix(x, name):
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 2:
    raise ValueError('{} must be a 2-D array [N, D], got shape {}'.format(name, x.shape))
  return x


def log_softmax(x, axis=-1):
  """log softmax(x) = x - logsumexp(x) along `axis`, computed stably (log p(y|x) from logits)."""
  x = np.asarray(x, dtype=np.float64)
  shifted = x - np.max(x, axis=axis, keepdims=True)
  return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def kl_divergence(p, p_logits, q):
  """KL(p_i || q) = sum_j p_ij (log_softmax(p_logits)_ij - log q_j), one value per row i (TF-GAN's form).

  :param p: [N, K] probabilities p(y|x_i).
  :param p_logits: [N, K] the logits of p (log p is taken from them for stability).
  :param q: [K] a distribution over the K classes.
  :return: [N] KL divergences.
  """
  assert p.ndim == 2 and p_logits.shape == p.shape and q.shape == (p.shape[1],)
  kl = np.sum(p * (log_softmax(p_logits) - np.log(q)), axis=1)
  assert kl.shape == (p.shape[0],)
  return kl


def classifier_score_from_logits(logits):
  """Inception Score of one set: exp(mean_i KL(p(y|x_i) || p(y))), p(y) = mean_i p(y|x_i).

  :param logits: [N, K] classifier logits (the Inception graph's `logits:0`, K = 1008).
  :return: the score, a float in [1, K].
  """
  logits = _as_float64_matrix(logits, 'logits')
  log_p = log_softmax(logits)
  p = np.exp(log_p)  # [N, K]
  q = np.mean(p, axis=0)  # [K], the marginal p(y)
  return float(np.exp(np.mean(kl_divergence(p, logits, q))))


def split_boundaries(num_examples, num_splits):
  """Contiguous splits [i N // S, (i + 1) N // S), i < S, as the OpenAI Inception Score code cuts them."""
  if num_splits < 1 or num_examples < num_splits:
    raise ValueError('need at least num_splits={} examples (and num_splits >= 1), got {}'.format(
      num_splits, num_examples))
  return [(i * num_examples // num_splits, (i + 1) * num_examples // num_splits) for i in range(num_splits)]


def inception_score_mean_std(logits, num_splits=10):
  """Split Inception Score: mean and (population, ddof=0) std of the score of `num_splits` contiguous splits.

  This is the number papers report as "IS = m +- s" (OpenAI improved-gan convention, 10 splits of 50k samples).

  :param logits: [N, K] classifier logits, N >= num_splits.
  :return: (mean, std) floats.
  """
  logits = _as_float64_matrix(logits, 'logits')
  scores = [classifier_score_from_logits(logits[a:b]) for a, b in split_boundaries(logits.shape[0], num_splits)]
  return float(np.mean(scores)), float(np.std(scores))


def mean_and_covariance(activations):
  """mu = mean_i a_i and the unbiased covariance C = (1 / (N - 1)) sum_i (a_i - mu)(a_i - mu)^T.

  :param activations: [N, D] features (e.g. the Inception graph's `pool_3:0`, D = 2048), N >= 2.
  :return: (mu [D], sigma [D, D]) float64.
  """
  a = _as_float64_matrix(activations, 'activations')
  n, d = a.shape
  if n < 2:
    raise ValueError('need at least 2 activations for a covariance, got {}'.format(n))
  mu = np.mean(a, axis=0)
  centered = a - mu
  sigma = centered.T.dot(centered) / (n - 1)
  assert mu.shape == (d,) and sigma.shape == (d, d)
  return mu, sigma


def _symmetric_sqrt_eigenvalues(eigenvalues, eps):
  """The spectrum TF-GAN's SVD square root gives a symmetric matrix with eigenvalues lam.

  TF-GAN computes sqrt(M) = U diag(s') V^T from the SVD M = U diag(s) V^T with s' = s if s < eps else sqrt(s).
  For symmetric M, s = |lam| and the singular vectors of a negative eigenvalue have opposite signs, so the result
  is V diag(f(lam)) V^T with f(lam) = lam if |lam| < eps else sign(lam) sqrt(|lam|). Computing it with eigh gives
  the same matrix about three times faster than an SVD.
  """
  magnitude = np.abs(eigenvalues)
  return np.where(magnitude < eps, eigenvalues, np.sign(eigenvalues) * np.sqrt(magnitude))


def symmetric_matrix_square_root(mat, eps=1e-10):
  """M^(1/2) of a symmetric positive semi-definite matrix, robust to round-off (TF-GAN semantics, see above).

  :param mat: [D, D] symmetric matrix.
  :return: [D, D] matrix S with S S = mat (for PSD mat, up to eigenvalues below eps).
  """
  mat = _as_float64_matrix(mat, 'mat')
  assert mat.shape[0] == mat.shape[1]
  eigenvalues, v = np.linalg.eigh(mat)
  root = (v * _symmetric_sqrt_eigenvalues(eigenvalues, eps)).dot(v.T)
  assert root.shape == mat.shape
  return root


def trace_sqrt_product(sigma, sigma_v, eps=1e-10):
  """Tr((sigma sigma_v)^(1/2)) computed as Tr((A sigma_v A)^(1/2)) with A = sigma^(1/2) (TF-GAN's identity).

  sigma sigma_v is not symmetric, but A sigma_v A is and has the same eigenvalues, so only symmetric square roots
  are needed; the trace of the second root is the sum of f(eigenvalues) (see _symmetric_sqrt_eigenvalues).
  """
  sqrt_sigma = symmetric_matrix_square_root(sigma, eps)
  inner = sqrt_sigma.dot(np.asarray(sigma_v, dtype=np.float64)).dot(sqrt_sigma)
  inner = 0.5 * (inner + inner.T)  # symmetric up to round-off; eigvalsh reads one triangle only
  return float(np.sum(_symmetric_sqrt_eigenvalues(np.linalg.eigvalsh(inner), eps)))


def frechet_distance(mu1, sigma1, mu2, sigma2):
  """Frechet distance of two Gaussians: |mu1 - mu2|^2 + Tr(sigma1 + sigma2) - 2 Tr((sigma1 sigma2)^(1/2)).

  Pass the real data's statistics as (mu1, sigma1), like TF-GAN (the square root is taken of sigma1 first).

  :return: the distance, a float (about 0 for identical statistics; may be slightly negative from round-off).
  """
  mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
  sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
  d = mu1.shape[0]
  if not (mu1.shape == mu2.shape == (d,) and sigma1.shape == sigma2.shape == (d, d)):
    raise ValueError('statistics do not match: mu {} vs {}, sigma {} vs {}'.format(
      mu1.shape, mu2.shape, sigma1.shape, sigma2.shape))
  mean_term = np.sum(np.square(mu1 - mu2))
  trace_term = np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
  return float(mean_term + trace_term)


def frechet_classifier_distance_from_activations(real_activations, generated_activations):
  """FID between two sets of features [N, D] and [M, D]: frechet_distance of their means and unbiased covariances.

  Like the original release, the distance depends on the sample sizes (it is biased upwards for small N, M);
  compare numbers only at equal sample counts (the paper: 50k samples).
  """
  mu1, sigma1 = mean_and_covariance(real_activations)
  mu2, sigma2 = mean_and_covariance(generated_activations)
  return frechet_distance(mu1, sigma1, mu2, sigma2)


def test_all():
  """Check these functions against TF-GAN's TensorFlow implementations on random inputs (raises AssertionError)."""
  import tensorflow.compat.v1 as tf  # only for this check: the metrics themselves are numpy
  import tensorflow_gan as tfgan  # the reference implementation, for this check only
  rng = np.random.RandomState(1234)
  logits = rng.randn(64, 1008)
  act1, act2 = rng.randn(64, 2048), rng.rand(256, 2048)
  with tf.Graph().as_default(), tf.Session() as sess:
    tf_score, tf_fid = sess.run([
      tfgan.eval.classifier_score_from_logits(tf.convert_to_tensor(logits)),
      tfgan.eval.frechet_classifier_distance_from_activations(tf.convert_to_tensor(act1), tf.convert_to_tensor(act2))])
  assert np.allclose(tf_score, classifier_score_from_logits(logits)), (tf_score, classifier_score_from_logits(logits))
  fid = frechet_classifier_distance_from_activations(act1, act2)
  assert np.allclose(tf_fid, fid), (tf_fid, fid)
