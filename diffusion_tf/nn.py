"""Neural network building blocks of the DDPM U-Net.

Variables are created with `tf.get_variable` under the caller's variable scope with the names of the original
release (`W`, `b`), so that its checkpoints restore unchanged. They are float32; a layer reads them in the type of
its input (precision.py: the U-Net's --precision).
"""

import math

import tensorflow.compat.v1 as tf

from .precision import cast_like

DEFAULT_DTYPE = tf.float32  # the dtype of every variable (activations: precision.py)


def default_init(scale):
  """Variance scaling, fan_avg mode, uniform: U(-a, a), a = sqrt(3 * scale / ((fan_in + fan_out) / 2)).

  A scale of 0 (the zero-initialised output layers of the original) becomes 1e-10, since the initializer rejects 0.
  """
  scale = 1e-10 if scale == 0 else scale
  return tf.initializers.variance_scaling(scale=scale, mode='fan_avg', distribution='uniform')


def debug_print(x, name):
  """x, printing `name` and the mean, std, min and max of x (tf.print, to stderr) whenever it is evaluated."""
  print_op = tf.print(name, tf.reduce_mean(x), tf.math.reduce_std(x), tf.reduce_min(x), tf.reduce_max(x))
  with tf.control_dependencies([print_op]):
    return tf.identity(x)


def flatten(x):
  """[B, ...] -> [B, prod(...)]."""
  return tf.reshape(x, [-1, int(_prod(x.shape.as_list()[1:]))])


def sumflat(x):
  """Sum over every axis but the batch axis: [B, ...] -> [B]."""
  return tf.reduce_sum(x, axis=list(range(1, len(x.shape))))


def meanflat(x):
  """Mean over every axis but the batch axis: [B, ...] -> [B]."""
  return tf.reduce_mean(x, axis=list(range(1, len(x.shape))))


def _prod(xs):
  out = 1
  for v in xs:
    out *= v
  return out


def contract_inner(x, y):
  """Contract the last axis of x with the first axis of y: [..., a] x [a, b] -> [..., b]."""
  x_shape = x.shape.as_list()
  a, b = y.shape.as_list()
  assert x_shape[-1] == a, (x.shape, y.shape)
  out = tf.reshape(tf.matmul(tf.reshape(x, [-1, a]), y), [-1] + x_shape[1:-1] + [b])
  if x_shape[0] is not None:
    out.set_shape(x_shape[:-1] + [b])
  return out


def nin(x, *, name, num_units, init_scale=1.):
  """Network-in-network (a 1x1 convolution as a matmul over the channel axis): [..., C] -> [..., num_units].

  Weights `W` [C, num_units] and `b` [num_units].
  """
  with tf.variable_scope(name):
    in_dim = int(x.shape[-1])
    W = tf.get_variable('W', shape=[in_dim, num_units], initializer=default_init(scale=init_scale))
    b = tf.get_variable('b', shape=[num_units], initializer=tf.constant_initializer(0.))
    y = contract_inner(x, cast_like(W, x)) + cast_like(b, x)
    assert y.shape.as_list()[-1] == num_units
    return y


def dense(x, *, name, num_units, init_scale=1., bias=True):
  """Fully connected layer: [B, C] -> [B, num_units]. Weights `W` [C, num_units] and `b` [num_units]."""
  with tf.variable_scope(name):
    _, in_dim = x.shape.as_list()
    W = tf.get_variable('W', shape=[in_dim, num_units], initializer=default_init(scale=init_scale))
    z = tf.matmul(x, cast_like(W, x))
    if not bias:
      return z
    b = tf.get_variable('b', shape=[num_units], initializer=tf.constant_initializer(0.))
    return z + cast_like(b, x)


