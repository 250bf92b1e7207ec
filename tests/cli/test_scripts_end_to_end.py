"""Every subcommand of the three scripts end to end on tiny configs: a cifar10 look-alike prepared by the real tfds
builder (run_cifar.py), the embedded digits (run_celebahq.py, with space_to_depth) and tiny LSUN TFRecords
(run_lsun.py). The Inception network is the stand-in of helpers_inception; nothing touches the network."""

import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from support.data import block_network, make_tiny_cifar10, make_tiny_lsun
from support.inception import make_standin_inception
from support.scripts import assert_one_error, checkpoint_steps, load_npz, load_script, read_scalars, run_main

from diffusion_tf import inception
from diffusion_tf.evaluation import metrics as metrics
from diffusion_tf.generate import dump as sample_dump

T = 10  # diffusion steps of every tiny model here


@pytest.fixture(scope='module')
def cifar_run(tmp_path_factory):
  """A tiny cifar10 run: 3 training steps of the 'tiny' U-Net on 10 look-alike images (4 test images)."""
  root = tmp_path_factory.mktemp('cifar')
  tfds_dir = str(root / 'tfds')
  make_tiny_cifar10(tfds_dir, n_train=10, n_test=4)
  run_cifar = load_script('run_cifar')
  log_dir = str(root / 'logs')
  run_cifar.train(exp_name='e2e', model_name='tiny', total_bs=4, num_diffusion_timesteps=T, warmup=2,
                  tfds_data_dir=tfds_dir, log_dir=log_dir, max_steps=3, save_checkpoints_steps=3,
                  save_summary_steps=1)
  model_dir, = [os.path.join(log_dir, '9999-99-99', d) for d in os.listdir(os.path.join(log_dir, '9999-99-99'))]
  return dict(root=root, tfds_dir=tfds_dir, model_dir=model_dir)


def test_train_writes_the_original_layout(cifar_run):
  model_dir = cifar_run['model_dir']
  assert os.path.basename(model_dir) == (
    'e2e_cifar10_tiny_adam_bs4_lr0.0002w2_beta0.0001-0.02-linear_t10_eps-fixedlarge-mse_dropout0.1_randflip1')
  kwargs = json.load(open(os.path.join(model_dir, 'kwargs.json')))
  assert kwargs['dataset'] == 'cifar10' and kwargs['image_size'] == 32 and kwargs['lr'] == 2e-4
  assert checkpoint_steps(model_dir)[-1] == 3
  scalars = read_scalars(model_dir)
  assert {'train/loss', 'train/gnorm', 'train/pnorm', 'train/lr'} <= set(scalars)
  # warm-up: lr = 2e-4 * min(step / 2, 1); the summary of step s is written after update s - 1 (at global step s-1)
  lr = scalars['train/lr']
  assert lr[1] == pytest.approx(0.) and lr[3] == pytest.approx(2e-4)
  ckpt_vars = tf.train.load_checkpoint(os.path.join(model_dir, 'model.ckpt-3')).get_variable_to_shape_map()
  assert 'model/conv_in/W/ExponentialMovingAverage' in ckpt_vars and 'model/conv_in/W/Adam' in ckpt_vars


