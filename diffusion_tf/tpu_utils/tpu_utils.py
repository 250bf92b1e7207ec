"""Training and evaluation infrastructure: one model_fn for a Cloud TPU and for CPU/GPU machines.

  run_training(...)  trains a `Model` with a TPUEstimator: on TPU cores when `tpu` names a TPU, otherwise with
                     use_tpu=False on this machine (one CPU or GPU), or with an Estimator and a MirroredStrategy
                     when several GPUs are used (a MultiWorkerMirroredStrategy over the machines of a cluster that
                     the TF_CONFIG environment variable describes). Adam (or RMSProp) with a linear warm-up and
                     gradient clipping (each replica's gradient clipped at grad_clip, then averaged, as in the
                     original), an EMA of the weights (decay 0.9999) updated after every step, summaries train/loss, gnorm, pnorm
                     and lr. An existing model_dir is resumed from its latest readable checkpoint; a NaN/inf loss
                     stops the run with an error naming the step, without updating the weights; SIGTERM/SIGINT
                     save the current step and stop.
  EvalWorker         watches a model_dir for checkpoints, samples with the EMA weights, and writes image grids and
                     the Inception Score / FID (against the training set and the test set if there is one).

Also shared helpers: checkpoint lookup and (EMA) restore, the choice of devices (`Distribution`) and replicating a
computation over them (`Distribution.replicate`), and reading and writing kwargs.json.
"""

import collections
import datetime
import functools
import json
import os
import re
import sys
import threading
import time

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.python.client import device_lib
from tensorflow.python.tpu import tpu_function
from tensorflow.python.tpu.ops import tpu_ops

from .. import inception
from .. import compat, provenance, utils
from ..errors import ClusterError, NonFiniteLossError, TrainingStopped, UsageError  # noqa: F401 (also the API's names)
from ..utils import save_npz_atomic, to_uint8, write_json_atomic
from . import checkpoint_recovery, classifier_metrics_numpy, fid_stats, preemption, run_lock, tpu_summaries
from .paths import check_writable_dir, is_url
from .seeded_sampling import build_seeded_samples, run_seeded

# The original's names for the Inception graph and the data scaling (defined in diffusion_tf/inception.py and utils.py).
INCEPTION_URL = inception.INCEPTION_URL
INCEPTION_FROZEN_GRAPH = inception.INCEPTION_FROZEN_GRAPH
normalize_data = utils.normalize_data
unnormalize_data = utils.unnormalize_data


def __getattr__(name):
  """INCEPTION_GRAPH_DEF, the frozen Inception graph, loaded on first use (the original downloaded it at import);
  see inception.load_inception_graph for where it comes from."""
  if name == 'INCEPTION_GRAPH_DEF':
    return inception.get_inception_graph_def()
  raise AttributeError('module {!r} has no attribute {!r}'.format(__name__, name))


def __dir__():
  return sorted(list(globals()) + ['INCEPTION_GRAPH_DEF'])

EMA_SUFFIX = '/ExponentialMovingAverage'
_NONFINITE_MARKER = 'non-finite training loss at step'



# ---------------------------------------------------------------------------------------------------------------
# The model interface

class Model:
  """What a script's model provides. All images, inputs and outputs, are normalized to [-1, 1].

  Subclasses set `self.diffusion` (a GaussianDiffusion or GaussianDiffusion2), `self.dropout` and `self.randflip`,
  and implement `_denoise(x, t, y, dropout)` and `_losses(denoise_fn, x_start, t)` (the per-example training loss of
  their diffusion: `training_losses` or `p_losses`).
  """

  diffusion = None
  dropout = 0.
  randflip = False

  def _denoise(self, x, t, y, dropout):
    raise NotImplementedError

  def _losses(self, denoise_fn, x_start, t):
    raise NotImplementedError

  def train_fn(self, x, y) -> dict:
    """{'loss': scalar} for a batch x [B, H, W, C] of training images (DDPM Algorithm 1: t uniform in 0..T-1, after a
    random horizontal flip if `randflip`)."""
    B, H, W, C = x.shape.as_list()
    if self.randflip:
      x = tf.image.random_flip_left_right(x)
      assert x.shape.as_list() == [B, H, W, C]
    t = tf.random_uniform([B], 0, self.diffusion.num_timesteps, dtype=tf.int32)
    losses = self._losses(functools.partial(self._denoise, y=y, dropout=self.dropout), x_start=x, t=t)
    assert losses.shape == t.shape == [B]
    return {'loss': tf.reduce_mean(losses)}

  def samples_fn(self, dummy_x, y, noise_fn=tf.random_normal) -> dict:
    """{'samples': [B, H, W, C]} from the original ancestral sampler; `dummy_x` only gives the shape."""
    return {
      'samples': self.diffusion.p_sample_loop(
        denoise_fn=functools.partial(self._denoise, y=y, dropout=0),
        shape=dummy_x.shape.as_list(),
        noise_fn=noise_fn)
    }

  def sample_and_run_inception(self, dummy_x, y, clip_samples=True):
    """{key: {'pool_3': [B, 2048], 'logits': [B, 1008]}} of each output of samples_fn: the samples (clipped to
    [-1, 1] if clip_samples) mapped to [0, 255] without rounding, through the Inception graph (as the original)."""
    return {k: inception.run_inception(inception.preprocess_pixels(
      unnormalize_data(tf.clip_by_value(v, -1., 1.) if clip_samples else v)))
      for k, v in self.samples_fn(dummy_x, y).items()}

  def progressive_samples_fn(self, dummy_noise, y, noise_fn=tf.random_normal) -> dict:
    """{'samples': [B, H, W, C], 'progressive_samples': [B, K, H, W, C]} (x_0 predictions along the chain)."""
    raise NotImplementedError('this model has no progressive sampler')

  def bpd_fn(self, x, y) -> dict:
    """{'total_bpd', 'terms_bpd', 'prior_bpd', 'mse'} for data x, or None if the model has no likelihood."""
    return None

  def sampler_samples_fn(self, dummy_noise, y, *, sampler, num_inference_steps=None, eta=0.,
                         use_clipped_model_output=False, skip_prk_steps=False, noise_fn=tf.random_normal,
                         skip_type='uniform'):
    """{'samples': ...} from one of the samplers of diffusion_tf/samplers.py (ddpm (respaced), ddim, pndm)."""
    return {'samples': self.diffusion.sample_loop(
      functools.partial(self._denoise, y=y, dropout=0), shape=dummy_noise.shape.as_list(), sampler=sampler,
      num_inference_steps=num_inference_steps, eta=eta, use_clipped_model_output=use_clipped_model_output,
      skip_prk_steps=skip_prk_steps, noise_fn=noise_fn, skip_type=skip_type)}


def make_ema(global_step, ema_decay, trainable_variables):
  """utils.make_ema: (ema, update op) with shadows `<variable>/ExponentialMovingAverage`."""
  return utils.make_ema(global_step=global_step, ema_decay=ema_decay, trainable_variables=trainable_variables)


# ---------------------------------------------------------------------------------------------------------------
# kwargs.json and checkpoints

KWARGS_FILE = 'kwargs.json'


def write_kwargs_json(model_dir, kwargs):
  """Write kwargs.json (sorted keys) atomically."""
  utils.atomic_write_bytes(os.path.join(model_dir, KWARGS_FILE),
                           (json.dumps(kwargs, indent=2, sort_keys=True) + '\n').encode('utf-8'))


def load_train_kwargs(model_dir):
  """The training kwargs a model_dir was created with (its kwargs.json)."""
  path = os.path.join(model_dir, KWARGS_FILE)
  if not tf.io.gfile.exists(path):
    raise UsageError('{} does not exist; expected the model_dir of a training run (it holds kwargs.json and '
                     'model.ckpt-* files)'.format(path))
  with tf.io.gfile.GFile(path, 'r') as f:
    try:
      kwargs = json.loads(f.read())
    except ValueError as e:
      raise UsageError('{} is not valid JSON ({})'.format(path, e)) from None
  if not isinstance(kwargs, dict):
    raise UsageError('{} holds {}; expected a JSON object of training kwargs'.format(path, type(kwargs).__name__))
  return kwargs


