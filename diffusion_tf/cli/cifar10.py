"""run_cifar.py's commands (DDPM sec. 4, CIFAR-10): `train` with the paper's hyper-parameters as its defaults,
`evaluation`, `simple_eval`, `sample` and `reproduce`, on the model of cifar10.py. They live in the package, as
improved-diffusion keeps its defaults in script_util.py, so that scripts/run_cifar.py and scripts/demo.py (the same
code path on the offline digits) both run them without one script importing another.
"""

from ..data import catalog
from ..experiments import cifar10
from ..experiments.cifar10 import DATASETS, MODEL_CONFIGS, Model  # noqa: F401 (run_cifar.py's names)
from ..runs.paths import Paths
from . import commands, editing, reproduce as reproduce_command

_load_model = cifar10.load_model
_validate_kwargs = cifar10.validate_kwargs


def train(
    exp_name, tpu_name=None, bucket_name_prefix=None, model_name='unet2d16b2', dataset='cifar10', optimizer='adam',
    total_bs=128, grad_clip=1., lr=2e-4, warmup=5000, num_diffusion_timesteps=1000, beta_start=0.0001,
    beta_end=0.02, beta_schedule='linear', model_mean_type='eps', model_var_type='fixedlarge', loss_type='mse',
    dropout=0.1, randflip=1, tfds_data_dir='tensorflow_datasets', log_dir='logs', keep_checkpoint_max=2,
    # Not in the original: a folder of one's own images (data/folder.py FOLDER_FLAGS).
    data_dir=None, eval_fraction=0.05,
    # Not in the original: where and how long to run (cli/commands.py RUN_CONTROL_FLAGS).
    region=None, model_dir=None, date_str='9999-99-99', max_steps=None, save_checkpoints_steps=None,
    save_checkpoints_secs=None, iterations_per_loop=2000, precision='float32', ema_decay=0.9999, resolution=None,
    num_gpus=None,
    num_cpu_replicas=None, log_every_steps=100, save_summary_steps=100, seed=None, max_train_secs=None,
    worker_timeout_secs=commands.DEFAULT_WORKER_TIMEOUT_SECS, worker_startup_secs=None,
    # Not in the original: memory levers (docs/gpu_tpu.md, "Memory levers").
    grad_accum_steps=1, recompute=False):
  """Train a diffusion model; the defaults are the paper's CIFAR-10 run.

  The run's directory is {log_dir}/{date_str}/{exp_name}_{dataset}_{model_name}_... (or --model_dir); with
  --bucket_name_prefix, log_dir and tfds_data_dir are inside gs://{bucket_name_prefix}-{region}. An existing run
  directory is resumed from its latest checkpoint. --tpu_name trains on that Cloud TPU, otherwise on this machine's
  GPUs (all visible, or --num_gpus) or CPU; with a cluster in $TF_CONFIG, on all its workers, each running this
  same command (docs/distributed.md; --worker_timeout_secs bounds the wait for a lost worker, --worker_startup_secs
  that for the first step). Checkpoints every --save_checkpoints_steps steps or --save_checkpoints_secs seconds
  (default 1600 s), keeping --keep_checkpoint_max; --max_steps bounds the run.
  Memory levers (docs/gpu_tpu.md): --grad_accum_steps=K computes each update's batch in K microbatches one after
  another and sums their gradients; --total_bs stays the batch of one update (the paper's 128), so the same flags
  give the same training in less memory (each device holds total_bs / (devices x K) examples at a time; diffusers'
  --train_batch_size is that microbatch instead). --recompute keeps only the inputs of each residual block for the
  backward pass and computes the block again there (gradient checkpointing: less memory, for a second forward pass
  of the residual blocks, about a third more compute per step).
  Neither changes the checkpoints, so a run can resume with or without them.
  model_name: unet2d16b2 (the paper's), demo or tiny (small configs), or a model of another size (models/configs.py);
  dataset: cifar10, digits (offline) or folder: every png/jpg/webp image under --data_dir, centre-cropped and resized
  to --resolution, which picks the U-Net unless --model_name is given (32: unet2d16b2, 64: unet2d16b2c1234, 128:
  unet2d16b2c11234, 256: unet2d16b2c112244), with --eval_fraction of them (by a hash of their path) held out as the
  test split of evaluation, simple_eval and reproduce (docs/scripts.md, "Training on your own images").
  precision: the type the U-Net computes in, float32 (the original's), bfloat16 or float16 (with dynamic loss
  scaling; one device); the weights, the optimizer's slots, the EMA and the checkpoints stay float32, so a run may
  change it when resumed (docs/gpu_tpu.md).
  """
  kwargs = dict(locals())
  cifar10.validate_train_kwargs(kwargs)
  paths = Paths(bucket_name_prefix, region)
  ds = catalog.get_dataset(dataset, tfds_data_dir=paths.resolve(tfds_data_dir), resolution=resolution,
                           **catalog.folder_args(kwargs))
  commands.check_model_config(kwargs['model_name'], MODEL_CONFIGS, ds.image_size)
  commands.train_from_kwargs(kwargs, ds=ds, paths=paths, exp_name=cifar10.exp_name(kwargs),
                             model_constructor=lambda: _load_model(kwargs, ds))


