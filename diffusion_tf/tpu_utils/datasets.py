"""Input pipelines of the paper's datasets, and an offline stand-in.

Every dataset is built by `get_dataset(name, ...)` and exposes the interface of the original release:

  ds = get_dataset('cifar10', tfds_data_dir='tensorflow_datasets')
  ds.num_classes                 # 1: all models here are unconditional
  ds.image_size, ds.image_shape  # 32, [32, 32, 3]
  ds.train_input_fn(params)           # infinite, shuffled (seeded)
  ds.train_one_pass_input_fn(params)  # the training set once, in order (bits/dim over the training set)
  ds.eval_input_fn(params)            # the test split once, in order; None if the dataset has no test split

Each input fn reads `params['batch_size']` (TPUEstimator passes the per-host batch size there) and returns a
tf.data.Dataset of {'image': int32 [B, H, W, 3] in {0..255}, 'label': int32 [B] (zeros)}, batched with
drop_remainder=True (static shapes, as TPUs need) and prefetched. The model scales images itself (x / 127.5 - 1).

Datasets:
  cifar10      tfds cifar10:3.0.0 (tfds 2.1, TF 1.15) or 3.0.2 (tfds 4.9, TF 2.15: the same images, in the same
               order), 50000 train / 10000 test, 32x32.
  celebahq256  tfds celeb_a_hq/256:2.0.0, 30000 train, no test split, 256x256. tfds cannot download it: put
               data256x256.tar (a tar of 256x256 PNGs, made with the progressive_growing_of_gans tools) at
               <tfds_data_dir>/downloads/manual/celeb_a_hq/data256x256.tar.
  lsun         StyleGAN2-format TFRecords (scripts/prepare_lsun.py, or StyleGAN2's dataset_tool.py create_lsun):
               one tf.train.Example per image with 'shape' int64 [3] = (C, H, W) and 'data' bytes = the raw CHW
               uint8 pixels. `tfr_file` is a path or glob (local or gs://), e.g. lsun/church/church-r08.tfrecords
               (r08: 2^8 = 256 pixels). No test split.
  digits       offline demo data: scikit-learn's 1,797 real 8x8 handwritten digits (shipped inside the package,
               no network), upsampled bilinearly to 32x32 grey RGB; train = the first 1,500 images, test = the
               other 297.

tfds datasets are never downloaded here: get_dataset uses a prepared dataset under tfds_data_dir, prepares it
offline if the source archive is already in tfds' download cache (see `tfds_source_path`, `place_tfds_download`),
and otherwise raises a ValueError that says what to do (e.g. run `download_and_prepare` once with network access).
"""

import collections
import contextlib
import functools
import hashlib
import json
import os
import re

import numpy as np
import tensorflow.compat.v1 as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import resource as tfds_resource

from .. import compat
from .flags import IMAGE_SIZES

DATASET_NAMES = ('cifar10', 'celebahq256', 'lsun', 'digits')

# Bytes of decoded uint8 images the training shuffle buffer may hold (StyleGAN's TFRecord reader allowed 4 GiB). The
# original shuffled 50,000 images after repeat(), 9.8 GB for CelebA-HQ at 256x256 (docs/fidelity.md).
_SHUFFLE_BUFFER_BYTES = 2 << 30


def pack(image, label):
  """The element format of every input fn: {'image': int32, 'label': int32}."""
  return {'image': tf.cast(image, tf.int32), 'label': tf.cast(label, tf.int32)}


