"""The feature networks that sample-quality numbers are measured with (`--features` of `evaluate_samples.py` and
of `run_cifar.py reproduce`): `inception`, TF-GAN's Inception graph (the paper's IS and FID), or `digits`, the
offline digits classifier (evaluation/digits_classifier.py: digits-IS and digits-FID, comparable only with each
other). Both are extractors for reference_stats: .features(images) -> (features, logits), .graph_sha256,
.graph_path, and a context manager.

Importing this module imports no TensorFlow, so that commands check their flags first.
"""

from ..checks import check_choice
from ..errors import UsageError

FEATURES = ('inception', 'digits')
DIGITS_CELL = 8  # the digits classifier averages images down to 8x8


def check_features(features, *, inception_graph=None):
  """`features` is one of FEATURES; an Inception graph is given only for the Inception features."""
  check_choice('features', features, FEATURES)
  if features != 'inception' and inception_graph is not None:
    raise UsageError('--inception_graph={} with --features={}; expected --inception_graph only with '
                     '--features=inception'.format(inception_graph, features))
  return features


def check_image_shape(features, shape, where):
  """Images of `shape` [N, H, W, 3] suit the feature network: any size for Inception (resized to 299), square with a
  side that is a multiple of 8 for the digits classifier."""
  _, H, W, _ = shape
  if features == 'digits' and (H != W or H % DIGITS_CELL):
    raise UsageError('{}: images of {}x{} for --features=digits; expected square images whose side is a multiple '
                     'of {} (the digits classifier averages them down to 8x8)'.format(where, H, W, DIGITS_CELL))


def make_extractor(features, *, inception_graph=None, batch_size=100):
  """The feature network `features` names: an InceptionExtractor of `inception_graph` (InceptionGraphError when there
  is none) or the DigitsClassifier (trained once, then cached)."""
  check_features(features, inception_graph=inception_graph)
  if features == 'inception':
    from .. import inception  # late: it imports TensorFlow, which callers load only after checking their inputs
    return inception.InceptionExtractor(path=inception_graph, batch_size=batch_size)
  from .digits_classifier import DigitsClassifier  # late: it imports TensorFlow (through inception), as above
  return DigitsClassifier()
