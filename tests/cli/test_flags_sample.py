"""`run_cifar.py sample`: every sampler flag changes the images the way the math says.

Each dump of the script (tiny digits model, T = 10, two images, one seed) is compared with an independent loop run
here: the network of the checkpoint's raw weights is called step by step from numpy, and the DDIM update (Song et al.
2020, eq. 12/16), its clipped-eps variant and its timestep sequences are written out in numpy; the noise is the
script's documented seeded noise (draw k of batch 0 is stateless_normal(seed=(seed, k)), k = 1 is x_T, then one draw
per stochastic step). PNDM and the respaced ancestral chain are compared with the library's in-process samplers fed
the same x_T and step noise. Every variant must match its own reference and differ from the others, so a flag that
were dropped after validation makes a test fail.
"""

import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from support.scripts import load_npz, load_script, run_main

from diffusion_tf.diffusion_utils_2 import get_beta_schedule

T = 10
SEED = 3
# with the paper's beta_end = 0.02 and T = 10 the chain barely leaves x_T (alphabar_T = 0.9): the samplers would
# differ only on pixels that saturate; 0.5 gives alphabar_T = 0.04
BETA_END = 0.5
SHAPE = [2, 8, 8, 3]  # --batch_size=2 --num_samples=2, digits at --resolution=8


# the conftest's tiny run with these flags (a run of this module's own)
TRAIN_FLAGS = dict(
  warmup=1, max_steps=2, save_checkpoints_steps=2, model_var_type='fixedsmall', beta_end=BETA_END,
  # the U-Net's output layer starts at zero (eps = 0 for every input, and after 2 steps so are its EMA weights):
  # the raw weights after one step at a large lr give an eps that depends on x and t, so that the samplers differ
  lr=5e-2)


@pytest.fixture(scope='module')
def run(tiny_run, checkpoint_network, tmp_path_factory):
  """A tiny digits run (2 steps, the second one at the full lr; read-only) and its network as a numpy function
  eps(x, t) of the raw weights (sample --noema), read from the checkpoint by name."""
  root = tmp_path_factory.mktemp('flags_sample')
  model_dir = tiny_run('run_cifar', **TRAIN_FLAGS)
  ckpt = tf.train.latest_checkpoint(model_dir)
  assert ckpt.endswith('model.ckpt-2')
  betas = get_beta_schedule('linear', beta_start=1e-4, beta_end=BETA_END, num_diffusion_timesteps=T)
  model = load_script('run_cifar').Model(
    model_name='tiny', betas=betas, model_mean_type='eps', model_var_type='fixedsmall', loss_type='mse',
    num_classes=1, dropout=0., randflip=0)
  net = checkpoint_network(model, SHAPE[1:]).load(ckpt, ema=False)

  def noise(k):
    return net.noise(SEED, k, SHAPE)

  return dict(root=root, model_dir=model_dir, ckpt=ckpt, eps=net.eps, noise=noise, model=model, graph=net.graph,
              sess=net.sess, abar=np.cumprod(1. - betas))


def _script(run, capsys, name, flags):
  out_dir = os.path.join(str(run['root']), 'samples_' + name)
  code, out, err = run_main(capsys, 'run_cifar', ['sample', '--model_dir={}'.format(run['model_dir']),
                                                  '--num_samples=2', '--batch_size=2', '--seed={}'.format(SEED),
                                                  '--out_dir={}'.format(out_dir), '--noema'] + flags)
  assert code == 0, err
  return load_npz(os.path.join(out_dir, 'samples.npz'))


def _uint8(x):
  return np.clip(np.round((x + 1.) * 127.5), 0, 255).astype(np.uint8)


def _assert_same_images(script_images, reference):
  """uint8 images equal up to float32-vs-float64 rounding: at most 1 level off, on few pixels."""
  ref = _uint8(reference)
  diff = np.abs(script_images.astype(int) - ref.astype(int))
  assert diff.max() <= 1 and (diff > 0).mean() < 0.02, (diff.max(), (diff > 0).mean())


def _assert_different(a, b):
  assert np.abs(a.astype(int) - b.astype(int)).max() > 2, 'the flag did not change the images'


