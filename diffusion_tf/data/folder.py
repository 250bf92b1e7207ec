"""A folder of one's own images as a dataset: `get_dataset('folder', data_dir=PATH, resolution=R)` (FolderDataset).

Every .png/.jpg/.jpeg/.webp file under PATH (recursively, sorted by path) is one example, centre-cropped to a square
and resized to R x R with Lanczos antialiasing (data/images.py, the same code as scripts/prepare_lsun.py); grey,
palette and alpha images become RGB (alpha dropped).

Checked before any training: every image is decoded once when the dataset is made (in a few threads; about 1-3 ms
per 256x256 JPEG on one core), and all the files that cannot be decoded are named in one error, so that none
stops a run later. One printed line says how many images there are, how many are held out, and how many were
converted to RGB.

The evaluation split: an image is held out when the first 8 bytes of sha256(its path relative to PATH) read as a
fraction in [0, 1) fall below `eval_fraction` (default 0.05). The choice depends on the image's own path only, so it
is the same on every run and machine, and adding or removing images never moves another image between the splits.
The default holds out 1 image in 20: enough for the bits/dim of simple_eval and the FID against the test split of
`evaluation`/`reproduce` to be measured on a few thousand images, at a small cost to the training set (CIFAR-10's
test split is 1 in 6); 0 trains on everything, and the commands then have no test split to measure.

Decoding: the images are streamed from their files by tf.data (PIL in a tf.numpy_function, in parallel), so a
folder of any size fits in memory: a training pipeline holds at most the shuffle buffer of ImageDataset (2 GiB of
decoded images; 10,922 images at 256x256) plus, when the whole training split decoded takes at most _CACHE_BYTES
(1 GiB: 5,461 images at 256x256, 87,381 at 64x64), that decoded copy, so that only the first epoch decodes. A folder
larger than that is decoded again every epoch, in an order shuffled per epoch (seeded), then through the buffer.
The PIL decoding runs in this Python process: fine on CPUs and GPUs and for the hosts of a multi-worker cluster,
not on a Cloud TPU's remote host; there, write the folder as TFRecords with scripts/prepare_lsun.py --image_dir
and train on them (dataset lsun).
"""

import collections
import concurrent.futures
import hashlib
import os

import numpy as np
import tensorflow.compat.v1 as tf

from ..checks import check_number, is_int
from ..errors import UsageError
from .images import DECODE_ERRORS, GREY_MODES, IMAGE_EXTENSIONS, center_crop_resize, decode_rgb, find_images, read_rgb
from .pipeline import ImageDataset

DEFAULT_EVAL_FRACTION = 0.05
# The flags of a training run on a folder (train() of run_cifar.py and run_celebahq.py, after the original's own
# flags), with their defaults; kwargs.json keeps them, so that evaluation, simple_eval and reproduce find the images.
FOLDER_FLAGS = collections.OrderedDict([('data_dir', None), ('eval_fraction', DEFAULT_EVAL_FRACTION)])
# Bytes of decoded training images kept in memory after the first epoch (see the module docstring).
_CACHE_BYTES = 1 << 30
_MAX_LISTED = 20  # undecodable files named in the error (all are counted)


def held_out_fraction(relpath):
  """The number in [0, 1) that decides whether the image at `relpath` ('/'-separated, relative to the folder) is
  held out: the first 8 bytes of its sha256 as a fraction of 2^64."""
  return int.from_bytes(hashlib.sha256(relpath.encode('utf-8')).digest()[:8], 'big') / float(1 << 64)


def split_paths(paths, root, eval_fraction):
  """(train paths, eval paths) of image paths under root, each in the given order; see the module docstring."""
  train, held_out = [], []
  for path in paths:
    relpath = os.path.relpath(path, root).replace(os.sep, '/')
    (held_out if held_out_fraction(relpath) < eval_fraction else train).append(path)
  return train, held_out


def _probe(path):
  """(PIL mode, min(H, W)) of a fully decoded image file, or the decode error's message."""
  try:
    rgb, mode = decode_rgb(path)
  except DECODE_ERRORS as e:
    return None, '{}: {}'.format(type(e).__name__, e)
  return mode, min(rgb.shape[:2])


