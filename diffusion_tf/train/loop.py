"""Training: one model_fn for a Cloud TPU and for CPU/GPU machines (`run_training`).

run_training trains a `Model` with a TPUEstimator: on TPU cores when `tpu` names a TPU, otherwise with use_tpu=False
on this machine (one CPU or GPU), or with an Estimator and a MirroredStrategy when several GPUs are used (a
MultiWorkerMirroredStrategy over the machines of a cluster that the TF_CONFIG environment variable describes). Adam
(or RMSProp) with a linear warm-up and gradient clipping (each replica's gradient clipped at grad_clip, then
averaged, as in the original), an EMA of the weights (decay 0.9999) updated after every step, summaries train/loss,
gnorm, pnorm and lr. An existing model_dir is resumed from its latest readable checkpoint; a NaN/inf loss stops the
run with an error naming the step, without updating the weights; SIGTERM/SIGINT save the current step and stop.
"""

import datetime
import os
import re
import time

import numpy as np
import tensorflow.compat.v1 as tf

from .. import checks, compat, utils
from ..errors import ClusterError, NonFiniteLossError, TrainingStopped, UsageError
from . import accumulation, loss_scale as loss_scaling, preemption, summaries as tpu_summaries, hooks as training_hooks
from ..runs import run_lock
from ..runs.devices import TF_CONFIG_VAR, choose_distribution, cluster_from_tf_config
from ..experiments.model import Model
from ..runs.paths import check_writable_dir
from ..runs.run_dir import KWARGS_FILE, checkpoint_step, latest_checkpoint, load_train_kwargs, write_kwargs_json

_NONFINITE_MARKER = 'non-finite training loss at step'


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
        shadow = tf.get_variable(utils.EMA_NAME, initializer=var.initial_value, trainable=False)
      shadows[var.op.name] = shadow
      updates.append(strategy.extended.update(
        shadow, lambda s, v: s.assign_sub((1. - decay) * (s - v)), args=(var,), group=True))
    return shadows, tf.group(*updates, name='ema_update')

  return tf.distribute.get_replica_context().merge_call(_merge_fn)


def _failed_path(message):
  """The file named in an OpError's message `... <path>; <cause>`: on TF 1.15 that is the message's first line, on
  TF 2.15 a later one (after 'Graph execution error:'). None when no line names one."""
  for line in message.splitlines():
    words = line.split(';')[0].split() if ';' in line else []
    if words and '/' in words[-1]:
      return words[-1]
  return None


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
  path = _failed_path(e.message) or model_dir
  last = tf.train.latest_checkpoint(model_dir)
  raise utils.WriteError('cannot write {} while training: {} ({}); {}'.format(
    path, cause, type(e).__name__, 'the last complete checkpoint, {}, is untouched'.format(last) if last else
    'there is no complete checkpoint yet')) from None


DEFAULT_WORKER_TIMEOUT_SECS = 600


