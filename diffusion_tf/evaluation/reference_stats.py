"""Reference statistics of real data for FID: (mu, sigma) of Inception pool_3 features, cached as .npz files.

A statistics file holds
  mu [2048] float64, sigma [2048, 2048] float64   (mean and unbiased covariance of pool_3, like TF-GAN)
  num_samples, dataset, split, graph_sha256         (what was measured, with which Inception graph)
  inception_score                                   (the real data's single-split IS, as the original logged it)
and no per-image features or logits. The keys `mu` and `sigma` are those of the common FID statistics files, so
files written by other tools (without the metadata) load too.

Files are named by stats_filename(dataset, split, num_samples, graph_sha256), e.g.
`cifar10_train_inception-1a2b3c4d5e6f_n50000.npz` (`_nall` for a whole split), inside a directory the caller picks.

Public API:
  compute_statistics(batches, extractor, num_samples=None) -> stats dict
  save_statistics(path, stats) / load_statistics(path) -> stats dict
  get_or_compute_statistics(stats_dir, dataset=, split=, batches_fn=, extractor=, num_samples=None) -> (stats, path)
"""

import os
import re
import zipfile

import numpy as np

from . import metrics as metrics

_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
_METADATA_KEYS = ('num_samples', 'dataset', 'split', 'graph_sha256', 'inception_score')


def stats_filename(dataset, split, *, num_samples, graph_sha256):
  """'{dataset}_{split}_inception-{sha256[:12]}_n{num_samples or "all"}.npz'."""
  for what, value in [('dataset', dataset), ('split', split)]:
    if not _NAME_RE.match(str(value)):
      raise ValueError('{} name {!r} must be letters, digits, ".", "_" or "-"'.format(what, value))
  count = 'all' if num_samples is None else '{:d}'.format(int(num_samples))
  return '{}_{}_inception-{}_n{}.npz'.format(dataset, split, graph_sha256[:12], count)


class RunningMoments:
  """Mean and unbiased covariance of rows streamed in batches, without keeping the rows.

  Sums are taken around a shift c (the first batch's mean) to avoid cancellation:
    mu = c + S1 / n,   sigma = (S2 - S1 S1^T / n) / (n - 1),   S1 = sum_i (x_i - c),  S2 = sum_i (x_i - c)(x_i - c)^T.
  """

  def __init__(self):
    self.n, self._shift, self._s1, self._s2 = 0, None, None, None

  def update(self, x):
    """Add the rows of x [B, D]."""
    x = np.asarray(x, dtype=np.float64)
    assert x.ndim == 2, x.shape
    if x.shape[0] == 0:
      return
    if self._shift is None:
      self._shift = np.mean(x, axis=0)
      self._s1 = np.zeros_like(self._shift)
      self._s2 = np.zeros((x.shape[1], x.shape[1]))
    assert x.shape[1] == self._shift.shape[0], (x.shape, self._shift.shape)
    centered = x - self._shift
    self._s1 += np.sum(centered, axis=0)
    self._s2 += centered.T.dot(centered)
    self.n += x.shape[0]

  def mean_and_covariance(self):
    """(mu [D], sigma [D, D]) of all rows so far; equals classifier_metrics_numpy.mean_and_covariance of them."""
    if self.n < 2:
      raise ValueError('need at least 2 examples for a covariance, got {}'.format(self.n))
    mu = self._shift + self._s1 / self.n
    sigma = (self._s2 - np.outer(self._s1, self._s1) / self.n) / (self.n - 1)
    return mu, sigma


