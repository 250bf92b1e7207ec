"""The flags of `run_cifar.py reproduce`, `run_celebahq.py interpolate` and `run_celebahq.py denoising_trajectory`
change what runs the way their documentation says. Each command runs through its command line (fire, in
this process) on tiny digits models (8x8, T = 10) and is compared with a computation written here:

- reproduce, sampling (--model_dir, --checkpoint, --num_samples, --batch_size, --sampler, --num_inference_steps,
  --eta, --skip_type, --skip_prk_steps, --seed, --ema, --out_dir): its samples.npz holds exactly the images of a
  `sample` dump with the same flags (tests/test_flags_sample.py proves those against numpy samplers), for two
  non-default combinations on two checkpoints.
- reproduce, numbers (--features, --inception_graph, --num_splits, --stats_dir, --real_split, --tfds_data_dir): the
  stand-in Inception graph (tests/helpers_inception.py) is evaluated in numpy (below), the digits classifier's
  features are its own numpy forward pass, and IS = exp(mean_x KL(p(y|x) || p(y))) per split (mean and std over
  equal contiguous splits) and FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2) are written out here. The statistics
  files must be where --stats_dir (or, by default, --tfds_data_dir) says, and a tampered file must be reused.
- reproduce --bpd/--bpd_batches: bits/dim equals `simple_eval --mode=bpd_eval` of the same checkpoint, weights,
  seed, batch size and number of batches.
- reproduce --num_gpus: there is no GPU here. The flag goes to devices.choose_distribution, the one device choice of
  every command (the `sample` dump and the bits/dim worker), whose multi-replica path test_flags_eval.py and
  test_training.py run on 2 CPU devices. Here --num_gpus=1 must reach that choice on both paths (one GPU asked of
  none is an error); every other test runs its CPU path (the default).
- interpolate and denoising_trajectory: the original's interpolate_fn (q_sample of both images to step t, the
  latents mixed with lambda in linspace(0, 1, num_lambdas), the reverse process from t) and
  samples_fn_denoising_trajectory (x_T and the first repeat_noise_steps steps share one draw across the batch) are
  written here in numpy around the U-Net, whose weights are loaded here from the checkpoint by name (the EMA
  shadows `<name>/ExponentialMovingAverage` or the raw weights), fed the commands' documented noise: draw k is
  stateless_normal(seed=(seed, k)).

Every flag value used differs from its default and changes the result, so a flag dropped after validation fails a
test (each was checked by breaking the library's use of it).
"""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from support.data import make_tiny_cifar10
from support.metrics import frechet_distance as _fid
from support.metrics import gaussian as _gaussian
from support.metrics import inception_score as _inception_score
from support.metrics import split_inception_score as _split_inception_score
from support.inception import PB_NAME, make_standin_inception, standin_reference
from support.scripts import LARGE_LR_FLAGS, assert_one_error, copy_run, load_npz, load_script, run_main

from diffusion_tf import inception, utils
from diffusion_tf.diffusion_core import GaussianDiffusionBase
from diffusion_tf.data import catalog as datasets
from diffusion_tf.runs import devices
from diffusion_tf.evaluation import digits_classifier

T = 10
# with beta_end = 0.02 and T = 10 the chain barely leaves x_T; 0.5 gives alphabar_T = 0.04 (as test_flags_sample)
BETA_END = 0.5
BETAS = np.linspace(1e-4, BETA_END, T)  # the linear schedule
ABAR = np.cumprod(1. - BETAS)
# the conftest's tiny run (8x8 digits, T = 10, warmup 0, a checkpoint after every step) with a large lr and EMA decay
# 0.5 (helpers_scripts.LARGE_LR_FLAGS; the run_celebahq run is shared with test_original_editing.py and
# test_flags_eval.py): the U-Net's output layer starts at zero, one step at a large lr gives an eps that depends on x
# and t, and the EMA weights are another network than the raw ones
TRAIN_FLAGS = LARGE_LR_FLAGS
assert TRAIN_FLAGS['beta_end'] == BETA_END
GRAPH_SEED, POOL_DIM = 3, 16  # a stand-in Inception graph of its own; 16 features: full-rank covariances


