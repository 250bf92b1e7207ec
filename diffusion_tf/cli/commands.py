"""What the three scripts' commands (cli/cifar10.py, celebahq.py, lsun.py) share: the `sample` subcommand, and
`train` and `evaluation` once a script has checked its flags and found its data. The library never imports it.
"""

import collections
import os
import sys

import numpy as np

from .. import samplers
from ..errors import UsageError
from ..utils import save_npz_atomic, to_uint8, write_json_atomic  # noqa: F401 (also the scripts' names)
from ..data import catalog as datasets
from ..runs import devices, run_dir
from ..evaluation import watcher as evaluation, simple_eval as simple_eval_worker
from ..experiments import model_source
from ..generate import dump, shards as sample_shards
from ..train import loop as training
from .runner import extra_flags, quiet_tensorflow, run_cli, subcommands  # noqa: F401 (the scripts' names)
from ..checks import (  # noqa: F401 (the scripts' names)
  OPTIMIZERS, check_bool, check_choice, check_int, check_known_flags, check_model_config, check_number, check_str,
  check_train_flags, default_kwargs, warmup_warning)
from ..data.catalog import IMAGE_SIZES, DatasetInfo, image_size_of  # noqa: F401 (the scripts' names)
from ..diffusion_utils_2 import get_beta_schedule
from ..sampler_schedules import DEFAULT_SKIP_TYPES, SAMPLERS, SOLVER_ORDERS, check_solver_order
from ..runs.paths import Paths
from ..generate.seeded import SeededNoise, build_seeded_samples, run_seeded  # noqa: F401 (the scripts' names)
from ..train.loop import DEFAULT_WORKER_TIMEOUT_SECS  # noqa: F401 (the scripts' names)

OUTPUT_TYPES = dump.OUTPUT_TYPES
# The sampler flags of every script's `evaluation` (eval_sampler_options)
EVAL_SAMPLER_FLAGS = ('sampler', 'num_inference_steps', 'skip_type', 'solver_order')
# What --help calls the training kwargs that the commands reading a checkpoint take besides their own flags.
TRAIN_KWARGS_ABOUT = 'training kwargs of {} train, for a checkpoint without kwargs.json'

# The run-control flags that every script's `train` takes after the original's own (where to run, how long, how often
# to save, which devices), with their defaults. Each train() spells them out in its signature, since fire reads the
# signature and it is the command's documentation; tests/cli/test_recipes.py keeps the three equal to this table.
# A recipe may set another default for the paper's run (run_cifar.py: iterations_per_loop=2000, the original's).
RUN_CONTROL_FLAGS = collections.OrderedDict([
  ('keep_checkpoint_max', 2), ('region', None), ('model_dir', None), ('date_str', '9999-99-99'), ('max_steps', None),
  ('save_checkpoints_steps', None), ('save_checkpoints_secs', None), ('iterations_per_loop', 1000),
  ('precision', 'float32'),
  ('ema_decay', 0.9999), ('resolution', None), ('num_gpus', None), ('num_cpu_replicas', None),
  ('log_every_steps', 100), ('save_summary_steps', 100), ('seed', None), ('max_train_secs', None),
  ('worker_timeout_secs', DEFAULT_WORKER_TIMEOUT_SECS), ('worker_startup_secs', None), ('grad_accum_steps', 1),
  ('recompute', False)])


# ---------------------------------------------------------------------------------------------------------------
# The `sample` subcommand

class _Script:
  """What the commands that read a checkpoint need from a script: its train() (for defaults and accepted keys), how
  to build its Model from kwargs, how to validate kwargs, and its U-Net configurations by name."""

  def __init__(self, *, name, train_fn, load_model, validate_kwargs, model_configs):
    self.name, self.train_fn, self.load_model, self.validate_kwargs = name, train_fn, load_model, validate_kwargs
    self.model_configs = model_configs


