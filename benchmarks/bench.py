"""Benchmark driver: diffusion_tf (ours, TF 2.15 and TF 1.15) against PyTorch diffusers (the peer) on the same DDPM
work.

Each case (a forward pass, a training step or a sampling run) starts one worker process per framework
configuration, each with its own Python (worker_tf.py under a TF venv, worker_torch.py under .venv-peer). The workers
build the model and warm up one after the other; then the driver alternates single timed repetitions between them
(ours, peer, peer, ours, ...) so that both see the same machine state, and finally asks each for its peak resident
memory. Medians of the repetitions are reported, with the CPU time used by other processes during the timed runs
(`foreign_cpu`: 0 on a quiet machine, 1.0 = all cores busy with something else).

Usage (from the repository root; `make bench` runs the default):
  python benchmarks/bench.py                      # the full table (see the README for the run time)
  python benchmarks/bench.py --quick              # smoke test: 1 repetition, short sampling loops
  python benchmarks/bench.py --cases fwd-b8,train-b8 --ours tf2,tf-stock,tf-mkl --reps 7
  python benchmarks/bench.py --cases solvers --ours tf2   # the few-step solvers' rows (10 and 20 calls) and time to
                                                          # quality; --cases takes names or groups (CASE_GROUPS)
  python benchmarks/bench.py --cases fwd-b8,fwd-b8-bf16,train-b8,train-b8-bf16,sample-ddim50,sample-ddim50-bf16
Writes benchmarks/results/<date>-<host>.json and benchmarks/results/latest.md.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import common  # noqa: E402

PEER_PY = os.path.join(ROOT, '.venv-peer', 'bin', 'python')


def _mkl_env(threads):
  # Intel's recommended settings for intel-tensorflow: one OpenMP thread per core, threads bound to cores, and a
  # short spin time so that idle OpenMP workers release the cores to the Eigen pool between MKL-DNN primitives.
  # MKL_DEBUG_CPU_TYPE=5: the MKL 2019 inside this wheel otherwise runs its SSE code path for sgemm on AMD CPUs
  # (it dispatches on the vendor); 5 selects the AVX2 path (measured: MatMul time halves, +30% training step).
  return {'OMP_NUM_THREADS': str(threads), 'KMP_BLOCKTIME': '1', 'KMP_AFFINITY': 'granularity=fine,compact,1,0',
          'KMP_SETTINGS': '0', 'MKL_DEBUG_CPU_TYPE': '5'}


# Framework configurations. "ours" ones run worker_tf.py; "tf" holds session options (see worker_tf.py).
CONFIGS = {
  'tf-stock': dict(python=os.path.join(ROOT, '.venv', 'bin', 'python'), worker='worker_tf.py', tf={}),
  'tf-mkl': dict(python=os.path.join(HERE, '.venv-mkl', 'bin', 'python'), worker='worker_tf.py', tf={},
                 env=_mkl_env),
  # the project's TF 2.15 stack (`make install STACK=tf2`): the same library graph through tf.compat.v1, whose
  # convolutions and matmuls run on oneDNN
  'tf2': dict(python=os.path.join(ROOT, '.venv-tf2', 'bin', 'python'), worker='worker_tf.py', tf={},
              env=lambda threads: {'TF_ENABLE_ONEDNN_OPTS': '1', 'TF_CPP_MIN_LOG_LEVEL': '2'}),
  'peer': dict(python=PEER_PY, worker='worker_torch.py'),
}
DEFAULT_OURS = 'tf2,tf-stock'
DEFAULT_HEAVY_OURS = 'tf2,tf-stock'  # the long cases (sampling, 256x256)
# the few-step solvers of diffusion_tf (sampler_schedules.SOLVERS) and the diffusers schedulers worker_torch.py runs
SOLVERS = ('dpmsolver++', 'sde-dpmsolver++', 'unipc', 'euler', 'euler_ancestral', 'heun')
SOLVER_CALLS = (10, 20)
# The solver and steps that first reach DDIM-50's digits-FID (train) in docs/metrics.md's solver table (of the budgets
# measured there: sde-dpmsolver++ at 10 calls, 1.13 against 2.70); diffusers' scheduler of the same name gives the
# same numbers for the same network outputs (tests/test_solvers.py), so the peer needs the same calls to reach it.
TIME_TO_QUALITY = dict(sampler='sde-dpmsolver++', num_inference_steps=10)


def resolve_config(spec):
  """'base[+modifier...]' -> configuration. Modifiers (for the lever experiments): xla, intra=N, inter=N,
  v=variant:variant (variants.py), KEY=VALUE (an environment variable, e.g. KMP_BLOCKTIME=0)."""
  base, *mods = spec.split('+')
  if base not in CONFIGS:
    raise ValueError('unknown configuration {!r} in {!r}; expected one of {}'.format(base, spec, list(CONFIGS)))
  cfg = dict(CONFIGS[base], tf=dict(CONFIGS[base].get('tf', {})))
  extra_env = {}
  for mod in mods:
    key, _, value = mod.partition('=')
    if mod == 'xla':
      cfg['tf']['xla'] = True
    elif key in ('intra', 'inter') and value.isdigit():
      cfg['tf'][key] = int(value)
    elif key == 'v' and value:
      cfg['tf']['variant'] = value.split(':')
    elif key.isupper() and value:
      extra_env[key] = value
    else:
      raise ValueError('bad modifier {!r} in {!r}; expected xla, intra=N, inter=N, v=a:b or ENV=VALUE'.format(
        mod, spec))
  base_env = cfg.get('env') or (lambda n: {})
  cfg['env'] = lambda n: dict(base_env(n), **extra_env)
  if base == 'peer' and mods:
    raise ValueError('the peer takes no modifiers, got {!r}'.format(spec))
  return cfg


def all_cases(quick):
  """The benchmark table's rows: name -> case. Sampling runs are shortened in --quick mode."""
  ddpm_steps, fast_steps = (5, 5) if quick else (50, 50)
  cases = {}
  for b in (1, 8, 64):
    cases['fwd-b{}'.format(b)] = dict(kind='forward', model='cifar10', batch=b, warmup=3 if b == 1 else 1)
  for b in (8, 32):
    cases['train-b{}'.format(b)] = dict(kind='train', model='cifar10', batch=b, dropout=0.1, warmup=2)
  cases['sample-ddpm'] = dict(kind='sample', model='cifar10', batch=16, sampler='ddpm', num_inference_steps=ddpm_steps,
                              warmup=1, scale_to=1000)
  cases['sample-ddim50'] = dict(kind='sample', model='cifar10', batch=16, sampler='ddim',
                                num_inference_steps=fast_steps, warmup=1)
  cases['sample-pndm50'] = dict(kind='sample', model='cifar10', batch=16, sampler='pndm',
                                num_inference_steps=fast_steps, warmup=1)
  cases['fwd-church-b1'] = dict(kind='forward', model='church256', batch=1, warmup=1)
  # bfloat16 beside float32: ours with --precision=bfloat16 (the U-Net's layers in bfloat16, float32 weights), the
  # peer under torch.autocast('cpu', dtype=torch.bfloat16)
  for name in ('fwd-b8', 'train-b8', 'sample-ddim50'):
    cases[name + '-bf16'] = dict(cases[name], precision='bfloat16')
  # the few-step solvers at 10 and 20 network calls (heun: S = (C + 1) // 2 steps, 2S - 1 calls), beside DDIM at
  # the same calls for the per-call cost; --quick: 5 calls
  for calls in ((5,) if quick else SOLVER_CALLS):
    cases['sample-ddim{}'.format(calls)] = dict(kind='sample', model='cifar10', batch=16, sampler='ddim',
                                                num_inference_steps=calls, warmup=1, calls_budget=calls)
    for sampler in SOLVERS:
      cases['sample-{}{}'.format(sampler, calls)] = dict(
        kind='sample', model='cifar10', batch=16, sampler=sampler, warmup=1, calls_budget=calls,
        num_inference_steps=(calls + 1) // 2 if sampler == 'heun' else calls)
  # time to quality: 16 images with the sampler and calls that first reach DDIM-50's digits-FID (docs/metrics.md)
  cases['sample-ttq'] = dict(kind='sample', model='cifar10', batch=16, warmup=1, time_to_quality=True,
                             **(dict(TIME_TO_QUALITY, num_inference_steps=5) if quick else TIME_TO_QUALITY))
  return cases


def case_group(name, cases):
  """--cases entries: a case's name, or 'solvers' for the few-step solvers' rows (DDIM and every solver at the
  SOLVER_CALLS budgets, and the time-to-quality row)."""
  if name == 'solvers':
    return [c for c in cases if cases[c].get('calls_budget') or cases[c].get('time_to_quality')]
  return [name]


def network_calls(case):
  """U-Net evaluations of one sampling case: S, 2S - 1 for heun, S + 9 for pndm (its Runge-Kutta warm-up)."""
  S = case['num_inference_steps']
  return {'heun': 2 * S - 1, 'pndm': S + 9}.get(case['sampler'], S)


# ---------------------------------------------------------------------------------------------------------------
# CPU accounting: how much of the machine other processes used while we measured

def _busy_ticks():
  fields = [int(v) for v in open('/proc/stat').readline().split()[1:]]
  idle = fields[3] + fields[4]  # idle + iowait
  return sum(fields[:8]) - idle


def _proc_ticks(pid):
  fields = open('/proc/{}/stat'.format(pid)).read().rsplit(')', 1)[1].split()
  return int(fields[11]) + int(fields[12])  # utime + stime (all threads)


def wait_until_idle(threshold, max_wait):
  """Before a timed repetition (all our workers idle): wait until other processes use less than `threshold` of the
  machine over one second, checking for up to `max_wait` seconds. Returns the seconds waited."""
  ncpu, hz, waited = len(os.sched_getaffinity(0)), os.sysconf('SC_CLK_TCK'), 0.
  while True:
    b0, t0 = _busy_ticks(), time.time()
    time.sleep(1.)
    busy = (_busy_ticks() - b0) / hz / (time.time() - t0) / ncpu
    waited += time.time() - t0
    if busy < threshold or waited >= max_wait:
      return round(waited, 1)
    time.sleep(4.)
    waited += 4.


def load_average():
  return [float(v) for v in open('/proc/loadavg').read().split()[:3]]


def wait_for_quiet(max_load, wait_minutes):
  """Wait (in 5-minute steps, up to wait_minutes) until the 1-minute load average is below max_load."""
  deadline = time.time() + 60 * wait_minutes
  while True:
    load = load_average()
    if load[0] < max_load:
      return load, True
    if time.time() >= deadline:
      print('warning: load average still {} (>= {}) after {} min; measuring anyway'.format(
        load, max_load, wait_minutes), flush=True)
      return load, False
    print('load average {} >= {}: waiting 5 min'.format(load, max_load), flush=True)
    time.sleep(min(300, max(1, deadline - time.time())))


# ---------------------------------------------------------------------------------------------------------------
# Workers

class Worker:

  def __init__(self, name, cfg, case, threads, log):
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    env.update(cfg['env'](threads))
    self.name = name
    self.proc = subprocess.Popen([cfg['python'], os.path.join(HERE, cfg['worker'])], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=log, env=env, cwd=ROOT, universal_newlines=True)
    msg = dict(case, threads=threads)
    if 'tf' in cfg:
      msg['tf'] = cfg['tf']
    self._send(msg)

  def _send(self, msg):
    self.proc.stdin.write(json.dumps(msg) + '\n')
    self.proc.stdin.flush()

  def receive(self):
    line = self.proc.stdout.readline()
    if not line:
      self.proc.wait()
      return dict(status='error', error='worker exited with code {} (see the log)'.format(self.proc.returncode))
    return json.loads(line)

  def run(self):
    """One timed repetition -> (seconds, CPU seconds used by other processes during it, wall seconds)."""
    busy0, own0, t0 = _busy_ticks(), _proc_ticks(self.proc.pid), time.time()
    self._send({'cmd': 'run'})
    msg = self.receive()
    busy1, own1, t1 = _busy_ticks(), _proc_ticks(self.proc.pid), time.time()
    if msg['status'] != 'ok':
      raise RuntimeError('{}: {}'.format(self.name, msg.get('error')))
    hz = os.sysconf('SC_CLK_TCK')
    return msg['seconds'], max(0., (busy1 - busy0) - (own1 - own0)) / hz, t1 - t0

  def finish(self):
    self._send({'cmd': 'done'})
    msg = self.receive()
    self.proc.wait(timeout=60)
    return msg

  def kill(self):
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()


def measure_case(case_name, case, configs, reps, threads, log, idle_threshold=0.1, idle_wait=120.):
  """Set up one worker per configuration (sequentially), then alternate `reps` timed repetitions among them."""
  print('[{}] {}'.format(time.strftime('%H:%M:%S'), case_name), flush=True)
  workers, out = [], {}
  try:
    for name in configs:
      log.write('\n===== {} {} =====\n'.format(case_name, name))
      log.flush()
      w = Worker(name, resolve_config(name), case, threads, log)
      msg = w.receive()
      if msg.pop('status') != 'ready':
        print('  {}: FAILED: {}'.format(name, msg.get('error')), flush=True)
        out[name] = dict(error=msg.get('error'))
        w.kill()
        continue
      out[name] = dict(info=msg, seconds=[], foreign_cpu_s=[], wall_s=[])
      workers.append(w)
    ncpu = len(os.sched_getaffinity(0))
    for r in range(reps):
      order = workers if r % 2 == 0 else workers[::-1]
      for w in order:
        out[w.name].setdefault('idle_wait_s', []).append(wait_until_idle(idle_threshold, idle_wait))
        sec, foreign, wall = w.run()
        out[w.name]['seconds'].append(round(sec, 5))
        out[w.name]['foreign_cpu_s'].append(round(foreign, 3))
        out[w.name]['wall_s'].append(round(wall, 5))
    for w in workers:
      res = out[w.name]
      done = w.finish()
      res['peak_rss_mb'] = done['peak_rss_mb']
      if done.get('peak_gpu_mb') is not None:
        res['peak_gpu_mb'] = done['peak_gpu_mb']
      res['median_s'] = statistics.median(res['seconds'])
      res['foreign_cpu'] = round(sum(res['foreign_cpu_s']) / (sum(res['wall_s']) * ncpu), 3)
      del res['wall_s']
    print('  ' + ', '.join('{} {:.4g}s'.format(n, r['median_s']) for n, r in out.items() if 'median_s' in r),
          flush=True)
  finally:
    for w in workers:
      w.kill()
  return out


# ---------------------------------------------------------------------------------------------------------------
# Metrics and the table

def metrics(case, res, cpu):
  """Throughput numbers of one configuration's result for one case (higher is better, except seconds)."""
  if 'median_s' not in res:
    return {}
  s, b = res['median_s'], case['batch']
  if case['kind'] == 'forward':
    gflop = common.unet_forward_flops(case['model'], batch=b) / 1e9
    on_cpu = case.get('device', 'cpu') == 'cpu'  # the peak is the CPU's: no percentage for GPU runs
    return {'images/s': b / s, 'GFLOP/s': gflop / s,
            '% peak': 100. * gflop / s / cpu['peak_gflops'] if on_cpu else float('nan')}
  if case['kind'] == 'train':
    return {'steps/s': 1. / s, 'images/s': b / s}
  total = s * case.get('scale_to', case['num_inference_steps']) / case['num_inference_steps']
  return {'s / run': total, 'images/s': b / total}


def describe(case):
  precision = '' if case.get('precision', 'float32') == 'float32' else ', ' + case['precision']
  if case['kind'] == 'forward':
    return 'U-Net forward {}, batch {}{}'.format('CIFAR-10 35.7M' if case['model'] == 'cifar10' else '256x256 114M',
                                                case['batch'], precision)
  if case['kind'] == 'train':
    return 'training step, batch {}{}'.format(case['batch'], precision)
  if case.get('scale_to'):
    return 'sampling 16 images, DDPM-{} (from {} steps){}'.format(case['scale_to'], case['num_inference_steps'],
                                                                  precision)
  calls = network_calls(case)
  steps = '' if calls == case['num_inference_steps'] else ' ({} steps)'.format(case['num_inference_steps'])
  if case.get('time_to_quality'):
    return 'time to DDIM-50 digits-FID: 16 images, {} {} calls{}{}'.format(case['sampler'], calls, steps, precision)
  return 'sampling 16 images, {}-{}{}{}'.format(case['sampler'].upper(), calls, steps, precision)


def per_call_table(report):
  """Markdown: each sampling case's median time per network call relative to DDIM's at the same number of calls,
  for ours and for the peer (1.00: the solver's own arithmetic costs nothing next to the U-Net)."""
  rows = {row['case']['name']: row for row in report['cases']}
  lines = ['| work | ' + ' | '.join('{}: s per call, / DDIM'.format(n) for n in report['ours'] + ['peer']) + ' |',
           '| --- |' + ' ---: |' * (len(report['ours']) + 1)]
  for name, row in rows.items():
    case = row['case']
    if case['kind'] != 'sample' or not case.get('calls_budget') or case['sampler'] == 'ddim':
      continue
    ddim = rows.get('sample-ddim{}'.format(case.get('calls_budget')))
    cells = []
    for n in report['ours'] + ['peer']:
      res = row['results'].get(n, {})
      if 'median_s' not in res:
        cells.append('')
        continue
      per_call = res['median_s'] / network_calls(case)
      base = ddim and ddim['results'].get(n, {}).get('median_s')
      ratio = per_call / (base / network_calls(ddim['case'])) if base else float('nan')
      cells.append('{:.3f} s, **{:.2f}**'.format(per_call, ratio))
    lines.append('| {} | {} |'.format(describe(case), ' | '.join(cells)))
  return '\n'.join(lines) if len(lines) > 2 else ''


def table(report):
  """Markdown table: one row per case and ours-configuration, speed ratio = peer time / our time."""
  cpu = report['machine']
  lines = ['| work | ours: configuration | ours | peer | speed ours/peer | GFLOP/s ours (% peak) '
           '| GFLOP/s peer (% peak) | peak RSS MiB ours / peer | reps | foreign CPU |',
           '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for row in report['cases']:
    case, res = row['case'], row['results']
    peer = res.get('peer', {})
    pm = metrics(case, peer, cpu)
    for name in report['ours']:
      if name not in res:
        continue  # not measured in this case (--heavy-ours)
      ours = res[name]
      if 'median_s' not in ours:
        lines.append('| {} | {} | failed: {} | | | | | | | |'.format(describe(case), name, ours.get('error')))
        continue
      om = metrics(case, ours, cpu)
      unit = next(iter(om))
      fmt = (lambda m: '{:.1f} s'.format(m[unit])) if unit == 's / run' else (lambda m: '{:.3g} {}'.format(m[unit],
                                                                                                          unit))
      ratio = peer['median_s'] / ours['median_s'] if 'median_s' in peer else float('nan')
      gf = lambda m: '{:.1f} ({:.0f}%)'.format(m['GFLOP/s'], m['% peak']) if 'GFLOP/s' in m else ''
      lines.append('| {} | {} | {} | {} | **{:.2f}x** | {} | {} | {:.0f} / {} | {} | {:.2f} |'.format(
        describe(case), name, fmt(om), fmt(pm) if pm else 'failed', ratio, gf(om), gf(pm), ours['peak_rss_mb'],
        '{:.0f}'.format(peer['peak_rss_mb']) if 'peak_rss_mb' in peer else '-', len(ours['seconds']),
        max(ours['foreign_cpu'], peer.get('foreign_cpu', 0.))))
  return '\n'.join(lines)


def machine_summary(report):
  cpu, ours = report['machine'], report['ours']
  infos = {}
  for row in report['cases']:
    for name, res in row['results'].items():
      if 'info' in res and name not in infos:
        infos[name] = res['info']
  fw = '; '.join('{}: {}, {} threads (inter-op {})'.format(
    n, i['framework'], i['threads'], i.get('interop_threads')) for n, i in infos.items())
  return ('Machine: {model}, {cores} cores at {ghz} GHz, {simd} -> FP32 peak {peak_gflops} GFLOP/s '
          '({cores} x {ghz} x {flops_per_cycle}); bfloat16 CPU flags: {bf16}. '.format(**dict(cpu, bf16=cpu.get(
            'bf16', 'not recorded'))) +
          'Load average before: {}; measured {} to {}. {}. Ours = {}.'.format(
            report['load_before'], report['started'], report['finished'], fw, ', '.join(ours)))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--quick', action='store_true', help='smoke test: 1 repetition, 5-step sampling, no 256x256')
  p.add_argument('--cases', default='', help='comma-separated case names (default: all)')
  p.add_argument('--ours', default=DEFAULT_OURS, help='comma-separated configurations: {} with optional '
                 '+modifiers (see resolve_config)'.format([c for c in CONFIGS if c != 'peer']))
  p.add_argument('--heavy-ours', default='', help='configurations measured in the long cases (sampling, 256x256); '
                 'default: {} with the default --ours, else all of --ours'.format(DEFAULT_HEAVY_OURS))
  p.add_argument('--reps', type=int, default=5, help='timed repetitions per case (after warm-up)')
  p.add_argument('--sample-reps', type=int, default=None, help='repetitions for the sampling cases (default --reps)')
  p.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)), help='threads for both frameworks')
  p.add_argument('--max-load', type=float, default=0.5, help='wait until the 1-min load average is below this')
  p.add_argument('--wait-minutes', type=float, default=40, help='how long to wait for a quiet machine')
  p.add_argument('--device', choices=('cpu', 'gpu'), default='cpu',
                 help='gpu: both frameworks on the first GPU (needs GPU builds: see docs/benchmarks.md)')
  p.add_argument('--idle-threshold', type=float, default=0.1,
                 help='before each repetition, wait until other processes use less than this share of the CPUs')
  p.add_argument('--idle-wait', type=float, default=120., help='... for at most this many seconds per repetition')
  p.add_argument('--out', default=os.path.join(HERE, 'results'), help='results directory')
  args = p.parse_args(argv)

  cases = all_cases(args.quick)
  names = [n for c in args.cases.split(',') if c for n in case_group(c, cases)] or [
    c for c in cases if not (args.quick and 'church' in c)]
  bad = [c for c in names if c not in cases]
  if bad:
    p.error('unknown case(s) {}; expected some of {}'.format(bad, list(cases)))
  ours = [c for c in args.ours.split(',') if c]
  heavy_ours = [c for c in (args.heavy_ours or
                            (DEFAULT_HEAVY_OURS if args.ours == DEFAULT_OURS else args.ours)).split(',') if c]
  if not set(heavy_ours) <= set(ours):
    p.error('--heavy-ours must be a subset of --ours')
  if 'peer' in ours:
    p.error('--ours lists our configurations; the peer is always measured')
  for name in ours + ['peer']:
    try:
      cfg = resolve_config(name)
    except ValueError as e:
      p.error(str(e))
    if not os.access(cfg['python'], os.X_OK):
      p.error('{}: no Python at {} (run `make bench`, which creates the venvs)'.format(name, cfg['python']))
  reps = 1 if args.quick else args.reps
  sample_reps = 1 if args.quick else (args.sample_reps or args.reps)
  if reps < 1 or sample_reps < 1:
    p.error('--reps and --sample-reps must be >= 1')

  load_before, quiet = wait_for_quiet(args.max_load, args.wait_minutes) if not args.quick else (load_average(), None)
  cpu = common.cpu_info()
  print(machine_summary_line(cpu, load_before, args.threads), flush=True)
  os.makedirs(args.out, exist_ok=True)
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  os.makedirs(os.path.join(args.out, 'logs'), exist_ok=True)
  _write(os.path.join(args.out, 'logs', '.gitignore'), '*\n')  # the workers' stderr: for debugging, not the record
  log_path = os.path.join(args.out, 'logs', '{}.txt'.format(stamp))
  report = dict(machine=cpu, host=platform.node(), device=args.device, load_before=load_before, quiet=quiet,
                threads=args.threads, ours=ours, quick=args.quick, started=time.strftime('%Y-%m-%d %H:%M:%S'), cases=[],
                flops_per_image={m: common.unet_forward_flops(m) for m in common.MODELS},
                note='speed ratio = peer median time / our median time (> 1: ours faster)')
  with open(log_path, 'w') as log:
    for name in names:
      case = dict(cases[name], name=name, device=args.device)
      n = sample_reps if case['kind'] == 'sample' else reps
      heavy = case['kind'] == 'sample' or case['model'] != 'cifar10'
      results = measure_case(name, case, (heavy_ours if heavy else ours) + ['peer'], n, args.threads, log,
                             args.idle_threshold, args.idle_wait)
      report['cases'].append(dict(case=case, results=results, load_after=load_average()))
      _write(os.path.join(args.out, 'partial-{}.json'.format(stamp)), json.dumps(report, indent=1))
  report['finished'] = time.strftime('%Y-%m-%d %H:%M:%S')
  md = machine_summary(report) + '\n\n' + table(report) + '\n'
  calls_md = per_call_table(report)
  if calls_md:
    md += ('\nPer network call, relative to DDIM at the same budget of calls (heun: 2S - 1 calls within it):\n\n' +
           calls_md + '\n')
  print('\n' + md)
  base = os.path.join(args.out, '{}{}'.format(stamp, '-quick' if args.quick else ''))
  _write(base + '.json', json.dumps(report, indent=1))
  if not args.quick:
    _write(os.path.join(args.out, 'latest.md'), md)
  os.remove(os.path.join(args.out, 'partial-{}.json'.format(stamp)))
  print('wrote {}.json (log: {})'.format(base, log_path))
  return 0


def machine_summary_line(cpu, load, threads):
  return 'CPU {model}: {cores} cores, {ghz} GHz, {simd}, peak {peak_gflops} GFLOP/s FP32, bf16 flags {bf16}; '.format(
    **cpu) + \
    'load {}; {} threads per framework'.format(load, threads)


def _write(path, text):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


if __name__ == '__main__':
  sys.exit(main())