@pytest.fixture(scope='module')
def graph(offline_module, tmp_path_factory):
  """The stand-in Inception graph: (tarball path, sha256 of its .pb)."""
  d = tmp_path_factory.mktemp('graph')
  tar = make_standin_inception(d, seed=GRAPH_SEED, pool_dim=POOL_DIM)
  with open(os.path.join(str(d), PB_NAME), 'rb') as f:
    return tar, hashlib.sha256(f.read()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Metrics written out

def _v1_bilinear(n_in, n_out=299):
  """[n_out, n_in]: TF's v1 resize_bilinear along one axis (output i reads the input at i n_in / n_out)."""
  x = np.arange(n_out) * (n_in / n_out)
  lo = np.floor(x).astype(int)
  hi = np.minimum(lo + 1, n_in - 1)
  m = np.zeros([n_out, n_in])
  m[np.arange(n_out), lo] += 1. - (x - lo)
  m[np.arange(n_out), hi] += x - lo
  return m


def _standin_features(images):
  """(pool_3 [N, D], logits [N, 1008]) of uint8 images under the stand-in graph, in numpy: resize to 299 x 299,
  (x - 128) / 128, then the network, which reads only the means of the 4 x 4 cells of 60 x 60 pixels. The resize
  is linear with rows that sum to 1, so a cell's mean is the cell's mean resize row applied to the pixels; the
  network is fed images constant on each cell."""
  N, H = images.shape[:2]
  cell = _v1_bilinear(H)[:240].reshape(4, 60, H).mean(axis=1)  # [4, H]
  cells = (np.einsum('ih,nhwc,jw->nijc', cell, images.astype(np.float64), cell) - 128.) / 128.  # [N, 4, 4, 3]
  pools, logits = [], []
  for start in range(0, N, 50):
    blocks = np.repeat(np.repeat(cells[start:start + 50], 60, axis=1), 60, axis=2)  # [n, 240, 240, 3]
    pool, logit = standin_reference(blocks, seed=GRAPH_SEED, pool_dim=POOL_DIM)
    pools.append(pool)
    logits.append(logit)
  return np.concatenate(pools), np.concatenate(logits)


def _digits_features(images):
  """(features [N, 32], logits [N, 10]) of the digits classifier: its cached weights, the forward pass here."""
  clf = digits_classifier.DigitsClassifier()
  p = clf.params
  grey = images.astype(np.float64).mean(axis=-1).reshape(len(images), 64) / 255.  # 8x8 images: no block average
  h1 = np.maximum(grey.dot(p['w1']) + p['b1'], 0.)
  h2 = np.maximum(h1.dot(p['w2']) + p['b2'], 0.)
  return h2, h2.dot(p['w3']) + p['b3']










def _digits_splits():
  images = datasets.load_digits_images(8)
  return {'train': images[:datasets.DIGITS_NUM_TRAIN], 'test': images[datasets.DIGITS_NUM_TRAIN:]}


def _assert_distinct(*values, rel=1e-2):
  """Numbers a test tells apart differ by far more than its tolerance (rel: at least 10x the test's)."""
  values = sorted(values)
  for a, b in zip(values, values[1:]):
    assert b - a > rel * max(abs(a), abs(b)), values


# ---------------------------------------------------------------------------------------------------------------
# run_cifar.py reproduce

SAMPLING_A = dict(sampler='ddim', num_inference_steps=3, eta=0.5, skip_type='quad', seed=5, ema=False,
                  num_samples=20, batch_size=10)
SAMPLING_B = dict(sampler='pndm', num_inference_steps=3, skip_prk_steps=True, num_samples=10,
                  batch_size=10)  # EMA weights and seed 0: the defaults


def _argv(flags):
  """A dict of flags as command-line arguments (True: --flag, False: --noflag)."""
  return [('--' if v else '--no') + k if isinstance(v, bool) else '--{}={}'.format(k, v) for k, v in flags.items()]


@pytest.fixture(scope='module')
def cifar_run(offline_module, tiny_run):
  """run_cifar on 8x8 digits: checkpoints after steps 1 and 2 (read-only). Two steps, not the three of
  test_flags_eval.py's run with these flags: the samples of step 3's raw weights are so far from the digits that
  their FIDs against the train and the test split differ by less than 1%, too little to tell the splits apart."""
  model_dir = tiny_run('run_cifar', max_steps=2, **TRAIN_FLAGS)
  assert os.path.isfile(os.path.join(model_dir, 'model.ckpt-1.index'))
  return model_dir


@pytest.fixture(scope='module')
def repro(cifar_run, graph, tmp_path_factory):
  """reproduce A: the latest checkpoint, DDIM with SAMPLING_A, the stand-in graph, 4 IS splits; returns
  (results.json, out_dir, stats_dir)."""
  root = tmp_path_factory.mktemp('repro')
  out_dir, stats_dir = str(root / 'out'), str(root / 'stats')
  load_script('run_cifar').reproduce(
    model_dir=cifar_run, out_dir=out_dir, inception_graph=graph[0], num_splits=4, stats_dir=stats_dir,
    **SAMPLING_A)
  with open(os.path.join(out_dir, 'results.json')) as f:
    return json.load(f), out_dir, stats_dir


@pytest.fixture(scope='module')
def repro_digits(cifar_run, tmp_path_factory):
  """reproduce B: --checkpoint=model.ckpt-1, PNDM with SAMPLING_B, the digits classifier, 2 IS splits, the default
  statistics directory; returns (results.json, out_dir)."""
  out_dir = str(tmp_path_factory.mktemp('repro_digits') / 'out')
  load_script('run_cifar').reproduce(
    checkpoint=os.path.join(cifar_run, 'model.ckpt-1'), out_dir=out_dir, features='digits', num_splits=2,
    **SAMPLING_B)
  with open(os.path.join(out_dir, 'results.json')) as f:
    return json.load(f), out_dir


def _samples(out_dir):
  return load_npz(os.path.join(out_dir, 'samples', 'samples.npz'))


def test_reproduce_samples_are_the_sample_dump_of_the_same_flags(cifar_run, repro, repro_digits, capsys, tmp_path):
  """--model_dir, --checkpoint, --sampler, --num_inference_steps, --eta, --skip_type, --skip_prk_steps, --seed,
  --ema/--noema, --num_samples, --batch_size, --out_dir: reproduce's samples are, bit for bit, those `sample` dumps
  with the same flags (DDIM eta 0.5 quad with seed 5 and the raw weights of the latest checkpoint in 2 batches; PNDM
  without PRK steps with the EMA weights of model.ckpt-1). A flag that reproduce dropped would draw other images:
  another sampler, schedule, noise, weights or batch layout (the noise of batch b is seeded by b)."""
  for (result, out_dir), source, flags in [(repro[:2], '--model_dir={}'.format(cifar_run), SAMPLING_A),
                                           (repro_digits, '--checkpoint={}'.format(
                                             os.path.join(cifar_run, 'model.ckpt-1')), SAMPLING_B)]:
    dump_dir = str(tmp_path / os.path.basename(os.path.dirname(out_dir)))
    code, _, err = run_main(capsys, 'run_cifar', ['sample', source, '--out_dir={}'.format(dump_dir)] + _argv(flags))
    assert code == 0, err
    dump = load_npz(os.path.join(dump_dir, 'samples.npz'))
    assert dump.shape == (flags['num_samples'], 8, 8, 3)
    np.testing.assert_array_equal(_samples(out_dir), dump)
    with open(os.path.join(dump_dir, 'info.json')) as f:
      info = json.load(f)
    assert result['sampling']['checkpoint'] == info['checkpoint']
    assert result['samples'] == os.path.join(out_dir, 'samples', 'samples.npz')
  assert repro[0]['sampling']['checkpoint'].endswith('model.ckpt-2')
  assert repro_digits[0]['sampling']['checkpoint'].endswith('model.ckpt-1')
  assert not np.array_equal(_samples(repro[1])[:10], _samples(repro_digits[1]))


SAMPLING_SOLVER = dict(sampler='unipc', num_inference_steps=4, solver_order=3, skip_type='karras', num_samples=10,
                       batch_size=10)


def test_reproduce_solver_order_and_skip_type_reach_the_dump_and_results_json(cifar_run, capsys, tmp_path):
  """--solver_order and --skip_type of reproduce (UniPC order 3 over the Karras timesteps): its samples are bit for
  bit those `sample` dumps with the same flags, and results.json (sampling) and its label record the order and the
  spacing; reproduce dropping either would sample with order 2 and linspace, which results.json would say. The
  default --out_dir names them too (reproduce._out_dir)."""
  from diffusion_tf.cli import reproduce
  out_dir, dump_dir = str(tmp_path / 'repro'), str(tmp_path / 'dump')
  result = load_script('run_cifar').reproduce(model_dir=cifar_run, out_dir=out_dir, features='digits', num_splits=2,
                                              **SAMPLING_SOLVER)
  code, _, err = run_main(capsys, 'run_cifar', ['sample', '--model_dir={}'.format(cifar_run),
                                                '--out_dir={}'.format(dump_dir)] + _argv(SAMPLING_SOLVER))
  assert code == 0, err
  np.testing.assert_array_equal(_samples(out_dir), load_npz(os.path.join(dump_dir, 'samples.npz')))
  with open(os.path.join(out_dir, 'results.json')) as f:
    assert json.load(f)['sampling'] == result['sampling']
  assert {k: result['sampling'][k] for k in ('sampler', 'num_inference_steps', 'solver_order', 'skip_type')} == dict(
    sampler='unipc', num_inference_steps=4, solver_order=3, skip_type='karras')
  assert result['label'].startswith('UNIPC-4 (order 3, karras), EMA')
  name = lambda **kw: os.path.basename(reproduce._out_dir(None, '/run', None, None, **dict(dict(
    num_inference_steps=None, skip_type='uniform', solver_order=None, ema=True, seed=0, num_samples=10), **kw)))
  assert name(sampler='ddpm') == 'ddpm_ema_seed0_n10'  # today's names of ddpm / ddim unchanged
  assert name(sampler='ddim', num_inference_steps=50, skip_type='quad') == 'ddim50_quad_ema_seed0_n10'
  assert name(sampler='unipc', num_inference_steps=4, solver_order=3, skip_type='karras') == (
    'unipc4_order3_karras_ema_seed0_n10')


def test_reproduce_inception_score_splits_and_fid_are_numpy_of_the_standin_graph(repro, graph):
  """--features=inception with --inception_graph and --num_splits=4: IS mean and std over 4 splits of the 20
  samples, and FID against the digits' train and test images, all from the stand-in graph evaluated in numpy; the
  graph's sha256 is recorded. Ignored, --inception_graph would leave no graph to load (offline), and --num_splits
  would give the 10-split IS, which differs."""
  result = repro[0]
  m = result['metrics']
  pool, logits = _standin_features(_samples(repro[1]))
  is_mean, is_std = _split_inception_score(logits, 4)
  _assert_distinct(is_mean, _split_inception_score(logits, 10)[0])
  assert result['num_splits'] == 4 and m['num_samples'] == 20
  assert m['inception_score'] == pytest.approx(is_mean, rel=1e-4)
  assert m['inception_score_std'] == pytest.approx(is_std, rel=1e-3)
  assert m['inception_score_one_split'] == pytest.approx(_inception_score(logits), rel=1e-4)
  fids = {split: _fid(_gaussian(_standin_features(images)[0]), _gaussian(pool))
          for split, images in _digits_splits().items()}
  _assert_distinct(*fids.values(), rel=1e-3)  # compared below at rel 1e-4
  for split, value in fids.items():
    assert m['fid_' + split] == pytest.approx(value, rel=1e-4), split
  assert result['features'] == 'inception'
  assert result['feature_network'] == {'path': graph[0], 'sha256': graph[1]}


def test_reproduce_stats_dir_is_written_and_a_tampered_file_reused(cifar_run, repro, graph, capsys, tmp_path):
  """--stats_dir: the reference statistics of the train and test split are written there, named
  digits-8px_<split>_inception-<sha256[:12]>_nall.npz (fid_stats' documented names), and a rerun reads them: with the
  train file's mean shifted by 1, FID train becomes the numpy FID against the shifted mean and FID test stays."""
  result, out_dir, stats_dir = repro
  names = {split: 'digits-8px_{}_inception-{}_nall.npz'.format(split, graph[1][:12]) for split in ('train', 'test')}
  assert sorted(os.listdir(stats_dir)) == sorted(names.values())
  assert result['reference_statistics'] == {s: os.path.join(stats_dir, n) for s, n in names.items()}
  tampered = str(tmp_path / 'stats')
  shutil.copytree(stats_dir, tampered)
  path = os.path.join(tampered, names['train'])
  with np.load(path) as f:
    arrays = {k: f[k] for k in f.files}
  arrays['mu'] = arrays['mu'] + 1.
  np.savez(path, **arrays)
  rerun = str(tmp_path / 'rerun')
  shutil.copytree(os.path.join(out_dir, 'samples'), os.path.join(rerun, 'samples'))  # the same samples, reused
  code, out, err = run_main(capsys, 'run_cifar', [
    'reproduce', '--model_dir={}'.format(cifar_run), '--out_dir={}'.format(rerun),
    '--inception_graph={}'.format(graph[0]), '--num_splits=4', '--stats_dir={}'.format(tampered)] + _argv(SAMPLING_A))
  assert code == 0, err
  assert 'sampling ' not in out and sorted(os.listdir(tampered)) == sorted(names.values())
  with open(os.path.join(rerun, 'results.json')) as f:
    m = json.load(f)['metrics']
  pool = _standin_features(_samples(out_dir))[0]
  train_pool = _standin_features(_digits_splits()['train'])[0]
  mu, sigma = _gaussian(train_pool)
  expected = _fid((mu + 1., sigma), _gaussian(pool))
  _assert_distinct(expected, result['metrics']['fid_train'])
  assert m['fid_train'] == pytest.approx(expected, rel=1e-4)
  assert m['fid_test'] == pytest.approx(result['metrics']['fid_test'], rel=1e-9)


def test_reproduce_bpd_of_bpd_batches_equals_simple_eval(cifar_run, repro, capsys, tmp_path, monkeypatch):
  """--bpd --bpd_batches=2: the bits/dim recorded is the mean total bits/dim of `simple_eval --mode=bpd_eval` on the
  same checkpoint with the same weights (--noema), batch size (10) and 2 batches: 20 test images. The bound's x_t
  are random draws (as in the original); here both commands draw them as stateless_normal(seed=(11, t)). Dropped,
  --bpd_batches would measure all test images (and --bpd none); the EMA weights give another number."""
  real_q_sample = GaussianDiffusionBase.q_sample

  def _q_sample(self, x_start, t, noise=None):
    if noise is None:
      noise = tf.random.stateless_normal(x_start.shape.as_list(), seed=tf.stack(
        [tf.constant(11, tf.int64), tf.cast(t[0], tf.int64)]))
    return real_q_sample(self, x_start, t, noise=noise)

  monkeypatch.setattr(GaussianDiffusionBase, 'q_sample', _q_sample)
  out_dir = str(tmp_path / 'bpd')
  model_dir = copy_run(cifar_run, tmp_path / 'run')  # simple_eval writes into the run
  shutil.copytree(os.path.join(repro[1], 'samples'), os.path.join(out_dir, 'samples'))  # reused: no sampling
  code, _, err = run_main(capsys, 'run_cifar', [
    'reproduce', '--model_dir={}'.format(model_dir), '--out_dir={}'.format(out_dir), '--features=digits',
    '--num_splits=4', '--bpd', '--bpd_batches=2'] + _argv(SAMPLING_A))
  assert code == 0, err
  with open(os.path.join(out_dir, 'results.json')) as f:
    m = json.load(f)['metrics']
  code, _, err = run_main(capsys, 'run_cifar', [
    'simple_eval', '--model_dir={}'.format(model_dir), '--mode=bpd_eval', '--total_bs=10', '--max_batches=2',
    '--noema'])
  assert code == 0, err
  with np.load(os.path.join(model_dir, 'simple_eval', 'bpd', 'bpd_eval_ema0_step000000002_2batches.npz')) as f:
    total = f['total_bpd']
  assert total.shape == (20,) and m['bits_per_dim_num_images'] == 20
  assert m['bits_per_dim'] == pytest.approx(float(total.mean()), rel=1e-6)


def test_reproduce_features_digits_are_the_digits_classifiers_numbers(repro_digits):
  """--features=digits (and --num_splits=2): digits-IS over 2 splits of the 10 samples and digits-FID against the
  digits' train and test images, from the classifier's forward pass computed here; its recipe key is recorded, and
  the statistics go to the default directory, <cache>/fid_stats. With Inception features the run would need a graph
  (none here)."""
  result, out_dir = repro_digits
  m = result['metrics']
  feats, logits = _digits_features(_samples(out_dir))
  is_mean, is_std = _split_inception_score(logits, 2)
  assert m['inception_score'] == pytest.approx(is_mean, rel=1e-6)
  assert m['inception_score_std'] == pytest.approx(is_std, rel=1e-5, abs=1e-9)
  for split, images in _digits_splits().items():
    assert m['fid_' + split] == pytest.approx(_fid(_gaussian(_digits_features(images)[0]), _gaussian(feats)),
                                              rel=1e-5), split
  assert result['features'] == 'digits' and result['feature_network']['sha256'] == digits_classifier.recipe_key()
  stats_dir = os.path.join(inception.cache_dir(), 'fid_stats')
  assert all(os.path.dirname(p) == stats_dir for p in result['reference_statistics'].values())


def test_reproduce_real_split_measures_that_split_of_tfds_data_dir(graph, capsys, tmp_path):
  """--real_split=train / test with --dataset=cifar10 --tfds_data_dir=<a CIFAR-10 look-alike>: the measured images
  are that split of the look-alike (IS of one split, num_samples), so FID against the same split is 0 and against
  the other split is numpy's; the statistics are cached in <tfds_data_dir>/fid_stats (the default --stats_dir).
  Dropped, --tfds_data_dir would leave no data (offline) and --real_split would measure the other split."""
  data_dir = str(tmp_path / 'tfds')
  tiny = make_tiny_cifar10(data_dir, n_train=30, n_test=20, seed=4)
  feats = {split: _standin_features(tiny[split]) for split in ('train', 'test')}
  fid_between = _fid(_gaussian(feats['train'][0]), _gaussian(feats['test'][0]))
  for split, other in [('train', 'test'), ('test', 'train')]:
    out_dir = str(tmp_path / split)
    code, _, err = run_main(capsys, 'run_cifar', [
      'reproduce', '--real_split={}'.format(split), '--dataset=cifar10', '--tfds_data_dir={}'.format(data_dir),
      '--inception_graph={}'.format(graph[0]), '--num_splits=1', '--out_dir={}'.format(out_dir)])
    assert code == 0, err
    with open(os.path.join(out_dir, 'results.json')) as f:
      result = json.load(f)
    m = result['metrics']
    assert result['samples'] is None and result['sampling']['real_split'] == split
    assert m['num_samples'] == len(tiny[split])
    assert m['inception_score'] == pytest.approx(_inception_score(feats[split][1]), rel=1e-4)
    assert abs(m['fid_' + split]) < 1e-3 * fid_between
    assert m['fid_' + other] == pytest.approx(fid_between, rel=1e-4)
  assert len(os.listdir(os.path.join(data_dir, 'fid_stats'))) == 2


def test_reproduce_num_gpus_reaches_the_device_choice_of_sampling_and_bpd(cifar_run, repro, capsys, tmp_path,
                                                                        monkeypatch):
  """--num_gpus=1 with no GPU: an error naming the flag and the 0 visible GPUs, from the sample dump (nothing
  written) and, when the samples exist, from the bits/dim worker. Dropped, both runs would go on on the CPU."""
  monkeypatch.setattr(devices, '_count_local_gpus', lambda: 0)
  base = ['reproduce', '--model_dir={}'.format(cifar_run), '--features=digits', '--num_splits=4'] + _argv(SAMPLING_A)
  code, _, err = run_main(capsys, 'run_cifar', base + ['--out_dir={}'.format(tmp_path / 'a'), '--num_gpus=1'])
  assert_one_error(code, err, 'num_gpus=1', '0 visible GPU')
  assert not os.path.exists(str(tmp_path / 'a' / 'samples' / 'samples.npz'))
  shutil.copytree(os.path.join(repro[1], 'samples'), str(tmp_path / 'b' / 'samples'))
  code, _, err = run_main(capsys, 'run_cifar', base + ['--out_dir={}'.format(tmp_path / 'b'), '--num_gpus=1',
                                                       '--bpd', '--bpd_batches=1'])
  assert_one_error(code, err, 'num_gpus=1', '0 visible GPU')
  assert not os.path.exists(str(tmp_path / 'b' / 'results.json'))


# ---------------------------------------------------------------------------------------------------------------
# run_celebahq.py interpolate and denoising_trajectory

@pytest.fixture(scope='module')
def celeb(offline_module, tiny_run, checkpoint_network, tmp_path_factory):
  """run_celebahq on 8x8 digits (checkpoints after steps 1 and 2; read-only), two digit PNGs, and the U-Net as a
  numpy function of a checkpoint's weights, loaded here by name, and the commands' seeded noise."""
  model_dir = tiny_run('run_celebahq', max_steps=2, **TRAIN_FLAGS)
  root = tmp_path_factory.mktemp('celeb')
  pixels = datasets.load_digits_images(8)[[3, 7]]
  pngs = []
  for i, img in enumerate(pixels):
    pngs.append(str(root / 'digit{}.png'.format(i)))
    utils.write_png(pngs[-1], img)
  network = checkpoint_network(load_script('run_celebahq').Model(
    model_name='tiny', betas=BETAS, loss_type='noisepred', num_classes=1, dropout=0., randflip=0, block_size=1),
    [8, 8, 3])

  def net(ckpt, ema):
    """eps(x [n, 8, 8, 3], t) of the checkpoint's EMA or raw weights, as float64."""
    return lambda x, t: network.load(ckpt, ema).eps(x, t)

  def noise(seed, k, n):
    return network.noise(seed, k, [n, 8, 8, 3])

  return dict(model_dir=model_dir, ckpt=lambda step: os.path.join(model_dir, 'model.ckpt-{}'.format(step)),
              pngs=pngs, pixels=pixels, net=net, noise=noise)


def _p_sample(x, t, eps, z):
  """x_{t-1} ~ p(x_{t-1} | x_t) of the eps model with fixed small variance (DDPM eqs. 6, 7, 11): the posterior at
  x_0 = clip((x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)), and no noise at t = 0."""
  a, a_prev = ABAR[t], (ABAR[t - 1] if t > 0 else 1.)
  x0 = np.clip((x - np.sqrt(1. - a) * eps) / np.sqrt(a), -1., 1.)
  mean = BETAS[t] * np.sqrt(a_prev) / (1. - a) * x0 + (1. - a_prev) * np.sqrt(1. - BETAS[t]) / (1. - a) * x
  return mean + (np.sqrt(BETAS[t] * (1. - a_prev) / (1. - a)) * z if t > 0 else 0.)


def _interpolation(celeb, ckpt, ema, img1, img2, t, lam, seed):
  """The original's interpolate_fn: x1 and x2 (draws 1 and 2) diffused to step t, mixed, denoised from t."""
  eps, noise = celeb['net'](ckpt, ema), celeb['noise']
  x1, x2 = img1[None] / 127.5 - 1., img2[None] / 127.5 - 1.
  x = ((1. - lam) * (np.sqrt(ABAR[t]) * x1 + np.sqrt(1. - ABAR[t]) * noise(seed, 1, 1)) +
       lam * (np.sqrt(ABAR[t]) * x2 + np.sqrt(1. - ABAR[t]) * noise(seed, 2, 1)))
  for k, s in enumerate(range(t, -1, -1)):
    x = _p_sample(x, s, eps(x, s), noise(seed, k + 3, 1))
  return x[0]


def _trajectory(celeb, ckpt, ema, num_samples, repeat_noise_steps, seed):
  """The original's samples_fn_denoising_trajectory: the chain [T + 1, B, 8, 8, 3] from x_T (draw 1) with step k's
  noise draw k + 2, one draw shared by the batch for x_T (if repeat_noise_steps >= 0) and steps k < r."""
  eps, noise = celeb['net'](ckpt, ema), celeb['noise']
  draw = lambda k, shared: (np.repeat(noise(seed, k, 1), num_samples, axis=0) if shared else
                            noise(seed, k, num_samples))
  chain = [draw(1, repeat_noise_steps >= 0)]
  for k, t in enumerate(range(T - 1, -1, -1)):
    chain.append(_p_sample(chain[-1], t, eps(chain[-1], t), draw(k + 2, k < repeat_noise_steps)))
  return np.stack(chain)


def _to_uint8(x):
  return np.clip(np.round((x + 1.) * 127.5), 0, 255).astype(np.uint8)


def _assert_same_images(images, reference):
  """uint8 images equal up to float32-vs-float64 rounding: at most 1 level off, on few pixels."""
  diff = np.abs(images.astype(int) - _to_uint8(reference).astype(int))
  assert diff.max() <= 1 and (diff > 0).mean() < 0.02, (diff.max(), (diff > 0).mean())


def _assert_different(a, b):
  assert np.abs(a.astype(int) - b.astype(int)).max() > 2, 'the flag did not change the images'


def test_interpolate_image_t_lambdas_seed_and_weights_match_the_latent_mix_computed_here(celeb, capsys, tmp_path):
  """--image1, --image2, --t, --num_lambdas, --seed, --ema/--noema, --model_dir, --checkpoint, --out_dir: the row
  is image1, the mixtures for lambda in linspace(0, 1, num_lambdas), image2, each mixture the numpy interpolation
  of those images at that depth with that seed's draws (the same for every lambda) and that checkpoint's EMA or raw
  weights. The three mixtures of a row differ, and so do the EMA and raw rows."""
  a, b = celeb['pngs']
  runs = {
    'ema': (['--model_dir={}'.format(celeb['model_dir']), '--image1={}'.format(a), '--image2={}'.format(b), '--t=3',
             '--num_lambdas=3', '--seed=4'], (celeb['ckpt'](2), True, 0, 1, 3, 4)),
    'raw': (['--model_dir={}'.format(celeb['model_dir']), '--image1={}'.format(a), '--image2={}'.format(b), '--t=3',
             '--num_lambdas=3', '--seed=4', '--noema'], (celeb['ckpt'](2), False, 0, 1, 3, 4)),
    'ckpt1': (['--checkpoint={}'.format(celeb['ckpt'](1)), '--image1={}'.format(b), '--image2={}'.format(a),
               '--t=6', '--num_lambdas=2', '--noema'], (celeb['ckpt'](1), False, 1, 0, 6, 0)),
  }
  rows = {}
  for name, (flags, (ckpt, ema, i1, i2, t, seed)) in runs.items():
    out_dir = str(tmp_path / name)
    code, _, err = run_main(capsys, 'run_celebahq', ['interpolate', '--out_dir={}'.format(out_dir)] + flags)
    assert code == 0, (name, err)
    with np.load(os.path.join(out_dir, 'interpolation.npz')) as f:
      row, lams = f['arr_0'], f['lambdas']
    num_lambdas = 3 if name != 'ckpt1' else 2
    np.testing.assert_allclose(lams, np.arange(num_lambdas) / (num_lambdas - 1.))
    assert row.shape == (num_lambdas + 2, 8, 8, 3)
    np.testing.assert_array_equal(row[0], celeb['pixels'][i1])
    np.testing.assert_array_equal(row[-1], celeb['pixels'][i2])
    for j, lam in enumerate(lams):
      _assert_same_images(row[1 + j], _interpolation(celeb, ckpt, ema, celeb['pixels'][i1], celeb['pixels'][i2],
                                                     t, lam, seed))
    rows[name] = row
  for j, k in [(1, 2), (2, 3), (1, 3)]:
    _assert_different(rows['ema'][j], rows['ema'][k])
  _assert_different(rows['ema'][1:4], rows['raw'][1:4])


def test_denoising_trajectory_frames_repeat_noise_seed_and_weights_match_the_chain_computed_here(celeb, capsys,
                                                                                               tmp_path):
  """--num_samples, --num_frames, --repeat_noise_steps, --seed, --ema/--noema, --model_dir, --checkpoint,
  --out_dir: the frames round(linspace(0, T, num_frames)) of the numpy chains from that seed's draws and that
  checkpoint's weights, times T - 1 - frame. With --repeat_noise_steps=3 the chains are one up to frame 3 and part
  at frame 7; with -1 they differ from x_T on."""
  runs = {
    'ema': (['--model_dir={}'.format(celeb['model_dir']), '--num_samples=2', '--num_frames=4',
             '--repeat_noise_steps=3', '--seed=2'], (celeb['ckpt'](2), True, 2, 4, 3, 2)),
    'raw': (['--model_dir={}'.format(celeb['model_dir']), '--num_samples=2', '--num_frames=4',
             '--repeat_noise_steps=3', '--seed=2', '--noema'], (celeb['ckpt'](2), False, 2, 4, 3, 2)),
    'ckpt1': (['--checkpoint={}'.format(celeb['ckpt'](1)), '--num_samples=3', '--num_frames=11',
               '--repeat_noise_steps=-1', '--noema'], (celeb['ckpt'](1), False, 3, 11, -1, 0)),
  }
  seqs = {}
  for name, (flags, (ckpt, ema, num_samples, num_frames, repeat, seed)) in runs.items():
    out_dir = str(tmp_path / name)
    code, _, err = run_main(capsys, 'run_celebahq', ['denoising_trajectory', '--out_dir={}'.format(out_dir)] + flags)
    assert code == 0, (name, err)
    with np.load(os.path.join(out_dir, 'trajectory.npz')) as f:
      seq, times = f['arr_0'], f['times']
    frames = np.round(np.linspace(0, T, num_frames)).astype(int)
    assert seq.shape == (num_samples, num_frames, 8, 8, 3)
    np.testing.assert_array_equal(times, T - 1 - frames)
    chain = _trajectory(celeb, ckpt, ema, num_samples, repeat, seed)
    for i in range(num_samples):
      _assert_same_images(seq[i], chain[frames, i])
    seqs[name] = seq
  np.testing.assert_array_equal(seqs['ema'][0, :2], seqs['ema'][1, :2])  # frames 0 and 3: shared noise so far
  _assert_different(seqs['ema'][0, 2], seqs['ema'][1, 2])
  _assert_different(seqs['ckpt1'][0, 0], seqs['ckpt1'][1, 0])
  _assert_different(seqs['ema'], seqs['raw'])
