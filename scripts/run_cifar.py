"""DDPM on CIFAR-10 (Ho, Jain, Abbeel 2020, sec. 4): the U-Net 'unet2d16b2' (35.7M parameters), T = 1000, linear
betas 1e-4..0.02, the simplified eps objective, fixed variance beta_t, batch 128, lr 2e-4 with 5000 warm-up steps,
dropout 0.1, random flips, EMA 0.9999 (FID 3.17, IS 9.46 after 800k steps on a TPU v3-8).

Subcommands (python3 scripts/run_cifar.py SUBCOMMAND --help):
  train        train a model; resumes an existing run
  evaluation   watch a run's checkpoints: EMA samples, image grids, IS and FID against the train and test sets
  simple_eval  bits/dim on the train or test set (bpd_train, bpd_eval), or progressive samples, as .npz
  sample       draw samples from a checkpoint (ddpm / ddim / pndm), PNG grid + .npz or PNGs
  reproduce    the paper's table from a checkpoint: samples, IS (10 splits), FID train/test (, bits/dim), table + JSON

The paper's run, on a Cloud TPU with the bucket gs://$BUCKET_PREFIX-$REGION (data in tensorflow_datasets/ there):
  python3 scripts/run_cifar.py train --exp_name=cifar --tpu_name=$TPU_NAME --bucket_name_prefix=$BUCKET_PREFIX
  python3 scripts/run_cifar.py evaluation --model_dir=gs://$BUCKET_PREFIX-$REGION/logs/9999-99-99/cifar_cifar10_... \\
    --tpu_name=$EVAL_TPU_NAME --bucket_name_prefix=$BUCKET_PREFIX
The same on this machine (CPU or GPUs), with local directories:
  python3 scripts/run_cifar.py train --exp_name=cifar --log_dir=logs --tfds_data_dir=tensorflow_datasets
  python3 scripts/run_cifar.py sample --model_dir=logs/9999-99-99/cifar_cifar10_... --sampler=ddim \\
    --num_inference_steps=50 --num_samples=64
See docs/scripts.md for every flag.
"""

import functools
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from diffusion_tf.tpu_utils import script_utils  # noqa: E402

script_utils.quiet_tensorflow()

import tensorflow.compat.v1 as tf  # noqa: E402

from diffusion_tf.diffusion_utils_2 import GaussianDiffusion2, get_beta_schedule, LOSS_TYPES  # noqa: E402
from diffusion_tf.diffusion_utils_2 import MODEL_MEAN_TYPES, MODEL_VAR_TYPES  # noqa: E402
from diffusion_tf.errors import UsageError  # noqa: E402
from diffusion_tf.models import unet  # noqa: E402
from diffusion_tf.tpu_utils import datasets, reproduce as reproduce_lib, simple_eval_worker, tpu_utils  # noqa: E402
from diffusion_tf.tpu_utils.paths import Paths  # noqa: E402

# U-Net configurations by name. 'unet2d16b2' is the paper's; the small ones are for the offline demo and tests.
MODEL_CONFIGS = {
  'unet2d16b2': dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,)),  # 35.7M params
  'demo': dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,)),
  'tiny': dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,)),
}
DATASETS = ('cifar10', 'digits')


