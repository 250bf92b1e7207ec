"""Training on a folder of images from the command line (--dataset=folder --data_dir --resolution --eval_fraction),
and prepare_lsun.py --lmdb_dir/--part_size on an LMDB written here, each against what the files hold."""

import glob
import io
import json
import os
import shutil

import lmdb
import numpy as np
import pytest
from PIL import Image

from diffusion_tf.cli import commands, runner as cli
from diffusion_tf.data import catalog, folder, lsun_lmdb
from diffusion_tf.evaluation.watcher import iterate_real_images
from support.data import make_digit_folder
from support.scripts import assert_one_error, checkpoint_steps, load_npz, load_script, run_main


def _run_cli(capsys, command, argv, name):
  try:
    cli.run_cli(command, argv=[str(a) for a in argv], name=name)
  except SystemExit as e:
    pytest.fail('{} {} exited with {}: {}'.format(name, argv, e.code, capsys.readouterr().err))
  return capsys.readouterr().out


def _tfrecord_images(path):
  ds = catalog.get_dataset('lsun', tfr_file=str(path), resolution=None)
  return np.concatenate(list(iterate_real_images(ds.train_one_pass_input_fn, batch_size=1)))


# ---------------------------------------------------------------------------------------------------------------
# prepare_lsun.py --lmdb_dir


@pytest.fixture
def lsun_lmdb_dir(tmp_path):
  """An LMDB as LSUN's release: keys = hex image ids, values = WebP (lossless) or JPEG bytes, plus one value that
  is no image. Returns (directory, [(key, expected uint8 [8, 8, 3]) in key order], the bad key)."""
  rng = np.random.RandomState(0)
  entries, expected = {}, {}
  for i in range(11):
    key = '{:040x}'.format(rng.randint(1 << 30) * 7919 + i).encode()
    img = rng.randint(0, 256, size=[8 + 2 * (i % 3), 8, 3]).astype(np.uint8)  # tall ones: centre-cropped to 8x8
    buf = io.BytesIO()
    if i % 4 == 1:
      Image.fromarray(img).save(buf, format='JPEG', quality=90)
      decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB'))
    else:
      Image.fromarray(img).save(buf, format='WEBP', lossless=True)
      decoded = img
    top = (decoded.shape[0] - 8) // 2
    entries[key], expected[key] = buf.getvalue(), decoded[top:top + 8]
  bad_key = b'f' * 40
  entries[bad_key] = b'not an image'
  path = str(tmp_path / 'church_outdoor_train_lmdb')
  env = lmdb.open(path, map_size=1 << 24)
  with env.begin(write=True) as txn:
    for key, value in entries.items():
      txn.put(key, value)
  env.close()
  return path, [(k, expected[k]) for k in sorted(expected)], bad_key


def test_prepare_lsun_lmdb_dir_writes_every_decodable_entry_in_key_order(lsun_lmdb_dir, tmp_path, capsys):
  path, expected, bad_key = lsun_lmdb_dir
  out = _run_cli(capsys, load_script('prepare_lsun').prepare_lsun,
                 ['--lmdb_dir={}'.format(path), '--out_dir={}'.format(tmp_path / 'church'), '--resolution=8',
                  '--part_size=4'], 'prepare_lsun.py')
  assert sorted(os.listdir(str(tmp_path / 'church'))) == ['church-r03.tfrecords']  # parts joined and removed
  assert 'wrote 11 images of 8x8 from 12 entries' in out and bad_key.hex() in out
  np.testing.assert_array_equal(_tfrecord_images(tmp_path / 'church' / 'church-r03.tfrecords'),
                                np.stack([img for _, img in expected]))