def latest_checkpoint(model_dir, warn=None):
  """Path prefix of the newest readable checkpoint in model_dir, or None. Newer unreadable ones (truncated or corrupt
  data or index, a missing shard) are moved aside to model_dir/unreadable/ after one warning line each (to `warn`,
  default stderr), and the `checkpoint` state file is rewritten to match (checkpoint_recovery)."""
  if not model_dir or not tf.io.gfile.isdir(model_dir):
    return None
  return checkpoint_recovery.newest_readable_checkpoint(model_dir, warn=warn)


def checkpoint_exists(path):
  return tf.io.gfile.exists(path + '.index')


def resolve_checkpoint(path):
  """A checkpoint prefix (model.ckpt-N) or a directory (its latest checkpoint) -> the prefix; UsageError if none."""
  if path is None:
    raise UsageError('no checkpoint given')
  if tf.io.gfile.isdir(path):
    ckpt = latest_checkpoint(path)
    if ckpt is None:
      raise UsageError('{} has no checkpoint that can be read (no "checkpoint" file listing a readable model.ckpt-*); '
                       'expected a directory with TF checkpoints or a checkpoint prefix such as '
                       '{}/model.ckpt-1000'.format(path, path))
    return ckpt
  if not checkpoint_exists(path):
    raise UsageError('checkpoint {} does not exist (no {}.index); expected a TF checkpoint prefix such as '
                     'model_dir/model.ckpt-1000, or a directory holding checkpoints'.format(path, path))
  problem = checkpoint_recovery.checkpoint_problem(path)
  if problem is not None:
    raise UsageError('checkpoint {} cannot be read ({}); expected an intact checkpoint (give its directory to use '
                     'the newest readable one)'.format(path, problem))
  return path


def resolve_load_ckpt(model_dir, load_ckpt, resolve_path=None):
  """The checkpoint a --load_ckpt flag names: a name relative to model_dir as in the original
  (`model.ckpt-790000`), else a checkpoint prefix or a directory (passed through resolve_path first, e.g.
  Paths.resolve for the bucket layout); None: model_dir's latest checkpoint. UsageError if there is none."""
  if load_ckpt is None:
    return resolve_checkpoint(model_dir)
  load_ckpt = str(load_ckpt)
  if model_dir and not is_url(load_ckpt) and not os.path.isabs(load_ckpt):
    inside = os.path.join(model_dir, load_ckpt)
    if checkpoint_exists(inside):
      return resolve_checkpoint(inside)
  return resolve_checkpoint(resolve_path(load_ckpt) if resolve_path else load_ckpt)


def checkpoint_step(ckpt):
  """The global step stored in a checkpoint (0 if it has none)."""
  reader = tf.train.load_checkpoint(ckpt)
  if reader.has_tensor('global_step'):
    return int(reader.get_tensor('global_step'))
  match = re.search(r'-(\d+)$', ckpt)
  return int(match.group(1)) if match else 0


def restore_weights(sess, ckpt, *, ema, var_list=None):
  """Restore the variables of the current graph (default: all global variables) from `ckpt`.

  With `ema`, each variable `v` is loaded from the checkpoint's EMA shadow `v/ExponentialMovingAverage` (what
  utils.ema_scope reads during training); variables without a shadow (global_step) are loaded as they are. EMA
  slots that a converted checkpoint's provenance.json marks as copies of non-EMA weights get one warning line.
  """
  var_list = tf.global_variables() if var_list is None else var_list
  trainable = set(tf.trainable_variables())
  reader = tf.train.load_checkpoint(ckpt)
  shapes = reader.get_variable_to_shape_map()
  name_map, missing = {}, []
  for v in var_list:
    name = v.op.name
    src = name + EMA_SUFFIX if (ema and name != 'global_step' and name + EMA_SUFFIX in shapes) else name
    if ema and name != 'global_step' and v in trainable and src == name:
      missing.append(name + EMA_SUFFIX)
      continue
    if src not in shapes:
      missing.append(src)
      continue
    if list(shapes[src]) != v.shape.as_list():
      raise UsageError('checkpoint {}: {} has shape {}, but the model built from the flags/kwargs.json needs {}; '
                       'expected a checkpoint of the same model configuration'.format(
                         ckpt, src, shapes[src], v.shape.as_list()))
    name_map[src] = v
  if missing:
    raise UsageError('checkpoint {} lacks {} variable(s) the model needs, e.g. {}{}'.format(
      ckpt, len(missing), missing[0], ' (use --noema to load the raw weights)' if ema and
      missing[0].endswith(EMA_SUFFIX) else '; expected a checkpoint of the same model configuration'))
  tf.train.Saver(var_list=name_map).restore(sess, ckpt)
  warning = provenance.ema_warning(ckpt) if ema else None
  if warning:
    print(warning, file=sys.stderr)


def find_train_kwargs(model_dir, ckpt):
  """(kwargs, path of kwargs.json) of the run that wrote checkpoint `ckpt`: from model_dir, else from the checkpoint's
  directory; (None, None) when neither has a kwargs.json (a released or converted checkpoint)."""
  for d in [model_dir, os.path.dirname(ckpt)]:
    if d and tf.io.gfile.exists(os.path.join(d, KWARGS_FILE)):
      return load_train_kwargs(d), os.path.join(d, KWARGS_FILE)
  return None, None


def open_restored_session(dist, ckpt, ema):
  """A session of `dist` on the current graph with its local variables initialized and its weights restored from
  `ckpt` (the EMA weights if `ema`)."""
  sess = dist.session()
  sess.run(tf.local_variables_initializer())
  restore_weights(sess, ckpt, ema=ema)
  return sess


# ---------------------------------------------------------------------------------------------------------------
# Devices

def num_tpu_replicas():
  """The number of TPU cores the current TPU computation is replicated over (inside tf.tpu.shard / a TPUEstimator
  model_fn on a TPU; None elsewhere)."""
  return tpu_function.get_tpu_context().number_of_shards


def get_tpu_replica_id():
  """This core's index, an int32 scalar tensor, inside a replicated TPU computation."""
  with tf.control_dependencies(None):
    return tpu_ops.tpu_replicated_input(list(range(num_tpu_replicas())))


def distributed(fn, *, args, reduction, strategy):
  """fn(*args) on every replica of a tf.distribute `strategy`, each output reduced over the replicas: 'mean' (the
  mean of the replicas' means) or 'concat' (the replicas' outputs concatenated along axis 0)."""
  if reduction not in ('mean', 'concat'):
    raise NotImplementedError(reduction)
  run = getattr(strategy, 'run', None) or strategy.experimental_run_v2
  out = run(fn, args=args)
  if reduction == 'mean':
    return tf.nest.map_structure(lambda x: tf.reduce_mean(strategy.reduce('mean', x, axis=None)), out)
  return tf.nest.map_structure(lambda x: tf.concat(strategy.experimental_local_results(x), axis=0), out)
TF_CONFIG_VAR = 'TF_CONFIG'
_CLUSTER_TASK_TYPES = ('chief', 'worker')


class Cluster(collections.namedtuple('Cluster', ['spec', 'task_type', 'task_index'])):
  """The machines of a multi-worker run, as TF_CONFIG describes them: `spec` {'chief': [address], 'worker': [...]}
  and this process's task. The chief is the `chief` task, or worker 0 if there is none."""

  @property
  def num_workers(self):
    return sum(len(self.spec.get(t, [])) for t in _CLUSTER_TASK_TYPES)

  @property
  def worker_id(self):
    """0 for the chief, then the workers in order (TensorFlow's numbering)."""
    return self.task_index + (len(self.spec.get('chief', [])) if self.task_type == 'worker' else 0)

  @property
  def is_chief(self):
    return self.worker_id == 0

  def __str__(self):
    return '{} {} of {} workers{}'.format(self.task_type, self.task_index, self.num_workers,
                                          ' (chief)' if self.is_chief else '')