def _ddim_numpy(run, timesteps, eta, use_clipped_model_output):
  """DDIM (eq. 12) from t_{S-1} down to x_0 with clipped x_0 predictions; alphabar_prev = 1 at the last step."""
  abar_all = run['abar']
  x = run['noise'](1)
  for k, i in enumerate(range(len(timesteps) - 1, -1, -1)):
    t = timesteps[i]
    a, a_prev = abar_all[t], (abar_all[timesteps[i - 1]] if i > 0 else 1.)
    e = run['eps'](x, t)
    x0 = np.clip((x - np.sqrt(1. - a) * e) / np.sqrt(a), -1., 1.)
    if use_clipped_model_output:
      e = (x - np.sqrt(a) * x0) / np.sqrt(1. - a)
    sigma = eta * np.sqrt((1. - a_prev) / (1. - a) * (1. - a / a_prev))
    x = np.sqrt(a_prev) * x0 + np.sqrt(1. - a_prev - sigma ** 2) * e
    if eta > 0:
      x = x + sigma * run['noise'](k + 2)
  return x


def test_sample_ddim_eta_clipped_output_steps_and_skip_type_match_numpy(run, capsys):
  uniform5 = [0, 2, 4, 6, 8]  # DDIM's range(0, T, T // S)
  cases = {
    'eta0': (['--sampler=ddim', '--num_inference_steps=5'], uniform5, 0., False),
    'eta05': (['--sampler=ddim', '--num_inference_steps=5', '--eta=0.5'], uniform5, 0.5, False),
    'eta0_clipped': (['--sampler=ddim', '--num_inference_steps=5', '--use_clipped_model_output'],
                     uniform5, 0., True),
    'eta1': (['--sampler=ddim', '--num_inference_steps=5', '--eta=1'], uniform5, 1., False),
    'steps10': (['--sampler=ddim', '--num_inference_steps=10'], list(range(10)), 0., False),
    'steps3_quad': (['--sampler=ddim', '--num_inference_steps=3', '--skip_type=quad'],
                    [int(v) for v in np.linspace(0, np.sqrt(0.8 * T), 3) ** 2], 0., False),
    'steps3': (['--sampler=ddim', '--num_inference_steps=3'], [0, 3, 6], 0., False),
  }
  images, refs = {}, {}
  for name, (flags, timesteps, eta, ucmo) in cases.items():
    images[name] = _script(run, capsys, name, flags)
    refs[name] = _ddim_numpy(run, timesteps, eta, ucmo)
    _assert_same_images(images[name], refs[name])
  # with eta = 1 the clipped eps has a small weight sqrt(1 - alphabar_prev - sigma^2); eta = 0 shows it clearly
  for a, b in [('eta0', 'eta05'), ('eta05', 'eta1'), ('eta0', 'eta0_clipped'), ('eta0', 'steps10'),
               ('steps3', 'steps3_quad'), ('eta0', 'steps3')]:
    _assert_different(images[a], images[b])


def _library_loop(run, **kw):
  """The library's sample_loop in-process on the same network, x_T and per-step noise as the script's seeded run."""
  x_T = run['noise'](1)
  S = kw.get('num_inference_steps') or T
  step_noise = np.stack([run['noise'](k + 2) for k in range(S)])
  model = run['model']
  with run['graph'].as_default():
    denoise = lambda x, t: model._denoise(x, t, y=tf.zeros(SHAPE[:1], tf.int32), dropout=0.)
    deterministic = kw.get('sampler') in ('pndm', 'dpmsolver++', 'unipc', 'euler', 'heun')
    extra = {} if deterministic else {'step_noise': tf.constant(step_noise, tf.float32)}
    out = model.diffusion.sample_loop(denoise, shape=SHAPE, x_T=tf.constant(x_T, tf.float32), **kw, **extra)
    # the network's variables are shared with the loaded graph: the same raw weights
  return run['sess'].run(out)


def test_sample_pndm_prk_and_respaced_ddpm_match_the_in_process_samplers(run, capsys):
  cases = {
    'pndm': (['--sampler=pndm', '--num_inference_steps=5'], dict(sampler='pndm', num_inference_steps=5)),
    'pndm_noprk': (['--sampler=pndm', '--num_inference_steps=5', '--skip_prk_steps'],
                   dict(sampler='pndm', num_inference_steps=5, skip_prk_steps=True)),
    'ddpm5': (['--sampler=ddpm', '--num_inference_steps=5'], dict(sampler='ddpm', num_inference_steps=5)),
    'ddpm3_quad': (['--sampler=ddpm', '--num_inference_steps=3', '--skip_type=quad'],
                   dict(sampler='ddpm', num_inference_steps=3, skip_type='quad')),
  }
  images = {}
  for name, (flags, kw) in cases.items():
    images[name] = _script(run, capsys, name, flags)
    _assert_same_images(images[name], _library_loop(run, **kw))
  for a, b in [('pndm', 'pndm_noprk'), ('pndm', 'ddpm5'), ('ddpm5', 'ddpm3_quad')]:
    _assert_different(images[a], images[b])


