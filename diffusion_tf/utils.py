"""Likelihood, optimisation, EMA and image helpers shared by the models and the scripts."""

import contextlib
import io
import json
import os
import random

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

from .errors import WriteError
from .unet_layout import EMA_NAME, EMA_SUFFIX

from .gcp import get_gcp_region  # noqa: F401 (the original's name in this module)


# ---------------------------------------------------------------------------------------------------------------
# Data scaling: uint8 pixels {0..255} <-> the model's [-1, 1] (DDPM sec. 3.3)

def normalize_data(x):
  """{0, ..., 255} -> [-1, 1]: x / 127.5 - 1."""
  return x / 127.5 - 1.


def unnormalize_data(x):
  """[-1, 1] -> [0, 255]: (x + 1) * 127.5."""
  return (x + 1.) * 127.5


# ---------------------------------------------------------------------------------------------------------------
# Discretized Gaussian decoder (DDPM eq. 13)

def approx_standard_normal_cdf(x):
  """Phi(x) ~ 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the approximation the original uses."""
  return 0.5 * (1.0 + tf.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * tf.pow(x, 3))))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
  """log p(x | means, scales) for data that are integers {0..255} rescaled to [-1, 1] (DDPM eq. 13).

  Each pixel's probability is the Gaussian mass of its bin [x - 1/255, x + 1/255]; the edge bins extend to -inf
  (x = -1) and +inf (x = 1), so the 256 probabilities sum to one.
  """
  assert x.shape.as_list() == means.shape.as_list() == log_scales.shape.as_list()
  centered_x = x - means
  inv_stdv = tf.exp(-log_scales)
  cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + 1. / 255.))
  cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - 1. / 255.))
  log_cdf_plus = tf.log(tf.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = tf.log(tf.maximum(1. - cdf_min, 1e-12))
  cdf_delta = cdf_plus - cdf_min
  log_probs = tf.where(
    x < -0.999, log_cdf_plus,
    tf.where(x > 0.999, log_one_minus_cdf_min, tf.log(tf.maximum(cdf_delta, 1e-12))))
  assert log_probs.shape.as_list() == x.shape.as_list()
  return log_probs


# ---------------------------------------------------------------------------------------------------------------
# Optimisation

def rms(variables):
  """Root mean square of all entries of `variables` (the 'pnorm' summary)."""
  return tf.sqrt(
    sum([tf.reduce_sum(tf.square(v)) for v in variables]) /
    sum(int(np.prod(v.shape.as_list())) for v in variables))


def get_warmed_up_lr(max_lr, warmup, global_step):
  """Linear learning-rate warm-up: max_lr * min(step / warmup, 1)."""
  if warmup == 0:
    return max_lr
  return max_lr * tf.minimum(tf.cast(global_step, tf.float32) / float(warmup), 1.0)


def make_optimizer(*, loss, trainable_variables, global_step, tpu: bool, optimizer: str, lr, grad_clip: float,
                   rmsprop_decay=.95, rmsprop_momentum=.9, epsilon=1e-8, loss_scale=None):
  """Adam or RMSProp with gradients clipped to global norm `grad_clip`. Returns (train_op, gradient global norm).
  loss_scale: a train.loss_scale.DynamicLossScale (float16), which wraps the optimizer, or None."""
  opt = build_optimizer(tpu=tpu, optimizer=optimizer, lr=lr, rmsprop_decay=rmsprop_decay,
                        rmsprop_momentum=rmsprop_momentum, epsilon=epsilon, loss_scale=loss_scale)
  grads_and_vars = opt.compute_gradients(loss, var_list=trainable_variables)
  return apply_clipped_gradients(opt, grads_and_vars, grad_clip=grad_clip, global_step=global_step)


def build_optimizer(*, tpu: bool, optimizer: str, lr, rmsprop_decay=.95, rmsprop_momentum=.9, epsilon=1e-8,
                    loss_scale=None):
  """make_optimizer's tf.train optimizer (a CrossShardOptimizer around it on a TPU; wrapped by loss_scale, a
  train.loss_scale.DynamicLossScale, for float16)."""
  if optimizer == 'adam':
    opt = tf.train.AdamOptimizer(learning_rate=lr, epsilon=epsilon)
  elif optimizer == 'rmsprop':
    opt = tf.train.RMSPropOptimizer(learning_rate=lr, decay=rmsprop_decay, momentum=rmsprop_momentum,
                                    epsilon=epsilon)
  else:
    raise NotImplementedError(optimizer)
  if tpu:
    opt = tf.tpu.CrossShardOptimizer(opt)
  if loss_scale is not None:
    opt = loss_scale.wrap(opt)
  return opt


def apply_clipped_gradients(opt, grads_and_vars, *, grad_clip: float, global_step):
  """make_optimizer's update: the gradients clipped to global norm grad_clip, applied by opt (incrementing
  global_step). Returns (train_op, the global norm before clipping)."""
  clipped_grads, gnorm = tf.clip_by_global_norm([g for (g, _) in grads_and_vars], grad_clip)
  grads_and_vars = [(g, v) for g, (_, v) in zip(clipped_grads, grads_and_vars)]
  train_op = opt.apply_gradients(grads_and_vars, global_step=global_step)
  return train_op, gnorm


class WeightEMA:
  """Exponential moving averages of variables: shadow <- shadow - (1 - decay) (shadow - variable).

  The same shadow variables (`<variable>/ExponentialMovingAverage`, initialised to the variable's initial value) and
  the same update as tf.train.ExponentialMovingAverage(decay).apply(var_list), so the released checkpoints restore
  into it; built without the per-variable tf.cond that `apply` adds, which made graph construction 3-4x slower.
  """

  def __init__(self, decay, var_list):
    self._averages = {}
    updates = []
    for var in var_list:
      with tf.variable_scope(var.op.name, auxiliary_name_scope=False), tf.colocate_with(var):
        avg = tf.get_variable(EMA_NAME, initializer=var.initial_value, trainable=False)
      assert avg.op.name == var.op.name + EMA_SUFFIX, avg.op.name
      self._averages[var.op.name] = avg
      with tf.colocate_with(avg):
        updates.append(avg.assign_sub((1. - decay) * (avg - var)))
    self.update_op = tf.group(*updates, name='ema_update')

  def average(self, var):
    """The shadow of `var`, or None if it has none."""
    return self._averages.get(var.op.name)

  def average_name(self, var):
    return var.op.name + EMA_SUFFIX

  def variables_to_restore(self):
    """{checkpoint name: variable} mapping each shadow name to itself (as the tf.train class does for shadows)."""
    return {avg.op.name: avg for avg in self._averages.values()}


def make_ema(*, global_step, ema_decay, trainable_variables):
  """EMA of the weights; the decay is ~0 at step 0 so the average starts at the weights. Returns (ema, update op).

  Shadow variables are named `<variable>/ExponentialMovingAverage`, as in the released checkpoints.
  """
  decay = tf.where(tf.less(global_step, 1), 1e-10, ema_decay)
  ema = WeightEMA(decay, trainable_variables)
  return ema, ema.update_op


@contextlib.contextmanager
def ema_scope(orig_model_ema):
  """Within this scope, `tf.get_variable` returns the EMA shadow of each (existing) variable."""

  def _ema_getter(getter, name, *args, **kwargs):
    v = getter(name, *args, **kwargs)
    avg = orig_model_ema.average(v)
    if avg is None:
      raise RuntimeError('invalid EMA variable name {} -> {}'.format(name, avg))
    return avg

  with tf.variable_scope(tf.get_variable_scope(), custom_getter=_ema_getter, reuse=True):
    with tf.name_scope('ema_scope'):
      yield


# ---------------------------------------------------------------------------------------------------------------
# Seeding

def seed_all(seed):
  """Seed Python, numpy and the TF graph-level seed (call inside the graph being built)."""
  random.seed(seed)
  np.random.seed(seed)
  tf.set_random_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# Images

def tile_imgs(imgs, *, pad_pixels=1, pad_val=255, num_col=0):
  """[N, H, W, C] uint8 -> one grid image filled row by row, laid out as the original's grids.

  num_col columns (default: a ceil(sqrt(N)) x ceil(sqrt(N)) square); each image is framed by pad_pixels of pad_val,
  so neighbours are 2 * pad_pixels apart and the outer frame is cropped; empty cells are pad_val. Returns
  [rows (H + 2p) - 2p, cols (W + 2p) - 2p, C], or without the channel axis for C = 1.
  """
  assert pad_pixels >= 0 and 0 <= pad_val <= 255
  imgs = np.asarray(imgs)
  assert imgs.dtype == np.uint8, 'expected uint8 images, got {}'.format(imgs.dtype)
  if imgs.ndim == 3:
    imgs = imgs[..., None]
  n, h, w, c = imgs.shape
  assert c in (1, 3), 'expected 1 or 3 channels, got {}'.format(c)
  if num_col <= 0:
    num_row = num_col = int(np.ceil(np.sqrt(n)))
  else:
    num_row = int(np.ceil(n / num_col))
  p = pad_pixels
  cells = np.full((num_row * num_col, h + 2 * p, w + 2 * p, c), pad_val, dtype=np.uint8)
  cells[:n, p:p + h, p:p + w] = imgs
  grid = cells.reshape(num_row, num_col, h + 2 * p, w + 2 * p, c).transpose(0, 2, 1, 3, 4)
  grid = grid.reshape(num_row * (h + 2 * p), num_col * (w + 2 * p), c)
  grid = grid[p:grid.shape[0] - p, p:grid.shape[1] - p]
  assert grid.shape == (num_row * (h + 2 * p) - 2 * p, num_col * (w + 2 * p) - 2 * p, c)
  return grid[..., 0] if c == 1 else grid


def save_tiled_imgs(filename, imgs, pad_pixels=1, pad_val=255, num_col=0):
  """Tile `imgs` and write them as one PNG, atomically (temp name, then rename). Works with gs:// paths."""
  write_png(filename, tile_imgs(imgs, pad_pixels=pad_pixels, pad_val=pad_val, num_col=num_col))


def encode_png(img):
  buf = io.BytesIO()
  Image.fromarray(np.asarray(img)).save(buf, format='png')
  return buf.getvalue()


_WRITE_FAILURES = [('no space left', 'no space left on device'), ('disk quota', 'disk quota exceeded'),
                   ('read-only file system', 'read-only file system'), ('permission denied', 'permission denied')]


def write_failure_cause(e):
  """'no space left on device', 'permission denied', ... when exception `e` (a tf.errors.OpError or OSError) is a
  failed write for lack of space or rights, else None."""
  text = (getattr(e, 'message', None) or str(e)).lower()
  for needle, cause in _WRITE_FAILURES:
    if needle in text:
      return cause
  return None


def atomic_write_bytes(filename, data: bytes):
  """Write `data` to `filename` through a temporary name in the same directory, then rename. On failure the
  temporary file is removed, `filename` keeps its old content, and a WriteError names the file and the cause."""
  tmp = '{}.tmp{}'.format(filename, os.getpid())
  try:
    with tf.io.gfile.GFile(tmp, 'wb') as f:
      f.write(data)
    tf.io.gfile.rename(tmp, filename, overwrite=True)
  except (tf.errors.OpError, OSError) as e:
    try:
      tf.io.gfile.remove(tmp)
    except (tf.errors.OpError, OSError):
      pass
    lines = (getattr(e, 'message', None) or str(e)).strip().splitlines()
    raise WriteError('cannot write {}: {} ({}); expected a writable directory with free space'.format(
      filename, write_failure_cause(e) or (lines[0] if lines else ''), type(e).__name__)) from None


def write_png(filename, img):
  atomic_write_bytes(filename, encode_png(img))


def to_uint8(x):
  """Samples in [-1, 1] -> uint8 pixels: round((x + 1) * 127.5), clipped to {0..255}."""
  return np.clip(np.round((np.asarray(x, np.float64) + 1.) * 127.5), 0, 255).astype(np.uint8)


def save_npz_atomic(path, **arrays):
  """np.savez to a temporary name in the same directory, then rename (never a half-written file)."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  atomic_write_bytes(path, buf.getvalue())


def write_json_atomic(path, obj):
  """obj as indented JSON with sorted keys, written atomically."""
  atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + '\n').encode('utf-8'))


# ---------------------------------------------------------------------------------------------------------------
# TensorBoard

class SummaryWriter:
  """Writes scalars and images to a TensorBoard event file without building graph ops."""

  def __init__(self, dir, write_graph=True):
    tf.io.gfile.makedirs(dir)
    self.writer = tf.summary.FileWriter(dir, graph=tf.get_default_graph() if write_graph else None)

  def flush(self):
    self.writer.flush()

  def close(self):
    self.writer.close()

  def _write_event(self, summary_value, step):
    self.writer.add_summary(tf.Summary(value=[summary_value]), global_step=step)

  def scalar(self, tag, value, step):
    self._write_event(tf.Summary.Value(tag=tag, simple_value=float(value)), step)

  def image(self, tag, image, step):
    image = np.asarray(image)
    if image.ndim == 2:
      image = image[:, :, None]
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    im_summ = tf.Summary.Image(encoded_image_string=encode_png(image), colorspace=3,
                               height=image.shape[0], width=image.shape[1])
    self._write_event(tf.Summary.Value(tag=tag, image=im_summ), step)

  def images(self, tag, images, step):
    self.image(tag, tile_imgs(images), step=step)
