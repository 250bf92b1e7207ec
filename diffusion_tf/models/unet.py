"""The DDPM U-Net (Ho et al. 2020, appendix B): a PixelCNN++-style Wide-ResNet U-Net with group normalization,
sinusoidal timestep embeddings added in every residual block, and self-attention at the 16x16 resolution.

Variable names and shapes are exactly those of the original release (see tests/fixtures/unet_*_variables.txt).
"""

import functools

import tensorflow.compat.v1 as tf

from .. import nn, precision


def nonlinearity(x):
  """Swish / SiLU: x * sigmoid(x)."""
  return tf.nn.swish(x)


def group_norm(x, *, name, num_groups=32, eps=1e-6, gamma_initializer=tf.ones_initializer(),
               beta_initializer=tf.zeros_initializer()):
  """Group normalization (Wu & He 2018): y = gamma (x - mu_g) / sqrt(var_g + eps) + beta, with mu_g, var_g the mean
  and variance of x over [H, W, C/G] in each example's group g of channels.

  Same variables (`<name>/beta`, `<name>/gamma`, created in that order) and the same numbers as
  tf.contrib.layers.group_norm with its defaults (32 groups, epsilon 1e-6), without tf.contrib.
  Computed as one per-(example, channel) scale and shift, y = x * s + (beta - mu_g * s) with s = gamma / sqrt(var_g +
  eps), and the group statistics as means of per-channel means over H, W (the groups have equal sizes): reductions
  over the outer axes of [B, H*W, C] vectorise on CPU, unlike one over axes [1, 2, 4] of [B, H, W, G, C/G], and the
  activations are read twice instead of four times (docs/benchmarks.md: +17-29% for the CIFAR-10 forward pass on CPU).
  """
  B, H, W, C = x.shape.as_list()
  assert C % num_groups == 0, 'channels {} not divisible by {} groups'.format(C, num_groups)
  G, Cg = num_groups, C // num_groups
  with tf.variable_scope(name):
    beta = tf.get_variable('beta', shape=[C], initializer=beta_initializer)
    gamma = tf.get_variable('gamma', shape=[C], initializer=gamma_initializer)

    def group_mean(v):  # [B, H, W, C] -> [B, 1, 1, C]: every channel holds its group's mean of v
      channel_means = tf.reshape(tf.reduce_mean(v, axis=[1, 2]), [-1, G, Cg])
      return tf.reshape(tf.tile(tf.reduce_mean(channel_means, axis=2, keepdims=True), [1, 1, Cg]), [-1, 1, 1, C])

    mean = group_mean(x)
    # as tf.nn.moments: the variance's gradient does not flow through the mean (it is zero there in exact arithmetic)
    var = group_mean(tf.squared_difference(x, tf.stop_gradient(mean)))
    scale = tf.rsqrt(var + eps) * gamma  # [B, 1, 1, C]
    out = x * scale + (beta - mean * scale)
    out.set_shape(x.shape)
    return out


def normalize(x, *, temb, name):
  del temb  # the original passes it but does not use it
  return precision.in_float32(functools.partial(group_norm, name=name), x)  # statistics in float32


def upsample(x, *, name, with_conv):
  """Nearest-neighbour x2 upsampling, then a 3x3 convolution if `with_conv`."""
  B, H, W, C = x.shape.as_list()
  with tf.variable_scope(name):
    # Nearest neighbour x2 is each pixel repeated 2x2; the original's resize (align_corners=True) gives the same.
    x = tf.reshape(tf.tile(x[:, :, None, :, None, :], [1, 1, 2, 1, 2, 1]), [-1, H * 2, W * 2, C])
    x.set_shape([B, H * 2, W * 2, C])
    if with_conv:
      x = nn.conv2d(x, name='conv', num_units=C, filter_size=3, stride=1)
    assert x.shape.as_list() == [B, H * 2, W * 2, C]
    return x


