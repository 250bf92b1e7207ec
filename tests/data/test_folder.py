"""get_dataset('folder'): a folder of image files as a dataset, checked against the files' own pixels read by PIL."""

import hashlib
import os
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from diffusion_tf.data import catalog, folder
from diffusion_tf.errors import UsageError
from support.data import make_digit_folder


def _batches(input_fn, batch_size, max_batches=None, **params):
  """uint8 images [N, H, W, 3] of input_fn's batches (all of a one-pass fn, or max_batches), checking the format."""
  with tf.Graph().as_default():
    ds = input_fn(dict(params, batch_size=batch_size))
    shapes, types = tf.data.get_output_shapes(ds), tf.data.get_output_types(ds)
    assert (types['image'], types['label']) == (tf.int32, tf.int32)
    nxt = tf.data.make_one_shot_iterator(ds).get_next()
    out = []
    with tf.Session() as sess:
      while max_batches is None or len(out) < max_batches:
        try:
          batch = sess.run(nxt)
        except tf.errors.OutOfRangeError:
          break
        assert batch['image'].shape[0] == batch_size and not batch['label'].any()
        out.append(batch['image'])
  assert shapes['image'].as_list()[0] == batch_size
  return np.concatenate(out).astype(np.uint8) if out else np.zeros([0], np.uint8)


def _dataset(data_dir, resolution=8, eval_fraction=0., lines=None, **kwargs):
  printer = (lines.append if lines is not None else lambda line: None)
  return folder.FolderDataset(str(data_dir), resolution=resolution, eval_fraction=eval_fraction, printer=printer,
                              **kwargs)


def _rows(images):
  return {img.tobytes() for img in images}


def test_every_image_under_the_folder_is_one_example_in_path_order(tmp_path):
  expected = make_digit_folder(str(tmp_path), n=20)
  lossless_webp = tmp_path / 'b' / 'c' / 'w.webp'
  webp_image = 255 - expected[sorted(expected)[0]]
  Image.fromarray(webp_image).save(str(lossless_webp), lossless=True)
  expected[str(lossless_webp)] = webp_image
  (tmp_path / 'a' / 'notes.txt').write_text('not an image extension: ignored')
  ds = _dataset(tmp_path)
  assert (ds.num_classes, ds.image_size, ds.image_shape) == (1, 8, [8, 8, 3])
  assert (ds.num_train_examples, ds.num_eval_examples) == (len(expected), None)
  assert ds.eval_input_fn({'batch_size': 1}) is None
  images = _batches(ds.train_one_pass_input_fn, batch_size=1)
  np.testing.assert_array_equal(images, np.stack([expected[p] for p in sorted(expected)]))


def test_images_are_centre_cropped_and_resized_as_pil_does(tmp_path):
  rng = np.random.RandomState(0)
  wide = rng.randint(0, 256, size=[12, 20, 3]).astype(np.uint8)  # crop columns 4..15, then 12 -> 8
  tall = rng.randint(0, 256, size=[9, 6, 3]).astype(np.uint8)  # crop rows 1..6 (offset rounded down), 6 -> 8
  Image.fromarray(wide).save(str(tmp_path / 'wide.png'))
  Image.fromarray(tall).save(str(tmp_path / 'tall.png'))
  lines = []
  ds = _dataset(tmp_path, lines=lines)
  want = [np.asarray(Image.fromarray(tall[1:7]).resize((8, 8), Image.LANCZOS)),
          np.asarray(Image.fromarray(wide[:, 4:16]).resize((8, 8), Image.LANCZOS))]
  np.testing.assert_array_equal(_batches(ds.train_one_pass_input_fn, batch_size=2), np.stack(want))
  assert '1 smaller than 8x8 (upsampled)' in lines[0]


def test_undecodable_files_are_all_named_in_one_error_before_any_input_fn(tmp_path):
  make_digit_folder(str(tmp_path), n=6, corrupt=True)
  with pytest.raises(UsageError) as e:
    _dataset(tmp_path)
  message = str(e.value)
  assert message.startswith('2 of the 10 images under')
  assert os.path.join('a', 'bad.png') in message and os.path.join('b', 'cut.png') in message


def test_grey_and_rgba_images_become_rgb_and_one_line_counts_them(tmp_path):
  expected = make_digit_folder(str(tmp_path), n=6)
  lines = []
  ds = _dataset(tmp_path, lines=lines)
  assert len(lines) == 1
  assert 'converted to RGB (alpha dropped): 1 grey (L), 1 with alpha (RGBA)' in lines[0], lines
  assert '8 images at 8x8, 0 held out' in lines[0]
  images = _batches(ds.train_one_pass_input_fn, batch_size=1)
  order = sorted(expected)
  for name in ('grey.png', 'rgba.png'):
    i = [os.path.basename(p) for p in order].index(name)
    np.testing.assert_array_equal(images[i], expected[order[i]])
  lines = []
  shutil.rmtree(str(tmp_path))
  make_digit_folder(str(tmp_path), n=6, grey=False, rgba=False)
  _dataset(tmp_path, lines=lines)
  assert 'converted' not in lines[0]