def _check_sampler_flags(*, sampler, num_inference_steps, eta, use_clipped_model_output, skip_prk_steps, skip_type,
                         solver_order, progressive):
  """The sampler's flags checked on their own (before the model's T is known); returns them normalized: skip_type
  None becomes the sampler's default (uniform for ddpm / ddim / pndm, as before the solvers; linspace for the
  solvers, as their diffusers schedulers) and solver_order None its default (2) where the sampler has orders."""
  check_choice('sampler', sampler, SAMPLERS)
  check_int('num_inference_steps', num_inference_steps, allow_none=True)
  check_number('eta', eta, low=0.)
  use_clipped_model_output = check_bool('use_clipped_model_output', use_clipped_model_output)
  skip_prk_steps = check_bool('skip_prk_steps', skip_prk_steps)
  if skip_type is not None:
    check_choice('skip_type', skip_type, samplers.SKIP_TYPES)
  check_int('solver_order', solver_order, allow_none=True)
  order_owners = ', '.join(SOLVER_ORDERS)
  for flag, value, set_, owner in [('eta', eta, eta != 0, 'ddim'),
                                   ('use_clipped_model_output', use_clipped_model_output, use_clipped_model_output,
                                    'ddim'),
                                   ('skip_prk_steps', skip_prk_steps, skip_prk_steps, 'pndm'),
                                   ('solver_order', solver_order, solver_order is not None, order_owners)]:
    if set_ and sampler not in owner.split(', '):
      raise UsageError('--{}={} does not apply to --sampler={}; expected it only with sampler {}'.format(
        flag, value, sampler, owner))
  if solver_order is not None and solver_order not in SOLVER_ORDERS[sampler]:
    raise UsageError('--solver_order={} with --sampler={}; expected one of {}'.format(
      solver_order, sampler, ', '.join(map(str, SOLVER_ORDERS[sampler]))))
  skip_type = DEFAULT_SKIP_TYPES[sampler] if skip_type is None else skip_type
  if progressive and (sampler != 'ddpm' or num_inference_steps is not None or skip_type != 'uniform'):
    raise UsageError('--progressive uses the original ancestral sampler; drop --sampler/--num_inference_steps/'
                     '--skip_type')
  return dict(sampler=sampler, num_inference_steps=num_inference_steps, eta=eta,
              use_clipped_model_output=use_clipped_model_output, skip_prk_steps=skip_prk_steps, skip_type=skip_type,
              solver_order=check_solver_order(sampler, solver_order))


def _resolve_steps(kwargs, options, num_timesteps=None):
  """The sampler's number of network calls for a model of training kwargs `kwargs` (T = num_diffusion_timesteps):
  --num_inference_steps, or for the fast samplers their default (samplers.resolve_sampler_options); None for the
  original ddpm sampler over all T steps. A combination the model cannot sample (a solver on an x_0- or
  x_{t-1}-predicting network, repeated timesteps) is refused here, before any graph is built. num_timesteps: the
  sampler runs over only the first that many timesteps of the model's schedule (img2img's SDEdit cut)."""
  T = int(kwargs['num_diffusion_timesteps'])
  betas = get_beta_schedule(kwargs['beta_schedule'], beta_start=kwargs['beta_start'], beta_end=kwargs['beta_end'],
                            num_diffusion_timesteps=T)
  if num_timesteps is not None:
    T, betas = num_timesteps, betas[:num_timesteps]
  if options['num_inference_steps'] is not None and options['num_inference_steps'] > T:
    raise UsageError('num_inference_steps={} exceeds the model\'s num_diffusion_timesteps={}'.format(
      options['num_inference_steps'], T))
  resolved = samplers.resolve_sampler_options(  # raises ValueError on a bad combination
    T, model_mean_type=kwargs.get('model_mean_type', 'eps'), alphas_cumprod=np.cumprod(1. - betas), **options)
  return options['num_inference_steps'] if options['sampler'] == 'ddpm' else resolved


