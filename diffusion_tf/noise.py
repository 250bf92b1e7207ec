"""Standard normal noise for the reverse process, shared by the diffusion classes and the samplers."""

import tensorflow.compat.v1 as tf


def noise_like(shape, noise_fn=tf.random_normal, repeat=False, dtype=tf.float32):
  """Standard normal noise of `shape`; with `repeat`, one draw shared by the whole batch."""
  if repeat:
    one = noise_fn(shape=(1, *shape[1:]), dtype=dtype)
    return tf.tile(one, [shape[0]] + [1] * (len(shape) - 1))
  return noise_fn(shape=shape, dtype=dtype)


def step_noise_like(x, noise_fn=tf.random_normal, repeat=False):
  """Noise for one reverse step from x. The draw is made to wait for x: inside a tf.while_loop a draw that depends
  on nothing would run ahead of the chain, and a seeded noise_fn would not give the same samples twice."""
  with tf.control_dependencies([x]):
    return noise_like(x.shape.as_list(), noise_fn, repeat=repeat, dtype=x.dtype)