def conv2d(x, *, name, num_units, filter_size=(3, 3), stride=1, dilation=None, pad='SAME', init_scale=1.,
           bias=True):
  """2-D convolution, NHWC. Weights `W` [fh, fw, C, num_units] (HWIO) and `b` [num_units]."""
  with tf.variable_scope(name):
    assert x.shape.ndims == 4
    if isinstance(filter_size, int):
      filter_size = (filter_size, filter_size)
    W = tf.get_variable('W', shape=[*filter_size, int(x.shape[-1]), num_units],
                        initializer=default_init(scale=init_scale))
    z = tf.nn.conv2d(x, cast_like(W, x), strides=stride, padding=pad, dilations=dilation)
    if not bias:
      return z
    b = tf.get_variable('b', shape=[num_units], initializer=tf.constant_initializer(0.))
    return z + cast_like(b, x)


def get_timestep_embedding(timesteps, embedding_dim: int):
  """Sinusoidal timestep embedding (Vaswani et al. 2017, sec. 3.5, as used by DDPM): [B] -> [B, embedding_dim].

  With half = embedding_dim // 2 and frequencies w_i = exp(-log(10000) * i / (half - 1)), i = 0..half-1,
  emb(t) = [sin(t w_0), ..., sin(t w_{half-1}), cos(t w_0), ..., cos(t w_{half-1})] (zero-padded if the dim is odd).
  """
  assert len(timesteps.shape) == 1
  half_dim = embedding_dim // 2
  log_freq_step = math.log(10000) / (half_dim - 1)
  freqs = tf.exp(tf.range(half_dim, dtype=tf.float32) * -log_freq_step)
  args = tf.cast(timesteps, dtype=tf.float32)[:, None] * freqs[None, :]
  emb = tf.concat([tf.sin(args), tf.cos(args)], axis=1)
  if embedding_dim % 2 == 1:
    emb = tf.pad(emb, [[0, 0], [0, 1]])
  assert emb.shape.as_list() == [timesteps.shape[0], embedding_dim]
  return emb


def recompute_grad(fn, inputs, *, name):
  """fn(*inputs) in variable scope `name`, with its intermediate activations recomputed in the backward pass
  instead of kept from the forward one (gradient checkpointing, Chen et al. 2016): memory of one block's
  activations at a time, for a second forward pass of the block.

  inputs: float tensors (the gradient flows to them and to the variables fn gets with tf.get_variable); fn returns
  one tensor. The forward pass is built as usual (it creates the variables, under their usual names); its output
  passes to the rest of the network through a function whose gradient rebuilds fn from the same inputs and the
  same variable values (read through a custom getter, so no variable is created or looked up again in the
  optimizer's scope, where tf.recompute_grad of TF 1.15 would) and differentiates that copy. Any randomness of fn
  must come from stateless ops seeded by a tensor made outside fn (the same value in both passes): a stateful
  random op would draw again. The recomputation waits for the incoming gradient, so that it runs in the backward
  pass and not beside the forward one.
  """
  read = {}  # full variable name -> what tf.get_variable returned in the forward pass

  def recording_getter(getter, name, *args, **kwargs):
    read[name] = getter(name, *args, **kwargs)
    return read[name]

  scope_name = name
  with tf.variable_scope(scope_name, custom_getter=recording_getter) as scope:
    out = fn(*inputs)
  names = sorted(read)
  values = [tf.convert_to_tensor(read[n]) for n in names]
  num_inputs = len(inputs)

  @tf.custom_gradient
  def checkpointed(out, *args):
    def grad(dy):
      with tf.control_dependencies([dy]):
        args_again = [tf.identity(a) for a in args]
      by_name = dict(zip(names, args_again[num_inputs:]))

      def replay_getter(getter, name, *args, **kwargs):
        del getter, args, kwargs
        return by_name[name]

      with tf.variable_scope(scope, custom_getter=replay_getter, auxiliary_name_scope=False), \
          tf.name_scope('recompute'):
        out_again = fn(*args_again[:num_inputs])
      grads = tf.gradients(out_again, args_again, grad_ys=dy)
      return [None] + grads
    return tf.identity(out), grad

  return checkpointed(tf.stop_gradient(out), *inputs, *values)
