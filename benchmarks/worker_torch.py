"""The peer: PyTorch diffusers' UNet2DModel with the google/ddpm-cifar10-32 (or ddpm-ema-church-256) architecture and
random weights (built from the config, nothing downloaded), run by the same work as worker_tf.py.

Sampling loops are those of DDPMPipeline, DDIMPipeline and PNDMPipeline without the image post-processing:
`model(x, t).sample` then `scheduler.step(...).prev_sample`, under torch.no_grad() as the pipelines run; the few-step
solvers' schedulers (SOLVER_SCHEDULERS) with their scale_model_input and init_noise_sigma.
Started by bench.py under .venv-peer's Python; speaks the line protocol of common.py. A bfloat16 case runs the model
under torch.autocast('cpu', dtype=torch.bfloat16) (float32 weights, the matmuls and convolutions in bfloat16), as
diffusers' training example does with --mixed_precision=bf16; the scheduler steps stay float32.
"""

import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


# diffusion_tf's few-step solvers and the diffusers 0.42.1 scheduler each equals (docs/samplers.md), run as the
# pipelines do: x_T * init_noise_sigma, then model(scale_model_input(x, t), t) and step() per timestep
SOLVER_SCHEDULERS = {
  'dpmsolver++': ('DPMSolverMultistepScheduler', dict(algorithm_type='dpmsolver++')),
  'sde-dpmsolver++': ('DPMSolverMultistepScheduler', dict(algorithm_type='sde-dpmsolver++')),
  'unipc': ('UniPCMultistepScheduler', {}),
  'euler': ('EulerDiscreteScheduler', {}),
  'euler_ancestral': ('EulerAncestralDiscreteScheduler', {}),
  'heun': ('HeunDiscreteScheduler', {}),
}


def setup(case):
  import torch
  import diffusers

  threads = case['threads']
  torch.set_num_threads(threads)
  try:
    torch.set_num_interop_threads(case.get('interop_threads', 1))
  except RuntimeError:
    pass
  torch.manual_seed(0)
  kind, model_name, batch = case['kind'], case['model'], case['batch']
  device = torch.device('cuda' if case.get('device') == 'gpu' else 'cpu')
  if device.type == 'cuda' and not torch.cuda.is_available():
    raise RuntimeError('--device gpu, but this torch sees no GPU (the CPU wheel?)')
  res = common.MODELS[model_name]['resolution']
  dropout = case.get('dropout', 0.)
  model = diffusers.UNet2DModel(dropout=dropout, **common.diffusers_config(model_name)).to(device)
  n_params = sum(p.numel() for p in model.parameters())
  info = dict(framework='torch {} diffusers {}'.format(torch.__version__, diffusers.__version__),
              threads=torch.get_num_threads(), interop_threads=torch.get_num_interop_threads(), params=n_params,
              mkldnn=torch.backends.mkldnn.is_available())
  gen = torch.Generator().manual_seed(0)
  x = torch.randn(batch, 3, res, res, generator=gen).to(device)
  sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
  bf16 = case.get('precision', 'float32') == 'bfloat16'
  info['precision'] = 'bfloat16 (autocast)' if bf16 else 'float32'

  def autocast():
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
  if device.type == 'cuda':
    info['gpu'] = torch.cuda.get_device_name(0)
    info['peak_gpu_mb'] = lambda: round(torch.cuda.max_memory_allocated() / 2. ** 20, 1)

  if kind == 'forward':
    model.eval()
    t = torch.randint(0, 1000, (batch,), generator=gen).to(device)

    def run_once():
      with torch.no_grad(), autocast():
        model(x, t).sample
      sync()

  elif kind == 'train':
    model.train()
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                    beta_schedule='linear')
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, eps=1e-8)
    x_start = x.clamp(-1, 1)

    def run_once():
      noise = torch.randn(x_start.shape, device=device)
      t = torch.randint(0, 1000, (batch,), device=device)
      x_t = sched.add_noise(x_start, noise, t)
      with autocast():
        out = model(x_t, t).sample
      loss = torch.nn.functional.mse_loss(out.float(), noise)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      sync()

  elif kind == 'sample':
    model.eval()
    sampler, steps = case['sampler'], case['num_inference_steps']
    common_kw = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule='linear')
    if sampler == 'ddpm':
      sched = diffusers.DDPMScheduler(variance_type='fixed_large', clip_sample=True, **common_kw)
      sched.set_timesteps(1000)
      timesteps = sched.timesteps[:steps]  # the first `steps` of the 1000 ancestral steps
    elif sampler == 'ddim':
      sched = diffusers.DDIMScheduler(clip_sample=True, **common_kw)
      sched.set_timesteps(steps)
      timesteps = sched.timesteps
    elif sampler == 'pndm':
      sched = diffusers.PNDMScheduler(**common_kw)
      sched.set_timesteps(steps)
      timesteps = sched.timesteps
    elif sampler in SOLVER_SCHEDULERS:
      cls, kw = SOLVER_SCHEDULERS[sampler]
      sched = getattr(diffusers, cls)(**common_kw, **kw)
      sched.set_timesteps(steps)
      timesteps = sched.timesteps
    else:
      raise ValueError('unknown sampler {!r}'.format(sampler))
    info['model_evals'] = len(timesteps)
    solver = sampler in SOLVER_SCHEDULERS

    def run_once():
      if sampler == 'pndm' or solver:  # these keep a history of model outputs / a step index: start afresh
        sched.set_timesteps(steps)
      image = torch.randn(x.shape, device=device)
      if solver:
        image = image * sched.init_noise_sigma
      with torch.no_grad():
        for t in sched.timesteps if solver else timesteps:
          with autocast():
            out = model(sched.scale_model_input(image, t) if solver else image, t).sample
          image = sched.step(out.float(), t, image).prev_sample
      sync()
      return image

  else:
    raise ValueError('unknown kind {!r}'.format(kind))

  if case.get('count_flops'):
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
      model.eval()(x, torch.zeros(batch, dtype=torch.long, device=device))
    info['profiled_gflop_per_image'] = round(counter.get_total_flops() / batch / 1e9, 3)
    if kind == 'train':
      model.train()

  common.warm_up(run_once, case['warmup'], info)
  return run_once, info


if __name__ == '__main__':
  common.serve(setup)