def downsample(x, *, name, with_conv):
  """x2 downsampling: a 3x3 stride-2 SAME convolution if `with_conv`, else 2x2 average pooling."""
  B, H, W, C = x.shape.as_list()
  with tf.variable_scope(name):
    if with_conv:
      x = nn.conv2d(x, name='conv', num_units=C, filter_size=3, stride=2)
    else:
      x = tf.nn.avg_pool(x, 2, 2, 'SAME')
    assert x.shape.as_list() == [B, H // 2, W // 2, C]
    return x


def resnet_block(x, *, temb, name, out_ch=None, conv_shortcut=False, dropout, recompute=False):
  """h = conv2(dropout(swish(norm2(conv1(swish(norm1(x))) + dense(swish(temb)))))); return shortcut(x) + h.

  recompute: keep only x and temb for the backward pass and compute the block again there (nn.recompute_grad); its
  dropout mask is then drawn by a stateless op from a seed drawn once per step, so that both passes use the same.
  """
  B, H, W, C = x.shape.as_list()
  if out_ch is None:
    out_ch = C
  if not recompute:
    with tf.variable_scope(name):
      return _resnet_block_body(x, temb, out_ch=out_ch, conv_shortcut=conv_shortcut, dropout=dropout,
                                dropout_fn=tf.nn.dropout)
  dropout_fn = None
  if dropout > 0:
    seed = tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32)
    dropout_fn = functools.partial(stateless_dropout, seed=seed)
  return nn.recompute_grad(
    functools.partial(_resnet_block_body, out_ch=out_ch, conv_shortcut=conv_shortcut, dropout=dropout,
                      dropout_fn=dropout_fn), [x, temb], name=name)


def stateless_dropout(x, *, rate, seed):
  """tf.nn.dropout's x * [u >= rate] / (1 - rate), u uniform in [0, 1), with u from a stateless op seeded by `seed`
  ([2] int32): the same mask each time it is computed with the same seed. u is drawn in float32 whatever x's type
  (--precision), so the mask does not depend on the precision."""
  keep = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=tf.float32) >= rate
  return x * tf.cast(keep, x.dtype) / (1. - rate)


def _resnet_block_body(x, temb, *, out_ch, conv_shortcut, dropout, dropout_fn):
  """resnet_block inside its variable scope; dropout_fn(h, rate=dropout) applies the dropout."""
  B, H, W, C = x.shape.as_list()
  h = x
  h = nonlinearity(normalize(h, temb=temb, name='norm1'))
  h = nn.conv2d(h, name='conv1', num_units=out_ch)
  # add in the timestep embedding
  h += nn.dense(nonlinearity(temb), name='temb_proj', num_units=out_ch)[:, None, None, :]
  h = nonlinearity(normalize(h, temb=temb, name='norm2'))
  if dropout > 0:
    h = dropout_fn(h, rate=dropout)
  h = nn.conv2d(h, name='conv2', num_units=out_ch, init_scale=0.)
  if C != out_ch:
    if conv_shortcut:
      x = nn.conv2d(x, name='conv_shortcut', num_units=out_ch)
    else:
      x = nn.nin(x, name='nin_shortcut', num_units=out_ch)
  assert x.shape.as_list() == h.shape.as_list() == [B, H, W, out_ch]
  tf.logging.debug('%s: %s', tf.get_variable_scope().name, h.shape)
  return x + h


def attn_block(x, *, name, temb):
  """Single-head self-attention over the H*W positions: x + proj_out(softmax(q k^T / sqrt(C)) v)."""
  B, H, W, C = x.shape.as_list()
  with tf.variable_scope(name):
    h = normalize(x, temb=temb, name='norm')
    q = tf.reshape(nn.nin(h, name='q', num_units=C), [-1, H * W, C])
    k = tf.reshape(nn.nin(h, name='k', num_units=C), [-1, H * W, C])
    v = tf.reshape(nn.nin(h, name='v', num_units=C), [-1, H * W, C])
    w = tf.matmul(q, k, transpose_b=True) * (int(C) ** (-0.5))  # [B, HW (queries), HW (keys)]
    w = precision.in_float32(functools.partial(tf.nn.softmax, axis=-1), w)
    h = tf.reshape(tf.matmul(w, v), [-1, H, W, C])
    h.set_shape([B, H, W, C])
    h = nn.nin(h, name='proj_out', num_units=C, init_scale=0.)
    assert h.shape.as_list() == x.shape.as_list()
    tf.logging.debug('%s: %s', tf.get_variable_scope().name, h.shape)
    return x + h