def test_evaluation_once_writes_metrics_matching_numpy(cifar_run, capsys, monkeypatch):
  attempts = block_network(monkeypatch)
  graph = make_standin_inception(cifar_run['root'])
  model_dir = cifar_run['model_dir']
  common = ['--model_dir={}'.format(model_dir), '--tfds_data_dir={}'.format(cifar_run['tfds_dir']),
            '--num_inception_samples=8', '--total_bs=4', '--once']
  missing = os.path.join(str(cifar_run['root']), 'no_inception.tar.gz')
  code, out, err = run_main(capsys, 'run_cifar', ['evaluation', '--inception_graph={}'.format(missing)] + common)
  assert_one_error(code, err, missing, 'does not exist')
  code, out, err = run_main(capsys, 'run_cifar', ['evaluation', '--inception_graph={}'.format(graph)] + common)
  assert code == 0, err
  result = json.load(open(os.path.join(model_dir, 'eval', 'step00000003_ema_metrics.json')))
  assert result['num_samples'] == 8 and result['step'] == 3 and result['reference_images'] == 'original'
  # the original's reference images: drop-remainder batches of total_bs (10 training images -> 8, 4 test -> 4)
  assert result['ref_num_images_train'] == 8 and result['ref_num_images_test'] == 4
  scalars = read_scalars(os.path.join(model_dir, 'eval'))
  assert {'eval_ema/samples/inception8', 'eval_ema/samples/trainfid8', 'eval_ema/samples/fid8',
          'eval_ema/samples/inception8_8splits', 'eval_ema/samples/inception8_8splits_std',
          'eval_ema/real_inception_score_train', 'eval_ema/real_inception_score'} <= set(scalars), sorted(scalars)
  assert os.path.exists(os.path.join(model_dir, 'eval', 'step00000003_ema_samples.png'))
  # the same seeded samples, dumped, give the same numbers computed independently here
  code, out, err = run_main(capsys, 'run_cifar', ['evaluation', '--dump_samples_only'] + common)
  assert code == 0, err
  samples = load_npz(os.path.join(model_dir, 'eval', 'step00000003_ema_samples.npz'))
  assert samples.shape == (8, 32, 32, 3) and samples.dtype == np.uint8
  with inception.InceptionExtractor(path=graph) as extractor:
    pool, logits = extractor.features(samples)
    test_pool, _ = extractor.features(_tfds_images(cifar_run['tfds_dir'], 'test'))
  # (the metrics saw the unrounded samples, the dump holds them rounded to uint8: close, not equal)
  assert result['samples/inception8'] == pytest.approx(metrics.classifier_score_from_logits(logits), rel=1e-2)
  assert result['samples/inception8_8splits'] == pytest.approx(
    metrics.inception_score_mean_std(logits, 8)[0], rel=1e-2)
  mu, sigma = metrics.mean_and_covariance(pool)
  mu_t, sigma_t = metrics.mean_and_covariance(test_pool)
  assert result['samples/fid8'] == pytest.approx(metrics.frechet_distance(mu_t, sigma_t, mu, sigma), rel=1e-2)
  assert 'samples/trainfid8' in result
  # a rerun skips the evaluated checkpoint; the TensorBoard scalars are there
  code, out, _ = run_main(capsys, 'run_cifar', ['evaluation', '--inception_graph={}'.format(graph)] + common)
  assert code == 0 and 'already evaluated' in out
  assert not attempts


def _tfds_images(tfds_dir, split):
  from diffusion_tf.data import catalog as datasets
  ds = datasets.get_dataset('cifar10', tfds_data_dir=tfds_dir)
  input_fn = ds.eval_input_fn if split == 'test' else ds.train_one_pass_input_fn
  from diffusion_tf.tpu_utils.tpu_utils import iterate_real_images
  return np.concatenate(list(iterate_real_images(input_fn, 4)))


def test_simple_eval_bits_per_dim_and_progressive(cifar_run, capsys):
  model_dir = cifar_run['model_dir']
  base = ['simple_eval', '--model_dir={}'.format(model_dir), '--tfds_data_dir={}'.format(cifar_run['tfds_dir']),
          '--total_bs=4']
  for mode, n in [('bpd_train', 8), ('bpd_eval', 4)]:  # 10 train images: 2 full batches; 4 test images: 1
    code, _, err = run_main(capsys, 'run_cifar', base + ['--mode={}'.format(mode)])
    assert code == 0, err
    with np.load(os.path.join(model_dir, 'simple_eval', 'bpd', 'bpd_{}_ema1_step000000003.npz'.format(
        mode[len('bpd_'):]))) as f:
      total, terms, prior, mse = f['total_bpd'], f['terms_bpd'], f['prior_bpd'], f['mse']
    assert total.shape == prior.shape == (n,) and terms.shape == mse.shape == (n, T)
    np.testing.assert_allclose(total, terms.sum(axis=1) + prior, rtol=1e-5)  # the bound is the sum of its terms
    assert np.all(terms > 0) and np.all(prior > 0) and np.all(mse >= 0)
  code, _, err = run_main(capsys, 'run_cifar', base + ['--mode=bpd_eval'])  # never overwritten
  assert_one_error(code, err, 'already exists')
  # progressive samples: the original's default count is 50,000; --num_samples asks for fewer. The checkpoint is
  # named as in the original, relative to the model dir.
  code, _, err = run_main(capsys, 'run_cifar', base + ['--mode=progressive_samples', '--num_samples=6',
                                                       '--load_ckpt=model.ckpt-3'])
  assert code == 0, err
  part = os.path.join(model_dir, 'simple_eval', 'progressive_samples',
                      'samples_xstartpred_ema1_step000000003_part{:06d}.npz')
  with np.load(part.format(0)) as f:  # 6 samples: 2 batches of 4 in one part, the last 2 samples dropped
    assert f['samples'].shape == (6, 32, 32, 3) and f['progressive_samples'].shape == (6, T, 32, 32, 3)
    assert f['samples'].dtype == np.uint8
  assert not os.path.exists(part.format(1))
  assert signature_default('simple_eval', 'num_samples') == 50000
  code, _, err = run_main(capsys, 'run_cifar', base + ['--mode=bpd_sometimes'])
  assert_one_error(code, err, "mode='bpd_sometimes'")


