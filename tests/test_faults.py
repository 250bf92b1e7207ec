"""Runs that survive faults, injected for real: unreadable checkpoints (bytes flipped, files cut short, a missing
shard), SIGTERM/SIGINT during training (real processes and signals), a full or read-only file system (a real tmpfs
of a few MB; skipped where this user cannot mount), and two trainers on one run directory. Tiny configs: the
embedded digits at 8x8, the 2-level 'tiny' U-Net, T = 10."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from helpers_scripts import PYTHON, SCRIPTS, assert_one_error, checkpoint_steps, load_script, run_main

from diffusion_tf.tpu_utils import checkpoint_recovery, tpu_utils

TINY = ['--dataset=digits', '--resolution=8', '--model_name=tiny', '--num_diffusion_timesteps=10', '--total_bs=4',
        '--warmup=2', '--dropout=0', '--randflip=0']
TIMEOUT = 300  # seconds, for every subprocess


def _train_argv(model_dir, *extra):
  return ['train', '--exp_name=f'] + TINY + ['--model_dir={}'.format(model_dir), '--log_every_steps=1'] + list(extra)


def _train_cmd(model_dir, *extra):
  return [PYTHON, os.path.join(SCRIPTS, 'run_cifar.py')] + _train_argv(model_dir, *extra)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A run directory with checkpoints at steps 0, 2 and 4 (all listed in the state file)."""
  model_dir = str(tmp_path_factory.mktemp('trained') / 'run')
  run_cifar = load_script('run_cifar')
  run_cifar.train(exp_name='f', dataset='digits', resolution=8, model_name='tiny', num_diffusion_timesteps=10,
                  total_bs=4, warmup=2, dropout=0., randflip=0, model_dir=model_dir, max_steps=4,
                  save_checkpoints_steps=2, keep_checkpoint_max=3)
  assert checkpoint_steps(model_dir) == [0, 2, 4]
  return model_dir


@pytest.fixture
def run_copy(trained, tmp_path):
  model_dir = str(tmp_path / 'run')
  shutil.copytree(trained, model_dir)
  # the state file names the checkpoints relative to the directory, so the copy is a run of its own
  assert tf.train.latest_checkpoint(model_dir) == os.path.join(model_dir, 'model.ckpt-4')
  return model_dir


def _flip_data(prefix):
  path = prefix + '.data-00000-of-00001'
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0xff
  open(path, 'wb').write(bytes(data))


def _cut(path):
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) // 2])


CORRUPTIONS = {
  'flipped_data_byte': _flip_data,
  'truncated_data': lambda prefix: _cut(prefix + '.data-00000-of-00001'),
  'truncated_index': lambda prefix: _cut(prefix + '.index'),
  'missing_shard': lambda prefix: os.remove(prefix + '.data-00000-of-00001'),
}


def _moved_aside(model_dir, name):
  return glob.glob(os.path.join(model_dir, checkpoint_recovery.UNREADABLE_DIR, '*', name + '.*'))


@pytest.mark.parametrize('kind', sorted(CORRUPTIONS))
def test_lookup_skips_an_unreadable_latest_checkpoint_and_moves_it_aside(run_copy, kind):
  bad = os.path.join(run_copy, 'model.ckpt-4')
  CORRUPTIONS[kind](bad)
  # given explicitly, a bad checkpoint is an error naming it, not a fallback
  with pytest.raises(tpu_utils.UsageError, match='checkpoint {} cannot be read'.format(bad)):
    tpu_utils.resolve_checkpoint(bad)
  warnings = []
  assert tpu_utils.latest_checkpoint(run_copy, warn=warnings.append) == os.path.join(run_copy, 'model.ckpt-2')
  assert len(warnings) == 1 and bad in warnings[0] and 'cannot be read' in warnings[0], warnings
  # moved, not deleted; the state file (what Estimator resumes from) agrees with the lookup
  assert _moved_aside(run_copy, 'model.ckpt-4') and checkpoint_steps(run_copy) == [0, 2]
  assert tf.train.latest_checkpoint(run_copy) == os.path.join(run_copy, 'model.ckpt-2')
  assert tpu_utils.resolve_checkpoint(run_copy) == os.path.join(run_copy, 'model.ckpt-2')