def scan_images(paths, num_threads=8):
  """Decode every image once (in threads: PIL releases the GIL while it decodes). Returns (Counter of the images'
  PIL modes, int64 [N] the short side of each readable image, [(path, error message)] of the unreadable files)."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(num_threads, os.cpu_count() or 1))) as pool:
    results = list(pool.map(_probe, paths))
  bad = [(path, result) for path, (mode, result) in zip(paths, results) if mode is None]
  modes = collections.Counter(mode for mode, _ in results if mode is not None)
  short_sides = np.array([side for mode, side in results if mode is not None], dtype=np.int64)
  return modes, short_sides, bad


def _conversion_note(modes):
  """'converted to RGB: 1 grey (L), 1 with alpha (RGBA)' for the images whose PIL mode is not RGB; '' if none."""
  parts, alpha = [], False
  for mode, count in sorted(modes.items()):
    if mode == 'RGB':
      continue
    has_alpha = mode in ('RGBA', 'RGBa', 'LA', 'La', 'PA')
    alpha |= has_alpha
    kind = ('grey ' if mode in GREY_MODES else '') + 'with alpha' if has_alpha else (
      'grey' if mode in GREY_MODES else 'palette' if mode == 'P' else 'other')
    parts.append('{} {} ({})'.format(count, kind, mode))
  if not parts:
    return ''
  return 'converted to RGB{}: {}'.format(' (alpha dropped)' if alpha else '', ', '.join(parts))


class FolderDataset(ImageDataset):
  """The images of a folder (see the module docstring); the interface of every dataset (data/catalog.py)."""

  def __init__(self, data_dir, *, resolution, eval_fraction=DEFAULT_EVAL_FRACTION, seed=547, printer=print):
    if not isinstance(data_dir, str) or not data_dir:
      raise UsageError('data_dir={!r}; expected the path of a folder of images for dataset folder'.format(data_dir))
    if not os.path.isdir(data_dir):
      raise UsageError('data_dir={!r} is not a directory; expected a folder of {} images'.format(
        data_dir, '/'.join(e[1:] for e in IMAGE_EXTENSIONS)))
    if not is_int(resolution) or resolution < 1:
      raise UsageError('resolution={!r}; dataset folder needs the training image size, a positive integer such '
                       'as 32, 64, 128 or 256'.format(resolution))
    check_number('eval_fraction', eval_fraction, low=0., high=1., high_inclusive=False)
    self.data_dir = os.path.abspath(data_dir)
    paths = find_images(self.data_dir)
    if not paths:
      raise UsageError('data_dir={!r} holds no {} files (searched recursively); expected at least one image'.format(
        data_dir, '/'.join(IMAGE_EXTENSIONS)))
    modes, short_sides, bad = scan_images(paths)
    if bad:
      listed = ['{} ({})'.format(os.path.relpath(p, self.data_dir), why) for p, why in bad[:_MAX_LISTED]]
      more = ' and {} more'.format(len(bad) - _MAX_LISTED) if len(bad) > _MAX_LISTED else ''
      raise UsageError('{} of the {} images under {} cannot be decoded: {}{}; expected readable {} files (fix or '
                       'remove them)'.format(len(bad), len(paths), data_dir, '; '.join(listed), more,
                                             '/'.join(e[1:] for e in IMAGE_EXTENSIONS)))
    self._train_paths, self._eval_paths = split_paths(paths, self.data_dir, eval_fraction)
    if not self._train_paths:
      raise UsageError('eval_fraction={} holds out all {} images of {}; expected a smaller fraction'.format(
        eval_fraction, len(paths), data_dir))
    self.eval_fraction = eval_fraction
    R = int(resolution)
    self._cached = len(self._train_paths) * R * R * 3 <= _CACHE_BYTES
    super().__init__(name=self._name(paths, eval_fraction), image_size=R, seed=seed,
                     num_train_examples=len(self._train_paths), num_eval_examples=len(self._eval_paths) or None)
    notes = [_conversion_note(modes)]
    if (short_sides < R).any():
      notes.append('{} smaller than {}x{} (upsampled)'.format(int((short_sides < R).sum()), R, R))
    printer('folder {}: {} images at {}x{}, {} held out for evaluation (eval_fraction={}), {}{}'.format(
      data_dir, len(paths), R, R, len(self._eval_paths), eval_fraction,
      'decoded once into memory' if self._cached else 'streamed from the files',
      ''.join('; ' + n for n in notes if n)))

  def _name(self, paths, eval_fraction):
    """'folder-<folder name>-<8 hex digits>': names the cached FID statistics (evaluation/reference_stats.py), so
    the digest covers what they depend on: the split, and every image's relative path and size."""
    digest = hashlib.sha256(repr(eval_fraction).encode())
    for path in paths:
      digest.update('{}\0{}\0'.format(os.path.relpath(path, self.data_dir), os.path.getsize(path)).encode('utf-8'))
    base = ''.join(c if (c.isalnum() or c in '._-') else '_' for c in os.path.basename(self.data_dir)) or 'images'
    return 'folder-{}-{}'.format(base, digest.hexdigest()[:8])

  def _load(self, path):
    """numpy: a path (bytes) -> uint8 [R, R, 3]."""
    return center_crop_resize(read_rgb(path.decode('utf-8')), self.image_size)

  def _decode(self, paths):
    """A dataset of paths -> a dataset of uint8 [R, R, 3] images, in the same order."""
    def _read(path):
      img = tf.numpy_function(self._load, [path], tf.uint8)
      img.set_shape(self.image_shape)
      return img
    return paths.map(_read, num_parallel_calls=tf.data.experimental.AUTOTUNE)

  def _paths(self, paths, shuffle, seed):
    ds = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle and not self._cached:  # cached: train_input_fn's shuffle buffer holds the whole split
      ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return ds

  def _train_images(self, shuffle, seed=None):
    ds = self._decode(self._paths(self._train_paths, shuffle, seed))
    return ds.cache() if shuffle and self._cached else ds  # cache: decoded in the first epoch only

  def _train_shard(self, count, index, seed=None):
    """Pipeline `index` of `count`: the images index, index + count, ... of the training split's fixed order, as
    ImageDataset's shard of the decoded images, but only those are read and decoded."""
    shard = self._train_paths[index::count]
    ds = self._decode(self._paths(shard, True, seed))
    return ds.cache() if self._cached else ds

  def _eval_images(self):
    if not self._eval_paths:
      return None
    return self._decode(tf.data.Dataset.from_tensor_slices(self._eval_paths))
