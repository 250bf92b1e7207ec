"""A tiny stand-in for TF-GAN's frozen Inception graph, so that evaluation code runs in tests without the network.

It has the interface of `inceptionv1_for_inception_score_tpu.pb` as tfgan.eval.run_inception uses it:
  input   `Mul:0`     float32 [B, 299, 299, 3] in [-1, 1] (a Placeholder, as in TF-GAN's own test graph; the
                      caller replaces it through tf.import_graph_def's input_map)
  outputs `pool_3:0`  float32 [B, 1, 1, 2048]
          `logits:0`  float32 [B, 1008]
computed from 4x4 average-pooled pixels by fixed random projections (standin_reference gives the same in numpy),
and it is packed like the real download: a .tar.gz holding the .pb at its top level.

  make_standin_inception(tmpdir) -> path of frozen_inception_v1_2015_12_05_v4.tar.gz

pool_dim=2048 is the real graph's size; FID on 2048 features costs seconds of eigendecompositions, so tests that
only need *some* features may pass a smaller pool_dim (e.g. 64); the evaluation code reads the size from the graph.
"""

import os
import tarfile

import numpy as np
import tensorflow.compat.v1 as tf

TARBALL_NAME = 'frozen_inception_v1_2015_12_05_v4.tar.gz'
PB_NAME = 'inceptionv1_for_inception_score_tpu.pb'
POOL_DIM, NUM_LOGITS, IMAGE_SIZE = 2048, 1008, 299
_WINDOW = 60  # average pooling 60x60, stride 60, VALID: 299 -> 4 cells per side
_NUM_POOLED = 4 * 4 * 3


def _weights(seed, pool_dim):
  rng = np.random.RandomState(seed)
  w_logits = (rng.randn(_NUM_POOLED, NUM_LOGITS) * 3.0).astype(np.float32)
  w_pool = (rng.randn(_NUM_POOLED, pool_dim) * 2.0).astype(np.float32)
  b_pool = rng.randn(pool_dim).astype(np.float32)
  return w_pool, b_pool, w_logits


def standin_graph_def(seed=0, pool_dim=POOL_DIM):
  """The stand-in network as a frozen tf.GraphDef (constants only)."""
  w_pool, b_pool, w_logits = _weights(seed, pool_dim)
  with tf.Graph().as_default() as graph:
    x = tf.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3], name='Mul')
    pooled = tf.nn.avg_pool(x, ksize=[1, _WINDOW, _WINDOW, 1], strides=[1, _WINDOW, _WINDOW, 1], padding='VALID')
    flat = tf.reshape(pooled, [-1, _NUM_POOLED])
    features = tf.nn.relu(tf.matmul(flat, tf.constant(w_pool)) + tf.constant(b_pool))
    tf.reshape(features, [-1, 1, 1, pool_dim], name='pool_3')
    tf.identity(tf.matmul(flat, tf.constant(w_logits)), name='logits')
  return graph.as_graph_def()


def standin_reference(preprocessed, seed=0, pool_dim=POOL_DIM):
  """numpy twin of the stand-in: Inception inputs [B, 299, 299, 3] in [-1, 1] -> (pool_3 [B, D], logits [B, 1008])."""
  w_pool, b_pool, w_logits = _weights(seed, pool_dim)
  x = np.asarray(preprocessed, np.float64)
  B = x.shape[0]
  cells = x[:, :4 * _WINDOW, :4 * _WINDOW].reshape(B, 4, _WINDOW, 4, _WINDOW, 3).mean(axis=(2, 4))  # [B, 4, 4, 3]
  flat = cells.reshape(B, _NUM_POOLED)
  return np.maximum(flat.dot(w_pool) + b_pool, 0.), flat.dot(w_logits)


def write_standin_pb(path, seed=0, pool_dim=POOL_DIM):
  """Write the stand-in graph as a binary .pb; return path."""
  with open(path, 'wb') as f:
    f.write(standin_graph_def(seed, pool_dim).SerializeToString())
  return path


def make_standin_inception(tmpdir, seed=0, pool_dim=POOL_DIM):
  """Write the stand-in .pb and a tarball like TF-GAN's download into tmpdir; return the tarball's path.

  Different seeds or pool_dims give different graphs (different sha256); keep them in different tmpdirs.
  """
  tmpdir = str(tmpdir)
  pb_path = write_standin_pb(os.path.join(tmpdir, PB_NAME), seed, pool_dim)
  tar_path = os.path.join(tmpdir, TARBALL_NAME)
  with tarfile.open(tar_path, 'w:gz') as tar:
    tar.add(pb_path, arcname=PB_NAME)
  return tar_path
