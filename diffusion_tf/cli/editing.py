"""The paper's image-editing uses of a trained model as commands (DDPM sec. 4.3 and fig. 8, CelebA-HQ): latent
interpolation between two images, and denoising trajectories (the chain x_T -> x_0), written as PNG grids.

They run a script Model's `interpolate_fn(dummy_noise, y)` and `samples_fn_denoising_trajectory(dummy_noise, y,
repeat_noise_steps)` (the original run_celebahq.py names and signatures) on one checkpoint, with the `sample`
command's seeded noise (seeded.SeededNoise, batch 0): draw k = 1, 2, ... is stateless_normal(seed=(seed, k)),
in the order the sampler draws.

  make_interpolate_command(script)  -> interpolate(model_dir|checkpoint, image1, image2, t, num_lambdas, ...)
  make_trajectory_command(script)   -> denoising_trajectory(model_dir|checkpoint, num_samples, num_frames, ...)
"""

import os

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

from .. import checks, utils
from ..experiments import model_source
from ..errors import UsageError
from ..runs import devices, run_dir
from ..runs.paths import check_writable_dir, refuse_overwrite
from ..generate.seeded import SeededNoise, run_seeded
from . import commands, runner


def lambdas(num_lambdas):
  """The mixing weights of an interpolation: num_lambdas values evenly spaced in [0, 1], both ends included."""
  return np.linspace(0., 1., num_lambdas)


def trajectory_frames(num_steps, num_frames):
  """Indices of num_frames frames of a chain of num_steps + 1 images (x_T first), evenly spread, both ends kept."""
  return np.unique(np.round(np.linspace(0, num_steps, num_frames)).astype(np.int64))


def read_image(path, image_size, flag):
  """A PNG file as uint8 [image_size, image_size, 3]; one clear error if it is missing or of another size."""
  if not os.path.isfile(str(path)):
    raise UsageError('--{}={!r} does not exist; expected a PNG image of {}x{} pixels'.format(
      flag, path, image_size, image_size))
  try:
    with Image.open(str(path)) as img:
      arr = np.asarray(img.convert('RGB'))
  except OSError as e:
    raise UsageError('--{}={!r} is not a readable image ({}); expected a PNG of {}x{} pixels'.format(
      flag, path, e, image_size, image_size)) from None
  if arr.shape != (image_size, image_size, 3):
    raise UsageError('--{}={!r} is {}x{}; expected an image of the model\'s size {}x{}'.format(
      flag, path, arr.shape[1], arr.shape[0], image_size, image_size))
  return arr


def _default_out_dir(model_dir, ckpt, name):
  return os.path.join(model_dir or os.path.dirname(ckpt), name)


def _check_fresh(out_dir, files, command):
  refuse_overwrite(out_dir, files, command)
  check_writable_dir(out_dir, 'out_dir')


