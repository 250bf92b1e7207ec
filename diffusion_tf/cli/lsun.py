"""run_lsun.py's commands (DDPM sec. 4, LSUN 256x256): `train` with the paper's hyper-parameters as its defaults on
StyleGAN2-format TFRecords, `evaluation` and `sample`, on the model of experiments/celebahq_lsun.py (the CelebA-HQ
model).
"""

import os

import tensorflow.compat.v1 as tf

from ..data import catalog
from ..experiments import celebahq_lsun
from ..runs import run_dir
from ..runs.paths import Paths
from ..evaluation import watcher
from . import commands, editing

Model = celebahq_lsun.Model  # the CelebA-HQ model (run_celebahq.py), on LSUN
MODEL_CONFIGS = celebahq_lsun.MODEL_CONFIGS
_load_model = celebahq_lsun.load_model
DATASETS = ('lsun',)


def _validate_kwargs(kwargs):
  celebahq_lsun.validate_kwargs(kwargs, datasets_allowed=DATASETS)


def _tfr_stats_name(tfr_file):
  """'church-r08' for .../church-r08.tfrecords: names the cached FID statistics of these TFRecords."""
  name = os.path.basename(tfr_file).split('.')[0].replace('*', 'x')
  return ''.join(c if (c.isalnum() or c in '._-') else '_' for c in name) or 'lsun'


# The original's defaults: the TFRecords of LSUN church inside the bucket (train), and the evaluation's own default.
TRAIN_TFR_FILE = 'tensorflow_datasets/lsun/church/church-r08.tfrecords'
EVAL_TFR_FILE = 'tensorflow_datasets/lsun/church-r08.tfrecords'
# The evaluation's reference statistics: a shuffled subset of this many training images (the original's, for memory).
EVAL_LIMIT_DATASET_SIZE = 30000


def train(
    exp_name, tpu_name=None, bucket_name_prefix=None, model_name='unet2d16b2c112244', dataset='lsun',
    optimizer='adam', total_bs=64, grad_clip=1., lr=2e-5, warmup=5000, num_diffusion_timesteps=1000,
    beta_start=0.0001, beta_end=0.02, beta_schedule='linear', loss_type='noisepred', dropout=0.0, randflip=1,
    block_size=1, tfr_file=TRAIN_TFR_FILE, log_dir='logs', warm_start_model_dir=None,
    # Not in the original: where and how long to run (cli/commands.py RUN_CONTROL_FLAGS).
    keep_checkpoint_max=2, region=None, model_dir=None, date_str='9999-99-99', max_steps=None,
    save_checkpoints_steps=None, save_checkpoints_secs=None, iterations_per_loop=1000, precision='float32',
    ema_decay=0.9999,
    resolution=None, num_gpus=None, num_cpu_replicas=None, log_every_steps=100, save_summary_steps=100, seed=None,
    max_train_secs=None, worker_timeout_secs=commands.DEFAULT_WORKER_TIMEOUT_SECS, worker_startup_secs=None,
    # Not in the original: memory levers (docs/gpu_tpu.md, "Memory levers").
    grad_accum_steps=1, recompute=False):
  """Train on the LSUN TFRecords --tfr_file (a path or glob; with --bucket_name_prefix, inside the bucket).

  --warm_start_model_dir initialises every variable from that run's latest checkpoint, as the original
  (vars_to_warm_start=['.*']): the weights, Adam's slots, the EMA shadows and the global step, so the step count
  and the learning-rate warm-up continue from there. Only when the new run has no checkpoint yet. Other flags as in
  run_celebahq.py train.
  """
  kwargs = dict(locals())
  commands.check_str('tfr_file', tfr_file)
  celebahq_lsun.validate_train_kwargs(kwargs, datasets_allowed=DATASETS)
  paths = Paths(bucket_name_prefix, region)
  warm_start_from = None
  if warm_start_model_dir is not None:
    ckpt = run_dir.resolve_checkpoint(paths.resolve(warm_start_model_dir))
    warm_start_from = tf.estimator.WarmStartSettings(ckpt_to_initialize_from=ckpt, vars_to_warm_start=['.*'])
  kwargs['tfr_path'] = paths.resolve(tfr_file)
  ds = catalog.get_dataset('lsun', tfr_file=kwargs['tfr_path'], resolution=resolution)
  commands.check_model_config(model_name, MODEL_CONFIGS, ds.image_size, block_size=block_size)
  commands.train_from_kwargs(kwargs, ds=ds, paths=paths, exp_name=celebahq_lsun.exp_name(kwargs),
                                 model_constructor=lambda: _load_model(kwargs, ds), warm_start_from=warm_start_from)


