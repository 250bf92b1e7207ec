"""Shared by the benchmark driver and both workers (stdlib and diffusion_tf/models/configs.py only; runs on Python 3.7
and 3.11).

- The two U-Net configurations measured (the DDPM paper's CIFAR-10 and LSUN 256x256 models) and the matching
  google/ddpm-cifar10-32 and google/ddpm-ema-church-256 configurations of diffusers' UNet2DModel.
- An analytic FLOP count of one U-Net forward pass (2 FLOPs per multiply-add of every convolution, 1x1 layer,
  dense layer and attention matmul; normalisation, activations and additions are not counted).
- The CPU's FP32 peak from /proc/cpuinfo, peak resident memory, and the line protocol between driver and workers.
"""

import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from diffusion_tf.models.configs import CONFIGS  # noqa: E402 (plain Python: the PyTorch worker imports it too)

# The DDPM U-Nets (Ho et al. 2020, appendix B) measured: keyword arguments of diffusion_tf.models.unet.model.
MODELS = {
  'cifar10': dict(resolution=32, **CONFIGS['unet2d16b2']),
  'church256': dict(resolution=256, **CONFIGS['unet2d16b2c112244']),
}
# Parameter counts of the released checkpoints (and of diffusers' google/ddpm-cifar10-32 / google/ddpm-ema-church-256).
PARAM_COUNTS = {'cifar10': 35746307, 'church256': 113673219}


