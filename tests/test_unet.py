"""The U-Net and its layers: checkpoint-compatible variables, and each layer against numpy."""

import math
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from diffusion_tf import nn, utils
from diffusion_tf.diffusion_utils_2 import GaussianDiffusion2, get_beta_schedule
from diffusion_tf.models import configs, unet
from support.scripts import FIXTURES
from support.stacks import reference_group_norm

DATA = FIXTURES

CONFIGS = {
  # reference file: (image size, ch_mult, parameter count stated in the paper / reference)
  'unet_cifar10_variables.txt': (32, (1, 2, 2, 2), 35746307),
  'unet_256_variables.txt': (256, (1, 1, 2, 2, 4, 4), 113673219),
}


def _read_reference(name):
  with open(os.path.join(DATA, name)) as f:
    lines = [l.strip() for l in f if l.strip() and not l.startswith('#')]
  out = []
  for l in lines:
    var, shape = l.split(' ', 1)
    out.append((var, [int(s) for s in shape.strip('[]').split(',')]))
  return out


@pytest.mark.parametrize('ref', sorted(CONFIGS))
def test_variables_are_exactly_the_released_checkpoints(ref):
  size, ch_mult, num_params = CONFIGS[ref]
  with tf.Graph().as_default():
    x = tf.placeholder(tf.float32, [1, size, size, 3])
    t = tf.placeholder(tf.int32, [1])
    unet.model(x, t=t, y=None, name='model', num_classes=1, ch=128, ch_mult=ch_mult, num_res_blocks=2,
               attn_resolutions=(16,), out_ch=3, dropout=0.1)
    ours = [(v.op.name, v.shape.as_list()) for v in tf.trainable_variables()]
  want = _read_reference(ref)
  assert ours == want  # same names, shapes and creation order
  assert sum(int(np.prod(s)) for _, s in ours) == num_params


def test_full_cifar10_model_forward_pass():
  """The 35.7M model: right output shape; the zero-initialised output layer gives ~0 at init, and after perturbing
  the weights the output depends on both x and t."""
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    x = tf.placeholder(tf.float32, [2, 32, 32, 3])
    t = tf.placeholder(tf.int32, [2])
    out = unet.model(x, t=t, y=None, name='model', num_classes=1, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                     attn_resolutions=(16,), out_ch=3, dropout=0.)
    assert out.shape.as_list() == [2, 32, 32, 3]
    conv_out = [v for v in tf.trainable_variables() if v.op.name == 'model/conv_out/W'][0]
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      xs = np.random.RandomState(0).uniform(-1, 1, [2, 32, 32, 3]).astype(np.float32)
      o = sess.run(out, {x: xs, t: [0, 999]})
      assert np.abs(o).max() < 1e-3
      sess.run(conv_out.assign(tf.random_normal(conv_out.shape, stddev=0.05)))
      o1, o2 = sess.run(out, {x: xs, t: [0, 999]}), sess.run(out, {x: xs, t: [500, 999]})
      assert np.isfinite(o1).all() and np.abs(o1).mean() > 1e-2
      assert not np.allclose(o1[0], o2[0]) and np.allclose(o1[1], o2[1], atol=1e-5)


def _run(fn, randomize=None):
  """Build fn() in a fresh graph, initialise, optionally overwrite the variables whose name passes `randomize`
  with N(0, 0.3^2) values, then return fn's outputs followed by all trainable variables' values."""
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    out = fn()
    variables = tf.trainable_variables()
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      if randomize is not None:
        sess.run([v.assign(tf.random_normal(v.shape, stddev=0.3)) for v in variables if randomize(v.op.name)])
      return sess.run(out), sess.run(variables)


def test_timestep_embedding_matches_the_sinusoid_formula():
  t = np.array([0, 1, 17, 999])
  for dim in [8, 9, 128]:
    emb, _ = _run(lambda: nn.get_timestep_embedding(tf.constant(t), dim))
    half = dim // 2
    freqs = np.exp(-math.log(10000) * np.arange(half) / (half - 1))
    want = np.concatenate([np.sin(t[:, None] * freqs), np.cos(t[:, None] * freqs)], axis=1)
    if dim % 2:
      want = np.pad(want, [[0, 0], [0, 1]])
    np.testing.assert_allclose(emb, want, atol=2e-4)


