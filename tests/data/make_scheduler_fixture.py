"""Write tests/data/scheduler_parity.npz: diffusers' DDIM and PNDM schedulers run on a fixed toy "network", for
tests/test_samplers.py to compare diffusion_tf's samplers against.

Runs in the peer venv (Python 3.11, torch, diffusers; see tools/make_peer_venv.sh), from the repository root:

  bash tools/make_peer_venv.sh && .venv-peer/bin/python tests/data/make_scheduler_fixture.py

Setting: T = 1000 linear betas 1e-4..0.02 (diffusers' 'linear', the DDPM paper's), samples of SHAPE, and the toy
network eps(x, t) = tanh(x) + 0.01 t / T (deterministic, so the TF test can evaluate the same function). Every
configuration starts from the same x_T (per S) and DDIM with eta > 0 uses the same pre-drawn per-step noise.

Keys (float32 unless noted):
  num_timesteps, beta_start, beta_end (scalars), diffusers_version, torch_version (strings)
  x_T_s{S} [SHAPE], noise_s{S} [S, *SHAPE] (DDIM's variance_noise of step k)
  ddim_s{S}_eta{eta}_clip{0|1}_ucmo{0|1}_{timesteps (int64 [S]), xs [S, *SHAPE] (prev_sample after each step),
    x0 [S, *SHAPE] (pred_original_sample of each step), final [SHAPE]}
  pndm_s{S}_prk{0|1}_{timesteps (int64 [N]), xs [N, *SHAPE], final [SHAPE]}
  pndm_timesteps_s{S}_prk{0|1} (int64): PNDMScheduler.timesteps alone, for more step counts
  ddpm_s{S}_{fixedsmall|fixedlarge}_clip{0|1}_{timesteps, xs, final}: DDPMScheduler over S steps (the respaced
    chain), step k's noise replaced by noise_s{S}[k] (DDPMScheduler draws none at the last step)
"""

import os
import sys

import numpy as np
import torch
import diffusers
from diffusers import DDIMScheduler, DDPMScheduler, PNDMScheduler
from diffusers.schedulers import scheduling_ddpm

OUT = os.path.join('tests', 'data', 'scheduler_parity.npz')
T = 1000
BETA_START, BETA_END = 1e-4, 0.02
SHAPE = (2, 2, 2, 3)
DDIM_STEPS = (10, 50, 30)  # 30 does not divide T: 'leading' spacing then stops at 29 * 33 = 957
DDIM_ETAS = (0., 0.5)
DDIM_CLIP_UCMO = ((False, False), (True, False), (True, True))
PNDM_RUNS = ((10, True), (10, False), (50, True), (50, False), (111, True))  # (S, prk); 111: T // S = 9 is odd
PNDM_TIMESTEPS_ONLY = (1, 2, 3, 4, 7, 33, 333, 500, 1000)
DDPM_RUNS = ((10, 'fixed_small', True), (10, 'fixed_large', True), (10, 'fixed_small', False),
             (50, 'fixed_small', True), (50, 'fixed_large', True))


def toy_eps(x, t):
  """The stand-in network: eps(x, t) = tanh(x) + 0.01 t / T."""
  return torch.tanh(x) + torch.tensor(0.01 * float(t) / T, dtype=torch.float32)


def _run_ddim(S, eta, clip, ucmo, x_T, noise):
  sched = DDIMScheduler(num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END, beta_schedule='linear',
                        clip_sample=clip, set_alpha_to_one=True, steps_offset=0, timestep_spacing='leading',
                        prediction_type='epsilon')
  sched.set_timesteps(S)
  x = torch.from_numpy(x_T)
  xs, x0s = [], []
  for k, t in enumerate(sched.timesteps):
    out = sched.step(toy_eps(x, t), t, x, eta=eta, use_clipped_model_output=ucmo,
                     variance_noise=torch.from_numpy(noise[k]))
    x = out.prev_sample
    xs.append(x.numpy())
    x0s.append(out.pred_original_sample.numpy())
  return sched.timesteps.numpy().astype(np.int64), np.stack(xs), np.stack(x0s)


def _pndm_scheduler(prk):
  return PNDMScheduler(num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END, beta_schedule='linear',
                       skip_prk_steps=not prk, set_alpha_to_one=False, steps_offset=0, timestep_spacing='leading',
                       prediction_type='epsilon')


