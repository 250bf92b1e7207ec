"""--precision (diffusion_tf/precision.py, train/loss_scale.py): the U-Net computes in bfloat16 or float16 with
float32 weights, float32 statistics and a float32 timestep embedding; float16 trains with dynamic loss scaling;
checkpoints are the same float32 variables at every precision.

All in-process on the tiny U-Net at 8x8 (the loss graph and the training loop's model_fn run in a Session):
* float32 is the graph of a run without the flag: no cast but the timestep embedding's (the original's one);
* bfloat16 and float16: the convolutions and matmuls of the blocks in that type, the variables, the temb MLP, the
  group-norm statistics, the softmax and the output in float32; the weights' gradients float32;
* bfloat16 and float16 training follow the float32 loss curve (same batches, t and noise; LOSS_CURVE_TOLERANCE);
* a forced overflow skips the step (weights, Adam's slots and the EMA unchanged, the step counted, no non-finite
  loss error) and halves the scale; finite steps double it after growth_interval;
* float16 and float32 runs have the same global variables, and each restores the other's checkpoint.
"""

import functools

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from diffusion_tf import precision as precision_lib, utils
from diffusion_tf.diffusion_utils_2 import get_beta_schedule
from diffusion_tf.experiments import cifar10
from diffusion_tf.runs import devices
from diffusion_tf.train import loop as training, loss_scale

B, S, T = 4, 8, 100
# Loss curves of 300 Adam steps at lr 1e-3 on batches of CURVE_B, in means over windows of 100 steps (the loss of
# one batch varies by ~2x with its t): the largest relative difference of a window's mean from float32's (float32's
# window means 0.75, 0.59, 0.50). Measured 2026-12-02 (`pytest -s -k curve` prints them): bfloat16 0.0040 on
# TF 2.15 and 0.0104 on TF 1.15, float16 0.0046 and 0.0084. The tolerance is about three times the largest.
STEPS, WINDOW, CURVE_B = 300, 100, 2
LOSS_CURVE_TOLERANCE = {'bfloat16': 0.03, 'float16': 0.03}


def _model(precision):
  return cifar10.Model(
    model_name='tiny', betas=get_beta_schedule('linear', beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=T),
    model_mean_type='eps', model_var_type='fixedlarge', loss_type='mse', num_classes=1, dropout=0., randflip=False,
    precision=precision)


def _unet_graph(precision):
  g = tf.Graph()
  with g.as_default():
    out = _model(precision)._denoise(tf.zeros([B, S, S, 3]), tf.zeros([B], tf.int32), tf.zeros([B], tf.int32), 0.)
  return g, out


def _run_or_skip(precision, fn):
  """fn(), or a skip naming the kernel when this TensorFlow has no CPU kernel of that type."""
  try:
    return fn()
  except tf.errors.NotFoundError as e:
    if 'kernel' not in e.message:
      raise
    pytest.skip('TensorFlow {} has no CPU kernel for {}: {}'.format(tf.__version__, precision,
                                                                    e.message.strip().splitlines()[0]))


def test_float32_unet_casts_nothing_but_the_timesteps():
  graph, out = _unet_graph('float32')
  casts = [op for op in graph.get_operations() if op.type == 'Cast']
  assert [op.name for op in casts] == ['model/temb/Cast'], [op.name for op in casts]  # t, int -> float32
  assert out.dtype == tf.float32
  assert {t.dtype.base_dtype for op in graph.get_operations() for t in op.outputs} <= {
    tf.float32, tf.int32, tf.bool, tf.resource}


@pytest.mark.parametrize('precision', ['bfloat16', 'float16'])
def test_half_unet_computes_in_its_type_with_float32_weights_statistics_embedding_and_output(precision):
  dtype = precision_lib.compute_dtype(precision)
  graph, out = _unet_graph(precision)
  ops = graph.get_operations()
  assert out.dtype == tf.float32
  with graph.as_default():
    assert all(v.dtype.base_dtype == tf.float32 for v in tf.global_variables())
  convs = [op for op in ops if op.type == 'Conv2D']
  assert convs and all(op.outputs[0].dtype == dtype for op in convs)
  matmuls = [op for op in ops if op.type in ('MatMul', 'BatchMatMulV2', 'BatchMatMul')]
  temb = [op for op in matmuls if op.name.startswith('model/temb/')]
  assert len(temb) == 2 and all(op.outputs[0].dtype == tf.float32 for op in temb)  # dense0, dense1
  assert all(op.outputs[0].dtype == dtype for op in matmuls if op not in temb)  # temb_proj, attention, nin
  norm_stats = [op for op in ops if op.type == 'Rsqrt']
  assert norm_stats and all(op.outputs[0].dtype == tf.float32 for op in norm_stats)
  softmax = [op for op in ops if op.type == 'Softmax']
  assert softmax and all(op.outputs[0].dtype == tf.float32 for op in softmax)
  with graph.as_default():
    grads = tf.gradients(tf.reduce_sum(out), tf.trainable_variables())
  assert all(g.dtype == tf.float32 for g in grads)


