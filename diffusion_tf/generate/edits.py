"""Edits of given images by a checkpoint (the `inpaint`, `img2img` and `invert` commands' job), with the machinery of
the `sample` dumps (dump.SampleDump): seeded batches written as they finish (an interrupted run resumes), one run at
a time per output directory, nothing overwritten. Outputs in out_dir:

  images/000000.png ...   the results, one PNG per input image
  results.npz             arr_0: the results (uint8 [N, H, W, 3]), inputs (uint8), and the command's extras (masks
                          uint8 [N, H, W, 1] in {0, 1}; latents float32 [N, H, W, 3] for `invert`)
  grid.png                one row per image (the first 64): input | mask | result (inpaint), input | result
                          (img2img), input | latent | reconstruction (invert)
  info.json               the settings, checkpoint and step (and for invert the reconstruction error)

The inputs (read_images, read_masks; read_image also serves `interpolate`): PNG/JPEG files, a directory of them, or a
uint8 .npz; masks as black-and-white PNGs, white = keep.
"""

import hashlib
import json
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image
from tqdm import tqdm

from .. import utils
from ..errors import UsageError
from ..runs import run_dir
from ..utils import save_npz_atomic, to_uint8, write_json_atomic
from .dump import SampleDump
from .seeded import build_seeded_samples, run_seeded

GRID_ROWS = 64


# ---------------------------------------------------------------------------------------------------------------
# The inputs: images and masks from files, each problem one UsageError naming the flag

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


def _open_image(path, image_size, flag, convert):
  """A PNG/JPEG file as a numpy array (PIL mode `convert`, or the file's own with None) of image_size x image_size."""
  if not os.path.isfile(str(path)):
    raise UsageError('--{}={!r} does not exist; expected a PNG or JPEG image of {}x{} pixels'.format(
      flag, path, image_size, image_size))
  try:
    with Image.open(str(path)) as img:
      mode = img.mode
      arr = np.asarray(img.convert(convert) if convert else img)
  except OSError as e:
    raise UsageError('--{}={!r} is not a readable image ({}); expected a PNG or JPEG of {}x{} pixels'.format(
      flag, path, e, image_size, image_size)) from None
  if arr.shape[:2] != (image_size, image_size):
    raise UsageError('--{}={!r} is {}x{}; expected an image of the model\'s size {}x{}'.format(
      flag, path, arr.shape[1], arr.shape[0], image_size, image_size))
  return arr, mode


def read_image(path, image_size, flag):
  """A PNG or JPEG file as uint8 [image_size, image_size, 3]; one clear error if it is missing or of another size."""
  return _open_image(path, image_size, flag, 'RGB')[0]


def _image_files(path, flag, extensions):
  """A file, or the files of a directory with one of `extensions` in sorted order."""
  if os.path.isdir(str(path)):
    files = sorted(os.path.join(str(path), f) for f in os.listdir(str(path)) if f.lower().endswith(extensions))
    if not files:
      raise UsageError('--{}={!r} holds no {} files'.format(flag, path, '/'.join(extensions)))
    return files
  return [str(path)]


def read_images(path, image_size, flag='images'):
  """The images to edit as uint8 [N, image_size, image_size, 3]: a PNG/JPEG file, a directory of them (sorted by
  name), or an .npz whose arr_0 is uint8 [N, H, W, 3] (as `sample` writes)."""
  if str(path).endswith('.npz') and os.path.isfile(str(path)):
    with np.load(str(path)) as f:
      arr = f['arr_0'] if 'arr_0' in f.files else None
    if arr is None or arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (image_size, image_size, 3):
      raise UsageError('--{}={!r}: expected arr_0 uint8 [N, {}, {}, 3] (the model\'s image size), got {}'.format(
        flag, path, image_size, image_size, 'no arr_0' if arr is None else '{} {}'.format(arr.dtype,
                                                                                           list(arr.shape))))
    return arr
  return np.stack([read_image(f, image_size, flag) for f in _image_files(path, flag, IMAGE_EXTENSIONS)])


