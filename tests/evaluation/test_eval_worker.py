"""The evaluation loop measures what the original's did: unrounded float samples, its reference images, its tags."""

import os

import numpy as np
import pytest

from support import inception as helpers_inception
from support.scripts import write_tiny_checkpoint

from diffusion_tf import inception
from diffusion_tf.evaluation import metrics as metrics, watcher
from diffusion_tf.data import catalog as datasets
from diffusion_tf.cli import commands as script_utils
from diffusion_tf.tpu_utils import tpu_utils


def test_reference_image_counts_are_the_originals_drop_remainder_batches():
  assert tpu_utils.num_reference_images(50000, 256) == 49920  # CIFAR-10 train at total_bs 256
  assert tpu_utils.num_reference_images(10000, 256) == 9984  # CIFAR-10 test
  assert tpu_utils.num_reference_images(30000, 128) == 29952  # CelebA-HQ
  assert tpu_utils.num_reference_images(None, 128, limit_dataset_size=30000) == 29952  # LSUN: 234 batches
  assert tpu_utils.num_reference_images(1000, 128, limit_dataset_size=30000) == 896  # the data ends first
  assert tpu_utils.num_reference_images(None, 128) is None  # unknown size, no limit: everything


@pytest.fixture(scope='module')
def standin(tmp_path_factory):
  return helpers_inception.make_standin_inception(tmp_path_factory.mktemp('standin'), seed=3, pool_dim=64)


def _worker(reference, stats_dir, extractor, total_bs=8):
  ds = datasets.get_dataset('digits', resolution=8)
  worker = tpu_utils.EvalWorker(None, lambda: None, total_bs, ds, num_inception_samples=16, stats_dir=stats_dir,
                                reference=reference, printer=lambda *_: None)
  worker._extractor = extractor
  return worker


def test_metrics_of_unrounded_samples_under_the_original_tags(standin, tmp_path):
  rng = np.random.RandomState(0)
  samples = rng.uniform(-1.1, 1.1, size=[16, 8, 8, 3]).astype(np.float32)  # a little outside [-1, 1]: clipped
  with inception.InceptionExtractor(standin) as extractor:
    worker = _worker('original', str(tmp_path / 'stats'), extractor)
    refs = worker._reference_stats()
    out = worker._metrics(samples, refs)
    pool, logits = extractor.features(samples)  # floats: clip, (x + 1) * 127.5, no rounding
    pool_rounded, logits_rounded = extractor.features(script_utils.to_uint8(samples))
    digits = datasets.load_digits_images(8)
    train_pool, train_logits = extractor.features(digits[:1496])  # 1500 training digits -> 187 batches of 8
    test_pool, test_logits = extractor.features(digits[1500:1796])  # 297 test digits -> 37 batches of 8
  assert refs['train'][0]['num_samples'] == 1496 and refs['test'][0]['num_samples'] == 296
  fid = metrics.frechet_classifier_distance_from_activations
  expected = {
    'samples/inception16': metrics.classifier_score_from_logits(logits),
    'samples/inception16_10splits': metrics.inception_score_mean_std(logits, 10)[0],
    'samples/inception16_10splits_std': metrics.inception_score_mean_std(logits, 10)[1],
    'samples/trainfid16': fid(train_pool, pool),
    'samples/fid16': fid(test_pool, pool),
    'real_inception_score_train': metrics.classifier_score_from_logits(train_logits),
    'real_inception_score': metrics.classifier_score_from_logits(test_logits),
  }
  assert sorted(out) == sorted(expected)
  for k, v in expected.items():
    assert out[k] == pytest.approx(v, rel=1e-5), k
  # rounding the samples to uint8 first, as a dump does, would give other numbers
  assert abs(metrics.classifier_score_from_logits(logits_rounded) - out['samples/inception16']) > 1e-4
  assert abs(fid(test_pool, pool_rounded) - out['samples/fid16']) > 1e-4
  with pytest.raises(AssertionError):
    worker._metrics(script_utils.to_uint8(samples), refs)


def test_split_inception_score_tag_names_the_splits_it_used(standin, tmp_path):
  """Fewer than 10 samples get one split per sample, and the tag says so (inception6_6splits), never _10splits."""
  samples = np.random.RandomState(1).uniform(-1., 1., size=[6, 8, 8, 3]).astype(np.float32)
  with inception.InceptionExtractor(standin) as extractor:
    worker = _worker('original', str(tmp_path / 'stats'), extractor)
    out = worker._metrics(samples, refs={})
    _, logits = extractor.features(samples)
  mean, std = metrics.inception_score_mean_std(logits, 6)
  assert sorted(out) == ['samples/inception6', 'samples/inception6_6splits', 'samples/inception6_6splits_std']
  assert out['samples/inception6_6splits'] == pytest.approx(mean, rel=1e-5)
  assert out['samples/inception6_6splits_std'] == pytest.approx(std, rel=1e-5)


def test_reproduce_and_the_evaluation_worker_share_one_reference_statistics_cache(standin, tmp_path):
  """`reproduce` (every image, at most 50,000) and `evaluation --full_reference_sets` read the same files: the
  statistics of a split are computed once, whichever command asks first."""
  stats_dir = str(tmp_path / 'stats')
  with inception.InceptionExtractor(standin) as extractor:
    ds = datasets.get_dataset('digits', resolution=8)
    first = watcher.reference_statistics(ds, extractor, stats_dir, max_images=50000)
    written = sorted(os.listdir(stats_dir))
    second = _worker('full', stats_dir, extractor)._reference_stats()
  assert sorted(os.listdir(stats_dir)) == written and len(written) == 2
  assert {k: path for k, (_, path) in first.items()} == {k: path for k, (_, path) in second.items()}
  # capped below a split's size: the first max_images images, under their own name
  with inception.InceptionExtractor(standin) as extractor:
    capped = watcher.reference_statistics(ds, extractor, stats_dir, max_images=400)
  assert capped['train'][0]['num_samples'] == 400 and capped['test'][0]['num_samples'] == 297