def make_interpolate_command(script):
  """The `interpolate` subcommand of a script whose Model has interpolate_fn."""

  def interpolate(image1, image2, model_dir=None, checkpoint=None, out_dir=None, t=500, num_lambdas=9, seed=0,
                  ema=True, **overrides):
    """Interpolate between two images through the diffusion's latent space (DDPM sec. 4.3, fig. 8).

    Both images are diffused t + 1 steps with q(x_t | x_0), mixed as (1 - lam) x1_t + lam x2_t for num_lambdas
    values of lam in [0, 1], and each mixture is denoised from t back to x_0 with the reverse process. The noise is
    the same for every lam (the paper fixes it so that x1_t and x2_t stay the same): draw 1 diffuses image1, draw 2
    image2, draws 3 .. t + 3 are the reverse steps t .. 0; draw k is stateless_normal(seed=(seed, k)).
    Writes <out_dir>/interpolation.png (one row: image1, the num_lambdas results, image2), interpolation.npz
    (arr_0 uint8 [num_lambdas + 2, H, W, 3], lambdas) and info.json.

      python3 scripts/run_celebahq.py interpolate --model_dir=... --image1=a.png --image2=b.png --t=500

    Args:
      image1, image2: PNG files of the model's image size.
      t: diffusion depth, 0..T-1 (larger: smoother, further from both inputs).
      num_lambdas: number of mixing weights (>= 2, evenly spaced from 0 to 1).
      seed: the noise's seed (above).
      ema: use the EMA weights (--noema: the raw weights).
    """
    checks.check_int('t', t, minimum=0)
    checks.check_int('num_lambdas', num_lambdas, minimum=2)
    checks.check_int('seed', seed, minimum=0)
    ema = checks.check_bool('ema', ema)
    source = model_source.resolve_model_source(script, model_dir, checkpoint, overrides, command='interpolate')
    ckpt, kwargs, ds_info = source.checkpoint, source.kwargs, source.ds_info
    T = int(kwargs['num_diffusion_timesteps'])
    if t >= T:
      raise UsageError('t={} is not below the model\'s num_diffusion_timesteps={}; expected 0 <= t < {}'.format(
        t, T, T))
    x1, x2 = (read_image(p, ds_info.image_size, flag) for p, flag in [(image1, 'image1'), (image2, 'image2')])
    out_dir = out_dir or _default_out_dir(model_dir, ckpt, 'interpolate_t{}_seed{}'.format(t, seed))
    _check_fresh(out_dir, ['interpolation.png', 'interpolation.npz', 'info.json'], '`interpolate`')
    lams = lambdas(num_lambdas)
    print('interpolating {} and {} at t={} ({} weights, {} values of lambda) -> {}'.format(
      image1, image2, t, 'EMA' if ema else 'raw', num_lambdas, out_dir))
    with tf.Graph().as_default():
      model = script.load_model(kwargs, ds_info)
      noise = SeededNoise()
      dummy = tf.zeros([1] + ds_info.image_shape, tf.float32)
      out = model.interpolate_fn(dummy, tf.zeros([1], tf.int32), noise_fn=noise)
      dist = devices.choose_distribution(num_gpus=None)
      with run_dir.open_restored_session(dist, ckpt, ema) as sess:
        feed = {out['x1']: utils.normalize_data(x1[None].astype(np.float32)),
                out['x2']: utils.normalize_data(x2[None].astype(np.float32)), out['t']: t, **noise.feed(seed, 0)}
        mixed = []
        for lam in lams:
          sess.run(noise.reset_op)  # every lam starts from draw 1: the same noise
          mixed.append(sess.run(out['x_interp'], {**feed, out['lam']: lam})[0])
    row = np.concatenate([x1[None], utils.to_uint8(np.stack(mixed)), x2[None]])
    assert row.shape == (num_lambdas + 2, *ds_info.image_shape)
    utils.save_npz_atomic(os.path.join(out_dir, 'interpolation.npz'), arr_0=row, lambdas=lams)
    utils.save_tiled_imgs(os.path.join(out_dir, 'interpolation.png'), row, num_col=len(row))
    utils.write_json_atomic(os.path.join(out_dir, 'info.json'), dict(
      checkpoint=ckpt, step=run_dir.checkpoint_step(ckpt), kwargs_json=source.kwargs_json, kwargs_from=source.origin,
      ema=ema,
      image1=os.path.abspath(str(image1)), image2=os.path.abspath(str(image2)), t=t, lambdas=lams.tolist(),
      seed=seed, overrides=overrides))
    print('wrote {}'.format(os.path.join(out_dir, 'interpolation.png')))

  return runner.extra_flags(interpolate, checks.default_kwargs(script.train_fn),
                            commands.TRAIN_KWARGS_ABOUT.format(script.name))