def make_sample_command(script):
  """The `sample` subcommand of a script (see its docstring)."""

  def sample(model_dir=None, checkpoint=None, out_dir=None, num_samples=64, batch_size=64, sampler='ddpm',
             num_inference_steps=None, eta=0., use_clipped_model_output=False, skip_prk_steps=False, seed=0,
             output_type='npz', ema=True, progressive=False, bucket_name_prefix=None, region=None, num_gpus=None,
             skip_type=None, shard=None, solver_order=None, **overrides):
    """Draw samples from a checkpoint (EMA weights by default) and write a PNG grid plus the images.

    Outputs in --out_dir (default <model_dir>/samples/<checkpoint>_<sampler settings>_<ema>_seed<seed>_n<N>, the
    settings e.g. ddim50_eta0_quad or dpmsolver++10_order2_linspace):
      grid.png (up to 100 samples), samples.npz (arr_0: uint8 [N, H, W, 3]) or images/000000.png ...
      (--output_type=png), info.json (the settings, checkpoint and step). With --progressive: progressive.png
      (one row per sample: the x_0 predictions along the chain, then the sample) and progressive.npz.
    Batches are written as they finish; an interrupted run continues where it stopped. Nothing is overwritten, and
    one dump at a time writes into an --out_dir (<out_dir>/sample.lock; a second is refused naming the holder).

    Args:
      model_dir: a training run's directory (kwargs.json + checkpoints); or give --checkpoint.
      checkpoint: a checkpoint prefix (model.ckpt-N) or directory; default: the latest in model_dir. Released or
        converted checkpoints without kwargs.json use this script's train() defaults, changeable with flags such as
        --model_name, --dataset, --num_diffusion_timesteps; a converted one's U-Net comes from the
        unet_hparams.json beside it (scripts/convert_diffusers_checkpoint.py to_tf).
      sampler: ddpm (the original ancestral sampler over all T steps; respaced to --num_inference_steps if given),
        ddim, pndm, or the few-step solvers dpmsolver++, sde-dpmsolver++, unipc, euler, euler_ancestral, heun
        (docs/samplers.md; default 50 steps, or T if smaller).
      num_inference_steps: number of steps (1..T); one network call each, but heun's two per step but the last and
        pndm's warm-up.
      eta: DDIM noise (0: deterministic; 1 with all steps: ancestral).
      use_clipped_model_output: DDIM: recompute eps from the clipped x_0 prediction.
      skip_prk_steps: PNDM: skip the Runge-Kutta warm-up (pure PLMS).
      skip_type: which timesteps the steps visit: uniform (every T/S), quad (quadratic spacing, denser near t = 0,
        as in the DDIM paper's CIFAR-10 table), linspace, trailing or karras (diffusers' spacings). Default: the
        sampler's (uniform for ddpm / ddim / pndm, linspace for the solvers, as their diffusers schedulers).
      solver_order: dpmsolver++ / unipc: 1, 2 (default) or 3; sde-dpmsolver++: 1 or 2.
      precision: the type the U-Net computes in (float32, bfloat16, float16; default: the run's, float32 for a
        released checkpoint); the checkpoint's float32 weights are cast at use (docs/gpu_tpu.md).
      seed: same seed and batch size give the same images.
      output_type: npz (one uint8 .npz) or png (one PNG per sample).
      ema: use the EMA weights (--noema: the raw weights).
      progressive: write the x_0-prediction sequence of one batch instead (original ancestral sampler).
      shard: i/n draws only shard i of n of the dump (its batches b with b % n == i; default out_dir name ends in
        _shard<i>of<n>); merge the n shard directories with scripts/merge_samples.py into the very samples.npz that
        one run without --shard gives. Needs --output_type=npz.
    """
    check_int('num_samples', num_samples)
    check_int('batch_size', batch_size)
    check_int('seed', seed, minimum=0)
    check_choice('output_type', output_type, OUTPUT_TYPES)
    ema, progressive = check_bool('ema', ema), check_bool('progressive', progressive)
    options = _check_sampler_flags(sampler=sampler, num_inference_steps=num_inference_steps, eta=eta,
                                   use_clipped_model_output=use_clipped_model_output, skip_prk_steps=skip_prk_steps,
                                   skip_type=skip_type, solver_order=solver_order, progressive=progressive)
    shard = sample_shards.parse_shard(shard)
    if shard and (progressive or output_type != 'npz'):
      raise UsageError('--shard={}/{} with {}; expected --output_type=npz and no --progressive (shards are merged as '
                       '.npz)'.format(shard[0], shard[1], '--progressive' if progressive else '--output_type=png'))
    if model_dir is None and checkpoint is None:
      raise UsageError('give --model_dir (a training run) or --checkpoint (a checkpoint prefix or directory)')
    paths = Paths(bucket_name_prefix, region)
    model_dir, checkpoint, out_dir = paths.resolve(model_dir), paths.resolve(checkpoint), paths.resolve(out_dir)
    source = model_source.resolve_model_source(script, model_dir, checkpoint, overrides, command='sample')
    options['num_inference_steps'] = _resolve_steps(source.kwargs, options)
    out_dir = out_dir or dump.default_out_dir(
      model_dir or os.path.dirname(source.checkpoint), source.checkpoint, ema=ema, seed=seed,
      num_samples=num_samples, progressive=progressive, shard=shard, **options)
    sample_dump = dump.SampleDump(
      source, script.load_model, out_dir, num_samples=num_samples, batch_size=batch_size, seed=seed, ema=ema,
      output_type=output_type, progressive=progressive, shard=shard, overrides=overrides,
      dist=devices.choose_distribution(num_gpus=num_gpus), **options)
    sample_dump.run()

  sample.__doc__ = sample.__doc__.replace('this script', script.name)
  return extra_flags(sample, default_kwargs(script.train_fn), TRAIN_KWARGS_ABOUT.format(script.name))


