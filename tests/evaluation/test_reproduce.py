"""run_cifar.py reproduce (the paper's protocol in one command) end to end on a tiny digits model with the stand-in
Inception graph and with the digits classifier; the digits classifier itself; weights' provenance; and every
command that reads checkpoints on a checkpoint in the original release's full training layout."""

import json
import os

import numpy as np
import pytest

from support.inception import make_standin_inception
from support.scripts import assert_one_error, load_npz, load_script, run_main, write_original_layout

from diffusion_tf import inception, provenance
from diffusion_tf.evaluation import metrics as metrics
from diffusion_tf.data import catalog as datasets
from diffusion_tf.evaluation import digits_classifier, protocol as reproduce

T = 10
# no network; one private download cache for the module (the digits classifier, trained once, is cached there)
pytestmark = pytest.mark.usefixtures('offline_module')


@pytest.fixture(scope='module')
def digits_run(tiny_run, tmp_path_factory):
  """The conftest's standard tiny run (3 training steps of the 'tiny' U-Net on 8x8 digits, T = 10; read-only), and a
  stand-in Inception graph."""
  root = tmp_path_factory.mktemp('reproduce')
  graph = make_standin_inception(str(root), pool_dim=64)
  return dict(root=root, model_dir=tiny_run('run_cifar'), graph=graph)


def test_reproduce_end_to_end_table_and_json(digits_run, capsys, tmp_path):
  out_dir = str(tmp_path / 'repro')
  args = ['reproduce', '--model_dir={}'.format(digits_run['model_dir']), '--inception_graph={}'.format(
    digits_run['graph']), '--num_samples=20', '--batch_size=10', '--sampler=ddim', '--num_inference_steps=5',
          '--skip_type=quad', '--out_dir={}'.format(out_dir), '--stats_dir={}'.format(tmp_path / 'stats'),
          '--bpd', '--bpd_batches=1']
  code, out, err = run_main(capsys, 'run_cifar', args)
  assert code == 0, err
  result = json.load(open(os.path.join(out_dir, 'results.json')))
  table = open(os.path.join(out_dir, 'table.md')).read()
  assert table in out
  s = result['sampling']
  assert (s['sampler'], s['num_inference_steps'], s['skip_type'], s['seed'], s['ema'], s['step']) == (
    'ddim', 5, 'quad', 0, True, 3)
  assert s['checkpoint'].endswith('model.ckpt-3') and result['features'] == 'inception'
  assert result['feature_network']['sha256'] == inception.load_inception_graph(digits_run['graph']).sha256
  assert sorted(result['reference_statistics']) == ['test', 'train']
  # the numbers, recomputed from the dumped samples and the real images with the metric functions directly
  samples = load_npz(os.path.join(out_dir, 'samples', 'samples.npz'))
  assert samples.shape == (20, 8, 8, 3)
  with inception.InceptionExtractor(path=digits_run['graph']) as ex:
    pool, logits = ex.features(samples)
    images = datasets.load_digits_images(8)
    ref_train, _ = ex.features(images[:datasets.DIGITS_NUM_TRAIN])
    ref_test, _ = ex.features(images[datasets.DIGITS_NUM_TRAIN:])
  m = result['metrics']
  is_mean, is_std = metrics.inception_score_mean_std(logits, num_splits=10)
  assert m['inception_score'] == pytest.approx(is_mean, rel=1e-6)
  assert m['inception_score_std'] == pytest.approx(is_std, rel=1e-5, abs=1e-9)
  for split, ref in [('train', ref_train), ('test', ref_test)]:
    assert m['fid_' + split] == pytest.approx(
      metrics.frechet_classifier_distance_from_activations(ref, pool), rel=1e-5)
  assert m['num_samples'] == 20 and m['bits_per_dim'] > 0
  row = [line for line in table.splitlines() if line.startswith('| **measured**')][0]
  assert 'DDIM-5 (eta 0, quad), EMA weights, step 3' in row and '{:.2f}'.format(m['fid_train']) in row
  assert 'reference' not in table  # published figures are for CIFAR-10 with Inception only
  # a rerun reuses the samples (a new dump would print 'sampling ...')
  code, out, err = run_main(capsys, 'run_cifar', args[:-2])
  assert code == 0, err
  assert 'sampling 20 images' not in out and 'measuring 20 images' in out


