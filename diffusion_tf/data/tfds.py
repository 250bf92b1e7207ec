"""The tfds datasets cifar10 and celebahq256 (see datasets.py): where tfds keeps them, preparing them offline from an
archive already in tfds' download cache, and TfdsDataset / SimpleDataset, their input fns. Never downloads unless
asked to (download_and_prepare)."""

import collections
import contextlib
import hashlib
import json
import os

import tensorflow.compat.v1 as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import resource as tfds_resource

from .. import compat
from .pipeline import ImageDataset

_TfdsSpec = collections.namedtuple('_TfdsSpec', [
  'tfds_name',  # name:version as tfds spells it
  'builder_dir',  # where tfds keeps the prepared dataset, relative to data_dir
  'image_size',
  'eval_split',  # None: no test split
  'url',  # archive tfds downloads (None for manual datasets)
  'manual_file',  # file tfds reads from <data_dir>/downloads/manual/<tfds dataset name>/ (None if downloaded)
])

_TFDS_SPECS = {
  'cifar10': _TfdsSpec(
    tfds_name='cifar10:' + compat.tfds_version('cifar10'), builder_dir='cifar10/' + compat.tfds_version('cifar10'),
    image_size=32, eval_split='test',
    url='https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz', manual_file=None),
  'celebahq256': _TfdsSpec(
    tfds_name='celeb_a_hq/256:' + compat.tfds_version('celeb_a_hq/256'),
    builder_dir='celeb_a_hq/256/' + compat.tfds_version('celeb_a_hq/256'),
    image_size=256, eval_split=None,
    url=None, manual_file='celeb_a_hq/data256x256.tar'),
}


def _tfds_dataset_name(spec):
  """'celeb_a_hq/256:2.0.0' -> 'celeb_a_hq' (the builder's name, without config and version)."""
  return spec.tfds_name.split(':')[0].split('/')[0]


def _resolve_tfds_data_dir(tfds_data_dir):
  """None means tfds' own default, ~/tensorflow_datasets."""
  return os.path.expanduser(tfds_data_dir or os.path.join('~', 'tensorflow_datasets'))


def _tfds_spec(name):
  if name not in _TFDS_SPECS:
    raise ValueError('dataset {!r} is not a tfds dataset; expected one of {}'.format(name, ', '.join(_TFDS_SPECS)))
  return _TFDS_SPECS[name]


def tfds_prepared_dir(name, tfds_data_dir=None):
  """Directory of the prepared dataset (TFRecords + dataset_info.json) that tfds reads."""
  return os.path.join(_resolve_tfds_data_dir(tfds_data_dir), _tfds_spec(name).builder_dir)


def tfds_source_path(name, tfds_data_dir=None):
  """Where tfds looks for the source data of `name` before it would download anything.

  Downloaded archives are cached as <data_dir>/downloads/<sanitized url><base64 sha256>.<ext> next to a JSON
  `.INFO` file; tfds (2.1 and 4.9) reuses such a file without downloading (and without re-checking its checksum)
  when both exist. Manual datasets are read from <data_dir>/downloads/manual/<dataset>/<file>.
  """
  spec = _tfds_spec(name)
  downloads = os.path.join(_resolve_tfds_data_dir(tfds_data_dir), 'downloads')
  if spec.url is None:
    return os.path.join(downloads, 'manual', spec.manual_file)
  _, sha256 = compat.tfds_url_size_sha256(_tfds_dataset_name(spec), spec.url)
  return os.path.join(downloads, tfds_resource.get_dl_fname(spec.url, sha256))


def _tfds_info_file_contents(name):
  """The `.INFO` JSON tfds writes next to the downloaded source of dataset `name` (a key of _TFDS_SPECS)."""
  spec = _tfds_spec(name)
  size, sha256 = compat.tfds_url_size_sha256(_tfds_dataset_name(spec), spec.url)
  return json.dumps(compat.tfds_info_file(_tfds_dataset_name(spec), spec.url, size, sha256), sort_keys=True)