def model(x, *, t, y, name, num_classes, reuse=tf.AUTO_REUSE, ch, out_ch, ch_mult=(1, 2, 4, 8), num_res_blocks,
          attn_resolutions, dropout=0., resamp_with_conv=True, recompute=False, dtype=tf.float32):
  """The DDPM U-Net: x [B, S, S, C] float32, t [B] int -> [B, S, S, out_ch] float32.

  `ch` is the base channel count, `ch_mult` the channel multiplier of each resolution level, `num_res_blocks` the
  residual blocks per level, `attn_resolutions` the spatial sizes that get self-attention. Class conditioning (`y`) is
  not supported, as in the original: `num_classes` must be 1 and `y` None. `recompute`: gradient checkpointing of
  every residual block (resnet_block), the same variables and gradients in less memory for more compute. `dtype` is
  the type the blocks compute in (precision.py); the timestep embedding and the group-norm statistics stay float32,
  the weights are float32.
  """
  B, S, _, _ = x.shape.as_list()
  assert x.dtype == tf.float32 and x.shape[2] == S
  # float t: euler / heun call the network at the fractional timesteps of diffusers' spacings; the sinusoidal
  # embedding is defined for any real t
  assert t.dtype in [tf.int32, tf.int64, tf.float32]
  num_resolutions = len(ch_mult)
  assert num_classes == 1 and y is None, 'class conditioning is not supported'
  del y

  with tf.variable_scope(name, reuse=reuse):
    # Timestep embedding
    with tf.variable_scope('temb'):
      temb = nn.get_timestep_embedding(t, ch)
      temb = nn.dense(temb, name='dense0', num_units=ch * 4)
      temb = nn.dense(nonlinearity(temb), name='dense1', num_units=ch * 4)
      assert temb.shape.as_list() == [B, ch * 4]
    x, temb = precision.cast(x, dtype), precision.cast(temb, dtype)

    # Downsampling
    hs = [nn.conv2d(x, name='conv_in', num_units=ch)]
    for i_level in range(num_resolutions):
      with tf.variable_scope('down_{}'.format(i_level)):
        # Residual blocks for this resolution
        for i_block in range(num_res_blocks):
          h = resnet_block(hs[-1], name='block_{}'.format(i_block), temb=temb, out_ch=ch * ch_mult[i_level],
                           dropout=dropout, recompute=recompute)
          if h.shape[1] in attn_resolutions:
            h = attn_block(h, name='attn_{}'.format(i_block), temb=temb)
          hs.append(h)
        # Downsample
        if i_level != num_resolutions - 1:
          hs.append(downsample(hs[-1], name='downsample', with_conv=resamp_with_conv))

    # Middle
    with tf.variable_scope('mid'):
      h = hs[-1]
      h = resnet_block(h, temb=temb, name='block_1', dropout=dropout, recompute=recompute)
      h = attn_block(h, name='attn_1', temb=temb)
      h = resnet_block(h, temb=temb, name='block_2', dropout=dropout, recompute=recompute)

    # Upsampling
    for i_level in reversed(range(num_resolutions)):
      with tf.variable_scope('up_{}'.format(i_level)):
        # Residual blocks for this resolution, each taking one skip connection
        for i_block in range(num_res_blocks + 1):
          h = resnet_block(tf.concat([h, hs.pop()], axis=-1), name='block_{}'.format(i_block), temb=temb,
                           out_ch=ch * ch_mult[i_level], dropout=dropout, recompute=recompute)
          if h.shape[1] in attn_resolutions:
            h = attn_block(h, name='attn_{}'.format(i_block), temb=temb)
        # Upsample
        if i_level != 0:
          h = upsample(h, name='upsample', with_conv=resamp_with_conv)
    assert not hs

    # End
    h = nonlinearity(normalize(h, temb=temb, name='norm_out'))
    h = nn.conv2d(h, name='conv_out', num_units=out_ch, init_scale=0.)
    assert h.shape.as_list() == x.shape.as_list()[:3] + [out_ch]
    return precision.cast(h, tf.float32)
