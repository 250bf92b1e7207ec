"""Sample dumps split over machines: `sample --shard=i/n` and scripts/merge_samples.py, on the conftest's standard
tiny run."""

import json
import os
import socket
import subprocess

import numpy as np
import pytest

from support.scripts import PYTHON, REPO, assert_one_error, load_npz, run_main

from diffusion_tf.errors import UsageError
from diffusion_tf.generate import dump, shards as sample_shards

T = 10


@pytest.fixture(scope='module')
def run_dir(tiny_run):
  """The conftest's standard tiny run: three training steps of the tiny U-Net on 8x8 digits, a checkpoint after each
  (read-only)."""
  return tiny_run('run_cifar')


def _sample(capsys, run_dir, out_dir, *flags):
  code, out, err = run_main(capsys, 'run_cifar', [
    'sample', '--model_dir={}'.format(run_dir), '--num_samples=5', '--batch_size=2', '--sampler=ddim',
    '--num_inference_steps=3', '--seed=7', '--out_dir={}'.format(out_dir)] + list(flags))
  return code, out, err


def _merge(capsys, out_dir, *shard_dirs):
  return run_main(capsys, 'merge_samples', [str(d) for d in shard_dirs] + ['--out_dir={}'.format(out_dir)])


def test_shard_batches_partition_the_dump():
  for num_batches in range(1, 8):
    for n in range(1, num_batches + 1):
      got = sorted(b for i in range(n) for b in sample_shards.shard_batches(num_batches, (i, n)))
      assert got == list(range(num_batches))
  index = sample_shards.sample_indices([1, 3], batch_size=4, num_samples=14)
  np.testing.assert_array_equal(index, [4, 5, 6, 7, 12, 13])


def test_merged_shards_equal_the_unsharded_dump(run_dir, capsys, tmp_path):
  code, _, err = _sample(capsys, run_dir, tmp_path / 'whole')
  assert code == 0, err
  whole = load_npz(str(tmp_path / 'whole' / 'samples.npz'))
  assert whole.shape == (5, 8, 8, 3) and whole.std() > 0
  # shard 1 of 2 first: the order in which machines finish does not matter
  for i in (1, 0):
    code, out, err = _sample(capsys, run_dir, tmp_path / 'shard{}'.format(i), '--shard={}/2'.format(i))
    assert code == 0, err
  with np.load(str(tmp_path / 'shard1' / 'samples.npz')) as f:  # batch 1 only: samples 2, 3
    np.testing.assert_array_equal(f['sample_index'], [2, 3])
    np.testing.assert_array_equal(f['arr_0'], whole[2:4])
  code, out, err = _merge(capsys, tmp_path / 'merged', tmp_path / 'shard1', tmp_path / 'shard0')
  assert code == 0, err
  assert 'merged 2 shards: 5 samples' in out
  np.testing.assert_array_equal(load_npz(str(tmp_path / 'merged' / 'samples.npz')), whole)
  info = json.load(open(str(tmp_path / 'merged' / 'info.json')))
  assert info['num_samples'] == 5 and info['seed'] == 7 and 'shard' not in info
  # the merged dump is never overwritten
  code, _, err = _merge(capsys, tmp_path / 'merged', tmp_path / 'shard0', tmp_path / 'shard1')
  assert_one_error(code, err, 'never overwrites')


def test_merge_rejects_missing_duplicated_and_mismatched_shards(run_dir, capsys, tmp_path):
  for name, flags in [('s0', ['--shard=0/2']), ('s1', ['--shard=1/2']),
                      ('s1_seed', ['--shard=1/2', '--seed=8']),
                      ('s1_sampler', ['--shard=1/2', '--sampler=pndm', '--skip_prk_steps']),
                      ('s1_ckpt', ['--shard=1/2', '--checkpoint={}'.format(os.path.join(run_dir, 'model.ckpt-1'))])]:
    code, _, err = _sample(capsys, run_dir, tmp_path / name, *flags)
    assert code == 0, (name, err)
  cases = [
    (['s0'], ['shard 1 of 2 is missing (have shard 0: {})'.format(tmp_path / 's0')]),
    (['s0', 's1', 's1'], ['shard 1/2 given twice']),
    (['s0', 's1_seed'], ['seed=8', 'expected the shards of one run']),
    (['s0', 's1_sampler'], ['sampler=\'pndm\'']),
    (['s0', 's1_ckpt'], ['checkpoint_sha256=']),
    (['s0', 'nothing_here'], ['nothing_here', 'does not exist']),
  ]
  for dirs, needles in cases:
    out_dir = tmp_path / ('out_' + '_'.join(dirs))
    code, _, err = _merge(capsys, out_dir, *[tmp_path / d for d in dirs])
    assert_one_error(code, err, *needles)
    assert not os.path.exists(str(out_dir / 'samples.npz'))


