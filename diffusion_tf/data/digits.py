"""The offline stand-in data set (see datasets.py): scikit-learn's real 8x8 handwritten digits, upsampled, as
DigitsDataset; for the demo and the tests, no network."""

import numpy as np
import tensorflow.compat.v1 as tf

from .pipeline import ImageDataset

DIGITS_NUM_TRAIN = 1500  # of sklearn's 1797 digits; the remaining 297 form the test split
DIGITS_RESOLUTIONS = (8, 16, 32, 64)
DIGITS_RESOLUTION = 32  # the default: CIFAR-10's size, so that run_cifar.py's model runs on the digits unchanged


def upsample_bilinear(x, size):
  """Bilinear resize of [N, h, w] float images to [N, size, size], pixel centres aligned (half-pixel rule).

  Output pixel i samples the input at u = (i + 0.5) * h / size - 0.5, clamped to [0, h - 1]:
  y_i = (1 - frac(u)) x_floor(u) + frac(u) x_floor(u)+1 (separately along rows and columns).
  """
  N, h, w = x.shape

  def _weights(n_in):
    u = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
    lo = np.floor(u).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros([size, n_in])
    np.add.at(m, (np.arange(size), lo), 1 - (u - lo))
    np.add.at(m, (np.arange(size), hi), u - lo)
    return m  # [size, n_in], rows sum to 1

  out = np.einsum('ih,nhw,jw->nij', _weights(h), x, _weights(w))
  assert out.shape == (N, size, size)
  return out


def load_digits_images(resolution=32):
  """sklearn's 1797 8x8 digits (values 0..16) as uint8 grey RGB [1797, R, R, 3] in 0..255."""
  from sklearn.datasets import load_digits  # heavy import, only when asked for
  x = load_digits().images.astype(np.float64) * (255. / 16.)  # [1797, 8, 8]
  x = upsample_bilinear(x, resolution) if resolution != 8 else x
  x = np.clip(np.round(x), 0, 255).astype(np.uint8)
  return np.repeat(x[..., None], 3, axis=-1)


class DigitsDataset(ImageDataset):
  """Offline stand-in for demos and tests: real handwritten digits, no download."""

  def __init__(self, *, resolution=DIGITS_RESOLUTION, seed=547):
    if resolution not in DIGITS_RESOLUTIONS:
      raise ValueError('digits resolution={!r}; expected one of {}'.format(resolution, DIGITS_RESOLUTIONS))
    images = load_digits_images(resolution)
    self._train, self._test = images[:DIGITS_NUM_TRAIN], images[DIGITS_NUM_TRAIN:]
    super().__init__(name='digits', image_size=resolution, seed=seed, num_train_examples=len(self._train),
                     num_eval_examples=len(self._test))

  def _train_images(self, shuffle, seed=None):
    del shuffle, seed  # in-memory array: train_input_fn's shuffle covers it all
    return tf.data.Dataset.from_tensor_slices(self._train)

  def _eval_images(self):
    return tf.data.Dataset.from_tensor_slices(self._test)