def cluster_from_tf_config(value):
  """Parse the TF_CONFIG environment variable's `value`: a Cluster, or None if it is unset or names no cluster.

  Accepts both of its forms: a `chief` task plus `worker` tasks, or `worker` tasks only (worker 0 is the chief).
  """
  if not value or not value.strip():
    return None
  expected = ('expected JSON such as {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": '
              '"worker", "index": 0}} (an optional "chief" list of one address)')
  try:
    config = json.loads(value)
  except ValueError:
    raise UsageError('{}={!r} is not valid JSON; {}'.format(TF_CONFIG_VAR, value, expected)) from None
  if not isinstance(config, dict) or not isinstance(config.get('cluster', {}), dict):
    raise UsageError('{}={!r}; {}'.format(TF_CONFIG_VAR, value, expected))
  spec = config.get('cluster') or {}
  if not spec:
    return None
  other = sorted(set(spec) - set(_CLUSTER_TASK_TYPES))
  if other:
    raise UsageError('{} names task type(s) {}; expected only "chief" and "worker" (synchronous training on every '
                     'machine: no parameter servers, and evaluation runs as its own `evaluation` command)'.format(
                       TF_CONFIG_VAR, ', '.join(other)))
  for task_type, addresses in spec.items():
    if (not isinstance(addresses, list) or not addresses or
        not all(isinstance(a, str) and re.match(r'^\S+:\d+$', a) for a in addresses)):
      raise UsageError('{} cluster {!r}: {!r}; expected a non-empty list of "host:port" addresses'.format(
        TF_CONFIG_VAR, task_type, addresses))
  if len(spec.get('chief', [])) > 1:
    raise UsageError('{} lists {} chief tasks; expected at most one'.format(TF_CONFIG_VAR, len(spec['chief'])))
  if 'worker' not in spec and 'chief' not in spec:
    raise UsageError('{}={!r}; {}'.format(TF_CONFIG_VAR, value, expected))
  task = config.get('task')
  task_type = task.get('type') if isinstance(task, dict) else None
  task_index = task.get('index', 0) if isinstance(task, dict) else None
  if task_type not in spec or not isinstance(task_index, int) or isinstance(task_index, bool) or not (
      0 <= task_index < len(spec[task_type])):
    raise UsageError('{} task {!r} is not a task of its cluster ({}); expected "task": {{"type": one of {}, "index": '
                     '0..n-1}}'.format(TF_CONFIG_VAR, task, ', '.join('{} x{}'.format(t, len(a)) for t, a in sorted(
                       spec.items())), ', '.join(sorted(spec))))
  addresses = [a for t in _CLUSTER_TASK_TYPES for a in spec.get(t, [])]
  if len(set(addresses)) != len(addresses):
    raise UsageError('{} lists an address twice ({}); expected one "host:port" per task'.format(
      TF_CONFIG_VAR, ', '.join(addresses)))
  return Cluster(spec={t: list(spec[t]) for t in spec}, task_type=task_type, task_index=task_index)


def _count_local_gpus():
  return sum(1 for d in device_lib.list_local_devices() if d.device_type == 'GPU')


class Distribution:
  """Where a computation runs.

  kind 'tpu': the cores of a Cloud TPU (`tpu_name`); 'mirrored': several GPUs (or, for tests of this path, several
  CPU devices of this machine) with data parallelism; 'multi_worker': the GPUs (or the CPU) of every machine of a
  TF_CONFIG cluster (`cluster`), data parallel over all of them; 'single': one CPU or GPU.
  num_replicas counts the replicas of all machines.
  """

  def __init__(self, kind, num_replicas, *, devices=None, resolver=None, session_config=None, cluster=None):
    assert kind in ('tpu', 'mirrored', 'multi_worker', 'single')
    assert (kind == 'multi_worker') == (cluster is not None)
    self.kind = kind
    self.num_replicas = int(num_replicas)
    self.devices = list(devices or [])
    self.resolver = resolver
    self.cluster = cluster
    self.session_config = session_config or tf.ConfigProto(allow_soft_placement=True)
    self.session_config.gpu_options.allow_growth = True

  def __repr__(self):
    return 'Distribution({}, replicas={}{}{})'.format(
      self.kind, self.num_replicas, ', devices={}'.format(self.devices) if self.devices else '',
      ', {}'.format(self.cluster) if self.cluster else '')

  @property
  def is_chief(self):
    """Whether this process writes the run's checkpoints, summaries and kwargs.json (only one of a cluster does)."""
    return self.cluster is None or self.cluster.is_chief

  @property
  def uses_strategy(self):
    """Whether training runs under a tf.distribute strategy (an Estimator) rather than a TPUEstimator."""
    return self.kind in ('mirrored', 'multi_worker')

  def make_strategy(self):
    """The tf.distribute strategy of the 'mirrored' and 'multi_worker' kinds: the same synchronous data parallel
    training, with the replicas' gradients all-reduced within one machine or across all machines of the cluster."""
    assert self.uses_strategy, self.kind
    if self.kind == 'mirrored':
      return tf.distribute.MirroredStrategy(devices=self.devices)
    return tf.distribute.experimental.MultiWorkerMirroredStrategy()

  @property
  def master(self):
    return self.resolver.master() if self.kind == 'tpu' else ''

  def check_batch_size(self, total_bs, what='total_bs'):
    """The global batch size must split evenly over the replicas."""
    if not isinstance(total_bs, int) or isinstance(total_bs, bool) or total_bs < 1:
      raise UsageError('{}={!r}; expected a positive integer'.format(what, total_bs))
    if total_bs % self.num_replicas != 0:
      raise UsageError('{}={} is not divisible by the {} replicas ({}); expected a multiple of {}'.format(
        what, total_bs, self.num_replicas, self.kind, self.num_replicas))
    return total_bs // self.num_replicas

  def replicate(self, fn, inputs):
    """Build fn(*per-replica inputs) on every replica (batch dimension split evenly) and concatenate the outputs.

    `fn` returns a dict of tensors with a leading batch dimension. Variables are shared (AUTO_REUSE in the model).
    """
    n = self.num_replicas
    for x in inputs:
      assert x.shape.as_list()[0] % n == 0, (x.shape, n)
    if n == 1 and self.kind != 'tpu':
      return fn(*inputs)
    if self.kind == 'tpu':
      keys = []

      def _flat_fn(*args):
        out = fn(*args)
        keys.extend(sorted(out))
        return [out[k] for k in keys]

      outputs = tf.tpu.shard(_flat_fn, inputs=list(inputs), num_shards=n, outputs_from_all_shards=True)
      return dict(zip(keys, outputs))
    split_inputs = [tf.split(x, n, axis=0) for x in inputs]
    per_replica = []
    for i, device in enumerate(self.devices):
      with tf.device(device), tf.name_scope('replica_{}'.format(i)):
        per_replica.append(fn(*[s[i] for s in split_inputs]))
    return {k: tf.concat([out[k] for out in per_replica], axis=0) for k in per_replica[0]}

  def session(self, graph=None):
    """A session on the replicas' devices (connected to the TPU, whose system is initialized, for 'tpu')."""
    sess = tf.Session(target=self.master, graph=graph, config=self.session_config)
    if self.kind == 'tpu':
      with sess.graph.as_default():
        sess.run(tf.tpu.initialize_system())
    return sess


