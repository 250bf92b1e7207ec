"""The two supported stacks, TensorFlow 1.15 (Python 3.7, `requirements.txt`) and TensorFlow 2.15 (Python 3.11,
`requirements-tf2.txt`): the few places where they differ, and nowhere else.

The library is written once against `tensorflow.compat.v1` graph mode, which both run unchanged (variables, graphs,
sessions, Estimator/TPUEstimator, checkpoints). What does not carry over lives here, so that no other module asks
which stack it is on:

  STACK                                      'tf1' or 'tf2'
  tfds_version(name)                         the version of a tfds dataset that this stack's tfds builds
  tfds_url_size_sha256(name, url)            (bytes, sha256 hex) tfds registered for the download `url` of `name`
  tfds_info_file(name, url, size, sha256)    the `.INFO` JSON dict tfds keeps next to a cached download
  tfds_download_config(manual_root, name, **kwargs)
                                             a tfds DownloadConfig whose manual files are <manual_root>/<name>/*
  ensure_cpu_devices(n)                      make n CPU devices exist in this process (multi-replica path on CPU)
  cpu_devices_session_config(n)              ensure_cpu_devices(n), and a session config that has them
  CHECKPOINT_READ_ERRORS                     what reading a damaged checkpoint raises

New code that meets another difference adds one function here (with both branches side by side) and calls it.
"""

import os

import tensorflow.compat.v1 as tf
import tensorflow_datasets as tfds
from tensorflow.python.distribute import distribute_coordinator  # the in-process server of a multi-worker run

STACK = 'tf2' if tf.version.VERSION.startswith('2.') else 'tf1'

# A checkpoint reader meeting damaged files raises an OpError (DataLossError, NotFoundError) or ValueError on both;
# TF 2.15's Python reader turns a short read of the data file into IndexError ('Read less bytes than requested').
CHECKPOINT_READ_ERRORS = (tf.errors.OpError, ValueError) + ((IndexError,) if STACK == 'tf2' else ())

# ---------------------------------------------------------------------------------------------------------------
# tensorflow-datasets: 2.1.0 on tf1, 4.9.4 on tf2

# Versions each tfds release can build (a tfds release builds only its own versions). cifar10 3.0.2 adds an 'id'
# feature to 3.0.0 and keeps the same images in the same order (tfds 4.9, image_classification/cifar.py).
_TFDS_VERSIONS = {
  'tf1': {'cifar10': '3.0.0', 'celeb_a_hq/256': '2.0.0'},
  'tf2': {'cifar10': '3.0.2', 'celeb_a_hq/256': '2.0.0'},
}


def tfds_version(name):
  """'cifar10' -> '3.0.0' (tfds 2.1) or '3.0.2' (tfds 4.9); name is a tfds dataset name with its config."""
  return _TFDS_VERSIONS[STACK][name]


def tfds_url_size_sha256(name, url):
  """(size in bytes, sha256 hex digest) that tfds registered for `url`, a download of dataset `name`.

  tfds 2.1 keeps all checksums in one registry (url_checksums/*.txt); tfds 4.9 keeps them next to each builder
  (checksums.tsv, read by the builder class's url_infos).
  """
  if STACK == 'tf1':
    from tensorflow_datasets.core.download import checksums  # not re-exported by tfds 2.1's tfds.core
    size, sha256 = checksums.get_all_sizes_checksums()[url]
  else:
    info = tfds.builder_cls(name).url_infos[url]
    size, sha256 = int(info.size), info.checksum
  return int(size), sha256


def tfds_info_file(name, url, size, sha256):
  """The `.INFO` JSON (a dict) that tfds writes next to a downloaded file (core/download/resource.py,
  write_info_file). Without it tfds treats the cached file as absent and downloads it; tfds 4.9 also reads the
  size and checksum from it."""
  original_fname = os.path.basename(url)
  info = dict(urls=[url], dataset_names=[name], original_fname=original_fname)
  if STACK == 'tf2':
    info['url_info'] = dict(size=int(size), checksum=sha256, filename=original_fname)
  return info


def tfds_download_config(manual_root, name, **kwargs):
  """tfds.download.DownloadConfig(**kwargs) under which the builder of dataset `name` reads its manually downloaded
  files from <manual_root>/<name>/ on both stacks: tfds 2.1 appends the dataset name to manual_dir, tfds 4.9 uses
  manual_dir as it is."""
  manual_dir = manual_root if STACK == 'tf1' else os.path.join(manual_root, name)
  return tfds.download.DownloadConfig(manual_dir=manual_dir, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Devices

def ensure_cpu_devices(num_devices):
  """Make /cpu:0 ... /cpu:{n-1} exist in this process, for the multi-replica (MirroredStrategy) path on one CPU.

  TF 1.15 creates them per session (device_count of the session config), so nothing is needed here. TF 2.15's
  MirroredStrategy places ops on them eagerly when it is built, so they must exist as logical devices of the
  process: that works only before TensorFlow's runtime has started in it (a RuntimeError says so otherwise).
  """
  num_devices = int(num_devices)
  if STACK == 'tf2':
    cpu, = tf.config.list_physical_devices('CPU')
    have = tf.config.get_logical_device_configuration(cpu) or [None]
    if len(have) < num_devices:
      try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
      except RuntimeError as e:
        raise RuntimeError('{} CPU devices were asked for, but TensorFlow has already started in this process '
                           'with {}; ask before any TensorFlow op runs ({})'.format(num_devices, len(have), e)) from e


def cpu_devices_session_config(num_devices):
  """ensure_cpu_devices(num_devices), and a tf.ConfigProto (soft placement, no GPU) whose sessions have them."""
  ensure_cpu_devices(num_devices)
  return tf.ConfigProto(allow_soft_placement=True, device_count={'CPU': int(num_devices), 'GPU': 0})


def release_std_server():
  """Drops the in-process tf.distribute server that the distribute coordinator started for a multi-worker run
  (train_and_evaluate keeps it in a thread-local), so that it is deleted now. Left to the end of the interpreter,
  TF 1.15's Server.__del__ runs after its module globals are gone and prints `Exception ignored in: <function
  Server.__del__ ...> AttributeError: 'NoneType' object has no attribute 'UnimplementedError'` after a good run
  (TF 2.15's checks for that)."""
  local = getattr(distribute_coordinator, '_thread_local', None)
  if getattr(local, 'server', None) is not None:
    local.server = None  # the last reference: Server.__del__ runs here, with TensorFlow's modules still loaded
