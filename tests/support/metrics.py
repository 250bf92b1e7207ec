"""The sample-quality numbers written out in numpy, as references for the metrics the commands report.

  inception_score(logits)                     exp(mean_i KL(p(y|x_i) || p(y))), p(y) = mean_i p(y|x_i) (Salimans
                                              et al. 2016), one split
  split_inception_score(logits, num_splits)   mean and population std of the IS of equal contiguous splits
  gaussian(features)                          (mean, unbiased covariance), as TF-GAN's FID
  frechet_distance(ref, gen)                  |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^1/2) of two gaussians

Written independently of the library's diffusion_tf/tpu_utils/classifier_metrics_numpy.py on purpose: the flag
tests compare the commands' numbers with these, so a bug there must not cancel out (tests/test_metrics.py checks
that module against scipy).
"""

import numpy as np
import scipy.special


def inception_score(logits):
  log_p = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
  p = np.exp(log_p)
  return float(np.exp(np.mean(np.sum(p * (log_p - np.log(p.mean(axis=0))), axis=1))))


def split_inception_score(logits, num_splits):
  assert len(logits) % num_splits == 0, (len(logits), num_splits)
  scores = [inception_score(part) for part in np.split(logits, num_splits)]
  return float(np.mean(scores)), float(np.std(scores))


def gaussian(features):
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(ref, gen):
  """ref, gen: (mu, sigma). The trace of the root is the sum of the square roots of the eigenvalues of S1 S2 (real
  and >= 0: S1 S2 is similar to the PSD S1^1/2 S2 S1^1/2), which stays accurate when fewer samples than features
  make a covariance singular."""
  (mu1, s1), (mu2, s2) = ref, gen
  root_trace = np.sum(np.sqrt(np.maximum(np.linalg.eigvals(s1.dot(s2)).real, 0.)))
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2. * root_trace)