def test_sample_is_seeded_resumable_and_never_overwrites(cifar_run, capsys, monkeypatch, tmp_path):
  model_dir = cifar_run['model_dir']
  base = ['sample', '--model_dir={}'.format(model_dir), '--num_samples=6', '--batch_size=4', '--seed=3']
  code, out, err = run_main(capsys, 'run_cifar', base + ['--out_dir={}'.format(tmp_path / 'a')])
  assert code == 0, err
  a = load_npz(str(tmp_path / 'a' / 'samples.npz'))
  assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8 and a.std() > 0
  assert os.path.exists(str(tmp_path / 'a' / 'grid.png'))
  assert json.load(open(str(tmp_path / 'a' / 'info.json')))['step'] == 3

  # an interrupted dump (the second batch fails) continues where it stopped, with the same images
  calls = []
  real_save = sample_dump.save_npz_atomic

  def _failing_save(path, **arrays):
    calls.append(path)
    if len(calls) == 2:
      raise KeyboardInterrupt('simulated interruption')
    return real_save(path, **arrays)

  monkeypatch.setattr(sample_dump, 'save_npz_atomic', _failing_save)  # where the dump writes its batches
  with pytest.raises(KeyboardInterrupt):
    run_main(capsys, 'run_cifar', base + ['--out_dir={}'.format(tmp_path / 'b')])
  monkeypatch.setattr(sample_dump, 'save_npz_atomic', real_save)
  code, out, err = run_main(capsys, 'run_cifar', base + ['--out_dir={}'.format(tmp_path / 'b'), '--output_type=png'])
  assert code == 0, err
  assert 'resuming: 1 of 2 batches already done' in out
  from PIL import Image
  b = np.stack([np.asarray(Image.open(str(tmp_path / 'b' / 'images' / '{:06d}.png'.format(i)))) for i in range(6)])
  np.testing.assert_array_equal(a, b)
  assert not os.path.exists(str(tmp_path / 'b' / '.shards'))

  # another seed gives other images; an existing dump is never overwritten
  code, _, err = run_main(capsys, 'run_cifar', base[:-1] + ['--seed=4', '--out_dir={}'.format(tmp_path / 'c')])
  assert code == 0, err
  assert not np.array_equal(a, load_npz(str(tmp_path / 'c' / 'samples.npz')))
  code, _, err = run_main(capsys, 'run_cifar', base + ['--out_dir={}'.format(tmp_path / 'a')])
  assert_one_error(code, err, 'never overwrite')


def test_sample_fast_samplers_and_raw_weights(cifar_run, capsys, tmp_path):
  model_dir = cifar_run['model_dir']
  base = ['sample', '--model_dir={}'.format(model_dir), '--num_samples=2', '--batch_size=2']
  outs = {}
  for name, flags in [('ddim', ['--sampler=ddim', '--num_inference_steps=5']),
                      ('ddim_again', ['--sampler=ddim', '--num_inference_steps=5']),
                      ('pndm', ['--sampler=pndm', '--num_inference_steps=5']),
                      ('ddpm5', ['--sampler=ddpm', '--num_inference_steps=5']),
                      ('noema', ['--sampler=ddim', '--num_inference_steps=5', '--noema'])]:
    code, _, err = run_main(capsys, 'run_cifar', base + flags + ['--out_dir={}'.format(tmp_path / name)])
    assert code == 0, (name, err)
    outs[name] = load_npz(str(tmp_path / name / 'samples.npz'))
    assert outs[name].shape == (2, 32, 32, 3)
  np.testing.assert_array_equal(outs['ddim'], outs['ddim_again'])
  assert not np.array_equal(outs['ddim'], outs['noema'])  # EMA and raw weights differ after 3 steps
  code, _, err = run_main(capsys, 'run_cifar', base + ['--sampler=ddim', '--num_inference_steps=11'])
  assert_one_error(code, err, 'num_inference_steps=11')


