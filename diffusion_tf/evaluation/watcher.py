"""Evaluation of a training run's checkpoints: samples, Inception Score and FID against the real data's reference
statistics (`EvalWorker`, the original's evaluation loop), and the real images' Inception features.
"""

import os
import time

import numpy as np
import tensorflow.compat.v1 as tf

from .. import checks, inception, utils
from ..errors import UsageError
from ..utils import save_npz_atomic, to_uint8, write_json_atomic
from ..runs import checkpoint_recovery
from . import metrics as classifier_metrics_numpy, reference_stats as fid_stats
from ..runs.devices import choose_distribution, distributed
from ..experiments.model import Model
from ..runs.paths import check_writable_dir, is_url
from ..runs.run_dir import checkpoint_step, resolve_checkpoint, resolve_load_ckpt, restore_weights
from ..generate.seeded import build_seeded_samples, run_seeded
from ..sampler_schedules import sampler_settings_name


def default_stats_dir(dataset_name, *, tfds_data_dir=None, tfr_file=None):
  """Where real-data FID statistics are cached: next to the data when it is local (<tfds_data_dir>/fid_stats, or
  the TFRecords' folder /fid_stats), else in the local cache ($DIFFUSION_TF_CACHE or ~/.cache/diffusion_tf)."""
  if dataset_name == 'lsun' and tfr_file and not is_url(tfr_file):
    return os.path.join(os.path.dirname(os.path.abspath(tfr_file)), 'fid_stats')
  if dataset_name in ('cifar10', 'celebahq256') and tfds_data_dir and not is_url(tfds_data_dir):
    return os.path.join(os.path.abspath(os.path.expanduser(tfds_data_dir)), 'fid_stats')
  return os.path.join(inception.cache_dir(), 'fid_stats')


def _divisor_batch_size(n, largest=100):
  """The largest batch size <= `largest` that divides n (the input fns drop the last incomplete batch)."""
  if not n:
    return largest
  return max(b for b in range(1, min(largest, n) + 1) if n % b == 0)


def run_inception(images):
  """{'pool_3': [B, 2048], 'logits': [B, 1008]} of Inception inputs [B, 299, 299, 3] float32 in [-1, 1] (what
  tfgan.eval.preprocess_image returns)."""
  assert images.dtype == tf.float32
  return inception.run_inception(images)


class InceptionFeatures:
  """Inception features of a dataset's images, computed once: the original's reference features.

  dataset: a batched tf.data.Dataset of {'image': [B, H, W, 3] integers in {0..255}, ...} (a dataset input fn's
  output); limit_dataset_size > 0 keeps its first limit_dataset_size batches. Builds its graph in the default graph,
  over the replicas of the tf.distribute `strategy` (each gets its own batches).
  """

  def __init__(self, dataset, strategy, limit_dataset_size=0):
    if limit_dataset_size > 0:
      dataset = dataset.take(limit_dataset_size)
    dist_dataset = strategy.experimental_distribute_dataset(dataset)
    if hasattr(dist_dataset, 'make_initializable_iterator'):  # a distributed dataset
      self.ds_iterator = dist_dataset.make_initializable_iterator()
    else:  # the default strategy returns the dataset itself
      self.ds_iterator = tf.data.make_initializable_iterator(dist_dataset)
    self.inception_real = distributed(
      lambda x_: inception.inception_features(tf.cast(x_['image'], tf.uint8)),
      args=(self.ds_iterator.get_next(),), reduction='concat', strategy=strategy)
    self.cached_inception_real = None  # {'pool_3': [N, 2048] float64}
    self.real_inception_score = None  # the Inception Score of the N images, one split

  def get(self, sess):
    """(cached {'pool_3': [N, 2048] float64}, the images' Inception Score); computed in sess on the first call."""
    if self.cached_inception_real is None:
      sess.run(self.ds_iterator.initializer)
      batches = []
      while True:
        try:
          batches.append(sess.run(self.inception_real))
        except tf.errors.OutOfRangeError:
          break
      features = {k: np.concatenate([b[k] for b in batches]).astype(np.float64) for k in ('pool_3', 'logits')}
      self.real_inception_score = float(classifier_metrics_numpy.classifier_score_from_logits(features['logits']))
      self.cached_inception_real = {'pool_3': features['pool_3']}
    return self.cached_inception_real, self.real_inception_score


