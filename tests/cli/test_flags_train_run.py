"""`train`: the flags other than the optimizer's change what runs (run_cifar.py; run_celebahq.py/run_lsun.py's own).

Every check compares what a run of the script did with something computed here, independently of the library:

* The diffusion flags (--beta_schedule, --beta_start, --beta_end, --num_diffusion_timesteps, --model_mean_type,
  --model_var_type, --loss_type) and --randflip, --dropout, --total_bs, --resolution, --dataset: the graph the run
  trained with is read back from its checkpoint (model.ckpt-N.meta), its variables set by its own seeded
  initializers. The U-Net's output layer starts at (almost: scale 1e-10) zero, so for x_0, t and noise fed into the
  graph (in place of the batch, of train_fn's uniform t and of q_sample's noise) the loss has a closed form, written
  here in numpy from the paper (DDPM eq. 4, eq. 7, eq. 14, the bound term L_{t-1} in bits/dim). The decoder term at
  t = 0 (whose float32 tails the library clips) is left to test_diffusion_math: the kl runs are fed t >= 1. Each
  expected loss is also shown to be far from the loss of every other value of the flags (and of the default
  schedule), so a flag dropped after validation fails the test. The six schedules are compared with their closed
  forms (written here, not taken from get_beta_schedule) on the Model each script hands to the training loop.
* --randflip and train_fn's t, in-process on the script's Model: the x_0 and t that reach the loss for batches of
  256: every image is its input or its mirror, both occur with randflip=1, no mirror with randflip=0; t covers
  0..T-1 and passes a chi-square test of uniformity (fixed seed). Through the script: with --randflip=1 the training
  graph mirrors exactly the images whose (fed) uniform draw says so; with --randflip=0 it has no flip.
* --dropout=0.5: 50% of the activations entering each resnet block's second convolution are zero in the training
  graph (about none with --dropout=0). The step-0 loss cannot show it: the output layer starts at zero.
* --seed (slow): a second run with the same seed has bit-identical step-2 checkpoints; another seed starts from other
  weights.
* Checkpoints, logs and summaries follow the documented cadences of --save_checkpoints_steps, --keep_checkpoint_max
  (exactly the newest k remain), --max_steps, --log_every_steps (the printed step lines), --save_summary_steps (the
  steps in the event files: the first, then every N, as the Estimator's SummarySaverHook); the defaults save only the
  first and the last step. Slow: --save_checkpoints_secs (periodic saves at least that far apart) and
  --max_train_secs (the time from the first to the final checkpoint).
* Run directory: {log_dir}/{date_str}/{exp_name}_..., or exactly --model_dir; --model_name in the shapes of the
  checkpoint's variables. run_celebahq/run_lsun: the Model and input each hands to the training loop (the loop is the
  one the runs above exercise): the schedule, --dropout, --randflip, --block_size (the U-Net sees 16x16 images as 8x8
  ones of 12 channels), and for run_lsun a batch made of --tfr_file's images.

Flags that this machine cannot show:
* --iterations_per_loop only sets the TPUConfig of the TPUEstimator (on a TPU: the steps of one host loop). On CPU
  with use_tpu=False the TPUEstimator takes the Estimator's path, where the value changes nothing (run_training turns
  off the step logging it would scale): the test checks that the run's TPUConfig received it
  (training.make_tpu_config, called by the run).
* --num_gpus: there is no GPU here. The flag reaches devices.choose_distribution, the one function that picks the
  devices: --num_gpus=1 is refused there, naming the 0 visible GPUs (on a machine with one it trains there); two or
  more GPUs take the MirroredStrategy path that --num_cpu_replicas=2 runs on CPU devices (test_training).
* --warm_start_model_dir (run_lsun): test_training.test_lsun_warm_start_initialises_every_variable.
"""

import contextlib
import io
import os

import numpy as np
import pytest
import scipy.stats
import tensorflow.compat.v1 as tf

from support.data import make_tiny_lsun
from support.scripts import checkpoint_steps, load_npz, load_script, read_scalars

from diffusion_tf.train import loop as training

T = 10
# Tiny runs: the embedded digits at 8x8, the 2-level 'tiny' U-Net (32 channels), T = 10, no warm-up (the first
# step moves the weights), every save and log left at its default unless a test is about it.
TINY = dict(dataset='digits', resolution=8, model_name='tiny', num_diffusion_timesteps=T, total_bs=4, warmup=0,
            dropout=0., randflip=0)
SEED = 1
TINY_CH = 32  # the 'tiny' U-Net's base channel count (docs/scripts.md: tiny is a small config; unet2d16b2 has 128)


# ---------------------------------------------------------------------------------------------------------------
# Independent references: the beta schedules and the loss of a network that outputs zero

