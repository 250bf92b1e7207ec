"""The devices a computation runs on (`Distribution`, chosen by `choose_distribution`): a Cloud TPU's cores, several
GPUs or CPU devices of this machine, the machines of a TF_CONFIG cluster, or one CPU/GPU; and replicating a
computation over them.
"""

import collections
import json
import re

import tensorflow.compat.v1 as tf
from tensorflow.python.client import device_lib
from tensorflow.python.tpu import tpu_function
from tensorflow.python.tpu.ops import tpu_ops

from .. import checks, compat
from ..errors import UsageError


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
CLUSTER_TASK_TYPES = ('chief', 'worker')


class Cluster(collections.namedtuple('Cluster', ['spec', 'task_type', 'task_index'])):
  """The machines of a multi-worker run, as TF_CONFIG describes them: `spec` {'chief': [address], 'worker': [...]}
  and this process's task. The chief is the `chief` task, or worker 0 if there is none."""

  @property
  def num_workers(self):
    return sum(len(self.spec.get(t, [])) for t in CLUSTER_TASK_TYPES)

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
  other = sorted(set(spec) - set(CLUSTER_TASK_TYPES))
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
  if task_type not in spec or not checks.is_int(task_index) or not (
      0 <= task_index < len(spec[task_type])):
    raise UsageError('{} task {!r} is not a task of its cluster ({}); expected "task": {{"type": one of {}, "index": '
                     '0..n-1}}'.format(TF_CONFIG_VAR, task, ', '.join('{} x{}'.format(t, len(a)) for t, a in sorted(
                       spec.items())), ', '.join(sorted(spec))))
  addresses = [a for t in CLUSTER_TASK_TYPES for a in spec.get(t, [])]
  if len(set(addresses)) != len(addresses):
    raise UsageError('{} lists an address twice ({}); expected one "host:port" per task'.format(
      TF_CONFIG_VAR, ', '.join(addresses)))
  return Cluster(spec={t: list(spec[t]) for t in spec}, task_type=task_type, task_index=task_index)


def _count_local_gpus():
  return sum(1 for d in device_lib.list_local_devices() if d.device_type == 'GPU')


class Distribution:
  """Where a computation runs.

  kind 'tpu': the cores of a Cloud TPU (`tpu_name`), those of all its hosts for a pod slice; 'mirrored': several
  GPUs (or, for tests of this path, several CPU devices of this machine) with data parallelism; 'multi_worker': the
  GPUs (or the CPU) of every machine of a TF_CONFIG cluster (`cluster`), data parallel over all of them; 'single':
  one CPU or GPU.
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
    checks.check_int(what, total_bs)
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


def count_tpu_cores(resolver):
  """(hosts, cores per host) of the TPU system a TPUClusterResolver names; the replicas are all hosts' cores.

  `num_accelerators()` counts the cores of one host only (TF 1.15 and 2.15 document it as "the number of TPU cores
  per worker": 8 on every v3 host, also on the 4 hosts of a v3-32), so the hosts come from the cluster spec: the
  tasks of the resolver's job, one per host. A resolver without a cluster spec (a `grpc://` address, or a TPU VM's
  'local') sees one host.
  """
  cores_per_host = resolver.num_accelerators().get('TPU', 0)
  spec = resolver.cluster_spec()
  job = resolver.get_job_name()
  num_hosts = spec.num_tasks(job) if spec is not None and job in spec.jobs else 1
  return num_hosts, cores_per_host


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
      num_hosts, cores_per_host = count_tpu_cores(resolver)
    except Exception as e:  # connection problems come in many types
      raise UsageError('cannot reach TPU {!r} ({}: {}); expected the name of a running Cloud TPU'.format(
        tpu_name, type(e).__name__, e)) from None
    if cores_per_host < 1:
      raise UsageError('TPU {!r} reports no TPU cores'.format(tpu_name))
    return Distribution('tpu', num_hosts * cores_per_host, resolver=resolver)
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