def choose_distribution(*, tpu_name=None, zone=None, project=None, num_gpus=None, num_cpu_replicas=None,
                        cluster=None):
  """The devices to run on: the named TPU; else, with a `cluster` (from TF_CONFIG), every GPU (or the CPU) of every
  worker; else num_gpus GPUs (default: all visible; mirrored if more than one); else one CPU. `num_cpu_replicas` > 1
  runs the multi-device (mirrored) path on CPU devices, for testing it.
  """
  if cluster is not None:
    if tpu_name is not None or (num_cpu_replicas or 1) > 1:
      raise UsageError('{} describes a cluster ({}), which trains on the GPUs or CPUs of its workers; expected no '
                       '--tpu_name and no --num_cpu_replicas with it'.format(TF_CONFIG_VAR, cluster))
    available = _count_local_gpus()
    if num_gpus is not None and num_gpus != available:
      raise UsageError('num_gpus={!r} with {}: every worker uses all its visible GPUs ({} here); expected no '
                       '--num_gpus (choose the GPUs with CUDA_VISIBLE_DEVICES)'.format(num_gpus, TF_CONFIG_VAR,
                                                                                       available))
    return Distribution('multi_worker', cluster.num_workers * max(available, 1), cluster=cluster)
  if tpu_name is not None:
    if num_gpus or num_cpu_replicas:
      raise UsageError('--tpu_name={} cannot be combined with --num_gpus/--num_cpu_replicas'.format(tpu_name))
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_name, zone=zone, project=project)
    try:
      num_cores = resolver.num_accelerators().get('TPU', 0)
    except Exception as e:  # connection problems come in many types
      raise UsageError('cannot reach TPU {!r} ({}: {}); expected the name of a running Cloud TPU'.format(
        tpu_name, type(e).__name__, e)) from None
    if num_cores < 1:
      raise UsageError('TPU {!r} reports no TPU cores'.format(tpu_name))
    return Distribution('tpu', num_cores, resolver=resolver)
  if num_cpu_replicas is not None:
    if not isinstance(num_cpu_replicas, int) or num_cpu_replicas < 1:
      raise UsageError('num_cpu_replicas={!r}; expected a positive integer'.format(num_cpu_replicas))
    if num_cpu_replicas > 1:
      config = compat.cpu_devices_session_config(num_cpu_replicas)
      return Distribution('mirrored', num_cpu_replicas, devices=['/cpu:{}'.format(i) for i in range(num_cpu_replicas)],
                          session_config=config)
  available = _count_local_gpus()
  if num_gpus is None:
    num_gpus = available
  if not isinstance(num_gpus, int) or num_gpus < 0:
    raise UsageError('num_gpus={!r}; expected a non-negative integer'.format(num_gpus))
  if num_gpus > available:
    raise UsageError('num_gpus={} but this machine has {} visible GPU(s)'.format(num_gpus, available))
  if num_gpus > 1:
    return Distribution('mirrored', num_gpus, devices=['/gpu:{}'.format(i) for i in range(num_gpus)])
  if num_gpus == 1:
    return Distribution('single', 1, devices=['/gpu:0'])
  return Distribution('single', 1, session_config=tf.ConfigProto(allow_soft_placement=True, device_count={'GPU': 0}))


# ---------------------------------------------------------------------------------------------------------------
# Training

class _ProgressHook(tf.train.SessionRunHook):
  """Prints step, loss and steps/s every `every_n_steps` steps (on TPU: once per loop of iterations_per_loop), and
  stops with NonFiniteLossError on a NaN/inf loss (on CPU/GPU the in-graph check fires first)."""

  def __init__(self, loss, every_n_steps, max_steps, model_dir, printer):
    self._loss, self._every, self._max_steps, self._model_dir = loss, every_n_steps, max_steps, model_dir
    self._print = printer
    self._last_time = self._last_step = None

  def begin(self):
    self._step_tensor = tf.train.get_global_step()

  def after_create_session(self, session, coord):
    self._last_step = int(session.run(self._step_tensor))
    self._last_time = time.time()

  def before_run(self, run_context):
    return tf.train.SessionRunArgs({'loss': self._loss, 'step': self._step_tensor})

  def after_run(self, run_context, run_values):
    loss, step = float(run_values.results['loss']), int(run_values.results['step'])
    if not np.isfinite(loss):
      raise NonFiniteLossError(step, loss, latest_checkpoint(self._model_dir))
    if step + 1 - self._last_step >= self._every or step + 1 >= self._max_steps:
      step = int(run_context.session.run(self._step_tensor))  # after this run's update
      now = time.time()
      rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
      self._print('step {:d}  loss {:.5f}  {:.2f} steps/s'.format(step, loss, rate))
      self._last_step, self._last_time = step, now


def _check_loss_finite(loss, global_step):
  """loss, but evaluating it fails (InvalidArgumentError) if it is NaN or inf, before any weight update."""
  check = tf.debugging.Assert(tf.math.is_finite(loss), [_NONFINITE_MARKER, global_step, 'loss', loss])
  with tf.control_dependencies([check]):
    return tf.identity(loss)


def _parse_nonfinite_error(e):
  """(step, loss) from the message of _check_loss_finite's failed assertion, or None."""
  match = re.search(re.escape(_NONFINITE_MARKER) + r'\]\s*\[(\d+)\]\s*\[loss\]\s*\[([^\]]+)\]', e.message)
  return (int(match.group(1)), match.group(2)) if match else None


def replica_grad_clip(grad_clip, num_replicas):
  """The global-norm bound for one replica's gradients, given the bound `grad_clip` of the original.

  Each of the N replicas differentiates its own loss scaled by 1/N (the TPU's CrossShardOptimizer and, in a
  MirroredStrategy, the v1 optimizer do this), and the replicas' gradients are summed. Clipping g_i / N at
  grad_clip / N is clip(g_i, grad_clip) / N, so the applied gradient is the original's

      (1/N) sum_i clip(g_i, grad_clip),    clip(g, c) = g * min(1, c / ||g||)   (global norm over all variables)

  (the original passed grad_clip / num_tpu_replicas() to utils.make_optimizer). The norm it returns, the logged
  `train/gnorm`, is that of g_i / N, as in the original.
  """
  assert num_replicas >= 1, num_replicas
  return grad_clip / float(num_replicas)


def _make_ema(*, global_step, ema_decay, trainable_variables, mirrored):
  """utils.make_ema: shadows `<variable>/ExponentialMovingAverage`, shadow <- shadow - (1 - decay) (shadow - variable),
  decay ~0 at step 0. Under a MirroredStrategy the shadows are built once in cross-replica context (merge_call):
  mirrored variables, each device's copy updated from that device's copy of the weights (identical on all devices).
  """
  if not mirrored:
    return utils.make_ema(global_step=global_step, ema_decay=ema_decay, trainable_variables=trainable_variables)

  def _merge_fn(strategy):
    decay = tf.where(tf.less(global_step, 1), 1e-10, ema_decay)
    shadows, updates = {}, []
    for var in trainable_variables:
      with tf.variable_scope(var.op.name, auxiliary_name_scope=False):
        shadow = tf.get_variable('ExponentialMovingAverage', initializer=var.initial_value, trainable=False)
      shadows[var.op.name] = shadow
      updates.append(strategy.extended.update(
        shadow, lambda s, v: s.assign_sub((1. - decay) * (s - v)), args=(var,), group=True))
    return shadows, tf.group(*updates, name='ema_update')

  return tf.distribute.get_replica_context().merge_call(_merge_fn)


def _raise_if_write_failure(e, model_dir):
  """A utils.WriteError for an error of training that is a failed write (a full disk, no permission): it names the
  file and the cause; the partial files of a checkpoint save cut short are removed (the `checkpoint` state file
  never listed them), and the last complete checkpoint is named."""
  cause = utils.write_failure_cause(e)
  if cause is None:
    return
  for partial in tf.io.gfile.glob(os.path.join(model_dir, '*.ckpt-*_temp_*')):  # Saver's <prefix>_temp_<uuid>
    try:
      if tf.io.gfile.isdir(partial):
        tf.io.gfile.rmtree(partial)
      else:
        tf.io.gfile.remove(partial)
    except (tf.errors.OpError, OSError):
      pass
  path = e.message.split(';')[0].strip() if ';' in e.message else model_dir
  last = tf.train.latest_checkpoint(model_dir)
  raise utils.WriteError('cannot write {} while training: {} ({}); {}'.format(
    path, cause, type(e).__name__, 'the last complete checkpoint, {}, is untouched'.format(last) if last else
    'there is no complete checkpoint yet')) from None
DEFAULT_WORKER_TIMEOUT_SECS = 600