def read_mask(path, image_size, flag='mask'):
  """A mask PNG as float32 [image_size, image_size, 1]: white (255) = keep the image there, black (0) = generate.
  Grey (mode L or 1) or RGB with equal channels; any other value or mode is one clear error."""
  if not str(path).lower().endswith('.png'):
    raise UsageError('--{}={!r} is not a PNG; expected a black-and-white PNG mask (white = keep)'.format(flag, path))
  arr, mode = _open_image(path, image_size, flag, None)
  if mode == '1':
    arr = arr.astype(np.uint8) * 255
  elif mode == 'RGB' and np.all(arr == arr[..., :1]):
    arr = arr[..., 0]
  elif mode != 'L':
    raise UsageError('--{}={!r} has mode {}; expected a grey (L or 1) PNG, or RGB with equal channels (white = '
                     'keep, black = generate)'.format(flag, path, mode))
  values = np.unique(arr)
  if not set(values.tolist()) <= {0, 255}:
    raise UsageError('--{}={!r} has grey levels {}; expected black (0: generate) and white (255: keep) only'.format(
      flag, path, [v for v in values.tolist() if v not in (0, 255)][:5]))
  return (arr == 255).astype(np.float32)[..., None]


def read_masks(path, num_images, image_size, flag='mask'):
  """float32 [num_images, H, W, 1] in {0, 1}: one mask PNG for every image, or a directory of PNGs, one per image
  in sorted order (read_mask)."""
  files = _image_files(path, flag, ('.png',))
  if len(files) not in (1, num_images):
    raise UsageError('--{}={!r} holds {} masks for {} images; expected one mask, or one per image'.format(
      flag, path, len(files), num_images))
  masks = np.stack([read_mask(f, image_size, flag) for f in files])
  return np.repeat(masks, num_images, axis=0) if len(files) == 1 else masks


def inputs_sha256(*arrays):
  """The sha256 of the input arrays (shape and bytes): a resumed run must edit the very same images."""
  h = hashlib.sha256()
  for a in arrays:
    if a is not None:
      h.update(repr((a.shape, str(a.dtype))).encode())
      h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