def evaluation(  # evaluation loop for use during training
    model_dir, tpu_name=None, bucket_name_prefix=None, once=False, dump_samples_only=False, total_bs=256,
    tfds_data_dir='tensorflow_datasets', load_ckpt=None,
    # Not in the original:
    region=None, num_inception_samples=50000, inception_graph=None, stats_dir=None, non_ema_pass=False,
    num_gpus=None, poll_secs=60, timeout_secs=None, seed=0, samples_dir=None, full_reference_sets=False,
    data_dir=None, dataset=None, sampler='ddpm', num_inference_steps=None, skip_type=None, solver_order=None,
    precision=None):
  """Watch model_dir for new checkpoints; for each, draw num_inception_samples samples with the EMA weights, write an
  image grid, and the original's metrics: the Inception Score of all samples (eval_ema/samples/inception50000), FID
  against the training set (.../trainfid50000) and the test set (.../fid50000), and beside them the paper's
  10-split IS (.../inception50000_10splits, _std; fewer than 10 samples: one split each, .../inception8_8splits)
  (TensorBoard under model_dir/eval, and a JSON per checkpoint).
  Reference statistics: the images the original measured (drop-remainder batches of total_bs: 49,920 training and
  9,984 test images at 256), or every image with --full_reference_sets; the JSON records which.
  --once evaluates the latest checkpoint (or --load_ckpt: model.ckpt-N in model_dir, or a path) and stops;
  --dump_samples_only writes the samples (.npz, arr_0 uint8; into --samples_dir if given) without metrics;
  --non_ema_pass also evaluates the raw weights (prefix eval/). The Inception graph comes from --inception_graph or
  $DIFFUSION_TF_INCEPTION_GRAPH; real-data statistics are cached in --stats_dir (default:
  <tfds_data_dir>/fid_stats). --timeout_secs stops the watch after that long without a new checkpoint. A run on a
  folder of images reads the folder it trained on (or --data_dir, if it moved); its statistics are cached in
  $DIFFUSION_TF_CACHE/fid_stats (or --stats_dir) under a name that changes with the folder's images.
  model_dir may also be a converted checkpoint's directory (scripts/convert_diffusers_checkpoint.py to_tf: its
  unet_hparams.json gives the U-Net); --dataset then says which data it is measured on (default cifar10).
  --sampler (with --num_inference_steps, --skip_type, --solver_order as for `sample`) measures the samples of a
  fast sampler instead of the original's ancestral DDPM over all T steps (the default): a cheap FID track during
  training, whose tags and files name the sampler's settings (eval_ema/dpmsolver++10_order2_linspace/samples/fid1024,
  eval/step<N>_ema_dpmsolver++10_order2_linspace_metrics.json) beside the DDPM-1000 ones.
  --precision: the type the U-Net samples in (float32, bfloat16, float16; default: the run's).
  """
  commands.evaluation_from_flags(SCRIPT, dict(locals()))


def simple_eval(model_dir, tpu_name=None, bucket_name_prefix=None, mode='bpd_eval', load_ckpt=None, total_bs=256,
                tfds_data_dir='tensorflow_datasets',
                # Not in the original:
                region=None, ema=True, max_batches=None, num_gpus=None, seed=0, num_samples=50000, data_dir=None,
                dataset=None, precision=None):
  """Bits/dim or progressive samples of one checkpoint (--load_ckpt: model.ckpt-N in model_dir as in the original,
  a prefix, or default the latest), as .npz in model_dir/simple_eval/.

  mode: bpd_train (the training set, one pass), bpd_eval (the test set): total bits/dim [N], per-timestep terms
  [N, T], prior [N] and the x_0 mse [N, T] (simple_eval/bpd/); progressive_samples: --num_samples samples (default
  50,000, the original's) with their x_0 predictions along the chain, in parts of 20 batches
  (simple_eval/progressive_samples/; a rerun continues after the parts that exist). --max_batches stops a bpd pass
  early (the results written so far are kept; a rerun resumes). --data_dir: where a run on a folder of images finds
  them now (default: the folder it trained on). A converted checkpoint's directory, --dataset and --precision work
  as for `evaluation`.
  """
  commands.simple_eval_from_flags(SCRIPT, dict(locals()))


SCRIPT = commands._Script(name='run_cifar.py', train_fn=train, load_model=_load_model,
                              validate_kwargs=_validate_kwargs,
                              model_configs=MODEL_CONFIGS)
sample = commands.make_sample_command(SCRIPT)
reproduce = reproduce_command.make_reproduce_command(SCRIPT, sample)
inpaint = editing.make_inpaint_command(SCRIPT)
img2img = editing.make_img2img_command(SCRIPT)
invert = editing.make_invert_command(SCRIPT)
