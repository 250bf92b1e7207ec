"""The two stacks (TF 1.15 / Python 3.7 and TF 2.15 / Python 3.11) compute the same numbers and share checkpoints.

The stored numbers were made on TF 1.15 (tests/fixtures/make_stack_numbers.py); this test checks them on whichever stack
runs it. The checkpoint test trains on one stack and resumes on the other, in both directions, with the other stack's
venv in a subprocess (skipped, saying why, when that venv is not installed; CI installs both).
"""

import os
import subprocess

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from support.scripts import SCRIPTS, PYTHON, checkpoint_steps
from support.stacks import REPO, STACK_NUMBERS, TRACKED_VARIABLES, other_stack_python, unet_and_train_step_numbers

TINY_DIGITS = ['--dataset=digits', '--resolution=8', '--model_name=tiny', '--num_diffusion_timesteps=10',
               '--total_bs=4', '--warmup=2', '--lr=2e-4', '--save_checkpoints_steps=2', '--log_every_steps=1']


def test_unet_output_and_training_step_match_the_stored_numbers():
  ref = np.load(STACK_NUMBERS)
  got = unet_and_train_step_numbers()
  for name in ['x', 't', 'noise']:  # the inputs come from numpy alone
    np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
  np.testing.assert_allclose(got['out'], ref['out'], rtol=1e-5, atol=1e-5, err_msg='U-Net output')
  np.testing.assert_allclose(got['loss'], ref['loss'], rtol=1e-5, err_msg='loss')
  np.testing.assert_allclose(got['gnorm'], ref['gnorm'], rtol=1e-5, err_msg='gradient norm')
  for name in TRACKED_VARIABLES:
    np.testing.assert_array_equal(got['before/' + name], ref['before/' + name], err_msg=name)
    # One Adam step moves every weight by ~lr = 1e-3; the stacks agree on it to float32 rounding.
    np.testing.assert_allclose(got['after/' + name], ref['after/' + name], rtol=0, atol=1e-5, err_msg=name)
    assert np.abs(ref['after/' + name] - ref['before/' + name]).max() > 5e-4, name


@pytest.fixture(scope='module')
def other_python():
  other, python, why = other_stack_python()
  if python is None:
    pytest.skip(why)
  return python


def _train(python, model_dir, max_steps):
  """scripts/run_cifar.py train on the tiny digits config with the given stack's Python; returns its output."""
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
    [python, os.path.join(SCRIPTS, 'run_cifar.py'), 'train', '--exp_name=stacks'] + TINY_DIGITS + [
      '--model_dir={}'.format(model_dir), '--max_steps={}'.format(max_steps)],
    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600, env=env)
  out = result.stdout.decode()
  assert result.returncode == 0, out
  return out


def _check_resumed(model_dir, out, step):
  """The run that printed `out` restored checkpoint `step` - 1 (weights, Adam state, EMA) and took one step."""
  assert 'resuming from' in out and '(step {})'.format(step - 1) in out, out
  assert checkpoint_steps(model_dir)[-2:] == [step - 1, step]
  before = tf.train.load_checkpoint(os.path.join(model_dir, 'model.ckpt-{}'.format(step - 1)))
  after = tf.train.load_checkpoint(os.path.join(model_dir, 'model.ckpt-{}'.format(step)))
  assert before.get_variable_to_shape_map() == after.get_variable_to_shape_map()
  # Adam's beta1_power is 0.9^(updates + 1): the optimizer state was restored, not made anew.
  np.testing.assert_allclose(after.get_tensor('beta1_power'), 0.9 ** (step + 1), rtol=1e-6)
  # One Adam step at lr 2e-4 moves each weight by at most ~2e-4; a fresh initialisation would move it by ~0.1.
  for name in ['model/conv_in/W', 'model/conv_in/W/ExponentialMovingAverage']:
    moved = np.abs(after.get_tensor(name) - before.get_tensor(name)).max()
    assert moved < 3e-4, (name, moved)
  assert np.abs(after.get_tensor('model/conv_in/W') - before.get_tensor('model/conv_in/W')).max() > 0


@pytest.mark.slow
def test_training_checkpoints_resume_across_stacks_in_both_directions(tmp_path, other_python):
  """Train 2 steps on this stack, resume for step 3 on the other, then for step 4 back on this one."""
  model_dir = str(tmp_path / 'run')
  _train(PYTHON, model_dir, max_steps=2)
  assert checkpoint_steps(model_dir)[-1] == 2
  _check_resumed(model_dir, _train(other_python, model_dir, max_steps=3), step=3)
  _check_resumed(model_dir, _train(PYTHON, model_dir, max_steps=4), step=4)