# ---------------------------------------------------------------------------------------------------------------
# `train` and `evaluation`: what the three scripts share once their own flags are checked and their data is found

def train_from_kwargs(kwargs, *, ds, paths, exp_name, model_constructor, warm_start_from=None):
  """training.run_training with a script's checked train() kwargs; `exp_name` is the run's full name, to which a
  non-default EMA decay and image size are appended. kwargs (with the image size) become the run's kwargs.json."""
  if kwargs.get('bucket_name_prefix') is not None and kwargs.get('tpu_name') is None:
    print('--bucket_name_prefix without --tpu_name: training on this machine\'s devices with paths in {} (the '
          'original required a TPU)'.format(paths.bucket))
  kwargs['image_size'] = ds.image_size
  warning = warmup_warning(kwargs['warmup'], kwargs['max_steps'], kwargs['lr'])
  if warning:
    print(warning, file=sys.stderr)
  if kwargs['ema_decay'] != 0.9999:
    exp_name += '_ema{}'.format(kwargs['ema_decay'])
  if kwargs.get('resolution') is not None:
    exp_name += '_res{}'.format(kwargs['resolution'])
  return training.run_training(
    date_str=kwargs['date_str'],
    exp_name=exp_name,
    model_dir=paths.resolve(kwargs['model_dir']),
    model_constructor=model_constructor,
    optimizer=kwargs['optimizer'],
    total_bs=kwargs['total_bs'],
    lr=kwargs['lr'],
    warmup=kwargs['warmup'],
    grad_clip=kwargs['grad_clip'],
    ema_decay=kwargs['ema_decay'],
    train_input_fn=ds.train_input_fn,
    tpu=kwargs['tpu_name'],
    log_dir=paths.resolve(kwargs['log_dir']),
    dump_kwargs=kwargs,
    iterations_per_loop=kwargs['iterations_per_loop'],
    keep_checkpoint_max=kwargs['keep_checkpoint_max'],
    max_steps=kwargs['max_steps'] or int(1e10),
    save_checkpoints_steps=kwargs['save_checkpoints_steps'],
    save_checkpoints_secs=kwargs['save_checkpoints_secs'],
    save_summary_steps=kwargs['save_summary_steps'],
    log_every_steps=kwargs['log_every_steps'],
    num_gpus=kwargs['num_gpus'],
    num_cpu_replicas=kwargs['num_cpu_replicas'],
    seed=kwargs['seed'],
    max_train_secs=kwargs['max_train_secs'],
    worker_timeout_secs=kwargs['worker_timeout_secs'],
    worker_startup_secs=kwargs['worker_startup_secs'],
    grad_accum_steps=kwargs['grad_accum_steps'],
    warm_start_from=warm_start_from)


