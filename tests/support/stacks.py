"""The two stacks (TF 1.15 in .venv, TF 2.15 in .venv-tf2) as the tests see them: the other stack's Python, for
cross-stack tests, and the references that exist on one stack only.

other_stack_python(): (stack name, path to its python) of the stack this process is not, and the reason it
  cannot be used if its venv is missing (`make install STACK=...` creates it; CI installs both).
reference_group_norm(x, gamma, beta): a group norm that is not ours, with its variables: tf.contrib.layers.group_norm
  (what the original called) on TF 1.15, Keras' GroupNormalization on TF 2.15 (tf.contrib is gone there).
unet_and_train_step_numbers(): a small U-Net's output and one training step from numpy-drawn weights, which both
  stacks must compute alike (stored in tests/fixtures/stack_numbers.npz).
"""

import os

import numpy as np
import tensorflow as tf_full  # tf.contrib (TF 1.15) and Keras 2 layers (TF 2.15) are not in tf.compat.v1
import tensorflow.compat.v1 as tf

from diffusion_tf import compat, utils
from diffusion_tf.diffusion_utils_2 import GaussianDiffusion2, get_beta_schedule
from diffusion_tf.models import unet

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
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


# ---------------------------------------------------------------------------------------------------------------
# Numbers both stacks must agree on (tests/fixtures/stack_numbers.npz, made by tests/fixtures/make_stack_numbers.py)

STACK_NUMBERS = os.path.join(REPO, 'tests', 'fixtures', 'stack_numbers.npz')
TRACKED_VARIABLES = ('model/conv_in/W', 'model/temb/dense0/W', 'model/down_1/attn_0/q/W', 'model/conv_out/W')


def _numpy_weights(variables, rng):
  """Weights drawn in numpy (not by TensorFlow's random ops), so that both stacks start from the same values:
  kernels N(0, 1 / fan_in), biases and group-norm offsets N(0, 0.1^2), group-norm scales 1 + N(0, 0.1^2)."""
  values = []
  for v in variables:
    shape = v.shape.as_list()
    if len(shape) > 1:
      value = rng.randn(*shape) / np.sqrt(np.prod(shape[:-1]))
    else:
      value = 0.1 * rng.randn(*shape) + (1. if v.op.name.endswith('/gamma') else 0.)
    values.append(value.astype(np.float32))
  return values


def unet_and_train_step_numbers(seed=0):
  """A small U-Net (16x16x3 images, ch 32, ch_mult (1, 2), one residual block per level, attention at 8x8, no
  dropout) with numpy-drawn weights: its output on fixed (x, t), then one training step (eps-MSE loss of
  GaussianDiffusion2 with fixed noise, T = 100 linear betas; Adam lr 1e-3, gradients clipped to norm 1).
  Returns {name: numpy array}: x, t, noise, out, loss, gnorm, and before/<var>, after/<var> for TRACKED_VARIABLES."""
  rng = np.random.RandomState(seed)
  x = rng.uniform(-1, 1, size=[2, 16, 16, 3]).astype(np.float32)
  t = np.array([3, 71], np.int32)
  noise = rng.randn(*x.shape).astype(np.float32)
  with tf.Graph().as_default():
    diffusion = GaussianDiffusion2(
      betas=get_beta_schedule('linear', beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=100),
      model_mean_type='eps', model_var_type='fixedlarge', loss_type='mse')

    def denoise(x_, t_):
      return unet.model(x_, t=t_, y=None, name='model', num_classes=1, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                        attn_resolutions=(8,), out_ch=3, dropout=0.)

    out = denoise(tf.constant(x), tf.constant(t))
    loss = tf.reduce_mean(diffusion.training_losses(denoise, tf.constant(x), tf.constant(t), noise=tf.constant(noise)))
    variables = tf.trainable_variables()
    train_op, gnorm = utils.make_optimizer(loss=loss, trainable_variables=variables,
                                           global_step=tf.train.get_or_create_global_step(), tpu=False,
                                           optimizer='adam', lr=1e-3, grad_clip=1.)
    tracked = {v.op.name: v for v in variables if v.op.name in TRACKED_VARIABLES}
    assert sorted(tracked) == sorted(TRACKED_VARIABLES), sorted(tracked)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      # One run feeding every initializer (Variable.load would prune the graph anew for each of ~150 variables).
      sess.run([v.initializer for v in variables],
               {v.initializer.inputs[1]: value for v, value in zip(variables, _numpy_weights(variables, rng))})
      numbers = dict(x=x, t=t, noise=noise)
      numbers['out'], before = sess.run([out, tracked])
      numbers['loss'], numbers['gnorm'], _ = sess.run([loss, gnorm, train_op])
      after = sess.run(tracked)
  for name in TRACKED_VARIABLES:
    numbers['before/' + name], numbers['after/' + name] = before[name], after[name]
  return numbers
