"""Benchmark-only U-Net formulations that compute the same function with fewer or cheaper TF ops.

Each variant replaces one function of diffusion_tf (nn.py / models/unet.py) for the current process; variable names
and shapes are unchanged, so the same checkpoint drives both. They are measured here side by side with the library's
formulation (a variant that wins is moved into the library); the library itself is not changed by this file.

  bias_add   conv2d / nin / dense add their bias with tf.nn.bias_add instead of `+`, which lets grappler's remapper
             fuse it into the convolution or matmul (_FusedConv2D / _FusedMatMul, or their MKL versions).
  gn_moments the group norm as the library had it before adopting the scale-and-shift form (2026-11-24):
             tf.nn.moments over axes [1, 2, 4] of [B, H, W, G, C/G], normalise, then gamma and beta; kept to measure
             what that change bought (`--ours tf-stock,tf-stock+v=gn_moments`).
  qkv        attention computes q, k, v with one [C, 3C] matmul (the three weight matrices concatenated).
  upsample   nearest-neighbour x2 with tf.image.resize_nearest_neighbor instead of tile + reshape.

Parity: `python benchmarks/variants.py` builds the library's model and each variant on the same variables and
prints the largest output difference (forward, and the gradient of a loss).
"""

import sys

import tensorflow.compat.v1 as tf

from diffusion_tf import nn
from diffusion_tf.models import unet

VARIANTS = ('bias_add', 'gn_moments', 'qkv', 'upsample')


def _conv2d(x, *, name, num_units, filter_size=(3, 3), stride=1, dilation=None, pad='SAME', init_scale=1.,
            bias=True):
  with tf.variable_scope(name):
    if isinstance(filter_size, int):
      filter_size = (filter_size, filter_size)
    W = tf.get_variable('W', shape=[*filter_size, int(x.shape[-1]), num_units],
                        initializer=nn.default_init(scale=init_scale))
    z = tf.nn.conv2d(x, W, strides=stride, padding=pad, dilations=dilation)
    if not bias:
      return z
    b = tf.get_variable('b', shape=[num_units], initializer=tf.constant_initializer(0.))
    return tf.nn.bias_add(z, b)


def _nin(x, *, name, num_units, init_scale=1.):
  with tf.variable_scope(name):
    in_dim = int(x.shape[-1])
    W = tf.get_variable('W', shape=[in_dim, num_units], initializer=nn.default_init(scale=init_scale))
    b = tf.get_variable('b', shape=[num_units], initializer=tf.constant_initializer(0.))
    x_shape = x.shape.as_list()
    y = tf.nn.bias_add(tf.matmul(tf.reshape(x, [-1, in_dim]), W), b)
    return tf.reshape(y, [-1] + x_shape[1:-1] + [num_units])


def _dense(x, *, name, num_units, init_scale=1., bias=True):
  with tf.variable_scope(name):
    _, in_dim = x.shape.as_list()
    W = tf.get_variable('W', shape=[in_dim, num_units], initializer=nn.default_init(scale=init_scale))
    z = tf.matmul(x, W)
    if not bias:
      return z
    b = tf.get_variable('b', shape=[num_units], initializer=tf.constant_initializer(0.))
    return tf.nn.bias_add(z, b)


