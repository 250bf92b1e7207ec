"""A small classifier of the embedded handwritten digits that stands in for Inception when no Inception graph can be
had: its penultimate features play pool_3 (FID) and its 10 logits play Inception's logits (IS), fed to the same
numpy code (classifier_metrics_numpy, fid_stats). The numbers are "digits-FID" and "digits-IS": comparable with
each other, not with Inception's.

The network: 8x8 grey pixels / 255 -> dense 64 -> ReLU -> dense FEATURE_DIM -> ReLU (the features) -> dense 10
(the logits), trained in float64 numpy with Adam on the digits' training split only (datasets.DIGITS_NUM_TRAIN
images; the remaining ones stay held out), seeded, so the same recipe always gives the same weights. Images of
16, 32 or 64 pixels are averaged down to 8x8 in blocks first.

Weights are cached as .npz under <cache dir>/digits_classifier/, named by `recipe_key()`: the sha256 of the
recipe (layer sizes, optimizer settings, seed) and of the training images, so a change to either trains anew.

Public API:
  DigitsClassifier(cache_dir=None) with .features(images) -> (features [N, FEATURE_DIM], logits [N, 10]) float64,
    .graph_sha256 (the recipe key: statistics files record it like an Inception graph's hash), .test_accuracy
  recipe_key() -> str
"""

import hashlib
import io
import json
import os

import numpy as np

from .. import inception, utils
from ..data import catalog as datasets

NUM_CLASSES = 10
FEATURE_DIM = 32
RECIPE = dict(version=1, hidden=64, features=FEATURE_DIM, epochs=60, batch_size=50, lr=3e-3, weight_decay=1e-3,
              input_noise=0.2, seed=0, num_train=datasets.DIGITS_NUM_TRAIN)
_CLASSIFIER_DIR = 'digits_classifier'


# ---------------------------------------------------------------------------------------------------------------
# The network, in pure functions

