"""DDPM on LSUN 256x256 (Ho, Jain, Abbeel 2020, sec. 4): the CelebA-HQ setup (run_celebahq.py: 'unet2d16b2c112244',
GaussianDiffusion 'noisepred', batch 64, lr 2e-5, no dropout, random flips) on StyleGAN2-format TFRecords of LSUN
church / bedroom / cat (scripts/prepare_lsun.py writes them).

Subcommands (python3 scripts/run_lsun.py SUBCOMMAND --help): train, evaluation, sample, and the editing commands
inpaint, img2img, invert (as in run_cifar.py; docs/editing.md).

The paper's run, on a Cloud TPU with the bucket gs://$BUCKET_PREFIX-$REGION:
  python3 scripts/run_lsun.py train --exp_name=church --tpu_name=$TPU_NAME --bucket_name_prefix=$BUCKET_PREFIX
On this machine, with local files:
  python3 scripts/run_lsun.py train --exp_name=church --log_dir=logs --tfr_file=data/lsun/church-r08.tfrecords
  python3 scripts/run_lsun.py sample --model_dir=logs/9999-99-99/church_lsun_... --num_samples=16
(--tfr_file defaults to the original's tensorflow_datasets/lsun/church/church-r08.tfrecords, in the bucket with
--bucket_name_prefix.) --warm_start_model_dir=DIR initialises every variable from DIR's latest checkpoint.
See docs/scripts.md for every flag.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from diffusion_tf.cli import runner  # noqa: E402  (pure Python: TensorFlow is quieted before it loads)

runner.quiet_tensorflow()

# The recipe (the paper's hyper-parameters as the commands' defaults) lives in diffusion_tf/cli/lsun.py, where
# the tests run them too; its model is diffusion_tf/experiments/celebahq_lsun.py.
from diffusion_tf.cli.lsun import (  # noqa: E402,F401 (this script's names)
  DATASETS, EVAL_LIMIT_DATASET_SIZE, EVAL_TFR_FILE, MODEL_CONFIGS, SCRIPT, TRAIN_TFR_FILE, Model, _load_model,
  _tfr_stats_name, _validate_kwargs, evaluation, img2img, inpaint, invert, sample, train)


def main(argv=None):
  runner.run_cli(runner.subcommands(train=train, evaluation=evaluation, sample=sample, inpaint=inpaint, img2img=img2img,
                                    invert=invert), argv=argv, name='run_lsun.py')


if __name__ == '__main__':
  main()
