"""One-checkpoint evaluations of the original release: bits/dim on the training or test set, and progressive samples.

Results are .npz files (never pickles) under <model_dir>/simple_eval/ (the step in 9 digits, step000790000):
  bpd/bpd_train_ema1_step<N>.npz, bpd/bpd_eval_ema1_step<N>.npz  (ema0 with the raw weights; a pass limited to
      max_batches=K ends in _<K>batches.npz):
      total_bpd [N] (the variational bound, DDPM eq. 5, in bits/dim), terms_bpd [N, T] (L_0 .. L_{T-1}),
      prior_bpd [N] (L_T), mse [N, T] (squared error of the x_0 prediction at each t), and step.
      A pass saves its progress (a `.partial.npz`) every minute and continues from it when rerun.
  progressive_samples/samples_xstartpred_ema1_step<N>_part<P>.npz (P in 6 digits; + a .png grid of the first batch):
      samples uint8 [n, H, W, 3] and progressive_samples uint8 [n, K, H, W, 3] (the x_0 predictions from t = T-1
      down), `batches_per_flush` batches of total_bs per part, num_samples (default 50,000, the original's) in all.
      Batch b's noise depends only on (seed, b), so a rerun skips the parts that exist and gives the same images.
"""

import os
import time

import numpy as np
import tensorflow.compat.v1 as tf

from .. import utils
from ..errors import UsageError
from ..utils import save_npz_atomic, to_uint8
from ..runs import devices, run_dir
from ..checks import check_choice, check_int
from ..runs.paths import check_writable_dir
from ..generate.seeded import build_seeded_samples, run_seeded

MODES = ('bpd_train', 'bpd_eval', 'progressive_samples')
_BPD_KEYS = ('total_bpd', 'terms_bpd', 'prior_bpd', 'mse')


