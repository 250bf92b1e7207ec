"""run_celebahq.py's commands (DDPM sec. 4, CelebA-HQ 256x256): `train` with the paper's hyper-parameters as its
defaults, `evaluation`, `sample`, and the paper's editing figures `interpolate` and `denoising_trajectory`, on the
model of experiments/celebahq_lsun.py.
"""

from ..data import catalog
from ..experiments import celebahq_lsun
from ..runs.paths import Paths
from . import commands, editing

MODEL_CONFIGS = celebahq_lsun.MODEL_CONFIGS
Model = celebahq_lsun.Model
_load_model = celebahq_lsun.load_model
_validate_kwargs = celebahq_lsun.validate_kwargs


def train(
    exp_name, tpu_name=None, bucket_name_prefix=None, model_name='unet2d16b2c112244', dataset='celebahq256',
    optimizer='adam', total_bs=64, grad_clip=1., lr=2e-5, warmup=5000, num_diffusion_timesteps=1000,
    beta_start=0.0001, beta_end=0.02, beta_schedule='linear', loss_type='noisepred', dropout=0.0, randflip=1,
    block_size=1, tfds_data_dir='tensorflow_datasets', log_dir='logs',
    # Not in the original: a folder of one's own images (data/folder.py FOLDER_FLAGS).
    data_dir=None, eval_fraction=0.05,
    # Not in the original: where and how long to run (cli/commands.py RUN_CONTROL_FLAGS).
    keep_checkpoint_max=2, region=None, model_dir=None, date_str='9999-99-99', max_steps=None,
    save_checkpoints_steps=None, save_checkpoints_secs=None, iterations_per_loop=1000, precision='float32',
    ema_decay=0.9999,
    resolution=None, num_gpus=None, num_cpu_replicas=None, log_every_steps=100, save_summary_steps=100, seed=None,
    max_train_secs=None, worker_timeout_secs=commands.DEFAULT_WORKER_TIMEOUT_SECS, worker_startup_secs=None,
    # Not in the original: memory levers (docs/gpu_tpu.md, "Memory levers").
    grad_accum_steps=1, recompute=False):
  """Train a diffusion model; the defaults are the paper's CelebA-HQ 256 run.

  The run's directory is {log_dir}/{date_str}/{exp_name}_{dataset}_{model_name}_... (or --model_dir); with
  --bucket_name_prefix, log_dir and tfds_data_dir are inside gs://{bucket_name_prefix}-{region}. An existing run
  directory is resumed from its latest checkpoint. --block_size=b applies space_to_depth(b) before the U-Net and
  depth_to_space after it. --dataset=folder --data_dir=PATH --resolution=R [--eval_fraction]: a folder of one's own
  images, with the model of that size unless --model_name is given, as in run_cifar.py train. See run_cifar.py train
  for the run-control flags and the memory levers --grad_accum_steps and --recompute.
  """
  kwargs = dict(locals())
  celebahq_lsun.validate_train_kwargs(kwargs)
  paths = Paths(bucket_name_prefix, region)
  ds = catalog.get_dataset(dataset, tfds_data_dir=paths.resolve(tfds_data_dir), resolution=resolution,
                           **catalog.folder_args(kwargs))
  commands.check_model_config(kwargs['model_name'], MODEL_CONFIGS, ds.image_size, block_size=block_size)
  commands.train_from_kwargs(kwargs, ds=ds, paths=paths, exp_name=celebahq_lsun.exp_name(kwargs),
                                 model_constructor=lambda: _load_model(kwargs, ds))


def evaluation(
    model_dir, tpu_name=None, bucket_name_prefix=None, once=False, dump_samples_only=False, total_bs=128,
    tfds_data_dir='tensorflow_datasets',
    # Not in the original:
    load_ckpt=None, region=None, num_inception_samples=2048, inception_graph=None, stats_dir=None,
    non_ema_pass=False, num_gpus=None, poll_secs=60, timeout_secs=None, seed=0, samples_dir=None,
    full_reference_sets=False, data_dir=None, sampler='ddpm', num_inference_steps=None, skip_type=None,
    solver_order=None, precision=None):
  """Watch model_dir for new checkpoints and evaluate each: EMA samples, an image grid, IS and FID against the
  training set (CelebA-HQ has no test split) on 2,048 samples in batches of 128, as the original. Flags (--sampler
  for a fast FID track among them) as in run_cifar.py evaluation.
  """
  commands.evaluation_from_flags(SCRIPT, dict(locals()))


SCRIPT = commands._Script(name='run_celebahq.py', train_fn=train, load_model=_load_model,
                              validate_kwargs=_validate_kwargs,
                              model_configs=MODEL_CONFIGS)
sample = commands.make_sample_command(SCRIPT)
interpolate = editing.make_interpolate_command(SCRIPT)
denoising_trajectory = editing.make_trajectory_command(SCRIPT)
inpaint = editing.make_inpaint_command(SCRIPT)
img2img = editing.make_img2img_command(SCRIPT)
invert = editing.make_invert_command(SCRIPT)
