"""Peak memory and time of one training step of the 114M 256x256 U-Net (the CelebA-HQ/LSUN model, `unet2d16b2c112244`)
on CPU, with the memory levers of `train`: none, --grad_accum_steps (the batch in microbatches of one image, K =
batch), --recompute (gradient checkpointing of every residual block), and both.

Each configuration runs in a fresh worker process (this file with --worker): it builds the training step as `train`
does (train.loop's model_fn: the model's loss, Adam with warm-up and clipping, the EMA), initialises the variables,
runs one untimed step and `--steps` timed ones on random images, and reports its peak resident memory (ru_maxrss,
which covers building the graph too), its resident memory after initialising the variables (weights, Adam's slots and
the EMA shadows, before any step) and the seconds per step. The driver watches the machine's available memory and
stops a worker that would leave less than --min_free_gb (the machine is shared), recording it as stopped.

    nice -n 10 .venv-tf2/bin/python benchmarks/memory_levers.py                  # all 16, results/memory_levers-*.json
    .venv-tf2/bin/python benchmarks/memory_levers.py --batches 1 --levers none,recompute --steps 1   # a subset

Results: benchmarks/results/memory_levers-<date>.json (written after every configuration) and a markdown table on
stdout; docs/gpu_tpu.md ("Memory levers") shows the measured table.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import common

LEVERS = {  # lever -> (grad_accum_steps as a function of the batch, recompute)
  'none': (lambda batch: 1, False),
  'accumulation': (lambda batch: batch, False),
  'recompute': (lambda batch: 1, True),
  'both': (lambda batch: batch, True),
}
MODEL_NAME = 'unet2d16b2c112244'


def _rss_mb():
  """Current resident set size of this process in MiB (/proc/self/status VmRSS)."""
  for line in open('/proc/self/status'):
    if line.startswith('VmRSS:'):
      return int(line.split()[1]) / 1024.
  return float('nan')


def _mem_available_gb():
  for line in open('/proc/meminfo'):
    if line.startswith('MemAvailable:'):
      return int(line.split()[1]) / 1024. ** 2
  return float('nan')


def worker(batch, lever, steps, model_name=MODEL_NAME, resolution=256):
  """One configuration in this (fresh) process: a JSON line on stdout."""
  import numpy as np
  import tensorflow.compat.v1 as tf
  from diffusion_tf.diffusion_utils import get_beta_schedule
  from diffusion_tf.experiments import celebahq_lsun
  from diffusion_tf.runs import devices
  from diffusion_tf.train import loop

  accum, recompute = LEVERS[lever][0](batch), LEVERS[lever][1]
  t0 = time.perf_counter()
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    model = celebahq_lsun.Model(
      model_name=model_name, betas=get_beta_schedule('linear', beta_start=1e-4, beta_end=0.02,
                                                     num_diffusion_timesteps=1000),
      loss_type='noisepred', num_classes=1, dropout=0., randflip=1, block_size=1, recompute=recompute)
    images = np.random.RandomState(0).randint(0, 256, size=[batch, resolution, resolution, 3]).astype(np.int32)
    features = {'image': tf.constant(images), 'label': tf.zeros([batch], tf.int32)}
    # the training step as run_training builds it on one CPU (the paper's lsun settings: Adam, lr 2e-5, warm-up
    # 5000, clipping at 1, EMA 0.9999)
    model_fn = loop._make_model_fn(  # noqa: SLF001 (the trainer's own step, measured as it is)
      lambda: model, dist=devices.choose_distribution(num_gpus=0), local_bs=batch, optimizer='adam', lr=2e-5,
      warmup=5000, grad_clip=1., ema_decay=0.9999, model_dir=tempfile.mkdtemp(), save_summary_steps=100,
      grad_accum_steps=accum)
    spec = model_fn(features, None, tf.estimator.ModeKeys.TRAIN, {})
    num_params = sum(int(np.prod(v.shape.as_list())) for v in tf.trainable_variables())
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      build_s = time.perf_counter() - t0
      rss_init = _rss_mb()
      t1 = time.perf_counter()
      loss, _ = sess.run([spec.loss, spec.train_op])  # the timed steps' fetches: one executor, built here
      first_s = time.perf_counter() - t1
      times = []
      for _ in range(steps):
        t1 = time.perf_counter()
        loss, _ = sess.run([spec.loss, spec.train_op])
        times.append(time.perf_counter() - t1)
  print(json.dumps(dict(
    batch=batch, lever=lever, grad_accum_steps=accum, recompute=recompute, num_params=num_params,
    peak_rss_mb=round(common.peak_rss_mb(), 1), rss_after_init_mb=round(rss_init, 1),
    build_and_init_s=round(build_s, 1), first_step_s=round(first_s, 2), step_s=[round(t, 2) for t in times],
    loss=float(loss), tf_version=tf.version.VERSION)))


def _run_worker(batch, lever, steps, min_free_gb, smoke):
  """(result dict, or one saying why there is none) of a fresh worker process."""
  cmd = [sys.executable, os.path.abspath(__file__), '--worker', '--batch={}'.format(batch), '--levers=' + lever,
         '--steps={}'.format(steps)] + (['--smoke'] if smoke else [])
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    proc = subprocess.Popen(cmd, stdout=out, stderr=err)
    stopped = None
    while proc.poll() is None:
      time.sleep(0.5)
      if _mem_available_gb() < min_free_gb:
        proc.kill()
        stopped = 'stopped: the machine had less than {} GB available'.format(min_free_gb)
        proc.wait()
    out.seek(0)
    err.seek(0)
    lines = [line for line in out.read().splitlines() if line.startswith('{')]
    if lines and proc.returncode == 0:
      return json.loads(lines[-1])
    tail = err.read().strip().splitlines()[-3:]
    return dict(batch=batch, lever=lever, error=stopped or 'exit {}: {}'.format(proc.returncode, ' | '.join(tail)))


def _write_atomic(path, obj):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def _table(results):
  """Markdown: one row per batch, peak RSS (GB) and seconds per step of each lever."""
  levers = [lever for lever in LEVERS if any(r['lever'] == lever for r in results)]
  lines = ['| batch | ' + ' | '.join('{} peak GB / s per step'.format(lever) for lever in levers) + ' |',
           '| --- |' + ' --- |' * len(levers)]
  for batch in sorted({r['batch'] for r in results}):
    cells = []
    for lever in levers:
      r = next((r for r in results if r['batch'] == batch and r['lever'] == lever), None)
      if r is None:
        cells.append('')
      elif 'error' in r:
        cells.append(r['error'][:40])
      else:
        step = sum(r['step_s']) / len(r['step_s']) if r['step_s'] else r['first_step_s']
        cells.append('{:.2f} / {:.1f}'.format(r['peak_rss_mb'] / 1024., step))
    lines.append('| {} | {} |'.format(batch, ' | '.join(cells)))
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--batches', default='1,2,3,4')
  parser.add_argument('--levers', default=','.join(LEVERS))
  parser.add_argument('--steps', type=int, default=2, help='timed steps after the untimed first one')
  parser.add_argument('--min_free_gb', type=float, default=2.)
  parser.add_argument('--out', default=None)
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--batch', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--smoke', action='store_true', help='the tiny U-Net at 32x32 instead: checks the script')
  args = parser.parse_args()
  if args.worker:
    return worker(args.batch, args.levers, args.steps, *(('tiny', 32) if args.smoke else ()))
  levers = args.levers.split(',')
  unknown = sorted(set(levers) - set(LEVERS))
  if unknown:
    parser.error('unknown lever {}; expected some of {}'.format(', '.join(unknown), ', '.join(LEVERS)))
  out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'memory_levers-{}.json'.format(
    datetime.datetime.now().strftime('%Y%m%d-%H%M%S')))
  record = dict(command=' '.join(sys.argv), python=sys.executable, cpu=common.cpu_info(),
                cpu_flags=sorted(set(f for f in open('/proc/cpuinfo').read().split() if f.startswith(('avx', 'amx')))),
                loadavg_start=open('/proc/loadavg').read().split()[:3], started=datetime.datetime.now().isoformat(),
                results=[])
  for batch in [int(b) for b in args.batches.split(',')]:
    done = {}
    for lever in levers:
      same = done.get((LEVERS[lever][0](batch), LEVERS[lever][1]))
      if same is not None:  # at batch 1 accumulation is K = 1: the configuration just measured
        record['results'].append(dict(same, lever=lever, same_as=same['lever']))
        continue
      result = _run_worker(batch, lever, args.steps, args.min_free_gb, args.smoke)
      done[(LEVERS[lever][0](batch), LEVERS[lever][1])] = result
      result['loadavg'] = open('/proc/loadavg').read().split()[:3]
      record['results'].append(result)
      record['loadavg_end'] = result['loadavg']
      _write_atomic(out, record)
      print(json.dumps(result), flush=True)
  print(_table(record['results']))
  print('written to', out)


if __name__ == '__main__':
  main()