def iterate_real_images(input_fn, num_examples=None, batch_size=None):
  """uint8 numpy batches [B, H, W, 3] of a dataset input fn, in its (fixed) order, from a graph of their own.

  batch_size: the input fn's batch size (its last incomplete batch is dropped); default the largest size <= 100
  that divides num_examples, so that every image arrives.
  """
  batch_size = batch_size or _divisor_batch_size(num_examples)
  with tf.Graph().as_default():
    ds = input_fn({'batch_size': batch_size})
    batch = tf.data.make_one_shot_iterator(ds).get_next()
    with tf.Session(config=tf.ConfigProto(device_count={'GPU': 0})) as sess:
      while True:
        try:
          images = sess.run(batch['image'])
        except tf.errors.OutOfRangeError:
          return
        yield images.astype(np.uint8)


def num_reference_images(num_examples, total_bs, limit_dataset_size=0):
  """How many real images the original's evaluation measured: its input fns drop the last incomplete batch of
  total_bs, and it took limit_dataset_size // total_bs batches when limit_dataset_size > 0. None: all (unknown)."""
  if limit_dataset_size > 0:
    num_batches = limit_dataset_size // total_bs
    if num_examples is not None:
      num_batches = min(num_batches, num_examples // total_bs)
    return num_batches * total_bs
  return None if num_examples is None else (num_examples // total_bs) * total_bs


PAPER_IS_SPLITS = 10


def split_is_splits(num_samples):
  """The splits of the evaluation's split Inception Score: the paper's 10, or one per sample when there are fewer
  (the smallest evaluations, e.g. tests, still get a split IS)."""
  return min(PAPER_IS_SPLITS, num_samples)


def split_is_tag(num_samples):
  """The tag of the split IS of `num_samples` samples, named after the splits it used:
  samples/inception50000_10splits, samples/inception8_8splits (its std: the same tag + '_std')."""
  return 'samples/inception{}_{}splits'.format(num_samples, split_is_splits(num_samples))


def reference_statistics(ds, extractor, stats_dir, *, stats_name=None, total_bs=None, limit_dataset_size=0,
                         max_images=None, printer=None):
  """{'train': (stats, path), 'test': (stats, path)} (test only for datasets with a test split): the Frechet
  statistics of a dataset's reference images, computed with `extractor` once and then read from stats_dir.

  The training side is the dataset's reference input (ds.reference_input_fn: the one-pass training set; LSUN: a
  shuffled subset), cached under ds.reference_split_name. total_bs=None: every image of each split (the first
  max_images when given); else the images the original's evaluation measured (num_reference_images: batches of
  total_bs, the last incomplete one dropped, at most limit_dataset_size // total_bs of them).
  printer(split, stats, path) is called for each split.
  """
  stats_name = stats_name or '{}-{}px'.format(ds.name, ds.image_size)
  splits = [('train', ds.reference_split_name, ds.reference_input_fn, ds.num_train_examples)]
  if ds.num_eval_examples:  # None: no test split
    splits.append(('test', 'test', ds.eval_input_fn, ds.num_eval_examples))
  refs = {}
  for key, name, input_fn, count in splits:
    if total_bs is None:
      num, batch_size = (max_images if max_images and (count is None or count > max_images) else None), None
    else:
      num, batch_size = num_reference_images(count, total_bs, limit_dataset_size), total_bs
    stats, path = fid_stats.get_or_compute_statistics(
      stats_dir, dataset=stats_name, split=name, extractor=extractor, num_samples=num,
      allow_fewer=count is None,  # unknown size (LSUN): at most that many, as the original's take()
      batches_fn=lambda input_fn=input_fn, count=count, batch_size=batch_size: iterate_real_images(
        input_fn, count, batch_size))
    if printer is not None:
      printer(key, stats, path)
    refs[key] = (stats, path)
  return refs


class EvalWorker:
  """Samples from a run's checkpoints and measures them: the original's evaluation loop.

  For each checkpoint, with the EMA weights (prefix `eval_ema`) and, unless skip_non_ema_pass, the raw weights
  (prefix `eval`): `num_inception_samples` samples -> <logdir>/eval/step<N>_<ema|noema>_samples.png (a grid) and
  either <samples_dir or logdir/eval>/step<N>_<ema|noema>_samples.npz (dump_samples_only) or the metrics, written
  as TensorBoard scalars under the original's tags and as <logdir>/eval/step<N>_<ema|noema>_metrics.json:

    <prefix>/samples/inception<n>          Inception Score of all n samples (one split), as the original
    <prefix>/samples/inception<n>_<s>splits and _<s>splits_std   the paper's IS: mean and std over s = 10 splits
                                           (s = n when there are fewer than 10 samples; split_is_tag)
    <prefix>/samples/trainfid<n>           FID against the training set
    <prefix>/samples/fid<n>                FID against the test set (datasets with one)
    <prefix>/real_inception_score_train, <prefix>/real_inception_score   IS of the real images (one split)

  The samples come from the original's ancestral sampler over all T steps, or, with sampler_options (the keyword
  arguments of Model.sampler_samples_fn, checked and with defaults filled in), from that sampler: then its settings
  name (sampler_schedules.sampler_settings_name, e.g. dpmsolver++10_order2_linspace) is inserted in every tag
  (eval_ema/<name>/samples/fid<n>) and file name (step<N>_ema_<name>_metrics.json), so that a cheap fast-sampler
  FID track and the original's DDPM-1000 one live side by side in one eval directory.

  Samples reach the Inception graph as floats: clipped to [-1, 1] and mapped to [0, 255] without rounding.
  Reference statistics come from the images the original measured (reference='original'): the dataset's
  reference input (`reference_input_fn`: the one-pass training set; LSUN: shuffled) and its test split, in
  batches of total_bs with the last incomplete batch dropped, at most limit_dataset_size // total_bs batches when
  limit_dataset_size > 0 (run_lsun: 30000); reference='full' uses every image of both splits. Statistics are
  cached in stats_dir. Checkpoints whose outputs exist are skipped, so a restarted worker continues.
  """

  REFERENCES = ('original', 'full')

  def __init__(self, tpu_name, model_constructor, total_bs, dataset, inception_bs=8, num_inception_samples=1024,
               limit_dataset_size=0, *, zone=None, project=None, inception_graph=None, stats_dir=None,
               stats_name=None, num_gpus=None, reference='original', sampler_options=None, printer=print):
    """inception_bs: images per run of the Inception graph (the scripts pass total_bs, as the original; the original
    also drew the metrics' samples in batches of inception_bs, here they are drawn in batches of total_bs)."""
    checks.check_int('num_inception_samples', num_inception_samples, minimum=2)
    checks.check_int('inception_bs', inception_bs)
    checks.check_int('limit_dataset_size', limit_dataset_size, minimum=0)  # 0: no limit
    if reference not in self.REFERENCES:
      raise UsageError('reference={!r}; expected one of {}'.format(reference, ', '.join(self.REFERENCES)))
    self.model_constructor = model_constructor
    self.dataset = dataset
    self.num_inception_samples = num_inception_samples
    self.inception_bs = inception_bs
    self.limit_dataset_size = limit_dataset_size
    self.reference = reference
    self.inception_graph = inception_graph
    self.stats_dir = stats_dir
    self.stats_name = stats_name or '{}-{}px'.format(dataset.name, dataset.image_size)
    self._print = printer
    self.dist = choose_distribution(tpu_name=tpu_name, zone=zone, project=project, num_gpus=num_gpus)
    self.total_bs = total_bs
    self.dist.check_batch_size(total_bs)
    self._extractor = None
    self.sampler_options = sampler_options
    self.sampler_name = None if sampler_options is None else sampler_settings_name(
      sampler_options['sampler'], sampler_options['num_inference_steps'], skip_type=sampler_options['skip_type'],
      solver_order=sampler_options.get('solver_order'), eta=sampler_options.get('eta'),
      use_clipped_model_output=sampler_options.get('use_clipped_model_output', False),
      skip_prk_steps=sampler_options.get('skip_prk_steps', False))

  # -- real data statistics
  def _reference_stats(self):
    return reference_statistics(
      self.dataset, self._extractor, self.stats_dir, stats_name=self.stats_name,
      total_bs=None if self.reference == 'full' else self.total_bs, limit_dataset_size=self.limit_dataset_size,
      printer=lambda split, stats, path: self._print('reference statistics ({} split, {} images, {} set): {}'.format(
        split, stats.get('num_samples'), self.reference, path)))

  def _metrics(self, samples, refs):
    """The metrics of samples [n, H, W, 3] (floats in [-1, 1]) against the reference statistics, under the
    original's names (without the eval_ema/eval prefix), plus the split IS (split_is_tag)."""
    assert samples.dtype in (np.float32, np.float64), samples.dtype  # never rounded before the Inception graph
    n = len(samples)
    moments, logits = fid_stats.RunningMoments(), []
    for start in range(0, n, 500):
      pool_3, batch_logits = self._extractor.features(samples[start:start + 500])
      moments.update(pool_3)
      logits.append(batch_logits)
    mu, sigma = moments.mean_and_covariance()
    logits = np.concatenate(logits)
    is_mean, is_std = classifier_metrics_numpy.inception_score_mean_std(logits, num_splits=split_is_splits(n))
    out = {'samples/inception{}'.format(n): classifier_metrics_numpy.classifier_score_from_logits(logits),
           split_is_tag(n): is_mean,
           split_is_tag(n) + '_std': is_std}
    for key, (stats, path) in refs.items():
      tag = 'trainfid' if key == 'train' else 'fid'
      out['samples/{}{}'.format(tag, n)] = classifier_metrics_numpy.frechet_distance(
        stats['mu'], stats['sigma'], mu, sigma)
      if stats.get('inception_score') is not None:
        out['real_inception_score_train' if key == 'train' else 'real_inception_score'] = stats['inception_score']
    return out

  # -- sampling
  def _build(self):
    model = self.model_constructor()
    assert isinstance(model, Model)
    if self.sampler_options is None:  # the original's sampler
      sample_fn = lambda dummy, y, noise_fn: {'samples': model.samples_fn(dummy, y, noise_fn=noise_fn)['samples']}
    else:
      sample_fn = lambda dummy, y, noise_fn: model.sampler_samples_fn(dummy, y, noise_fn=noise_fn,
                                                                      **self.sampler_options)
    outputs, noises = build_seeded_samples(self.dist, self.total_bs, self.dataset.image_shape, sample_fn)
    return outputs['samples'], noises

  def _sample(self, sess, samples, noises, seed):
    """num_inception_samples float32 samples in (about) [-1, 1], as the model produced them."""
    out, num_batches = [], -(-self.num_inception_samples // self.total_bs)
    t0 = time.time()
    for b in range(num_batches):
      out.append(np.asarray(run_seeded(sess, samples, noises, seed, b), np.float32))
      self._print('  sampled batch {}/{} ({:.0f} s)'.format(b + 1, num_batches, time.time() - t0))
    return np.concatenate(out)[:self.num_inception_samples]

  def run(self, logdir, once: bool, skip_non_ema_pass=True, dump_samples_only=False, load_ckpt=None,
          samples_dir=None, seed=0, poll_secs=60, timeout_secs=None):
    """Evaluate the checkpoints of logdir as they appear (once: one checkpoint, then return).

    load_ckpt: one checkpoint, named relative to logdir as in the original (model.ckpt-790000), or a prefix or
    directory; implies once. samples_dir: where dump_samples_only writes its .npz (default logdir/eval).
    """
    if load_ckpt is not None:
      load_ckpt = resolve_load_ckpt(logdir, load_ckpt)
      once = True
    eval_dir = os.path.join(logdir, 'eval')
    check_writable_dir(eval_dir, 'eval dir')
    dump_dir = samples_dir or eval_dir
    if dump_samples_only and samples_dir:
      check_writable_dir(dump_dir, 'samples_dir')
    passes = [True] if skip_non_ema_pass else [True, False]
    name = '' if self.sampler_name is None else '_' + self.sampler_name
    done_file = lambda step, ema: os.path.join(
      dump_dir if dump_samples_only else eval_dir, 'step{:08d}_{}{}{}'.format(
        step, 'ema' if ema else 'noema', name, '_samples.npz' if dump_samples_only else '_metrics.json'))
    if once:
      load_ckpt = load_ckpt or resolve_checkpoint(logdir)
      done = [done_file(checkpoint_step(load_ckpt), ema) for ema in passes]
      if all(tf.io.gfile.exists(f) for f in done):
        self._print('{} exist: checkpoint {} is already evaluated'.format(', '.join(done), load_ckpt))
        return
    if not dump_samples_only:  # fail on a missing Inception graph before any sampling
      self._extractor = inception.InceptionExtractor(path=self.inception_graph, batch_size=self.inception_bs)
      refs = self._reference_stats()

    with tf.Graph().as_default():
      samples, noises = self._build()
      writer = utils.SummaryWriter(eval_dir, write_graph=False)
      with self.dist.session() as sess:
        sess.run(tf.local_variables_initializer())
        if once:
          ckpts = [load_ckpt]
        else:
          ckpts = tf.train.checkpoints_iterator(logdir, min_interval_secs=poll_secs, timeout=timeout_secs)
        for ckpt in ckpts:
          problem = None if once else checkpoint_recovery.checkpoint_problem(ckpt)
          if problem is not None:  # a listed checkpoint that cannot be read: set aside, wait for the next one
            checkpoint_recovery.set_aside(ckpt, problem, then='; waiting for the next one')
            continue
          step = checkpoint_step(ckpt)
          for ema in passes:
            tag = 'ema' if ema else 'noema'
            prefix = 'eval_ema' if ema else 'eval'  # the original's TensorBoard prefixes
            prefix += '' if self.sampler_name is None else '/' + self.sampler_name
            grid = os.path.join(eval_dir, 'step{:08d}_{}{}_samples.png'.format(step, tag, name))
            out_file = done_file(step, ema)
            if tf.io.gfile.exists(out_file):
              self._print('{} exists: checkpoint {} ({}) is already evaluated'.format(out_file, ckpt, tag))
              continue
            self._print('evaluating {} (step {}, {} weights): {} samples{}'.format(
              ckpt, step, tag, self.num_inception_samples, '' if name == '' else ' of ' + self.sampler_name))
            restore_weights(sess, ckpt, ema=ema)
            samples_float = self._sample(sess, samples, noises, seed)
            images = to_uint8(samples_float)  # for the grid and the dumps; the metrics use the floats
            utils.save_tiled_imgs(grid, images[:100])
            writer.images('{}/samples/samples'.format(prefix), images[:64], step=step)
            if dump_samples_only:
              save_npz_atomic(out_file, arr_0=images)
              self._print('wrote {}'.format(out_file))
              continue
            result = self._metrics(samples_float, refs)
            for k, v in result.items():
              writer.scalar('{}/{}'.format(prefix, k), v, step=step)
            writer.flush()
            result.update(
              checkpoint=ckpt, step=step, weights=tag, num_samples=len(samples_float), seed=seed,
              sampler=dict(self.sampler_options or {'sampler': 'ddpm', 'num_inference_steps': None}),
              reference_images=self.reference, inception_graph=self._extractor.graph_path,
              inception_graph_sha256=self._extractor.graph_sha256,
              **{'ref_stats_' + key: path for key, (_, path) in refs.items()},
              **{'ref_num_images_' + key: int(stats['num_samples']) for key, (stats, _) in refs.items()})
            write_json_atomic(out_file, result)
            n = len(samples_float)
            self._print('step {} {}: {}'.format(step, tag, ', '.join('{} {:.4f}'.format(k, result[k]) for k in [
              'samples/inception{}'.format(n), split_is_tag(n),
              'samples/trainfid{}'.format(n), 'samples/fid{}'.format(n)] if k in result)))
      writer.close()
