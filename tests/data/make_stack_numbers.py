"""Regenerates tests/data/stack_numbers.npz: the numbers that test_stacks.py checks on both stacks.

The fixture is made on the TF 1.15 stack (the original's), from tests/helpers_stacks.unet_and_train_step_numbers:
a small U-Net's output on fixed inputs and one Adam training step, from numpy-drawn weights. The file records
how it was made (key 'provenance'). Regenerate only when that computation changes on purpose:

  PYTHONPATH=. .venv/bin/python tests/data/make_stack_numbers.py
"""

import datetime
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for helpers_stacks

import tensorflow.compat.v1 as tf  # noqa: E402

import helpers_stacks  # noqa: E402
from diffusion_tf import compat  # noqa: E402


def main():
  numbers = helpers_stacks.unet_and_train_step_numbers()
  numbers['provenance'] = np.array(
    'tests/data/make_stack_numbers.py on the {} stack: tensorflow {}, numpy {}, python {}, {} UTC'.format(
      compat.STACK, tf.version.VERSION, np.__version__, sys.version.split()[0],
      datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M')))
  np.savez_compressed(helpers_stacks.STACK_NUMBERS, **numbers)
  print('wrote {}: {}'.format(helpers_stacks.STACK_NUMBERS, numbers['provenance']))


if __name__ == '__main__':
  main()