def load_run(script, model_dir, bucket_name_prefix, region, *, command, overrides=None):
  """(paths, model_dir, kwargs) of the run an `evaluation` or `simple_eval` command reads: its directory resolved
  (inside the bucket with --bucket_name_prefix) and its kwargs (its kwargs.json, or a converted checkpoint's
  unet_hparams.json: experiments.model_source) with the flags `overrides`, checked by the script's
  validate_kwargs."""
  paths = Paths(bucket_name_prefix, region)
  model_dir = paths.resolve(model_dir)
  source = model_source.resolve_model_source(script, model_dir, None, overrides or {}, command=command,
                                             allow_defaults=False, need_checkpoint=False)
  return paths, model_dir, source.kwargs


def eval_sampler_options(kwargs, *, sampler, num_inference_steps, skip_type, solver_order):
  """The sampler of `evaluation` (--sampler, --num_inference_steps, --skip_type, --solver_order), checked against
  the run's training kwargs before anything is loaded: None for the original's ancestral sampler over all T steps
  (the default), else the keyword arguments of Model.sampler_samples_fn with the defaults filled in."""
  options = _check_sampler_flags(sampler=sampler, num_inference_steps=num_inference_steps, eta=0.,
                                 use_clipped_model_output=False, skip_prk_steps=False, skip_type=skip_type,
                                 solver_order=solver_order, progressive=False)
  if sampler == 'ddpm' and num_inference_steps is None and options['skip_type'] == 'uniform':
    return None
  options['num_inference_steps'] = _resolve_steps(kwargs, options) or int(kwargs['num_diffusion_timesteps'])
  return options


def evaluate_run(*, model_dir, model_constructor, ds, paths, tpu_name, once, dump_samples_only, total_bs, load_ckpt,
                 num_inception_samples, inception_graph, stats_dir, non_ema_pass, num_gpus, poll_secs, timeout_secs,
                 seed, stats_name=None, samples_dir=None, full_reference_sets=False, limit_dataset_size=0,
                 sampler_options=None):
  """A script's `evaluation` once its model_dir, dataset and statistics directory are known: evaluation.EvalWorker.

  load_ckpt is relative to model_dir as in the original (model.ckpt-N), or a prefix or directory; samples_dir
  receives --dump_samples_only's .npz; full_reference_sets: reference statistics of every image of the splits
  instead of the original's drop-remainder batches (and limit_dataset_size); sampler_options: eval_sampler_options.
  """
  check_bool('full_reference_sets', full_reference_sets)
  if load_ckpt is not None:
    load_ckpt = run_dir.resolve_load_ckpt(model_dir, load_ckpt, paths.resolve)
  worker = evaluation.EvalWorker(
    tpu_name=tpu_name,
    model_constructor=model_constructor,
    total_bs=total_bs,
    num_inception_samples=num_inception_samples,
    inception_bs=total_bs,
    dataset=ds,
    limit_dataset_size=limit_dataset_size,
    inception_graph=inception_graph,
    stats_dir=stats_dir,
    stats_name=stats_name,
    num_gpus=num_gpus,
    reference='full' if full_reference_sets else 'original',
    sampler_options=sampler_options)
  worker.run(logdir=model_dir, once=once, skip_non_ema_pass=not non_ema_pass, dump_samples_only=dump_samples_only,
             load_ckpt=load_ckpt, samples_dir=paths.resolve(samples_dir), poll_secs=poll_secs,
             timeout_secs=timeout_secs, seed=seed)


