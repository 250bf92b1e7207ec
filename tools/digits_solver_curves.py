"""Quality against cost of the digits table's sampler rows (tools/digits_quality_table.sh OUT_DIR writes them; this
reads their results.json): a markdown table by sampler and network calls, which sampler first reaches DDIM-50's and
DDPM-1000's digits-FID, and a plot of digits-FID against network calls, one line per sampler.

  .venv/bin/python tools/digits_solver_curves.py OUT_DIR PLOT.png

A row is <OUT_DIR>/<name>/results.json of `run_cifar.py reproduce --features=digits` with the EMA weights and the
default spacing of its sampler (uniform for ddim, linspace for the solvers); the non-EMA, quad and untrained rows
are left out. Network calls: S for ddim and the solvers, 2S - 1 for heun (two per step but the last), S + 9 for
pndm with its Runge-Kutta warm-up, T for the original ancestral ddpm.
"""

import collections
import glob
import json
import os
import sys

SAMPLER_ORDER = ('ddim', 'dpmsolver++', 'sde-dpmsolver++', 'unipc', 'euler', 'euler_ancestral', 'heun', 'pndm')
DEFAULT_SPACING = dict({'ddim': 'uniform', 'pndm': 'uniform', 'ddpm': 'uniform'})
METRICS = (('fid_train', 'digits-FID train'), ('fid_test', 'digits-FID test'))


def network_calls(sampling):
  """The network calls of one sampling run (its info.json settings)."""
  sampler, S = sampling['sampler'], sampling.get('num_inference_steps')
  if sampler == 'ddpm':
    return int(S or sampling['num_diffusion_timesteps'])
  if sampler == 'heun':
    return 2 * S - 1
  if sampler == 'pndm':
    return S + (1 if sampling.get('skip_prk_steps') else 9)
  return int(S)


def load_rows(out_dir):
  """{sampler: [(calls, steps, metrics)] sorted by calls} of the EMA, default-spacing rows of out_dir."""
  rows = collections.defaultdict(list)
  for path in sorted(glob.glob(os.path.join(out_dir, '*', 'results.json'))):
    with open(path) as f:
      result = json.load(f)
    sampling = result['sampling']
    if sampling.get('real_split') or not sampling.get('ema') or 'untrained' in os.path.basename(os.path.dirname(path)):
      continue
    if sampling.get('skip_type', 'uniform') != DEFAULT_SPACING.get(sampling['sampler'], 'linspace'):
      continue
    steps = sampling.get('num_inference_steps') or sampling['num_diffusion_timesteps']
    rows[sampling['sampler']].append((network_calls(sampling), steps, result['metrics']))
  return {k: sorted(v, key=lambda r: r[0]) for k, v in rows.items()}


def first_reaching(rows, key, target):
  """[(calls, sampler)] of the fewest calls at which each sampler's `key` is <= target, fewest first."""
  out = []
  for sampler, points in rows.items():
    hits = [calls for calls, _, m in points if m[key] <= target]
    if hits:
      out.append((min(hits), sampler))
  return sorted(out)


def markdown(rows):
  lines = ['| sampler | network calls (steps) | digits-IS (10 splits) | digits-FID train | digits-FID test |',
           '| --- | --- | --- | --- | --- |']
  for sampler in sorted(rows, key=lambda s: (SAMPLER_ORDER + ('ddpm',)).index(s)):
    for calls, steps, m in rows[sampler]:
      lines.append('| {} | {}{} | {:.2f} +- {:.2f} | {:.2f} | {:.2f} |'.format(
        sampler, calls, '' if steps == calls else ' ({})'.format(steps), m['inception_score'],
        m['inception_score_std'], m['fid_train'], m['fid_test']))
  return '\n'.join(lines)


def plot(rows, path, targets):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for ax, (key, title) in zip(axes, METRICS):
    for sampler in SAMPLER_ORDER:
      if sampler in rows:
        calls = [c for c, _, _ in rows[sampler]]
        ax.plot(calls, [m[key] for _, _, m in rows[sampler]], marker='o', label=sampler)
    for name, values, style in targets:
      ax.axhline(values[key], color='grey', linestyle=style, linewidth=1, label=name)
    ax.set_xscale('log')
    ax.set_xticks([5, 10, 15, 20, 50])
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel('network calls')
    ax.set_ylabel(title + ' (500 samples)')
    ax.set_yscale('log')
    ax.grid(True, which='both', alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle('digits demo model: sample quality against network calls')
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=100)
  os.replace(tmp, path)


def main(out_dir, plot_path):
  rows = load_rows(out_dir)
  print(markdown(rows))
  targets = []
  for name, sampler, calls in (('DDIM-50', 'ddim', 50), ('DDPM-1000', 'ddpm', 1000)):
    match = [m for c, _, m in rows.get(sampler, []) if c == calls]
    if not match:
      print('{}: no row in {}'.format(name, out_dir))
      continue
    targets.append((name, match[0], '--' if sampler == 'ddim' else ':'))
    for key, title in METRICS:
      reach = [(c, s) for c, s in first_reaching(rows, key, match[0][key]) if (s, c) != (sampler, calls)]
      print('{} {} = {:.2f}: first reached by {}'.format(name, title, match[0][key], ', '.join(
        '{} at {} calls'.format(s, c) for c, s in reach) or 'none'))
  plot(rows, plot_path, targets)
  print('wrote {}'.format(plot_path))


if __name__ == '__main__':
  if len(sys.argv) != 3:
    sys.exit('usage: tools/digits_solver_curves.py OUT_DIR PLOT.png')
  main(*sys.argv[1:])
