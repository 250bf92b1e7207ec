"""Write a folder of images as StyleGAN2-format TFRecords for `get_dataset('lsun', tfr_file=...)`.

Each image is centre-cropped to a square and resized with antialiasing (Lanczos) to `resolution`, as StyleGAN2's
dataset_tool.py create_lsun does (crop the central min(H, W) square, then resize), which for LSUN, whose short side
is already 256, is just the centre crop. Each record holds 'shape' int64 [3, R, R] and 'data' = the raw CHW uint8
pixels. The output is <out_dir>/<prefix>-rNN.tfrecords with 2^NN = resolution; only that one resolution is written.

LSUN church at 256x256, as in the paper (the LSUN release ships LMDB; export its images to a folder first):
  python scripts/prepare_lsun.py --image_dir=lsun/church_outdoor_train --out_dir=lsun/church --resolution=256
  -> lsun/church/church-r08.tfrecords
"""

import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from diffusion_tf.errors import UsageError  # noqa: E402
from diffusion_tf.cli import runner as cli  # noqa: E402

from diffusion_tf.data.images import IMAGE_EXTENSIONS, center_crop_resize, find_images, read_rgb  # noqa: E402


def serialize_example(img_chw):
  """StyleGAN2's record format: shape = (C, H, W), data = the raw uint8 bytes in CHW order."""
  assert img_chw.dtype == np.uint8 and img_chw.ndim == 3
  return tf.train.Example(features=tf.train.Features(feature={
    'shape': tf.train.Feature(int64_list=tf.train.Int64List(value=list(img_chw.shape))),
    'data': tf.train.Feature(bytes_list=tf.train.BytesList(value=[img_chw.tobytes()])),
  })).SerializeToString()


def prepare_lsun(image_dir, out_dir, resolution=256, max_images=None, shuffle=False, seed=123, prefix=None):
  """Write <out_dir>/<prefix>-rNN.tfrecords from the images under image_dir; returns its path.

  Args:
    image_dir: folder searched recursively for .jpg/.jpeg/.png/.webp files.
    out_dir: output folder (created if missing).
    resolution: output size R, a power of two >= 4 (2^NN in the file name).
    max_images: keep at most this many images (the first ones in path order, or a random subset if shuffle).
    shuffle: write the images in a random order drawn with `seed` (StyleGAN2's exporter used seed 123).
    prefix: file name prefix; default: the name of out_dir, as dataset_tool does.
  """
  if not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
    raise UsageError('resolution={!r}; expected a power of two >= 4 (e.g. 256)'.format(resolution))
  if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
    raise UsageError('max_images={!r}; expected a positive int or None'.format(max_images))
  if not isinstance(seed, int):
    raise UsageError('seed={!r}; expected an int'.format(seed))
  if not os.path.isdir(image_dir):
    raise UsageError('image_dir={!r} is not a directory; expected a folder of images'.format(image_dir))
  paths = find_images(image_dir)
  if not paths:
    raise UsageError('image_dir={!r} holds no {} files; expected at least one image'.format(
      image_dir, '/'.join(IMAGE_EXTENSIONS)))
  if shuffle:
    paths = [paths[i] for i in np.random.RandomState(seed).permutation(len(paths))]
  paths = paths[:max_images]

  prefix = prefix or os.path.basename(os.path.normpath(out_dir))
  out_path = os.path.join(out_dir, '{}-r{:02d}.tfrecords'.format(prefix, int(np.log2(resolution))))
  tmp_path = out_path + '.incomplete'
  tf.io.gfile.makedirs(out_dir)
  try:
    with tf.io.TFRecordWriter(tmp_path) as writer:
      for i, path in enumerate(paths):
        img = center_crop_resize(read_rgb(path), resolution)
        writer.write(serialize_example(img.transpose(2, 0, 1)))  # HWC -> CHW
        if (i + 1) % 1000 == 0:
          tf.logging.info('%d / %d images', i + 1, len(paths))
    tf.io.gfile.rename(tmp_path, out_path, overwrite=True)
  finally:
    if tf.io.gfile.exists(tmp_path):
      tf.io.gfile.remove(tmp_path)
  tf.logging.info('Wrote %d images of %dx%d to %s', len(paths), resolution, resolution, out_path)
  return out_path


def main():
  cli.run_cli(prepare_lsun, name='prepare_lsun.py')


if __name__ == '__main__':
  tf.logging.set_verbosity(tf.logging.INFO)
  main()
