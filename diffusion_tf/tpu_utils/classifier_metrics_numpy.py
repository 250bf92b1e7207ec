"""The original release's `diffusion_tf.tpu_utils.classifier_metrics_numpy`, kept as its face: Inception Score and
FID in numpy, from diffusion_tf/evaluation/metrics.py. New code imports from there.
"""

from ..evaluation.metrics import (  # noqa: F401
  classifier_score_from_logits, frechet_classifier_distance_from_activations, frechet_distance,
  inception_score_mean_std, kl_divergence, log_softmax, symmetric_matrix_square_root, test_all, trace_sqrt_product)

_symmetric_matrix_square_root = symmetric_matrix_square_root  # the original's (private) name
