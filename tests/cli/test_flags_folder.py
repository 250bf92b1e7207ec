"""Training on a folder of images from the command line (--dataset=folder --data_dir --resolution --eval_fraction),
and prepare_lsun.py --lmdb_dir/--part_size on an LMDB written here, each against what the files hold."""

import io
import os

import lmdb
import numpy as np
import pytest
from PIL import Image

from diffusion_tf.cli import runner as cli
from diffusion_tf.data import catalog, lsun_lmdb
from diffusion_tf.evaluation.watcher import iterate_real_images
from support.scripts import assert_one_error, load_script


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
