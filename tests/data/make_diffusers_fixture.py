"""Builds tests/data/diffusers_tiny/: a tiny random diffusers UNet2DModel with the DDPM architecture.

Run ONCE, offline, in the peer venv (PyTorch + diffusers; the product never imports them):

  bash tools/make_peer_venv.sh
  .venv-peer/bin/python tests/data/make_diffusers_fixture.py

Writes (about 1.5 MB in all):
  tests/data/diffusers_tiny/config.json                         diffusers config (DDPM architecture, 2 levels)
  tests/data/diffusers_tiny/diffusion_pytorch_model.safetensors weights, stored as float16 to keep the file small
  tests/data/diffusers_tiny/io.npz                              x [B,C,H,W] float32, t [B] int64, out [B,C,H,W]
                                                                (diffusers' output for x, t in float32)
  tests/data/diffusers_tiny/tensors.bin                         torch.save of a few small tensors (several dtypes,
                                                                a transposed view, two views of one storage) for
                                                                the restricted .bin reader; tensors_expected.npz
                                                                holds the same tensors as numpy arrays.

The weights are the default initialisation plus seeded noise on EVERY parameter (also those that are zero or one
at initialisation), then rounded to float16, so that a mapping mistake (a transposed kernel, swapped levels, a
missed bias) changes the output. The output is computed in float32 from the float16-rounded weights, i.e. exactly
from what the safetensors file holds.
"""

import json
import os
import sys

import numpy as np
import torch
import diffusers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, 'diffusers_tiny')

# DDPM architecture as in google/ddpm-cifar10-32, scaled down: ch=32, ch_mult=(1,2), num_res_blocks=1,
# attention at the second level (resolution 16/2 = 8). 32 groups, like the TF model's group norm.
CONFIG = dict(
  sample_size=16,
  in_channels=3,
  out_channels=3,
  block_out_channels=(32, 64),
  down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
  up_block_types=('AttnUpBlock2D', 'UpBlock2D'),
  layers_per_block=1,
  attention_head_dim=None,
  norm_eps=1e-6,
  norm_num_groups=32,
  downsample_padding=0,
  flip_sin_to_cos=False,
  freq_shift=1,
  center_input_sample=False,
  time_embedding_type='positional',
  resnet_time_scale_shift='default',
  act_fn='silu',
)


def perturb_(model, gen):
  """Adds seeded noise to every parameter; norm scales stay near 1 so activations keep a sane range."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if p.ndim == 1:
        # biases (default init: small or zero), norm gammas (default 1) and betas (default 0)
        p.add_(0.1 * noise)
      else:
        fan_in = int(np.prod(p.shape[1:]))
        p.add_(0.5 * noise / np.sqrt(fan_in))


def make_model():
  torch.manual_seed(0)
  gen = torch.Generator().manual_seed(1234)
  model = diffusers.UNet2DModel(**CONFIG).eval()
  perturb_(model, gen)
  # Round to float16 so that the stored (float16) weights are exactly those that produced the output.
  model = model.half().float()
  return model


def make_bin_fixture(out_dir):
  """A torch.save'd dict covering the cases the restricted .bin reader must handle."""
  gen = torch.Generator().manual_seed(7)
  base = torch.randn(4, 6, generator=gen)
  shared = torch.arange(20, dtype=torch.float32)
  tensors = {
    'f32': torch.randn(2, 3, 5, generator=gen),
    'f16': torch.randn(7, generator=gen).half(),
    'bf16': torch.randn(3, 2, generator=gen).bfloat16(),
    'f64': torch.randn(2, 2, generator=gen).double(),
    'i64': torch.arange(-3, 3, dtype=torch.int64),
    'i32': torch.arange(5, dtype=torch.int32).reshape(5, 1),
    'u8': torch.arange(250, 256, dtype=torch.uint8),
    'bool': torch.tensor([True, False, True]),
    'scalar': torch.tensor(3.5),
    'transposed': base.t(),  # non-contiguous view: strides (1, 6)
    'shared_a': shared[2:8].view(2, 3),  # two views of one storage, with offsets
    'shared_b': shared[10:14],
  }
  torch.save(tensors, os.path.join(out_dir, 'tensors.bin'))
  expected = {}
  for k, v in tensors.items():
    if v.dtype == torch.bfloat16:
      v = v.float()  # numpy has no bfloat16; the reader widens it exactly to float32
    expected[k] = v.numpy()
  np.savez(os.path.join(out_dir, 'tensors_expected.npz'), **expected)


def main():
  os.makedirs(OUT_DIR, exist_ok=True)
  model = make_model()
  gen = torch.Generator().manual_seed(99)
  x = torch.randn(2, 3, CONFIG['sample_size'], CONFIG['sample_size'], generator=gen)
  t = torch.tensor([3, 517], dtype=torch.int64)
  with torch.no_grad():
    out = model(x, t).sample
  model.half().save_pretrained(OUT_DIR, safe_serialization=True)

  # Check the saved directory reproduces the output when diffusers loads it back.
  reloaded = diffusers.UNet2DModel.from_pretrained(OUT_DIR, torch_dtype=torch.float32).eval()
  with torch.no_grad():
    out2 = reloaded(x, t).sample
  err = (out - out2).abs().max().item()
  assert err == 0.0, err

  np.savez(os.path.join(OUT_DIR, 'io.npz'), x=x.numpy(), t=t.numpy(), out=out.numpy())
  make_bin_fixture(OUT_DIR)
  with open(os.path.join(OUT_DIR, 'versions.json'), 'w') as f:
    json.dump({'torch': torch.__version__, 'diffusers': diffusers.__version__,
               'python': sys.version.split()[0]}, f, indent=2)
    f.write('\n')
  for name in os.listdir(OUT_DIR):
    os.chmod(os.path.join(OUT_DIR, name), 0o644)  # save_pretrained writes its temp files 0600
  print('wrote', OUT_DIR, 'out std %.3f' % out.std().item(),
        'params', sum(p.numel() for p in model.parameters()))


if __name__ == '__main__':
  main()