def _schedule(name, start, end, n):
  """beta_1..beta_T of each --beta_schedule, written from docs/scripts.md and the original's definitions."""
  k = np.arange(n, dtype=np.float64)
  if name == 'linear':
    return start + (end - start) * k / (n - 1)
  if name == 'quad':  # linear in sqrt(beta)
    return (np.sqrt(start) + (np.sqrt(end) - np.sqrt(start)) * k / (n - 1)) ** 2
  if name in ('warmup10', 'warmup50'):  # linear over the first 10% / 50% of the steps, then beta_end
    w = int(n * (0.1 if name == 'warmup10' else 0.5))
    return np.where(k < w, start + (end - start) * k / max(w - 1, 1), end)
  if name == 'const':
    return np.full(n, end)
  if name == 'jsd':  # 1/T, 1/(T-1), ..., 1
    return 1. / (n - k)
  raise ValueError(name)


def _zero_output_loss(x0, noise, k, betas, mean_type, var_type, loss_type):
  """The training loss at t = k (every example) of a network whose output is 0, in float64.

  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (DDPM eq. 4); the posterior q(x_{t-1} | x_t, x_0) has mean
  (sqrt(abar_{t-1}) beta_t x_0 + sqrt(alpha_t) (1 - abar_{t-1}) x_t) / (1 - abar_t) and variance
  (1 - abar_{t-1}) / (1 - abar_t) beta_t (eq. 7). mse: the mean square of the target (eps, x_0 or the posterior mean;
  eq. 14). kl (t >= 1): L_{t-1} = KL(posterior || N(model mean, model variance)) in bits/dim, where a zero output
  means x_0 = x_t / sqrt(abar_t) (eps), x_0 = 0 (xstart) or a mean of 0 (xprev), and log variance log beta_t
  (fixedlarge), that of the posterior (fixedsmall) or 0 (learned).
  """
  alphas = 1. - betas
  abar = np.cumprod(alphas)
  a, a_prev = abar[k], (abar[k - 1] if k > 0 else 1.)
  x_t = np.sqrt(a) * x0 + np.sqrt(1. - a) * noise
  posterior_mean = lambda x_start: (np.sqrt(a_prev) * betas[k] * x_start + np.sqrt(alphas[k]) * (1. - a_prev) * x_t
                                    ) / (1. - a)
  posterior_var = (1. - a_prev) / (1. - a) * betas[k]
  if loss_type == 'mse':
    target = {'eps': noise, 'xstart': x0, 'xprev': posterior_mean(x0)}[mean_type]
    return np.mean(target ** 2)
  assert loss_type == 'kl' and k >= 1
  model_mean = {'eps': posterior_mean(x_t / np.sqrt(a)), 'xstart': posterior_mean(0. * x0), 'xprev': 0.}[mean_type]
  model_logvar = {'fixedlarge': np.log(betas[k]), 'fixedsmall': np.log(posterior_var), 'learned': 0.}[var_type]
  true_logvar = np.log(posterior_var)
  kl = 0.5 * (-1. + model_logvar - true_logvar + np.exp(true_logvar - model_logvar) +
              (posterior_mean(x0) - model_mean) ** 2 * np.exp(-model_logvar))
  return np.mean(kl) / np.log(2.)


def _other_settings(betas, mean_type, var_type, loss_type):
  """Every other (betas, mean, variance, loss) the flags could have meant: one flag at a time set to another value,
  and the default schedule."""
  default_betas = _schedule('linear', 1e-4, 0.02, len(betas))
  for other in ('eps', 'xstart', 'xprev'):
    if other != mean_type:
      yield 'model_mean_type=' + other, (betas, other, var_type, loss_type)
  if loss_type == 'kl':
    for other in ('fixedlarge', 'fixedsmall', 'learned'):
      if other != var_type:
        yield 'model_var_type=' + other, (betas, mean_type, other, loss_type)
  if var_type != 'learned':
    yield 'loss_type=' + ('mse' if loss_type == 'kl' else 'kl'), (betas, mean_type, var_type,
                                                                  'mse' if loss_type == 'kl' else 'kl')
  if not np.allclose(betas, default_betas):
    yield 'the default betas', (default_betas, mean_type, var_type, loss_type)


# ---------------------------------------------------------------------------------------------------------------
# Running the scripts in-process, and reading a run's training graph back

