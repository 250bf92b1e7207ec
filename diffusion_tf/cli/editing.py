"""Image editing with a trained model as commands: the paper's (DDPM sec. 4.3 and fig. 8, CelebA-HQ) latent
interpolation between two images and denoising trajectories (the chain x_T -> x_0), written as PNG grids; and
inpainting (RePaint), image-to-image (SDEdit) and DDIM inversion of given images (diffusion_tf/editing.py), written
by generate/edits.EditDump as `sample` writes its dumps.

They run a script Model's `interpolate_fn(dummy_noise, y)` and `samples_fn_denoising_trajectory(dummy_noise, y,
repeat_noise_steps)` (the original run_celebahq.py names and signatures) on one checkpoint, with the `sample`
command's seeded noise (seeded.SeededNoise, batch 0): draw k = 1, 2, ... is stateless_normal(seed=(seed, k)),
in the order the sampler draws.

  make_interpolate_command(script)  -> interpolate(model_dir|checkpoint, image1, image2, t, num_lambdas, ...)
  make_trajectory_command(script)   -> denoising_trajectory(model_dir|checkpoint, num_samples, num_frames, ...)
  make_inpaint_command(script)      -> inpaint(images, mask, model_dir|checkpoint, ...)
  make_img2img_command(script)      -> img2img(images, strength, model_dir|checkpoint, sampler, ...)
  make_invert_command(script)       -> invert(images, model_dir|checkpoint, num_inference_steps, ...)
"""

import os

import numpy as np
import tensorflow.compat.v1 as tf

from .. import checks, utils
from ..editing_schedules import sdedit_num_timesteps
from ..experiments import model_source
from ..errors import UsageError
from ..runs import devices, run_dir
from ..runs.paths import check_writable_dir, refuse_overwrite
from ..generate.edits import EditDump, read_image, read_images, read_masks
from ..generate.seeded import SeededNoise, run_seeded
from . import commands, runner


def lambdas(num_lambdas):
  """The mixing weights of an interpolation: num_lambdas values evenly spaced in [0, 1], both ends included."""
  return np.linspace(0., 1., num_lambdas)


def trajectory_frames(num_steps, num_frames):
  """Indices of num_frames frames of a chain of num_steps + 1 images (x_T first), evenly spread, both ends kept."""
  return np.unique(np.round(np.linspace(0, num_steps, num_frames)).astype(np.int64))


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


# ---------------------------------------------------------------------------------------------------------------
# inpaint, img2img, invert: given images edited in seeded batches (generate/edits.EditDump)

_EDIT_ARGS = '''
    Outputs in --out_dir (default <model_dir>/edits/<checkpoint>_<command>..._<images>): images/000000.png ... (one
    result per input), results.npz (arr_0 uint8 results, inputs{extras}), grid.png (one row per image, the first
    64: {grid}) and info.json. Batches are written as they finish; an interrupted run continues where it stopped;
    nothing is overwritten and one run at a time writes into an --out_dir.

    Args:
      images: the images to edit, of the model's size: a PNG or JPEG file, a directory of them (sorted by name), or
        an .npz with arr_0 uint8 [N, H, W, 3] (e.g. a `sample` dump's samples.npz).
      model_dir: a training run's directory; or give --checkpoint (a prefix or directory), as for `sample`.
      batch_size: images per batch (the last one is padded); the noise of batch b depends only on seed and b.
      ema: use the EMA weights (--noema: the raw weights).
'''


def _edit_out_dir(out_dir, model_dir, ckpt, command, tags, images):
  name = os.path.basename(os.path.normpath(str(images)))
  return out_dir or os.path.join(model_dir or os.path.dirname(ckpt), 'edits', '{}_{}{}_{}'.format(
    os.path.basename(ckpt), command, tags, name))


