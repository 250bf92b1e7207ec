"""--recompute: gradient checkpointing of the U-Net's residual blocks (nn.recompute_grad) gives the same variables and
the same gradients as the plain U-Net, also with dropout (the recomputation uses the forward pass's mask), and it
keeps fewer activations for the backward pass."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from diffusion_tf import nn
from diffusion_tf.models import unet

# a tiny U-Net of two levels (32 channels: group norm needs 32 groups), attention at 8x8
# the largest difference of a gradient, relative to its largest entry, that float32 rounding explains
REL_TOL = 1e-5
TINY = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_classes=1, out_ch=3)


def _set_weights(sess, variables):
  """The same weights whatever the graph (its initializers' seeds depend on the ops before them): every variable
  drawn from numpy, none zero (the output layers start at zero), so that all gradients are non-trivial. One run."""
  rng = np.random.RandomState(1)
  feeds = {}
  for v in variables:
    value = 0.1 * rng.randn(*v.shape.as_list()) + (1. if 'gamma' in v.op.name else 0.)
    feeds[tf.placeholder(tf.float32, v.shape)] = value.astype(np.float32)
  sess.run([v.assign(p) for v, p in zip(variables, feeds)], feeds)


def _unet_loss_and_grads(recompute):
  """(variable names, loss, gradients of the loss wrt the variables and x) of a tiny U-Net on fixed inputs."""
  with tf.Graph().as_default():
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(2, 16, 16, 3).astype(np.float32))
    t = tf.constant([3, 700], dtype=tf.int32)
    out = unet.model(x, t=t, y=None, name='model', dropout=0., recompute=recompute, **TINY)
    target = tf.constant(rng.randn(2, 16, 16, 3).astype(np.float32))
    variables = tf.trainable_variables()
    loss = tf.reduce_mean(tf.square(out - target))
    grads = tf.gradients(loss, variables + [x])
    with tf.Session() as sess:
      _set_weights(sess, variables)
      values = sess.run([loss] + grads)
    return [v.op.name for v in variables], values[0], values[1:]


def test_recompute_gives_the_same_variables_and_gradients():
  names, loss, grads = _unet_loss_and_grads(False)
  names_rc, loss_rc, grads_rc = _unet_loss_and_grads(True)
  assert names_rc == names
  assert loss_rc == pytest.approx(loss, rel=1e-6)
  assert len(grads_rc) == len(grads)
  # float32: the two graphs may sum in other orders (oneDNN on TF 2.15). Measured against the largest gradient entry
  # of the network, since some gradients are rounding noise around 0 (a bias just before a group norm of one channel
  # per group, which removes it)
  scale = max(np.abs(g).max() for g in grads)
  for name, g, g_rc in zip(names + ['x'], grads, grads_rc):
    assert np.abs(g_rc - g).max() <= REL_TOL * scale, name
  assert np.abs(grads[-1]).max() > 1e-3 * scale  # the input's gradient is not one of those


def _block_grads(recompute, seed):
  """Gradients of a fixed function of one residual block with dropout 0.5, its mask from a given seed value."""
  with tf.Graph().as_default():
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(2, 8, 8, 32).astype(np.float32))
    temb = tf.constant(rng.randn(2, 64).astype(np.float32))
    seed_t = tf.constant(seed, dtype=tf.int32)
    body = lambda x, temb: unet._resnet_block_body(  # noqa: E731
      x, temb, out_ch=64, conv_shortcut=False, dropout=0.5,
      dropout_fn=lambda h, rate: unet.stateless_dropout(h, rate=rate, seed=seed_t))
    if recompute:
      out = nn.recompute_grad(body, [x, temb], name='block')
    else:
      with tf.variable_scope('block'):
        out = body(x, temb)
    loss = tf.reduce_sum(out * tf.constant(rng.randn(2, 8, 8, 64).astype(np.float32)))
    variables = tf.trainable_variables()
    grads = tf.gradients(loss, variables + [x, temb])
    with tf.Session() as sess:
      _set_weights(sess, variables)
      return sess.run(grads)


def test_recompute_uses_the_forward_dropout_mask():
  plain = _block_grads(False, [5, 7])
  recomputed = _block_grads(True, [5, 7])
  other_mask = _block_grads(False, [5, 8])
  for g, g_rc in zip(plain, recomputed):
    assert np.abs(g_rc - g).max() <= REL_TOL * np.abs(g).max()
  # the comparison can fail: another mask gives other gradients
  assert not np.allclose(other_mask[-2], plain[-2], rtol=1e-2)


def test_recompute_draws_a_new_mask_each_step():
  """resnet_block(recompute=True)'s dropout is random from step to step, as tf.nn.dropout's."""
  with tf.Graph().as_default():
    x = tf.ones([1, 8, 8, 32])
    temb = tf.ones([1, 64])
    out = unet.resnet_block(x, temb=temb, name='block', dropout=0.5, recompute=True)
    grad = tf.gradients(tf.reduce_sum(out), x)[0]
    with tf.Session() as sess:
      _set_weights(sess, tf.trainable_variables())
      (o1, g1), (o2, g2) = sess.run([out, grad]), sess.run([out, grad])
  assert not np.allclose(o1, o2) and not np.allclose(g1, g2)
