"""Devices: a TPU pod slice's replicas are the cores of all its hosts, as the TPUEstimator counts them."""

import types

import pytest
import tensorflow.compat.v1 as tf
from tensorflow_estimator.python.estimator.tpu import tpu_context

from diffusion_tf.data import pipeline
from diffusion_tf.errors import UsageError
from diffusion_tf.runs import devices
from diffusion_tf.train import loop

HOSTS = ['10.0.0.{}:8470'.format(2 + i) for i in range(4)]  # a v3-32: 4 hosts
CORES_PER_HOST = 8


class _FakePodResolver:
  """What a TPUClusterResolver answers for a v3-32 (without the Cloud TPU API): the 4 hosts as the tasks of job
  'worker', and num_accelerators() per host, as TF documents it."""

  def __init__(self, tpu=None, zone=None, project=None, hosts=HOSTS):
    self.hosts = list(hosts)

  def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
    return {'TPU': CORES_PER_HOST}

  def cluster_spec(self):
    return tf.train.ClusterSpec({'worker': self.hosts})

  def get_job_name(self):
    return 'worker'

  def master(self, task_type=None, task_id=None, rpc_layer=None):
    return 'grpc://' + self.hosts[0]


class _FakeTpuMasterSession:
  """A session on the TPU master that lists, for every task of the cluster_def it is given, that host's CPU and its
  TPU cores: what TensorFlow's TPU system query (tpu_system_metadata) counts hosts and cores from."""

  def __init__(self, target, config=None):
    self.devices = []
    for job in config.cluster_def.job:
      for task in job.tasks:
        prefix = '/job:{}/replica:0/task:{}/device:'.format(job.name, task)
        self.devices += [types.SimpleNamespace(name=prefix + 'CPU:0')] + [
          types.SimpleNamespace(name=prefix + 'TPU:{}'.format(c)) for c in range(CORES_PER_HOST)]

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def list_devices(self):
    return self.devices


@pytest.fixture
def pod(monkeypatch):
  monkeypatch.setattr(tf.distribute.cluster_resolver, 'TPUClusterResolver', _FakePodResolver)
  monkeypatch.setattr(tpu_context.tpu_system_metadata_lib, 'session_lib',
                      types.SimpleNamespace(Session=_FakeTpuMasterSession))
  return devices.choose_distribution(tpu_name='my-v3-32')


def test_pod_slice_replicas_are_the_cores_of_every_host(pod):
  assert pod.kind == 'tpu' and pod.num_replicas == 32
  assert pod.check_batch_size(128) == 4
  assert loop.replica_grad_clip(1., pod.num_replicas) == pytest.approx(1. / 32)  # what run_training passes
  with pytest.raises(UsageError, match=r'total_bs=100 is not divisible by the 32 replicas'):
    pod.check_batch_size(100)


def test_one_host_tpu_keeps_its_cores(monkeypatch):
  monkeypatch.setattr(tf.distribute.cluster_resolver, 'TPUClusterResolver',
                      lambda **kw: _FakePodResolver(hosts=HOSTS[:1]))
  assert devices.choose_distribution(tpu_name='my-v3-8').num_replicas == 8


def test_tpu_estimator_counts_the_same_replicas_and_feeds_each_host(pod, tmp_path):
  """The TPUEstimator of run_training (RunConfig(cluster=resolver), our TPUConfig) on the same pod: TensorFlow's own
  count of the slice (from the devices of the cluster the resolver describes) gives the per-core batch run_training
  asserts in model_fn, and per-host input calls train_input_fn once on each host, each reading its own shard."""
  config = tf.estimator.tpu.RunConfig(cluster=tf.distribute.cluster_resolver.TPUClusterResolver(tpu='my-v3-32'),
                                      tpu_config=loop.make_tpu_config(100), model_dir=str(tmp_path))
  internal = tpu_context._InternalTPUContext(config, train_batch_size=128, eval_batch_size=None,
                                             predict_batch_size=None, use_tpu=True)
  with tf.Graph().as_default(), internal.with_mode(tf.estimator.ModeKeys.TRAIN) as ctx:
    assert (ctx.num_hosts, ctx.num_of_cores_per_host, ctx.num_replicas) == (4, 8, pod.num_replicas)
    assert ctx.batch_size_for_model_fn == ctx.batch_size_for_input_fn == pod.check_batch_size(128) == 4
    for host in range(4):
      context = tpu_context.TPUContext(ctx, '/job:worker/task:{}/device:CPU:0'.format(host), host)
      _, _, invocations, replicas_fed = context.current_input_fn_deployment()
      assert (invocations, replicas_fed) == (4, 8)
      assert pipeline.input_pipeline({'batch_size': 4, 'context': context}) == (host, 4)
