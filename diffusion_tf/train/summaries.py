"""Training summaries that work on a TPU (through a TPUEstimator host call) and on CPU/GPU (plain tf.summary).

On a TPU, summary ops cannot run inside the TPU computation: every scalar is sent to the host as a [1] tensor per
core (the host call concatenates them to [num_cores]), reduced there (mean by default) and written with the
TF 2 summary writer every `save_summary_steps` steps. On CPU/GPU the same entries become ordinary v1 summaries,
which the Estimator's SummarySaverHook writes every `save_summary_steps` steps.

Usage inside a model_fn:
  summ = TpuSummaries(model_dir, save_summary_steps=100)
  summ.scalar('train/loss', loss)
  spec = TPUEstimatorSpec(..., host_call=summ.get_host_call())   # TPU
  summ.write_plain()                                             # CPU/GPU instead
"""

import collections

import tensorflow.compat.v1 as tf
import tensorflow.compat.v2 as tf2

# summary_fn: what writes the reduced value, tf2.summary.scalar or tf2.summary.image (TF 2 summary API).
TpuSummaryEntry = collections.namedtuple('TpuSummaryEntry', 'summary_fn name tensor reduce_fn')


def __getattr__(name):
  """`summary`, the original's alias of tf.contrib.summary, resolved on first use (importing tf.contrib is slow and
  TF 2 has none; the writing here uses tf.compat.v2.summary, its successor)."""
  if name == 'summary':
    try:
      from tensorflow.contrib import summary  # lazily: see above
    except ImportError:  # TF 2: an AttributeError, so that dir() / inspect.getmembers / help() pass over the name
      raise AttributeError('module {!r} has no attribute {!r} on TensorFlow 2 (no tf.contrib); use '
                           'tf.compat.v2.summary'.format(__name__, name)) from None
    return summary
  raise AttributeError('module {!r} has no attribute {!r}'.format(__name__, name))


def __dir__():
  return sorted(list(globals()) + ['summary'])


class TpuSummaries:
  """Scalar and image summaries, each with a function reducing the values of all replicas to one."""

  def __init__(self, log_dir, save_summary_steps=250):
    if int(save_summary_steps) < 1:
      raise ValueError('save_summary_steps must be >= 1, got {!r}'.format(save_summary_steps))
    self._log_dir = log_dir
    self._save_summary_steps = int(save_summary_steps)
    self._entries = []

  @property
  def names(self):
    return [e.name for e in self._entries]

  def scalar(self, name, tensor, reduce_fn=tf.math.reduce_mean):
    """Add scalar `tensor` (shape [] or [1]) as summary `name`; on TPU the per-core values are reduced by reduce_fn."""
    if name in self.names:
      raise ValueError('summary {!r} added twice'.format(name))
    tensor = tf.convert_to_tensor(tensor)
    if tensor.shape.ndims == 0:
      tensor = tf.expand_dims(tensor, 0)
    assert tensor.shape.as_list() == [1], (name, tensor.shape)
    self._entries.append(TpuSummaryEntry(summary_fn=tf2.summary.scalar, name=name, tensor=tf.cast(tensor, tf.float32),
                                         reduce_fn=reduce_fn))

  def image(self, name, tensor, reduce_fn):
    """Add images [B, H, W, C] as summary `name`; on TPU the host receives every core's batch concatenated and writes
    reduce_fn of it (e.g. lambda x: x[:8])."""
    if name in self.names:
      raise ValueError('summary {!r} added twice'.format(name))
    tensor = tf.convert_to_tensor(tensor)
    assert tensor.shape.ndims == 4, (name, tensor.shape)
    self._entries.append(TpuSummaryEntry(summary_fn=tf2.summary.image, name=name, tensor=tensor, reduce_fn=reduce_fn))

  def get_host_call(self):
    """(host_call_fn, tensors) for TPUEstimatorSpec(host_call=...): every tensor has a leading batch dimension."""
    global_step = tf.train.get_or_create_global_step()
    tensors = [tf.reshape(tf.cast(global_step, tf.int64), [1])] + [e.tensor for e in self._entries]
    return self._host_call_fn, tensors

  def _host_call_fn(self, step, *values):
    """Runs on the host: `step` is [num_cores] (all equal), each value [num_cores]."""
    step = step[0]
    writer = tf2.summary.create_file_writer(self._log_dir)
    with writer.as_default(), tf2.summary.record_if(tf.equal(step % self._save_summary_steps, 0)):
      for entry, value in zip(self._entries, values):
        entry.summary_fn(entry.name, entry.reduce_fn(value), step=step)
      return tf.summary.all_v2_summary_ops()

  def write_plain(self):
    """Add every entry as a v1 tf.summary.scalar (CPU/GPU: the Estimator writes them)."""
    for entry in self._entries:
      if entry.summary_fn is tf2.summary.image:
        tf.summary.image(entry.name, entry.reduce_fn(entry.tensor))
      else:
        tf.summary.scalar(entry.name, entry.reduce_fn(entry.tensor))