def _worker_lost_message(cluster, detail):
  return ('{}: {}; a worker of the {} cluster ({}) is missing, has died or cannot be reached; restart every worker '
          'with the same command to resume from the latest checkpoint'.format(
            cluster, detail, TF_CONFIG_VAR, ', '.join(a for t in _CLUSTER_TASK_TYPES for a in cluster.spec.get(t, []))))


class _WorkerWatchdogHook(tf.train.SessionRunHook):
  """Ends this worker when no training step has finished for `timeout_secs`.

  The all-reduce of a multi-worker step waits for every peer, and in TF 1.15 a collective op has no timeout: a peer
  that never started or has died leaves the others blocked inside session.run, where neither a hook nor an
  exception can reach them. A watchdog thread is the one way out: it prints one `error:` line and exits the process
  (status 1). The clock starts when the session is being created (joining the cluster counts) and restarts after
  every step.
  """

  def __init__(self, timeout_secs, cluster):
    self._timeout, self._cluster = timeout_secs, cluster
    self._last = None
    self._done = threading.Event()

  def begin(self):
    self._last = time.time()
    threading.Thread(target=self._watch, name='worker_watchdog', daemon=True).start()

  def after_run(self, run_context, run_values):
    self._last = time.time()

  def end(self, session):
    self._done.set()

  def _watch(self):
    while not self._done.wait(min(5., self._timeout / 10.)):
      idle = time.time() - self._last
      if idle > self._timeout:
        print('error: {}'.format(_worker_lost_message(
          self._cluster, 'no training step finished in {:.0f} s (--worker_timeout_secs={})'.format(
            idle, self._timeout))), file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)


def _train_on_cluster(estimator, input_fn, max_steps, hooks, cluster, timeout_secs):
  """estimator.train on every worker of a TF_CONFIG cluster; TensorFlow's distribute coordinator starts this
  worker's server and runs the MultiWorkerMirroredStrategy training on it (Estimator.train alone does not)."""
  hooks = list(hooks) + [_WorkerWatchdogHook(timeout_secs, cluster)]
  try:
    tf.estimator.train_and_evaluate(
      estimator, tf.estimator.TrainSpec(input_fn=input_fn, max_steps=max_steps, hooks=hooks),
      tf.estimator.EvalSpec(input_fn=input_fn))  # evaluation is the `evaluation` command's; never run here
  except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
          tf.errors.DeadlineExceededError) as e:
    raise ClusterError(_worker_lost_message(cluster, '{}: {}'.format(
      type(e).__name__, e.message.strip().splitlines()[0] if e.message.strip() else ''))) from None


def make_tpu_config(iterations_per_loop):
  """The TPUEstimator's TPUConfig: the original's per-host input (PER_HOST_V2). train_input_fn runs once on every
  host of the TPU system (each of the 4 hosts of a v3-32 pod slice), reads that host's shard of the data
  (datasets.input_pipeline) and yields per-core batches for the host's 8 cores."""
  return tf.estimator.tpu.TPUConfig(iterations_per_loop=iterations_per_loop,
                                    per_host_input_for_training=tf.estimator.tpu.InputPipelineConfig.PER_HOST_V2)


def make_model_dir(log_dir, exp_name, date_str=None):
  """{log_dir}/{date_str}/{exp_name} as in the original (date_str defaults to today, YYYY-MM-DD)."""
  date_str = datetime.datetime.now().strftime('%Y-%m-%d') if date_str is None else date_str
  return os.path.join(log_dir, date_str, exp_name)


