"""Sample dumps of a checkpoint (the `sample` command's job): seeded batches written as they finish (an interrupted
dump resumes), assembled into one uint8 samples.npz or PNG files with a grid and info.json; or the progressive x_0
predictions of one batch. One dump at a time writes into an output directory (<out_dir>/sample.lock, run_lock).

  dump = SampleDump(source, load_model, out_dir, num_samples=..., ...)  # source: experiments.model_source
  dump.run()

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
from ..runs import run_dir, run_lock
from ..runs.paths import check_writable_dir, refuse_overwrite
from ..sampler_schedules import sampler_settings_name
from ..utils import save_npz_atomic, to_uint8, write_json_atomic
from . import shards as sample_shards
from .seeded import build_seeded_samples, run_seeded

OUTPUT_TYPES = ('png', 'npz')
SHARDS_DIR = '.shards'


def default_out_dir(base, ckpt, *, sampler, num_inference_steps, eta, use_clipped_model_output, skip_prk_steps,
                    skip_type, solver_order, ema, seed, num_samples, progressive, shard):
  """<base>/samples/<checkpoint>_<sampler settings>_<ema>_seed<seed>_n<N>[_progressive][_shard<i>of<n>], the sampler
  settings named by sampler_schedules.sampler_settings_name (ddim50_eta0_quad, dpmsolver++10_order2_linspace)."""
  settings = sampler_settings_name(sampler, num_inference_steps, skip_type=skip_type, solver_order=solver_order,
                                   eta=eta, use_clipped_model_output=use_clipped_model_output,
                                   skip_prk_steps=skip_prk_steps)
  return os.path.join(base, 'samples', '{}_{}_{}_seed{}_n{}{}{}'.format(
    os.path.basename(ckpt), settings, 'ema' if ema else 'noema', seed, num_samples,
    '_progressive' if progressive else '', '_shard{}of{}'.format(*shard) if shard else ''))


class SampleDump:
  """One dump of `source.checkpoint` into out_dir (see the module docstring and the `sample` command's docstring).

  The constructor checks what depends on the devices (`dist`: the batch splits over its replicas, a shard count
  fits the batches); run() refuses an out_dir that holds a finished dump or is being written by another dump (the
  holder's host and pid are named), then draws the batches not yet on disk and writes the outputs.
  """

  def __init__(self, source, load_model, out_dir, *, num_samples, batch_size, seed, ema, sampler,
               num_inference_steps, eta, use_clipped_model_output, skip_prk_steps, skip_type, solver_order,
               output_type, progressive, shard, dist, overrides, printer=print):
    self.source, self.load_model, self.out_dir, self.dist, self._print = source, load_model, out_dir, dist, printer
    self.num_samples, self.seed, self.ema, self.output_type = num_samples, seed, ema, output_type
    self.progressive, self.shard = progressive, shard
    self.sampler_options = dict(sampler=sampler, num_inference_steps=num_inference_steps, eta=eta,
                                use_clipped_model_output=use_clipped_model_output, skip_prk_steps=skip_prk_steps,
                                skip_type=skip_type, solver_order=solver_order)
    self.step = run_dir.checkpoint_step(source.checkpoint)
    self.batch_size = min(batch_size, num_samples) if progressive else batch_size  # progressive: one batch
    dist.check_batch_size(self.batch_size, 'batch_size')
    num_batches = -(-num_samples // self.batch_size)
    if shard and shard[1] > num_batches:
      raise UsageError('--shard={}/{}: {} samples in batches of {} are only {} batch(es); expected at most that many '
                       'shards'.format(shard[0], shard[1], num_samples, self.batch_size, num_batches))
    self.batches = sample_shards.shard_batches(num_batches, shard)
    self.settings = dict(
      checkpoint=source.checkpoint, step=self.step, kwargs_json=source.kwargs_json, kwargs_from=source.origin,
      ema=ema, seed=seed, batch_size=batch_size, num_samples=num_samples, progressive=progressive,
      overrides=overrides, dataset=source.kwargs.get('dataset'), image_size=source.ds_info.image_size,
      provenance=source.provenance, **self.sampler_options)
    if shard:  # what the shards of one dump must share (sample_shards.RUN_KEYS)
      self.settings.update(shard=list(shard), num_replicas=dist.num_replicas, model_kwargs=source.kwargs,
                           checkpoint_sha256=sample_shards.checkpoint_sha256(source.checkpoint))

  @property
  def final_files(self):
    """The files a finished dump leaves in out_dir (info.json last)."""
    if self.progressive:
      return ['progressive.png', 'progressive.npz', 'info.json']
    return ['grid.png', 'samples.npz' if self.output_type == 'npz' else 'images', 'info.json']

  def run(self):
    refuse_overwrite(self.out_dir, self.final_files, '`sample`')
    check_writable_dir(self.out_dir, 'out_dir')
    lock = run_lock.RunLock(self.out_dir, lock_file=run_lock.SAMPLE_LOCK_FILE, activity='sampled into',
                            rule='one `sample` dump per --out_dir').acquire()
    try:
      refuse_overwrite(self.out_dir, self.final_files, '`sample`')  # a dump that finished before we held the lock
      options = self.sampler_options
      self._print('sampling {} images from {} (step {}, {} weights) with {}{}{} -> {}'.format(
        self.batch_size if self.progressive else self.num_samples, self.source.checkpoint, self.step,
        'EMA' if self.ema else 'raw', options['sampler'], '' if options['num_inference_steps'] is None else
        ' ({} steps, {} spacing)'.format(options['num_inference_steps'], options['skip_type']),
        '' if options['solver_order'] is None else ', order {}'.format(options['solver_order']), self.out_dir))
      if self.progressive:
        self._write_progressive()
      else:
        self._draw_batches()
        self._assemble()
    finally:
      lock.release()

  # -- the batches, one file each in <out_dir>/.shards, so that an interrupted dump resumes
  @property
  def _shard_dir(self):
    return os.path.join(self.out_dir, SHARDS_DIR)

  def _batch_path(self, b):
    return os.path.join(self._shard_dir, 'batch_{:06d}.npz'.format(b))

  def _check_partial_dump(self):
    """Batches already in .shards must come from the same settings (its config.json)."""
    tf.io.gfile.makedirs(self._shard_dir)
    config_path = os.path.join(self._shard_dir, 'config.json')
    shard_settings = {k: v for k, v in self.settings.items() if k not in ('kwargs_json', 'kwargs_from')}
    shard_settings['kwargs'] = self.source.kwargs
    if not tf.io.gfile.exists(config_path):
      write_json_atomic(config_path, shard_settings)
      return
    with tf.io.gfile.GFile(config_path) as f:
      old = json.load(f)
    if old != json.loads(json.dumps(shard_settings)):
      raise UsageError('{} holds partial results of a different sampling run; use another --out_dir or remove '
                       'that directory'.format(self._shard_dir))

  def _sample_fn(self, model):
    options = self.sampler_options
    if options['sampler'] == 'ddpm' and options['num_inference_steps'] is None and options['skip_type'] == 'uniform':
      return lambda dummy, y, noise_fn: model.samples_fn(dummy, y, noise_fn=noise_fn)  # the original sampler
    return lambda dummy, y, noise_fn: model.sampler_samples_fn(dummy, y, noise_fn=noise_fn, **options)

  def _batches_to_draw(self):
    """The batches not yet in .shards (after checking that those there come from the same settings)."""
    self._check_partial_dump()
    todo = [b for b in self.batches if not tf.io.gfile.exists(self._batch_path(b))]
    if len(todo) < len(self.batches):
      self._print('resuming: {} of {} batches already done in {}'.format(
        len(self.batches) - len(todo), len(self.batches), self._shard_dir))
    return todo

  def _draw_batches(self):
    todo = self._batches_to_draw()
    if not todo:
      return
    with tf.Graph().as_default():
      model = self.load_model(self.source.kwargs, self.source.ds_info)
      outputs, noises = build_seeded_samples(self.dist, self.batch_size, self.source.ds_info.image_shape,
                                             self._sample_fn(model))
      with run_dir.open_restored_session(self.dist, self.source.checkpoint, self.ema) as sess:
        for b in tqdm(todo, desc='batches', unit='batch', file=sys.stdout, dynamic_ncols=True):
          save_npz_atomic(self._batch_path(b), arr_0=to_uint8(run_seeded(sess, outputs['samples'], noises,
                                                                         self.seed, b)))

  def _assemble(self):
    images = []
    for b in self.batches:
      with tf.io.gfile.GFile(self._batch_path(b), 'rb') as f:
        images.append(np.load(f)['arr_0'])
    sample_index = sample_shards.sample_indices(self.batches, self.batch_size, self.num_samples)
    images = np.concatenate(images)[:len(sample_index)]
    assert images.shape == (len(sample_index), *self.source.ds_info.image_shape), images.shape
    assert images.dtype == np.uint8, images.dtype
    if self.shard:
      save_npz_atomic(os.path.join(self.out_dir, 'samples.npz'), arr_0=images, sample_index=sample_index)
    elif self.output_type == 'npz':
      save_npz_atomic(os.path.join(self.out_dir, 'samples.npz'), arr_0=images)
    else:
      self._write_pngs(images)
    utils.save_tiled_imgs(os.path.join(self.out_dir, 'grid.png'), images[:100])
    write_json_atomic(os.path.join(self.out_dir, 'info.json'), self.settings)
    tf.io.gfile.rmtree(self._shard_dir)
    self._print('wrote {} samples{}: {} and {}'.format(
      len(images), ' (shard {}/{} of {})'.format(self.shard[0], self.shard[1], self.num_samples) if self.shard else '',
      os.path.join(self.out_dir, 'grid.png'),
      os.path.join(self.out_dir, 'samples.npz' if self.output_type == 'npz' else 'images/')))

  def _write_pngs(self, images):
    img_dir = os.path.join(self.out_dir, 'images')
    tmp_dir = img_dir + '.partial'  # renamed when complete: images/ is never half-written
    tf.io.gfile.makedirs(tmp_dir)
    for i, img in enumerate(images):
      path = os.path.join(tmp_dir, '{:06d}.png'.format(i))
      if not tf.io.gfile.exists(path):
        utils.write_png(path, img)
    tf.io.gfile.rename(tmp_dir, img_dir)

  # -- progressive: one batch, its x_0 predictions along the chain
  def _write_progressive(self):
    with tf.Graph().as_default():
      model = self.load_model(self.source.kwargs, self.source.ds_info)
      outputs, noises = build_seeded_samples(
        self.dist, self.batch_size, self.source.ds_info.image_shape,
        lambda dummy, y, noise_fn: model.progressive_samples_fn(dummy, y, noise_fn=noise_fn))
      with run_dir.open_restored_session(self.dist, self.source.checkpoint, self.ema) as sess:
        out = run_seeded(sess, outputs, noises, self.seed, 0)
    # slot k of progressive_samples is the x_0 prediction at t = k * freq: reversed, it follows the chain from noise
    seq = np.concatenate([out['progressive_samples'][:, ::-1], out['samples'][:, None]], axis=1)  # [B, K+1, H, W, C]
    seq = to_uint8(seq)
    B, K1 = seq.shape[:2]
    save_npz_atomic(os.path.join(self.out_dir, 'progressive.npz'), arr_0=seq)
    utils.save_tiled_imgs(os.path.join(self.out_dir, 'progressive.png'), seq.reshape(B * K1, *seq.shape[2:]),
                          num_col=K1)
    write_json_atomic(os.path.join(self.out_dir, 'info.json'), self.settings)
    self._print('wrote {} progressive sequences of {} images: {}'.format(
      B, K1, os.path.join(self.out_dir, 'progressive.png')))