def test_reproduce_with_the_digits_classifier_and_real_floor(digits_run, capsys, tmp_path):
  out_dir = str(tmp_path / 'digits')
  code, out, err = run_main(capsys, 'run_cifar', [
    'reproduce', '--model_dir={}'.format(digits_run['model_dir']), '--features=digits', '--num_samples=40',
    '--batch_size=20', '--sampler=ddim', '--num_inference_steps=2', '--out_dir={}'.format(out_dir)])
  assert code == 0, err
  model = json.load(open(os.path.join(out_dir, 'results.json')))
  code, out, err = run_main(capsys, 'run_cifar', [
    'reproduce', '--real_split=test', '--dataset=digits', '--resolution=8', '--features=digits',
    '--out_dir={}'.format(tmp_path / 'real')])
  assert code == 0, err
  real = json.load(open(str(tmp_path / 'real' / 'results.json')))
  assert real['metrics']['num_samples'] == 1797 - datasets.DIGITS_NUM_TRAIN
  assert real['feature_network']['sha256'] == model['feature_network']['sha256'] == digits_classifier.recipe_key()
  assert 'digits-FID train' in open(str(tmp_path / 'real' / 'table.md')).read()
  # held-out real digits against a 3-step model: real digits are far closer to the training digits
  assert real['metrics']['fid_train'] < model['metrics']['fid_train']
  assert real['metrics']['inception_score'] > model['metrics']['inception_score']


def test_reproduce_rejects_bad_flags_before_sampling(digits_run, capsys, tmp_path):
  base = ['reproduce', '--model_dir={}'.format(digits_run['model_dir']), '--out_dir={}'.format(tmp_path / 'bad')]
  code, _, err = run_main(capsys, 'run_cifar', base + ['--features=vgg'])
  assert_one_error(code, err, "features='vgg'", 'inception, digits')
  code, _, err = run_main(capsys, 'run_cifar', base + ['--num_samples=5'])
  assert_one_error(code, err, 'num_samples=5', 'num_splits=10')
  code, _, err = run_main(capsys, 'run_cifar', base + ['--inception_graph={}'.format(tmp_path / 'none.tar.gz')])
  assert_one_error(code, err, 'none.tar.gz')
  code, _, err = run_main(capsys, 'run_cifar', base + ['--features=digits', '--sampler=pndm', '--skip_type=quad'])
  assert_one_error(code, err, 'pndm', 'quad')
  code, _, err = run_main(capsys, 'run_cifar', base + ['--features=digits', '--skip_type=cubic'])
  assert_one_error(code, err, "skip_type='cubic'", 'uniform, quad')
  assert not os.path.exists(str(tmp_path / 'bad' / 'samples'))


def test_reference_table_for_cifar10():
  result = dict(label='DDIM-50', dataset='cifar10', features='inception',
                sampling=dict(sampler='ddim', num_inference_steps=50),
                metrics=dict(inception_score=9.0, inception_score_std=0.1, fid_train=4.0, fid_test=6.0,
                             num_samples=50000))
  table = reproduce.format_table(result)
  assert '| **measured**: DDIM-50 | 9.00 +- 0.10 | 4.00 | 6.00 | - | 50,000 |' in table
  assert '| reference: DDPM paper, Table 1 (EMA, 1000 steps) | 9.46 +- 0.11 | 3.17 | 5.24 | <= 3.75 |' in table
  assert 'reference: DDIM paper, eta 0, S = 50, quadratic spacing | - | 4.67' in table
  assert '12.1 - 12.3' in table and '3.21' in table and '3.25' in table


def test_digits_classifier_is_seeded_cached_and_keyed_by_its_recipe(tmp_path):
  first = digits_classifier.DigitsClassifier(cache_dir=str(tmp_path))
  assert first.test_accuracy > 0.85 and os.path.isfile(first.graph_path)
  again = digits_classifier.DigitsClassifier(cache_dir=str(tmp_path))  # from the cache
  images = datasets.load_digits_images(8)[:50]
  for a, b in zip(first.features(images), again.features(images)):
    np.testing.assert_array_equal(a, b)
  feats, logits = first.features(datasets.load_digits_images(32)[:50])  # larger images are averaged to 8x8
  assert feats.shape == (50, digits_classifier.FEATURE_DIM) and logits.shape == (50, 10)
  changed = dict(digits_classifier.RECIPE, seed=1)
  assert digits_classifier.recipe_key(changed) != digits_classifier.recipe_key()
  with pytest.raises(ValueError, match='multiple of 8'):
    first.features(np.zeros([2, 10, 10, 3], np.uint8))


def test_digits_classifier_gradients_match_finite_differences():
  rng = np.random.RandomState(0)
  recipe = dict(digits_classifier.RECIPE, hidden=5, features=4)
  params = digits_classifier.init_params(rng, recipe)
  x, labels = rng.rand(6, 64), rng.randint(0, 10, 6)

  def loss(p):
    _, _, logits = digits_classifier.forward(p, x)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -log_p[np.arange(6), labels].mean() + 0.005 * sum((p[k] ** 2).sum() for k in ('w1', 'w2', 'w3'))

  grads = digits_classifier.cross_entropy_grads(params, x, labels, weight_decay=0.01)
  for k in ('w1', 'b2', 'w3'):
    idx = np.unravel_index(1, params[k].shape)
    bumped = {n: v.copy() for n, v in params.items()}
    bumped[k][idx] += 1e-6
    assert grads[k][idx] == pytest.approx((loss(bumped) - loss(params)) / 1e-6, rel=1e-3, abs=1e-6)