def test_missing_shards_are_named_in_words():
  assert sample_shards.missing_shards_message([1], 2, {0: 'a'}) == (
    'shard 1 of 2 is missing (have shard 0: a); expected all 2 shards, numbered 0 to 1 (sample --shard=i/2)')
  assert sample_shards.missing_shards_message([0, 2, 3], 4, {1: 'b'}).startswith(
    'shards 0, 2 and 3 of 4 are missing (have shard 1: b); expected all 4 shards, numbered 0 to 3')
  assert sample_shards.missing_shards_message([3], 4, {2: 'c', 0: 'a', 1: 'b'}).startswith(
    'shard 3 of 4 is missing (have shards 0: a; 1: b; 2: c)')


def test_bad_shard_flags_give_one_line_errors(run_dir, capsys, tmp_path):
  for flags, needle in [(['--shard=2/2'], "shard='2/2'; expected i/n with 0 <= i < n"),
                        (['--shard=one'], "shard='one'"),
                        (['--shard=0/4'], 'only 3 batch(es)'),
                        (['--shard=0/2', '--output_type=png'], 'expected --output_type=npz')]:
    code, _, err = _sample(capsys, run_dir, tmp_path / 'bad', *flags)
    assert_one_error(code, err, needle)
  assert not os.path.exists(str(tmp_path / 'bad' / 'samples.npz'))


_HOLD_LOCK = '''
import sys, time
from diffusion_tf.runs import run_lock
lock = run_lock.RunLock(sys.argv[1], lock_file=run_lock.SAMPLE_LOCK_FILE).acquire()  # held while it lives
print('held', flush=True)
time.sleep(120)
'''


def test_a_second_dump_into_the_same_out_dir_is_refused_naming_the_holder(run_dir, capsys, tmp_path):
  out_dir = tmp_path / 'dump'
  out_dir.mkdir()
  holder = subprocess.Popen([PYTHON, '-c', _HOLD_LOCK, str(out_dir)], stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=REPO))
  try:
    assert holder.stdout.readline().decode().strip() == 'held'
    code, _, err = _sample(capsys, run_dir, out_dir)
    assert_one_error(code, err, 'being sampled into by another process', 'host {}'.format(socket.gethostname()),
                     'pid {}'.format(holder.pid), 'sample.lock')
  finally:
    holder.kill()
    holder.wait()
  assert not (out_dir / '.shards').exists()  # the refused dump wrote nothing


def test_a_stale_lock_of_a_dead_dump_does_not_block_its_resume(run_dir, capsys, tmp_path, monkeypatch):
  out_dir = tmp_path / 'dump'

  def interrupted(self):
    raise UsageError('interrupted after drawing the batches')

  monkeypatch.setattr(dump.SampleDump, '_assemble', interrupted)
  code, _, err = _sample(capsys, run_dir, out_dir)
  assert_one_error(code, err, 'interrupted')
  monkeypatch.undo()
  assert len(os.listdir(str(out_dir / '.shards'))) == 4  # config.json and 3 batches
  dead = subprocess.Popen([PYTHON, '-c', 'pass'])
  dead.wait()  # a pid that no longer runs, as a SIGKILLed dump leaves in its lock file
  (out_dir / 'sample.lock').write_text(json.dumps(dict(host=socket.gethostname(), pid=dead.pid, started='then')))
  code, out, err = _sample(capsys, run_dir, out_dir)
  assert code == 0, err
  assert 'resuming: 3 of 3 batches already done' in out
  assert load_npz(str(out_dir / 'samples.npz')).shape == (5, 8, 8, 3)
  assert not (out_dir / 'sample.lock').exists()
