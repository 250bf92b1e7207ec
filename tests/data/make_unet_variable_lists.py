"""Regenerates tests/data/unet_cifar10_variables.txt and unet_256_variables.txt from the ORIGINAL release's graph.

The lists are the contract that released checkpoints restore without renaming, so they must come from the original
code (hojonathanho/diffusion), never from ours. This script imports the original's `diffusion_tf.models.unet` from
a checkout of that repository, builds its two U-Net configurations in a graph (no session, no weights) and writes
every trainable variable with its shape. Needs TensorFlow 1.15 (the original uses tf.contrib), so the .venv:

  git clone https://github.com/hojonathanho/diffusion /tmp/ddpm-original   # master, commit 1e0dceb
  .venv/bin/python tests/data/make_unet_variable_lists.py /tmp/ddpm-original
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = [  # (file, resolution, ch_mult): ch 128, 2 residual blocks, attention at 16x16, as the original scripts
  ('unet_cifar10_variables.txt', 'cifar10', 32, (1, 2, 2, 2)),
  ('unet_256_variables.txt', 'celebahq256', 256, (1, 1, 2, 2, 4, 4)),
]


def main(original_dir):
  if not os.path.isfile(os.path.join(original_dir, 'diffusion_tf', 'models', 'unet.py')):
    sys.exit('error: {} is not a checkout of hojonathanho/diffusion (no diffusion_tf/models/unet.py)'.format(
      original_dir))
  # The original's package has the same name as ours: put it first and make sure ours is not imported instead.
  sys.path.insert(0, os.path.abspath(original_dir))
  import tensorflow.compat.v1 as tf
  from diffusion_tf.models import unet
  assert os.path.abspath(unet.__file__).startswith(os.path.abspath(original_dir)), unet.__file__

  for filename, label, resolution, ch_mult in CONFIGS:
    with tf.Graph().as_default():
      x = tf.zeros([1, resolution, resolution, 3])
      t = tf.zeros([1], tf.int32)
      unet.model(x, t=t, y=None, name='model', num_classes=1, ch=128, out_ch=3, ch_mult=ch_mult, num_res_blocks=2,
                 attn_resolutions=(16,), dropout=0.)
      variables = tf.trainable_variables()
      num_params = sum(v.shape.num_elements() for v in variables)
      lines = ['# {}: {} trainable variables, {} parameters'.format(label, len(variables), num_params)]
      lines += ['{} {}'.format(v.op.name, v.shape.as_list()) for v in variables]
    with open(os.path.join(HERE, filename), 'w') as f:
      f.write('\n'.join(lines) + '\n')
    print('wrote', os.path.join(HERE, filename), len(variables), 'variables', num_params, 'parameters')


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit(__doc__)
  main(sys.argv[1])
