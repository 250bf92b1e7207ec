"""Image files as square RGB arrays, one implementation for every reader (data/folder.py, scripts/prepare_lsun.py):
finding the files of a folder, decoding them to RGB, and StyleGAN2's centre crop and resize."""

import io
import os

import numpy as np
from PIL import Image

from ..errors import UsageError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp')
# PIL modes of single-channel images (1-bit, 8-bit, 16/32-bit integer, float): converted to grey RGB.
GREY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'I;16B', 'I;16L', 'F')
# Decode errors PIL raises for files that are not images, are truncated, or are too large to be safe.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def find_images(image_dir):
  """All images under image_dir (recursive; .jpg/.jpeg/.png/.webp, any case), sorted by path for a reproducible
  order."""
  paths = []
  for root, _, names in os.walk(image_dir):
    paths.extend(os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
  return sorted(paths)


def decode_rgb(source):
  """(uint8 [H, W, 3], the image's own PIL mode) of a path or of encoded bytes (PNG/JPEG/WebP). Grey, palette and
  alpha images are converted to RGB (alpha is dropped, as StyleGAN2's dataset_tool does). Raises PIL's errors
  (DECODE_ERRORS) for data that is not a readable image."""
  with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
    mode = im.mode
    rgb = np.asarray(im.convert('RGB'))
  assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
  return rgb, mode


def read_rgb(path):
  """uint8 [H, W, 3] of an image file; greyscale, palette and alpha images are converted to RGB."""
  try:
    return decode_rgb(path)[0]
  except DECODE_ERRORS as e:
    raise UsageError('cannot read image {}: {}; expected a readable jpg/png/webp file'.format(path, e)) from e


def center_crop_resize(img, resolution):
  """uint8 [H, W, 3] -> uint8 [R, R, 3]: the central min(H, W) square (offsets rounded down as in StyleGAN2's
  dataset_tool), resized with Lanczos antialiasing."""
  H, W, _ = img.shape
  crop = min(H, W)
  top, left = (H - crop) // 2, (W - crop) // 2
  img = img[top:top + crop, left:left + crop]
  if crop != resolution:
    img = np.asarray(Image.fromarray(img, 'RGB').resize((resolution, resolution), Image.LANCZOS))
  assert img.shape == (resolution, resolution, 3)
  return img