class SimpleEvalWorker:
  """Builds the bits/dim and progressive-sampling graphs of `model_constructor()` for batches of total_bs, and runs
  them on one checkpoint (`run`), as the original's worker: the dump_* methods run in a session of that graph whose
  weights were restored (`ema` names which weights, for the file names)."""

  def __init__(self, tpu_name, model_constructor, total_bs, dataset, *, zone=None, project=None, num_gpus=None,
               printer=print):
    self.model_constructor = model_constructor
    self.dataset = dataset
    self.total_bs = total_bs
    self._print = printer
    self.dist = devices.choose_distribution(tpu_name=tpu_name, zone=zone, project=project, num_gpus=num_gpus)
    self.dist.check_batch_size(total_bs)
    self._graph = None

  def _make_graphs(self):
    """In a new graph: the model, its progressive sampling graph (seeded noise) and its bits/dim graph fed by the
    training and test data iterators."""
    self._graph = tf.Graph()
    with self._graph.as_default():
      model = self.model_constructor()
      self.samples_outputs, self._noises = build_seeded_samples(
        self.dist, self.total_bs, self.dataset.image_shape,
        lambda dummy, y, noise_fn: model.progressive_samples_fn(dummy, y, noise_fn=noise_fn))
      H, W, C = self.dataset.image_shape
      self._x = tf.placeholder(tf.int32, [self.total_bs, H, W, C])
      self.bpd_outputs = self.dist.replicate(
        lambda x_, y_: model.bpd_fn(utils.normalize_data(tf.cast(x_, tf.float32)), y_),
        [self._x, tf.zeros([self.total_bs], tf.int32)])
      self._iterators = {}
      for split, input_fn in [('train', self.dataset.train_one_pass_input_fn), ('eval', self.dataset.eval_input_fn)]:
        ds = input_fn({'batch_size': self.total_bs})
        if ds is not None:  # no test split
          self._iterators[split] = tf.data.make_initializable_iterator(ds)
      self._next_images = {k: it.get_next()['image'] for k, it in self._iterators.items()}
    return self._graph

  def init_all_iterators(self, sess):
    """Rewind the training and test data to their first batch."""
    sess.run([it.initializer for it in self._iterators.values()])

  def dump_progressive_samples(self, sess, curr_step, samples_dir, ema, num_samples=50000, batches_per_flush=20,
                               seed=0):
    """num_samples samples with their x_0 predictions, in parts of batches_per_flush batches (see the module
    docstring); parts that exist are kept (a rerun continues). Returns the parts' paths."""
    check_int('num_samples', num_samples)
    check_int('batches_per_flush', batches_per_flush)
    tf.io.gfile.makedirs(samples_dir)
    num_batches = -(-num_samples // self.total_bs)
    num_parts = -(-num_batches // batches_per_flush)
    name = lambda part, ext: os.path.join(samples_dir, 'samples_xstartpred_ema{}_step{:09d}_part{:06d}.{}'.format(
      int(ema), curr_step, part, ext))
    self._print('{} progressive samples in {} batches of {}, {} part(s) of up to {} batches -> {}'.format(
      num_samples, num_batches, self.total_bs, num_parts, batches_per_flush, samples_dir))
    t0, paths = time.time(), []
    for part in range(num_parts):
      path = name(part, 'npz')
      paths.append(path)
      if tf.io.gfile.exists(path):
        self._print('{} exists: skipped'.format(path))
        continue
      samples, progressive = [], []
      for b in range(part * batches_per_flush, min((part + 1) * batches_per_flush, num_batches)):
        out = run_seeded(sess, self.samples_outputs, self._noises, seed, b)
        samples.append(to_uint8(out['samples']))
        progressive.append(to_uint8(out['progressive_samples'][:, ::-1]))  # from t = T - 1 down to t = 0
        self._print('  batch {}/{} ({:.0f} s)'.format(b + 1, num_batches, time.time() - t0))
      samples, progressive = np.concatenate(samples), np.concatenate(progressive)
      keep = min(len(samples), num_samples - part * batches_per_flush * self.total_bs)  # the last batch may overshoot
      save_npz_atomic(path, samples=samples[:keep], progressive_samples=progressive[:keep], step=np.int64(curr_step))
      if part == 0:
        B, K = progressive.shape[:2]
        B = min(B, self.total_bs)
        grid = np.concatenate([progressive[:B], samples[:B, None]], axis=1).reshape(B * (K + 1), *samples.shape[1:])
        utils.save_tiled_imgs(name(part, 'png'), grid, num_col=K + 1)
      self._print('wrote {}'.format(path))
    return paths

  def dump_bpd(self, sess, curr_step, output_dir, train, ema, max_batches=None, save_every_secs=60):
    """Bits/dim of the training (train) or test set, one pass in order (see the module docstring); resumes from a
    `.partial.npz`. max_batches: stop after that many batches (the file name says so). Returns the file's path."""
    split = 'train' if train else 'eval'
    if split not in self._iterators:
      raise UsageError('mode=bpd_eval: dataset {} has no test split; expected mode=bpd_train'.format(
        self.dataset.name))
    tf.io.gfile.makedirs(output_dir)
    out_path = os.path.join(output_dir, 'bpd_{}_ema{}_step{:09d}{}.npz'.format(
      split, int(ema), curr_step, '' if max_batches is None else '_{}batches'.format(max_batches)))
    if tf.io.gfile.exists(out_path):
      raise UsageError('{} already exists; results are never overwritten (move it away to recompute)'.format(
        out_path))
    partial_path = out_path[:-len('.npz')] + '.partial.npz'
    results = {k: [] for k in _BPD_KEYS}
    if tf.io.gfile.exists(partial_path):
      with tf.io.gfile.GFile(partial_path, 'rb') as f:
        with np.load(f) as saved:
          if int(saved['step']) != curr_step or int(saved['batch_size']) != self.total_bs:
            raise UsageError('{} is from another checkpoint or batch size; delete it to start over'.format(
              partial_path))
          results = {k: [saved[k]] for k in _BPD_KEYS}
    done_batches = sum(len(r) for r in results['total_bpd']) // self.total_bs
    self._print('bits/dim of the {} set -> {}'.format('training' if train else 'test', out_path))

    def _save(path):
      arrays = {k: np.concatenate(v) if v else np.zeros([0]) for k, v in results.items()}
      save_npz_atomic(path, step=np.int64(curr_step), batch_size=np.int64(self.total_bs), **arrays)
      return arrays

    self.init_all_iterators(sess)
    next_images = self._next_images[split]
    try:
      for _ in range(done_batches):  # skip what the partial file holds
        sess.run(next_images)
    except tf.errors.OutOfRangeError:
      pass
    if done_batches:
      self._print('resuming after {} batches from {}'.format(done_batches, partial_path))
    last_save, t0, b = time.time(), time.time(), done_batches
    while max_batches is None or b < max_batches:
      try:
        images = sess.run(next_images)
      except tf.errors.OutOfRangeError:
        break
      batch = sess.run(self.bpd_outputs, {self._x: images})
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
      raise UsageError('the data yielded no complete batch of {} images; expected a smaller --total_bs'
                                 .format(self.total_bs))
    arrays = _save(out_path)
    if tf.io.gfile.exists(partial_path):
      tf.io.gfile.remove(partial_path)
    self._print('total bits/dim {:.4f} (prior {:.4f}, L_0 {:.4f}) over {} images -> {}'.format(
      arrays['total_bpd'].mean(), arrays['prior_bpd'].mean(), arrays['terms_bpd'][:, 0].mean(),
      len(arrays['total_bpd']), out_path))
    return out_path

  def run(self, mode, logdir, load_ckpt=None, ema=True, max_batches=None, seed=0, save_every_secs=60,
          num_samples=50000):
    """mode bpd_train, bpd_eval or progressive_samples on one checkpoint: load_ckpt relative to logdir as in the
    original (model.ckpt-N), a prefix, or (None) the latest. Outputs in logdir/simple_eval (module docstring)."""
    check_choice('mode', mode, MODES)
    check_int('max_batches', max_batches, allow_none=True)
    check_int('num_samples', num_samples)
    ckpt = run_dir.resolve_load_ckpt(logdir, load_ckpt)
    if mode == 'bpd_eval' and not self.dataset.num_eval_examples:
      raise UsageError('mode=bpd_eval: dataset {} has no test split; expected mode=bpd_train'.format(
        self.dataset.name))
    out_dir = os.path.join(logdir, 'simple_eval')
    check_writable_dir(out_dir, 'simple_eval dir')
    step = run_dir.checkpoint_step(ckpt)
    self._print('{} of {} (step {}, {} weights)'.format(mode, ckpt, step, 'EMA' if ema else 'raw'))
    with self._make_graphs().as_default():
      with self.dist.session() as sess:
        sess.run(tf.local_variables_initializer())
        run_dir.restore_weights(sess, ckpt, ema=ema)
        if mode == 'progressive_samples':
          return self.dump_progressive_samples(sess, step, os.path.join(out_dir, 'progressive_samples'), ema,
                                               num_samples=num_samples, seed=seed)
        return self.dump_bpd(sess, step, os.path.join(out_dir, 'bpd'), train=mode == 'bpd_train', ema=ema,
                             max_batches=max_batches, save_every_secs=save_every_secs)
