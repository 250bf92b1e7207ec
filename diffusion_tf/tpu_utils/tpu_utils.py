"""Training and evaluation infrastructure: one model_fn for a Cloud TPU and for CPU/GPU machines.

  run_training(...)  trains a `Model` with a TPUEstimator: on TPU cores when `tpu` names a TPU, otherwise with
                     use_tpu=False on this machine (one CPU or GPU), or with an Estimator and a MirroredStrategy
                     when several GPUs are used (a MultiWorkerMirroredStrategy over the machines of a cluster that
                     the TF_CONFIG environment variable describes). Adam (or RMSProp) with a linear warm-up and
                     gradient clipping, an EMA of the weights (decay 0.9999) updated after every step, summaries
                     train/loss, gnorm, pnorm and lr. An existing model_dir is resumed from its latest checkpoint;
                     a NaN/inf loss stops the run with an error naming the step, without updating the weights.
  EvalWorker         watches a model_dir for checkpoints, samples with the EMA weights, and writes image grids and
                     the Inception Score / FID (against the training set and the test set if there is one).

Also shared helpers: checkpoint lookup and (EMA) restore, the choice of devices (`Distribution`) and replicating a
computation over them (`Distribution.replicate`), and reading and writing kwargs.json.
"""

import collections
import functools
import json
import os
import re
import sys
import threading
import time

import numpy as np
import tensorflow.compat.v1 as tf

from .. import utils
from . import tpu_summaries

EMA_SUFFIX = '/ExponentialMovingAverage'
_NONFINITE_MARKER = 'non-finite training loss at step'