def run_training(
    *, model_constructor, train_input_fn, total_bs, optimizer, lr, warmup, grad_clip, ema_decay=0.9999,
    tpu=None, zone=None, project=None, log_dir=None, exp_name=None, dump_kwargs=None, date_str=None,
    iterations_per_loop=1000, keep_checkpoint_max=2, max_steps=int(1e10), warm_start_from=None, model_dir=None,
    save_checkpoints_steps=None, save_checkpoints_secs=None, save_summary_steps=100, log_every_steps=100,
    num_gpus=None, num_cpu_replicas=None, distribution=None, seed=None, max_train_secs=None,
    worker_timeout_secs=DEFAULT_WORKER_TIMEOUT_SECS, printer=print):
  """Train `model_constructor()` on batches of `train_input_fn`; see the module docstring.

  The experiment directory is `model_dir`, or {log_dir}/{date_str}/{exp_name} as in the original. If it already
  exists, training continues from its latest checkpoint (the step count continues); kwargs.json is (re)written.
  Checkpoints are saved every `save_checkpoints_steps` steps or `save_checkpoints_secs` seconds (default 1600 s,
  the original's) and the last `keep_checkpoint_max` are kept. `max_steps` bounds the global step, `max_train_secs`
  the time spent in this call's training loop (a checkpoint is saved when it stops).
  Faults (docs/scripts.md, errors and recovery): the run directory is locked for one trainer (run_lock); unreadable
  newer checkpoints are set aside before resuming (checkpoint_recovery); SIGTERM/SIGINT stop training after the
  current step with a checkpoint of it (preemption); a write that fails for lack of space or rights is a WriteError.
  When the TF_CONFIG environment variable describes a cluster, every worker runs this same call (see
  docs/distributed.md): the global batch `total_bs` splits over the replicas of all workers, the chief alone writes
  checkpoints, summaries and kwargs.json, and a worker on which no step finishes for `worker_timeout_secs` (a peer is
  missing or dead) stops with ClusterError.
  Returns the model_dir. Raises NonFiniteLossError on a NaN/inf loss, UsageError on bad settings, PathError when
  another process trains in model_dir, TrainingStopped after a stop signal, utils.WriteError on a failed write, ClusterError when a worker is lost.
  """
  if model_dir is None:
    if log_dir is None or exp_name is None:
      raise UsageError('run_training needs model_dir, or log_dir and exp_name')
    model_dir = make_model_dir(log_dir, exp_name, date_str)
  if save_checkpoints_steps is not None and save_checkpoints_secs is not None:
    raise UsageError('give save_checkpoints_steps or save_checkpoints_secs, not both')
  if save_checkpoints_steps is None and save_checkpoints_secs is None:
    save_checkpoints_secs = 1600
  for name, value in [('save_checkpoints_steps', save_checkpoints_steps),
                      ('save_checkpoints_secs', save_checkpoints_secs), ('keep_checkpoint_max', keep_checkpoint_max),
                      ('iterations_per_loop', iterations_per_loop), ('max_steps', max_steps),
                      ('save_summary_steps', save_summary_steps), ('log_every_steps', log_every_steps),
                      ('max_train_secs', max_train_secs)]:
    if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1):
      raise UsageError('{}={!r}; expected a positive integer'.format(name, value))
  if not isinstance(worker_timeout_secs, (int, float)) or isinstance(worker_timeout_secs, bool) or not (
      worker_timeout_secs > 0):
    raise UsageError('worker_timeout_secs={!r}; expected a positive number of seconds'.format(worker_timeout_secs))
  if not 0. <= ema_decay < 1.:
    raise UsageError('ema_decay={!r}; expected a number in [0, 1)'.format(ema_decay))

  dist = distribution or choose_distribution(tpu_name=tpu, zone=zone, project=project, num_gpus=num_gpus,
                                             num_cpu_replicas=num_cpu_replicas,
                                             cluster=cluster_from_tf_config(os.environ.get(TF_CONFIG_VAR)))
  local_bs = dist.check_batch_size(total_bs)
  use_tpu = dist.kind == 'tpu'
  if dist.kind == 'multi_worker' and max_train_secs:
    raise UsageError('max_train_secs={} with a {} cluster: each worker would stop at its own time and leave the others '
                     'waiting; expected --max_steps instead'.format(max_train_secs, TF_CONFIG_VAR))

  check_writable_dir(model_dir, 'model_dir')
  # one trainer per run directory (in a cluster, the chief holds it for all workers); released after training (a
  # flock, so also when this process dies)
  lock = run_lock.RunLock(model_dir).acquire() if dist.is_chief else None
  last_ckpt = latest_checkpoint(model_dir)
  if last_ckpt:
    printer('model dir {} exists: resuming from {} (step {})'.format(model_dir, last_ckpt, checkpoint_step(last_ckpt)))
  else:
    printer('model dir: {}'.format(model_dir))
  printer('devices: {}, global batch {}, per replica {}'.format(dist, total_bs, local_bs))
  if dump_kwargs is not None and dist.is_chief:
    dump_kwargs_file = os.path.join(model_dir, KWARGS_FILE)
    if tf.io.gfile.exists(dump_kwargs_file):
      old = load_train_kwargs(model_dir)
      changed = sorted(k for k in set(old) | set(dump_kwargs) if old.get(k) != dump_kwargs.get(k))
      if changed:
        printer('kwargs.json: updating {}'.format(', '.join('{}: {!r} -> {!r}'.format(
          k, old.get(k), dump_kwargs.get(k)) for k in changed)))
    write_kwargs_json(model_dir, dump_kwargs)

  def model_fn(features, labels, mode, params):
    del labels
    assert mode == tf.estimator.ModeKeys.TRAIN, 'only TRAIN mode is supported'
    if 'batch_size' in params:  # TPUEstimator: the per-replica batch
      assert params['batch_size'] == local_bs, (params['batch_size'], local_bs)
    assert features['image'].shape.as_list()[0] == local_bs, (features['image'].shape, local_bs)
    assert features['label'].shape.as_list() == [local_bs] and features['label'].dtype == tf.int32

    model = model_constructor()
    assert isinstance(model, Model)
    global_step = tf.train.get_or_create_global_step()

    # training loss
    train_info_dict = model.train_fn(utils.normalize_data(tf.cast(features['image'], tf.float32)), features['label'])
    loss = train_info_dict['loss']
    assert loss.shape.as_list() == []
    if not use_tpu:  # TPUs have no Assert op; there _ProgressHook checks the loss once per loop
      loss = _check_loss_finite(loss, global_step)

    # train op
    trainable_variables = tf.trainable_variables()
    tf.logging.info('num params: {:,}'.format(sum(int(np.prod(p.shape.as_list())) for p in trainable_variables)))
    warmed_up_lr = utils.get_warmed_up_lr(max_lr=lr, warmup=warmup, global_step=global_step)
    train_op, gnorm = utils.make_optimizer(
      loss=loss, trainable_variables=trainable_variables, global_step=global_step, lr=warmed_up_lr,
      optimizer=optimizer, grad_clip=replica_grad_clip(grad_clip, dist.num_replicas), tpu=use_tpu)

    # ema, updated after each step
    ema, ema_op = _make_ema(global_step=global_step, ema_decay=ema_decay, trainable_variables=trainable_variables,
                            mirrored=dist.uses_strategy)
    with tf.control_dependencies([train_op]):
      train_op = tf.group(ema_op)

    # summaries
    summaries = tpu_summaries.TpuSummaries(model_dir, save_summary_steps=save_summary_steps)
    summaries.scalar('train/loss', loss)
    summaries.scalar('train/gnorm', gnorm)
    summaries.scalar('train/pnorm', utils.rms(trainable_variables))
    summaries.scalar('train/lr', warmed_up_lr)
    if dist.uses_strategy:
      summaries.write_plain()
      return tf.estimator.EstimatorSpec(mode=mode, loss=loss, train_op=train_op)
    if use_tpu:
      host_call = summaries.get_host_call()
    else:
      summaries.write_plain()
      host_call = None
    return tf.estimator.tpu.TPUEstimatorSpec(mode=mode, loss=loss, train_op=train_op, host_call=host_call)

  tf_config_kwargs = dict(
    model_dir=model_dir, save_checkpoints_steps=save_checkpoints_steps, save_checkpoints_secs=save_checkpoints_secs,
    keep_checkpoint_max=keep_checkpoint_max, save_summary_steps=save_summary_steps, log_step_count_steps=None,
    tf_random_seed=seed, session_config=dist.session_config)
  if dist.uses_strategy:
    estimator = tf.estimator.Estimator(
      model_fn=model_fn, config=tf.estimator.RunConfig(train_distribute=dist.make_strategy(), **tf_config_kwargs),
      warm_start_from=warm_start_from)

    def input_fn(params, input_context=None):
      # per replica batches; on a cluster each worker's pipeline reads its own shard of the data (see datasets.py)
      if dist.kind == 'multi_worker':
        printer('input pipeline {} of {}'.format(input_context.input_pipeline_id, input_context.num_input_pipelines))
      return train_input_fn(dict(params or {}, batch_size=local_bs, context=input_context))
  else:
    estimator = tf.estimator.tpu.TPUEstimator(
      model_fn=model_fn, use_tpu=use_tpu, train_batch_size=total_bs,
      config=tf.estimator.tpu.RunConfig(
        cluster=dist.resolver, tpu_config=make_tpu_config(iterations_per_loop),
        **tf_config_kwargs),
      warm_start_from=warm_start_from)
    input_fn = train_input_fn

  class _ProgressHookFactory(tf.train.SessionRunHook):
    """Finds the loss tensor once the Estimator has built the graph."""

    def begin(self):
      losses = tf.get_collection(tf.GraphKeys.LOSSES)
      loss = losses[-1] if losses else tf.constant(0.)
      self._hook = _ProgressHook(loss, log_every_steps, max_steps, model_dir, printer)
      self._hook.begin()

    def after_create_session(self, session, coord):
      self._hook.after_create_session(session, coord)

    def before_run(self, run_context):
      return self._hook.before_run(run_context)

    def after_run(self, run_context, run_values):
      self._hook.after_run(run_context, run_values)

  class _StopAfterSecsHook(tf.train.SessionRunHook):
    def after_create_session(self, session, coord):
      self._deadline = time.time() + max_train_secs

    def after_run(self, run_context, run_values):
      if time.time() > self._deadline:
        printer('stopping: --max_train_secs={} reached'.format(max_train_secs))
        run_context.request_stop()

  stop_signals = preemption.StopSignals()
  hooks = [_ProgressHookFactory(), preemption.StopOnSignalHook(stop_signals, printer)] + (
    [_StopAfterSecsHook()] if max_train_secs else [])
  t0 = time.time()
  try:
    with stop_signals:
      if dist.kind == 'multi_worker':
        _train_on_cluster(estimator, input_fn, max_steps, hooks, dist.cluster, worker_timeout_secs)
      else:
        estimator.train(input_fn=input_fn, max_steps=max_steps, hooks=hooks)
  except tf.errors.InvalidArgumentError as e:
    parsed = _parse_nonfinite_error(e)
    if parsed is None:
      raise
    raise NonFiniteLossError(parsed[0], parsed[1], latest_checkpoint(model_dir)) from None
  except tf.errors.OpError as e:
    _raise_if_write_failure(e, model_dir)
    raise
  finally:
    if lock is not None:
      lock.release()
  if stop_signals.signum is not None:
    last_ckpt = tf.train.latest_checkpoint(model_dir)
    raise TrainingStopped(stop_signals.name, stop_signals.signum, checkpoint_step(last_ckpt), last_ckpt)
  last_ckpt = latest_checkpoint(model_dir)
  printer('training done in {:.0f} s; latest checkpoint {}'.format(time.time() - t0, last_ckpt))
  return model_dir


# ---------------------------------------------------------------------------------------------------------------
# Evaluation: samples, Inception Score, FID

def default_stats_dir(dataset_name, *, tfds_data_dir=None, tfr_file=None):
  """Where real-data FID statistics are cached: next to the data when it is local (<tfds_data_dir>/fid_stats, or
  the TFRecords' folder /fid_stats), else in the local cache ($DIFFUSION_TF_CACHE or ~/.cache/diffusion_tf)."""
  if dataset_name == 'lsun' and tfr_file and not is_url(tfr_file):
    return os.path.join(os.path.dirname(os.path.abspath(tfr_file)), 'fid_stats')
  if dataset_name in ('cifar10', 'celebahq256') and tfds_data_dir and not is_url(tfds_data_dir):
    return os.path.join(os.path.abspath(os.path.expanduser(tfds_data_dir)), 'fid_stats')
  return os.path.join(inception.cache_dir(), 'fid_stats')


