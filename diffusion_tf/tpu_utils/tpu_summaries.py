"""The original release's `diffusion_tf.tpu_utils.tpu_summaries`, kept as its face: TpuSummaries (training summaries
on a TPU and on CPU/GPU), from diffusion_tf/train/summaries.py. New code imports from there.
"""

from ..train import summaries as _summaries
from ..train.summaries import TpuSummaries, TpuSummaryEntry  # noqa: F401


def __getattr__(name):
  """`summary`, the original's alias of tf.contrib.summary, resolved on first use (see train/summaries.py)."""
  if name == 'summary':
    return _summaries.summary
  raise AttributeError('module {!r} has no attribute {!r}'.format(__name__, name))


def __dir__():
  return sorted(list(globals()) + ['summary'])