def _loss_curve(precision, data):
  """The per-step losses of STEPS Adam steps (lr 1e-3, clip 1) on the batches, t and noise of `data`."""
  images, ts, noises = data
  with tf.Graph().as_default():
    tf.set_random_seed(1)  # the same initial weights at every precision (same variables, same creation order)
    m = _model(precision)
    x, t, noise = (tf.placeholder(tf.float32, [CURVE_B, S, S, 3]), tf.placeholder(tf.int32, [CURVE_B]),
                   tf.placeholder(tf.float32, [CURVE_B, S, S, 3]))
    denoise = functools.partial(m._denoise, y=tf.zeros([CURVE_B], tf.int32), dropout=0.)
    loss = tf.reduce_mean(m.diffusion.training_losses(denoise, x_start=x, t=t, noise=noise))
    scaler = loss_scale.DynamicLossScale() if precision == 'float16' else None
    train_op, _ = utils.make_optimizer(loss=loss, trainable_variables=tf.trainable_variables(),
                                       global_step=tf.train.get_or_create_global_step(), tpu=False, optimizer='adam',
                                       lr=1e-3, grad_clip=1., loss_scale=scaler)
    with tf.Session() as sess:
      sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
      return np.array([sess.run([loss, train_op], {x: images[i], t: ts[i], noise: noises[i]})[0]
                       for i in range(STEPS)])


@pytest.fixture(scope='module')
def loss_curves():
  rng = np.random.RandomState(0)
  pool = np.tanh(rng.randn(16, S, S, 3)).astype(np.float32)
  data = (pool[rng.randint(0, 16, size=(STEPS, CURVE_B))],
          rng.randint(0, T, size=(STEPS, CURVE_B)).astype(np.int32),
          rng.randn(STEPS, CURVE_B, S, S, 3).astype(np.float32))
  return data, {'float32': _loss_curve('float32', data)}


@pytest.mark.slow  # float16 has no fast CPU kernels: minutes on a loaded 2-core machine
@pytest.mark.parametrize('precision', ['bfloat16', 'float16'])
def test_half_precision_training_follows_the_float32_loss_curve(loss_curves, precision):
  data, curves = loss_curves
  ref = curves['float32']
  curve = _run_or_skip(precision, lambda: _loss_curve(precision, data))
  windows = lambda c: c.reshape(-1, WINDOW).mean(axis=1)
  assert windows(ref)[-1] < 0.8 * windows(ref)[0]  # float32 learns: the curve falls
  rel = np.abs(windows(curve) - windows(ref)) / windows(ref)
  print(precision, 'window means', windows(curve), 'float32', windows(ref), 'max relative difference', rel.max())
  assert rel.max() < LOSS_CURVE_TOLERANCE[precision], (precision, rel)
  # and not trivially: the curve is its own (the half-precision forward pass differs from float32's)
  assert not np.array_equal(curve, ref)


# ---------------------------------------------------------------------------------------------------------------
# The training loop's model_fn in a Session: loss scaling, skipped steps, checkpoints across precisions

def _train_step(precision):
  """(train_op, loss, loss scale or None) of training._make_model_fn on one device for a fixed batch."""
  model_fn = training._make_model_fn(
    lambda: _model(precision), dist=devices.Distribution('single', 1), local_bs=B, optimizer='adam', lr=1e-3,
    warmup=0, grad_clip=1., ema_decay=0.9, model_dir=None, save_summary_steps=1)
  rng = np.random.RandomState(0)
  features = {'image': tf.constant(rng.randint(0, 256, size=(B, S, S, 3)).astype(np.float32)),
              'label': tf.zeros([B], tf.int32)}
  spec = model_fn(features, None, tf.estimator.ModeKeys.TRAIN, {})
  scale = [v for v in tf.local_variables() if v.op.name == 'loss_scale/scale']
  return spec.train_op, spec.loss, scale[0] if scale else None


