"""The U-Net of a checkpoint as a numpy function, for references computed outside the code under test.

  net = CheckpointNetwork(model, image_shape)   # model: a script's Model (e.g. run_cifar.Model(...)), in a graph
  net.load(ckpt, ema)                           # of its own; the weights of one checkpoint, read by name
  net.eps(x, t)                                 # eps_theta(x [n, H, W, C], t) as float64, any n
  net.noise(seed, stream, shape)                # stateless_normal(shape, seed=(seed, stream)) as float64

load() sets the model's variables from the checkpoint's tensors by name: the EMA shadows `<v>/ExponentialMovingAverage`
with ema, the raw `<v>` without, so the weights do not go through the code that the commands' --ema/--noema,
--checkpoint or --load_ckpt select. The graph, session and model are exposed (.graph, .sess, .model): a test may
build more of the model in .graph (its variables are shared) and run it in .sess with the loaded weights.
"""

import numpy as np
import tensorflow.compat.v1 as tf

EMA = '/ExponentialMovingAverage'


class CheckpointNetwork:

  def __init__(self, model, image_shape):
    self.model, self._shape = model, list(image_shape)
    self.graph = tf.Graph()
    self._eps = {}
    with self.graph.as_default():
      self._eps_graph(1)  # creates the variables
      variables = tf.trainable_variables()
      self._names = [v.op.name for v in variables]
      self._values = [tf.placeholder(v.dtype.base_dtype, v.shape) for v in variables]
      self._assign = tf.group(*[v.assign(p) for v, p in zip(variables, self._values)])
      self._seed, self._stream = tf.placeholder(tf.int64, []), tf.placeholder(tf.int64, [])
      self._draw_shape = tf.placeholder(tf.int32, [len(self._shape) + 1])
      self._draw = tf.random.stateless_normal(self._draw_shape, seed=tf.stack([self._seed, self._stream]))
      # every variable of the graph is a weight set by load(): none is left at its initial value unnoticed
      assert len(tf.global_variables()) == len(variables), tf.global_variables()
    self.sess = tf.Session(graph=self.graph)
    self.loaded = None

  def _eps_graph(self, batch):
    if batch not in self._eps:
      with self.graph.as_default():
        x = tf.placeholder(tf.float32, [batch] + self._shape)
        t = tf.placeholder(tf.int32, [batch])
        self._eps[batch] = (x, t, self.model._denoise(x, t, y=tf.zeros([batch], tf.int32), dropout=0.))
    return self._eps[batch]

  def load(self, ckpt, ema):
    """The weights of checkpoint prefix ckpt: the EMA shadows (ema=True) or the raw weights. Returns self."""
    if self.loaded != (ckpt, ema):
      reader = tf.train.load_checkpoint(ckpt)
      self.sess.run(self._assign, {p: reader.get_tensor(name + (EMA if ema else ''))
                                   for name, p in zip(self._names, self._values)})
      self.loaded = (ckpt, ema)
    return self

  def eps(self, x, t):
    """eps_theta(x, t) of the loaded weights, x [n, H, W, C], t an int (the same for the batch); float64."""
    assert self.loaded is not None, 'load() a checkpoint first'
    x_ph, t_ph, out = self._eps_graph(len(x))
    return self.sess.run(out, {x_ph: x.astype(np.float32), t_ph: np.full([len(x)], t, np.int32)}).astype(np.float64)

  def noise(self, seed, stream, shape):
    """stateless_normal(shape, seed=(seed, stream)), the seeded noise the commands document, as float64."""
    return self.sess.run(self._draw, {self._seed: seed, self._stream: stream, self._draw_shape: list(shape)}).astype(
      np.float64)

  def close(self):
    self.sess.close()
