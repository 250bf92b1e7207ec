"""`train --grad_accum_steps --recompute`, the memory levers: the same update in less memory (tools/make_flag_table.py
names these tests for the two flags).

- grad_accum_steps=K: the update of a batch computed in K microbatches equals the update of the whole batch, to
  float32 rounding, on one CPU replica (the training step of train/loop.py run in a session) and on two (an
  Estimator with a MirroredStrategy): the weights, RMSProp's slots, the EMA shadows, the global step and the logged
  loss and gradient norm after 3 steps with the learning-rate warm-up and the clipping both acting (RMSProp, whose
  step depends on the gradient's scale, so a clipping of each microbatch would show). The model has no randomness
  (the diffusion's t and noise are drawn per microbatch, equal in distribution only) and records the batches its
  loss was built for: K microbatches of B/K, so a flag that was ignored fails there.
- recompute: its gradients are proven equal in tests/test_recompute.py; here the flag reaches the graph.
- both through run_cifar.py train (the three scripts share commands.train_from_kwargs): the graph has K microbatches
  and recomputed blocks, and a checkpoint of a run with the levers restores in a run without them and back (they
  add no variable).
- bad values: one UsageError from checks.py, before anything is built, on every script.
"""

import os
import tempfile

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from google.protobuf import text_format

from support.scripts import checkpoint_steps, load_script, read_scalars

from diffusion_tf.errors import UsageError
from diffusion_tf.experiments import model
from diffusion_tf.runs import devices
from diffusion_tf.train import accumulation
from diffusion_tf.train import loop as training

IMAGES = np.random.RandomState(0).randint(0, 256, size=[8, 2, 2, 3]).astype(np.int32)
# RMSProp (its first step depends on the gradient's scale), warm-up over 2 steps (step 0 at lr 0, step 1 at lr / 2),
# clipping at a norm below the gradients' (0.2-0.7), EMA decay 0.5 (one EMA step far from rounding)
SETTINGS = dict(optimizer='rmsprop', lr=0.05, warmup=2, grad_clip=0.1, ema_decay=0.5)
STEPS = 3


class _RecordingModel(model.Model):
  """No randomness: loss = mean_b ||tanh(s_b W) - 0.5||^2, s_b [3] the channel means of example b in [-1, 1], W [3, 4]
  (non-linear in W: each example has its own gradient direction). `batches` records the batch of each loss built."""

  batches = []

  def train_fn(self, x, y):
    type(self).batches.append(x.shape.as_list()[0])
    w = tf.get_variable('w', initializer=np.linspace(-1., 1., 12).reshape(3, 4).astype(np.float32))
    s = tf.reduce_mean(x, axis=[1, 2])  # [B, 3]
    return {'loss': tf.reduce_mean(tf.reduce_sum(tf.square(tf.tanh(tf.matmul(s, w)) - 0.5), axis=1))}


def _input_fn(params):
  ds = tf.data.Dataset.from_tensor_slices({'image': IMAGES, 'label': np.zeros(len(IMAGES), np.int32)})
  return ds.repeat().batch(params['batch_size'], drop_remainder=True)


def _one_replica_run(grad_accum_steps, total_bs=4):
  """({variable name: value} after STEPS training steps of train/loop.py's model_fn on one CPU, [(loss, gnorm)] per
  step, the batches the loss was built for)."""
  _RecordingModel.batches = []
  with tf.Graph().as_default():
    features = tf.data.make_one_shot_iterator(_input_fn({'batch_size': total_bs})).get_next()
    model_fn = training._make_model_fn(
      _RecordingModel, dist=devices.choose_distribution(num_gpus=0), local_bs=total_bs, model_dir=tempfile.mkdtemp(),
      save_summary_steps=1, grad_accum_steps=grad_accum_steps, **SETTINGS)
    spec = model_fn(features, None, tf.estimator.ModeKeys.TRAIN, {})
    gnorm = [t for t in tf.get_default_graph().get_operations() if t.name.endswith('global_norm/global_norm')]
    assert len(gnorm) == 1
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      logged = [sess.run([spec.loss, gnorm[0].outputs[0], spec.train_op])[:2] for _ in range(STEPS)]
      values = {v.op.name: sess.run(v) for v in tf.global_variables()}
  return values, logged, _RecordingModel.batches


def _assert_same_state(got, want):
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=2e-6, atol=1e-7, err_msg=name)