def _train_on_cluster(estimator, input_fn, max_steps, hooks, cluster):
  """estimator.train on every worker of a TF_CONFIG cluster; TensorFlow's distribute coordinator starts this
  worker's server and runs the MultiWorkerMirroredStrategy training on it (Estimator.train alone does not)."""
  try:
    tf.estimator.train_and_evaluate(
      estimator, tf.estimator.TrainSpec(input_fn=input_fn, max_steps=max_steps, hooks=hooks),
      tf.estimator.EvalSpec(input_fn=input_fn))  # evaluation is the `evaluation` command's; never run here
  except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
          tf.errors.DeadlineExceededError) as e:
    raise ClusterError(training_hooks.worker_lost_message(cluster, '{}: {}'.format(
      type(e).__name__, e.message.strip().splitlines()[0] if e.message.strip() else ''))) from None
  finally:
    compat.release_std_server()


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
    worker_timeout_secs=DEFAULT_WORKER_TIMEOUT_SECS, worker_startup_secs=None, grad_accum_steps=1, printer=print):
  """Train `model_constructor()` on batches of `train_input_fn`; see the module docstring.

  total_bs is the batch of one update; each replica computes its part in grad_accum_steps microbatches one after
  another (train/accumulation.py: the same update in less memory).

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
  missing or dead), or whose first step has not finished `worker_startup_secs` (default: `worker_timeout_secs`) after
  training began, is killed by its watchdog after one `error:` line (hooks.WorkerWatchdogHook); a lost peer that
  TensorFlow reports is a ClusterError.
  Returns the model_dir. Raises NonFiniteLossError on a NaN/inf loss, UsageError on bad settings, PathError when
  another process trains in model_dir, TrainingStopped after a stop signal, utils.WriteError on a failed write,
  ClusterError when a worker is lost.
  """
  if model_dir is None:
    if log_dir is None or exp_name is None:
      raise UsageError('run_training needs model_dir, or log_dir and exp_name')
    model_dir = make_model_dir(log_dir, exp_name, date_str)
  checks.check_run_settings(dict(
    optimizer=optimizer, total_bs=total_bs, grad_clip=grad_clip, lr=lr, warmup=warmup, ema_decay=ema_decay,
    keep_checkpoint_max=keep_checkpoint_max, iterations_per_loop=iterations_per_loop, log_every_steps=log_every_steps,
    save_summary_steps=save_summary_steps, worker_timeout_secs=worker_timeout_secs,
    worker_startup_secs=worker_startup_secs, max_steps=max_steps,
    save_checkpoints_steps=save_checkpoints_steps, save_checkpoints_secs=save_checkpoints_secs,
    max_train_secs=max_train_secs, seed=seed, grad_accum_steps=grad_accum_steps))
  if save_checkpoints_steps is None and save_checkpoints_secs is None:
    save_checkpoints_secs = 1600

  dist = distribution or choose_distribution(tpu_name=tpu, zone=zone, project=project, num_gpus=num_gpus,
                                             num_cpu_replicas=num_cpu_replicas,
                                             cluster=cluster_from_tf_config(os.environ.get(TF_CONFIG_VAR)))
  local_bs = dist.check_batch_size(total_bs)
  checks.check_microbatches(total_bs, grad_accum_steps, dist.num_replicas)
  if dist.kind == 'multi_worker' and max_train_secs:
    raise UsageError('max_train_secs={} with a {} cluster: each worker would stop at its own time and leave the others '
                     'waiting; expected --max_steps instead'.format(max_train_secs, TF_CONFIG_VAR))
  check_writable_dir(model_dir, 'model_dir')
  # one trainer per run directory (in a cluster, the chief holds it for all workers); released after training (a
  # flock, so also when this process dies)
  lock = run_lock.RunLock(model_dir).acquire() if dist.is_chief else None
  watchdog = None
  try:
    _announce_and_record(model_dir, dist, total_bs, local_bs, dump_kwargs, printer)
    if dist.kind == 'multi_worker':  # from here on: TF 2.15 joins the cluster when the strategy is made
      watchdog = training_hooks.WorkerWatchdogHook(worker_timeout_secs, dist.cluster, worker_startup_secs)
      watchdog.start()
    model_fn = _make_model_fn(model_constructor, dist=dist, local_bs=local_bs, optimizer=optimizer, lr=lr,
                              warmup=warmup, grad_clip=grad_clip, ema_decay=ema_decay, model_dir=model_dir,
                              save_summary_steps=save_summary_steps, grad_accum_steps=grad_accum_steps)
    estimator, input_fn = _make_estimator(
      model_fn, train_input_fn, dist=dist, local_bs=local_bs, total_bs=total_bs,
      iterations_per_loop=iterations_per_loop, warm_start_from=warm_start_from, printer=printer,
      config=dict(model_dir=model_dir, save_checkpoints_steps=save_checkpoints_steps,
                  save_checkpoints_secs=save_checkpoints_secs, keep_checkpoint_max=keep_checkpoint_max,
                  save_summary_steps=save_summary_steps, log_step_count_steps=None, tf_random_seed=seed,
                  session_config=dist.session_config))
    stop_signals = preemption.StopSignals()
    hooks = [training_hooks.ProgressHookFactory(log_every_steps, max_steps, model_dir, printer),
             preemption.StopOnSignalHook(stop_signals, printer)]
    if max_train_secs:
      hooks.append(training_hooks.StopAfterSecsHook(max_train_secs, printer))
    if watchdog is not None:
      hooks.append(watchdog)
    t0 = time.time()
    _train(estimator, input_fn, hooks, stop_signals, dist=dist, max_steps=max_steps, model_dir=model_dir)
  finally:
    if watchdog is not None:
      watchdog.stop()
    if lock is not None:
      lock.release()
  if stop_signals.signum is not None:
    last_ckpt = tf.train.latest_checkpoint(model_dir)
    raise TrainingStopped(stop_signals.name, stop_signals.signum, checkpoint_step(last_ckpt), last_ckpt)
  last_ckpt = latest_checkpoint(model_dir)
  printer('training done in {:.0f} s; latest checkpoint {}'.format(time.time() - t0, last_ckpt))
  return model_dir


