"""DDPM on LSUN 256x256 (Ho, Jain, Abbeel 2020, sec. 4): the CelebA-HQ setup (run_celebahq.py: 'unet2d16b2c112244',
GaussianDiffusion 'noisepred', batch 64, lr 2e-5, no dropout, random flips) on StyleGAN2-format TFRecords of LSUN
church / bedroom / cat (scripts/prepare_lsun.py writes them).

Subcommands (python3 scripts/run_lsun.py SUBCOMMAND --help): train, evaluation, sample (as in run_cifar.py).

The paper's run, on a Cloud TPU with the bucket gs://$BUCKET_PREFIX-$REGION:
  python3 scripts/run_lsun.py train --exp_name=church --tpu_name=$TPU_NAME --bucket_name_prefix=$BUCKET_PREFIX \\
    --tfr_file=tensorflow_datasets/lsun/church/church-r08.tfrecords
On this machine, with local files:
  python3 scripts/run_lsun.py train --exp_name=church --log_dir=logs --tfr_file=data/lsun/church-r08.tfrecords
  python3 scripts/run_lsun.py sample --model_dir=logs/9999-99-99/church_lsun_... --num_samples=16
--warm_start_model_dir=DIR initialises the U-Net weights from DIR's latest checkpoint (e.g. another LSUN run).
See docs/scripts.md for every flag.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.dirname(__file__)))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

import run_celebahq  # noqa: E402  (the CelebA-HQ model, training and evaluation code, shared)
from diffusion_tf.tpu_utils import datasets, script_utils, tpu_utils  # noqa: E402
from diffusion_tf.tpu_utils.paths import Paths  # noqa: E402

import tensorflow.compat.v1 as tf  # noqa: E402

Model = run_celebahq.Model
MODEL_CONFIGS = run_celebahq.MODEL_CONFIGS
_load_model = run_celebahq._load_model
DATASETS = ('lsun',)


def _validate_kwargs(kwargs):
  run_celebahq._validate_kwargs(kwargs, datasets_allowed=DATASETS)


def _tfr_stats_name(tfr_file):
  """'church-r08' for .../church-r08.tfrecords: names the cached FID statistics of these TFRecords."""
  name = os.path.basename(tfr_file).split('.')[0].replace('*', 'x')
  return ''.join(c if (c.isalnum() or c in '._-') else '_' for c in name) or 'lsun'


def train(
    exp_name, tpu_name=None, bucket_name_prefix=None, tfr_file=None, model_name='unet2d16b2c112244', dataset='lsun',
    optimizer='adam', total_bs=64, grad_clip=1., lr=2e-5, warmup=5000, num_diffusion_timesteps=1000,
    beta_start=0.0001, beta_end=0.02, beta_schedule='linear', loss_type='noisepred', dropout=0.0, randflip=1,
    block_size=1, log_dir='logs', keep_checkpoint_max=2, warm_start_model_dir=None,
    # Not in the original: where and how long to run.
    region=None, model_dir=None, date_str='9999-99-99', max_steps=None, save_checkpoints_steps=None,
    save_checkpoints_secs=None, iterations_per_loop=1000, ema_decay=0.9999, resolution=None, num_gpus=None,
    num_cpu_replicas=None, log_every_steps=100, save_summary_steps=100, seed=None, max_train_secs=None,
    worker_timeout_secs=tpu_utils.DEFAULT_WORKER_TIMEOUT_SECS):
  """Train on the LSUN TFRecords --tfr_file (a path or glob; with --bucket_name_prefix, inside the bucket).

  --warm_start_model_dir initialises the trainable weights from that run's latest checkpoint (the step count, Adam
  state and EMA start afresh; the EMA starts at the warm-started weights). Other flags as in run_celebahq.py train.
  """
  kwargs = dict(locals())
  if tfr_file is None:
    raise tpu_utils.UsageError('--tfr_file is required: a path or glob of StyleGAN2-format LSUN TFRecords, e.g. '
                               'lsun/church/church-r08.tfrecords')
  run_celebahq._validate_train_kwargs(kwargs, datasets_allowed=DATASETS)
  paths = Paths(bucket_name_prefix, region)
  warm_start_from = None
  if warm_start_model_dir is not None:
    ckpt = tpu_utils.resolve_checkpoint(paths.resolve(warm_start_model_dir))
    warm_start_from = tf.estimator.WarmStartSettings(ckpt_to_initialize_from=ckpt, vars_to_warm_start='.*')
  kwargs['tfr_path'] = paths.resolve(tfr_file)
  ds = datasets.get_dataset('lsun', tfr_file=kwargs['tfr_path'], resolution=resolution)
  run_celebahq.run_train(kwargs, ds, paths, warm_start_from=warm_start_from)


def evaluation(
    model_dir, tpu_name=None, bucket_name_prefix=None, once=False, dump_samples_only=False, total_bs=64,
    tfr_file=None, load_ckpt=None,
    # Not in the original:
    region=None, num_inception_samples=50000, inception_graph=None, stats_dir=None, non_ema_pass=False,
    num_gpus=None, poll_secs=60, timeout_secs=None, seed=0):
  """Watch model_dir for new checkpoints and evaluate each: EMA samples, an image grid, IS and FID against the
  training TFRecords (default: the run's --tfr_file from kwargs.json). Flags as in run_cifar.py evaluation.
  """
  paths = Paths(bucket_name_prefix, region)
  model_dir = paths.resolve(model_dir)
  kwargs = tpu_utils.load_train_kwargs(model_dir)
  _validate_kwargs(kwargs)
  # default: the TFRecords the run trained on (as resolved then, bucket included)
  tfr_file = paths.resolve(tfr_file) if tfr_file is not None else kwargs.get('tfr_path', kwargs.get('tfr_file'))
  ds = datasets.get_dataset('lsun', tfr_file=tfr_file, resolution=kwargs.get('image_size') or kwargs.get('resolution'))
  script_utils.evaluate_run(
    model_dir=model_dir, model_constructor=lambda: _load_model(kwargs, ds), ds=ds, paths=paths, tpu_name=tpu_name,
    once=once, dump_samples_only=dump_samples_only, total_bs=total_bs, load_ckpt=load_ckpt,
    num_inception_samples=num_inception_samples, inception_graph=inception_graph, non_ema_pass=non_ema_pass,
    num_gpus=num_gpus, poll_secs=poll_secs, timeout_secs=timeout_secs, seed=seed, stats_name=_tfr_stats_name(tfr_file),
    stats_dir=paths.resolve(stats_dir) or tpu_utils.default_stats_dir('lsun', tfr_file=tfr_file))


SCRIPT = script_utils._Script(name='run_lsun.py', train_fn=train, load_model=_load_model,
                              validate_kwargs=_validate_kwargs)
sample = script_utils.make_sample_command(SCRIPT)


def main(argv=None):
  script_utils.run_cli(script_utils.subcommands(train=train, evaluation=evaluation, sample=sample), argv=argv,
                       name='run_lsun.py')


if __name__ == '__main__':
  main()