def _run_edit(script, command, *, images, masks, model_dir, checkpoint, out_dir, tags, options, edit_fn,
              batch_size, seed, ema, num_gpus, overrides, check_model=None):
  """Check the flags shared by the editing commands, read the inputs and run the EditDump."""
  checks.check_int('batch_size', batch_size)
  checks.check_int('seed', seed, minimum=0)
  ema = checks.check_bool('ema', ema)
  source = model_source.resolve_model_source(script, model_dir, checkpoint, overrides, command=command)
  if check_model is not None:
    check_model(source.kwargs)
  size = source.ds_info.image_size
  pixels = read_images(images, size)
  mask_array = None if masks is None else read_masks(masks, len(pixels), size)
  out_dir = _edit_out_dir(out_dir, model_dir, source.checkpoint, command, tags, images)
  EditDump(source, script.load_model, out_dir, command=command, images=pixels, masks=mask_array, edit_fn=edit_fn,
           options=dict(options, images=os.path.abspath(str(images)),
                        mask=None if masks is None else os.path.abspath(str(masks))),
           batch_size=batch_size, seed=seed, ema=ema, dist=devices.choose_distribution(num_gpus=num_gpus),
           overrides=overrides).run()


def _check_steps_within(kwargs, num_inference_steps):
  T = int(kwargs['num_diffusion_timesteps'])
  if num_inference_steps > T:
    raise UsageError('num_inference_steps={} exceeds the model\'s num_diffusion_timesteps={}; expected at most '
                     '{}'.format(num_inference_steps, T, T))


def make_inpaint_command(script):
  """The `inpaint` subcommand (RePaint) of a script."""

  def inpaint(images, mask, model_dir=None, checkpoint=None, out_dir=None, num_inference_steps=250, jump_length=10,
              jump_n_sample=10, eta=0., batch_size=16, seed=0, ema=True, num_gpus=None, **overrides):
    """Inpaint images where a mask is black with RePaint (Lugmayr et al. 2022; diffusers' RePaintPipeline):
    num_inference_steps denoising steps over every T/S-th timestep, going back up --jump_length steps
    --jump_n_sample - 1 times at every jump_length-th step (so jump_n_sample=1: no resampling, the known part
    replaced at every step), DDIM steps with noise --eta (0..1) in the unknown part.

      python3 scripts/run_celebahq.py inpaint --model_dir=... --images=faces/ --mask=half.png

    mask: a PNG of the images' size, WHITE = KEEP the image there, BLACK = GENERATE (RePaint's convention); grey
      (L or 1) or RGB with equal channels, no other levels. One PNG for all images, or a directory of PNGs, one per
      image in sorted order.
    num_inference_steps: 1..T denoising steps (network calls: more with jumps; RePaint's default 250).
    seed: draw 1 is x_T, then one draw per step and T/S per move back up (diffusers' order).
    """
    for flag, value in [('num_inference_steps', num_inference_steps), ('jump_length', jump_length),
                        ('jump_n_sample', jump_n_sample)]:
      checks.check_int(flag, value)
    checks.check_number('eta', eta, low=0., high=1.)
    options = dict(num_inference_steps=num_inference_steps, jump_length=jump_length, jump_n_sample=jump_n_sample,
                   eta=float(eta))
    _run_edit(script, 'inpaint', images=images, masks=mask, model_dir=model_dir, checkpoint=checkpoint,
              out_dir=out_dir, tags='_s{}_j{}_n{}_eta{:g}_seed{}'.format(num_inference_steps, jump_length,
                                                                         jump_n_sample, eta, seed),
              options=options, batch_size=batch_size, seed=seed, ema=ema, num_gpus=num_gpus, overrides=overrides,
              edit_fn=lambda model, y, noise_fn, image, masks: model.inpaint_fn(image, masks, y, noise_fn=noise_fn,
                                                                               **options),
              check_model=lambda kwargs: _check_steps_within(kwargs, num_inference_steps))

  inpaint.__doc__ += _EDIT_ARGS.format(extras=', masks uint8 [N, H, W, 1] (1 = kept)', grid='input | mask | result')
  return runner.extra_flags(inpaint, checks.default_kwargs(script.train_fn),
                            commands.TRAIN_KWARGS_ABOUT.format(script.name))


