"""The original release's `diffusion_tf.tpu_utils.simple_eval_worker`, kept as its face: SimpleEvalWorker (bits/dim
and progressive samples of one checkpoint), from diffusion_tf/evaluation/simple_eval.py. New code imports from there.
"""

from ..evaluation.simple_eval import MODES, SimpleEvalWorker  # noqa: F401