class EditDump(SampleDump):
  """One run of an editing command over `images` (uint8 [N, H, W, 3]) and `masks` (float32 [N, H, W, 1] in {0, 1},
  or None), into out_dir (module docstring).

  edit_fn(model, y, noise_fn, images, masks or absent) -> dict of 'samples' (the result, in [-1, 1]) and, for
  `invert`, 'latents'; `options` are the command's settings (recorded in info.json; 'num_inference_steps' is
  printed). Batches of batch_size (the last one padded with copies of the last image) draw their noise as `sample`
  does: batch b's k-th draw is stateless_normal(seed=(seed, 64 b * 2^20 + k)).
  """

  def __init__(self, source, load_model, out_dir, *, command, images, masks, edit_fn, options, batch_size, seed,
               ema, dist, overrides, printer=print):
    super().__init__(source, load_model, out_dir, num_samples=len(images), batch_size=batch_size, seed=seed, ema=ema,
                     sampler=command, num_inference_steps=options.get('num_inference_steps'), eta=0.,
                     use_clipped_model_output=False, skip_prk_steps=False, skip_type='uniform', solver_order=None,
                     output_type='png', progressive=False, shard=None, dist=dist, overrides=overrides, printer=printer)
    self.command, self.images, self.masks, self.edit_fn = command, images, masks, edit_fn
    for key in self.sampler_options:
      del self.settings[key]
    self.sampler_options = dict(sampler=command, num_inference_steps=options.get('num_inference_steps'),
                                skip_type=options.get('skip_type', 'uniform'), solver_order=options.get('solver_order'))
    self.settings.update(command=command, inputs_sha256=inputs_sha256(images, masks), **options)

  @property
  def final_files(self):
    return ['grid.png', 'results.npz', 'images', 'info.json']

  def _feed_batch(self, b, placeholders):
    """The inputs of batch b, normalized to [-1, 1], padded to batch_size with the last image."""
    index = np.minimum(np.arange(b * self.batch_size, (b + 1) * self.batch_size), len(self.images) - 1)
    feed = {placeholders[0]: utils.normalize_data(self.images[index].astype(np.float32))}
    if self.masks is not None:
      feed[placeholders[1]] = self.masks[index]
    return feed

  def _draw_batches(self):
    todo = self._batches_to_draw()
    if not todo:
      return
    shape = [self.batch_size] + self.source.ds_info.image_shape
    with tf.Graph().as_default():
      model = self.load_model(self.source.kwargs, self.source.ds_info)
      placeholders = [tf.placeholder(tf.float32, shape, name='images')]
      if self.masks is not None:
        placeholders.append(tf.placeholder(tf.float32, shape[:-1] + [1], name='masks'))
      outputs, noises = build_seeded_samples(
        self.dist, self.batch_size, self.source.ds_info.image_shape,
        lambda dummy, y, noise_fn, *inputs: self.edit_fn(model, y, noise_fn, *inputs), inputs=placeholders)
      with run_dir.open_restored_session(self.dist, self.source.checkpoint, self.ema) as sess:
        for b in tqdm(todo, desc='batches', unit='batch', file=sys.stdout, dynamic_ncols=True):
          out = run_seeded(sess, outputs, noises, self.seed, b, feed=self._feed_batch(b, placeholders))
          extras = {k: v.astype(np.float32) for k, v in out.items() if k != 'samples'}
          save_npz_atomic(self._batch_path(b), arr_0=to_uint8(out['samples']), **extras)

  def _assemble(self):
    parts = []
    for b in self.batches:
      with tf.io.gfile.GFile(self._batch_path(b), 'rb') as f:
        with np.load(f) as npz:
          parts.append({k: npz[k] for k in npz.files})
    N = len(self.images)
    arrays = {k: np.concatenate([p[k] for p in parts])[:N] for k in parts[0]}
    results = arrays.pop('arr_0')
    assert results.shape == self.images.shape and results.dtype == np.uint8, results.shape
    extras = dict(inputs=self.images, **arrays)
    if self.masks is not None:
      extras['masks'] = self.masks.astype(np.uint8)
    info = dict(self.settings)
    if 'latents' in arrays:  # invert: how closely decoding the latents gives the images back (pixel levels 0..255)
      diff = np.abs(results.astype(np.int64) - self.images.astype(np.int64))
      info.update(reconstruction_max_abs_error=int(diff.max()),
                  reconstruction_mean_abs_error=float(diff.mean()))
    self._write_pngs(results)
    save_npz_atomic(os.path.join(self.out_dir, 'results.npz'), arr_0=results, **extras)
    tiles, num_col = self._grid_rows(results, arrays)
    utils.save_tiled_imgs(os.path.join(self.out_dir, 'grid.png'), tiles, num_col=num_col)
    write_json_atomic(os.path.join(self.out_dir, 'info.json'), json.loads(json.dumps(info)))
    tf.io.gfile.rmtree(self._shard_dir)
    self._print('wrote {} results: {}, {} and {}'.format(
      N, os.path.join(self.out_dir, 'grid.png'), os.path.join(self.out_dir, 'results.npz'),
      os.path.join(self.out_dir, 'images/')))

  def _grid_rows(self, results, arrays):
    """([rows * columns, H, W, 3], columns) for save_tiled_imgs: the first GRID_ROWS inputs, their mask or latent,
    and the results."""
    n = min(len(results), GRID_ROWS)
    columns = [self.images[:n]]
    if self.masks is not None:
      columns.append(np.repeat(self.masks[:n] * 255, 3, axis=-1).astype(np.uint8))
    if 'latents' in arrays:  # a standard normal latent shown over +-3 sigma
      columns.append(to_uint8(np.clip(arrays['latents'][:n] / 3., -1., 1.)))
    columns.append(results[:n])
    grid = np.stack(columns, axis=1)  # [n, columns, H, W, 3]
    return grid.reshape(-1, *grid.shape[2:]), len(columns)
