"""A checkpoint converted from diffusers (scripts/convert_diffusers_checkpoint.py to_tf) of a U-Net that is none of
the scripts' named configurations is read by every command without model flags: its unet_hparams.json gives the
U-Net. The fixture tests/fixtures/diffusers_tiny is a random UNet2DModel for 16x16 images: ch 32, ch_mult (1, 2), one
residual block per level, attention at 8x8 (none of run_cifar.py's configurations)."""

import json
import os
import shutil

import numpy as np
import pytest

from support.inception import make_standin_inception
from support.scripts import REPO, assert_one_error, load_script, run_main

from diffusion_tf import inception
from diffusion_tf.experiments import cifar10

FIXTURE = os.path.join(REPO, 'tests', 'fixtures', 'diffusers_tiny')
FAST = ['--num_samples=2', '--batch_size=2', '--sampler=ddim', '--num_inference_steps=2']
pytestmark = pytest.mark.usefixtures('offline_module')


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('converted') / 'ckpt')
  load_script('convert_diffusers_checkpoint').main(['to_tf', '--src', FIXTURE, '--out', out])
  return out


def test_the_fixture_is_none_of_the_named_configurations(converted):
  hparams = json.load(open(os.path.join(converted, 'unet_hparams.json')))
  assert hparams['resolution'] == 16 and hparams['ch'] == 32 and list(hparams['attn_resolutions']) == [8]
  named = [(c['ch'], tuple(c['ch_mult']), c['num_res_blocks'], tuple(c['attn_resolutions']))
           for c in cifar10.MODEL_CONFIGS.values()]
  assert (32, (1, 2), 1, (8,)) not in named


def test_sample_reads_the_converted_unet_with_no_model_flags(converted, capsys, tmp_path):
  out_dir = str(tmp_path / 's')
  code, out, err = run_main(capsys, 'run_cifar', ['sample', '--checkpoint={}'.format(converted), '--dataset=digits',
                                                  '--out_dir={}'.format(out_dir)] + FAST)
  assert code == 0, err
  assert 'unet_hparams.json' in out
  with np.load(os.path.join(out_dir, 'samples.npz')) as f:
    assert f['arr_0'].shape == (2, 16, 16, 3) and f['arr_0'].dtype == np.uint8
  info = json.load(open(os.path.join(out_dir, 'info.json')))
  assert info['kwargs_from'] == os.path.join(converted, 'unet_hparams.json') and info['kwargs_json'] is None
  assert info['image_size'] == 16


@pytest.mark.parametrize('flag,needles', [
  ('--model_name=tiny', ['--model_name=tiny', 'unet_hparams.json', 'attn_resolutions=(8,)']),
  ('--resolution=32', ['--resolution=32', 'image size 16']),
])
def test_a_flag_that_contradicts_the_converted_unet_is_one_error(converted, capsys, tmp_path, flag, needles):
  code, _, err = run_main(capsys, 'run_cifar', ['sample', '--checkpoint={}'.format(converted), '--dataset=digits',
                                               '--out_dir={}'.format(tmp_path / 's'), flag] + FAST)
  assert_one_error(code, err, *needles)
  assert not os.path.exists(str(tmp_path / 's'))


def test_a_genuine_mismatch_names_the_flags_that_set_the_model_size(converted, capsys, tmp_path):
  # learned variances double the U-Net's output channels: the converted weights cannot fill that model
  code, _, err = run_main(capsys, 'run_cifar', [
    'sample', '--checkpoint={}'.format(converted), '--dataset=digits', '--model_var_type=learned',
    '--loss_type=kl', '--out_dir={}'.format(tmp_path / 's')] + FAST)
  assert_one_error(code, err, 'has shape [3, 3, 32, 3]', '--model_name', '--model_var_type=learned',
                   'unet_hparams.json')
  # without unet_hparams.json the script's defaults build the paper's U-Net: the same error says what to pass
  bare = str(tmp_path / 'bare')
  shutil.copytree(converted, bare)
  os.remove(os.path.join(bare, 'unet_hparams.json'))
  code, _, err = run_main(capsys, 'run_cifar', ['sample', '--checkpoint={}'.format(bare), '--dataset=digits',
                                               '--resolution=16', '--out_dir={}'.format(tmp_path / 'b')] + FAST)
  assert_one_error(code, err, 'has shape [32, 128]', '--model_name', '--resolution')


def test_reproduce_with_the_digits_classifier_and_no_model_flags(converted, capsys, tmp_path):
  out_dir = str(tmp_path / 'r')
  code, _, err = run_main(capsys, 'run_cifar', [
    'reproduce', '--checkpoint={}'.format(converted), '--dataset=digits', '--features=digits', '--num_samples=4',
    '--batch_size=4', '--num_splits=2', '--sampler=ddim', '--num_inference_steps=2', '--out_dir={}'.format(out_dir)])
  assert code == 0, err
  result = json.load(open(os.path.join(out_dir, 'results.json')))
  assert result['image_size'] == 16 and result['metrics']['num_samples'] == 4
  # the fixture's provenance is 'unknown' (its folder name says nothing): the table does not claim EMA weights
  assert 'unknown' in result['label'] and 'EMA weights' not in result['label']


@pytest.mark.slow
def test_simple_eval_and_evaluation_read_the_converted_unet(converted, capsys, tmp_path, monkeypatch):
  run = str(tmp_path / 'run')
  shutil.copytree(converted, run)
  code, _, err = run_main(capsys, 'run_cifar', ['simple_eval', '--model_dir={}'.format(run), '--dataset=digits',
                                               '--mode=bpd_eval', '--total_bs=2', '--max_batches=1'])
  assert code == 0, err
  assert os.listdir(os.path.join(run, 'simple_eval'))
  monkeypatch.setenv(inception.GRAPH_ENV_VAR, make_standin_inception(str(tmp_path), pool_dim=16))
  code, _, err = run_main(capsys, 'run_cifar', [
    'evaluation', '--model_dir={}'.format(run), '--dataset=digits', '--once', '--num_inception_samples=2',
    '--total_bs=2', '--stats_dir={}'.format(tmp_path / 'stats')])
  assert code == 0, err
  assert os.path.isfile(os.path.join(run, 'eval', 'step00000000_ema_metrics.json'))


def test_reproduce_labels_copied_ema_slots_and_warns_on_every_run(capsys, tmp_path):
  """A checkpoint converted from the hub's non-EMA repository: its EMA slots hold the live weights. The table must
  not call them EMA weights, and a rerun that reuses the samples still says so on stderr."""
  converted = str(tmp_path / 'non_ema')
  load_script('convert_diffusers_checkpoint').main(['to_tf', '--src', FIXTURE, '--out', converted,
                                                    '--repo_id', 'google/ddpm-cifar10-32'])
  out_dir = str(tmp_path / 'r')
  argv = ['reproduce', '--checkpoint={}'.format(converted), '--dataset=digits', '--features=digits',
          '--num_samples=4', '--batch_size=4', '--num_splits=2', '--sampler=ddim', '--num_inference_steps=2',
          '--out_dir={}'.format(out_dir)]
  for run in ('first', 'rerun'):
    code, out, err = run_main(capsys, 'run_cifar', argv)
    assert code == 0, err
    assert ('sampling 4 images' in out) == (run == 'first')
    warnings = [line for line in err.splitlines() if line.startswith('warning:')]
    assert len(warnings) == 1 and 'copies of non-EMA weights' in warnings[0], (run, err)
    row = [line for line in open(os.path.join(out_dir, 'table.md')) if line.startswith('| **measured**')][0]
    assert 'non-EMA weights' in row and ', EMA weights' not in row, row