def diffusers_config(model):
  """The UNet2DModel configuration equivalent to MODELS[model] (the Hub configs' architecture facts)."""
  cfg = MODELS[model]
  down, up = [], []
  for i, _ in enumerate(cfg['ch_mult']):
    res = cfg['resolution'] // 2 ** i
    down.append('AttnDownBlock2D' if res in cfg['attn_resolutions'] else 'DownBlock2D')
  for i, _ in reversed(list(enumerate(cfg['ch_mult']))):
    res = cfg['resolution'] // 2 ** i
    up.append('AttnUpBlock2D' if res in cfg['attn_resolutions'] else 'UpBlock2D')
  return dict(
    sample_size=cfg['resolution'], in_channels=3, out_channels=3, center_input_sample=False,
    time_embedding_type='positional', freq_shift=1, flip_sin_to_cos=False,
    down_block_types=tuple(down), up_block_types=tuple(up),
    block_out_channels=tuple(cfg['ch'] * m for m in cfg['ch_mult']),
    layers_per_block=cfg['num_res_blocks'], mid_block_scale_factor=1, downsample_padding=0,
    act_fn='silu', attention_head_dim=None, norm_num_groups=32, norm_eps=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# FLOPs

def unet_forward_flops(model, batch=1, in_ch=3, out_ch=3):
  """FLOPs (2 x multiply-adds) of one forward pass of the DDPM U-Net `model` at `batch`, counted layer by layer.

  Convolutions: 2 * H_out * W_out * k*k * C_in * C_out; 1x1 (nin) and dense layers: 2 * positions * C_in * C_out;
  attention: 2 * (HW)^2 * C for q k^T and again for the weighted sum of v.
  """
  cfg = MODELS[model]
  ch, ch_mult, nrb, attn_res = cfg['ch'], cfg['ch_mult'], cfg['num_res_blocks'], cfg['attn_resolutions']
  total = [0]

  def conv(hw, cin, cout, k=3):
    total[0] += 2 * hw * hw * k * k * cin * cout

  def dense(n, cin, cout):
    total[0] += 2 * n * cin * cout

  def resblock(hw, cin, cout):
    conv(hw, cin, cout)
    dense(1, ch * 4, cout)  # temb_proj
    conv(hw, cout, cout)
    if cin != cout:
      conv(hw, cin, cout, k=1)  # nin_shortcut

  def attn(hw, c):
    n = hw * hw
    dense(n, c, c * 3)  # q, k, v
    total[0] += 2 * n * n * c * 2  # q k^T and w v
    dense(n, c, c)  # proj_out

  dense(1, ch, ch * 4)
  dense(1, ch * 4, ch * 4)
  hw = cfg['resolution']
  conv(hw, in_ch, ch)
  hs = [ch]
  c = ch
  for i, m in enumerate(ch_mult):
    for _ in range(nrb):
      resblock(hw, c, ch * m)
      c = ch * m
      if hw in attn_res:
        attn(hw, c)
      hs.append(c)
    if i != len(ch_mult) - 1:
      hw //= 2
      conv(hw, c, c)  # stride-2 conv: output resolution
      hs.append(c)
  resblock(hw, c, c)
  attn(hw, c)
  resblock(hw, c, c)
  for i, m in reversed(list(enumerate(ch_mult))):
    for _ in range(nrb + 1):
      resblock(hw, c + hs.pop(), ch * m)
      c = ch * m
      if hw in attn_res:
        attn(hw, c)
    if i != 0:
      hw *= 2
      conv(hw, c, c)
  assert not hs
  conv(hw, c, out_ch)
  return total[0] * batch


# ---------------------------------------------------------------------------------------------------------------
# The machine

# The CPU flags of bfloat16 arithmetic: AVX-512 BF16 (dot products of bf16 pairs into fp32, Cooper Lake, Zen 4) and
# AMX BF16 (tile matrix multiplies, Sapphire Rapids); oneDNN and torch's bfloat16 kernels are fast only with them.
BF16_FLAGS = ('avx512_bf16', 'amx_bf16', 'amx_tile')


def cpu_info():
  """Model name, cores usable by this process, nominal clock (GHz, from 'cpu MHz'), SIMD level and FP32 peak.

  FP32 FLOPs per cycle per core: AVX-512 with FMA 64 (two 512-bit FMA pipes: Intel server cores, AMD Zen 5), but 32
  on AMD Zen 4 (CPU family 25), which runs AVX-512 on its two 256-bit FMA pipes; AVX2 with FMA 32 (Zen 2/3, Intel
  since Haswell), AVX 16, SSE 8. Peak = cores x GHz x FLOPs/cycle, at the nominal clock the hypervisor reports (a
  core boosting above it can show more than 100%).
  """
  text = open('/proc/cpuinfo').read()
  mhz, flags, name, vendor, family = [], set(), '', '', None
  for line in text.splitlines():
    key, _, value = line.partition(':')
    key, value = key.strip(), value.strip()
    if key == 'cpu MHz':
      mhz.append(float(value))
    elif key == 'flags' and not flags:
      flags = set(value.split())
    elif key == 'model name' and not name:
      name = value
    elif key == 'vendor_id' and not vendor:
      vendor = value
    elif key == 'cpu family' and family is None:
      family = int(value)
  cores = len(os.sched_getaffinity(0))
  ghz = sum(mhz) / len(mhz) / 1000. if mhz else float('nan')
  if 'avx512f' in flags and 'fma' in flags and vendor == 'AuthenticAMD' and family == 25:
    simd, per_cycle = 'avx512 (Zen 4: 2x256-bit FMA)', 32
  elif 'avx512f' in flags and 'fma' in flags:
    simd, per_cycle = 'avx512+fma', 64
  elif 'avx2' in flags and 'fma' in flags:
    simd, per_cycle = 'avx2+fma', 32
  elif 'avx' in flags:
    simd, per_cycle = 'avx', 16
  else:
    simd, per_cycle = 'sse', 8
  return dict(model=name, cores=cores, ghz=round(ghz, 3), simd=simd, flops_per_cycle=per_cycle,
              peak_gflops=round(cores * ghz * per_cycle, 1),
              bf16=' '.join(f for f in BF16_FLAGS if f in flags) or 'none')


def peak_rss_mb():
  """Peak resident set size of this process so far, in MiB (ru_maxrss is in KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.


# ---------------------------------------------------------------------------------------------------------------
# Driver <-> worker protocol: the driver writes one JSON command per line on the worker's stdin; the worker answers
# with one JSON line on a private copy of its original stdout, while everything the libraries print goes to stderr.

class Channel:

  def __init__(self):
    self._out = os.fdopen(os.dup(1), 'w')
    os.dup2(2, 1)  # anything printed to stdout from now on (library chatter) lands on stderr
    sys.stdout = sys.stderr

  def send(self, **msg):
    self._out.write(json.dumps(msg) + '\n')
    self._out.flush()

  @staticmethod
  def receive():
    line = sys.stdin.readline()
    if not line:
      raise SystemExit('benchmark worker: the driver closed the pipe')
    return json.loads(line)


def warm_up(run_once, repetitions, info):
  """The case's untimed warm-up repetitions (graph optimisation, allocator and kernel caches); their time goes into
  info['warmup_s']."""
  t0 = time.perf_counter()
  for _ in range(repetitions):
    run_once()
  info['warmup_s'] = round(time.perf_counter() - t0, 2)


def serve(setup):
  """Worker main loop. `setup(case)` builds the case, warms it up and returns (run_once, info dict); then each
  {"cmd": "run"} runs one timed repetition, and {"cmd": "done"} reports peak memory and exits."""
  chan = Channel()
  case = chan.receive()
  try:
    t0 = time.perf_counter()
    run_once, info = setup(case)
    info['setup_s'] = round(time.perf_counter() - t0, 2)
    chan.send(status='ready', **{k: v for k, v in info.items() if not callable(v)})
    while True:
      cmd = chan.receive()
      if cmd['cmd'] == 'run':
        t0 = time.perf_counter()
        run_once()
        chan.send(status='ok', seconds=time.perf_counter() - t0)
      elif cmd['cmd'] == 'done':
        gpu = info.get('peak_gpu_mb')
        chan.send(status='done', peak_rss_mb=round(peak_rss_mb(), 1), peak_gpu_mb=gpu() if gpu else None)
        return
      else:
        raise ValueError('unknown command {!r}'.format(cmd))
  except Exception as e:  # report to the driver, which prints it and carries on with the next case
    import traceback
    traceback.print_exc()
    chan.send(status='error', error='{}: {}'.format(type(e).__name__, e))