def test_prepare_lsun_lmdb_max_images_and_an_interrupted_run_resumes_where_it_stopped(lsun_lmdb_dir, tmp_path,
                                                                                       monkeypatch, capsys):
  path, expected, _ = lsun_lmdb_dir
  out_path = str(tmp_path / 'out' / 'out-r03.tfrecords')
  real_write_part, calls = lsun_lmdb._write_part, []

  def write_part_then_stop(cursor, part_path, count, resolution, bar):
    calls.append(part_path)
    if len(calls) == 3:  # killed while writing the third part: it is left half-written under its temporary name
      open(part_path + '.incomplete', 'wb').write(b'partial')
      raise KeyboardInterrupt
    return real_write_part(cursor, part_path, count, resolution, bar)

  monkeypatch.setattr(lsun_lmdb, '_write_part', write_part_then_stop)
  with pytest.raises(KeyboardInterrupt):
    load_script('prepare_lsun').prepare_lsun(lmdb_dir=path, out_dir=str(tmp_path / 'out'), resolution=8,
                                             max_images=10, part_size=3)
  assert not os.path.exists(out_path)  # nothing that looks complete
  parts = sorted(os.listdir(out_path + '.parts'))
  assert parts == ['part-00000.tfrecords', 'part-00001.tfrecords', 'part-00002.tfrecords.incomplete', 'state.json']
  with pytest.raises(ValueError, match='other settings'):  # a resume must use the same flags
    load_script('prepare_lsun').prepare_lsun(lmdb_dir=path, out_dir=str(tmp_path / 'out'), resolution=8,
                                             max_images=10, part_size=5)

  calls.clear()
  monkeypatch.setattr(lsun_lmdb, '_write_part', lambda *a: calls.append(a[1]) or real_write_part(*a))
  capsys.readouterr()
  load_script('prepare_lsun').prepare_lsun(lmdb_dir=path, out_dir=str(tmp_path / 'out'), resolution=8,
                                           max_images=10, part_size=3)
  assert [os.path.basename(p) for p in calls] == ['part-00002.tfrecords', 'part-00003.tfrecords']  # 6 + 3 + 1
  lines = capsys.readouterr().out.splitlines()
  assert 'resuming' in lines[0] and '6 of 10 entries' in lines[0]
  assert 'wrote 10 images of 8x8 from 10 entries' in lines[-1]
  assert os.listdir(str(tmp_path / 'out')) == ['out-r03.tfrecords']
  np.testing.assert_array_equal(_tfrecord_images(out_path), np.stack([img for _, img in expected[:10]]))


def test_prepare_lsun_lmdb_bad_inputs(tmp_path, capsys):
  for argv, needle in [
      (['--lmdb_dir={}'.format(tmp_path), '--out_dir=x'], 'has no data.mdb'),
      (['--lmdb_dir={}'.format(tmp_path), '--image_dir={}'.format(tmp_path), '--out_dir=x'], 'not both'),
      (['--out_dir=x'], 'not neither'),
      (['--lmdb_dir={}'.format(tmp_path), '--out_dir=x', '--shuffle'], '--shuffle applies to --image_dir'),
      (['--lmdb_dir={}'.format(tmp_path), '--out_dir=x', '--part_size=0'], 'part_size=0')]:
    with pytest.raises(SystemExit) as e:
      cli.run_cli(load_script('prepare_lsun').prepare_lsun, argv=argv, name='prepare_lsun.py')
    assert_one_error(e.value.code, capsys.readouterr().err, needle)


# ---------------------------------------------------------------------------------------------------------------
# run_cifar.py / run_celebahq.py on --dataset=folder

TRAIN_FLAGS = ['--exp_name=folder', '--dataset=folder', '--resolution=8', '--model_name=tiny',
               '--num_diffusion_timesteps=10', '--total_bs=4', '--warmup=0', '--dropout=0', '--randflip=0', '--seed=0',
               '--max_steps=2', '--save_checkpoints_steps=1']


def _held_out(image_paths, root, fraction):
  return [p for p in image_paths if folder.held_out_fraction(os.path.relpath(p, root).replace(os.sep, '/')) < fraction]