class UsageError(ValueError):
  """A bad flag, path or input; scripts print its message as one line and exit with a non-zero status."""


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or inf loss; the weights of the failing step were not applied."""

  def __init__(self, step, loss, model_dir=None):
    self.step, self.loss = step, loss
    last = latest_checkpoint(model_dir) if model_dir else None
    super().__init__('the training loss is {} at step {}; training stopped before applying that step{}'.format(
      loss, step, '; the last good checkpoint is {}'.format(last) if last else ''))


class ClusterError(RuntimeError):
  """Multi-worker training lost a worker (it never joined, died or cannot be reached)."""


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

  def samples_fn(self, dummy_noise, y, noise_fn=tf.random_normal) -> dict:
    """{'samples': [B, H, W, C]} from the original ancestral sampler; `dummy_noise` only gives the shape."""
    return {
      'samples': self.diffusion.p_sample_loop(
        denoise_fn=functools.partial(self._denoise, y=y, dropout=0),
        shape=dummy_noise.shape.as_list(),
        noise_fn=noise_fn)
    }

  def progressive_samples_fn(self, dummy_noise, y, noise_fn=tf.random_normal) -> dict:
    """{'samples': [B, H, W, C], 'progressive_samples': [B, K, H, W, C]} (x_0 predictions along the chain)."""
    raise NotImplementedError('this model has no progressive sampler')

  def bpd_fn(self, x, y) -> dict:
    """{'total_bpd', 'terms_bpd', 'prior_bpd', 'mse'} for data x, or None if the model has no likelihood."""
    return None

  def sampler_samples_fn(self, dummy_noise, y, *, sampler, num_inference_steps=None, eta=0.,
                         use_clipped_model_output=False, skip_prk_steps=False, noise_fn=tf.random_normal):
    """{'samples': ...} from one of the samplers of diffusion_tf/samplers.py (ddpm (respaced), ddim, pndm)."""
    return {'samples': self.diffusion.sample_loop(
      functools.partial(self._denoise, y=y, dropout=0), shape=dummy_noise.shape.as_list(), sampler=sampler,
      num_inference_steps=num_inference_steps, eta=eta, use_clipped_model_output=use_clipped_model_output,
      skip_prk_steps=skip_prk_steps, noise_fn=noise_fn)}


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


def latest_checkpoint(model_dir):
  """Path prefix of the newest checkpoint in model_dir, or None."""
  if not model_dir or not tf.io.gfile.isdir(model_dir):
    return None
  return tf.train.latest_checkpoint(model_dir)


def checkpoint_exists(path):
  return tf.io.gfile.exists(path + '.index')


def resolve_checkpoint(path):
  """A checkpoint prefix (model.ckpt-N) or a directory (its latest checkpoint) -> the prefix; UsageError if none."""
  if path is None:
    raise UsageError('no checkpoint given')
  if tf.io.gfile.isdir(path):
    ckpt = latest_checkpoint(path)
    if ckpt is None:
      raise UsageError('{} has no checkpoint (no "checkpoint" file listing model.ckpt-*); expected a directory '
                       'with TF checkpoints or a checkpoint prefix such as {}/model.ckpt-1000'.format(path, path))
    return ckpt
  if not checkpoint_exists(path):
    raise UsageError('checkpoint {} does not exist (no {}.index); expected a TF checkpoint prefix such as '
                     'model_dir/model.ckpt-1000, or a directory holding checkpoints'.format(path, path))
  return path


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
  utils.ema_scope reads during training); variables without a shadow (global_step) are loaded as they are.
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


# ---------------------------------------------------------------------------------------------------------------
# Devices

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
  from tensorflow.python.client import device_lib
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
      config = tf.ConfigProto(allow_soft_placement=True, device_count={'CPU': num_cpu_replicas, 'GPU': 0})
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
      raise NonFiniteLossError(step, loss, self._model_dir)
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
  import datetime
  date_str = datetime.datetime.now().strftime('%Y-%m-%d') if date_str is None else date_str
  return os.path.join(log_dir, date_str, exp_name)


def run_training(
    *, model_constructor, train_input_fn, total_bs, optimizer, lr, warmup, grad_clip, ema_decay=0.9999,
    tpu=None, zone=None, project=None, log_dir=None, exp_name=None, dump_kwargs=None, date_str=None,
    model_dir=None, iterations_per_loop=1000, keep_checkpoint_max=2, max_steps=int(1e10), warm_start_from=None,
    save_checkpoints_steps=None, save_checkpoints_secs=None, save_summary_steps=100, log_every_steps=100,
    num_gpus=None, num_cpu_replicas=None, distribution=None, seed=None, max_train_secs=None,
    worker_timeout_secs=DEFAULT_WORKER_TIMEOUT_SECS, printer=print):
  """Train `model_constructor()` on batches of `train_input_fn`; see the module docstring.

  The experiment directory is `model_dir`, or {log_dir}/{date_str}/{exp_name} as in the original. If it already
  exists, training continues from its latest checkpoint (the step count continues); kwargs.json is (re)written.
  Checkpoints are saved every `save_checkpoints_steps` steps or `save_checkpoints_secs` seconds (default 1600 s,
  the original's) and the last `keep_checkpoint_max` are kept. `max_steps` bounds the global step, `max_train_secs`
  the time spent in this call's training loop (a checkpoint is saved when it stops).
  When the TF_CONFIG environment variable describes a cluster, every worker runs this same call (see
  docs/distributed.md): the global batch `total_bs` splits over the replicas of all workers, the chief alone writes
  checkpoints, summaries and kwargs.json, and a worker on which no step finishes for `worker_timeout_secs` (a peer is
  missing or dead) stops with ClusterError.
  Returns the model_dir. Raises NonFiniteLossError on a NaN/inf loss, UsageError on bad settings.
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

  from .paths import check_writable_dir
  check_writable_dir(model_dir, 'model_dir')
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
      optimizer=optimizer, grad_clip=grad_clip, tpu=use_tpu)

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

  hooks = [_ProgressHookFactory()] + ([_StopAfterSecsHook()] if max_train_secs else [])
  t0 = time.time()
  try:
    if dist.kind == 'multi_worker':
      _train_on_cluster(estimator, input_fn, max_steps, hooks, dist.cluster, worker_timeout_secs)
    else:
      estimator.train(input_fn=input_fn, max_steps=max_steps, hooks=hooks)
  except tf.errors.InvalidArgumentError as e:
    parsed = _parse_nonfinite_error(e)
    if parsed is None:
      raise
    raise NonFiniteLossError(parsed[0], parsed[1], model_dir) from None
  last_ckpt = latest_checkpoint(model_dir)
  printer('training done in {:.0f} s; latest checkpoint {}'.format(time.time() - t0, last_ckpt))
  return model_dir