def test_default_init_is_fan_avg_uniform():
  _, (W, _) = _run(lambda: nn.dense(tf.zeros([1, 300]), name='d', num_units=500, init_scale=2.))
  fan_avg = (300 + 500) / 2
  limit = math.sqrt(3 * 2. / fan_avg)
  assert W.shape == (300, 500) and np.abs(W).max() <= limit
  np.testing.assert_allclose(W.var(), 2. / fan_avg, rtol=0.03)
  _, (W0, _) = _run(lambda: nn.conv2d(tf.zeros([1, 4, 4, 8]), name='c', num_units=8, init_scale=0.))
  assert W0.shape == (3, 3, 8, 8) and 0 < np.abs(W0).max() < 1e-4


def test_layers_compute_affine_maps_with_hwio_and_in_out_layouts():
  rng = np.random.RandomState(0)
  x = rng.randn(2, 5, 5, 4).astype(np.float32)

  def build():
    xt = tf.constant(x)
    return (nn.conv2d(xt, name='c', num_units=3), nn.nin(xt, name='n', num_units=6),
            nn.dense(tf.reshape(xt, [2, -1]), name='d', num_units=7))

  (c, n, d), (cW, cb, nW, nb, dW, db) = _run(build, randomize=lambda name: name.endswith('/b'))
  # 3x3 SAME convolution by explicit loops over the padded input
  xp = np.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
  want = np.zeros([2, 5, 5, 3])
  for i in range(5):
    for j in range(5):
      want[:, i, j] = np.einsum('bhwc,hwco->bo', xp[:, i:i + 3, j:j + 3], cW)
  np.testing.assert_allclose(c, want + cb, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(n, x @ nW + nb, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(d, x.reshape(2, -1) @ dW + db, rtol=1e-4, atol=1e-4)


def test_group_norm_matches_numpy_and_contrib():
  """Forward values against the group norm formula in numpy, and values and gradients (x, gamma, beta) against
  tf.contrib.layers.group_norm, which the original called (TF 1.15; Keras' GroupNormalization on TF 2.15)."""
  rng = np.random.RandomState(1)
  x = (3 * rng.randn(2, 4, 4, 64) + 1).astype(np.float32)
  gamma = rng.randn(64).astype(np.float32)
  beta = rng.randn(64).astype(np.float32)
  r = rng.randn(*x.shape).astype(np.float32)  # d(sum(out * r))/d(.) probes every gradient entry

  def build():
    outs = []
    for impl in ['ours', 'reference']:
      x_t = tf.constant(x)
      if impl == 'ours':
        out = unet.group_norm(x_t, name='gn', gamma_initializer=tf.constant_initializer(gamma),
                              beta_initializer=tf.constant_initializer(beta))
        params = [v for v in tf.global_variables() if v.op.name.startswith('gn/')]
      else:
        out, params = reference_group_norm(x_t, gamma, beta, scope='reference')
      assert [v.op.name.split('/')[-1] for v in params] == ['beta', 'gamma']
      outs.append([out] + tf.gradients(tf.reduce_sum(out * r), [x_t] + params))
    return outs

  (ours, ref), _ = _run(build)
  xg = x.reshape(2, 4, 4, 32, 2).astype(np.float64)
  mean = xg.mean(axis=(1, 2, 4), keepdims=True)
  var = xg.var(axis=(1, 2, 4), keepdims=True)
  want = ((xg - mean) / np.sqrt(var + 1e-6)).reshape(x.shape) * gamma + beta
  np.testing.assert_allclose(ours[0], want, rtol=1e-4, atol=1e-4)
  for name, a, b in zip(['out', 'd/dx', 'd/dbeta', 'd/dgamma'], ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)


def test_attention_block_matches_numpy():
  rng = np.random.RandomState(2)
  x = rng.randn(2, 4, 4, 32).astype(np.float32)

  out, (beta, gamma, qW, qb, kW, kb, vW, vb, pW, pb) = _run(
    lambda: unet.attn_block(tf.constant(x), name='attn', temb=None), randomize=lambda name: True)
  xg = x.reshape(2, 4, 4, 32, 1)
  hn = ((xg - xg.mean(axis=(1, 2, 4), keepdims=True)) /
        np.sqrt(xg.var(axis=(1, 2, 4), keepdims=True) + 1e-6)).reshape(x.shape) * gamma + beta
  hn = hn.reshape(2, 16, 32)
  q, k, v = hn @ qW + qb, hn @ kW + kb, hn @ vW + vb
  w = np.einsum('bic,bjc->bij', q, k) / np.sqrt(32)
  w = np.exp(w - w.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  want = x + ((w @ v) @ pW + pb).reshape(x.shape)
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_upsample_is_the_originals_nearest_resize_and_downsample_halves():
  x = np.random.RandomState(3).randn(2, 5, 7, 3).astype(np.float32)

  def build():
    xt = tf.constant(x)
    ours = unet.upsample(xt, name='up', with_conv=False)
    orig = tf.image.resize_nearest_neighbor(xt, [10, 14], align_corners=True)
    pooled = unet.downsample(tf.constant(x[:, :4, :6]), name='down', with_conv=False)
    conv = unet.downsample(tf.constant(x[:, :4, :6]), name='down2', with_conv=True)
    return ours, orig, pooled, conv

  (ours, orig, pooled, conv), _ = _run(build)
  np.testing.assert_array_equal(ours, orig)
  np.testing.assert_array_equal(ours, x.repeat(2, axis=1).repeat(2, axis=2))
  np.testing.assert_allclose(pooled, x[:, :4, :6].reshape(2, 2, 2, 3, 2, 3).mean(axis=(2, 4)), rtol=1e-6)
  assert conv.shape == (2, 2, 3, 3)


@pytest.mark.slow
def test_small_model_learns_a_fixed_batch():
  """A few hundred Adam steps of a small U-Net on one fixed batch and fixed (t, noise): the eps-MSE loss drops."""
  rng = np.random.RandomState(4)
  x0 = np.zeros([4, 8, 8, 3], np.float32)
  x0[:, 2:6, 2:6] = 1.
  x0 = x0 * 2 - 1
  noise = rng.randn(*x0.shape).astype(np.float32)
  t = np.array([10, 40, 70, 99])
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    diffusion = GaussianDiffusion2(
      betas=get_beta_schedule('linear', beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=100),
      model_mean_type='eps', model_var_type='fixedlarge', loss_type='mse')
    denoise = lambda x_, t_: unet.model(x_, t=t_, y=None, name='model', num_classes=1, ch=32, ch_mult=(1, 2),
                                        num_res_blocks=1, attn_resolutions=(4,), out_ch=3, dropout=0.)
    loss = tf.reduce_mean(diffusion.training_losses(denoise, tf.constant(x0), tf.constant(t),
                                                    noise=tf.constant(noise)))
    global_step = tf.train.get_or_create_global_step()
    train_op, gnorm = utils.make_optimizer(loss=loss, trainable_variables=tf.trainable_variables(),
                                           global_step=global_step, tpu=False, optimizer='adam', lr=1e-3,
                                           grad_clip=1.)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      first = sess.run(loss)
      for _ in range(300):
        sess.run(train_op)
      last, step = sess.run([loss, global_step])
  assert step == 300
  assert 0.5 < first < 2.  # predicting ~0 for unit-variance noise
  assert last < 0.1 * first, (first, last)


# The channel multipliers the DDPM follow-ups published per image size (improved-diffusion's script_util.py at 64,
# guided-diffusion's at 128), and the paper's own at 32 and 256.
PUBLISHED_CH_MULT = {32: (1, 2, 2, 2), 64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4)}


def test_each_resolution_picks_the_model_with_the_published_channel_multipliers():
  assert {size: configs.CONFIGS[name]['ch_mult'] for size, name in configs.BY_RESOLUTION.items()} == PUBLISHED_CH_MULT


@pytest.mark.parametrize('size', [64, 128])  # the paper's 32 and 256: test_variables_are_exactly_the_released_...
def test_the_64_and_128_models_build_with_attention_at_16_and_in_the_middle(size):
  config = configs.CONFIGS[configs.BY_RESOLUTION[size]]
  with tf.Graph().as_default():
    x = tf.placeholder(tf.float32, [2, size, size, 3])
    out = unet.model(x, t=tf.placeholder(tf.int32, [2]), y=None, name='model', num_classes=1, out_ch=3, dropout=0.,
                     **config)
    assert out.shape.as_list() == [2, size, size, 3]
    attention = {int(round(math.sqrt(op.outputs[0].shape.as_list()[1])))  # softmax over [B, HW, HW]
                 for op in tf.get_default_graph().get_operations() if '/attn_' in op.name and op.type == 'Softmax'}
  lowest = size // 2 ** (len(config['ch_mult']) - 1)
  assert lowest == 8
  assert attention == {16, lowest}  # at 16x16 and in the middle block, as the paper's models