def evaluation(
    model_dir, tpu_name=None, bucket_name_prefix=None, once=False, dump_samples_only=False, total_bs=128,
    tfr_file=EVAL_TFR_FILE, samples_dir=None, num_inception_samples=2048,
    # Not in the original:
    load_ckpt=None, region=None, inception_graph=None, stats_dir=None, non_ema_pass=False, num_gpus=None,
    poll_secs=60, timeout_secs=None, seed=0, full_reference_sets=False, sampler='ddpm', num_inference_steps=None,
    skip_type=None, solver_order=None, precision=None):
  """Watch model_dir for new checkpoints and evaluate each: EMA samples, an image grid, IS and FID against the
  training TFRecords --tfr_file (2,048 samples in batches of 128; reference statistics of a seeded shuffled subset
  of 30,000 training images, as the original; every image with --full_reference_sets). If --tfr_file is left at
  the original's default and that file does not exist, the TFRecords the run trained on (kwargs.json) are used,
  and a line says so. --dump_samples_only writes the samples into --samples_dir (default model_dir/eval). Other
  flags (--sampler for a fast FID track among them) as in run_cifar.py evaluation.
  """
  paths, model_dir, kwargs = commands.load_run(SCRIPT, model_dir, bucket_name_prefix, region, command='evaluation',
                                               overrides=commands.model_flags(dict(precision=precision)))
  sampler_options = commands.eval_sampler_options(kwargs, sampler=sampler, num_inference_steps=num_inference_steps,
                                                  skip_type=skip_type, solver_order=solver_order)
  commands.check_str('tfr_file', tfr_file)
  resolved = paths.resolve(tfr_file)
  trained_on = kwargs.get('tfr_path', kwargs.get('tfr_file'))
  if tfr_file == EVAL_TFR_FILE and not tf.io.gfile.exists(resolved) and trained_on:
    print('--tfr_file default {} does not exist: using the TFRecords the run trained on, {}'.format(
      resolved, trained_on))
    resolved = trained_on
  ds = catalog.get_dataset('lsun', tfr_file=resolved, resolution=kwargs.get('image_size') or kwargs.get('resolution'))
  commands.evaluate_run(
    model_dir=model_dir, model_constructor=lambda: _load_model(kwargs, ds), ds=ds, paths=paths, tpu_name=tpu_name,
    once=once, dump_samples_only=dump_samples_only, total_bs=total_bs, load_ckpt=load_ckpt,
    num_inception_samples=num_inception_samples, inception_graph=inception_graph, non_ema_pass=non_ema_pass,
    num_gpus=num_gpus, poll_secs=poll_secs, timeout_secs=timeout_secs, seed=seed, stats_name=_tfr_stats_name(resolved),
    samples_dir=samples_dir, full_reference_sets=full_reference_sets, limit_dataset_size=EVAL_LIMIT_DATASET_SIZE,
    stats_dir=paths.resolve(stats_dir) or watcher.default_stats_dir('lsun', tfr_file=resolved),
    sampler_options=sampler_options)


SCRIPT = commands._Script(name='run_lsun.py', train_fn=train, load_model=_load_model,
                              validate_kwargs=_validate_kwargs,
                              model_configs=MODEL_CONFIGS)
sample = commands.make_sample_command(SCRIPT)
inpaint = editing.make_inpaint_command(SCRIPT)
img2img = editing.make_img2img_command(SCRIPT)
invert = editing.make_invert_command(SCRIPT)
