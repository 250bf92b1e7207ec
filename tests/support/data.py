"""Tiny offline stand-ins for the real datasets, shared by the tests.

make_tiny_cifar10(data_dir, ...): a cifar-10-binary.tar.gz look-alike placed in tfds' download cache, so that
  get_dataset('cifar10', tfds_data_dir=data_dir) runs the real tfds builder without network.
make_tiny_lsun(path, n, resolution): a StyleGAN2-format TFRecord file, for get_dataset('lsun', tfr_file=path).
block_network(monkeypatch): make any socket connection or DNS lookup fail (and record the attempt).
make_digit_folder(root, ...): the embedded digits as PNG files in nested folders, for get_dataset('folder').
"""

import io
import json
import os
import socket
import tarfile

import numpy as np

CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz'
# tfds 2.1.0 caches a download as <data_dir>/downloads/<sanitized url><urlsafe-base64 sha256 without '='>.<ext>
# (core/download/resource.py, get_dl_fname), using the sha256 registered in url_checksums/cifar10.txt.
CIFAR10_DL_FNAME = 'cs.toronto.edu_kriz_cifar-10-binaryxKOMUKG8XzocVTfyFVq51o-fJese2Nnd2j2ymlm8od0.tar.gz'
CIFAR10_LABEL_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


def _cifar_batch_bytes(images, labels):
  """CIFAR-10 binary format: per image 1 label byte then 3072 bytes, the 32x32 R, G, B planes (CHW)."""
  assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8 and len(images) == len(labels)
  chw = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
  return np.concatenate([np.asarray(labels, np.uint8)[:, None], chw], axis=1).tobytes()


def make_tiny_cifar10(data_dir, n_train=10, n_test=4, seed=0):
  """Put a tiny cifar-10-binary.tar.gz look-alike (and its tfds .INFO file) into <data_dir>/downloads.

  The n_train images are spread over data_batch_1..5.bin. Returns dict(train=uint8 [n_train, 32, 32, 3],
  test=uint8 [n_test, 32, 32, 3], archive=path).
  """
  rng = np.random.RandomState(seed)
  train = rng.randint(0, 256, size=[n_train, 32, 32, 3]).astype(np.uint8)
  test = rng.randint(0, 256, size=[n_test, 32, 32, 3]).astype(np.uint8)
  downloads = os.path.join(data_dir, 'downloads')
  os.makedirs(downloads, exist_ok=True)
  archive = os.path.join(downloads, CIFAR10_DL_FNAME)
  members = {'batches.meta.txt': ('\n'.join(CIFAR10_LABEL_NAMES) + '\n\n').encode()}
  for b, idx in enumerate(np.array_split(np.arange(n_train), 5)):
    members['data_batch_{}.bin'.format(b + 1)] = _cifar_batch_bytes(train[idx], idx % 10)
  members['test_batch.bin'] = _cifar_batch_bytes(test, np.arange(n_test) % 10)
  with tarfile.open(archive, 'w:gz') as tar:
    for name, data in sorted(members.items()):
      info = tarfile.TarInfo('cifar-10-batches-bin/' + name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  # The INFO file tfds writes after a download (core/download/resource.py, write_info_file): without it tfds
  # considers the archive absent and downloads it.
  with open(archive + '.INFO', 'w') as f:
    json.dump({'dataset_names': ['cifar10'], 'original_fname': 'cifar-10-binary.tar.gz', 'urls': [CIFAR10_URL]}, f)
  return dict(train=train, test=test, archive=archive)


def make_tiny_lsun(path, n, resolution, seed=0):
  """Write n random [resolution, resolution, 3] uint8 images to `path` in StyleGAN2's TFRecord format.

  Returns the images, uint8 [n, R, R, 3] (HWC; stored as CHW).
  """
  import tensorflow.compat.v1 as tf
  images = np.random.RandomState(seed).randint(0, 256, size=[n, resolution, resolution, 3]).astype(np.uint8)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for img in images:
      chw = img.transpose(2, 0, 1)
      writer.write(tf.train.Example(features=tf.train.Features(feature={
        'shape': tf.train.Feature(int64_list=tf.train.Int64List(value=list(chw.shape))),
        'data': tf.train.Feature(bytes_list=tf.train.BytesList(value=[chw.tobytes()])),
      })).SerializeToString())
  return images


def block_network(monkeypatch):
  """Make socket connections and DNS lookups raise; returns the list of attempted addresses."""
  attempts = []

  def _connect(self, address, *args, **kwargs):
    attempts.append(address)
    raise OSError('network access blocked in tests: connect to {}'.format(address))

  def _getaddrinfo(host, *args, **kwargs):
    attempts.append(host)
    raise socket.gaierror('network access blocked in tests: lookup of {}'.format(host))

  monkeypatch.setattr(socket.socket, 'connect', _connect)
  monkeypatch.setattr(socket.socket, 'connect_ex', _connect)
  monkeypatch.setattr(socket, 'getaddrinfo', _getaddrinfo)
  return attempts


def make_digit_folder(root, n=40, resolution=8, grey=True, rgba=True, corrupt=False):
  """A folder of the embedded digits (data/digits.py) as image files for get_dataset('folder', data_dir=root):
  n RGB PNGs spread over nested folders (a/, b/, b/c/, some with upper-case .PNG), plus (grey) one 8-bit grey PNG,
  (rgba) one RGBA PNG whose alpha is not 255, (corrupt) a text file named bad.png and a PNG cut in half.

  Returns {path: uint8 [R, R, 3], the RGB image that file holds} of the readable files.
  """
  from PIL import Image
  from diffusion_tf.data.digits import load_digits_images
  images = load_digits_images(resolution)
  expected = {}
  for i in range(n):
    folder = os.path.join(root, ['a', 'b', os.path.join('b', 'c')][i % 3])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, '{:03d}.{}'.format(i, 'PNG' if i % 7 == 3 else 'png'))
    Image.fromarray(images[i]).save(path, format='PNG')
    expected[path] = images[i]
  if grey:
    path = os.path.join(root, 'a', 'grey.png')
    Image.fromarray(images[n][..., 0], 'L').save(path)
    expected[path] = images[n]
  if rgba:
    path = os.path.join(root, 'b', 'c', 'rgba.png')
    rgba_image = np.concatenate([255 - images[n + 1], np.full_like(images[n + 1][..., :1], 100)], axis=-1)
    Image.fromarray(rgba_image, 'RGBA').save(path)
    expected[path] = 255 - images[n + 1]
  if corrupt:
    with open(os.path.join(root, 'a', 'bad.png'), 'w') as f:
      f.write('not an image')
    buf = io.BytesIO()
    Image.fromarray(images[n + 2]).save(buf, format='PNG')
    with open(os.path.join(root, 'b', 'cut.png'), 'wb') as f:
      f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
  return expected
