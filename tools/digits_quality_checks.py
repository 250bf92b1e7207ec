"""Two checks behind the digits quality table (tools/digits_quality_table.sh OUT_DIR writes the rows; this reads
them): is the held-out test split a fair floor for digits-FID against the training split, and do the models copy
their training digits?

  .venv/bin/python tools/digits_quality_checks.py OUT_DIR

1. digits-FID (train) of the 297 test digits against that of random 297-digit subsets of the training split (the
   small-sample bias alone): a gap means the test split is a shifted distribution, not just "other samples";
2. median distance (grey pixels 0..255) of each image to its nearest training digit, for the test digits, the
   training digits (leave-one-out) and every row's samples: samples nearer than real held-out digits would mean
   copying;
3. the fraction of near-black pixels (grey < 5 of 255): real digits have clean backgrounds.
"""

import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from diffusion_tf.cli import runner  # noqa: E402  (pure Python: TensorFlow is quieted before it loads)

runner.quiet_tensorflow()

from diffusion_tf.evaluation import metrics as metrics  # noqa: E402
from diffusion_tf.data import catalog as datasets  # noqa: E402
from diffusion_tf.evaluation import digits_classifier  # noqa: E402


def nearest_distances(x, ref, exclude_self=False):
  """Euclidean distance of each row of x [N, D] to its nearest row of ref [M, D] -> [N]."""
  d = ((x[:, None, :] - ref[None]) ** 2).sum(-1)
  if exclude_self:
    np.fill_diagonal(d, np.inf)
  out = np.sqrt(d.min(1))
  assert out.shape == (x.shape[0],)
  return out


def main(out_dir):
  classifier = digits_classifier.DigitsClassifier()
  images = datasets.load_digits_images(8)
  train, test = images[:datasets.DIGITS_NUM_TRAIN], images[datasets.DIGITS_NUM_TRAIN:]
  mu, sigma = metrics.mean_and_covariance(classifier.features(train)[0])
  fid = lambda x: metrics.frechet_distance(mu, sigma, *metrics.mean_and_covariance(classifier.features(x)[0]))
  rng = np.random.RandomState(0)
  subsets = [fid(train[rng.choice(len(train), len(test), replace=False)]) for _ in range(5)]
  print('1. digits-FID (train) of the {} test digits: {:.2f}; of random {}-digit subsets of the training split: '
        '{}'.format(len(test), fid(test), len(test), ', '.join('{:.2f}'.format(v) for v in subsets)))
  grey = lambda x: x.astype(np.float64).mean(-1).reshape(len(x), -1)
  dark = lambda x: 100. * np.mean(grey(x) < 5)
  print('2. median distance to the nearest training digit; 3. near-black pixels:')
  print('   {:<34s} {:4.0f} {:5.1f}%'.format('test digits', np.median(nearest_distances(grey(test), grey(train))),
                                             dark(test)))
  print('   {:<34s} {:4.0f} {:5.1f}%'.format('training digits (leave-one-out)', np.median(
    nearest_distances(grey(train), grey(train), exclude_self=True)), dark(train)))
  for path in sorted(glob.glob(os.path.join(out_dir, '*', 'samples', 'samples.npz'))):
    with np.load(path) as f:
      samples = f['arr_0']
    name = os.path.basename(os.path.dirname(os.path.dirname(path)))
    print('   {:<34s} {:4.0f} {:5.1f}%'.format(name, np.median(nearest_distances(grey(samples), grey(train))),
                                               dark(samples)))


if __name__ == '__main__':
  if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
    print('error: usage: tools/digits_quality_checks.py OUT_DIR (the output directory of '
          'tools/digits_quality_table.sh)', file=sys.stderr)
    sys.exit(1)
  main(sys.argv[1])
