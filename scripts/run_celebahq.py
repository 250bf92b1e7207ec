"""DDPM on CelebA-HQ 256x256 (Ho, Jain, Abbeel 2020, sec. 4): the U-Net 'unet2d16b2c112244' (114M parameters),
T = 1000, linear betas 1e-4..0.02, the simplified eps objective ('noisepred', GaussianDiffusion), batch 64,
lr 2e-5, no dropout, random flips, EMA 0.9999 (0.5M steps on a TPU v3-8).

Subcommands (python3 scripts/run_celebahq.py SUBCOMMAND --help): train, evaluation, sample (as in run_cifar.py),
interpolate (between two images, DDPM fig. 8) and denoising_trajectory (chains x_T -> x_0), as PNG grids.

The paper's run, on a Cloud TPU with the bucket gs://$BUCKET_PREFIX-$REGION (tfds celeb_a_hq/256 in
tensorflow_datasets/ there):
  python3 scripts/run_celebahq.py train --exp_name=celebahq --tpu_name=$TPU_NAME --bucket_name_prefix=$BUCKET_PREFIX
On this machine, with local directories:
  python3 scripts/run_celebahq.py train --exp_name=celebahq --log_dir=logs --tfds_data_dir=tensorflow_datasets
  python3 scripts/run_celebahq.py sample --model_dir=logs/9999-99-99/celebahq_celebahq256_... --num_samples=16
See docs/scripts.md for every flag.
"""

import functools
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from diffusion_tf.tpu_utils import script_utils  # noqa: E402

script_utils.quiet_tensorflow()

import tensorflow.compat.v1 as tf  # noqa: E402

from diffusion_tf.noise import step_noise_like  # noqa: E402
from diffusion_tf.diffusion_utils import GaussianDiffusion, LOSS_TYPES, get_beta_schedule  # noqa: E402
from diffusion_tf.models import unet  # noqa: E402
from diffusion_tf.tpu_utils import datasets, editing, tpu_utils  # noqa: E402
from diffusion_tf.tpu_utils.paths import Paths  # noqa: E402

# U-Net configurations by name: the paper's 256x256 model, and a small one for tests.
MODEL_CONFIGS = {
  'unet2d16b2c112244': dict(ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,)),  # 114M
  'tiny': dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,)),
}
DATASETS = ('celebahq256', 'cifar10', 'digits')