def _shuffle_buffer_size(image_size, num_examples):
  """Whole dataset if it fits in _SHUFFLE_BUFFER_BYTES (CIFAR-10: all 50000), else as many images as fit."""
  fit = max(1, _SHUFFLE_BUFFER_BYTES // (image_size * image_size * 3))
  return int(min(fit, num_examples)) if num_examples else int(fit)


def _batch_size(params):
  batch_size = params.get('batch_size') if isinstance(params, dict) else None
  if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
    raise ValueError('params[\'batch_size\']={!r}; expected a positive int'.format(batch_size))
  return int(batch_size)


def input_pipeline(params):
  """(index, count) of the input pipeline an input fn is building, from `params['context']`: a TPUEstimator
  TPUContext (with per-host input, PER_HOST_V2: one pipeline per host of the TPU system), a tf.distribute
  InputContext (one pipeline per worker of a multi-worker cluster), or None (the one pipeline: (0, 1))."""
  context = params.get('context') if isinstance(params, dict) else None
  if context is None:
    return 0, 1
  if hasattr(context, 'num_input_pipelines'):  # tf.distribute.InputContext
    index, count = context.input_pipeline_id, context.num_input_pipelines
  else:  # TPUContext: (host device, invocation index, number of invocations, replicas fed by this one)
    _, index, count, _ = context.current_input_fn_deployment()
  if not 0 <= index < count:
    raise ValueError('input pipeline {} of {}; expected an index in 0..{}'.format(index, count, count - 1))
  return int(index), int(count)


class _ImageDataset:
  """Shared input fns. Subclasses provide `_train_images(shuffle, seed)` and `_eval_images()`: datasets of uint8
  [H, W, 3] images, unbatched (`seed` seeds any file-order shuffle)."""

  num_classes = 1  # unconditional

  def __init__(self, *, name, image_size, seed, num_train_examples, num_eval_examples):
    self.name = name
    self.image_size = image_size
    self.seed = seed
    self.num_train_examples = num_train_examples  # None if unknown (LSUN: not counted)
    self.num_eval_examples = num_eval_examples  # None if there is no test split
    self.shuffle_buffer_size = _shuffle_buffer_size(image_size, num_train_examples)

  @property
  def image_shape(self):
    return [self.image_size, self.image_size, 3]

  def _train_images(self, shuffle, seed=None):
    raise NotImplementedError

  def _eval_images(self):
    raise NotImplementedError

  def _proc_and_batch(self, ds, batch_size):
    """uint8 [H, W, 3] images -> batches of pack(image=int32 [B, H, W, 3], label=zeros [B])."""
    def _process(img):
      img.set_shape(self.image_shape)
      return pack(image=img, label=tf.constant(0, dtype=tf.int32))
    ds = ds.map(_process, num_parallel_calls=tf.data.experimental.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.experimental.AUTOTUNE)

  def train_input_fn(self, params):
    """Infinite shuffled training batches (reshuffled every epoch; seeded by `seed` and the input pipeline's index).

    When several input pipelines feed one training run (the hosts of a TPU pod slice, the workers of a cluster; see
    `input_pipeline`), pipeline i of n reads the images i, i + n, i + 2n, ... of the training set in its fixed file
    order, so that the pipelines together read each image once per epoch.
    """
    batch_size = _batch_size(params)
    index, count = input_pipeline(params)
    seed = None if self.seed is None else self.seed + 1000003 * index
    if count == 1:
      ds = self._train_images(shuffle=True, seed=seed)
      buffer_size = self.shuffle_buffer_size
    else:
      ds = self._train_images(shuffle=False).shard(count, index)
      buffer_size = self.shuffle_buffer_size // count if self.num_train_examples else self.shuffle_buffer_size
    ds = ds.shuffle(max(buffer_size, 1), seed=seed, reshuffle_each_iteration=True).repeat()
    return self._proc_and_batch(ds, batch_size)

  def train_one_pass_input_fn(self, params):
    """The training set once, in a fixed order (the last incomplete batch is dropped)."""
    return self._proc_and_batch(self._train_images(shuffle=False), _batch_size(params))

  # The training images whose Inception statistics the evaluation compares samples with, and their name in the
  # statistics cache: as the original, the one-pass training set.
  reference_split_name = 'train'

  def reference_input_fn(self, params):
    return self.train_one_pass_input_fn(params)

  def eval_input_fn(self, params):
    """The test split once, in a fixed order; None if the dataset has no test split."""
    batch_size = _batch_size(params)
    ds = self._eval_images()
    return None if ds is None else self._proc_and_batch(ds, batch_size)


# ---------------------------------------------------------------------------------------------------------------
# tfds datasets: cifar10, celebahq256

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
    image_size=IMAGE_SIZES['cifar10'], eval_split='test',
    url='https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz', manual_file=None),
  'celebahq256': _TfdsSpec(
    tfds_name='celeb_a_hq/256:' + compat.tfds_version('celeb_a_hq/256'),
    builder_dir='celeb_a_hq/256/' + compat.tfds_version('celeb_a_hq/256'),
    image_size=IMAGE_SIZES['celebahq256'], eval_split=None,
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


class TfdsDataset(_ImageDataset):
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


# ---------------------------------------------------------------------------------------------------------------
# LSUN: StyleGAN2-format TFRecords

_TFR_RESOLUTION_RE = re.compile(r'-r(\d\d)\.tfrecords$')
_GLOB_CHARS_RE = re.compile(r'[*?[]')


def _first_tfrecord(path):
  """The first serialized record of a TFRecord file, or None if it has none."""
  for record in tf.io.tf_record_iterator(path):
    return record
  return None


def check_lsun_tfrecords(tfr_file, resolution=None):
  """Find the files of `tfr_file` (path or glob) and check their images; returns (files, resolution).

  Checks the first record of every file ([3, R, R] uint8, R = `resolution` if given) and that the rNN in file
  names, if any, agrees (2^NN = R).
  """
  if not tfr_file:
    raise ValueError('tfr_file={!r}; expected a path or glob of StyleGAN2-format TFRecords, e.g. '
                     'lsun/church/church-r08.tfrecords'.format(tfr_file))
  if tf.io.gfile.isdir(tfr_file):
    raise ValueError('tfr_file={!r} is a directory; expected a file or glob such as {}'.format(
      tfr_file, os.path.join(tfr_file, '*-r08.tfrecords')))
  files = sorted(tf.io.gfile.glob(tfr_file)) if _GLOB_CHARS_RE.search(tfr_file) else (
    [tfr_file] if tf.io.gfile.exists(tfr_file) else [])
  if not files:
    raise ValueError('tfr_file={!r} matches no file; expected StyleGAN2-format TFRecords such as '
                     'lsun/church/church-r08.tfrecords'.format(tfr_file))
  for path in files:
    try:
      record = _first_tfrecord(path)
    except tf.errors.OpError as e:
      raise ValueError('{} is not a readable TFRecord file: {}'.format(path, e.message)) from e
    if record is None:
      raise ValueError('{} holds no records; expected at least one image'.format(path))
    feature = tf.train.Example.FromString(record).features.feature
    if 'shape' not in feature or 'data' not in feature:
      raise ValueError('{}: records have features {}; expected StyleGAN2 features shape (int64 [3]) and data '
                       '(bytes)'.format(path, sorted(feature)))
    shape = list(feature['shape'].int64_list.value)
    size = resolution or (shape[2] if len(shape) == 3 else 0)
    want = [3, size, size]
    if shape != want:
      raise ValueError('{}: images of shape (C, H, W)={}; expected {}'.format(path, shape, want))
    num_bytes = sum(len(v) for v in feature['data'].bytes_list.value)
    if num_bytes != int(np.prod(shape)):
      raise ValueError('{}: image data has {} bytes; expected {} (uint8 {})'.format(
        path, num_bytes, int(np.prod(shape)), shape))
    resolution = shape[1]
    match = _TFR_RESOLUTION_RE.search(path)
    if match and 2 ** int(match.group(1)) != resolution:
      raise ValueError('{}: file name says resolution 2^{}={} but images are {}x{}; expected matching names'.format(
        path, int(match.group(1)), 2 ** int(match.group(1)), resolution, resolution))
  return files, resolution


class LsunDataset(_ImageDataset):
  """StyleGAN2-format TFRecords of square RGB images (LSUN church/bedroom/cat at 256x256)."""

  def __init__(self, tfr_file, resolution=256, max_images=None, shuffle_mb=4096, buffer_mb=256, *, seed=547):
    """resolution: the images' size (None: whatever the TFRecords hold); max_images: read only the first
    max_images images (in file order); shuffle_mb: MiB of decoded images in the training shuffle buffer (0: no
    shuffling beyond the file order), as StyleGAN2's reader; buffer_mb: MiB of the TFRecord read buffer."""
    self._files, image_size = check_lsun_tfrecords(tfr_file, resolution)
    for what, value in [('max_images', max_images), ('shuffle_mb', shuffle_mb), ('buffer_mb', buffer_mb)]:
      if (value is not None or what != 'max_images') and (
          not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0):
        raise ValueError('{}={!r}; expected a non-negative integer'.format(what, value))
    self.max_images, self.buffer_mb = max_images, int(buffer_mb)
    super().__init__(name='lsun', image_size=image_size, seed=seed, num_train_examples=max_images,
                     num_eval_examples=None)
    self.shuffle_buffer_size = max(1, (int(shuffle_mb) << 20) // (image_size * image_size * 3))

  def _parse(self, record):
    """Serialized Example -> uint8 [R, R, 3] (stored as CHW)."""
    R = self.image_size
    features = tf.parse_single_example(record, features={
      'shape': tf.FixedLenFeature([3], tf.int64), 'data': tf.FixedLenFeature([], tf.string)})
    check = tf.assert_equal(features['shape'], tf.constant([3, R, R], tf.int64),
                            message='lsun TFRecord image of the wrong shape; expected (C, H, W) = (3, {}, {})'.format(
                              R, R))
    with tf.control_dependencies([check]):
      data = tf.reshape(tf.decode_raw(features['data'], tf.uint8), [3, R, R])
    img = tf.transpose(data, [1, 2, 0])  # CHW -> HWC
    assert img.shape.as_list() == self.image_shape
    return img

  def _train_images(self, shuffle, seed=None):
    files = tf.data.Dataset.from_tensor_slices(self._files)
    if shuffle and self.max_images is None:  # max_images: the first images, in file order
      files = files.shuffle(len(self._files), seed=seed, reshuffle_each_iteration=True)
    # Files one after the other (StyleGAN2 writes one file per resolution); a parallel interleave gains nothing
    # there, and TF 1.15 can crash when a session closes while one is being torn down.
    ds = tf.data.TFRecordDataset(files, buffer_size=self.buffer_mb << 20)
    if self.max_images is not None:
      ds = ds.take(self.max_images)
    return ds.map(self._parse, num_parallel_calls=tf.data.experimental.AUTOTUNE)

  def _eval_images(self):
    return None

  @property
  def reference_split_name(self):
    return 'train-shuffled{}'.format(self.seed)

  def reference_input_fn(self, params):
    """The training set once, shuffled with the seed `seed`: the original's LSUN one-pass input was shuffled (an
    unseeded 50,000-image buffer), so its first 30,000 images were a random subset. The buffer here is
    train_input_fn's (shuffle_mb: 21,845 images at 256x256) after a shuffle of the file order."""
    ds = self._train_images(shuffle=True, seed=self.seed)
    ds = ds.shuffle(self.shuffle_buffer_size, seed=self.seed, reshuffle_each_iteration=False)
    return self._proc_and_batch(ds, _batch_size(params))


# ---------------------------------------------------------------------------------------------------------------
# digits: offline demo data

DIGITS_NUM_TRAIN = 1500  # of sklearn's 1797 digits; the remaining 297 form the test split
DIGITS_RESOLUTIONS = (8, 16, 32, 64)


def upsample_bilinear(x, size):
  """Bilinear resize of [N, h, w] float images to [N, size, size], pixel centres aligned (half-pixel rule).

  Output pixel i samples the input at u = (i + 0.5) * h / size - 0.5, clamped to [0, h - 1]:
  y_i = (1 - frac(u)) x_floor(u) + frac(u) x_floor(u)+1 (separately along rows and columns).
  """
  N, h, w = x.shape

  def _weights(n_in):
    u = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
    lo = np.floor(u).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros([size, n_in])
    np.add.at(m, (np.arange(size), lo), 1 - (u - lo))
    np.add.at(m, (np.arange(size), hi), u - lo)
    return m  # [size, n_in], rows sum to 1

  out = np.einsum('ih,nhw,jw->nij', _weights(h), x, _weights(w))
  assert out.shape == (N, size, size)
  return out


def load_digits_images(resolution=32):
  """sklearn's 1797 8x8 digits (values 0..16) as uint8 grey RGB [1797, R, R, 3] in 0..255."""
  from sklearn.datasets import load_digits  # heavy import, only when asked for
  x = load_digits().images.astype(np.float64) * (255. / 16.)  # [1797, 8, 8]
  x = upsample_bilinear(x, resolution) if resolution != 8 else x
  x = np.clip(np.round(x), 0, 255).astype(np.uint8)
  return np.repeat(x[..., None], 3, axis=-1)


class DigitsDataset(_ImageDataset):
  """Offline stand-in for demos and tests: real handwritten digits, no download."""

  def __init__(self, *, resolution=IMAGE_SIZES['digits'], seed=547):
    if resolution not in DIGITS_RESOLUTIONS:
      raise ValueError('digits resolution={!r}; expected one of {}'.format(resolution, DIGITS_RESOLUTIONS))
    images = load_digits_images(resolution)
    self._train, self._test = images[:DIGITS_NUM_TRAIN], images[DIGITS_NUM_TRAIN:]
    super().__init__(name='digits', image_size=resolution, seed=seed, num_train_examples=len(self._train),
                     num_eval_examples=len(self._test))

  def _train_images(self, shuffle, seed=None):
    del shuffle, seed  # in-memory array: train_input_fn's shuffle covers it all
    return tf.data.Dataset.from_tensor_slices(self._train)

  def _eval_images(self):
    return tf.data.Dataset.from_tensor_slices(self._test)


# ---------------------------------------------------------------------------------------------------------------

# The original's table of dataset constructors.
DATASETS = {
  'cifar10': functools.partial(SimpleDataset, name='cifar10'),
  'celebahq256': functools.partial(SimpleDataset, name='celebahq256'),
  'lsun': LsunDataset,
}


def get_dataset(name, *, tfds_data_dir=None, tfr_file=None, seed=547, resolution=None):
  """The dataset `name` (one of DATASET_NAMES); see the module docstring for the interface.

  Args:
    name: 'cifar10', 'celebahq256', 'lsun' or 'digits'.
    tfds_data_dir: tfds data dir for cifar10/celebahq256 (None: ~/tensorflow_datasets); ignored otherwise.
    tfr_file: path or glob of the LSUN TFRecords; required for (and only accepted by) 'lsun'.
    seed: seed of the training shuffle (None: not seeded).
    resolution: expected image size; None accepts the dataset's own (lsun: whatever the TFRecords hold; digits: 32).
      Must equal it for cifar10 (32) and celebahq256 (256); digits accepts 8, 16, 32 or 64.
  Raises:
    ValueError: unknown name, missing or unprepared data, images of the wrong size.
  """
  if name not in DATASET_NAMES:
    raise ValueError('unknown dataset name {!r}; expected one of {}'.format(name, ', '.join(DATASET_NAMES)))
  if tfr_file is not None and name != 'lsun':
    raise ValueError('tfr_file={!r} given for dataset {!r}; expected tfr_file only with name=\'lsun\''.format(
      tfr_file, name))
  if resolution is not None and (not isinstance(resolution, (int, np.integer)) or resolution < 1):
    raise ValueError('resolution={!r}; expected a positive int or None'.format(resolution))
  if name in _TFDS_SPECS:
    size = _TFDS_SPECS[name].image_size
    if resolution not in (None, size):
      raise ValueError('{} images are {}x{}; got resolution={!r}'.format(name, size, size, resolution))
    return TfdsDataset(name, tfds_data_dir=tfds_data_dir, seed=seed)
  if name == 'lsun':
    return LsunDataset(tfr_file, resolution=resolution, seed=seed)
  return DigitsDataset(resolution=resolution or IMAGE_SIZES['digits'], seed=seed)