def _group_norm_moments(x, *, name, num_groups=32, eps=1e-6, gamma_initializer=tf.ones_initializer(),
                        beta_initializer=tf.zeros_initializer()):
  """The straightforward formulation: normalise each group with tf.nn.moments, then the per-channel affine."""
  B, H, W, C = x.shape.as_list()
  with tf.variable_scope(name):
    beta = tf.get_variable('beta', shape=[C], initializer=beta_initializer)
    gamma = tf.get_variable('gamma', shape=[C], initializer=gamma_initializer)
    xg = tf.reshape(x, [-1, H, W, num_groups, C // num_groups])
    mean, var = tf.nn.moments(xg, axes=[1, 2, 4], keep_dims=True)
    out = tf.reshape((xg - mean) * tf.rsqrt(var + eps), [-1, H, W, C]) * gamma + beta
    out.set_shape(x.shape)
    return out


def _attn_block_qkv(x, *, name, temb):
  B, H, W, C = x.shape.as_list()
  with tf.variable_scope(name):
    h = unet.normalize(x, temb=temb, name='norm')
    Ws, bs = [], []
    for n in ('q', 'k', 'v'):
      with tf.variable_scope(n):
        Ws.append(tf.get_variable('W', shape=[C, C], initializer=nn.default_init(scale=1.)))
        bs.append(tf.get_variable('b', shape=[C], initializer=tf.constant_initializer(0.)))
    qkv = tf.nn.bias_add(tf.matmul(tf.reshape(h, [-1, C]), tf.concat(Ws, axis=1)), tf.concat(bs, axis=0))
    q, k, v = [tf.reshape(a, [-1, H * W, C]) for a in tf.split(qkv, 3, axis=1)]
    w = tf.matmul(q, k, transpose_b=True) * (int(C) ** (-0.5))  # [B, HW, HW]
    w = tf.nn.softmax(w, axis=-1)
    h = tf.reshape(tf.matmul(w, v), [-1, H, W, C])
    h.set_shape([B, H, W, C])
    h = nn.nin(h, name='proj_out', num_units=C, init_scale=0.)
    return x + h


def _upsample_resize(x, *, name, with_conv):
  B, H, W, C = x.shape.as_list()
  with tf.variable_scope(name):
    x = tf.image.resize_nearest_neighbor(x, [H * 2, W * 2])
    if with_conv:
      x = nn.conv2d(x, name='conv', num_units=C, filter_size=3, stride=1)
    return x


def apply(unet_module, names):
  """Swap the named variants in (for this process). Returns a function that restores the originals."""
  bad = [n for n in names if n not in VARIANTS]
  if bad:
    raise ValueError('unknown variant(s) {}; expected some of {}'.format(bad, VARIANTS))
  saved = []

  def _set(mod, attr, fn):
    saved.append((mod, attr, getattr(mod, attr)))
    setattr(mod, attr, fn)

  if 'bias_add' in names:
    _set(nn, 'conv2d', _conv2d)
    _set(nn, 'nin', _nin)
    _set(nn, 'dense', _dense)
  if 'gn_moments' in names:
    _set(unet_module, 'group_norm', _group_norm_moments)
  if 'qkv' in names:
    _set(unet_module, 'attn_block', _attn_block_qkv)
  if 'upsample' in names:
    _set(unet_module, 'upsample', _upsample_resize)

  def undo():
    for mod, attr, fn in reversed(saved):
      setattr(mod, attr, fn)
  return undo


def parity(names_list, batch=2):
  """Largest |difference| of the output and of d(loss)/d(variables) between the library's model and variants."""
  import numpy as np
  tf.reset_default_graph()
  x = tf.random_normal([batch, 32, 32, 3], seed=1)
  t = tf.constant([10, 900][:batch], dtype=tf.int32)
  kw = dict(t=t, y=None, name='model', num_classes=1, out_ch=3, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
            attn_resolutions=(16,))

  def build():
    out = unet.model(x, **kw)
    grads = tf.gradients(tf.reduce_sum(out * x), tf.trainable_variables())
    return out, grads

  ref = build()
  n_vars = len(tf.trainable_variables())
  built = []
  for names in names_list:
    undo = apply(unet, names)
    built.append(build())
    undo()
    assert len(tf.trainable_variables()) == n_vars, 'a variant created new variables'
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    # The zero-initialised output layers would hide differences: give every variable a random value.
    for v in tf.trainable_variables():
      v.load(np.random.RandomState(0).randn(*v.shape.as_list()).astype(np.float32) * 0.05, sess)
    vals = sess.run([ref] + built)
  r_out, r_grads = vals[0]
  for names, (o, g) in zip(names_list, vals[1:]):
    d_out = np.abs(o - r_out).max() / np.abs(r_out).max()
    # Relative to each variable's gradient scale, floored at 1e-3 of the largest one: some gradients are zero in
    # exact arithmetic (the key bias: softmax ignores a constant added to a row) and pure rounding noise here.
    top = max(np.abs(b).max() for b in r_grads)
    d_grads = [np.abs(a - b).max() / max(np.abs(b).max(), 1e-3 * top) for a, b in zip(g, r_grads)]
    worst = int(np.argmax(d_grads))
    print('{:30s} max rel. diff: output {:.2e}, gradients {:.2e} ({})'.format(
      '+'.join(names), d_out, d_grads[worst], tf.trainable_variables()[worst].name))


if __name__ == '__main__':
  parity([[n] for n in VARIANTS] + [list(VARIANTS)] if len(sys.argv) == 1 else [sys.argv[1].split(',')])