def test_sample_from_a_converted_checkpoint_equals_the_run(cifar_run, capsys, tmp_path):
  """Published-weights route: our run -> diffusers directory -> TF checkpoint (scripts/convert_diffusers_checkpoint.py),
  then `sample --checkpoint` with no kwargs.json (train() defaults plus flags) gives the run's own images."""
  convert = load_script('convert_diffusers_checkpoint')
  exported, converted = str(tmp_path / 'diffusers'), str(tmp_path / 'converted')
  convert.main(['to_diffusers', '--ckpt', cifar_run['model_dir'], '--out', exported, '--resolution', '32'])
  convert.main(['to_tf', '--src', exported, '--out', converted, '--global_step', '3'])
  flags = ['--num_samples=2', '--batch_size=2', '--sampler=ddim', '--num_inference_steps=4', '--seed=5']
  code, _, err = run_main(capsys, 'run_cifar', ['sample', '--model_dir={}'.format(cifar_run['model_dir']),
                                                '--out_dir={}'.format(tmp_path / 'run')] + flags)
  assert code == 0, err
  code, out, err = run_main(capsys, 'run_cifar', [
    'sample', '--checkpoint={}'.format(converted), '--out_dir={}'.format(tmp_path / 'conv'), '--model_name=tiny',
    '--num_diffusion_timesteps={}'.format(T)] + flags)
  assert code == 0, err
  assert 'no kwargs.json' in out
  np.testing.assert_array_equal(load_npz(str(tmp_path / 'run' / 'samples.npz')),
                                load_npz(str(tmp_path / 'conv' / 'samples.npz')))
  # without the architecture flags the converter's unet_hparams.json gives the U-Net: the same images
  code, _, err = run_main(capsys, 'run_cifar', ['sample', '--checkpoint={}'.format(converted),
                                                '--num_diffusion_timesteps={}'.format(T),
                                                '--out_dir={}'.format(tmp_path / 'noflags')] + flags)
  assert code == 0, err
  np.testing.assert_array_equal(load_npz(str(tmp_path / 'run' / 'samples.npz')),
                                load_npz(str(tmp_path / 'noflags' / 'samples.npz')))
  # without unet_hparams.json the defaults (the paper's 35.7M U-Net) do not fit: one clear error naming the flags
  os.remove(os.path.join(converted, 'unet_hparams.json'))
  code, _, err = run_main(capsys, 'run_cifar', ['sample', '--checkpoint={}'.format(converted),
                                                '--out_dir={}'.format(tmp_path / 'bad')] + flags)
  assert_one_error(code, err, converted, 'expected a checkpoint of the same model configuration', '--model_name')


