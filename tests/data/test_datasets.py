"""Input pipelines: the real tfds builders on tiny offline stand-ins, LSUN TFRecords, digits, and bad inputs."""

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from tensorflow.python.tpu import tpu_system_metadata
from tensorflow_estimator.python.estimator.tpu import tpu_context

from diffusion_tf.data import catalog as datasets
from diffusion_tf.tpu_utils import tpu_utils
from support.data import CIFAR10_DL_FNAME, block_network, make_tiny_cifar10, make_tiny_lsun
from support.scripts import REPO



def _load_prepare_lsun():
  spec = importlib.util.spec_from_file_location('prepare_lsun', os.path.join(REPO, 'scripts', 'prepare_lsun.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


prepare_lsun = _load_prepare_lsun()


def _run(input_fn, batch_size, max_batches=None):
  """Batches of input_fn({'batch_size': ...}) as numpy, in a fresh graph: all of them (one pass) or max_batches."""
  with tf.Graph().as_default():
    ds = input_fn({'batch_size': batch_size})
    for key, shape in [('image', [batch_size, None, None, 3]), ('label', [batch_size])]:
      shapes, types = tf.data.get_output_shapes(ds), tf.data.get_output_types(ds)
      assert shapes[key].is_compatible_with(shape) and shapes[key][0] == batch_size
      assert types[key] == tf.int32
    nxt = tf.data.make_one_shot_iterator(ds).get_next()
    out = []
    with tf.Session() as sess:
      while max_batches is None or len(out) < max_batches:
        try:
          out.append(sess.run(nxt))
        except tf.errors.OutOfRangeError:
          break
  return out


def _images(batches):
  return np.concatenate([b['image'] for b in batches]) if batches else np.zeros([0])


def _sorted(images):
  """Images in a canonical order (tfds shuffles examples by key hash when it writes them)."""
  return images[np.lexsort(images.reshape(len(images), -1).T[::-1])]


# ---------------------------------------------------------------------------------------------------------------
# cifar10 through the real tfds builder


def test_tfds_cache_file_name_matches_tfds_rule(tmp_path):
  # The stand-in must sit exactly where tfds looks, or tfds would try to download.
  path = datasets.tfds_source_path('cifar10', str(tmp_path))
  assert path == os.path.join(str(tmp_path), 'downloads', CIFAR10_DL_FNAME)


def test_cifar10_real_builder_roundtrips_images_offline(tmp_path, monkeypatch):
  attempts = block_network(monkeypatch)
  data_dir = str(tmp_path)
  tiny = make_tiny_cifar10(data_dir, n_train=10, n_test=4)
  ds = datasets.get_dataset('cifar10', tfds_data_dir=data_dir)
  assert os.path.exists(os.path.join(datasets.tfds_prepared_dir('cifar10', data_dir), 'dataset_info.json'))
  assert (ds.num_classes, ds.image_size, ds.image_shape) == (1, 32, [32, 32, 3])
  assert (ds.num_train_examples, ds.num_eval_examples) == (10, 4)

  one_pass = _run(ds.train_one_pass_input_fn, batch_size=5)
  assert len(one_pass) == 2
  np.testing.assert_array_equal(_sorted(_images(one_pass)), _sorted(tiny['train'].astype(np.int32)))
  for b in one_pass:
    np.testing.assert_array_equal(b['label'], np.zeros(5, np.int32))

  test = _run(ds.eval_input_fn, batch_size=2)
  assert len(test) == 2
  np.testing.assert_array_equal(_sorted(_images(test)), _sorted(tiny['test'].astype(np.int32)))
  assert len(_run(ds.eval_input_fn, batch_size=3)) == 1  # drop_remainder

  train = _images(_run(ds.train_input_fn, batch_size=5, max_batches=6))  # 3 epochs: it repeats
  for epoch in range(3):
    np.testing.assert_array_equal(_sorted(train[10 * epoch:10 * (epoch + 1)]), _sorted(tiny['train']))
  assert not np.array_equal(train[:10], _images(one_pass))  # shuffled
  assert not np.array_equal(train[:10], train[10:20])  # reshuffled each epoch

  # Prepared once: the next call reads the prepared files, the archive is no longer needed.
  os.remove(tiny['archive'])
  again = datasets.get_dataset('cifar10', tfds_data_dir=data_dir)
  np.testing.assert_array_equal(_images(_run(again.train_one_pass_input_fn, batch_size=5)), _images(one_pass))
  # the original's constructors give the same dataset
  for original in [datasets.SimpleDataset('cifar10', data_dir), datasets.DATASETS['cifar10'](tfds_data_dir=data_dir)]:
    assert isinstance(original, datasets.SimpleDataset) and original.image_shape == [32, 32, 3]
    np.testing.assert_array_equal(_images(_run(original.eval_input_fn, batch_size=2)), _images(test))
  with pytest.raises(ValueError, match="SimpleDataset name='lsun'"):
    datasets.SimpleDataset('lsun', data_dir)
  assert attempts == []
  # place_tfds_download writes the .INFO contents that the real builder just accepted (tfds 4.9: and the registered
  # size and checksum, which it reads from there when it finds the file under its URL-only name).
  with open(tiny['archive'] + '.INFO') as f:
    accepted = json.load(f)
  ours = json.loads(datasets._tfds_info_file_contents('cifar10'))
  assert {k: ours[k] for k in accepted} == accepted and set(ours) - set(accepted) <= {'url_info'}


def test_cifar10_missing_data_says_what_to_do(tmp_path, monkeypatch):
  attempts = block_network(monkeypatch)
  missing = str(tmp_path / 'nowhere')
  with pytest.raises(ValueError, match=r"tfds_data_dir='.*nowhere' does not exist"):
    datasets.get_dataset('cifar10', tfds_data_dir=missing)
  empty = str(tmp_path / 'empty')
  os.makedirs(empty)
  with pytest.raises(ValueError, match=r'cifar10:3\.0\.[02] is not prepared .* source .*{} is missing; to fix: '
                                       r'download https://www.cs.toronto.edu'.format(CIFAR10_DL_FNAME)):
    datasets.get_dataset('cifar10', tfds_data_dir=empty)
  tiny = make_tiny_cifar10(empty)
  os.remove(tiny['archive'] + '.INFO')
  with pytest.raises(ValueError, match=r'\.INFO is missing, so tfds would download'):
    datasets.get_dataset('cifar10', tfds_data_dir=empty)
  os.makedirs(datasets.tfds_prepared_dir('cifar10', empty))
  with pytest.raises(ValueError, match='has no dataset_info.json'):
    datasets.get_dataset('cifar10', tfds_data_dir=empty)
  assert attempts == []


def test_cifar10_broken_archive_is_a_clear_error(tmp_path, monkeypatch):
  block_network(monkeypatch)
  tiny = make_tiny_cifar10(str(tmp_path))
  with open(tiny['archive'], 'wb') as f:
    f.write(b'not a tar.gz')
  with pytest.raises(ValueError, match=r'could not prepare cifar10:3\.0\.[02]'):
    datasets.get_dataset('cifar10', tfds_data_dir=str(tmp_path))


def test_place_tfds_download_checks_the_registered_checksum(tmp_path):
  tiny = make_tiny_cifar10(str(tmp_path / 'src'))
  with pytest.raises(ValueError, match=r'has size \d+ and sha256 [0-9a-f]{64}; expected 170052171 and c4a38c50'):
    datasets.place_tfds_download('cifar10', tiny['archive'], tfds_data_dir=str(tmp_path / 'dst'))
  with pytest.raises(ValueError, match='does not exist'):
    datasets.place_tfds_download('cifar10', str(tmp_path / 'nope.tar.gz'), tfds_data_dir=str(tmp_path / 'dst'))


# ---------------------------------------------------------------------------------------------------------------
# celebahq256 through the real tfds builder (manual download)


def test_celebahq256_real_builder_from_manual_tar_offline(tmp_path, monkeypatch):
  attempts = block_network(monkeypatch)
  data_dir = str(tmp_path)
  with pytest.raises(ValueError, match=r'downloads/manual/celeb_a_hq/data256x256\.tar is missing'):
    datasets.get_dataset('celebahq256', tfds_data_dir=data_dir)
  rng = np.random.RandomState(1)
  images = rng.randint(0, 256, size=[3, 256, 256, 3]).astype(np.uint8)
  tar_path = str(tmp_path / 'data256x256.tar')
  with tarfile.open(tar_path, 'w') as tar:
    for i, img in enumerate(images):
      buf = io.BytesIO()
      Image.fromarray(img).save(buf, format='PNG')
      info = tarfile.TarInfo('data256x256/{:05d}.png'.format(i))
      info.size = buf.tell()
      buf.seek(0)
      tar.addfile(info, buf)
  placed = datasets.place_tfds_download('celebahq256', tar_path, tfds_data_dir=data_dir)
  assert placed == os.path.join(data_dir, 'downloads', 'manual', 'celeb_a_hq', 'data256x256.tar')
  ds = datasets.get_dataset('celebahq256', tfds_data_dir=data_dir)
  assert (ds.image_shape, ds.num_train_examples, ds.num_eval_examples) == ([256, 256, 3], 3, None)
  assert ds.eval_input_fn({'batch_size': 1}) is None
  np.testing.assert_array_equal(_sorted(_images(_run(ds.train_one_pass_input_fn, batch_size=1))), _sorted(images))
  assert attempts == []


# ---------------------------------------------------------------------------------------------------------------
# LSUN: prepare_lsun.py -> TFRecords -> get_dataset('lsun')


def _save(path, img):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(img).save(path)


def test_prepare_lsun_center_crops_and_reads_back_exactly(tmp_path):
  rng = np.random.RandomState(2)
  R = 8
  wide = rng.randint(0, 256, size=[8, 13, 3]).astype(np.uint8)  # short side = R: crop only, columns 2..9
  tall = rng.randint(0, 256, size=[12, 8, 3]).astype(np.uint8)  # rows 2..9
  # 16x24: central 16x16 square in one colour, other colours outside it. After the crop, Lanczos 2x downscaling
  # of a uniform square is that colour exactly; a wrong crop would let the borders leak in.
  big = np.zeros([16, 24, 3], np.uint8)
  big[:, :4], big[:, 4:20], big[:, 20:] = [255, 0, 0], [10, 200, 77], [0, 0, 255]
  _save(str(tmp_path / 'imgs' / 'a_wide.png'), wide)
  Image.fromarray(tall).save(str(tmp_path / 'imgs' / 'b_tall.webp'), lossless=True)
  _save(str(tmp_path / 'imgs' / 'c_sub' / 'big.png'), big)  # found recursively
  (tmp_path / 'imgs' / 'notes.txt').write_text('not an image')

  out = prepare_lsun.prepare_lsun(str(tmp_path / 'imgs'), str(tmp_path / 'church'), resolution=R)
  assert out == str(tmp_path / 'church' / 'church-r03.tfrecords')
  assert sorted(os.listdir(str(tmp_path / 'church'))) == ['church-r03.tfrecords']  # temp file renamed away

  ds = datasets.get_dataset('lsun', tfr_file=out)
  assert (ds.image_shape, ds.num_classes) == ([R, R, 3], 1)
  assert ds.eval_input_fn({'batch_size': 1}) is None
  got = _images(_run(ds.train_one_pass_input_fn, batch_size=3))
  np.testing.assert_array_equal(got[0], wide[:, 2:10])
  np.testing.assert_array_equal(got[1], tall[2:10])
  np.testing.assert_array_equal(got[2], np.broadcast_to([10, 200, 77], [R, R, 3]))

  train = _images(_run(ds.train_input_fn, batch_size=2, max_batches=3))
  np.testing.assert_array_equal(_sorted(train[:3]), _sorted(got))


def test_prepare_lsun_max_images_and_seeded_shuffle(tmp_path):
  for i in range(6):
    _save(str(tmp_path / 'imgs' / '{}.png'.format(i)), np.full([4, 4, 3], 10 * i, np.uint8))

  def firsts(**kwargs):
    path = prepare_lsun.prepare_lsun(str(tmp_path / 'imgs'), str(tmp_path / 'out'), resolution=4, **kwargs)
    return [tf.train.Example.FromString(r).features.feature['data'].bytes_list.value[0][0]
            for r in tf.io.tf_record_iterator(path)]

  assert firsts() == [0, 10, 20, 30, 40, 50]
  assert firsts(max_images=2) == [0, 10]
  shuffled = firsts(shuffle=True, seed=5, max_images=4)
  assert len(shuffled) == 4 and shuffled != [0, 10, 20, 30] and set(shuffled) < {0, 10, 20, 30, 40, 50}
  assert firsts(shuffle=True, seed=5, max_images=4) == shuffled


def test_prepare_lsun_bad_inputs(tmp_path):
  os.makedirs(str(tmp_path / 'empty'))
  with pytest.raises(ValueError, match=r"image_dir='.*empty' holds no \.jpg/\.jpeg/\.png/\.webp files"):
    prepare_lsun.prepare_lsun(str(tmp_path / 'empty'), str(tmp_path / 'out'), resolution=8)
  with pytest.raises(ValueError, match='is not a directory'):
    prepare_lsun.prepare_lsun(str(tmp_path / 'missing'), str(tmp_path / 'out'), resolution=8)
  with pytest.raises(ValueError, match=r'resolution=100; expected a power of two'):
    prepare_lsun.prepare_lsun(str(tmp_path / 'empty'), str(tmp_path / 'out'), resolution=100)
  (tmp_path / 'bad').mkdir()
  (tmp_path / 'bad' / 'broken.jpg').write_bytes(b'\xff\xd8 truncated')
  with pytest.raises(ValueError, match=r'cannot read image .*broken\.jpg'):
    prepare_lsun.prepare_lsun(str(tmp_path / 'bad'), str(tmp_path / 'out'), resolution=8)
  assert os.listdir(str(tmp_path / 'out')) == []  # no partial output left behind


def test_prepare_lsun_cli_reports_one_line_error(tmp_path):
  os.makedirs(str(tmp_path / 'empty'))
  proc = subprocess.run(
    [sys.executable, os.path.join(REPO, 'scripts', 'prepare_lsun.py'), '--image_dir', str(tmp_path / 'empty'),
     '--out_dir', str(tmp_path / 'out'), '--resolution', '8'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    universal_newlines=True, timeout=120)
  assert proc.returncode == 1
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error')]  # (TF's log lines may say "errors")
  assert errors == ["error: image_dir='{}' holds no .jpg/.jpeg/.png/.webp files; expected at "
                    "least one image".format(tmp_path / 'empty')]


def test_lsun_tfrecords_roundtrip_hwc(tmp_path):
  path = str(tmp_path / 'lsun-r04.tfrecords')
  images = make_tiny_lsun(path, n=5, resolution=16)
  ds = datasets.get_dataset('lsun', tfr_file=str(tmp_path / '*-r04.tfrecords'), resolution=16)
  assert ds.image_size == 16 and ds.num_train_examples is None
  np.testing.assert_array_equal(_images(_run(ds.train_one_pass_input_fn, batch_size=5)), images)
  assert len(_run(ds.train_one_pass_input_fn, batch_size=2)) == 2  # drop_remainder


def test_lsun_dataset_original_parameters(tmp_path):
  """LsunDataset(tfr_file, resolution, max_images, shuffle_mb, buffer_mb): the first max_images images in file
  order; shuffle_mb MiB of images in the training shuffle buffer."""
  path = str(tmp_path / 'lsun-r04.tfrecords')
  images = make_tiny_lsun(path, n=6, resolution=16)
  first = datasets.LsunDataset(path, 16, 4, 1, 1)  # positional, in the original's order
  assert first.num_train_examples == 4 and first.shuffle_buffer_size == (1 << 20) // (16 * 16 * 3)
  np.testing.assert_array_equal(_images(_run(first.train_one_pass_input_fn, batch_size=2)), images[:4])
  assert _sorted(_images(_run(first.train_input_fn, batch_size=4, max_batches=1))).tolist() == \
    _sorted(images[:4].astype(np.int32)).tolist()
  assert datasets.LsunDataset(path, 16, shuffle_mb=0).shuffle_buffer_size == 1  # no shuffling beyond file order
  assert datasets.DATASETS['lsun'] is datasets.LsunDataset
  with pytest.raises(ValueError, match='max_images=-1'):
    datasets.LsunDataset(path, 16, -1)


def test_lsun_bad_inputs(tmp_path):
  path = str(tmp_path / 'lsun-r03.tfrecords')
  make_tiny_lsun(path, n=2, resolution=8)
  with pytest.raises(ValueError, match=r"lsun-r03\.tfrecords: images of shape \(C, H, W\)=\[3, 8, 8\]; expected "
                                       r"\[3, 256, 256\]"):
    datasets.get_dataset('lsun', tfr_file=path, resolution=256)
  misnamed = str(tmp_path / 'lsun-r08.tfrecords')
  make_tiny_lsun(misnamed, n=1, resolution=8)
  with pytest.raises(ValueError, match=r'file name says resolution 2\^8=256 but images are 8x8'):
    datasets.get_dataset('lsun', tfr_file=misnamed)
  with pytest.raises(ValueError, match=r"tfr_file='.*nope-r08\.tfrecords' matches no file"):
    datasets.get_dataset('lsun', tfr_file=str(tmp_path / 'nope-r08.tfrecords'))
  with pytest.raises(ValueError, match=r"matches no file"):
    datasets.get_dataset('lsun', tfr_file=str(tmp_path / 'x*.tfrecords'))
  with pytest.raises(ValueError, match=r'is a directory; expected a file or glob'):
    datasets.get_dataset('lsun', tfr_file=str(tmp_path))
  with pytest.raises(ValueError, match=r"tfr_file=None; expected a path or glob"):
    datasets.get_dataset('lsun')
  empty = str(tmp_path / 'empty.tfrecords')
  with tf.io.TFRecordWriter(empty):
    pass
  with pytest.raises(ValueError, match='holds no records'):
    datasets.get_dataset('lsun', tfr_file=empty)
  garbage = str(tmp_path / 'garbage-r08.tfrecords')
  with open(garbage, 'wb') as f:
    f.write(b'\x89PNG not a tfrecord file at all')
  with pytest.raises(ValueError, match=r'garbage-r08\.tfrecords is not a readable TFRecord file'):
    datasets.get_dataset('lsun', tfr_file=garbage)


def test_lsun_record_of_another_size_fails_when_read(tmp_path):
  # Only the first record of each file is checked up front; the pipeline checks every record.
  a, b = str(tmp_path / 'a.tfrecords'), str(tmp_path / 'b.tfrecords')
  make_tiny_lsun(a, n=1, resolution=8)
  make_tiny_lsun(b, n=1, resolution=4)
  with tf.io.TFRecordWriter(str(tmp_path / 'mixed.tfrecords')) as w:
    for path in (a, b):
      for record in tf.io.tf_record_iterator(path):
        w.write(record)
  ds = datasets.get_dataset('lsun', tfr_file=str(tmp_path / 'mixed.tfrecords'))
  with pytest.raises(tf.errors.InvalidArgumentError, match=r'wrong shape; expected \(C, H, W\) = \(3, 8, 8\)'):
    _run(ds.train_one_pass_input_fn, batch_size=2)


# ---------------------------------------------------------------------------------------------------------------
# digits: offline demo data


def test_upsample_bilinear_matches_pil():
  x = np.random.RandomState(3).uniform(0, 255, size=[2, 8, 8])
  ours = datasets.upsample_bilinear(x, 32)
  pil = np.stack([np.asarray(Image.fromarray(xi.astype(np.float32), 'F').resize((32, 32), Image.BILINEAR))
                  for xi in x])
  np.testing.assert_allclose(ours, pil, atol=1e-3)
  np.testing.assert_allclose(datasets.upsample_bilinear(x, 8), x)


def test_digits_are_the_real_sklearn_digits():
  from sklearn.datasets import load_digits
  ds = datasets.get_dataset('digits', tfds_data_dir='ignored')
  assert (ds.image_shape, ds.num_train_examples, ds.num_eval_examples) == ([32, 32, 3], 1500, 297)
  train = _images(_run(ds.train_one_pass_input_fn, batch_size=500))
  test = _images(_run(ds.eval_input_fn, batch_size=99))
  assert train.shape == (1500, 32, 32, 3) and test.shape == (297, 32, 32, 3)
  allx = np.concatenate([train, test])
  assert allx.min() == 0 and allx.max() == 255
  assert (allx == allx[..., :1]).all()  # grey: 3 identical channels
  # 4x4 block means of the 32x32 images against sklearn's 8x8 originals (0..16 scaled to 0..255): close, and
  # each image is nearer to its own original than to any other digit.
  pooled = allx[..., 0].reshape(1797, 8, 4, 8, 4).mean(axis=(2, 4)).reshape(1797, 64)
  orig = load_digits().images.reshape(1797, 64) * (255. / 16.)
  assert np.corrcoef(pooled.ravel(), orig.ravel())[0, 1] > 0.97
  assert np.abs(pooled - orig).mean() < 0.4 * np.abs(orig[1:] - orig[:-1]).mean()  # ~18 vs ~60 gray levels
  sq_dist = (pooled ** 2).sum(1)[:, None] - 2 * pooled @ orig.T + (orig ** 2).sum(1)[None]  # [1797, 1797]
  nearest = np.argmin(sq_dist, axis=1)
  assert (nearest == np.arange(1797)).mean() > 0.99
  # Independent check of the sampling: interior pixel 4i+1 is 7/8 of pixel i plus 1/8 of pixel i-1 (per axis).
  d = load_digits().images[0] * (255. / 16.)
  want = (7 * d[2, :] + d[1, :]) / 8.  # row 9 = 4*2+1; columns: same rule
  want_c = (7 * want[3] + want[2]) / 8.  # column 13 = 4*3+1
  assert abs(train[0, 9, 13, 0] - want_c) <= 0.5 + 1e-9


def test_digits_train_input_fn_shuffles_and_repeats():
  ds = datasets.get_dataset('digits', resolution=16)
  batches = _run(ds.train_input_fn, batch_size=700, max_batches=5)  # 3500 > 1500: repeats
  imgs = _images(batches)
  assert imgs.shape == (3500, 16, 16, 3) and imgs.dtype == np.int32
  one_pass = _images(_run(ds.train_one_pass_input_fn, batch_size=1500))
  np.testing.assert_array_equal(_sorted(imgs[:1500]), _sorted(one_pass))
  assert not np.array_equal(imgs[:1500], one_pass)


# The TPU system's metadata record: private in TF 1.15, public in TF 2.15.
_TPU_SYSTEM_METADATA = getattr(tpu_system_metadata, 'TPUSystemMetadata', None) or getattr(
  tpu_system_metadata, '_TPUSystemMetadata')


def _tpu_pod_input_context(host, num_hosts=4, cores_per_host=8):
  """The TPUContext TPUEstimator gives train_input_fn on `host` of a pod slice (default v3-32: 4 hosts of 8 cores),
  with our TPUConfig (per-host input, PER_HOST_V2); the TPU system's metadata is filled in instead of queried."""
  config = tf.estimator.tpu.RunConfig(master='grpc://pod.invalid:8470', tpu_config=tpu_utils.make_tpu_config(100))
  internal = tpu_context._InternalTPUContext(config, train_batch_size=num_hosts * cores_per_host * 2,
                                             eval_batch_size=None, predict_batch_size=None, use_tpu=True)
  internal._lazy_tpu_system_metadata_dict[config.master] = _TPU_SYSTEM_METADATA(
    num_cores=num_hosts * cores_per_host, num_hosts=num_hosts, num_of_cores_per_host=cores_per_host,
    topology=None, devices=[])
  with internal.with_mode(tf.estimator.ModeKeys.TRAIN) as ctx:
    assert ctx.is_input_per_host_with_iterators()  # PER_HOST_V2
    assert ctx.batch_size_for_input_fn == 2  # per core
    return tpu_context.TPUContext(ctx, '/job:worker/task:{}/device:CPU:0'.format(host), host,
                                  call_from_input_fn=True)


def test_input_pipeline_of_tpu_pod_hosts_and_cluster_workers():
  for host in range(4):
    assert datasets.input_pipeline({'context': _tpu_pod_input_context(host)}) == (host, 4)
  context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=2, num_replicas_in_sync=6)
  assert datasets.input_pipeline({'context': context}) == (2, 3)
  assert datasets.input_pipeline({'batch_size': 2}) == (0, 1)


def test_train_order_is_seeded_and_distinct_per_tpu_host():
  ds = datasets.get_dataset('digits', resolution=8, seed=3)

  def first_batch(**params):
    return _run(lambda p: ds.train_input_fn(dict(p, **params)), batch_size=100, max_batches=1)[0]['image']

  host0 = first_batch()
  np.testing.assert_array_equal(first_batch(), host0)  # reproducible
  assert not np.array_equal(first_batch(context=_tpu_pod_input_context(1)), host0)
  assert not np.array_equal(_run(datasets.get_dataset('digits', resolution=8, seed=4).train_input_fn,
                                 batch_size=100, max_batches=1)[0]['image'], host0)


def test_hosts_of_a_pod_read_disjoint_shards_covering_the_training_set():
  """Each of the 4 hosts of a v3-32 reads every 4th training image; one epoch of all hosts is the training set."""
  ds = datasets.get_dataset('digits', resolution=8, seed=3)
  per_host = datasets.DIGITS_NUM_TRAIN // 4
  epochs = []
  for host in range(4):
    context = _tpu_pod_input_context(host)
    batches = _run(lambda p: ds.train_input_fn(dict(p, context=context)), batch_size=per_host, max_batches=2)
    first, second = batches[0]['image'], batches[1]['image']
    np.testing.assert_array_equal(_sorted(first), _sorted(second))  # the host's shard, reshuffled each epoch
    epochs.append(first)
  one_pass = _images(_run(ds.train_one_pass_input_fn, batch_size=datasets.DIGITS_NUM_TRAIN))
  np.testing.assert_array_equal(_sorted(np.concatenate(epochs)), _sorted(one_pass))
  for host in range(4):  # host h: images h, h + 4, h + 8, ... of the fixed order
    np.testing.assert_array_equal(_sorted(epochs[host]), _sorted(one_pass[host::4]))


# ---------------------------------------------------------------------------------------------------------------
# Bad arguments


def test_bad_arguments_give_one_line_errors():
  with pytest.raises(ValueError, match=r"unknown dataset name 'cifar100'; expected one of cifar10, celebahq256, "
                                       r"lsun, digits"):
    datasets.get_dataset('cifar100')
  with pytest.raises(ValueError, match=r"tfr_file='x\.tfrecords' given for dataset 'digits'"):
    datasets.get_dataset('digits', tfr_file='x.tfrecords')
  with pytest.raises(ValueError, match=r'cifar10 images are 32x32; got resolution=64'):
    datasets.get_dataset('cifar10', resolution=64)
  with pytest.raises(ValueError, match=r'digits resolution=12; expected one of \(8, 16, 32, 64\)'):
    datasets.get_dataset('digits', resolution=12)
  ds = datasets.get_dataset('digits')
  for bad in ({'batch_size': 0}, {'batch_size': 2.5}, {}):
    with pytest.raises(ValueError, match=r"params\['batch_size'\]=.*; expected a positive int"):
      ds.train_input_fn(bad)