def _divisor_batch_size(n, largest=100):
  """The largest batch size <= `largest` that divides n (the input fns drop the last incomplete batch)."""
  if not n:
    return largest
  return max(b for b in range(1, min(largest, n) + 1) if n % b == 0)


def run_inception(images):
  """{'pool_3': [B, 2048], 'logits': [B, 1008]} of Inception inputs [B, 299, 299, 3] float32 in [-1, 1] (what
  tfgan.eval.preprocess_image returns)."""
  assert images.dtype == tf.float32
  return inception.run_inception(images)


class InceptionFeatures:
  """Inception features of a dataset's images, computed once: the original's reference features.

  dataset: a batched tf.data.Dataset of {'image': [B, H, W, 3] integers in {0..255}, ...} (a dataset input fn's
  output); limit_dataset_size > 0 keeps its first limit_dataset_size batches. Builds its graph in the default graph,
  over the replicas of the tf.distribute `strategy` (each gets its own batches).
  """

  def __init__(self, dataset, strategy, limit_dataset_size=0):
    if limit_dataset_size > 0:
      dataset = dataset.take(limit_dataset_size)
    dist_dataset = strategy.experimental_distribute_dataset(dataset)
    if hasattr(dist_dataset, 'make_initializable_iterator'):  # a distributed dataset
      self.ds_iterator = dist_dataset.make_initializable_iterator()
    else:  # the default strategy returns the dataset itself
      self.ds_iterator = tf.data.make_initializable_iterator(dist_dataset)
    self.inception_real = distributed(
      lambda x_: inception.inception_features(tf.cast(x_['image'], tf.uint8)),
      args=(self.ds_iterator.get_next(),), reduction='concat', strategy=strategy)
    self.cached_inception_real = None  # {'pool_3': [N, 2048] float64}
    self.real_inception_score = None  # the Inception Score of the N images, one split

  def get(self, sess):
    """(cached {'pool_3': [N, 2048] float64}, the images' Inception Score); computed in sess on the first call."""
    if self.cached_inception_real is None:
      sess.run(self.ds_iterator.initializer)
      batches = []
      while True:
        try:
          batches.append(sess.run(self.inception_real))
        except tf.errors.OutOfRangeError:
          break
      features = {k: np.concatenate([b[k] for b in batches]).astype(np.float64) for k in ('pool_3', 'logits')}
      self.real_inception_score = float(classifier_metrics_numpy.classifier_score_from_logits(features['logits']))
      self.cached_inception_real = {'pool_3': features['pool_3']}
    return self.cached_inception_real, self.real_inception_score


def iterate_real_images(input_fn, num_examples=None, batch_size=None):
  """uint8 numpy batches [B, H, W, 3] of a dataset input fn, in its (fixed) order, from a graph of their own.

  batch_size: the input fn's batch size (its last incomplete batch is dropped); default the largest size <= 100
  that divides num_examples, so that every image arrives.
  """
  batch_size = batch_size or _divisor_batch_size(num_examples)
  with tf.Graph().as_default():
    ds = input_fn({'batch_size': batch_size})
    batch = tf.data.make_one_shot_iterator(ds).get_next()
    with tf.Session(config=tf.ConfigProto(device_count={'GPU': 0})) as sess:
      while True:
        try:
          images = sess.run(batch['image'])
        except tf.errors.OutOfRangeError:
          return
        yield images.astype(np.uint8)