class Model(tpu_utils.Model):
  def __init__(self, *, model_name, betas, model_mean_type: str, model_var_type: str, loss_type: str,
               num_classes: int, dropout: float, randflip):
    self.model_name = model_name
    self.diffusion = GaussianDiffusion2(
      betas=betas, model_mean_type=model_mean_type, model_var_type=model_var_type, loss_type=loss_type)
    self.num_classes = num_classes
    self.dropout = dropout
    self.randflip = randflip

  def _denoise(self, x, t, y, dropout):
    B, H, W, C = x.shape.as_list()
    assert x.dtype == tf.float32
    assert t.shape == [B] and t.dtype in [tf.int32, tf.int64]
    assert y.shape == [B] and y.dtype in [tf.int32, tf.int64]
    out_ch = (C * 2) if self.diffusion.model_var_type == 'learned' else C
    y = None
    if self.model_name not in MODEL_CONFIGS:
      raise NotImplementedError(self.model_name)
    return unet.model(x, t=t, y=y, name='model', out_ch=out_ch, num_classes=self.num_classes, dropout=dropout,
                      **MODEL_CONFIGS[self.model_name])

  def samples_fn(self, dummy_noise, y, noise_fn=tf.random_normal):
    # tpu_utils.Model.samples_fn under this script's parameter names, as in the original
    return super().samples_fn(dummy_noise, y, noise_fn=noise_fn)

  def _losses(self, denoise_fn, x_start, t):
    return self.diffusion.training_losses(denoise_fn=denoise_fn, x_start=x_start, t=t)

  def progressive_samples_fn(self, dummy_noise, y, noise_fn=tf.random_normal):
    # 20 x_0 predictions along the chain (every 50 steps for T = 1000, as in the original)
    samples, progressive_samples = self.diffusion.p_sample_loop_progressive(
      denoise_fn=functools.partial(self._denoise, y=y, dropout=0),
      shape=dummy_noise.shape.as_list(),
      noise_fn=noise_fn,
      include_xstartpred_freq=max(1, self.diffusion.num_timesteps // 20))
    return {'samples': samples, 'progressive_samples': progressive_samples}

  def bpd_fn(self, x, y):
    total_bpd_b, terms_bpd_bt, prior_bpd_b, mse_bt = self.diffusion.calc_bpd_loop(
      denoise_fn=functools.partial(self._denoise, y=y, dropout=0),
      x_start=x)
    return {
      'total_bpd': total_bpd_b,
      'terms_bpd': terms_bpd_bt,
      'prior_bpd': prior_bpd_b,
      'mse': mse_bt
    }


def _load_model(kwargs, ds):
  return Model(
    model_name=kwargs['model_name'],
    betas=get_beta_schedule(
      kwargs['beta_schedule'], beta_start=kwargs['beta_start'], beta_end=kwargs['beta_end'],
      num_diffusion_timesteps=kwargs['num_diffusion_timesteps']),
    model_mean_type=kwargs['model_mean_type'],
    model_var_type=kwargs['model_var_type'],
    loss_type=kwargs['loss_type'],
    num_classes=ds.num_classes,
    dropout=kwargs['dropout'],
    randflip=kwargs['randflip'])


def _validate_kwargs(kwargs):
  """Check the model/diffusion/optimizer settings of train() (or of a kwargs.json) before anything is built."""
  c = script_utils
  c.check_choice('dataset', kwargs['dataset'], DATASETS)
  c.check_choice('model_name', kwargs['model_name'], sorted(MODEL_CONFIGS))
  c.check_choice('model_mean_type', kwargs['model_mean_type'], MODEL_MEAN_TYPES)
  c.check_choice('model_var_type', kwargs['model_var_type'], MODEL_VAR_TYPES)
  c.check_choice('loss_type', kwargs['loss_type'], LOSS_TYPES)
  if kwargs['model_var_type'] == 'learned' and kwargs['loss_type'] == 'mse':
    raise UsageError("model_var_type='learned' with loss_type='mse': the mse loss does not train the "
                               "variance; expected loss_type='kl' (or a fixed variance type)")
  c.check_beta_schedule(kwargs)
  c.check_number('dropout', kwargs['dropout'], low=0., high=1., high_inclusive=False)
  c.check_bool('randflip', kwargs['randflip'])
  if kwargs.get('resolution') is not None:
    c.check_int('resolution', kwargs['resolution'])
    if kwargs['dataset'] != 'digits' and kwargs['resolution'] != script_utils.IMAGE_SIZES[kwargs['dataset']]:
      raise UsageError('resolution={!r}: {} images are {}x{}; only digits has other sizes'.format(
        kwargs['resolution'], kwargs['dataset'], *[script_utils.IMAGE_SIZES[kwargs['dataset']]] * 2))
  script_utils.check_model_config(kwargs['model_name'], MODEL_CONFIGS, script_utils.image_size_of(kwargs))


def _validate_train_kwargs(kwargs):
  _validate_kwargs(kwargs)
  script_utils.check_train_flags(kwargs)


def train(
    exp_name, tpu_name=None, bucket_name_prefix=None, model_name='unet2d16b2', dataset='cifar10', optimizer='adam',
    total_bs=128, grad_clip=1., lr=2e-4, warmup=5000, num_diffusion_timesteps=1000, beta_start=0.0001,
    beta_end=0.02, beta_schedule='linear', model_mean_type='eps', model_var_type='fixedlarge', loss_type='mse',
    dropout=0.1, randflip=1, tfds_data_dir='tensorflow_datasets', log_dir='logs', keep_checkpoint_max=2,
    # Not in the original: where and how long to run.
    region=None, model_dir=None, date_str='9999-99-99', max_steps=None, save_checkpoints_steps=None,
    save_checkpoints_secs=None, iterations_per_loop=2000, ema_decay=0.9999, resolution=None, num_gpus=None,
    num_cpu_replicas=None, log_every_steps=100, save_summary_steps=100, seed=None, max_train_secs=None,
    worker_timeout_secs=tpu_utils.DEFAULT_WORKER_TIMEOUT_SECS):
  """Train a diffusion model; the defaults are the paper's CIFAR-10 run.

  The run's directory is {log_dir}/{date_str}/{exp_name}_{dataset}_{model_name}_... (or --model_dir); with
  --bucket_name_prefix, log_dir and tfds_data_dir are inside gs://{bucket_name_prefix}-{region}. An existing run
  directory is resumed from its latest checkpoint. --tpu_name trains on that Cloud TPU, otherwise on this machine's
  GPUs (all visible, or --num_gpus) or CPU; with a cluster in $TF_CONFIG, on all its workers, each running this
  same command (docs/distributed.md; --worker_timeout_secs bounds the wait for a lost worker). Checkpoints every
  --save_checkpoints_steps steps or --save_checkpoints_secs seconds (default 1600 s), keeping --keep_checkpoint_max;
  --max_steps bounds the run.
  model_name: unet2d16b2 (the paper's), demo or tiny (small configs); dataset: cifar10 or digits (offline).
  """
  kwargs = dict(locals())
  _validate_train_kwargs(kwargs)
  paths = Paths(bucket_name_prefix, region)
  ds = datasets.get_dataset(dataset, tfds_data_dir=paths.resolve(tfds_data_dir), resolution=resolution)
  script_utils.check_model_config(model_name, MODEL_CONFIGS, ds.image_size)
  exp_name_full = (
    '{exp_name}_{dataset}_{model_name}_{optimizer}_bs{total_bs}_lr{lr}w{warmup}_beta{beta_start}-{beta_end}-'
    '{beta_schedule}_t{num_diffusion_timesteps}_{model_mean_type}-{model_var_type}-{loss_type}_dropout{dropout}_'
    'randflip{randflip}'.format(**kwargs))
  script_utils.train_from_kwargs(kwargs, ds=ds, paths=paths, exp_name=exp_name_full,
                                 model_constructor=lambda: _load_model(kwargs, ds))


def evaluation(  # evaluation loop for use during training
    model_dir, tpu_name=None, bucket_name_prefix=None, once=False, dump_samples_only=False, total_bs=256,
    tfds_data_dir='tensorflow_datasets', load_ckpt=None,
    # Not in the original:
    region=None, num_inception_samples=50000, inception_graph=None, stats_dir=None, non_ema_pass=False,
    num_gpus=None, poll_secs=60, timeout_secs=None, seed=0, samples_dir=None, full_reference_sets=False):
  """Watch model_dir for new checkpoints; for each, draw num_inception_samples samples with the EMA weights, write an
  image grid, and the original's metrics: the Inception Score of all samples (eval_ema/samples/inception50000), FID
  against the training set (.../trainfid50000) and the test set (.../fid50000), and beside them the paper's
  10-split IS (.../inception50000_10splits, _std) (TensorBoard under model_dir/eval, and a JSON per checkpoint).
  Reference statistics: the images the original measured (drop-remainder batches of total_bs: 49,920 training and
  9,984 test images at 256), or every image with --full_reference_sets; the JSON records which.
  --once evaluates the latest checkpoint (or --load_ckpt: model.ckpt-N in model_dir, or a path) and stops;
  --dump_samples_only writes the samples (.npz, arr_0 uint8; into --samples_dir if given) without metrics;
  --non_ema_pass also evaluates the raw weights (prefix eval/). The Inception graph comes from --inception_graph or
  $DIFFUSION_TF_INCEPTION_GRAPH; real-data statistics are cached in --stats_dir (default:
  <tfds_data_dir>/fid_stats). --timeout_secs stops the watch after that long without a new checkpoint.
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


def simple_eval(model_dir, tpu_name=None, bucket_name_prefix=None, mode='bpd_eval', load_ckpt=None, total_bs=256,
                tfds_data_dir='tensorflow_datasets',
                # Not in the original:
                region=None, ema=True, max_batches=None, num_gpus=None, seed=0, num_samples=50000):
  """Bits/dim or progressive samples of one checkpoint (--load_ckpt: model.ckpt-N in model_dir as in the original,
  a prefix, or default the latest), as .npz in model_dir/simple_eval/.

  mode: bpd_train (the training set, one pass), bpd_eval (the test set): total bits/dim [N], per-timestep terms
  [N, T], prior [N] and the x_0 mse [N, T] (simple_eval/bpd/); progressive_samples: --num_samples samples (default
  50,000, the original's) with their x_0 predictions along the chain, in parts of 20 batches
  (simple_eval/progressive_samples/; a rerun continues after the parts that exist). --max_batches stops a bpd pass
  early (the results written so far are kept; a rerun resumes).
  """
  paths = Paths(bucket_name_prefix, region)
  model_dir = paths.resolve(model_dir)
  kwargs = tpu_utils.load_train_kwargs(model_dir)
  _validate_kwargs(kwargs)
  ds = datasets.get_dataset(kwargs['dataset'], tfds_data_dir=paths.resolve(tfds_data_dir),
                            resolution=kwargs.get('resolution'))
  worker = simple_eval_worker.SimpleEvalWorker(
    tpu_name=tpu_name,
    model_constructor=lambda: _load_model(kwargs, ds),
    total_bs=total_bs,
    dataset=ds,
    num_gpus=num_gpus)
  worker.run(mode=mode, logdir=model_dir, load_ckpt=tpu_utils.resolve_load_ckpt(model_dir, load_ckpt, paths.resolve),
             ema=ema, max_batches=max_batches, seed=seed, num_samples=num_samples)


SCRIPT = script_utils._Script(name='run_cifar.py', train_fn=train, load_model=_load_model,
                              validate_kwargs=_validate_kwargs)
sample = script_utils.make_sample_command(SCRIPT)
reproduce = reproduce_lib.make_reproduce_command(SCRIPT, sample)


def main(argv=None):
  script_utils.run_cli(script_utils.subcommands(
    train=train, evaluation=evaluation, simple_eval=simple_eval, sample=sample, reproduce=reproduce), argv=argv,
    name='run_cifar.py')


if __name__ == '__main__':
  main()
