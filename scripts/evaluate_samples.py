"""Inception Score and FID of a set of samples: the paper's evaluation protocol (DDPM, Table 1).

IS is the mean +- std over 10 splits of the samples; FID compares pool_3 statistics of the samples with reference
statistics (the paper's CIFAR-10 FID 3.17 is against the training set, 5.24 against the test set). Both use TF-GAN's
frozen Inception graph; definitions and how to get the graph offline are in docs/metrics.md.

Reproduce the paper's CIFAR-10 numbers from 50,000 samples:
  python scripts/evaluate_samples.py --samples=samples50k.npz \\
    --ref_stats=cifar10_train_inception-<sha>_nall.npz --ref_stats_test=cifar10_test_inception-<sha>_nall.npz \\
    --out_json=metrics.json

Inputs:
  --samples         .npz with `arr_0` uint8 [N, H, W, 3] (the common evaluators' format), or a folder of PNGs
  --ref_stats       statistics file (.npz with mu, sigma: diffusion_tf.tpu_utils.fid_stats or other FID tools)
  --ref_stats_test  a second statistics file (e.g. the test split)
  --ref_images      .npz of reference images (arr_0 uint8); its statistics are computed once and cached in
                    --stats_cache_dir (default $DIFFUSION_TF_CACHE/fid_stats, i.e. ~/.cache/diffusion_tf/fid_stats)
  --inception_graph local .tar.gz/.pb or URL of the Inception graph (default $DIFFUSION_TF_INCEPTION_GRAPH, else
                    the TF-GAN download, cached)
  --features        inception (default: the paper's IS and FID) or digits (the offline digits classifier, as
                    `run_cifar.py reproduce --features=digits`: digits-IS and digits-FID of square images whose side
                    is a multiple of 8; no Inception graph, no network)
  --num_samples     evaluate only the first num_samples samples (default all)
Output: the numbers on stdout, and with --out_json a JSON file (written atomically) with the numbers, the samples
used, the reference files and the feature network (path and sha256). Bad inputs end with one "error:" line, exit 1.
"""

import glob
import hashlib
import json
import os
import re
import sys
import zipfile

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from diffusion_tf.cli import runner as cli  # noqa: E402  (pure Python: TensorFlow is quieted before it loads)

cli.quiet_tensorflow()

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from diffusion_tf.errors import UsageError  # noqa: E402
from diffusion_tf.evaluation import feature_networks, metrics  # noqa: E402
from diffusion_tf.evaluation import reference_stats as fid_stats  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# Inputs (validated before TensorFlow is imported)

def _check_images(images, where):
  if images.ndim != 4 or images.shape[-1] != 3:
    raise UsageError('{}: expected images of shape [N, H, W, 3], got shape {}'.format(where, images.shape))
  if images.dtype != np.uint8:
    raise UsageError('{}: expected uint8 pixels in {{0..255}}, got dtype {}'.format(where, images.dtype))
  return images


def load_images_npz(path):
  """arr_0 (or the only array) of an .npz file, checked to be uint8 [N, H, W, 3]."""
  if not os.path.isfile(path):
    raise UsageError('{} does not exist (expected an .npz with arr_0 uint8 [N, H, W, 3] or a folder of PNGs)'.format(
      path))
  if not zipfile.is_zipfile(path):
    raise UsageError('{} is not an .npz file (expected arr_0 uint8 [N, H, W, 3])'.format(path))
  try:
    with np.load(path, allow_pickle=False) as f:
      keys = list(f.files)
      key = 'arr_0' if 'arr_0' in keys else (keys[0] if len(keys) == 1 else None)
      if key is None:
        raise UsageError('{}: expected an array arr_0 of images, found arrays {}'.format(path, keys))
      images = f[key]
  except UsageError:
    raise
  except Exception as e:  # not an npz, truncated, or object arrays that would need pickle
    raise UsageError('cannot read {} as .npz ({}: {})'.format(path, type(e).__name__, e)) from None
  return _check_images(images, path)