def place_tfds_download(name, archive_path, *, tfds_data_dir=None):
  """Install a manually fetched source file where tfds finds it, so the dataset can be prepared offline.

  For cifar10, `archive_path` is cifar-10-binary.tar.gz (from the URL in _TFDS_SPECS); its size and sha256 must
  match tfds' registered checksum. For celebahq256 it is data256x256.tar. Returns the installed path.
  """
  spec = _tfds_spec(name)
  if not tf.io.gfile.exists(archive_path):
    raise ValueError('archive_path={!r} does not exist; expected the {} source file'.format(
      archive_path, spec.url or spec.manual_file))
  dst = tfds_source_path(name, tfds_data_dir)
  if spec.url is not None:
    size, sha256 = compat.tfds_url_size_sha256(_tfds_dataset_name(spec), spec.url)
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(archive_path, 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 20), b''):
        digest.update(chunk)
    actual_size = tf.io.gfile.stat(archive_path).length
    if (actual_size, digest.hexdigest()) != (size, sha256):
      raise ValueError('archive_path={!r} has size {} and sha256 {}; expected {} and {} (the file at {})'.format(
        archive_path, actual_size, digest.hexdigest(), size, sha256, spec.url))
  tf.io.gfile.makedirs(os.path.dirname(dst))
  tf.io.gfile.copy(archive_path, dst + '.incomplete', overwrite=True)
  tf.io.gfile.rename(dst + '.incomplete', dst, overwrite=True)
  if spec.url is not None:
    info = _tfds_info_file_contents(name)
    with tf.io.gfile.GFile(dst + '.INFO.incomplete', 'w') as f:
      f.write(info)
    tf.io.gfile.rename(dst + '.INFO.incomplete', dst + '.INFO', overwrite=True)
  return dst


@contextlib.contextmanager
def _without_gcs_metadata():
  """Skip tfds' lookup of pre-computed split metadata on GCS.

  A tfds 2.1.0 builder whose data is not prepared yet fetches that metadata over HTTP in its constructor
  (DatasetInfo.initialize_from_bucket), which raises on a machine without network. The metadata is recomputed
  from the generated files during preparation anyway, so nothing is lost.
  """
  original = tfds.core.DatasetInfo.initialize_from_bucket
  tfds.core.DatasetInfo.initialize_from_bucket = lambda self: None
  try:
    yield
  finally:
    tfds.core.DatasetInfo.initialize_from_bucket = original


def _prepare_tfds_offline(spec, data_dir):
  tf.logging.info('Preparing %s in %s from %s (offline)', spec.tfds_name, data_dir, data_dir + '/downloads')
  config = compat.tfds_download_config(
    os.path.join(data_dir, 'downloads', 'manual'), _tfds_dataset_name(spec),
    try_download_gcs=False,  # would fetch the prepared files over HTTP
    compute_stats=tfds.download.ComputeStatsMode.SKIP)  # split sizes come from the shard lengths
  with tf.Graph().as_default(), _without_gcs_metadata():  # tfds builds ops: keep them out of the caller's graph
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    try:
      builder.download_and_prepare(download_config=config)
    except Exception as e:  # tfds raises AssertionError, tarfile errors, ... on a broken source
      raise ValueError('could not prepare {} in {}: {}: {}'.format(
        spec.tfds_name, data_dir, type(e).__name__, e)) from e


def download_and_prepare(name, *, tfds_data_dir=None):
  """Prepare a tfds dataset the usual tfds way, downloading what it needs (needs network access).

  Example: python -c "from diffusion_tf.tpu_utils import datasets as d; d.download_and_prepare('cifar10',
  tfds_data_dir='tensorflow_datasets')"
  """
  spec = _tfds_spec(name)
  with tf.Graph().as_default():
    tfds.builder(spec.tfds_name, data_dir=_resolve_tfds_data_dir(tfds_data_dir)).download_and_prepare()
  return tfds_prepared_dir(name, tfds_data_dir)