def to_inputs(images):
  """uint8 [N, R, R, 3] (R a multiple of 8) -> [N, 64] float64 grey pixels in [0, 1], block-averaged to 8x8."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2] or images.shape[1] % 8:
    raise ValueError('digits classifier: expected images [N, R, R, 3] with R a multiple of 8, got shape {}'.format(
      images.shape))
  if images.dtype != np.uint8:
    raise ValueError('digits classifier: expected uint8 pixels, got dtype {}'.format(images.dtype))
  N, R = images.shape[:2]
  f = R // 8
  grey = images.astype(np.float64).mean(axis=-1).reshape(N, 8, f, 8, f).mean(axis=(2, 4)) / 255.
  out = grey.reshape(N, 64)
  assert out.shape == (N, 64)
  return out


def forward(params, x):
  """h1 = relu(x W1 + b1), h2 = relu(h1 W2 + b2) (the features), logits = h2 W3 + b3; returns (h1, h2, logits)."""
  N = x.shape[0]
  h1 = np.maximum(x.dot(params['w1']) + params['b1'], 0.)
  h2 = np.maximum(h1.dot(params['w2']) + params['b2'], 0.)
  logits = h2.dot(params['w3']) + params['b3']
  assert h2.shape == (N, params['w2'].shape[1]) and logits.shape == (N, NUM_CLASSES)
  return h1, h2, logits


def cross_entropy_grads(params, x, labels, weight_decay):
  """Gradients of mean_i -log softmax(logits_i)[y_i] + weight_decay / 2 * sum |W|^2 (weights, not biases)."""
  N = x.shape[0]
  h1, h2, logits = forward(params, x)
  shifted = logits - logits.max(axis=1, keepdims=True)
  p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
  d_logits = (p - np.eye(NUM_CLASSES)[labels]) / N  # [N, 10]
  d_h2 = d_logits.dot(params['w3'].T) * (h2 > 0)
  d_h1 = d_h2.dot(params['w2'].T) * (h1 > 0)
  grads = {'w3': h2.T.dot(d_logits), 'b3': d_logits.sum(0), 'w2': h1.T.dot(d_h2), 'b2': d_h2.sum(0),
           'w1': x.T.dot(d_h1), 'b1': d_h1.sum(0)}
  for k in ('w1', 'w2', 'w3'):
    grads[k] = grads[k] + weight_decay * params[k]
  return grads


def init_params(rng, recipe):
  sizes = [64, recipe['hidden'], recipe['features'], NUM_CLASSES]
  params = {}
  for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
    params['w{}'.format(i)] = rng.randn(n_in, n_out) * np.sqrt(2. / n_in)  # He initialisation
    params['b{}'.format(i)] = np.zeros(n_out)
  return params


def train(x, labels, recipe):
  """Adam (beta1 0.9, beta2 0.999) on shuffled minibatches, inputs jittered by Gaussian noise; seeded."""
  rng = np.random.RandomState(recipe['seed'])
  params = init_params(rng, recipe)
  m = {k: np.zeros_like(v) for k, v in params.items()}
  v = {k: np.zeros_like(p) for k, p in params.items()}
  step = 0
  for _ in range(recipe['epochs']):
    order = rng.permutation(len(x))
    for start in range(0, len(x), recipe['batch_size']):
      idx = order[start:start + recipe['batch_size']]
      xb = x[idx] + recipe['input_noise'] * rng.randn(len(idx), x.shape[1])
      grads = cross_entropy_grads(params, xb, labels[idx], recipe['weight_decay'])
      step += 1
      for k in params:
        m[k] = 0.9 * m[k] + 0.1 * grads[k]
        v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
        params[k] = params[k] - recipe['lr'] * (m[k] / (1 - 0.9 ** step)) / (np.sqrt(v[k] / (1 - 0.999 ** step)) + 1e-8)
  return params


# ---------------------------------------------------------------------------------------------------------------
# Data, cache, and the extractor

def _labelled_digits():
  """All digits as (uint8 [N, 8, 8, 3] images, int labels [N]), in the order of datasets.load_digits_images."""
  from sklearn.datasets import load_digits  # heavy import, only when asked for
  return datasets.load_digits_images(8), load_digits().target.astype(np.int64)


def recipe_key(recipe=RECIPE, train_images=None):
  """sha256 (hex) of the recipe and of the training images: the cache key and the 'graph' identity."""
  if train_images is None:
    train_images = _labelled_digits()[0][:recipe['num_train']]
  digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode('utf-8'))
  digest.update(np.ascontiguousarray(train_images).tobytes())
  return digest.hexdigest()


def _cache_dir(cache_dir):
  if cache_dir is None:
    cache_dir = inception.cache_dir()
  return os.path.join(os.path.expanduser(cache_dir), _CLASSIFIER_DIR)


class DigitsClassifier:
  """The trained digits classifier (loaded from the cache, or trained and cached); an extractor for fid_stats."""

  def __init__(self, cache_dir=None, recipe=None):
    self.recipe = dict(recipe or RECIPE)
    images, labels = _labelled_digits()
    n = self.recipe['num_train']
    key = recipe_key(self.recipe, images[:n])
    self.graph_sha256 = key
    self.graph_path = os.path.join(_cache_dir(cache_dir), 'digits_classifier-{}.npz'.format(key[:16]))
    if os.path.isfile(self.graph_path):
      with np.load(self.graph_path) as f:
        self.params = {k: f[k] for k in f.files if k != 'test_accuracy'}
        self.test_accuracy = float(f['test_accuracy'])
    else:
      self.params = train(to_inputs(images[:n]), labels[:n], self.recipe)
      predictions = np.argmax(forward(self.params, to_inputs(images[n:]))[2], axis=1)
      self.test_accuracy = float(np.mean(predictions == labels[n:]))
      os.makedirs(os.path.dirname(self.graph_path), exist_ok=True)
      buf = io.BytesIO()
      np.savez(buf, test_accuracy=np.float64(self.test_accuracy), **self.params)
      utils.atomic_write_bytes(self.graph_path, buf.getvalue())  # temp name, then rename

  def features(self, images):
    """(features [N, FEATURE_DIM], logits [N, 10]) float64 of uint8 images [N, R, R, 3]."""
    _, feats, logits = forward(self.params, to_inputs(images))
    return feats, logits

  def close(self):
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