def test_full_reference_sets_use_every_image(standin, tmp_path):
  with inception.InceptionExtractor(standin) as extractor:
    refs = _worker('full', str(tmp_path / 'stats'), extractor)._reference_stats()
  assert refs['train'][0]['num_samples'] == 1500 and refs['test'][0]['num_samples'] == 297
  assert refs['train'][1].endswith('_nall.npz')
  with pytest.raises(tpu_utils.UsageError, match="reference='everything'"):
    tpu_utils.EvalWorker(None, lambda: None, 8, datasets.get_dataset('digits', resolution=8),
                         reference='everything')


def test_lsun_reference_images_are_a_seeded_shuffled_subset(tmp_path):
  from support.data import make_tiny_lsun
  path = str(tmp_path / 'tiny-r04.tfrecords')
  make_tiny_lsun(path, 40, 16)
  ds = datasets.get_dataset('lsun', tfr_file=path, resolution=16)
  in_order = np.concatenate(list(tpu_utils.iterate_real_images(ds.train_one_pass_input_fn, None, 8)))
  subset = np.concatenate(list(tpu_utils.iterate_real_images(ds.reference_input_fn, None, 8)))
  again = np.concatenate(list(tpu_utils.iterate_real_images(ds.reference_input_fn, None, 8)))
  assert len(subset) == len(in_order) == 40
  np.testing.assert_array_equal(subset, again)  # seeded
  assert not np.array_equal(subset, in_order)  # shuffled
  assert sorted(map(bytes, subset)) == sorted(map(bytes, in_order))  # the same images
  assert ds.reference_split_name == 'train-shuffled547'


def test_load_ckpt_is_relative_to_the_model_dir_as_in_the_original(tmp_path):
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  inside = write_tiny_checkpoint(str(model_dir / 'model.ckpt-790000'))
  assert tpu_utils.resolve_load_ckpt(str(model_dir), 'model.ckpt-790000') == inside  # the original's form
  assert tpu_utils.resolve_load_ckpt(str(model_dir), inside) == inside  # a full prefix still works
  assert tpu_utils.resolve_load_ckpt(str(tmp_path), 'run/model.ckpt-790000') == inside
  seen = []
  assert tpu_utils.resolve_load_ckpt(str(tmp_path), 'x', resolve_path=lambda p: seen.append(p) or inside) == inside
  assert seen == ['x']  # not found in the model dir: resolved as a path (e.g. in the bucket)
  with pytest.raises(tpu_utils.UsageError, match='model.ckpt-1 does not exist'):
    tpu_utils.resolve_load_ckpt(str(model_dir), 'model.ckpt-1')


def test_inception_features_and_sample_and_run_inception_as_the_original(standin, monkeypatch):
  """tpu_utils.InceptionFeatures (real images, first limit_dataset_size batches, over a tf.distribute strategy) and
  Model.sample_and_run_inception (samples clipped, mapped to [0, 255], unrounded) give the extractor's features."""
  import tensorflow.compat.v1 as tf
  monkeypatch.setenv(inception.GRAPH_ENV_VAR, standin)
  ds = datasets.get_dataset('digits', resolution=8)
  values = np.random.RandomState(1).uniform(-1.2, 1.2, size=[4, 8, 8, 3]).astype(np.float32)

  class _Constant(tpu_utils.Model):
    def samples_fn(self, dummy_x, y, noise_fn=None):
      return {'samples': tf.constant(values)}

  with tf.Graph().as_default():
    features = tpu_utils.InceptionFeatures(ds.eval_input_fn({'batch_size': 8}), tf.distribute.get_strategy(),
                                           limit_dataset_size=5)
    samples = _Constant().sample_and_run_inception(tf.zeros([4, 8, 8, 3]), tf.zeros([4], tf.int32))
    with tf.Session() as sess:
      cached, real_is = features.get(sess)
      out = sess.run(samples)
  with inception.InceptionExtractor(standin) as extractor:
    pool, logits = extractor.features(datasets.load_digits_images(8)[1500:1540])  # 5 batches of 8 test digits
    sample_pool, _ = extractor.features(values)
  np.testing.assert_allclose(cached['pool_3'], pool, rtol=1e-5, atol=1e-5)
  assert real_is == pytest.approx(metrics.classifier_score_from_logits(logits), rel=1e-5)
  np.testing.assert_allclose(out['samples']['pool_3'], sample_pool, rtol=1e-5, atol=1e-5)


def test_distributed_reduces_over_replicas():
  """tpu_utils.distributed on two CPU replicas of a MirroredStrategy: 'concat' stacks the replicas' outputs,
  'mean' averages them."""
  import tensorflow.compat.v1 as tf
  with tf.Graph().as_default():
    config = tf.ConfigProto(device_count={'CPU': 2})
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    fn = lambda x: {'id': tf.reshape(tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group,
                                             tf.float32), [1]) + x}
    concat = tpu_utils.distributed(fn, args=(tf.constant([10.]),), reduction='concat', strategy=strategy)
    mean = tpu_utils.distributed(fn, args=(tf.constant([10.]),), reduction='mean', strategy=strategy)
    with tf.Session(config=config) as sess:
      out_concat, out_mean = sess.run([concat, mean])
  np.testing.assert_allclose(out_concat['id'], [10., 11.])
  assert out_mean['id'] == pytest.approx(10.5)
  with pytest.raises(NotImplementedError):
    tpu_utils.distributed(fn, args=(), reduction='sum', strategy=None)