def _values(sess):
  return sess.run({v.op.name: v for v in tf.global_variables()})  # one run: each new fetch prunes the whole graph


def test_forced_overflow_skips_the_step_halves_the_scale_and_finite_steps_grow_it(monkeypatch):
  monkeypatch.setattr(loss_scale, 'GROWTH_INTERVAL', 2)
  monkeypatch.setattr(loss_scale.DynamicLossScale.__init__, '__defaults__',
                      (loss_scale.INITIAL_SCALE, 2, 2.))
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    train_op, loss, scale = _train_step('float16')
    skipped = [v for v in tf.local_variables() if v.op.name == 'loss_scale/skipped_steps'][0]
    with tf.Session() as sess:
      sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
      assert sess.run(scale) == 2. ** 15
      sess.run(scale.assign(2. ** 100))  # S * dloss/dout overflows float16 (max 65504) at the U-Net's output cast
      before = _values(sess)
      loss_value, _ = sess.run([loss, train_op])  # the loss's finiteness check passes: the loss is finite
      after = _values(sess)
      assert np.isfinite(loss_value)
      assert sess.run(scale) == 2. ** 99 and sess.run(skipped) == 1
      assert after.pop('global_step') == before.pop('global_step') + 1
      for name, value in before.items():  # weights, Adam's slots and powers, the EMA shadows
        np.testing.assert_array_equal(after[name], value, err_msg=name)
      sess.run(scale.assign(2. ** 4))
      sess.run(train_op)
      assert sess.run(scale) == 2. ** 4 and sess.run(skipped) == 1
      updated = _values(sess)
      changed = [n for n in updated if n.endswith('/W') and not np.array_equal(updated[n], after[n])]
      assert changed, 'a finite step updates the weights'
      assert not np.array_equal(updated['model/conv_out/W/ExponentialMovingAverage'],
                                after['model/conv_out/W/ExponentialMovingAverage'])
      sess.run(train_op)  # the second finite step in a row: growth_interval reached
      assert sess.run(scale) == 2. ** 5


@pytest.mark.parametrize('saved,restored', [('float16', 'float32'), ('float32', 'float16'),
                                            ('bfloat16', 'float16')])
def test_a_checkpoint_restores_at_another_precision(tmp_path, saved, restored):
  prefix = str(tmp_path / 'model.ckpt')
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    train_op, _, _ = _train_step(saved)
    names = sorted((v.op.name, v.dtype.base_dtype.name, tuple(v.shape.as_list())) for v in tf.global_variables())
    with tf.Session() as sess:
      sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
      _run_or_skip(saved, lambda: [sess.run(train_op) for _ in range(2)])
      expected = _values(sess)
      tf.train.Saver().save(sess, prefix, global_step=2)  # the Estimator's saver: every global variable
  with tf.Graph().as_default():
    train_op, loss, _ = _train_step(restored)
    assert sorted((v.op.name, v.dtype.base_dtype.name, tuple(v.shape.as_list()))
                  for v in tf.global_variables()) == names
    with tf.Session() as sess:
      sess.run(tf.local_variables_initializer())
      tf.train.Saver().restore(sess, prefix + '-2')
      restored_values = _values(sess)
      assert sorted(restored_values) == sorted(expected)
      for name, value in expected.items():
        np.testing.assert_array_equal(restored_values[name], value, err_msg=name)
      assert expected['global_step'] == 2
      _run_or_skip(restored, lambda: sess.run([loss, train_op]))  # and trains on from there
      assert sess.run(tf.train.get_global_step()) == 3


def test_float16_refuses_several_replicas_and_a_tpu_before_training():
  from diffusion_tf import checks
  from diffusion_tf.errors import UsageError
  for flags, needle in [(dict(num_cpu_replicas=2), '--num_cpu_replicas=2'), (dict(tpu_name='v3'), '--tpu_name')]:
    with pytest.raises(UsageError, match='precision=float16 with {}'.format(needle)):
      checks.check_train_precision(dict(precision='float16', **flags))
    checks.check_train_precision(dict(precision='bfloat16', **flags))
  with pytest.raises(UsageError, match="precision='float64' is not supported; expected one of float32, bfloat16"):
    checks.check_train_precision(dict(precision='float64'))
  with pytest.raises(UsageError, match='precision=float16 on'):
    training._loss_scale_for('float16', devices.Distribution('mirrored', 2, devices=['/cpu:0', '/cpu:1']))