def test_grad_accum_steps_on_one_replica_is_the_whole_batch_update():
  want, want_logged, want_batches = _one_replica_run(1)
  assert want_batches == [4]
  assert want['global_step'] == STEPS
  assert all(gnorm > SETTINGS['grad_clip'] for _, gnorm in want_logged)  # the clipping acts at every step
  assert np.abs(want['w'] - np.linspace(-1., 1., 12).reshape(3, 4)).max() > 1e-3  # and the steps moved w
  for k in (2, 4):
    got, logged, batches = _one_replica_run(k)
    assert batches == [4 // k] * k  # the loss was built for K microbatches: the flag reached the step
    _assert_same_state(got, want)  # weights, slots, EMA, global step (once per update)
    np.testing.assert_allclose(logged, want_logged, rtol=2e-6)


def test_grad_accum_steps_on_two_cpu_replicas_is_the_whole_batch_update(tmp_path):
  """Two replicas of 2 examples (the per-replica clipping of the original: train/loop.py replica_grad_clip), with
  and without each replica's 2 examples in 2 microbatches: the same checkpoints and summaries at every step."""
  runs = {}
  for k in (1, 2):
    _RecordingModel.batches = []
    model_dir = str(tmp_path / 'k{}'.format(k))
    training.run_training(model_constructor=_RecordingModel, train_input_fn=_input_fn, total_bs=4, model_dir=model_dir,
                          max_steps=STEPS, save_checkpoints_steps=1, keep_checkpoint_max=STEPS + 1,
                          save_summary_steps=1, num_cpu_replicas=2, grad_accum_steps=k, printer=lambda *_: None,
                          **SETTINGS)
    assert _RecordingModel.batches == [2 // k] * k * 2  # each replica's loss built for k microbatches
    assert checkpoint_steps(model_dir) == list(range(STEPS + 1))
    runs[k] = model_dir
  for step in range(1, STEPS + 1):
    readers = [tf.train.load_checkpoint(os.path.join(runs[k], 'model.ckpt-{}'.format(step))) for k in (1, 2)]
    names = sorted(readers[0].get_variable_to_shape_map())
    assert names == sorted(readers[1].get_variable_to_shape_map()) and 'w/ExponentialMovingAverage' in names
    _assert_same_state({n: readers[1].get_tensor(n) for n in names}, {n: readers[0].get_tensor(n) for n in names})
  scalars = [read_scalars(runs[k]) for k in (1, 2)]
  for tag in ('train/loss', 'train/gnorm'):
    assert sorted(scalars[1][tag]) == sorted(scalars[0][tag]) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([scalars[1][tag][s] for s in range(1, STEPS + 1)],
                               [scalars[0][tag][s] for s in range(1, STEPS + 1)], rtol=2e-6)


def test_accumulated_microbatches_run_one_after_another():
  """Microbatch k + 1's inputs wait for the gradients of microbatches 0..k (a control dependency), so that one
  microbatch's activations are alive at a time; the sum is the batch's gradient."""
  with tf.Graph().as_default():
    x = tf.constant(np.arange(6, dtype=np.float32).reshape(6, 1))
    w = tf.get_variable('w', initializer=np.float32(0.5))
    inputs = []

    def loss_fn(mb):
      inputs.append(mb['x'])
      return tf.reduce_mean(tf.square(w * mb['x'] - 1.))

    loss, grads_and_vars = accumulation.accumulate_gradients(
      loss_fn, {'x': x}, num_microbatches=3, compute_gradients=lambda l: [(tf.gradients(l, w)[0], w)])
    assert [i.shape.as_list() for i in inputs] == [[2, 1]] * 3
    assert not inputs[0].op.control_inputs and inputs[1].op.control_inputs and inputs[2].op.control_inputs
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      got = sess.run([loss, grads_and_vars[0][0]])
  xs = np.arange(6.)
  np.testing.assert_allclose(got, [np.mean((0.5 * xs - 1.) ** 2), np.mean(2. * (0.5 * xs - 1.) * xs)], rtol=1e-6)


TINY_DIGITS = dict(exp_name='mem', dataset='digits', resolution=8, model_name='tiny', num_diffusion_timesteps=10,
                   total_bs=4, warmup=0, dropout=0.1, save_checkpoints_steps=1, keep_checkpoint_max=5)


def _graph_names(model_dir):
  """Node names of the training graph the Estimator wrote (graph.pbtxt, rewritten by every run)."""
  graph = tf.GraphDef()
  with open(os.path.join(model_dir, 'graph.pbtxt')) as f:
    text_format.Merge(f.read(), graph)
  return [node.name for node in graph.node]


@pytest.mark.slow
def test_memory_levers_reach_the_graph_and_their_checkpoints_restore_both_ways(tmp_path):
  """run_cifar.py train --grad_accum_steps=2 --recompute, then the same run resumed without them, then with them
  again: each resumes from the other's checkpoint (same variables), and the graph has two microbatches and the
  recomputed residual blocks exactly when the flags are given."""
  run_cifar = load_script('run_cifar')
  model_dir = str(tmp_path / 'run')
  for steps, levers in [(1, True), (2, False), (3, True)]:
    run_cifar.train(model_dir=model_dir, max_steps=steps, grad_accum_steps=2 if levers else 1, recompute=levers,
                    **TINY_DIGITS)
    assert checkpoint_steps(model_dir)[-1] == steps  # resumed from the last one, one more step
    names = _graph_names(model_dir)
    assert any(n.startswith('microbatch_1/') for n in names) == levers
    assert any('/recompute/' in n for n in names) == levers


@pytest.mark.parametrize('script', ['run_cifar', 'run_celebahq', 'run_lsun'])
@pytest.mark.parametrize('flags, message', [
  (dict(grad_accum_steps=0), 'grad_accum_steps=0; expected an integer >= 1'),
  (dict(grad_accum_steps=2.5), 'grad_accum_steps=2.5; expected an integer >= 1'),
  (dict(grad_accum_steps=3, total_bs=8), 'grad_accum_steps=3 does not divide the batch of 8 examples per replica'),
  (dict(recompute='yes'), "recompute='yes'; expected 0/1 or True/False"),
])
def test_bad_memory_lever_flags_fail_before_training(script, flags, message, tmp_path):
  with pytest.raises(UsageError) as e:
    load_script(script).train(exp_name='bad', model_dir=str(tmp_path / 'run'), **flags)
  assert message in str(e.value)
  assert not os.path.exists(str(tmp_path / 'run'))
