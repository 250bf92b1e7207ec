"""Sample dumps of a checkpoint: seeded batches written as they finish (an interrupted dump resumes), assembled into
one uint8 samples.npz or PNG files with a grid and info.json; and the progressive x_0 predictions of one batch.
`load_model(kwargs, ds_info)` builds the experiment's Model in the current graph.
"""

import json
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from .. import utils
from ..errors import UsageError
from ..runs import run_dir
from ..utils import save_npz_atomic, to_uint8, write_json_atomic
from . import shards as sample_shards
from .seeded import build_seeded_samples, run_seeded


def dump_samples(load_model, kwargs, ds_info, ckpt, ema, num_samples, batch_size, seed, out_dir, settings, dist, *,
                  output_type, sampler, num_inference_steps, eta, use_clipped_model_output, skip_prk_steps,
                  skip_type='uniform', shard=None):

  shard_dir = os.path.join(out_dir, '.shards')
  tf.io.gfile.makedirs(shard_dir)
  config_path = os.path.join(shard_dir, 'config.json')
  shard_settings = {k: v for k, v in settings.items() if k != 'kwargs_json'}
  shard_settings['kwargs'] = kwargs
  if tf.io.gfile.exists(config_path):
    with tf.io.gfile.GFile(config_path) as f:
      old = json.load(f)
    if old != json.loads(json.dumps(shard_settings)):
      raise UsageError('{} holds partial results of a different sampling run; use another --out_dir or remove '
                         'that directory'.format(shard_dir))
  else:
    write_json_atomic(config_path, shard_settings)

  batches = sample_shards.shard_batches(-(-num_samples // batch_size), shard)
  num_batches = len(batches)
  shard_path = lambda b: os.path.join(shard_dir, 'batch_{:06d}.npz'.format(b))
  todo = [b for b in batches if not tf.io.gfile.exists(shard_path(b))]
  if len(todo) < num_batches:
    print('resuming: {} of {} batches already done in {}'.format(num_batches - len(todo), num_batches, shard_dir))

  if todo:
    use_original = sampler == 'ddpm' and num_inference_steps is None and skip_type == 'uniform'
    with tf.Graph().as_default():
      model = load_model(kwargs, ds_info)
      if use_original:
        sample_fn = lambda dummy, y, noise_fn: model.samples_fn(dummy, y, noise_fn=noise_fn)
      else:
        sample_fn = lambda dummy, y, noise_fn: model.sampler_samples_fn(
          dummy, y, noise_fn=noise_fn, sampler=sampler, num_inference_steps=num_inference_steps, eta=eta,
          use_clipped_model_output=use_clipped_model_output, skip_prk_steps=skip_prk_steps, skip_type=skip_type)
      outputs, noises = build_seeded_samples(dist, batch_size, ds_info.image_shape, sample_fn)
      with run_dir.open_restored_session(dist, ckpt, ema) as sess:
        for b in tqdm(todo, desc='batches', unit='batch', file=sys.stdout, dynamic_ncols=True):
          images = to_uint8(run_seeded(sess, outputs['samples'], noises, seed, b))
          save_npz_atomic(shard_path(b), arr_0=images)

  # assemble
  images = []
  for b in batches:
    with tf.io.gfile.GFile(shard_path(b), 'rb') as f:
      images.append(np.load(f)['arr_0'])
  sample_index = sample_shards.sample_indices(batches, batch_size, num_samples)
  images = np.concatenate(images)[:len(sample_index)]
  assert images.shape == (len(sample_index), *ds_info.image_shape) and images.dtype == np.uint8, images.shape
  if shard:
    save_npz_atomic(os.path.join(out_dir, 'samples.npz'), arr_0=images, sample_index=sample_index)
  elif output_type == 'npz':
    save_npz_atomic(os.path.join(out_dir, 'samples.npz'), arr_0=images)
  else:
    img_dir = os.path.join(out_dir, 'images')
    tmp_dir = img_dir + '.partial'
    tf.io.gfile.makedirs(tmp_dir)
    for i, img in enumerate(images):
      path = os.path.join(tmp_dir, '{:06d}.png'.format(i))
      if not tf.io.gfile.exists(path):
        utils.write_png(path, img)
    tf.io.gfile.rename(tmp_dir, img_dir)
  utils.save_tiled_imgs(os.path.join(out_dir, 'grid.png'), images[:100])
  write_json_atomic(os.path.join(out_dir, 'info.json'), settings)
  tf.io.gfile.rmtree(shard_dir)
  print('wrote {} samples{}: {} and {}'.format(
    len(images), ' (shard {}/{} of {})'.format(shard[0], shard[1], num_samples) if shard else '',
    os.path.join(out_dir, 'grid.png'),
    os.path.join(out_dir, 'samples.npz' if output_type == 'npz' else 'images/')))


def progressive(load_model, kwargs, ds_info, ckpt, ema, batch_size, seed, out_dir, settings, dist):
  with tf.Graph().as_default():
    model = load_model(kwargs, ds_info)
    outputs, noises = build_seeded_samples(
      dist, batch_size, ds_info.image_shape,
      lambda dummy, y, noise_fn: model.progressive_samples_fn(dummy, y, noise_fn=noise_fn))
    with run_dir.open_restored_session(dist, ckpt, ema) as sess:
      out = run_seeded(sess, outputs, noises, seed, 0)
  # slot k of progressive_samples is the x_0 prediction at t = k * freq: reverse it to follow the chain from noise
  seq = np.concatenate([out['progressive_samples'][:, ::-1], out['samples'][:, None]], axis=1)  # [B, K + 1, H, W, C]
  seq = to_uint8(seq)
  B, K1 = seq.shape[:2]
  save_npz_atomic(os.path.join(out_dir, 'progressive.npz'), arr_0=seq)
  utils.save_tiled_imgs(os.path.join(out_dir, 'progressive.png'), seq.reshape(B * K1, *seq.shape[2:]), num_col=K1)
  write_json_atomic(os.path.join(out_dir, 'info.json'), settings)
  print('wrote {} progressive sequences of {} images: {}'.format(B, K1, os.path.join(out_dir, 'progressive.png')))
