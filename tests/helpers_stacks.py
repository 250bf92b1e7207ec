"""The two stacks (TF 1.15 in .venv, TF 2.15 in .venv-tf2) as the tests see them: the other stack's Python, for
cross-stack tests, and the references that exist on one stack only.

other_stack_python(): (stack name, path to its python) of the stack this process is not, and the reason it
  cannot be used if its venv is missing (`make install STACK=...` creates it; CI installs both).
reference_group_norm(x, gamma, beta): a group norm that is not ours, with its variables: tf.contrib.layers.group_norm
  (what the original called) on TF 1.15, Keras' GroupNormalization on TF 2.15 (tf.contrib is gone there).
"""

import os

import tensorflow as tf_full  # tf.contrib (TF 1.15) and Keras 2 layers (TF 2.15) are not in tf.compat.v1
import tensorflow.compat.v1 as tf

from diffusion_tf import compat

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
VENVS = {'tf1': '.venv', 'tf2': '.venv-tf2'}


def other_stack_python():
  """(other stack, its python or None, why it is missing or None)."""
  other = 'tf2' if compat.STACK == 'tf1' else 'tf1'
  python = os.path.join(REPO, VENVS[other], 'bin', 'python')
  if not os.path.isfile(os.path.join(REPO, VENVS[other], '.installed')) or not os.access(python, os.X_OK):
    return other, None, '{} has no installed {} stack; run `make install STACK={}` (CI installs both)'.format(
      VENVS[other], other, other)
  return other, python, None


def reference_group_norm(x, gamma, beta, scope):
  """Group norm of x [B, H, W, C] with 32 groups and epsilon 1e-6 by an implementation other than ours, its
  gamma and beta initialised to the given numpy values. Returns (out, [beta variable, gamma variable])."""
  init = dict(gamma=tf.constant_initializer(gamma), beta=tf.constant_initializer(beta))
  if compat.STACK == 'tf1':
    out = tf_full.contrib.layers.group_norm(x, scope=scope, param_initializers=init)
    params = [v for v in tf.global_variables() if v.op.name.startswith(scope + '/')]
  else:
    with tf.variable_scope(scope):
      layer = tf_full.keras.layers.GroupNormalization(
        groups=32, epsilon=1e-6, gamma_initializer=init['gamma'], beta_initializer=init['beta'])
      out = layer(x)
    params = sorted(layer.weights, key=lambda v: v.op.name)
  return out, params