def make_img2img_command(script):
  """The `img2img` subcommand (SDEdit) of a script."""

  def img2img(images, strength=0.5, model_dir=None, checkpoint=None, out_dir=None, sampler='ddpm',
              num_inference_steps=None, eta=0., skip_type=None, batch_size=16, seed=0, ema=True, num_gpus=None,
              **overrides):
    """Redraw images with SDEdit (Meng et al. 2022): diffuse each to t = round(strength * T) with q(x_t | x_0),
    then denoise with --sampler over the timesteps below (strength 1: ordinary sampling, the image unused; small
    strengths stay close to the image).

      python3 scripts/run_cifar.py img2img --model_dir=... --images=sketches/ --strength=0.5 --sampler=ddim

    strength: in (0, 1], the fraction of the diffusion to go back.
    sampler, num_inference_steps, eta, skip_type: as for `sample` (and the few-step solvers of
      docs/samplers.md); num_inference_steps counts the steps actually run, 1..round(strength * T) (default: the
      sampler's, at most that).
    seed: draw 1 noises the image, then the sampler's draws.
    """
    checks.check_number('strength', strength, low=0., high=1., low_inclusive=False)
    options = commands._check_sampler_flags(
      sampler=sampler, num_inference_steps=num_inference_steps, eta=eta, use_clipped_model_output=False,
      skip_prk_steps=False, skip_type=skip_type, solver_order=None, progressive=False)  # solvers: their default order

    def _check_model(kwargs):
      T = int(kwargs['num_diffusion_timesteps'])
      kept = sdedit_num_timesteps(T, strength)
      if num_inference_steps is not None and num_inference_steps > kept:
        raise UsageError('num_inference_steps={} is more than the {} timesteps that strength={!r} goes back '
                         '(round(strength * T), T={}); expected at most {}'.format(num_inference_steps, kept,
                                                                                    strength, T, kept))
      commands._resolve_steps(kwargs, options, num_timesteps=kept)

    _run_edit(script, 'img2img', images=images, masks=None, model_dir=model_dir, checkpoint=checkpoint,
              out_dir=out_dir, tags='_strength{:g}_{}{}_seed{}'.format(strength, sampler, num_inference_steps or '',
                                                                       seed),
              options=dict(options, strength=float(strength)), batch_size=batch_size, seed=seed, ema=ema,
              num_gpus=num_gpus, overrides=overrides, check_model=_check_model,
              edit_fn=lambda model, y, noise_fn, image: model.img2img_fn(image, y, strength=strength,
                                                                        noise_fn=noise_fn, **options))

  img2img.__doc__ += _EDIT_ARGS.format(extras='', grid='input | result')
  return runner.extra_flags(img2img, checks.default_kwargs(script.train_fn),
                            commands.TRAIN_KWARGS_ABOUT.format(script.name))


def make_invert_command(script):
  """The `invert` subcommand (DDIM inversion) of a script."""

  def invert(images, model_dir=None, checkpoint=None, out_dir=None, num_inference_steps=50, clip_denoised=False,
             batch_size=16, ema=True, num_gpus=None, **overrides):
    """Encode images into their DDIM latents x_T (DDIM inversion, diffusers' DDIMInverseScheduler) and decode them
    back with DDIM (eta 0, the same steps): the latents, the reconstructions, and in info.json how far these are
    from the images (reconstruction_max_abs_error and _mean_abs_error, in pixel levels 0..255). Deterministic.

      python3 scripts/run_cifar.py invert --model_dir=... --images=cat.png --num_inference_steps=50

    num_inference_steps: 1..T (the network calls of each way).
    clip_denoised: clip the x_0 predictions to [-1, 1] both ways (diffusers' clip_sample default and the library's;
      off here because clipping at high noise loses what decoding needs: docs/editing.md measures it).
    """
    checks.check_int('num_inference_steps', num_inference_steps)
    clip = checks.check_bool('clip_denoised', clip_denoised)
    options = dict(num_inference_steps=num_inference_steps, clip_denoised=clip)
    _run_edit(script, 'invert', images=images, masks=None, model_dir=model_dir, checkpoint=checkpoint,
              out_dir=out_dir, tags='_s{}{}'.format(num_inference_steps, '_clip' if clip else ''), options=options,
              batch_size=batch_size, seed=0, ema=ema, num_gpus=num_gpus, overrides=overrides,
              check_model=lambda kwargs: _check_steps_within(kwargs, num_inference_steps),
              edit_fn=lambda model, y, noise_fn, image: model.invert_fn(image, y, **options))

  invert.__doc__ += _EDIT_ARGS.format(extras=', latents float32 [N, H, W, 3]',
                                      grid='input | latent (over +-3) | reconstruction')
  return runner.extra_flags(invert, checks.default_kwargs(script.train_fn),
                            commands.TRAIN_KWARGS_ABOUT.format(script.name))