def test_sample_ddpm_all_steps_equals_ddim_eta1_all_steps_with_clipped_output(run, capsys):
  """DDIM with S = T, eta = 1 and the eps implied by the clipped x_0 is the ancestral sampler of a fixedsmall
  (posterior variance) model (the identity of test_samplers, here through the command line: same seed, same noise
  draws)."""
  ddpm = _script(run, capsys, 'ddpm_all', ['--sampler=ddpm'])
  ddim = _script(run, capsys, 'ddim_all_eta1', ['--sampler=ddim', '--num_inference_steps=10', '--eta=1',
                                                '--use_clipped_model_output'])
  diff = np.abs(ddpm.astype(int) - ddim.astype(int))
  assert diff.max() <= 1 and (diff > 0).mean() < 0.02
  _assert_same_images(ddpm, _ddim_numpy(run, list(range(T)), 1., True))


def _info(run, name):
  with open(os.path.join(str(run['root']), 'samples_' + name, 'info.json')) as f:
    return json.load(f)


def test_sample_solvers_solver_order_and_skip_type_match_the_in_process_samplers(run, capsys):
  """The few-step solvers through the command line: each dump equals the library's sample_loop with the same
  options, --solver_order and --skip_type change the images, and info.json records the resolved order and spacing
  (the defaults filled in: order 2, the sampler's diffusers spacing)."""
  cases = {
    'dpm6': (['--sampler=dpmsolver++', '--num_inference_steps=6'],
             dict(sampler='dpmsolver++', num_inference_steps=6), 2, 'linspace'),
    # order 3 needs S >= 5 to show: with lower_order_final the last two steps drop to orders 1 and 2
    'dpm6_order3': (['--sampler=dpmsolver++', '--num_inference_steps=6', '--solver_order=3'],
                    dict(sampler='dpmsolver++', num_inference_steps=6, solver_order=3), 3, 'linspace'),
    'dpm6_trailing': (['--sampler=dpmsolver++', '--num_inference_steps=6', '--skip_type=trailing'],
                      dict(sampler='dpmsolver++', num_inference_steps=6, skip_type='trailing'), 2, 'trailing'),
    'heun3_karras': (['--sampler=heun', '--num_inference_steps=3', '--skip_type=karras'],
                     dict(sampler='heun', num_inference_steps=3, skip_type='karras'), None, 'karras'),
  }
  images = {}
  for name, (flags, kw, order, spacing) in cases.items():
    images[name] = _script(run, capsys, name, flags)
    _assert_same_images(images[name], _library_loop(run, **kw))
    info = _info(run, name)
    assert (info['sampler'], info['solver_order'], info['skip_type']) == (kw['sampler'], order, spacing)
  for a, b in [('dpm6', 'dpm6_order3'), ('dpm6', 'dpm6_trailing'), ('dpm6', 'heun3_karras')]:
    _assert_different(images[a], images[b])


def test_sample_default_out_dir_names_the_sampler_order_and_spacing():
  """The default --out_dir of `sample` (dump.default_out_dir): today's names for ddpm / ddim unchanged, the
  solvers' with their order and spacing."""
  from diffusion_tf.generate import dump
  name = lambda **kw: os.path.basename(dump.default_out_dir('/run', '/run/model.ckpt-7', **dict(dict(
    num_inference_steps=None, eta=0., use_clipped_model_output=False, skip_prk_steps=False, skip_type='uniform',
    solver_order=None, ema=True, seed=0, num_samples=64, progressive=False, shard=None), **kw)))
  assert name(sampler='ddpm') == 'model.ckpt-7_ddpm_ema_seed0_n64'
  assert name(sampler='ddim', num_inference_steps=50, skip_type='quad') == 'model.ckpt-7_ddim50_eta0_quad_ema_seed0_n64'
  assert (name(sampler='dpmsolver++', num_inference_steps=10, solver_order=3, skip_type='linspace') ==
          'model.ckpt-7_dpmsolver++10_order3_linspace_ema_seed0_n64')
  assert (name(sampler='euler', num_inference_steps=20, skip_type='uniform') ==
          'model.ckpt-7_euler20_uniform_ema_seed0_n64')