def num_reference_images(num_examples, total_bs, limit_dataset_size=0):
  """How many real images the original's evaluation measured: its input fns drop the last incomplete batch of
  total_bs, and it took limit_dataset_size // total_bs batches when limit_dataset_size > 0. None: all (unknown)."""
  if limit_dataset_size > 0:
    num_batches = limit_dataset_size // total_bs
    if num_examples is not None:
      num_batches = min(num_batches, num_examples // total_bs)
    return num_batches * total_bs
  return None if num_examples is None else (num_examples // total_bs) * total_bs


class EvalWorker:
  """Samples from a run's checkpoints and measures them: the original's evaluation loop.

  For each checkpoint, with the EMA weights (prefix `eval_ema`) and, unless skip_non_ema_pass, the raw weights
  (prefix `eval`): `num_inception_samples` samples -> <logdir>/eval/step<N>_<ema|noema>_samples.png (a grid) and
  either <samples_dir or logdir/eval>/step<N>_<ema|noema>_samples.npz (dump_samples_only) or the metrics, written
  as TensorBoard scalars under the original's tags and as <logdir>/eval/step<N>_<ema|noema>_metrics.json:

    <prefix>/samples/inception<n>          Inception Score of all n samples (one split), as the original
    <prefix>/samples/inception<n>_10splits and _10splits_std   the paper's IS: mean and std over 10 splits
    <prefix>/samples/trainfid<n>           FID against the training set
    <prefix>/samples/fid<n>                FID against the test set (datasets with one)
    <prefix>/real_inception_score_train, <prefix>/real_inception_score   IS of the real images (one split)

  Samples reach the Inception graph as floats: clipped to [-1, 1] and mapped to [0, 255] without rounding.
  Reference statistics come from the images the original measured (reference='original'): the dataset's
  reference input (`reference_input_fn`: the one-pass training set; LSUN: shuffled) and its test split, in
  batches of total_bs with the last incomplete batch dropped, at most limit_dataset_size // total_bs batches when
  limit_dataset_size > 0 (run_lsun: 30000); reference='full' uses every image of both splits. Statistics are
  cached in stats_dir. Checkpoints whose outputs exist are skipped, so a restarted worker continues.
  """

  REFERENCES = ('original', 'full')

  def __init__(self, tpu_name, model_constructor, total_bs, dataset, inception_bs=8, num_inception_samples=1024,
               limit_dataset_size=0, *, zone=None, project=None, inception_graph=None, stats_dir=None,
               stats_name=None, num_gpus=None, reference='original', printer=print):
    """inception_bs: images per run of the Inception graph (the scripts pass total_bs, as the original; the original
    also drew the metrics' samples in batches of inception_bs, here they are drawn in batches of total_bs)."""
    if not isinstance(num_inception_samples, int) or num_inception_samples < 2:
      raise UsageError('num_inception_samples={!r}; expected an integer >= 2'.format(num_inception_samples))
    if not isinstance(inception_bs, int) or isinstance(inception_bs, bool) or inception_bs < 1:
      raise UsageError('inception_bs={!r}; expected a positive integer'.format(inception_bs))
    if not isinstance(limit_dataset_size, int) or isinstance(limit_dataset_size, bool) or limit_dataset_size < 0:
      raise UsageError('limit_dataset_size={!r}; expected an integer >= 0 (0: no limit)'.format(limit_dataset_size))
    if reference not in self.REFERENCES:
      raise UsageError('reference={!r}; expected one of {}'.format(reference, ', '.join(self.REFERENCES)))
    self.model_constructor = model_constructor
    self.dataset = dataset
    self.num_inception_samples = num_inception_samples
    self.inception_bs = inception_bs
    self.limit_dataset_size = limit_dataset_size
    self.reference = reference
    self.inception_graph = inception_graph
    self.stats_dir = stats_dir
    self.stats_name = stats_name or '{}-{}px'.format(dataset.name, dataset.image_size)
    self._print = printer
    self.dist = choose_distribution(tpu_name=tpu_name, zone=zone, project=project, num_gpus=num_gpus)
    self.total_bs = total_bs
    self.dist.check_batch_size(total_bs)
    self._extractor = None

  # -- real data statistics
  def _reference_splits(self):
    """[(train or test, name in the statistics cache, input fn, number of images or None for all, batch size or None
    for one that divides the split)] of the reference images."""
    ds = self.dataset
    splits = [('train', ds.reference_split_name, ds.reference_input_fn, ds.num_train_examples)]
    if ds.num_eval_examples:  # None: no test split
      splits.append(('test', 'test', ds.eval_input_fn, ds.num_eval_examples))
    out = []
    for key, name, input_fn, count in splits:
      if self.reference == 'full':
        out.append((key, name, input_fn, None, None))  # every image
      else:
        out.append((key, name, input_fn, num_reference_images(count, self.total_bs, self.limit_dataset_size),
                    self.total_bs))
    return out

  def _reference_stats(self):
    refs = {}
    for key, name, input_fn, num, batch_size in self._reference_splits():
      count = dict(train=self.dataset.num_train_examples, test=self.dataset.num_eval_examples)[key]
      stats, path = fid_stats.get_or_compute_statistics(
        self.stats_dir, dataset=self.stats_name, split=name, extractor=self._extractor, num_samples=num,
        batches_fn=lambda input_fn=input_fn, count=count, batch_size=batch_size: iterate_real_images(
          input_fn, count, batch_size))
      self._print('reference statistics ({} split, {} images, {} set): {}'.format(
        key, stats.get('num_samples'), self.reference, path))
      refs[key] = (stats, path)
    return refs

  def _metrics(self, samples, refs):
    """The metrics of samples [n, H, W, 3] (floats in [-1, 1]) against the reference statistics, under the
    original's names (without the eval_ema/eval prefix), plus the 10-split IS."""
    assert samples.dtype in (np.float32, np.float64), samples.dtype  # never rounded before the Inception graph
    n = len(samples)
    moments, logits = fid_stats.RunningMoments(), []
    for start in range(0, n, 500):
      pool_3, batch_logits = self._extractor.features(samples[start:start + 500])
      moments.update(pool_3)
      logits.append(batch_logits)
    mu, sigma = moments.mean_and_covariance()
    logits = np.concatenate(logits)
    is_mean, is_std = classifier_metrics_numpy.inception_score_mean_std(logits, num_splits=min(10, n))
    out = {'samples/inception{}'.format(n): classifier_metrics_numpy.classifier_score_from_logits(logits),
           'samples/inception{}_10splits'.format(n): is_mean,
           'samples/inception{}_10splits_std'.format(n): is_std}
    for key, (stats, path) in refs.items():
      tag = 'trainfid' if key == 'train' else 'fid'
      out['samples/{}{}'.format(tag, n)] = classifier_metrics_numpy.frechet_distance(
        stats['mu'], stats['sigma'], mu, sigma)
      if stats.get('inception_score') is not None:
        out['real_inception_score_train' if key == 'train' else 'real_inception_score'] = stats['inception_score']
    return out

  # -- sampling
  def _build(self):
    model = self.model_constructor()
    assert isinstance(model, Model)
    outputs, noises = build_seeded_samples(
      self.dist, self.total_bs, self.dataset.image_shape,
      lambda dummy, y, noise_fn: {'samples': model.samples_fn(dummy, y, noise_fn=noise_fn)['samples']})
    return outputs['samples'], noises

  def _sample(self, sess, samples, noises, seed):
    """num_inception_samples float32 samples in (about) [-1, 1], as the model produced them."""
    out, num_batches = [], -(-self.num_inception_samples // self.total_bs)
    t0 = time.time()
    for b in range(num_batches):
      out.append(np.asarray(run_seeded(sess, samples, noises, seed, b), np.float32))
      self._print('  sampled batch {}/{} ({:.0f} s)'.format(b + 1, num_batches, time.time() - t0))
    return np.concatenate(out)[:self.num_inception_samples]

  def run(self, logdir, once: bool, skip_non_ema_pass=True, dump_samples_only=False, load_ckpt=None,
          samples_dir=None, seed=0, poll_secs=60, timeout_secs=None):
    """Evaluate the checkpoints of logdir as they appear (once: one checkpoint, then return).

    load_ckpt: one checkpoint, named relative to logdir as in the original (model.ckpt-790000), or a prefix or
    directory; implies once. samples_dir: where dump_samples_only writes its .npz (default logdir/eval).
    """
    if load_ckpt is not None:
      load_ckpt = resolve_load_ckpt(logdir, load_ckpt)
      once = True
    eval_dir = os.path.join(logdir, 'eval')
    check_writable_dir(eval_dir, 'eval dir')
    dump_dir = samples_dir or eval_dir
    if dump_samples_only and samples_dir:
      check_writable_dir(dump_dir, 'samples_dir')
    passes = [True] if skip_non_ema_pass else [True, False]
    done_file = lambda step, ema: os.path.join(
      dump_dir if dump_samples_only else eval_dir, 'step{:08d}_{}{}'.format(
        step, 'ema' if ema else 'noema', '_samples.npz' if dump_samples_only else '_metrics.json'))
    if once:
      load_ckpt = load_ckpt or resolve_checkpoint(logdir)
      done = [done_file(checkpoint_step(load_ckpt), ema) for ema in passes]
      if all(tf.io.gfile.exists(f) for f in done):
        self._print('{} exist: checkpoint {} is already evaluated'.format(', '.join(done), load_ckpt))
        return
    if not dump_samples_only:  # fail on a missing Inception graph before any sampling
      self._extractor = inception.InceptionExtractor(path=self.inception_graph, batch_size=self.inception_bs)
      refs = self._reference_stats()

    with tf.Graph().as_default():
      samples, noises = self._build()
      writer = utils.SummaryWriter(eval_dir, write_graph=False)
      with self.dist.session() as sess:
        sess.run(tf.local_variables_initializer())
        if once:
          ckpts = [load_ckpt]
        else:
          ckpts = tf.train.checkpoints_iterator(logdir, min_interval_secs=poll_secs, timeout=timeout_secs)
        for ckpt in ckpts:
          problem = None if once else checkpoint_recovery.checkpoint_problem(ckpt)
          if problem is not None:  # a listed checkpoint that cannot be read: set aside, wait for the next one
            checkpoint_recovery.set_aside(ckpt, problem, then='; waiting for the next one')
            continue
          step = checkpoint_step(ckpt)
          for ema in passes:
            tag = 'ema' if ema else 'noema'
            prefix = 'eval_ema' if ema else 'eval'  # the original's TensorBoard prefixes
            grid = os.path.join(eval_dir, 'step{:08d}_{}_samples.png'.format(step, tag))
            out_file = done_file(step, ema)
            if tf.io.gfile.exists(out_file):
              self._print('{} exists: checkpoint {} ({}) is already evaluated'.format(out_file, ckpt, tag))
              continue
            self._print('evaluating {} (step {}, {} weights): {} samples'.format(
              ckpt, step, tag, self.num_inception_samples))
            restore_weights(sess, ckpt, ema=ema)
            samples_float = self._sample(sess, samples, noises, seed)
            images = to_uint8(samples_float)  # for the grid and the dumps; the metrics use the floats
            utils.save_tiled_imgs(grid, images[:100])
            writer.images('{}/samples/samples'.format(prefix), images[:64], step=step)
            if dump_samples_only:
              save_npz_atomic(out_file, arr_0=images)
              self._print('wrote {}'.format(out_file))
              continue
            result = self._metrics(samples_float, refs)
            for k, v in result.items():
              writer.scalar('{}/{}'.format(prefix, k), v, step=step)
            writer.flush()
            result.update(
              checkpoint=ckpt, step=step, weights=tag, num_samples=len(samples_float), seed=seed,
              reference_images=self.reference, inception_graph=self._extractor.graph_path,
              inception_graph_sha256=self._extractor.graph_sha256,
              **{'ref_stats_' + key: path for key, (_, path) in refs.items()},
              **{'ref_num_images_' + key: int(stats['num_samples']) for key, (stats, _) in refs.items()})
            write_json_atomic(out_file, result)
            n = len(samples_float)
            self._print('step {} {}: {}'.format(step, tag, ', '.join('{} {:.4f}'.format(k, result[k]) for k in [
              'samples/inception{}'.format(n), 'samples/inception{}_10splits'.format(n),
              'samples/trainfid{}'.format(n), 'samples/fid{}'.format(n)] if k in result)))
      writer.close()