def _announce_and_record(model_dir, dist, total_bs, local_bs, dump_kwargs, printer):
  """Print what the run resumes from and on which devices; the chief (re)writes kwargs.json, saying what changed."""
  last_ckpt = latest_checkpoint(model_dir)
  if last_ckpt:
    printer('model dir {} exists: resuming from {} (step {})'.format(model_dir, last_ckpt, checkpoint_step(last_ckpt)))
  else:
    printer('model dir: {}'.format(model_dir))
  printer('devices: {}, global batch {}, per replica {}'.format(dist, total_bs, local_bs))
  if dump_kwargs is None or not dist.is_chief:
    return
  if tf.io.gfile.exists(os.path.join(model_dir, KWARGS_FILE)):
    old = load_train_kwargs(model_dir)
    changed = sorted(k for k in set(old) | set(dump_kwargs) if old.get(k) != dump_kwargs.get(k))
    if changed:
      printer('kwargs.json: updating {}'.format(', '.join('{}: {!r} -> {!r}'.format(
        k, old.get(k), dump_kwargs.get(k)) for k in changed)))
  write_kwargs_json(model_dir, dump_kwargs)


def _loss_scale_for(precision, dist):
  """A loss_scale.DynamicLossScale for a float16 U-Net on one device, None for float32 and bfloat16 (whose exponent
  range is float32's). Raises UsageError for float16 on a TPU or with several replicas."""
  if precision != 'float16':
    return None
  if dist.kind != 'single':
    raise UsageError('precision=float16 on {}: its loss scaling skips steps on one device only; expected '
                     '--precision=bfloat16 there (TPUs, and GPUs from Ampere on, compute in bfloat16 without loss '
                     'scaling)'.format(dist))
  return loss_scaling.DynamicLossScale()


