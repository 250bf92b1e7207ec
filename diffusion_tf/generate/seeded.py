"""Seeded sampling noise: the same seed (and batch size) gives the same images, even when a dump is resumed. Used by
the `sample` command and both evaluation workers.
"""

import tensorflow.compat.v1 as tf


class SeededNoise:
  """A `noise_fn` for the samplers whose k-th draw (k = 1, 2, ...) in batch b on replica r (< 64) is
  stateless_normal(seed=(seed, (64 b + r) * 2^20 + k)).

  Every batch restarts the count (`reset`), so batch b gets the same noise whether or not the batches before it ran
  in this process. Draws happen in a fixed order: each sampling step's noise feeds the next step.
  """

  def __init__(self, replica=0):
    self._seed = tf.placeholder_with_default(tf.constant(0, tf.int64), [], name='noise_seed')
    self._batch = tf.placeholder_with_default(tf.constant(0, tf.int64), [], name='noise_batch')
    self._counter = tf.Variable(0, dtype=tf.int64, trainable=False, use_resource=True, name='noise_counter',
                                collections=[tf.GraphKeys.LOCAL_VARIABLES])
    self._replica = replica
    self.reset_op = self._counter.assign(0)

  def __call__(self, shape, dtype):
    k = self._counter.assign_add(1)
    stream = (self._batch * 64 + self._replica) * (1 << 20) + k
    return tf.random.stateless_normal(shape=shape, seed=tf.stack([self._seed, stream]), dtype=dtype)

  def feed(self, seed, batch):
    return {self._seed: seed, self._batch: batch}


def build_seeded_samples(dist, batch_size, image_shape, sample_fn, inputs=()):
  """Replicate `sample_fn(dummy_noise, y, noise_fn, *inputs) -> dict` over `dist` for `batch_size` images of
  `image_shape`, each replica with its own SeededNoise (on a TPU plain tf.random_normal: the counter variable stays
  off the TPU program) and its share of the batch of every tensor in `inputs` (e.g. the images to edit). Returns
  (outputs, noises); run a batch with `run_seeded`."""
  noises = []

  def _fn(dummy_noise, *replica_inputs):
    if dist.kind == 'tpu':
      noise_fn = tf.random_normal
    else:
      noise_fn = SeededNoise(replica=len(noises))
      noises.append(noise_fn)
    return sample_fn(dummy_noise, tf.zeros([dummy_noise.shape[0]], dtype=tf.int32), noise_fn, *replica_inputs)

  dummy = tf.zeros([batch_size] + list(image_shape), tf.float32)
  return dist.replicate(_fn, [dummy, *inputs]), noises


def run_seeded(sess, outputs, noises, seed, batch, feed=None):
  """sess.run(outputs) for batch number `batch` of a seeded sampling run (the noise counters restart at 0), feeding
  also `feed` (the batch's inputs)."""
  feed = dict(feed or {})
  for noise in noises:
    feed.update(noise.feed(seed, batch))
  if noises:
    sess.run([noise.reset_op for noise in noises])
  return sess.run(outputs, feed)