def simple_eval_run(*, model_dir, model_constructor, ds, paths, tpu_name, mode, load_ckpt, total_bs, ema,
                    max_batches, num_gpus, seed, num_samples):
  """A script's `simple_eval` once its run and dataset are known: simple_eval_worker.SimpleEvalWorker on one
  checkpoint (load_ckpt relative to model_dir as in the original, a prefix, or None for the latest)."""
  worker = simple_eval_worker.SimpleEvalWorker(
    tpu_name=tpu_name,
    model_constructor=model_constructor,
    total_bs=total_bs,
    dataset=ds,
    num_gpus=num_gpus)
  worker.run(mode=mode, logdir=model_dir, load_ckpt=run_dir.resolve_load_ckpt(model_dir, load_ckpt, paths.resolve),
             ema=ema, max_batches=max_batches, seed=seed, num_samples=num_samples)


# ---------------------------------------------------------------------------------------------------------------
# `evaluation` and `simple_eval` of a run trained on a tfds data set (run_cifar.py, run_celebahq.py): the scripts
# pass their flags (dict(locals())) and their _Script

def model_flags(flags):
  """The training kwargs that `evaluation` / `simple_eval` flags override: --dataset (which data a converted
  checkpoint, without kwargs.json, is measured on) and --precision (the type the U-Net samples in), when given."""
  return {k: flags[k] for k in ('dataset', 'precision') if flags.get(k) is not None}


def evaluation_from_flags(script, flags):
  """The `evaluation` command of a script whose runs read tfds data (tfds_data_dir): flags are its keyword
  arguments; reference statistics default to <tfds_data_dir>/fid_stats."""
  paths, model_dir, kwargs = load_run(script, flags['model_dir'], flags['bucket_name_prefix'], flags['region'],
                                      command='evaluation', overrides=model_flags(flags))
  sampler_options = eval_sampler_options(kwargs, **{k: flags[k] for k in EVAL_SAMPLER_FLAGS})
  tfds_data_dir = paths.resolve(flags['tfds_data_dir'])
  ds = datasets.get_dataset(kwargs['dataset'], tfds_data_dir=tfds_data_dir, resolution=kwargs.get('resolution'),
                            **datasets.folder_args(kwargs, paths.resolve(flags.get('data_dir'))))
  stats_dir = paths.resolve(flags['stats_dir']) or evaluation.default_stats_dir(kwargs['dataset'],
                                                                                tfds_data_dir=tfds_data_dir)
  evaluate_run(
    model_dir=model_dir, model_constructor=lambda: script.load_model(kwargs, ds), ds=ds, paths=paths,
    stats_dir=stats_dir, sampler_options=sampler_options, **{k: flags[k] for k in (
      'tpu_name', 'once', 'dump_samples_only', 'total_bs', 'load_ckpt', 'num_inception_samples', 'inception_graph',
      'non_ema_pass', 'num_gpus', 'poll_secs', 'timeout_secs', 'seed', 'samples_dir', 'full_reference_sets')})


def simple_eval_from_flags(script, flags):
  """The `simple_eval` command of a script whose runs read tfds data: flags are its keyword arguments."""
  paths, model_dir, kwargs = load_run(script, flags['model_dir'], flags['bucket_name_prefix'], flags['region'],
                                      command='simple_eval', overrides=model_flags(flags))
  ds = datasets.get_dataset(kwargs['dataset'], tfds_data_dir=paths.resolve(flags['tfds_data_dir']),
                            resolution=kwargs.get('resolution'),
                            **datasets.folder_args(kwargs, paths.resolve(flags.get('data_dir'))))
  simple_eval_run(
    model_dir=model_dir, model_constructor=lambda: script.load_model(kwargs, ds), ds=ds, paths=paths,
    **{k: flags[k] for k in ('tpu_name', 'mode', 'load_ckpt', 'total_bs', 'ema', 'max_batches', 'num_gpus', 'seed',
                             'num_samples')})