def test_all_checkpoints_unreadable_leaves_none(run_copy):
  for step in (0, 2, 4):
    _flip_data(os.path.join(run_copy, 'model.ckpt-{}'.format(step)))
  warnings = []
  assert tpu_utils.latest_checkpoint(run_copy, warn=warnings.append) is None
  assert len(warnings) == 3 and checkpoint_steps(run_copy) == []
  assert tf.train.latest_checkpoint(run_copy) is None  # the state file went aside with them


def test_training_resumes_from_the_newest_readable_checkpoint(run_copy, capsys):
  _flip_data(os.path.join(run_copy, 'model.ckpt-4'))
  code, out, err = run_main(capsys, 'run_cifar', _train_argv(run_copy, '--max_steps=3', '--save_checkpoints_steps=2'))
  assert code == 0, err
  warnings = [line for line in err.splitlines() if line.startswith('warning:')]
  assert len(warnings) == 1 and 'model.ckpt-4' in warnings[0], err
  assert 'resuming from {} (step 2)'.format(os.path.join(run_copy, 'model.ckpt-2')) in out, out
  assert checkpoint_steps(run_copy)[-2:] == [2, 3]
  assert _moved_aside(run_copy, 'model.ckpt-4')


def test_sample_falls_back_for_a_directory_and_names_an_explicit_bad_checkpoint(run_copy, capsys, tmp_path):
  bad = os.path.join(run_copy, 'model.ckpt-4')
  _cut(bad + '.data-00000-of-00001')
  explicit = ['sample', '--checkpoint={}'.format(bad), '--num_samples=2', '--batch_size=2',
              '--out_dir={}'.format(tmp_path / 'explicit')]
  code, out, err = run_main(capsys, 'run_cifar', explicit)
  assert_one_error(code, err, bad, 'cannot be read')
  assert 'Traceback' not in err and not (tmp_path / 'explicit').exists()
  code, out, err = run_main(capsys, 'run_cifar', ['sample', '--model_dir={}'.format(run_copy), '--num_samples=2',
                                                  '--batch_size=2', '--out_dir={}'.format(tmp_path / 'dir')])
  assert code == 0, err
  assert 'warning: checkpoint {} cannot be read'.format(bad) in err
  assert json.load(open(str(tmp_path / 'dir' / 'info.json')))['step'] == 2


def test_evaluation_and_simple_eval_fall_back(run_copy, capsys):
  _cut(os.path.join(run_copy, 'model.ckpt-4.index'))
  code, out, err = run_main(capsys, 'run_cifar', ['evaluation', '--model_dir={}'.format(run_copy), '--once',
                                                  '--dump_samples_only', '--num_inception_samples=2',
                                                  '--total_bs=2'])
  assert code == 0, err
  assert 'model.ckpt-4 cannot be read' in err
  assert os.path.exists(os.path.join(run_copy, 'eval', 'step00000002_ema_samples.npz'))
  _flip_data(os.path.join(run_copy, 'model.ckpt-2'))
  code, out, err = run_main(capsys, 'run_cifar', ['simple_eval', '--model_dir={}'.format(run_copy),
                                                  '--mode=progressive_samples', '--total_bs=2'])
  assert code == 0, err
  assert 'model.ckpt-2 cannot be read' in err
  assert glob.glob(os.path.join(run_copy, 'simple_eval', 'progressive_samples_model.ckpt-0_ema.npz'))


def test_converter_falls_back_for_a_directory_and_names_an_explicit_bad_checkpoint(run_copy, capsys, tmp_path):
  script = load_script('convert_diffusers_checkpoint')
  bad = os.path.join(run_copy, 'model.ckpt-4')
  _flip_data(bad)
  with pytest.raises(SystemExit) as info:
    script.main(['to_diffusers', '--ckpt', bad, '--out', str(tmp_path / 'explicit'), '--resolution', '8'])
  err = capsys.readouterr().err
  assert info.value.code != 0
  assert_one_error(1, err, bad, 'cannot read')
  script.main(['to_diffusers', '--ckpt', run_copy, '--out', str(tmp_path / 'dir'), '--resolution', '8'])
  captured = capsys.readouterr()
  assert 'warning: checkpoint {} cannot be read'.format(bad) in captured.err
  assert os.path.exists(str(tmp_path / 'dir' / 'config.json'))