def _make_model_fn(model_constructor, *, dist, local_bs, optimizer, lr, warmup, grad_clip, ema_decay, model_dir,
                   save_summary_steps, grad_accum_steps=1):
  """The Estimator's model_fn (TRAIN only): the model's loss, the optimizer step, the EMA update, the summaries. Each
  replica's batch of local_bs is computed in grad_accum_steps microbatches (train/accumulation.py)."""
  use_tpu = dist.kind == 'tpu'

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

    def microbatch_loss(microbatch):
      # training loss
      train_info_dict = model.train_fn(utils.normalize_data(tf.cast(microbatch['image'], tf.float32)),
                                       microbatch['label'])
      loss = train_info_dict['loss']
      assert loss.shape.as_list() == []
      if not use_tpu:  # TPUs have no Assert op; there ProgressHook checks the loss once per loop
        loss = _check_loss_finite(loss, global_step)
      return loss

    # float16: dynamic loss scaling; a skipped step leaves the weights and the EMA as they are
    scaler = _loss_scale_for(model.precision, dist)
    made = {}

    def compute_gradients(loss):
      # the optimizer is made after the first loss, as the original made it: a graph seed (--seed) gives each random
      # op of the model the seed of its place in the graph, so the same order keeps the same noise
      if not made:
        made['lr'] = utils.get_warmed_up_lr(max_lr=lr, warmup=warmup, global_step=global_step)
        made['opt'] = utils.build_optimizer(tpu=use_tpu, optimizer=optimizer, lr=made['lr'], loss_scale=scaler)
      return made['opt'].compute_gradients(loss, var_list=tf.trainable_variables())

    # train op: the gradient of the batch, in grad_accum_steps microbatches one after another (train/accumulation.py)
    loss, grads_and_vars = accumulation.accumulate_gradients(
      microbatch_loss, {'image': features['image'], 'label': features['label']}, num_microbatches=grad_accum_steps,
      compute_gradients=compute_gradients)
    trainable_variables = [v for _, v in grads_and_vars]
    assert trainable_variables == tf.trainable_variables()
    tf.logging.info('num params: {:,}'.format(sum(int(np.prod(p.shape.as_list())) for p in trainable_variables)))
    warmed_up_lr = made['lr']
    train_op, gnorm = utils.apply_clipped_gradients(
      made['opt'], grads_and_vars, grad_clip=replica_grad_clip(grad_clip, dist.num_replicas), global_step=global_step)

    # ema, updated after each step: its ops are built under the dependency on the optimizer's update, so that they
    # read the updated weights and the incremented step (k + 1 after step k, hence global_step - 1 for the decay).
    # (docs/fidelity.md: built outside that dependency, the ops would race with the update.)
    with tf.control_dependencies([train_op]):
      ema, ema_op = _make_ema(global_step=global_step - 1,
                              ema_decay=ema_decay if scaler is None else scaler.gate_ema_decay(ema_decay),
                              trainable_variables=trainable_variables, mirrored=dist.uses_strategy)
      train_op = tf.group(ema_op)

    # summaries
    summaries = tpu_summaries.TpuSummaries(model_dir, save_summary_steps=save_summary_steps)
    summaries.scalar('train/loss', loss)
    summaries.scalar('train/gnorm', gnorm)
    summaries.scalar('train/pnorm', utils.rms(trainable_variables))
    summaries.scalar('train/lr', warmed_up_lr)
    if scaler is not None:
      summaries.scalar('train/loss_scale', scaler.scale)
      summaries.scalar('train/skipped_steps', tf.cast(scaler.skipped_steps, tf.float32))
    if dist.uses_strategy:
      summaries.write_plain()
      return tf.estimator.EstimatorSpec(mode=mode, loss=loss, train_op=train_op)
    if use_tpu:
      host_call = summaries.get_host_call()
    else:
      summaries.write_plain()
      host_call = None
    return tf.estimator.tpu.TPUEstimatorSpec(mode=mode, loss=loss, train_op=train_op, host_call=host_call)

  return model_fn


def _make_estimator(model_fn, train_input_fn, *, dist, local_bs, total_bs, iterations_per_loop, warm_start_from,
                    config, printer):
  """(estimator, input_fn): an Estimator with the distribution's strategy (several GPUs, a cluster), else a
  TPUEstimator (a TPU, or use_tpu=False on this machine's one device). `config`: the RunConfig's keyword arguments."""
  if dist.uses_strategy:
    estimator = tf.estimator.Estimator(
      model_fn=model_fn, config=tf.estimator.RunConfig(train_distribute=dist.make_strategy(), **config),
      warm_start_from=warm_start_from)

    def input_fn(params, input_context=None):
      # per replica batches; on a cluster each worker's pipeline reads its own shard of the data (see datasets.py)
      if dist.kind == 'multi_worker':
        printer('input pipeline {} of {}'.format(input_context.input_pipeline_id, input_context.num_input_pipelines))
      return train_input_fn(dict(params or {}, batch_size=local_bs, context=input_context))

    return estimator, input_fn
  estimator = tf.estimator.tpu.TPUEstimator(
    model_fn=model_fn, use_tpu=dist.kind == 'tpu', train_batch_size=total_bs,
    config=tf.estimator.tpu.RunConfig(cluster=dist.resolver, tpu_config=make_tpu_config(iterations_per_loop), **config),
    warm_start_from=warm_start_from)
  return estimator, train_input_fn


def _train(estimator, input_fn, hooks, stop_signals, *, dist, max_steps, model_dir):
  """estimator.train (on every worker of a cluster) until max_steps or a stop; a NaN/inf loss becomes
  NonFiniteLossError and a failed write utils.WriteError."""
  try:
    with stop_signals:
      if dist.kind == 'multi_worker':
        _train_on_cluster(estimator, input_fn, max_steps, hooks, dist.cluster)
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