class Model(tpu_utils.Model):
  def __init__(self, *, model_name, betas, loss_type: str, num_classes: int, dropout: float, randflip,
               block_size: int):
    self.model_name = model_name
    self.diffusion = GaussianDiffusion(betas=betas, loss_type=loss_type)
    self.num_classes = num_classes
    self.dropout = dropout
    self.randflip = randflip
    self.block_size = block_size

  def _denoise(self, x, t, y, dropout):
    B, H, W, C = x.shape.as_list()
    assert x.dtype == tf.float32
    assert t.shape == [B] and t.dtype in [tf.int32, tf.int64]
    assert y.shape == [B] and y.dtype in [tf.int32, tf.int64]
    orig_out_ch = out_ch = C
    if self.block_size != 1:  # the U-Net sees (H / b) x (W / b) images with C * b^2 channels
      x = tf.nn.space_to_depth(x, self.block_size)
      out_ch *= self.block_size ** 2
    y = None
    if self.model_name not in MODEL_CONFIGS:
      raise NotImplementedError(self.model_name)
    out = unet.model(x, t=t, y=y, name='model', out_ch=out_ch, num_classes=self.num_classes, dropout=dropout,
                     **MODEL_CONFIGS[self.model_name])
    if self.block_size != 1:
      out = tf.nn.depth_to_space(out, self.block_size)
    assert out.shape.as_list() == [B, H, W, orig_out_ch]
    return out

  def samples_fn(self, dummy_noise, y, noise_fn=tf.random_normal):
    # tpu_utils.Model.samples_fn under this script's parameter names, as in the original
    return super().samples_fn(dummy_noise, y, noise_fn=noise_fn)

  def _losses(self, denoise_fn, x_start, t):
    return self.diffusion.p_losses(denoise_fn=denoise_fn, x_start=x_start, t=t)

  def progressive_samples_fn(self, dummy_noise, y, noise_fn=tf.random_normal):
    """Ancestral samples with 20 (clipped) x_0 predictions along the chain: slot k holds the one at t = k * T/20."""
    denoise_fn = functools.partial(self._denoise, y=y, dropout=0)
    shape = dummy_noise.shape.as_list()
    diffusion = self.diffusion
    freq = max(1, diffusion.num_timesteps // 20)
    num_recorded = diffusion.num_timesteps // freq

    def _step(i_, img_, xstartpreds_):
      t = tf.fill([shape[0]], i_)
      # one p_sample step (DDPM Algorithm 2), keeping its x_0 prediction
      x_recon = tf.clip_by_value(diffusion.predict_start_from_noise(img_, t=t, noise=denoise_fn(img_, t)), -1., 1.)
      model_mean, _, model_log_variance = diffusion.q_posterior(x_start=x_recon, x_t=img_, t=t)
      sample = diffusion._sample_from_mean(model_mean, model_log_variance, t, step_noise_like(img_, noise_fn))
      insert_mask = tf.reshape(tf.cast(tf.equal(tf.floordiv(i_, freq), tf.range(num_recorded)), tf.float32),
                               [1, num_recorded] + [1] * (len(shape) - 1))
      return [sample, insert_mask * x_recon[:, None] + (1. - insert_mask) * xstartpreds_]

    samples, xstartpreds = diffusion._reverse_loop(
      _step, [noise_fn(shape=shape, dtype=tf.float32), tf.zeros([shape[0], num_recorded] + shape[1:])])
    return {'samples': samples, 'progressive_samples': xstartpreds}

  def samples_fn_denoising_trajectory(self, dummy_noise, y, repeat_noise_steps=0):
    """The whole ancestral chain: {'samples': x_0 [B, H, W, C], 'denoising_trajectory_times': [T + 1] (T-1 .. -1),
    'denoising_trajectory_images': [T + 1, B, H, W, C] (x_T first)}; the first repeat_noise_steps steps draw one
    noise for the whole batch."""
    times, imgs = self.diffusion.p_sample_loop_trajectory(
      denoise_fn=functools.partial(self._denoise, y=y, dropout=0), shape=dummy_noise.shape.as_list(),
      noise_fn=tf.random_normal, repeat_noise_steps=repeat_noise_steps)
    return {'samples': imgs[-1], 'denoising_trajectory_times': times, 'denoising_trajectory_images': imgs}

  def interpolate_fn(self, dummy_noise, y):
    """Latent interpolation (GaussianDiffusion.interpolate): placeholders 'x1', 'x2' (images [B, H, W, C] in
    [-1, 1]), 'lam' (scalar weight), 't' (scalar depth), and the result 'x_interp' [B, H, W, C]."""
    x1, x2, lam, x_interp, t = self.diffusion.interpolate(
      denoise_fn=functools.partial(self._denoise, y=y, dropout=0), shape=dummy_noise.shape.as_list(),
      noise_fn=tf.random_normal)
    return {'x1': x1, 'x2': x2, 'lam': lam, 't': t, 'x_interp': x_interp}


def _load_model(kwargs, ds):
  return Model(
    model_name=kwargs['model_name'],
    betas=get_beta_schedule(
      kwargs['beta_schedule'], beta_start=kwargs['beta_start'], beta_end=kwargs['beta_end'],
      num_diffusion_timesteps=kwargs['num_diffusion_timesteps']),
    loss_type=kwargs['loss_type'],
    num_classes=ds.num_classes,
    dropout=kwargs['dropout'],
    randflip=kwargs['randflip'],
    block_size=kwargs['block_size'])


def _validate_kwargs(kwargs, datasets_allowed=DATASETS):
  c = script_utils
  c.check_choice('dataset', kwargs['dataset'], datasets_allowed)
  c.check_choice('model_name', kwargs['model_name'], sorted(MODEL_CONFIGS))
  c.check_choice('loss_type', kwargs['loss_type'], LOSS_TYPES)
  c.check_beta_schedule(kwargs)
  c.check_number('dropout', kwargs['dropout'], low=0., high=1., high_inclusive=False)
  c.check_bool('randflip', kwargs['randflip'])
  c.check_int('block_size', kwargs['block_size'])
  if kwargs.get('resolution') is not None:
    c.check_int('resolution', kwargs['resolution'])
  script_utils.check_model_config(kwargs['model_name'], MODEL_CONFIGS, script_utils.image_size_of(kwargs),
                                  block_size=kwargs['block_size'])


def _validate_train_kwargs(kwargs, datasets_allowed=DATASETS):
  _validate_kwargs(kwargs, datasets_allowed)
  script_utils.check_train_flags(kwargs)


def run_train(kwargs, ds, paths, warm_start_from=None):
  """The training run of run_celebahq.py and run_lsun.py, from checked kwargs and the dataset."""
  script_utils.check_model_config(kwargs['model_name'], MODEL_CONFIGS, ds.image_size, block_size=kwargs['block_size'])
  exp_name = (
    '{exp_name}_{dataset}_{model_name}_{optimizer}_bs{total_bs}_lr{lr}w{warmup}_beta{beta_start}-{beta_end}-'
    '{beta_schedule}_t{num_diffusion_timesteps}_{loss_type}_dropout{dropout}_randflip{randflip}_blk{block_size}'
  ).format(**kwargs)
  script_utils.train_from_kwargs(kwargs, ds=ds, paths=paths, exp_name=exp_name,
                                 model_constructor=lambda: _load_model(kwargs, ds), warm_start_from=warm_start_from)


def train(
    exp_name, tpu_name=None, bucket_name_prefix=None, model_name='unet2d16b2c112244', dataset='celebahq256',
    optimizer='adam', total_bs=64, grad_clip=1., lr=2e-5, warmup=5000, num_diffusion_timesteps=1000,
    beta_start=0.0001, beta_end=0.02, beta_schedule='linear', loss_type='noisepred', dropout=0.0, randflip=1,
    block_size=1, tfds_data_dir='tensorflow_datasets', log_dir='logs', keep_checkpoint_max=2,
    # Not in the original: where and how long to run.
    region=None, model_dir=None, date_str='9999-99-99', max_steps=None, save_checkpoints_steps=None,
    save_checkpoints_secs=None, iterations_per_loop=1000, ema_decay=0.9999, resolution=None, num_gpus=None,
    num_cpu_replicas=None, log_every_steps=100, save_summary_steps=100, seed=None, max_train_secs=None,
    worker_timeout_secs=tpu_utils.DEFAULT_WORKER_TIMEOUT_SECS):
  """Train a diffusion model; the defaults are the paper's CelebA-HQ 256 run.

  The run's directory is {log_dir}/{date_str}/{exp_name}_{dataset}_{model_name}_... (or --model_dir); with
  --bucket_name_prefix, log_dir and tfds_data_dir are inside gs://{bucket_name_prefix}-{region}. An existing run
  directory is resumed from its latest checkpoint. --block_size=b applies space_to_depth(b) before the U-Net and
  depth_to_space after it. See run_cifar.py train for the run-control flags.
  """
  kwargs = dict(locals())
  _validate_train_kwargs(kwargs)
  paths = Paths(bucket_name_prefix, region)
  ds = datasets.get_dataset(dataset, tfds_data_dir=paths.resolve(tfds_data_dir), resolution=resolution)
  run_train(kwargs, ds, paths)


def evaluation(
    model_dir, tpu_name=None, bucket_name_prefix=None, once=False, dump_samples_only=False, total_bs=128,
    tfds_data_dir='tensorflow_datasets',
    # Not in the original:
    load_ckpt=None, region=None, num_inception_samples=2048, inception_graph=None, stats_dir=None,
    non_ema_pass=False, num_gpus=None, poll_secs=60, timeout_secs=None, seed=0, samples_dir=None,
    full_reference_sets=False):
  """Watch model_dir for new checkpoints and evaluate each: EMA samples, an image grid, IS and FID against the
  training set (CelebA-HQ has no test split) on 2,048 samples in batches of 128, as the original. Flags as in
  run_cifar.py evaluation.
  """
  paths = Paths(bucket_name_prefix, region)
  model_dir = paths.resolve(model_dir)
  kwargs = tpu_utils.load_train_kwargs(model_dir)
  _validate_kwargs(kwargs)
  tfds_data_dir = paths.resolve(tfds_data_dir)
  ds = datasets.get_dataset(kwargs['dataset'], tfds_data_dir=tfds_data_dir, resolution=kwargs.get('resolution'))
  script_utils.evaluate_run(
    model_dir=model_dir, model_constructor=lambda: _load_model(kwargs, ds), ds=ds, paths=paths, tpu_name=tpu_name,
    once=once, dump_samples_only=dump_samples_only, total_bs=total_bs, load_ckpt=load_ckpt,
    num_inception_samples=num_inception_samples, inception_graph=inception_graph, non_ema_pass=non_ema_pass,
    num_gpus=num_gpus, poll_secs=poll_secs, timeout_secs=timeout_secs, seed=seed, samples_dir=samples_dir,
    full_reference_sets=full_reference_sets,
    stats_dir=paths.resolve(stats_dir) or tpu_utils.default_stats_dir(kwargs['dataset'], tfds_data_dir=tfds_data_dir))


SCRIPT = script_utils._Script(name='run_celebahq.py', train_fn=train, load_model=_load_model,
                              validate_kwargs=_validate_kwargs)
sample = script_utils.make_sample_command(SCRIPT)
interpolate = editing.make_interpolate_command(SCRIPT)
denoising_trajectory = editing.make_trajectory_command(SCRIPT)


def main(argv=None):
  script_utils.run_cli(script_utils.subcommands(
    train=train, evaluation=evaluation, sample=sample, interpolate=interpolate,
    denoising_trajectory=denoising_trajectory), argv=argv, name='run_celebahq.py')


if __name__ == '__main__':
  main()