def _call(fn, **kwargs):
  """fn(**kwargs) with its printed output captured: returns (result, stdout)."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    result = fn(**kwargs)
  return result, out.getvalue()


def _main(script, argv):
  """script.main(argv) as on the command line: (exit code, stdout, stderr)."""
  out, err = io.StringIO(), io.StringIO()
  code = 0
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      load_script(script).main([str(a) for a in argv])
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else 1
  return code, out.getvalue(), err.getvalue()


def _step_lines(out):
  return [int(line.split()[1]) for line in out.splitlines() if line.startswith('step ')]


def _weights(ckpt):
  reader = tf.train.load_checkpoint(ckpt)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


class _TrainingGraph:
  """The graph a run trained with (saved beside its latest checkpoint as model.ckpt-N.meta), its variables set by
  the graph's own seeded initializers (the U-Net's output layer starts at ~0: scale 1e-10), with handles on what
  train_fn drew: the batch (the outputs of IteratorGetNext), t (the graph's one RandomUniformInt op), q_sample's noise
  (its one RandomStandardNormal op), the random flip's uniform draws (a RandomUniform op of shape [B]: only with
  randflip) and the loss. Feeding them gives the loss of chosen values."""

  def __init__(self, model_dir):
    self.graph = tf.Graph()
    with self.graph.as_default():
      tf.train.import_meta_graph(tf.train.latest_checkpoint(model_dir) + '.meta', clear_devices=True)
      self.loss = tf.get_collection(tf.GraphKeys.LOSSES)[-1]
      init = [tf.global_variables_initializer(), tf.local_variables_initializer()]
    self.sess = tf.Session(graph=self.graph)
    self.sess.run(init)
    ops = self.graph.get_operations()
    self.batch_op, = [op for op in ops if op.type == 'IteratorGetNext']
    self.image = self.batch_op.outputs[0]  # features: {'image', 'label'}, flattened in key order
    assert self.image.dtype == tf.int32 and self.image.shape.ndims == 4, self.image
    self.B = self.image.shape.as_list()[0]
    self.t, = [op.outputs[0] for op in ops if op.type == 'RandomUniformInt']
    self.noise, = [op.outputs[0] for op in ops if op.type == 'RandomStandardNormal']
    self.flips = [op.outputs[0] for op in ops if op.type == 'RandomUniform' and
                  op.outputs[0].shape.as_list() == [self.B]]
    assert len(self.flips) <= 1

  def close(self):
    self.sess.close()

  def feed(self, images, t, noise, flip=None):
    feed = {self.image: images, self.batch_op.outputs[1]: np.zeros([self.B], np.int32),
            self.t: np.full([self.B], t, np.int32), self.noise: noise}
    if flip is not None:
      # tf.image.random_flip_left_right mirrors image b when its uniform draw rounds to 1
      feed[self.flips[0]] = np.where(flip, 0.9, 0.1).astype(np.float32)
    return feed

  def loss_at(self, images, t, noise, flip=None):
    return float(self.sess.run(self.loss, self.feed(images, t, noise, flip)))

  def first_batch(self):
    """The run's first batch of images, read by the graph's own input pipeline."""
    with self.graph.as_default():
      init, = [op for op in self.graph.get_operations() if op.type == 'MakeIterator']
    self.sess.run(init)
    return self.sess.run(self.image)

  def float_constants(self, n):
    """Every float32 constant of shape [n] in the graph (the diffusion's coefficient tables among them)."""
    return [tf.make_ndarray(op.get_attr('value')) for op in self.graph.get_operations()
            if op.type == 'Const' and op.get_attr('dtype') == tf.float32 and
            op.outputs[0].shape.as_list() == [n]]

  def conv2_inputs(self, feed):
    """The inputs of the second convolution of every resnet block (after its dropout), evaluated at `feed`."""
    inputs = [op.inputs[0] for op in self.graph.get_operations() if op.type == 'Conv2D' and
              '/conv2/' in op.name and not op.name.startswith('gradients')]
    assert len(inputs) >= 4, [t.name for t in inputs]
    return self.sess.run(inputs, feed)


def _feeds(graph, seed=0):
  """Random uint8 images (never 0 or 255: no edge bins) as the batch, their [-1, 1] values x_0, and noise."""
  rng = np.random.RandomState(seed)
  images = rng.randint(1, 255, size=graph.image.shape.as_list()).astype(np.int32)
  noise = rng.randn(*graph.noise.shape.as_list()).astype(np.float32)
  return images, images.astype(np.float64) / 127.5 - 1., noise


def _check_losses(graph, settings, ts, flip=None, rtol=1e-3):
  """The loss of the restored step-0 graph at each t in ts equals the closed form for `settings` = (betas,
  mean, variance, loss), and is far from the closed form of every other setting."""
  images, x0, noise = _feeds(graph)
  if flip is not None:
    x0 = np.where(flip[:, None, None, None], x0[:, :, ::-1], x0)
  others = dict(_other_settings(*settings))
  distinct = {name: False for name in others}
  for k in ts:
    got = graph.loss_at(images, k, noise, flip)
    expected = _zero_output_loss(x0, noise.astype(np.float64), k, *settings)
    assert got == pytest.approx(expected, rel=rtol), (k, got, expected)
    for name, other in others.items():
      if other[3] == 'kl' and k == 0:
        continue
      distinct[name] |= abs(_zero_output_loss(x0, noise.astype(np.float64), k, *other) - expected) > 20 * rtol * abs(
        expected)
  assert all(distinct.values()), 'the test could not tell these settings apart: {}'.format(
    [name for name, d in distinct.items() if not d])


# ---------------------------------------------------------------------------------------------------------------
# The runs, each trained once per module

@pytest.fixture(scope='module')
def root(tmp_path_factory):
  return tmp_path_factory.mktemp('flags_train_run')


@pytest.fixture(scope='module')
def base_run(root):
  """eps / fixedlarge / mse on the default linear schedule, seed 1, 5 steps, from the command line with --log_dir,
  --date_str and --exp_name (no --model_dir): checkpoints every 2 steps (3 kept), a progress line and summaries
  every 2 steps; the TPUConfig the run builds is recorded."""
  log_dir = str(root / 'logs')
  # --max_train_secs only bounds the run if --max_steps were ever ignored (it would go on far past step 5)
  argv = ['train', '--exp_name=base', '--log_dir={}'.format(log_dir), '--date_str=2021-02-03',
          '--seed={}'.format(SEED), '--max_steps=5', '--save_checkpoints_steps=2', '--keep_checkpoint_max=3',
          '--log_every_steps=2', '--save_summary_steps=2', '--iterations_per_loop=3', '--max_train_secs=120'] + [
    '--{}={}'.format(k, v) for k, v in TINY.items()]
  configs = []
  real = training.make_tpu_config

  def recording_make_tpu_config(iterations_per_loop):
    configs.append(iterations_per_loop)
    return real(iterations_per_loop)

  training.make_tpu_config = recording_make_tpu_config
  try:
    code, out, err = _main('run_cifar', argv)
  finally:
    training.make_tpu_config = real
  assert code == 0, err
  assert os.listdir(log_dir) == ['2021-02-03'], os.listdir(log_dir)
  runs = os.listdir(os.path.join(log_dir, '2021-02-03'))
  assert len(runs) == 1, runs
  model_dir = os.path.join(log_dir, '2021-02-03', runs[0])
  graph = _TrainingGraph(model_dir)
  yield dict(model_dir=model_dir, log_dir=log_dir, out=out, graph=graph, tpu_configs=configs)
  graph.close()


@pytest.fixture(scope='module')
def xstart_run(root):
  """xstart / fixedsmall / kl on a quad schedule from 1e-3 to 0.2 over T = 12 steps, batch 3, dropout 0.5, 2 steps,
  checkpoints, logs and summaries at their defaults; --model_dir given (and a --log_dir, unused)."""
  model_dir, log_dir = str(root / 'xstart'), str(root / 'unused_logs')
  _, out = _call(load_script('run_cifar').train, exp_name='xstart', model_dir=model_dir, log_dir=log_dir,
                 max_steps=2, seed=SEED, model_mean_type='xstart', model_var_type='fixedsmall', loss_type='kl',
                 beta_schedule='quad', beta_start=1e-3, beta_end=0.2,
                 **dict(TINY, num_diffusion_timesteps=12, total_bs=3, dropout=0.5))
  graph = _TrainingGraph(model_dir)
  yield dict(model_dir=model_dir, log_dir=log_dir, out=out, graph=graph)
  graph.close()


@pytest.fixture(scope='module')
def learned_run(root):
  """xprev / learned / kl with random flips on a warmup50 schedule (1e-3 .. 0.1), 1 step."""
  model_dir = str(root / 'learned')
  _call(load_script('run_cifar').train, exp_name='learned', model_dir=model_dir, max_steps=1, seed=SEED,
        model_mean_type='xprev', model_var_type='learned', loss_type='kl', beta_schedule='warmup50',
        beta_start=1e-3, beta_end=0.1, **dict(TINY, randflip=1))
  graph = _TrainingGraph(model_dir)
  yield dict(model_dir=model_dir, graph=graph)
  graph.close()


@pytest.fixture(scope='module')
def twin_run(root):
  """base_run's flags that shape the computation (seed 1), for 2 steps, in --model_dir."""
  model_dir = str(root / 'twin')
  _call(load_script('run_cifar').train, exp_name='twin', model_dir=model_dir, max_steps=2, seed=SEED, **TINY)
  return dict(model_dir=model_dir)


@pytest.fixture(scope='module')
def timed_run(root):
  """twin_run with seed 2, a checkpoint every second, stopped after 20 s of training (max_steps far away). The first
  steps alone can take 10 s and more on a busy machine (the graph is optimised, the shuffle buffer filled): the
  window leaves room for steps and saves after them."""
  model_dir = str(root / 'timed')
  _, out = _call(load_script('run_cifar').train, exp_name='timed', model_dir=model_dir, seed=SEED + 1,
                 max_steps=5000, save_checkpoints_secs=1, max_train_secs=20, keep_checkpoint_max=1000,
                 log_every_steps=1000, **TINY)
  return dict(model_dir=model_dir, out=out)


# ---------------------------------------------------------------------------------------------------------------
# The diffusion flags, --dropout, --randflip, --total_bs

def _model_handed_to_training(monkeypatch, script, **flags):
  """The Model the script's train() would train (its model_constructor), and the other arguments of run_training."""
  passed = {}
  monkeypatch.setattr(training, 'run_training', lambda **kwargs: passed.update(kwargs))
  _call(load_script(script).train, **flags)
  return passed['model_constructor'](), passed


@pytest.mark.parametrize('schedule', ['linear', 'quad', 'warmup10', 'warmup50', 'const', 'jsd'])
def test_beta_schedule_flags_reach_the_model_of_run_cifar(schedule, tmp_path, monkeypatch):
  start, end, n = 3e-3, 0.3, 20
  model, _ = _model_handed_to_training(monkeypatch, 'run_cifar', exp_name='b', model_dir=str(tmp_path),
                                       beta_schedule=schedule, beta_start=start, beta_end=end,
                                       **dict(TINY, num_diffusion_timesteps=n))
  np.testing.assert_allclose(model.diffusion.betas, _schedule(schedule, start, end, n), rtol=1e-12)
  assert model.diffusion.num_timesteps == n


def test_eps_fixedlarge_mse_run_trained_on_the_linear_tables_and_the_eps_loss(base_run):
  """eps / mse: the loss of a zero output is mean(eps^2) at every t; the coefficient tables q_sample gathers from
  are the float32 sqrt(abar_t) and sqrt(1 - abar_t) of the default linear schedule (1e-4 .. 0.02 over T = 10); the
  run's own step-0 loss (its summary of step 1) is mean(eps^2) over 4 x 8 x 8 x 3 normal draws: 1 +- 5 sigma."""
  graph = base_run['graph']
  betas = _schedule('linear', 1e-4, 0.02, T)
  _check_losses(graph, (betas, 'eps', 'fixedlarge', 'mse'), ts=range(T))
  abar = np.cumprod(1. - betas)
  tables = graph.float_constants(T)
  for expected in [np.sqrt(abar), np.sqrt(1. - abar)]:
    assert any(np.allclose(c, expected.astype(np.float32), rtol=1e-6, atol=0) for c in tables)
  quad = np.sqrt(np.cumprod(1. - _schedule('quad', 1e-4, 0.02, T)))
  assert not any(np.allclose(c, quad, rtol=1e-4) for c in tables)
  loss0 = read_scalars(base_run['model_dir'])['train/loss'][1]
  assert abs(loss0 - 1.) < 5 * np.sqrt(2. / (4 * 8 * 8 * 3)), loss0


def test_xstart_fixedsmall_kl_quad_run_trained_on_that_bound_with_dropout(base_run, xstart_run):
  """The bound term of xstart / fixedsmall on the quad schedule at t = 1..11; t drawn in 0..11
  (--num_diffusion_timesteps=12: 200 draws of the batch's 3 t's take every value); batches of --total_bs=3 at
  --resolution=8; --randflip=0: no flip. --dropout=0.5: 50% +- 5 sigma of the activations entering each resnet block's
  second convolution are zero in this graph, about none in base_run's (--dropout=0). (The step-0 loss cannot show
  dropout: the output layer starts at zero.)"""
  graph = xstart_run['graph']
  _check_losses(graph, (_schedule('quad', 1e-3, 0.2, 12), 'xstart', 'fixedsmall', 'kl'), ts=range(1, 12))
  draws = np.concatenate([graph.sess.run(graph.t) for _ in range(200)])
  assert sorted(set(draws.tolist())) == list(range(12))
  assert graph.image.shape.as_list() == [3, 8, 8, 3] and not graph.flips
  zero_fraction = []
  for g in (base_run['graph'], graph):
    images, _, noise = _feeds(g)
    acts = g.conv2_inputs(g.feed(images, 5, noise))
    zero_fraction.append((np.mean(np.concatenate([(a == 0).ravel() for a in acts])), sum(a.size for a in acts)))
  (zero_base, _), (zero_dropout, n) = zero_fraction
  assert zero_base < 0.01 and abs(zero_dropout - 0.5) < 5 * 0.5 / np.sqrt(n), zero_fraction


def test_xprev_learned_kl_run_trained_on_that_bound_with_flips_and_samples(learned_run, root):
  """The bound term of xprev / learned (log variance 0 for a zero output) on the warmup50 schedule; --randflip=1:
  the images whose fed uniform draw says so reach the loss mirrored (its x_0 . eps term sees it); the learned
  variance doubles the output channels; the run samples end to end."""
  graph = learned_run['graph']
  settings = (_schedule('warmup50', 1e-3, 0.1, T), 'xprev', 'learned', 'kl')
  no_flip = np.zeros(graph.B, bool)
  _check_losses(graph, settings, ts=range(1, T), flip=no_flip)
  flip = np.array([True, False, True, True])
  _check_losses(graph, settings, ts=[3, 7], flip=flip)
  images, x0, noise = _feeds(graph)
  assert graph.loss_at(images, 3, noise, flip) != pytest.approx(graph.loss_at(images, 3, noise, no_flip), rel=1e-3)
  shapes = tf.train.load_checkpoint(os.path.join(learned_run['model_dir'], 'model.ckpt-1')).get_variable_to_shape_map()
  assert shapes['model/conv_out/W'] == [3, 3, TINY_CH, 6] and shapes['model/conv_out/b'] == [6]
  out_dir = str(root / 'learned_samples')
  code, _, err = _main('run_cifar', ['sample', '--model_dir={}'.format(learned_run['model_dir']), '--num_samples=2',
                                     '--batch_size=2', '--out_dir={}'.format(out_dir)])
  assert code == 0, err
  samples = load_npz(os.path.join(out_dir, 'samples.npz'))
  assert samples.shape == (2, 8, 8, 3) and samples.dtype == np.uint8 and samples.std() > 0


def test_train_fn_mirrors_some_images_with_randflip_and_draws_t_uniformly():
  """For batches of 256 images, the x_0 and t that reach the script's Model._losses: with randflip every image is its
  input or its left-right mirror and both occur (about half mirrored); without, every image is its input. t lies in
  0..T-1, takes every value, and 16 batches (4096 draws, T = 7) pass a chi-square test of uniformity at the 0.1% level
  (fixed seed)."""
  run_cifar = load_script('run_cifar')
  B, n_t = 256, 7
  x = np.random.RandomState(0).uniform(-1., 1., size=[B, 8, 8, 3]).astype(np.float32)
  mirrored = x[:, :, ::-1, :]
  assert not np.any(np.all(x == mirrored, axis=(1, 2, 3)))  # no image is its own mirror
  draws = {}
  for randflip in (1, 0):
    with tf.Graph().as_default():
      tf.set_random_seed(0)
      model = run_cifar.Model(model_name='tiny', betas=_schedule('linear', 1e-4, 0.02, n_t), model_mean_type='eps',
                              model_var_type='fixedlarge', loss_type='mse', num_classes=1, dropout=0.,
                              randflip=randflip)
      seen = []

      def capture(denoise_fn, x_start, t):
        seen.append((x_start, t))
        return tf.zeros([B])

      model._losses = capture
      model.train_fn(tf.constant(x), tf.zeros([B], tf.int32))
      with tf.Session() as sess:
        draws[randflip] = [sess.run(seen[0]) for _ in range(16)]
  flipped = []
  for x_start, _ in draws[1]:
    same, mirror = np.all(x_start == x, axis=(1, 2, 3)), np.all(x_start == mirrored, axis=(1, 2, 3))
    assert np.all(same | mirror)
    flipped.append(mirror)
  frac = np.mean(flipped)
  assert 0 < np.sum(flipped[0]) < B and abs(frac - 0.5) < 5 * 0.5 / np.sqrt(16 * B), frac
  for x_start, _ in draws[0]:
    np.testing.assert_array_equal(x_start, x)
  for randflip in (1, 0):
    t = np.concatenate([t for _, t in draws[randflip]])
    assert t.min() >= 0 and t.max() < n_t
    counts = np.bincount(t, minlength=n_t)
    assert np.all(counts > 0)
    chi2 = np.sum((counts - len(t) / n_t) ** 2 / (len(t) / n_t))
    assert chi2 < scipy.stats.chi2.ppf(0.999, n_t - 1), counts


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints, logs, summaries, --seed

def test_checkpoint_log_and_summary_cadence(base_run, xstart_run):
  """base_run: checkpoints at steps 0, 2, 4 and the final 5 (every --save_checkpoints_steps=2, plus the last), of
  which --keep_checkpoint_max=3 leaves the newest three; --max_steps=5 ends at global step 5; progress lines every
  --log_every_steps=2 steps and at the end (2, 4, 5); summaries at the first step and then every
  --save_summary_steps=2 (1, 3, 5). The defaults (xstart_run: 1600 s, 100 steps, 100 steps) save only the first and
  the last step, print and summarise only one."""
  model_dir = base_run['model_dir']
  assert checkpoint_steps(model_dir) == [2, 4, 5]
  state = tf.train.get_checkpoint_state(model_dir)
  assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ['model.ckpt-2', 'model.ckpt-4',
                                                                             'model.ckpt-5']
  assert int(tf.train.load_checkpoint(os.path.join(model_dir, 'model.ckpt-5')).get_tensor('global_step')) == 5
  assert _step_lines(base_run['out']) == [2, 4, 5]
  scalars = read_scalars(model_dir)
  for tag in ['train/loss', 'train/gnorm', 'train/pnorm', 'train/lr']:
    assert sorted(scalars[tag]) == [1, 3, 5], (tag, sorted(scalars[tag]))
  assert checkpoint_steps(xstart_run['model_dir']) == [0, 2]
  assert _step_lines(xstart_run['out']) == [2]
  assert sorted(read_scalars(xstart_run['model_dir'])['train/loss']) == [1]
  # --iterations_per_loop=3 went into the TPUConfig of the run's TPUEstimator (TPU-only: see the module docstring)
  assert base_run['tpu_configs'] == [3]


@pytest.mark.slow
def test_seed_gives_identical_checkpoints_and_another_seed_other_ones(base_run, twin_run, timed_run):
  """base_run and twin_run share --seed=1 and every flag that shapes the computation (the others only change when
  they save, log and stop): every variable of their step-2 checkpoints (weights, Adam slots, EMA) is equal.
  timed_run, the same with --seed=2, starts from other weights."""
  a = _weights(os.path.join(base_run['model_dir'], 'model.ckpt-2'))
  b = _weights(os.path.join(twin_run['model_dir'], 'model.ckpt-2'))
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  w0 = _weights(os.path.join(twin_run['model_dir'], 'model.ckpt-0'))['model/conv_in/W']
  other = _weights(os.path.join(timed_run['model_dir'], 'model.ckpt-0'))['model/conv_in/W']
  assert np.abs(other - w0).max() > 1e-2


@pytest.mark.slow
def test_save_checkpoints_secs_and_max_train_secs(timed_run):
  """--save_checkpoints_secs=1: besides the first and the last, periodic checkpoints at least ~1 s apart (the default
  1600 s leaves only the first and the last: test_checkpoint_log_and_summary_cadence). How many depends on the
  machine: a save, which also writes the graph (.meta), takes seconds on a busy one; --max_train_secs=20: training
  stops by itself long before --max_steps=5000, about 20 s after the first checkpoint (the deadline starts with the
  session, when the first checkpoint is being written; the stop comes after the step that passes it), with a final
  checkpoint of the step reached."""
  model_dir = timed_run['model_dir']
  assert 'stopping: --max_train_secs=20 reached' in timed_run['out']
  steps = checkpoint_steps(model_dir)
  assert steps[0] == 0 and steps[-1] < 5000 and len(steps) >= 3, steps
  times = [os.path.getmtime(os.path.join(model_dir, 'model.ckpt-{}.index'.format(s))) for s in steps]
  assert 20. - 5. < times[-1] - times[0] < 20. + 60., times
  periodic = np.diff(times[:-1])  # the last save is the one at the stop, whenever it comes
  assert np.all(periodic > 0.7), periodic
  assert int(tf.train.load_checkpoint(os.path.join(model_dir, 'model.ckpt-{}'.format(steps[-1]))).get_tensor(
    'global_step')) == steps[-1]


# ---------------------------------------------------------------------------------------------------------------
# The run directory, the data and the model

def test_run_directory_data_and_model_of_the_base_run(base_run, xstart_run):
  """{log_dir}/{date_str}/{exp_name}_{dataset}_{model_name}_..._res8 (xstart_run: exactly --model_dir, its --log_dir
  unused); base_run's graph read 8x8 digits (each image of its first batch is one of sklearn's digits, 0..16 scaled
  to 0..255) in batches of --total_bs=4 with the 'tiny' U-Net (32 channels, 2 resolution levels)."""
  model_dir = base_run['model_dir']
  assert model_dir == os.path.join(
    base_run['log_dir'], '2021-02-03', 'base_digits_tiny_adam_bs4_lr0.0002w0_beta0.0001-0.02-linear_t10_'
    'eps-fixedlarge-mse_dropout0.0_randflip0_res8')
  assert os.path.exists(os.path.join(xstart_run['model_dir'], 'kwargs.json'))
  assert not os.path.exists(xstart_run['log_dir'])
  graph = base_run['graph']
  assert graph.image.shape.as_list() == [4, 8, 8, 3]
  from sklearn.datasets import load_digits
  digits = np.clip(np.round(load_digits().images * (255. / 16.)), 0, 255)  # [1797, 8, 8]
  batch = graph.first_batch()
  assert batch.shape == (4, 8, 8, 3) and np.all(batch == batch[..., :1])  # grey RGB
  for img in batch[..., 0]:
    assert np.any(np.all(digits == img, axis=(1, 2)))
  shapes = tf.train.load_checkpoint(os.path.join(model_dir, 'model.ckpt-5')).get_variable_to_shape_map()
  assert shapes['model/conv_in/W'] == [3, 3, 3, TINY_CH] and shapes['model/conv_out/W'] == [3, 3, TINY_CH, 3]
  assert any('/down_1/' in name for name in shapes) and not any('/down_2/' in name for name in shapes)


@pytest.mark.parametrize('script', ['run_celebahq', 'run_lsun'])
def test_celebahq_and_lsun_flags_reach_what_they_train(script, tmp_path, monkeypatch):
  """What each script hands to the training loop: a Model with the --beta_schedule/--beta_start/--beta_end/
  --num_diffusion_timesteps schedule, --dropout and --randflip, whose U-Net (--block_size=2) sees 16x16 images as
  8x8 ones of 3 * 2^2 channels (its first and last convolutions); run_lsun's input reads the images of --tfr_file."""
  start, end, n = 2e-3, 0.1, 20
  flags = dict(exp_name='b', model_dir=str(tmp_path / 'run'), model_name='tiny', num_diffusion_timesteps=n,
               beta_schedule='warmup50', beta_start=start, beta_end=end, block_size=2, dropout=0.25, randflip=0,
               warmup=0, total_bs=2)
  if script == 'run_lsun':
    flags['tfr_file'] = str(tmp_path / 'tiny-r04.tfrecords')
    images = make_tiny_lsun(flags['tfr_file'], 6, 16, seed=5)
  else:
    flags.update(dataset='digits', resolution=16)
  model, passed = _model_handed_to_training(monkeypatch, script, **flags)
  np.testing.assert_allclose(model.diffusion.betas, _schedule('warmup50', start, end, n), rtol=1e-12)
  assert (model.dropout, bool(model.randflip)) == (0.25, False)
  with tf.Graph().as_default():
    out = model._denoise(tf.zeros([2, 16, 16, 3]), tf.zeros([2], tf.int32), y=tf.zeros([2], tf.int32), dropout=0.)
    shapes = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
    assert out.shape.as_list() == [2, 16, 16, 3]
    assert shapes['model/conv_in/W'] == [3, 3, 12, TINY_CH] and shapes['model/conv_out/W'] == [3, 3, TINY_CH, 12]
    if script == 'run_lsun':
      batch = tf.data.make_one_shot_iterator(passed['train_input_fn']({'batch_size': 2})).get_next()['image']
      with tf.Session() as sess:
        for img in sess.run(batch):
          assert np.any(np.all(images == img, axis=(1, 2, 3)))


def test_num_gpus_reaches_the_device_choice(tmp_path):
  """No GPU here: --num_gpus=1 is refused by the device choice, naming the 0 visible GPUs, before anything is
  written (ignored, the run would train on the CPU)."""
  model_dir = str(tmp_path / 'run')
  argv = ['train', '--exp_name=g', '--model_dir={}'.format(model_dir), '--max_steps=1'] + [
    '--{}={}'.format(k, v) for k, v in TINY.items()]
  code, out, err = _main('run_cifar', argv + ['--num_gpus=1'])
  errors = [line for line in err.splitlines() if line.startswith('error:')]
  assert code != 0 and len(errors) == 1 and 'num_gpus=1' in errors[0] and '0 visible GPU' in errors[0], err
  assert not os.path.exists(model_dir)


def test_date_str_of_digits_only_names_the_run_directory(tmp_path, monkeypatch):
  """--date_str=20210203 (which fire parses as an int) reaches the training loop as the text 20210203, from which the
  run directory {log_dir}/20210203/{exp_name}_... is made (it used to end in a TypeError traceback)."""
  passed = {}
  monkeypatch.setattr(training, 'run_training', lambda **kwargs: passed.update(kwargs))
  code, _, err = _main('run_cifar', ['train', '--exp_name=d', '--log_dir={}'.format(tmp_path), '--date_str=20210203'] +
                       ['--{}={}'.format(k, v) for k, v in TINY.items()])
  assert code == 0, err
  assert passed['date_str'] == '20210203'
  model_dir = training.make_model_dir(passed['log_dir'], passed['exp_name'], passed['date_str'])
  assert model_dir.startswith(os.path.join(str(tmp_path), '20210203', 'd_digits_tiny_'))
