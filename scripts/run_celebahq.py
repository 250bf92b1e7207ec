"""DDPM on CelebA-HQ 256x256 (Ho, Jain, Abbeel 2020, sec. 4): the U-Net 'unet2d16b2c112244' (114M parameters),
T = 1000, linear betas 1e-4..0.02, the simplified eps objective ('noisepred', GaussianDiffusion), batch 64,
lr 2e-5, no dropout, random flips, EMA 0.9999 (0.5M steps on a TPU v3-8).

Subcommands (python3 scripts/run_celebahq.py SUBCOMMAND --help): train, evaluation, sample (as in run_cifar.py),
interpolate (between two images, DDPM fig. 8) and denoising_trajectory (chains x_T -> x_0), as PNG grids, and the
editing of given images inpaint (RePaint), img2img (SDEdit) and invert (DDIM inversion) (docs/editing.md).

The paper's run, on a Cloud TPU with the bucket gs://$BUCKET_PREFIX-$REGION (tfds celeb_a_hq/256 in
tensorflow_datasets/ there):
  python3 scripts/run_celebahq.py train --exp_name=celebahq --tpu_name=$TPU_NAME --bucket_name_prefix=$BUCKET_PREFIX
On this machine, with local directories:
  python3 scripts/run_celebahq.py train --exp_name=celebahq --log_dir=logs --tfds_data_dir=tensorflow_datasets
  python3 scripts/run_celebahq.py sample --model_dir=logs/9999-99-99/celebahq_celebahq256_... --num_samples=16
See docs/scripts.md for every flag.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from diffusion_tf.cli import runner  # noqa: E402  (pure Python: TensorFlow is quieted before it loads)

runner.quiet_tensorflow()

# The recipe (the paper's hyper-parameters as the commands' defaults) lives in diffusion_tf/cli/celebahq.py, where
# the tests run them too; its model is diffusion_tf/experiments/celebahq_lsun.py.
from diffusion_tf.cli.celebahq import (  # noqa: E402,F401 (this script's names)
  MODEL_CONFIGS, SCRIPT, Model, _load_model, _validate_kwargs, denoising_trajectory, evaluation, img2img, inpaint,
  interpolate, invert, sample, train)


def main(argv=None):
  runner.run_cli(runner.subcommands(
    train=train, evaluation=evaluation, sample=sample, interpolate=interpolate,
    denoising_trajectory=denoising_trajectory, inpaint=inpaint, img2img=img2img, invert=invert), argv=argv,
    name='run_celebahq.py')


if __name__ == '__main__':
  main()