def compute_statistics(batches, extractor, *, num_samples=None, keep_logits=False, allow_fewer=False):
  """FID statistics (and the Inception Score) of images streamed in batches, keeping no pool_3 features.

  :param batches: iterable of image arrays [B, H, W, 3], uint8 {0..255} (real data) or float in [-1, 1].
  :param extractor: a diffusion_tf.inception.InceptionExtractor (anything with .features(images) -> (pool_3, logits)
    and .graph_sha256).
  :param num_samples: use the first num_samples images; None = all of them.
  :param keep_logits: also return the logits [N, 1008] float32 (for the split Inception Score of samples).
  :param allow_fewer: num_samples is only an upper bound (data of unknown size may end first).
  :return: dict(mu [D], sigma [D, D], num_samples, inception_score (one split), graph_sha256[, logits]).
  :raises ValueError: if fewer than num_samples (unless allow_fewer) or fewer than 2 images arrive.
  """
  moments, logits, seen = RunningMoments(), [], 0
  for images in batches:
    if num_samples is not None:
      images = images[:num_samples - seen]
    if len(images) == 0:
      break
    pool_3, batch_logits = extractor.features(images)
    moments.update(pool_3)
    logits.append(batch_logits.astype(np.float32))  # the network's own precision; [N, 1008] stays small
    seen += len(images)
    if num_samples is not None and seen >= num_samples:
      break
  if num_samples is not None and seen < num_samples and not allow_fewer:
    raise ValueError('asked for statistics of {} images but the data has only {}'.format(num_samples, seen))
  mu, sigma = moments.mean_and_covariance()
  logits = np.concatenate(logits)
  stats = {'mu': mu, 'sigma': sigma, 'num_samples': seen, 'graph_sha256': extractor.graph_sha256,
           'inception_score': metrics.classifier_score_from_logits(logits)}
  if keep_logits:
    stats['logits'] = logits
  return stats


def save_statistics(path, stats):
  """Write stats (a dict with mu, sigma and optional metadata) to path atomically (temp name, then rename)."""
  mu, sigma = np.asarray(stats['mu'], np.float64), np.asarray(stats['sigma'], np.float64)
  assert mu.ndim == 1 and sigma.shape == (mu.shape[0], mu.shape[0]), (mu.shape, sigma.shape)
  arrays = {'mu': mu, 'sigma': sigma}
  arrays.update({k: np.asarray(stats[k]) for k in _METADATA_KEYS if stats.get(k) is not None})
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, '.{}.tmp{}.npz'.format(os.path.basename(path), os.getpid()))
  try:
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load_statistics(path):
  """Read a statistics file: dict with mu [D], sigma [D, D] float64 and whichever metadata it holds.

  :raises FileNotFoundError: if path does not exist.
  :raises ValueError: if it is not a statistics file (e.g. an .npz of images).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError('statistics file {} does not exist'.format(path))
  if not zipfile.is_zipfile(path):
    raise ValueError('{} is not an .npz file (expected arrays "mu" and "sigma")'.format(path))
  try:
    with np.load(path, allow_pickle=False) as f:
      contents = {k: f[k] for k in f.files}
  except Exception as e:  # a truncated or non-npz file
    raise ValueError('cannot read statistics file {} ({}: {})'.format(path, type(e).__name__, e)) from None
  if 'mu' not in contents or 'sigma' not in contents:
    raise ValueError('{} is not a statistics file: expected arrays "mu" and "sigma", found {}'.format(
      path, sorted(contents)))
  mu, sigma = contents['mu'].astype(np.float64), contents['sigma'].astype(np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError('{}: expected mu [D] and sigma [D, D], got {} and {}'.format(path, mu.shape, sigma.shape))
  stats = {'mu': mu, 'sigma': sigma}
  for k in _METADATA_KEYS:
    if k in contents:
      stats[k] = contents[k].item()
  return stats


def get_or_compute_statistics(stats_dir, *, dataset, split, batches_fn, extractor, num_samples=None,
                              allow_fewer=False):
  """Load the cached statistics of (dataset, split, num_samples, extractor's graph), or compute and cache them.

  :param stats_dir: directory of statistics files (e.g. next to the data).
  :param batches_fn: called with no arguments only when the statistics must be computed; returns an iterable of
    uint8 image batches [B, H, W, 3] of the split, in a fixed order.
  :param num_samples: first num_samples images of the split; None = the whole split.
  :param allow_fewer: num_samples is an upper bound, for splits of unknown size (the file name keeps the bound).
  :return: (stats dict as load_statistics returns it, path of the file).
  """
  path = os.path.join(stats_dir, stats_filename(dataset, split, num_samples=num_samples,
                                                graph_sha256=extractor.graph_sha256))
  if not os.path.isfile(path):
    stats = compute_statistics(batches_fn(), extractor, num_samples=num_samples, allow_fewer=allow_fewer)
    stats.update(dataset=dataset, split=split)
    save_statistics(path, stats)
  return load_statistics(path), path