def load_images_png_folder(folder):
  """All *.png files of a folder (sorted by name) as uint8 [N, H, W, 3]."""
  paths = sorted(glob.glob(os.path.join(folder, '*.png')))
  if not paths:
    raise UsageError('{}: folder contains no .png files'.format(folder))
  images = []
  for p in paths:
    with Image.open(p) as img:
      images.append(np.asarray(img.convert('RGB')))
    if images[-1].shape != images[0].shape:
      raise UsageError('{}: image size {} differs from {} of {}'.format(
        p, images[-1].shape, images[0].shape, paths[0]))
  return _check_images(np.stack(images), folder)


def load_samples(path, num_samples=None):
  images = load_images_png_folder(path) if os.path.isdir(path) else load_images_npz(path)
  if num_samples is not None:
    if images.shape[0] < num_samples:
      raise UsageError('{} has {} samples, fewer than --num_samples={}'.format(path, images.shape[0], num_samples))
    images = images[:num_samples]
  return images


def load_ref_stats(path, flag):
  try:
    return fid_stats.load_statistics(path)
  except (OSError, ValueError) as e:
    raise UsageError('--{}: {} (for an .npz of images use --ref_images)'.format(flag, e)) from None


def _file_sha256(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _batches(images, size):
  for start in range(0, images.shape[0], size):
    yield images[start:start + size]


def _write_json_atomic(path, obj):
  tmp = '{}.tmp{}'.format(path, os.getpid())
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------

def evaluate(samples, ref_stats=None, ref_stats_test=None, ref_images=None, inception_graph=None, num_splits=10,
             num_samples=None, batch_size=100, stats_cache_dir=None, out_json=None, features='inception'):
  """Compute IS (mean +- std over num_splits) and FID of samples with the feature network `features`; return the
  results dict (see module docstring)."""
  # Validate every input before building any graph.
  feature_networks.check_features(features, inception_graph=inception_graph)
  if not isinstance(num_splits, int) or num_splits < 1:
    raise UsageError('--num_splits must be a positive integer, got {!r}'.format(num_splits))
  if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
    raise UsageError('--num_samples must be a positive integer, got {!r}'.format(num_samples))
  if not isinstance(batch_size, int) or batch_size < 1:
    raise UsageError('--batch_size must be a positive integer, got {!r}'.format(batch_size))
  if out_json is not None and not os.path.isdir(os.path.dirname(os.path.abspath(out_json))):
    raise UsageError('--out_json: directory of {} does not exist'.format(out_json))
  samples = str(samples)
  images = load_samples(samples, num_samples)
  feature_networks.check_image_shape(features, images.shape, samples)
  N = images.shape[0]
  if N < max(num_splits, 2):
    raise UsageError('{} has {} samples, fewer than the {} splits of the Inception Score (need >= {})'.format(
      samples, N, num_splits, max(num_splits, 2)))
  refs = [(flag, path, load_ref_stats(path, flag))
          for flag, path in [('ref_stats', ref_stats), ('ref_stats_test', ref_stats_test)] if path is not None]
  ref_image_array = load_images_npz(ref_images) if ref_images is not None else None
  if ref_image_array is not None and ref_image_array.shape[0] < 2:
    raise UsageError('--ref_images: {} has {} images, need >= 2'.format(ref_images, ref_image_array.shape[0]))
  if ref_image_array is not None:
    feature_networks.check_image_shape(features, ref_image_array.shape, '--ref_images ' + str(ref_images))

  from diffusion_tf import inception  # TensorFlow is imported only now
  # InceptionGraphError when there is no Inception graph
  extractor = feature_networks.make_extractor(features, inception_graph=inception_graph, batch_size=batch_size)
  prefix = '' if features == 'inception' else features + '-'  # the digits numbers are named apart: digits-IS

  chunk = 10 * batch_size
  with extractor:
    sample_stats = fid_stats.compute_statistics(_batches(images, chunk), extractor, keep_logits=True)
    if ref_image_array is not None:
      stats_cache_dir = os.path.abspath(stats_cache_dir or os.path.join(inception.cache_dir(), 'fid_stats'))
      stem = re.sub(r'[^A-Za-z0-9._-]', '-', os.path.splitext(os.path.basename(ref_images))[0])
      stats, stats_path = fid_stats.get_or_compute_statistics(
        stats_cache_dir, dataset='ref-{}-{}'.format(stem.lstrip('.-_') or 'images', _file_sha256(ref_images)[:12]),
        split='arr_0', batches_fn=lambda: _batches(ref_image_array, chunk), extractor=extractor)
      refs.append(('ref_images', ref_images, dict(stats, cached_stats_path=stats_path)))

  is_mean, is_std = metrics.inception_score_mean_std(sample_stats['logits'], num_splits)
  results = {
    'samples': os.path.abspath(samples),
    'num_samples': N,
    'image_shape': list(images.shape[1:]),
    'inception_score_mean': is_mean,
    'inception_score_std': is_std,
    'inception_score_num_splits': num_splits,
    'inception_score_one_split': sample_stats['inception_score'],
    'features': features,
    'feature_network': {'path': extractor.graph_path, 'sha256': extractor.graph_sha256},
  }
  if features == 'inception':
    results['inception_graph'] = results['feature_network']
  print('samples: {} ({} images of {})'.format(samples, N, 'x'.join(map(str, images.shape[1:]))))
  print('{}: {} (sha256 {})'.format('inception graph' if features == 'inception' else features + ' classifier',
                                    extractor.graph_path, extractor.graph_sha256))
  print('{}Inception Score ({} splits): {:.4f} +- {:.4f}   (one split: {:.4f})'.format(
    prefix, num_splits, is_mean, is_std, sample_stats['inception_score']))

  for flag, path, stats in refs:
    if stats['mu'].shape != sample_stats['mu'].shape:
      raise UsageError('--{}: {} has {}-dimensional statistics, the {} features have {}; expected statistics of '
                       'the same feature network'.format(flag, path, stats['mu'].shape[0], features,
                                                         sample_stats['mu'].shape[0]))
    ref_sha = stats.get('graph_sha256')
    if ref_sha is not None and ref_sha != extractor.graph_sha256:
      print('warning: --{} {} was computed with feature network sha256 {}, the samples with {}; '
            'the FID is not comparable'.format(flag, path, ref_sha, extractor.graph_sha256), file=sys.stderr)
    fid = metrics.frechet_distance(stats['mu'], stats['sigma'], sample_stats['mu'], sample_stats['sigma'])
    results['fid_' + flag] = fid
    about = [('path', os.path.abspath(path)), ('num_samples', stats.get('num_samples')), ('graph_sha256', ref_sha),
             ('cached_stats_path', stats.get('cached_stats_path'))]
    results[flag] = {k: v for k, v in about if v is not None}
    print('{}FID vs --{} {} ({} images): {:.4f}'.format(prefix, flag, path, stats.get('num_samples', '?'), fid))

  if out_json is not None:
    _write_json_atomic(out_json, results)
    print('wrote', out_json)
  return results


def main(samples, ref_stats=None, ref_stats_test=None, ref_images=None, inception_graph=None, num_splits=10,
         num_samples=None, batch_size=100, stats_cache_dir=None, out_json=None, features='inception'):
  """Inception Score and FID of samples (evaluate(...)); bad inputs end with one "error:" line and exit status 1.

  Args:
    samples: .npz with arr_0 uint8 [N, H, W, 3], or a folder of PNGs.
    ref_stats: statistics file (.npz with mu, sigma) to compute the FID against.
    ref_stats_test: a second statistics file (e.g. the test split).
    ref_images: .npz of reference images (arr_0 uint8); their statistics are computed once and cached.
    inception_graph: local .tar.gz/.pb or URL of the Inception graph (only with --features=inception).
    num_splits: splits of the Inception Score (mean +- std over them).
    num_samples: evaluate only the first num_samples samples.
    batch_size: images per batch of the feature network.
    stats_cache_dir: where the statistics of --ref_images are cached.
    out_json: also write the results to this JSON file.
    features: inception (the paper's numbers) or digits (the offline digits classifier: digits-IS, digits-FID).
  """
  evaluate(samples, ref_stats=ref_stats, ref_stats_test=ref_stats_test, ref_images=ref_images,
           inception_graph=inception_graph, num_splits=num_splits, num_samples=num_samples, batch_size=batch_size,
           stats_cache_dir=stats_cache_dir, out_json=out_json, features=features)


def command_line(argv=None):
  """The script's command line: main() with its flags checked first (cli.run_cli)."""
  cli.run_cli(main, argv=argv, name='evaluate_samples.py')


if __name__ == '__main__':
  command_line()
