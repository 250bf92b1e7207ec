"""One-checkpoint evaluations of the original release: bits/dim on the training or test set, and progressive samples.

Results are .npz files (never pickles) in <model_dir>/simple_eval/:
  bpd_train_<ckpt>_<ema>.npz, bpd_eval_<ckpt>_<ema>.npz:
      total_bpd [N] (the variational bound, DDPM eq. 5, in bits/dim), terms_bpd [N, T] (L_0 .. L_{T-1}),
      prior_bpd [N] (L_T), mse [N, T] (squared error of the x_0 prediction at each t), and step.
  progressive_samples_<ckpt>_<ema>.npz + .png:
      samples uint8 [B, H, W, 3] and progressive_samples uint8 [B, K, H, W, 3] (x_0 predictions from t = T-1 down).
A bits/dim pass saves its progress (a `.partial.npz`) every minute and continues from it when rerun.
"""

import os
import time

import numpy as np
import tensorflow.compat.v1 as tf

from .. import utils
from . import tpu_utils
from .script_utils import save_npz_atomic, to_uint8

MODES = ('bpd_train', 'bpd_eval', 'progressive_samples')
_BPD_KEYS = ('total_bpd', 'terms_bpd', 'prior_bpd', 'mse')


class SimpleEvalWorker:

  def __init__(self, *, model_constructor, total_bs, dataset, tpu_name=None, zone=None, project=None,
               num_gpus=None, printer=print):
    self.model_constructor = model_constructor
    self.dataset = dataset
    self.total_bs = total_bs
    self._print = printer
    self.dist = tpu_utils.choose_distribution(tpu_name=tpu_name, zone=zone, project=project, num_gpus=num_gpus)
    self.dist.check_batch_size(total_bs)

  def run(self, mode, logdir, load_ckpt=None, ema=True, max_batches=None, seed=0, save_every_secs=60):
    from .script_utils import check_choice, check_int
    from .paths import check_writable_dir
    check_choice('mode', mode, MODES)
    check_int('max_batches', max_batches, allow_none=True)
    ckpt = tpu_utils.resolve_checkpoint(load_ckpt or logdir)
    if mode == 'bpd_eval' and not self.dataset.num_eval_examples:
      raise tpu_utils.UsageError('mode=bpd_eval: dataset {} has no test split; expected mode=bpd_train'.format(
        self.dataset.name))
    out_dir = os.path.join(logdir, 'simple_eval')
    check_writable_dir(out_dir, 'simple_eval dir')
    out_path = os.path.join(out_dir, '{}_{}_{}{}.npz'.format(
      mode, os.path.basename(ckpt), 'ema' if ema else 'noema',
      '' if max_batches is None or mode == 'progressive_samples' else '_{}batches'.format(max_batches)))
    if tf.io.gfile.exists(out_path):
      raise tpu_utils.UsageError('{} already exists; results are never overwritten (move it away to recompute)'.format(
        out_path))
    step = tpu_utils.checkpoint_step(ckpt)
    self._print('{} of {} (step {}, {} weights) -> {}'.format(mode, ckpt, step, 'EMA' if ema else 'raw', out_path))
    if mode == 'progressive_samples':
      self._progressive(ckpt, ema, seed, out_path, step)
    else:
      input_fn = self.dataset.train_one_pass_input_fn if mode == 'bpd_train' else self.dataset.eval_input_fn
      self._bpd(ckpt, ema, input_fn, max_batches, out_path, step, save_every_secs)
    return out_path

  def _bpd(self, ckpt, ema, input_fn, max_batches, out_path, step, save_every_secs):
    partial_path = out_path[:-len('.npz')] + '.partial.npz'
    results = {k: [] for k in _BPD_KEYS}
    if tf.io.gfile.exists(partial_path):
      with tf.io.gfile.GFile(partial_path, 'rb') as f:
        with np.load(f) as saved:
          if int(saved['step']) != step or int(saved['batch_size']) != self.total_bs:
            raise tpu_utils.UsageError('{} is from another checkpoint or batch size; delete it to start over'.format(
              partial_path))
          results = {k: [saved[k]] for k in _BPD_KEYS}
    done = sum(len(r) for r in results['total_bpd'])
    done_batches = done // self.total_bs
    if done_batches:
      self._print('resuming after {} batches ({} images) from {}'.format(done_batches, done, partial_path))

    def _save(path):
      arrays = {k: np.concatenate(v) if v else np.zeros([0]) for k, v in results.items()}
      save_npz_atomic(path, step=np.int64(step), batch_size=np.int64(self.total_bs), **arrays)
      return arrays

    with tf.Graph().as_default():
      model = self.model_constructor()
      H, W, C = self.dataset.image_shape
      x_ph = tf.placeholder(tf.int32, [self.total_bs, H, W, C])
      y = tf.zeros([self.total_bs], tf.int32)
      out = self.dist.replicate(lambda x_, y_: model.bpd_fn(utils.normalize_data(tf.cast(x_, tf.float32)), y_),
                             [x_ph, y])
      data = tf.data.make_one_shot_iterator(
        input_fn({'batch_size': self.total_bs}).skip(done_batches)).get_next()
      with self.dist.session() as sess:
        tpu_utils.restore_weights(sess, ckpt, ema=ema)
        last_save, t0, b = time.time(), time.time(), done_batches
        while max_batches is None or b < max_batches:
          try:
            images = sess.run(data['image'])
          except tf.errors.OutOfRangeError:
            break
          batch = sess.run(out, {x_ph: images})
          for k in _BPD_KEYS:
            results[k].append(batch[k])
          b += 1
          total = np.concatenate(results['total_bpd'])
          self._print('batch {}: {} images, mean total bits/dim {:.4f} ({:.0f} s)'.format(
            b, len(total), total.mean(), time.time() - t0))
          if time.time() - last_save > save_every_secs:
            _save(partial_path)
            last_save = time.time()
    if not results['total_bpd']:
      raise tpu_utils.UsageError('the data yielded no complete batch of {} images; expected a smaller --total_bs'
                                 .format(self.total_bs))
    arrays = _save(out_path)
    if tf.io.gfile.exists(partial_path):
      tf.io.gfile.remove(partial_path)
    self._print('total bits/dim {:.4f} (prior {:.4f}, L_0 {:.4f}) over {} images -> {}'.format(
      arrays['total_bpd'].mean(), arrays['prior_bpd'].mean(), arrays['terms_bpd'][:, 0].mean(),
      len(arrays['total_bpd']), out_path))

  def _progressive(self, ckpt, ema, seed, out_path, step):
    from .script_utils import build_seeded_samples, run_seeded
    with tf.Graph().as_default():
      model = self.model_constructor()
      out, noises = build_seeded_samples(
        self.dist, self.total_bs, self.dataset.image_shape,
        lambda dummy, y, noise_fn: model.progressive_samples_fn(dummy, y, noise_fn=noise_fn))
      with self.dist.session() as sess:
        sess.run(tf.local_variables_initializer())
        tpu_utils.restore_weights(sess, ckpt, ema=ema)
        result = run_seeded(sess, out, noises, seed, 0)
    samples = to_uint8(result['samples'])
    progressive = to_uint8(result['progressive_samples'][:, ::-1])  # from t = T - 1 down to t = 0
    save_npz_atomic(out_path, samples=samples, progressive_samples=progressive, step=np.int64(step))
    B, K = progressive.shape[:2]
    grid = np.concatenate([progressive, samples[:, None]], axis=1).reshape(B * (K + 1), *samples.shape[1:])
    utils.save_tiled_imgs(out_path[:-len('.npz')] + '.png', grid, num_col=K + 1)
    self._print('wrote {} and {}'.format(out_path, out_path[:-len('.npz')] + '.png'))
