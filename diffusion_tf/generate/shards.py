"""A sample dump split over machines, and put back together.

The `sample` command draws batch b of a dump from noise seeded by (seed, b) (script_utils.SeededNoise), so any
machine can draw any batch. With `--shard=i/n` it draws the batches b with b % n == i and writes them, with the
index of every sample, to its own directory; `merge_shards` checks that the n shards come from one sampling run and
hold every sample exactly once, and writes the samples in order: the same array as one machine drawing all of them.

A shard directory holds samples.npz (arr_0: uint8 [k, H, W, 3]; sample_index: int64 [k], the position of each
sample in the whole dump) and info.json (the sampling settings, with "shard": [i, n]).
"""

import hashlib
import io
import json
import os
import re

import numpy as np
import tensorflow.compat.v1 as tf

from .. import utils
from ..errors import ShardError
from ..runs.paths import refuse_overwrite

SAMPLES_FILE = 'samples.npz'
INFO_FILE = 'info.json'
GRID_FILE = 'grid.png'

# What the shards of one sampling run share: the weights, the sampler and its settings, the seed, and how the dump is
# cut into batches and replicas (each replica draws its own noise stream, so the replica count changes the images).
RUN_KEYS = ('checkpoint_sha256', 'step', 'ema', 'sampler', 'num_inference_steps', 'eta', 'use_clipped_model_output',
            'skip_prk_steps', 'skip_type', 'solver_order', 'seed', 'batch_size', 'num_samples', 'num_replicas',
            'model_kwargs')


def parse_shard(value):
  """'i/n' (0 <= i < n) -> (i, n); None -> None (the whole dump)."""
  if value is None:
    return None
  match = re.match(r'^\s*(\d+)\s*/\s*(\d+)\s*$', str(value))
  if not match or not int(match.group(1)) < int(match.group(2)):
    raise ShardError('shard={!r}; expected i/n with 0 <= i < n, e.g. --shard=0/4 for the first of four'.format(value))
  return int(match.group(1)), int(match.group(2))


def shard_batches(num_batches, shard):
  """The batch numbers shard (i, n) draws: b = i, i + n, i + 2n, ... (whole batches, so each keeps its seed)."""
  index, count = shard or (0, 1)
  return list(range(index, num_batches, count))


def sample_indices(batches, batch_size, num_samples):
  """The positions in the whole dump of the samples of `batches` (the last batch is cut at num_samples)."""
  return np.array([i for b in batches for i in range(b * batch_size, min((b + 1) * batch_size, num_samples))],
                  np.int64)


def checkpoint_sha256(ckpt):
  """sha256 of a checkpoint's .index file: tells whether two machines sample from the same weights, wherever the
  checkpoint is stored on each."""
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(ckpt + '.index', 'rb') as f:
    digest.update(f.read())
  return digest.hexdigest()


def _read_shard(shard_dir):
  info_path, samples_path = os.path.join(shard_dir, INFO_FILE), os.path.join(shard_dir, SAMPLES_FILE)
  for path in (info_path, samples_path):
    if not tf.io.gfile.exists(path):
      raise ShardError('{} does not exist; expected a finished `sample --shard=i/n` directory (with {} and {})'.format(
        path, INFO_FILE, SAMPLES_FILE))
  with tf.io.gfile.GFile(info_path) as f:
    try:
      info = json.load(f)
    except ValueError as e:
      raise ShardError('{} is not valid JSON ({})'.format(info_path, e)) from None
  if not isinstance(info, dict) or not isinstance(info.get('shard'), list) or len(info['shard']) != 2:
    raise ShardError('{} has no "shard": [i, n]; expected the directory of a `sample --shard=i/n` run'.format(
      info_path))
  if 'solver_order' not in info and info.get('sampler') in ('ddpm', 'ddim', 'pndm'):
    info['solver_order'] = None  # a shard of a dump from before the solvers: its sampler has no order
  missing = [k for k in RUN_KEYS if k not in info]
  if missing:
    raise ShardError('{} lacks {}; expected the info.json of a `sample --shard=i/n` run'.format(
      info_path, ', '.join(missing)))
  with tf.io.gfile.GFile(samples_path, 'rb') as f, np.load(f) as npz:
    if 'arr_0' not in npz or 'sample_index' not in npz:
      raise ShardError('{} holds {}; expected arr_0 (the samples) and sample_index'.format(
        samples_path, sorted(npz.keys())))
    images, index = npz['arr_0'], npz['sample_index']
  return info, images, index