def ensure_tfds_prepared(name, tfds_data_dir=None):
  """Make sure `name` is prepared under tfds_data_dir, preparing it offline from a cached source if needed.

  Raises a one-line ValueError saying what to do if neither the prepared dataset nor its source is there.
  """
  spec = _tfds_spec(name)
  data_dir = _resolve_tfds_data_dir(tfds_data_dir)
  if not tf.io.gfile.isdir(data_dir):
    raise ValueError('tfds_data_dir={!r} does not exist; expected a directory holding the prepared {} (at {}) or '
                     'its source (at {})'.format(data_dir, spec.tfds_name, tfds_prepared_dir(name, data_dir),
                                                 tfds_source_path(name, data_dir)))
  prepared = tfds_prepared_dir(name, data_dir)
  if tf.io.gfile.exists(os.path.join(prepared, 'dataset_info.json')):
    return prepared
  if tf.io.gfile.exists(prepared):
    raise ValueError('{} exists but has no dataset_info.json; expected a complete tfds dataset {} (delete the '
                     'directory to prepare it again)'.format(prepared, spec.tfds_name))
  source = tfds_source_path(name, data_dir)
  get_it = ('download {url} and run diffusion_tf.tpu_utils.datasets.place_tfds_download({name!r}, '
            '\'cifar-10-binary.tar.gz\', tfds_data_dir={dir!r}), or with network access run '
            'diffusion_tf.tpu_utils.datasets.download_and_prepare({name!r}, tfds_data_dir={dir!r})' if spec.url else
            'put there data256x256.tar, a tar of the 30000 CelebA-HQ images as 256x256 PNGs (see '
            'https://github.com/tkarras/progressive_growing_of_gans#preparing-datasets-for-training)').format(
              url=spec.url, name=name, dir=data_dir)
  if not tf.io.gfile.exists(source):
    raise ValueError('{} is not prepared in tfds_data_dir={!r} and its source {} is missing; to fix: {}'.format(
      spec.tfds_name, data_dir, source, get_it))
  if spec.url is not None and not tf.io.gfile.exists(source + '.INFO'):
    # Without the .INFO file tfds does not trust the cached archive and downloads it again.
    raise ValueError('{} exists but {}.INFO is missing, so tfds would download the archive again; to fix: {}'.format(
      source, source, get_it))
  _prepare_tfds_offline(spec, data_dir)
  return prepared


class TfdsDataset(ImageDataset):
  """cifar10 / celebahq256 read through tfds from a prepared data dir."""

  def __init__(self, name, *, tfds_data_dir=None, seed=547):
    spec = _tfds_spec(name)
    self._spec = spec
    self._data_dir = _resolve_tfds_data_dir(tfds_data_dir)
    ensure_tfds_prepared(name, self._data_dir)
    self._builder = tfds.builder(spec.tfds_name, data_dir=self._data_dir)  # prepared: reads local metadata only
    splits = self._builder.info.splits
    super().__init__(
      name=name, image_size=spec.image_size, seed=seed, num_train_examples=splits['train'].num_examples,
      num_eval_examples=splits[spec.eval_split].num_examples if spec.eval_split else None)
    shape = tuple(self._builder.info.features['image'].shape)
    assert shape == tuple(self.image_shape), (shape, self.image_shape)

  def _images(self, split, shuffle, seed=None):
    ds = self._builder.as_dataset(
      split=split, shuffle_files=shuffle, read_config=tfds.ReadConfig(shuffle_seed=seed))
    return ds.map(lambda x: x['image'], num_parallel_calls=tf.data.experimental.AUTOTUNE)

  def _train_images(self, shuffle, seed=None):
    return self._images('train', shuffle, seed)

  def _eval_images(self):
    return None if self._spec.eval_split is None else self._images(self._spec.eval_split, shuffle=False)


class SimpleDataset(TfdsDataset):
  """The original's class of the tfds datasets: SimpleDataset('cifar10' or 'celebahq256', tfds_data_dir)."""

  DATASET_NAMES = ('cifar10', 'celebahq256')

  def __init__(self, name, tfds_data_dir, *, seed=547):
    if name not in self.DATASET_NAMES:
      raise ValueError('SimpleDataset name={!r}; expected one of {}'.format(name, ', '.join(self.DATASET_NAMES)))
    super().__init__(name, tfds_data_dir=tfds_data_dir, seed=seed)