@pytest.mark.slow
def test_celebahq_script_with_space_to_depth(tmp_path, capsys):
  run_celebahq = load_script('run_celebahq')
  model_dir = str(tmp_path / 'run')
  run_celebahq.train(exp_name='c', dataset='digits', resolution=8, model_name='tiny', block_size=2, total_bs=4,
                     num_diffusion_timesteps=T, model_dir=model_dir, max_steps=2, warmup=2, save_checkpoints_steps=2)
  kwargs = json.load(open(os.path.join(model_dir, 'kwargs.json')))
  assert kwargs['block_size'] == 2 and kwargs['loss_type'] == 'noisepred' and kwargs['lr'] == 2e-5
  # the U-Net sees 4x4 images with 3 * 2^2 channels
  shapes = tf.train.load_checkpoint(os.path.join(model_dir, 'model.ckpt-2')).get_variable_to_shape_map()
  assert shapes['model/conv_in/W'] == [3, 3, 12, 32] and shapes['model/conv_out/W'] == [3, 3, 32, 12]
  for extra in [[], ['--progressive']]:
    code, _, err = run_main(capsys, 'run_celebahq', ['sample', '--model_dir={}'.format(model_dir),
                                                     '--num_samples=2', '--batch_size=2'] + extra)
    assert code == 0, err
  samples_root = os.path.join(model_dir, 'samples')
  plain, progressive = sorted(os.listdir(samples_root))
  assert load_npz(os.path.join(samples_root, plain, 'samples.npz')).shape == (2, 8, 8, 3)
  seq = load_npz(os.path.join(samples_root, progressive, 'progressive.npz'))
  assert seq.shape == (2, T + 1, 8, 8, 3)  # x_0 predictions at t = T-1 .. 0, then the sample
  # the last x_0 prediction (t = 0) is the final sample up to the clipping and rounding of both
  assert np.abs(seq[:, -2].astype(int) - seq[:, -1].astype(int)).max() <= 1


@pytest.mark.slow
def test_lsun_script_train_dump_and_sample(tmp_path, capsys):
  tfr = str(tmp_path / 'lsun' / 'church-r04.tfrecords')
  make_tiny_lsun(tfr, 8, 16)
  run_lsun = load_script('run_lsun')
  model_dir = str(tmp_path / 'run')
  run_lsun.train(exp_name='l', tfr_file=tfr, model_name='tiny', total_bs=4, num_diffusion_timesteps=T,
                 model_dir=model_dir, max_steps=2, warmup=2, save_checkpoints_steps=2)
  assert json.load(open(os.path.join(model_dir, 'kwargs.json')))['image_size'] == 16
  code, _, err = run_main(capsys, 'run_lsun', ['evaluation', '--model_dir={}'.format(model_dir), '--once',
                                               '--dump_samples_only', '--num_inception_samples=4', '--total_bs=4'])
  assert code == 0, err
  assert load_npz(os.path.join(model_dir, 'eval', 'step00000002_ema_samples.npz')).shape == (4, 16, 16, 3)
  code, _, err = run_main(capsys, 'run_lsun', ['sample', '--model_dir={}'.format(model_dir), '--num_samples=2',
                                               '--batch_size=2', '--sampler=ddim', '--num_inference_steps=3'])
  assert code == 0, err


def test_progressive_samples_resume_with_the_same_images(cifar_run, tmp_path):
  """dump_progressive_samples in parts of batches_per_flush batches: a missing part is made again, identical."""
  from diffusion_tf.data import catalog as datasets
  from diffusion_tf.evaluation import simple_eval as simple_eval_worker
  from diffusion_tf.tpu_utils import tpu_utils
  model_dir = cifar_run['model_dir']
  run_cifar = load_script('run_cifar')
  ds = datasets.get_dataset('cifar10', tfds_data_dir=cifar_run['tfds_dir'])
  kwargs = tpu_utils.load_train_kwargs(model_dir)
  worker = simple_eval_worker.SimpleEvalWorker(None, lambda: run_cifar._load_model(kwargs, ds), 2, ds,
                                               printer=lambda *_: None)
  with worker._make_graphs().as_default(), worker.dist.session() as sess:
    sess.run(tf.local_variables_initializer())
    tpu_utils.restore_weights(sess, os.path.join(model_dir, 'model.ckpt-3'), ema=True)
    dump = lambda: worker.dump_progressive_samples(sess, 3, str(tmp_path), True, num_samples=4, batches_per_flush=1)
    paths = dump()
    assert len(paths) == 2
    first = [load_npz_key(p, 'samples') for p in paths]
    mtime0 = os.path.getmtime(paths[0])
    os.remove(paths[1])
    assert dump() == paths
  assert os.path.getmtime(paths[0]) == mtime0  # kept
  np.testing.assert_array_equal(load_npz_key(paths[1], 'samples'), first[1])  # the same noise for batch 1
  assert not np.array_equal(first[0], first[1])


def load_npz_key(path, key):
  with np.load(path) as f:
    return f[key]


def signature_default(command, flag):
  import inspect
  return inspect.signature(getattr(load_script('run_cifar'), command)).parameters[flag].default