@pytest.mark.slow
def test_train_sample_simple_eval_and_reproduce_on_a_folder(tmp_path, capsys, private_inception_cache):
  """train --dataset=folder --data_dir --resolution=8 --eval_fraction=0.25 --model_name=tiny (2 steps); then sample,
  simple_eval --mode=bpd_eval and reproduce --features=digits on the run, after the folder moved (--data_dir), and
  evaluation's --data_dir: the images they read are the folder's, its held-out part the test split."""
  root = str(tmp_path / 'imgs')
  images = make_digit_folder(root, n=40)
  held_out = _held_out(sorted(images), root, 0.25)
  assert 3 <= len(held_out) <= 20
  model_dir = str(tmp_path / 'run')
  code, out, err = run_main(capsys, 'run_cifar', ['train', '--model_dir={}'.format(model_dir),
                                                  '--data_dir={}'.format(root), '--eval_fraction=0.25'] + TRAIN_FLAGS)
  assert code == 0, err
  assert 'folder {}: 42 images at 8x8, {} held out'.format(root, len(held_out)) in out
  with open(os.path.join(model_dir, 'kwargs.json')) as f:
    kwargs = json.load(f)
  assert (kwargs['dataset'], kwargs['data_dir'], kwargs['eval_fraction'], kwargs['image_size']) == (
    'folder', root, 0.25, 8)
  assert checkpoint_steps(model_dir)[-1] == 2

  code, _, err = run_main(capsys, 'run_cifar', ['sample', '--model_dir={}'.format(model_dir), '--num_samples=4',
                                                '--batch_size=4', '--out_dir={}'.format(tmp_path / 'samples')])
  assert code == 0, err
  assert load_npz(str(tmp_path / 'samples' / 'samples.npz')).shape == (4, 8, 8, 3)

  moved = str(tmp_path / 'moved')
  shutil.move(root, moved)
  code, _, err = run_main(capsys, 'run_cifar', ['simple_eval', '--model_dir={}'.format(model_dir), '--mode=bpd_eval',
                                                '--total_bs=1'])
  assert_one_error(code, err, root, 'is not a directory')  # the run's own folder, gone
  code, _, err = run_main(capsys, 'run_cifar', ['simple_eval', '--model_dir={}'.format(model_dir), '--mode=bpd_eval',
                                                '--total_bs=1', '--data_dir={}'.format(moved)])
  assert code == 0, err
  bpd_files = glob.glob(os.path.join(model_dir, 'simple_eval', 'bpd', 'bpd_eval_*.npz'))
  assert load_npz(bpd_files[0], 'total_bpd').shape == (len(held_out),)  # the held-out images, each once

  code, _, err = run_main(capsys, 'run_cifar', ['evaluation', '--model_dir={}'.format(model_dir), '--once',
                                                '--data_dir={}'.format(moved)])
  assert_one_error(code, err, 'Inception')  # past the dataset (found at --data_dir) to the missing Inception graph

  out_dir = str(tmp_path / 'repro')
  code, _, err = run_main(capsys, 'run_cifar', [
    'reproduce', '--model_dir={}'.format(model_dir), '--out_dir={}'.format(out_dir), '--features=digits',
    '--num_samples=8', '--batch_size=4', '--num_splits=2', '--stats_dir={}'.format(tmp_path / 'stats'),
    '--data_dir={}'.format(moved)])
  assert code == 0, err
  with open(os.path.join(out_dir, 'results.json')) as f:
    result = json.load(f)
  counts = {}
  for split, path in result['reference_statistics'].items():
    with np.load(path) as f:
      counts[split] = int(f['num_samples'])
  assert counts == {'train': 42 - len(held_out), 'test': len(held_out)}
  assert np.isfinite(result['metrics']['fid_test'])


def test_folder_flags_pick_the_model_of_the_resolution_and_bad_ones_fail_before_training(tmp_path, capsys,
                                                                                         monkeypatch):
  root = str(tmp_path / 'imgs')
  make_digit_folder(root, n=4)
  trained = []
  monkeypatch.setattr(commands, 'train_from_kwargs', lambda kwargs, ds, **rest: trained.append(dict(
    kwargs, image_size=ds.image_size)))
  for script, resolution, model in [('run_cifar', 64, 'unet2d16b2c1234'), ('run_cifar', 32, 'unet2d16b2'),
                                    ('run_celebahq', 128, 'unet2d16b2c11234'),
                                    ('run_celebahq', 256, 'unet2d16b2c112244')]:
    code, _, err = run_main(capsys, script, ['train', '--exp_name=x', '--dataset=folder', '--data_dir={}'.format(root),
                                             '--resolution={}'.format(resolution), '--eval_fraction=0'])
    assert code == 0, err
    assert (trained[-1]['model_name'], trained[-1]['image_size'], trained[-1]['eval_fraction']) == (
      model, resolution, 0)
  for script, flags, needles in [
      ('run_cifar', ['--resolution=48'], ['resolution=48', 'no U-Net configuration', '32, 64, 128, 256']),
      ('run_celebahq', ['--resolution=32'], ['resolution=32', 'no U-Net configuration', 'one of 64, 128, 256']),
      ('run_celebahq', [], ['needs --resolution']),
      ('run_cifar', ['--resolution=32', '--eval_fraction=1'], ['eval_fraction=1']),
      ('run_cifar', ['--resolution=9', '--model_name=tiny'], ['do not fit model']),
      ('run_cifar', ['--resolution=32', '--tpu_name=t'], ['Cloud TPU', 'prepare_lsun.py --image_dir']),
      ('run_celebahq', ['--resolution=64', '--data_dir={}'.format(tmp_path / 'none')], ['is not a directory'])]:
    argv = ['train', '--exp_name=x', '--dataset=folder'] + (
      [] if any(f.startswith('--data_dir') for f in flags) else ['--data_dir={}'.format(root)]) + flags
    code, _, err = run_main(capsys, script, argv)
    assert_one_error(code, err, *needles)
  code, _, err = run_main(capsys, 'run_cifar', ['train', '--exp_name=x', '--data_dir={}'.format(root)])
  assert_one_error(code, err, 'applies to --dataset=folder')
  assert len(trained) == 4
