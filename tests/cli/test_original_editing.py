"""run_celebahq.py interpolate and denoising_trajectory (the original's interpolate_fn and
samples_fn_denoising_trajectory) end to end on a tiny model of the embedded digits."""

import json
import os

import numpy as np
import pytest

from support.scripts import LARGE_LR_FLAGS, assert_one_error, load_npz, run_main, write_original_layout

from diffusion_tf import utils
from diffusion_tf.data import catalog as datasets
from diffusion_tf.cli import editing

T = 10


@pytest.fixture(scope='module')
def celebahq_run(tiny_run, tmp_path_factory):
  """The conftest's tiny run_celebahq run of 2 steps (read-only; shared with test_flags_reproduce_editing.py) and two
  digit PNGs."""
  root = tmp_path_factory.mktemp('celebahq')
  model_dir = tiny_run('run_celebahq', max_steps=2, **LARGE_LR_FLAGS)
  images = datasets.load_digits_images(8)
  paths = []
  for i in (0, 1):
    paths.append(str(root / 'digit{}.png'.format(i)))
    utils.write_png(paths[-1], images[i])
  return dict(root=root, model_dir=model_dir, images=paths, pixels=images[:2])


def test_trajectory_frames_keep_both_ends():
  np.testing.assert_array_equal(editing.trajectory_frames(10, 11), np.arange(11))
  frames = editing.trajectory_frames(1000, 5)
  assert frames[0] == 0 and frames[-1] == 1000 and len(frames) == 5
  np.testing.assert_allclose(editing.lambdas(5), [0., .25, .5, .75, 1.])


def test_interpolate_writes_the_row_and_ends_at_the_inputs(celebahq_run, capsys, tmp_path):
  out_dir = str(tmp_path / 'interp')
  args = ['interpolate', '--model_dir={}'.format(celebahq_run['model_dir']), '--image1={}'.format(
    celebahq_run['images'][0]), '--image2={}'.format(celebahq_run['images'][1]), '--t=0', '--num_lambdas=3',
          '--out_dir={}'.format(out_dir)]
  code, _, err = run_main(capsys, 'run_celebahq', args)
  assert code == 0, err
  row = load_npz(os.path.join(out_dir, 'interpolation.npz'))
  assert row.shape == (5, 8, 8, 3) and row.dtype == np.uint8
  np.testing.assert_array_equal(row[0], celebahq_run['pixels'][0])
  np.testing.assert_array_equal(row[-1], celebahq_run['pixels'][1])
  info = json.load(open(os.path.join(out_dir, 'info.json')))
  assert info['t'] == 0 and info['lambdas'] == [0., .5, 1.] and info['step'] == 2
  assert os.path.isfile(os.path.join(out_dir, 'interpolation.png'))
  # the same seed gives the same row; outputs are never overwritten
  code, _, err = run_main(capsys, 'run_celebahq', args[:-1] + ['--out_dir={}'.format(tmp_path / 'again')])
  assert code == 0, err
  np.testing.assert_array_equal(load_npz(str(tmp_path / 'again' / 'interpolation.npz')), row)
  code, _, err = run_main(capsys, 'run_celebahq', args)
  assert_one_error(code, err, 'never overwritten')


def test_interpolate_rejects_bad_inputs(celebahq_run, capsys, tmp_path):
  base = ['interpolate', '--model_dir={}'.format(celebahq_run['model_dir']),
          '--image2={}'.format(celebahq_run['images'][1]), '--out_dir={}'.format(tmp_path / 'x')]
  code, _, err = run_main(capsys, 'run_celebahq', base + ['--image1={}'.format(celebahq_run['images'][0]),
                                                          '--t={}'.format(T)])
  assert_one_error(code, err, 't=10', 'expected 0 <= t < 10')
  big = str(tmp_path / 'big.png')
  utils.write_png(big, np.zeros([16, 16, 3], np.uint8))
  code, _, err = run_main(capsys, 'run_celebahq', base + ['--image1={}'.format(big), '--t=1'])
  assert_one_error(code, err, 'big.png', '16x16', '8x8')
  assert not os.path.exists(str(tmp_path / 'x' / 'interpolation.npz'))


def test_denoising_trajectory_starts_at_noise_and_ends_at_the_sample(celebahq_run, capsys, tmp_path):
  out_dir = str(tmp_path / 'traj')
  code, _, err = run_main(capsys, 'run_celebahq', [
    'denoising_trajectory', '--model_dir={}'.format(celebahq_run['model_dir']), '--num_samples=2',
    '--num_frames=6', '--repeat_noise_steps=3', '--out_dir={}'.format(out_dir)])
  assert code == 0, err
  with np.load(os.path.join(out_dir, 'trajectory.npz')) as f:
    seq, times = f['arr_0'], f['times']
  assert seq.shape == (2, 6, 8, 8, 3)
  assert times[0] == T - 1 and times[-1] == -1
  # x_T and the first steps share their noise across the batch; the final samples differ
  np.testing.assert_array_equal(seq[0, 0], seq[1, 0])
  assert not np.array_equal(seq[0, -1], seq[1, -1])
  assert os.path.isfile(os.path.join(out_dir, 'trajectory.png'))
  code, _, err = run_main(capsys, 'run_celebahq', [
    'denoising_trajectory', '--model_dir={}'.format(celebahq_run['model_dir']), '--num_frames={}'.format(T + 2),
    '--out_dir={}'.format(tmp_path / 'bad')])
  assert_one_error(code, err, 'num_frames=12')


def test_editing_commands_read_the_original_full_training_layout(celebahq_run, capsys, tmp_path):
  """live weights, Adam slots, beta powers, EMA shadows and global_step, as the released checkpoints hold them"""
  model_dir = str(tmp_path / 'original')
  write_original_layout(os.path.join(celebahq_run['model_dir'], 'model.ckpt-2'), model_dir, global_step=9,
                        kwargs_json=os.path.join(celebahq_run['model_dir'], 'kwargs.json'))
  for argv in [['interpolate', '--image1={}'.format(celebahq_run['images'][0]),
                '--image2={}'.format(celebahq_run['images'][1]), '--t=2', '--num_lambdas=2'],
               ['denoising_trajectory', '--num_samples=1', '--num_frames=3', '--noema']]:
    code, _, err = run_main(capsys, 'run_celebahq', argv + ['--model_dir={}'.format(model_dir)])
    assert code == 0, (argv[0], err)
  info = json.load(open(os.path.join(model_dir, 'interpolate_t2_seed0', 'info.json')))
  assert info['step'] == 9 and info['checkpoint'].endswith('model.ckpt-9')
  assert load_npz(os.path.join(model_dir, 'trajectory_seed0_n1', 'trajectory.npz')).shape == (1, 3, 8, 8, 3)