def test_held_out_split_follows_the_hash_of_the_relative_path_and_survives_added_images(tmp_path):
  expected = make_digit_folder(str(tmp_path), n=60, grey=False, rgba=False)

  def held_out_here(path):  # recomputed from the rule in the docs: sha256 of the '/'-separated relative path
    rel = os.path.relpath(path, str(tmp_path)).replace(os.sep, '/')
    return int(hashlib.sha256(rel.encode()).hexdigest()[:16], 16) < 0.25 * 2 ** 64

  want_eval = [p for p in sorted(expected) if held_out_here(p)]
  assert 5 <= len(want_eval) <= 25  # 60 draws at 1/4
  ds = _dataset(tmp_path, eval_fraction=0.25)
  assert (ds.num_train_examples, ds.num_eval_examples) == (60 - len(want_eval), len(want_eval))
  evals = _batches(ds.eval_input_fn, batch_size=1)
  np.testing.assert_array_equal(evals, np.stack([expected[p] for p in want_eval]))
  train = _batches(ds.train_one_pass_input_fn, batch_size=1)
  np.testing.assert_array_equal(train, np.stack([expected[p] for p in sorted(expected) if p not in want_eval]))
  assert _dataset(tmp_path, eval_fraction=0.25).name == ds.name  # the same folder: the same statistics' name

  extra = make_digit_folder(str(tmp_path / 'more'), n=15, grey=False, rgba=False)
  grown = _dataset(tmp_path, eval_fraction=0.25)
  assert grown.name != ds.name  # other images: their statistics are not the old ones
  grown_eval = _rows(_batches(grown.eval_input_fn, batch_size=1))
  grown_train = _rows(_batches(grown.train_one_pass_input_fn, batch_size=1))
  assert _rows(evals) <= grown_eval and _rows(train) <= grown_train  # no old image changed sides
  assert grown.num_train_examples + grown.num_eval_examples == 60 + len(extra)
  assert grown.num_eval_examples == len(want_eval) + sum(held_out_here(p) for p in extra)


def test_training_input_is_every_training_image_each_epoch_in_a_seeded_order(tmp_path, monkeypatch):
  expected = make_digit_folder(str(tmp_path), n=24, grey=False, rgba=False)
  want = _rows(expected.values())
  for cache_bytes in (folder._CACHE_BYTES, 0):  # decoded once into memory / streamed from the files every epoch
    monkeypatch.setattr(folder, '_CACHE_BYTES', cache_bytes)
    ds = _dataset(tmp_path, seed=3)
    assert ds._cached == bool(cache_bytes)
    two_epochs = _batches(ds.train_input_fn, batch_size=4, max_batches=12)
    assert two_epochs.shape == (48, 8, 8, 3)
    assert _rows(two_epochs[:24]) == want and _rows(two_epochs[24:]) == want
    assert not np.array_equal(two_epochs[:24], two_epochs[24:])  # reshuffled each epoch
    np.testing.assert_array_equal(_batches(_dataset(tmp_path, seed=3).train_input_fn, batch_size=4, max_batches=6),
                                  two_epochs[:24])


def test_pipelines_of_a_cluster_each_read_their_shard_of_the_file_order(tmp_path):
  make_digit_folder(str(tmp_path), n=30, grey=False, rgba=False)
  ds = _dataset(tmp_path)
  order = _batches(ds.train_one_pass_input_fn, batch_size=1)
  for index in range(3):
    context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=index, num_replicas_in_sync=3)
    epoch = _batches(ds.train_input_fn, batch_size=5, max_batches=2, context=context)
    assert _rows(epoch) == _rows(order[index::3])  # images index, index + 3, ...: the pipeline's ten


def test_get_dataset_folder_and_its_errors(tmp_path):
  make_digit_folder(str(tmp_path / 'imgs'), n=4)
  ds = catalog.get_dataset('folder', data_dir=str(tmp_path / 'imgs'), resolution=16, eval_fraction=0.)
  assert isinstance(ds, folder.FolderDataset) and ds.image_shape == [16, 16, 3]
  assert _batches(ds.train_one_pass_input_fn, batch_size=2).shape == (6, 16, 16, 3)
  (tmp_path / 'empty' / 'sub').mkdir(parents=True)
  (tmp_path / 'empty' / 'sub' / 'readme.txt').write_text('no images')
  for kwargs, needle in [
      (dict(data_dir=str(tmp_path / 'empty'), resolution=8), 'holds no .jpg/.jpeg/.png/.webp files'),
      (dict(data_dir=str(tmp_path / 'missing'), resolution=8), 'is not a directory'),
      (dict(data_dir=None, resolution=8), 'expected the path of a folder'),
      (dict(data_dir=str(tmp_path / 'imgs'), resolution=None), 'needs the training image size'),
      (dict(data_dir=str(tmp_path / 'imgs'), resolution=0), 'resolution=0'),
      (dict(data_dir=str(tmp_path / 'imgs'), resolution=8, eval_fraction=1.), 'eval_fraction=1.0'),
      (dict(data_dir=str(tmp_path / 'imgs'), resolution=8, eval_fraction=0.999999), 'holds out all 6 images')]:
    with pytest.raises(UsageError) as e:
      catalog.get_dataset('folder', **kwargs)
    assert needle in str(e.value), (kwargs, str(e.value))
  with pytest.raises(ValueError, match="data_dir only with name='folder'"):
    catalog.get_dataset('digits', data_dir=str(tmp_path / 'imgs'))
  with pytest.raises(UsageError, match='expected --resolution'):
    catalog.image_size_of({'dataset': 'folder'})
  assert catalog.image_size_of({'dataset': 'folder', 'resolution': 64}) == 64
  assert catalog.folder_args({'dataset': 'folder', 'data_dir': 'x'}) == {'data_dir': 'x', 'eval_fraction': 0.05}
  assert catalog.folder_args({'dataset': 'folder', 'data_dir': 'x', 'eval_fraction': 0.}, data_dir='y') == {
    'data_dir': 'y', 'eval_fraction': 0.}
  assert catalog.folder_args({'dataset': 'cifar10'}) == {}
  with pytest.raises(UsageError, match='applies to runs on dataset folder'):
    catalog.folder_args({'dataset': 'cifar10'}, data_dir='y')