# ---------------------------------------------------------------------------------------------------------------
# Evaluation: samples, Inception Score, FID

def default_stats_dir(dataset_name, *, tfds_data_dir=None, tfr_file=None):
  """Where real-data FID statistics are cached: next to the data when it is local (<tfds_data_dir>/fid_stats, or
  the TFRecords' folder /fid_stats), else in the local cache ($DIFFUSION_TF_CACHE or ~/.cache/diffusion_tf)."""
  from .. import inception
  from .paths import is_url
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


def iterate_real_images(input_fn, num_examples=None):
  """uint8 numpy batches [B, H, W, 3] of a dataset input fn, in its (fixed) order, from a graph of their own."""
  batch_size = _divisor_batch_size(num_examples)
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


class EvalWorker:
  """Samples from a run's checkpoints and measures them (the original's evaluation loop).

  For each checkpoint: `num_inception_samples` samples with the EMA weights (and, unless skip_non_ema_pass, the raw
  weights) -> <logdir>/eval/step<N>_<ema>_samples.png (a grid), and either <...>_samples.npz (dump_samples_only) or
  the Inception Score (10 splits) and FID against the training set and, if the dataset has one, the test set ->
  TensorBoard scalars eval_<ema>/inception_score, fid_train, fid_test and <...>_metrics.json. Checkpoints whose
  outputs exist are skipped, so a restarted worker continues.
  """

  def __init__(self, *, model_constructor, total_bs, num_inception_samples, dataset, tpu_name=None, zone=None,
               project=None, inception_graph=None, stats_dir=None, stats_name=None, num_gpus=None, printer=print):
    if not isinstance(num_inception_samples, int) or num_inception_samples < 2:
      raise UsageError('num_inception_samples={!r}; expected an integer >= 2'.format(num_inception_samples))
    self.model_constructor = model_constructor
    self.dataset = dataset
    self.num_inception_samples = num_inception_samples
    self.inception_graph = inception_graph
    self.stats_dir = stats_dir
    self.stats_name = stats_name or '{}-{}px'.format(dataset.name, dataset.image_size)
    self._print = printer
    self.dist = choose_distribution(tpu_name=tpu_name, zone=zone, project=project, num_gpus=num_gpus)
    self.total_bs = total_bs
    self.dist.check_batch_size(total_bs)
    self._extractor = None

  # -- real data statistics
  def _reference_stats(self):
    from . import fid_stats
    refs = {}
    splits = [('train', self.dataset.train_one_pass_input_fn, self.dataset.num_train_examples)]
    if self.dataset.num_eval_examples:  # None: no test split
      splits.append(('test', self.dataset.eval_input_fn, self.dataset.num_eval_examples))
    for split, input_fn, count in splits:
      # the whole split (CIFAR-10: 50000 / 10000 images); unknown or larger splits: their first 50000 images
      num = None if (count and count <= 50000) else 50000
      stats, path = fid_stats.get_or_compute_statistics(
        self.stats_dir, dataset=self.stats_name, split=split, extractor=self._extractor, num_samples=num,
        batches_fn=lambda input_fn=input_fn, count=count: iterate_real_images(input_fn, count))
      self._print('reference statistics ({} split, {} images): {}'.format(split, stats.get('num_samples'), path))
      refs[split] = (stats, path)
    return refs

  def _metrics(self, samples_uint8, refs):
    from . import classifier_metrics_numpy as metrics
    from . import fid_stats
    moments, logits = fid_stats.RunningMoments(), []
    for start in range(0, len(samples_uint8), 500):
      pool_3, batch_logits = self._extractor.features(samples_uint8[start:start + 500])
      moments.update(pool_3)
      logits.append(batch_logits)
    mu, sigma = moments.mean_and_covariance()
    logits = np.concatenate(logits)
    is_mean, is_std = metrics.inception_score_mean_std(logits, num_splits=min(10, len(logits)))
    out = {'inception_score': is_mean, 'inception_score_std': is_std}
    for split, (stats, path) in refs.items():
      out['fid_' + split] = metrics.frechet_distance(stats['mu'], stats['sigma'], mu, sigma)
      out['ref_stats_' + split] = path
    return out

  # -- sampling
  def _build(self):
    from .script_utils import build_seeded_samples
    model = self.model_constructor()
    assert isinstance(model, Model)
    outputs, noises = build_seeded_samples(
      self.dist, self.total_bs, self.dataset.image_shape,
      lambda dummy, y, noise_fn: {'samples': model.samples_fn(dummy, y, noise_fn=noise_fn)['samples']})
    return outputs['samples'], noises

  def _sample(self, sess, samples, noises, seed):
    from .script_utils import run_seeded, to_uint8
    out, num_batches = [], -(-self.num_inception_samples // self.total_bs)
    t0 = time.time()
    for b in range(num_batches):
      out.append(to_uint8(run_seeded(sess, samples, noises, seed, b)))
      self._print('  sampled batch {}/{} ({:.0f} s)'.format(b + 1, num_batches, time.time() - t0))
    return np.concatenate(out)[:self.num_inception_samples]

  def run(self, logdir, once: bool, skip_non_ema_pass=True, dump_samples_only=False, load_ckpt=None, poll_secs=60,
          timeout_secs=None, seed=0):
    from .. import inception
    from .script_utils import save_npz_atomic, write_json_atomic
    from .paths import check_writable_dir
    if load_ckpt is not None:
      load_ckpt = resolve_checkpoint(load_ckpt)
      once = True
    eval_dir = os.path.join(logdir, 'eval')
    check_writable_dir(eval_dir, 'eval dir')
    passes = [True] if skip_non_ema_pass else [True, False]
    done_file = lambda step, ema: os.path.join(eval_dir, 'step{:08d}_{}{}'.format(
      step, 'ema' if ema else 'noema', '_samples.npz' if dump_samples_only else '_metrics.json'))
    if once:
      load_ckpt = load_ckpt or resolve_checkpoint(logdir)
      done = [done_file(checkpoint_step(load_ckpt), ema) for ema in passes]
      if all(tf.io.gfile.exists(f) for f in done):
        self._print('{} exist: checkpoint {} is already evaluated'.format(', '.join(done), load_ckpt))
        return
    if not dump_samples_only:  # fail on a missing Inception graph before any sampling
      self._extractor = inception.InceptionExtractor(path=self.inception_graph)
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
          step = checkpoint_step(ckpt)
          for ema in passes:
            tag = 'ema' if ema else 'noema'
            prefix = os.path.join(eval_dir, 'step{:08d}_{}'.format(step, tag))
            out_file = done_file(step, ema)
            if tf.io.gfile.exists(out_file):
              self._print('{} exists: checkpoint {} ({}) is already evaluated'.format(out_file, ckpt, tag))
              continue
            self._print('evaluating {} (step {}, {} weights): {} samples'.format(
              ckpt, step, tag, self.num_inception_samples))
            restore_weights(sess, ckpt, ema=ema)
            images = self._sample(sess, samples, noises, seed)
            utils.save_tiled_imgs(prefix + '_samples.png', images[:100])
            writer.images('eval_{}/samples'.format(tag), images[:64], step=step)
            if dump_samples_only:
              save_npz_atomic(out_file, arr_0=images)
              self._print('wrote {}'.format(out_file))
              continue
            result = self._metrics(images, refs)
            for k, v in result.items():
              if not k.startswith('ref_stats'):
                writer.scalar('eval_{}/{}'.format(tag, k), v, step=step)
            writer.flush()
            result.update(checkpoint=ckpt, step=step, weights=tag, num_samples=len(images), seed=seed,
                          inception_graph=self._extractor.graph_path,
                          inception_graph_sha256=self._extractor.graph_sha256)
            write_json_atomic(out_file, result)
            self._print('step {} {}: IS {:.3f} +- {:.3f}, {}'.format(
              step, tag, result['inception_score'], result['inception_score_std'], ', '.join(
                'FID({}) {:.3f}'.format(k[4:], v) for k, v in sorted(result.items()) if k.startswith('fid_'))))
      writer.close()