def make_trajectory_command(script):
  """The `denoising_trajectory` subcommand of a script whose Model has samples_fn_denoising_trajectory."""

  def denoising_trajectory(model_dir=None, checkpoint=None, out_dir=None, num_samples=4, num_frames=11,
                           repeat_noise_steps=0, seed=0, ema=True, **overrides):
    """Denoising trajectories: num_samples chains x_T -> x_0 of the original ancestral sampler, num_frames
    snapshots of each (x_T first, the sample last) as one PNG row per chain.

    Writes <out_dir>/trajectory.png, trajectory.npz (arr_0 uint8 [num_samples, num_frames, H, W, 3], times: the t
    of each frame, -1 for the sample) and info.json.

      python3 scripts/run_celebahq.py denoising_trajectory --model_dir=... --num_samples=4 --num_frames=11

    Args:
      num_frames: snapshots per chain (2..T+1, evenly spaced).
      repeat_noise_steps: the first repeat_noise_steps steps (and x_T) share one noise draw across the batch, so
        the chains start alike and part later (-1: never shared).
      seed: the noise's seed: draw 1 is x_T, draw k + 2 the noise of the k-th step (t = T-1-k), draw k being
        stateless_normal(seed=(seed, k)) of shape [1, H, W, C] when shared, else [num_samples, H, W, C].
    """
    checks.check_int('num_samples', num_samples)
    checks.check_int('num_frames', num_frames, minimum=2)
    checks.check_int('repeat_noise_steps', repeat_noise_steps, minimum=-1)
    checks.check_int('seed', seed, minimum=0)
    ema = checks.check_bool('ema', ema)
    source = model_source.resolve_model_source(script, model_dir, checkpoint, overrides,
                                               command='denoising_trajectory')
    ckpt, kwargs, ds_info = source.checkpoint, source.kwargs, source.ds_info
    T = int(kwargs['num_diffusion_timesteps'])
    if num_frames > T + 1:
      raise UsageError('num_frames={} exceeds the {} images of a chain of num_diffusion_timesteps={}'.format(
        num_frames, T + 1, T))
    out_dir = out_dir or _default_out_dir(model_dir, ckpt, 'trajectory_seed{}_n{}'.format(seed, num_samples))
    _check_fresh(out_dir, ['trajectory.png', 'trajectory.npz', 'info.json'], '`denoising_trajectory`')
    print('{} denoising trajectories ({} weights) -> {}'.format(num_samples, 'EMA' if ema else 'raw', out_dir))
    with tf.Graph().as_default():
      model = script.load_model(kwargs, ds_info)
      noise = SeededNoise()
      dummy = tf.zeros([num_samples] + ds_info.image_shape, tf.float32)
      out = model.samples_fn_denoising_trajectory(dummy, tf.zeros([num_samples], tf.int32),
                                                  repeat_noise_steps=repeat_noise_steps, noise_fn=noise)
      dist = devices.choose_distribution(num_gpus=None)
      with run_dir.open_restored_session(dist, ckpt, ema) as sess:
        times, imgs = run_seeded(sess, [out['denoising_trajectory_times'], out['denoising_trajectory_images']],
                                 [noise], seed, 0)
    assert imgs.shape == (T + 1, num_samples, *ds_info.image_shape), imgs.shape
    frames = trajectory_frames(T, num_frames)
    seq = utils.to_uint8(np.transpose(imgs[frames], [1, 0, 2, 3, 4]))  # [B, F, H, W, C]
    utils.save_npz_atomic(os.path.join(out_dir, 'trajectory.npz'), arr_0=seq, times=times[frames])
    utils.save_tiled_imgs(os.path.join(out_dir, 'trajectory.png'), seq.reshape(-1, *seq.shape[2:]),
                          num_col=len(frames))
    utils.write_json_atomic(os.path.join(out_dir, 'info.json'), dict(
      checkpoint=ckpt, step=run_dir.checkpoint_step(ckpt), kwargs_json=source.kwargs_json, kwargs_from=source.origin,
      ema=ema,
      num_samples=num_samples, frames=frames.tolist(), times=times[frames].tolist(),
      repeat_noise_steps=repeat_noise_steps, seed=seed, overrides=overrides))
    print('wrote {}'.format(os.path.join(out_dir, 'trajectory.png')))

  return runner.extra_flags(denoising_trajectory, checks.default_kwargs(script.train_fn),
                            commands.TRAIN_KWARGS_ABOUT.format(script.name))
