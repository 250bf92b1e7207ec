"""The original release's `diffusion_tf.tpu_utils.tpu_utils`, kept as its face: every public name it had (and the
names code written against this project uses) re-exported, with the same signatures, from the modules that now do
one job each:

  model.py          Model: what a script's model provides (training loss, samplers, bits/dim); make_ema
  run_dir.py        a run's kwargs.json and checkpoints: latest / resolve / step / restore (EMA) weights
  devices.py        Distribution and choose_distribution (TPU, GPUs, CPU devices, a TF_CONFIG cluster); distributed
  training.py       run_training: one model_fn for TPU and CPU/GPU, resume, EMA, summaries, stop signals
  training_hooks.py the training loop's progress / NaN check and the multi-worker watchdog
  evaluation.py     EvalWorker (samples, Inception Score, FID), InceptionFeatures, reference images
  ../errors.py      the project's errors (UsageError, NonFiniteLossError, TrainingStopped, ClusterError, ...)

New code imports from those modules; this one only re-exports.
"""

from .. import inception, utils
from ..errors import ClusterError, NonFiniteLossError, TrainingStopped, UsageError  # noqa: F401
from ..runs.devices import (  # noqa: F401
  TF_CONFIG_VAR, Cluster, Distribution, choose_distribution, cluster_from_tf_config, distributed, get_tpu_replica_id,
  num_tpu_replicas)
from ..evaluation.watcher import (  # noqa: F401
  EvalWorker, InceptionFeatures, default_stats_dir, iterate_real_images, num_reference_images, run_inception)
from ..experiments.model import Model, make_ema  # noqa: F401
from ..runs.run_dir import (  # noqa: F401
  EMA_SUFFIX, KWARGS_FILE, checkpoint_exists, checkpoint_step, find_train_kwargs, latest_checkpoint,
  load_train_kwargs, open_restored_session, resolve_checkpoint, resolve_load_ckpt, restore_weights,
  write_kwargs_json)
from ..train.loop import (  # noqa: F401
  DEFAULT_WORKER_TIMEOUT_SECS, make_model_dir, make_tpu_config, replica_grad_clip, run_training)

# The original's names for the Inception graph and the data scaling (defined in diffusion_tf/inception.py and utils.py).
INCEPTION_URL = inception.INCEPTION_URL
INCEPTION_FROZEN_GRAPH = inception.INCEPTION_FROZEN_GRAPH
normalize_data = utils.normalize_data
unnormalize_data = utils.unnormalize_data


# The original's names that are loaded when first read, so that importing the module needs no network. dir() does not
# list them: help(), pydoc, IDEs and inspect.getmembers read every name that dir() lists, and reading this one may
# download the graph.
_LOADED_ON_FIRST_USE = ('INCEPTION_GRAPH_DEF',)


def __getattr__(name):
  """INCEPTION_GRAPH_DEF, the frozen Inception graph, loaded on first use; see inception.load_inception_graph for
  where it comes from."""
  if name == 'INCEPTION_GRAPH_DEF':
    return inception.get_inception_graph_def()
  raise AttributeError('module {!r} has no attribute {!r}'.format(__name__, name))