def _run_pndm(S, prk, x_T):
  sched = _pndm_scheduler(prk)
  sched.set_timesteps(S)
  x = torch.from_numpy(x_T)
  xs = []
  for t in sched.timesteps:
    x = sched.step(toy_eps(x, t), t, x).prev_sample
    xs.append(x.numpy())
  return sched.timesteps.numpy().astype(np.int64), np.stack(xs)


def _run_ddpm(S, variance_type, clip, x_T, noise):
  sched = DDPMScheduler(num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END, beta_schedule='linear',
                        variance_type=variance_type, clip_sample=clip, steps_offset=0, timestep_spacing='leading',
                        prediction_type='epsilon')
  sched.set_timesteps(S)
  x = torch.from_numpy(x_T)
  xs = []
  real_randn_tensor = scheduling_ddpm.randn_tensor
  try:
    for k, t in enumerate(sched.timesteps):
      # DDPMScheduler.step takes no noise argument: hand it step k's pre-drawn noise
      scheduling_ddpm.randn_tensor = lambda shape, **_: torch.from_numpy(noise[k]).reshape(shape)
      x = sched.step(toy_eps(x, t), t, x).prev_sample
      xs.append(x.numpy())
  finally:
    scheduling_ddpm.randn_tensor = real_randn_tensor
  return sched.timesteps.numpy().astype(np.int64), np.stack(xs)


def main():
  torch.set_grad_enabled(False)
  rng = np.random.RandomState(2020)
  data = dict(num_timesteps=np.int64(T), beta_start=np.float64(BETA_START), beta_end=np.float64(BETA_END),
              diffusers_version=np.array(diffusers.__version__), torch_version=np.array(torch.__version__))
  for S in sorted(set(DDIM_STEPS) | {S for S, _ in PNDM_RUNS}):
    data['x_T_s{}'.format(S)] = rng.randn(*SHAPE).astype(np.float32)
    data['noise_s{}'.format(S)] = rng.randn(S, *SHAPE).astype(np.float32)

  for S in DDIM_STEPS:
    for eta in DDIM_ETAS:
      for clip, ucmo in DDIM_CLIP_UCMO:
        key = 'ddim_s{}_eta{:g}_clip{:d}_ucmo{:d}'.format(S, eta, clip, ucmo)
        timesteps, xs, x0s = _run_ddim(S, eta, clip, ucmo, data['x_T_s{}'.format(S)], data['noise_s{}'.format(S)])
        data.update({key + '_timesteps': timesteps, key + '_xs': xs, key + '_x0': x0s, key + '_final': xs[-1]})

  for S, prk in PNDM_RUNS:
    key = 'pndm_s{}_prk{:d}'.format(S, prk)
    timesteps, xs = _run_pndm(S, prk, data['x_T_s{}'.format(S)])
    data.update({key + '_timesteps': timesteps, key + '_xs': xs, key + '_final': xs[-1]})

  for S, variance_type, clip in DDPM_RUNS:
    key = 'ddpm_s{}_{}_clip{:d}'.format(S, variance_type.replace('_', ''), clip)
    timesteps, xs = _run_ddpm(S, variance_type, clip, data['x_T_s{}'.format(S)], data['noise_s{}'.format(S)])
    data.update({key + '_timesteps': timesteps, key + '_xs': xs, key + '_final': xs[-1]})

  for S in PNDM_TIMESTEPS_ONLY:
    for prk in (False, True):
      if prk and S < 4:  # diffusers' PNDMScheduler cannot set up the Runge-Kutta warm-up for S < 4
        continue
      sched = _pndm_scheduler(prk)
      sched.set_timesteps(S)
      data['pndm_timesteps_s{}_prk{:d}'.format(S, prk)] = sched.timesteps.numpy().astype(np.int64)

  tmp = OUT + '.tmp.npz'
  np.savez_compressed(tmp, **data)
  os.replace(tmp, OUT)
  print('wrote {} ({} arrays, {} bytes; diffusers {}, torch {})'.format(
    OUT, len(data), os.path.getsize(OUT), diffusers.__version__, torch.__version__))


if __name__ == '__main__':
  if not os.path.isdir(os.path.join('tests', 'data')):
    sys.exit('error: run from the repository root (tests/data not found in {})'.format(os.getcwd()))
  main()
