"""Write a folder of images, or the LSUN release's LMDB, as StyleGAN2-format TFRecords for get_dataset('lsun').

Each image is centre-cropped to a square and resized with antialiasing (Lanczos) to `resolution`, as StyleGAN2's
dataset_tool.py create_lsun does (crop the central min(H, W) square, then resize), which for LSUN, whose short side
is already 256, is just the centre crop. Each record holds 'shape' int64 [3, R, R] and 'data' = the raw CHW uint8
pixels. The output is <out_dir>/<prefix>-rNN.tfrecords with 2^NN = resolution; only that one resolution is written.

LSUN church at 256x256, as in the paper, from the LSUN release's LMDB (values: WebP/JPEG bytes by image id; read in
key order, resumable: a rerun continues an interrupted conversion), or from a folder of images:
  python scripts/prepare_lsun.py --lmdb_dir=lsun/church_outdoor_train_lmdb --out_dir=lsun/church --resolution=256
  python scripts/prepare_lsun.py --image_dir=lsun/church_outdoor_train --out_dir=lsun/church --resolution=256
  -> lsun/church/church-r08.tfrecords
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from diffusion_tf.cli import runner as cli  # noqa: E402  (pure Python: TensorFlow is quieted before it loads)

cli.quiet_tensorflow()

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from diffusion_tf.errors import UsageError  # noqa: E402
from diffusion_tf.data.images import IMAGE_EXTENSIONS, center_crop_resize, find_images, read_rgb  # noqa: E402
from diffusion_tf.data import lsun_lmdb  # noqa: E402
from diffusion_tf.data.lsun import serialize_example  # noqa: E402


def prepare_lsun(image_dir=None, out_dir=None, resolution=256, max_images=None, shuffle=False, seed=123, prefix=None,
                 lmdb_dir=None, part_size=10000):
  """Write <out_dir>/<prefix>-rNN.tfrecords from the images under image_dir or in the LMDB lmdb_dir; returns its path.

  Args:
    image_dir: folder searched recursively for .jpg/.jpeg/.png/.webp files.
    out_dir: output folder (created if missing).
    resolution: output size R, a power of two >= 4 (2^NN in the file name).
    max_images: keep at most this many images (the first ones in path or key order, or a random subset if shuffle).
    shuffle: write the images in a random order drawn with `seed` (StyleGAN2's exporter used seed 123); image_dir
      only.
    prefix: file name prefix; default: the name of out_dir, as dataset_tool does.
    lmdb_dir: an LSUN LMDB directory (data.mdb), instead of image_dir: its entries in key order, written in
      resumable parts of part_size images (data/lsun_lmdb.py); entries that do not decode are skipped and listed.
  """
  if not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
    raise UsageError('resolution={!r}; expected a power of two >= 4 (e.g. 256)'.format(resolution))
  if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
    raise UsageError('max_images={!r}; expected a positive int or None'.format(max_images))
  if not isinstance(seed, int):
    raise UsageError('seed={!r}; expected an int'.format(seed))
  if (image_dir is None) == (lmdb_dir is None):
    raise UsageError('give --image_dir (a folder of images) or --lmdb_dir (an LSUN LMDB directory), not {}'.format(
      'both' if image_dir is not None else 'neither'))
  if out_dir is None:
    raise UsageError('give --out_dir, the folder of the TFRecords')
  prefix = prefix or os.path.basename(os.path.normpath(out_dir))
  out_path = os.path.join(out_dir, '{}-r{:02d}.tfrecords'.format(prefix, int(np.log2(resolution))))
  if lmdb_dir is not None:
    if shuffle:
      raise UsageError('--shuffle applies to --image_dir; an LMDB is read in its key order, as StyleGAN2 reads it')
    if not isinstance(part_size, int) or part_size < 1:
      raise UsageError('part_size={!r}; expected a positive int'.format(part_size))
    lsun_lmdb.convert_lmdb(lmdb_dir, out_path, resolution=resolution, max_images=max_images, part_size=part_size)
    return out_path

  if not os.path.isdir(image_dir):
    raise UsageError('image_dir={!r} is not a directory; expected a folder of images'.format(image_dir))
  paths = find_images(image_dir)
  if not paths:
    raise UsageError('image_dir={!r} holds no {} files; expected at least one image'.format(
      image_dir, '/'.join(IMAGE_EXTENSIONS)))
  if shuffle:
    paths = [paths[i] for i in np.random.RandomState(seed).permutation(len(paths))]
  paths = paths[:max_images]

  tmp_path = out_path + '.incomplete'
  tf.io.gfile.makedirs(out_dir)
  try:
    with tf.io.TFRecordWriter(tmp_path) as writer:
      for path in tqdm(paths, unit='img', desc='images -> tfrecords'):
        img = center_crop_resize(read_rgb(path), resolution)
        writer.write(serialize_example(img.transpose(2, 0, 1)))  # HWC -> CHW
    tf.io.gfile.rename(tmp_path, out_path, overwrite=True)
  finally:
    if tf.io.gfile.exists(tmp_path):
      tf.io.gfile.remove(tmp_path)
  print('wrote {} images of {}x{} to {}'.format(len(paths), resolution, resolution, out_path))
  return out_path


def main(argv=None):
  cli.run_cli(prepare_lsun, argv=argv, name='prepare_lsun.py')


if __name__ == '__main__':
  tf.logging.set_verbosity(tf.logging.INFO)
  main()