def _and_list(items):
  items = [str(x) for x in items]
  return items[0] if len(items) == 1 else '{} and {}'.format(', '.join(items[:-1]), items[-1])


def missing_shards_message(missing, count, have):
  """In words, which of the `count` shards (numbered 0 to count - 1, as --shard=i/n) are `missing`, given the
  shards `have` {index: directory}: 'shard 1 of 2 is missing (have shard 0: d0); ...'."""
  what = 'shard {} of {} is'.format(missing[0], count) if len(missing) == 1 else 'shards {} of {} are'.format(
    _and_list(missing), count)
  got = '; '.join('{}: {}'.format(i, d) for i, d in sorted(have.items()))
  return '{} missing (have shard{} {}); expected all {} shards, numbered 0 to {} (sample --shard=i/{})'.format(
    what, '' if len(have) == 1 else 's', got, count, count - 1, count)


def merge_shards(shard_dirs, out_dir):
  """Check the shards `shard_dirs` and write the whole dump to out_dir (samples.npz, grid.png, info.json).

  Raises ShardError if a shard is missing or given twice, if shards disagree on a setting of RUN_KEYS, or if their
  samples do not cover the dump exactly once. Returns the merged samples, uint8 [N, H, W, 3].
  """
  if not shard_dirs:
    raise ShardError('no shard directories given; expected the n directories of `sample --shard=i/n` runs')
  refuse_overwrite(out_dir, [SAMPLES_FILE, INFO_FILE], 'merging')
  shards = {}
  first_dir = first = None
  for shard_dir in shard_dirs:
    info, images, index = _read_shard(shard_dir)
    i, n = info['shard']
    if first is None:
      first_dir, first = shard_dir, info
    for key in RUN_KEYS + ('shard_count',):
      mine, theirs = (n, first['shard'][1]) if key == 'shard_count' else (info[key], first[key])
      if mine != theirs:
        raise ShardError(
          'shards of different sampling runs: {} has {}={!r} but {} has {!r}; expected the shards of one run (same '
          'checkpoint, sampler, steps, seed, batch size, sample count and replicas)'.format(
            shard_dir, key, mine, first_dir, theirs))
    if i in shards:
      raise ShardError('shard {}/{} given twice ({} and {}); expected each shard once'.format(
        i, n, shards[i][0], shard_dir))
    shards[i] = (shard_dir, images, index, info['checkpoint'])
  count = first['shard'][1]
  missing = sorted(set(range(count)) - set(shards))
  if missing:
    raise ShardError(missing_shards_message(missing, count, {i: d for i, (d, _, _, _) in shards.items()}))

  num_samples, batch_size = first['num_samples'], first['batch_size']
  num_batches = -(-num_samples // batch_size)
  merged, seen = None, np.zeros([num_samples], np.int64)
  for i, (shard_dir, images, index, _) in sorted(shards.items()):
    expected = sample_indices(shard_batches(num_batches, (i, count)), batch_size, num_samples)
    if not np.array_equal(index, expected) or len(images) != len(index):
      raise ShardError('{} holds {} samples with indices {}; expected the {} samples of shard {}/{}'.format(
        shard_dir, len(images), _span(index), len(expected), i, count))
    if merged is None:
      merged = np.zeros((num_samples,) + images.shape[1:], images.dtype)
    merged[index] = images
    seen[index] += 1
  assert np.all(seen == 1), seen  # the shards' batches partition the dump
  assert merged.dtype == np.uint8 and merged.ndim == 4, (merged.dtype, merged.shape)

  tf.io.gfile.makedirs(out_dir)
  buf = io.BytesIO()
  np.savez(buf, arr_0=merged)
  utils.atomic_write_bytes(os.path.join(out_dir, SAMPLES_FILE), buf.getvalue())
  utils.save_tiled_imgs(os.path.join(out_dir, GRID_FILE), merged[:100])
  info = {k: v for k, v in first.items() if k not in ('shard', 'checkpoint')}
  info['merged_from'] = [shards[i][0] for i in range(count)]
  info['checkpoints'] = sorted({shard[3] for shard in shards.values()})  # one file, perhaps at several paths
  utils.atomic_write_bytes(os.path.join(out_dir, INFO_FILE),
                           (json.dumps(info, indent=2, sort_keys=True) + '\n').encode('utf-8'))
  return merged


def _span(index):
  return '[]' if not len(index) else '{}..{}'.format(int(index.min()), int(index.max()))
