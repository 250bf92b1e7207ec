"""DDPM on CIFAR-10 (Ho, Jain, Abbeel 2020, sec. 4): the U-Net 'unet2d16b2' (35.7M parameters), T = 1000, linear
betas 1e-4..0.02, the simplified eps objective, fixed variance beta_t, batch 128, lr 2e-4 with 5000 warm-up steps,
dropout 0.1, random flips, EMA 0.9999 (FID 3.17, IS 9.46 after 800k steps on a TPU v3-8).

Subcommands (python3 scripts/run_cifar.py SUBCOMMAND --help):
  train        train a model; resumes an existing run
  evaluation   watch a run's checkpoints: EMA samples, image grids, IS and FID against the train and test sets
  simple_eval  bits/dim on the train or test set (bpd_train, bpd_eval), or progressive samples, as .npz
  sample       draw samples from a checkpoint (ddpm / ddim / pndm), PNG grid + .npz or PNGs
  reproduce    the paper's table from a checkpoint: samples, IS (10 splits), FID train/test (, bits/dim), table + JSON
  inpaint      fill the black part of a mask in given images (RePaint), PNGs + .npz + grid
  img2img      redraw given images from a chosen noise level (SDEdit), PNGs + .npz + grid
  invert       encode given images into their DDIM latents and decode them back, .npz + PNGs + grid

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

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from diffusion_tf.cli import runner  # noqa: E402  (pure Python: TensorFlow is quieted before it loads)

runner.quiet_tensorflow()

# The recipe (the paper's hyper-parameters as the commands' defaults) lives in diffusion_tf/cli/cifar10.py, where
# demo.py runs them too; its model is diffusion_tf/experiments/cifar10.py.
from diffusion_tf.cli.cifar10 import (  # noqa: E402,F401 (this script's names)
  DATASETS, MODEL_CONFIGS, SCRIPT, Model, _load_model, _validate_kwargs, evaluation, img2img, inpaint, invert,
  reproduce, sample, simple_eval, train)


def main(argv=None):
  runner.run_cli(runner.subcommands(
    train=train, evaluation=evaluation, simple_eval=simple_eval, sample=sample, reproduce=reproduce, inpaint=inpaint,
    img2img=img2img, invert=invert), argv=argv,
    name='run_cifar.py')


if __name__ == '__main__':
  main()
