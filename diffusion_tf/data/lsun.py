"""LSUN as StyleGAN2-format TFRecords (see datasets.py; scripts/prepare_lsun.py writes them): their record format,
checking the files, and LsunDataset, their input fns."""

import os
import re

import numpy as np
import tensorflow.compat.v1 as tf

from .. import checks
from .pipeline import ImageDataset, _batch_size

_TFR_RESOLUTION_RE = re.compile(r'-r(\d\d)\.tfrecords$')
_GLOB_CHARS_RE = re.compile(r'[*?[]')
LSUN_RESOLUTION = 256  # the paper's LSUN models; the TFRecords name it in their file name (r08: 2^8)


def serialize_example(img_chw):
  """StyleGAN2's record format: shape = (C, H, W), data = the raw uint8 bytes in CHW order."""
  assert img_chw.dtype == np.uint8 and img_chw.ndim == 3
  return tf.train.Example(features=tf.train.Features(feature={
    'shape': tf.train.Feature(int64_list=tf.train.Int64List(value=list(img_chw.shape))),
    'data': tf.train.Feature(bytes_list=tf.train.BytesList(value=[img_chw.tobytes()])),
  })).SerializeToString()


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


class LsunDataset(ImageDataset):
  """StyleGAN2-format TFRecords of square RGB images (LSUN church/bedroom/cat at 256x256)."""

  def __init__(self, tfr_file, resolution=LSUN_RESOLUTION, max_images=None, shuffle_mb=4096, buffer_mb=256, *,
               seed=547):
    """resolution: the images' size (None: whatever the TFRecords hold); max_images: read only the first
    max_images images (in file order); shuffle_mb: MiB of decoded images in the training shuffle buffer (0: no
    shuffling beyond the file order), as StyleGAN2's reader; buffer_mb: MiB of the TFRecord read buffer."""
    self._files, image_size = check_lsun_tfrecords(tfr_file, resolution)
    checks.check_int('max_images', max_images, minimum=0, allow_none=True)
    checks.check_int('shuffle_mb', shuffle_mb, minimum=0)
    checks.check_int('buffer_mb', buffer_mb, minimum=0)
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