def test_provenance_from_names_and_the_warning(tmp_path):
  assert provenance.source_weights_from_name('google/ddpm-ema-cifar10-32')[0] == 'ema'
  assert provenance.source_weights_from_name('google/ddpm-cifar10-32')[0] == 'non-ema'
  assert provenance.source_weights_from_name('/data/ddpm-cifar10-32')[0] == 'non-ema'
  assert provenance.source_weights_from_name('/data/my-unet')[0] == 'unknown'
  assert provenance.make_provenance('/data/x', source_weights='ema')['known_from'].startswith('given by the user')
  ckpt = str(tmp_path / 'model.ckpt-0')
  assert provenance.ema_warning(ckpt) is None
  with open(str(tmp_path / provenance.PROVENANCE_FILE), 'w') as f:
    json.dump(provenance.make_provenance('/data/ddpm-cifar10-32'), f)
  warning = provenance.ema_warning(ckpt)
  assert warning.startswith('warning:') and 'non-EMA' in warning and 'FID about 12' in warning


def test_converted_non_ema_weights_warn_once_when_sampled_as_ema(digits_run, capsys, tmp_path):
  convert = load_script('convert_diffusers_checkpoint')
  exported = str(tmp_path / 'ddpm-cifar10-32')  # named like the hub's non-EMA repository
  convert.main(['to_diffusers', '--ckpt', digits_run['model_dir'], '--out', exported, '--resolution', '8'])
  converted = str(tmp_path / 'converted')
  convert.main(['to_tf', '--src', exported, '--out', converted, '--repo_id', 'google/ddpm-cifar10-32'])
  out, _ = capsys.readouterr()
  assert 'source weights: non-ema' in out
  record = json.load(open(os.path.join(converted, provenance.PROVENANCE_FILE)))
  assert record['source_weights'] == 'non-ema' and record['repo_id'] == 'google/ddpm-cifar10-32'
  flags = ['--model_name=tiny', '--num_diffusion_timesteps={}'.format(T), '--dataset=digits', '--resolution=8',
           '--num_samples=2', '--batch_size=2', '--sampler=ddim', '--num_inference_steps=2']
  code, _, err = run_main(capsys, 'run_cifar', ['sample', '--checkpoint={}'.format(converted),
                                                '--out_dir={}'.format(tmp_path / 's')] + flags)
  assert code == 0, err
  assert len([line for line in err.splitlines() if line.startswith('warning:')]) == 1
  info = json.load(open(str(tmp_path / 's' / 'info.json')))
  assert info['provenance']['source_weights'] == 'non-ema'
  code, _, err = run_main(capsys, 'run_cifar', ['sample', '--checkpoint={}'.format(converted), '--noema',
                                                '--out_dir={}'.format(tmp_path / 'raw')] + flags)
  assert code == 0 and 'warning:' not in err
  # the user's word wins over the name
  convert.main(['to_tf', '--src', exported, '--out', str(tmp_path / 'c2'), '--source_weights', 'ema'])
  assert json.load(open(str(tmp_path / 'c2' / provenance.PROVENANCE_FILE)))['source_weights'] == 'ema'


def test_every_checkpoint_command_reads_the_original_full_training_layout(digits_run, capsys, tmp_path,
                                                                          monkeypatch):
  """live weights, Adam slots, beta powers, EMA shadows and global_step, as the released checkpoints hold them"""
  model_dir = str(tmp_path / 'original')
  ckpt = write_original_layout(os.path.join(digits_run['model_dir'], 'model.ckpt-3'), model_dir, global_step=7,
                               kwargs_json=os.path.join(digits_run['model_dir'], 'kwargs.json'))
  assert ckpt.endswith('model.ckpt-7')
  monkeypatch.setenv(inception.GRAPH_ENV_VAR, digits_run['graph'])
  stats = ['--stats_dir={}'.format(tmp_path / 'stats')]
  for argv in [
      ['sample', '--model_dir={}'.format(model_dir), '--num_samples=2', '--batch_size=2', '--sampler=ddim',
       '--num_inference_steps=2'],
      ['sample', '--checkpoint={}'.format(ckpt), '--num_samples=2', '--batch_size=2', '--noema', '--out_dir={}'.format(
        tmp_path / 'raw')],
      ['simple_eval', '--model_dir={}'.format(model_dir), '--mode=bpd_eval', '--total_bs=3', '--max_batches=1'],
      ['evaluation', '--model_dir={}'.format(model_dir), '--once', '--num_inception_samples=4', '--total_bs=2'] + stats,
      ['reproduce', '--checkpoint={}'.format(ckpt), '--num_samples=10', '--batch_size=10', '--sampler=ddim',
       '--num_inference_steps=2'] + stats]:
    code, out, err = run_main(capsys, 'run_cifar', argv)
    assert code == 0, (argv[0], err)
  assert json.load(open(os.path.join(model_dir, 'reproduce', 'ddim2_ema_seed0_n10', 'results.json')))[
    'sampling']['step'] == 7
  assert os.path.isfile(os.path.join(model_dir, 'eval', 'step00000007_ema_metrics.json'))
