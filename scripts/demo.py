"""The offline demo (`make demo`): train a small DDPM on the embedded handwritten digits on this machine's CPU for a
few minutes, then sample from its EMA weights and measure its bits/dim and sample quality (digits-IS and
digits-FID: the IS and FID code fed by a small digits classifier instead of Inception). No network, no GPU needed.

It runs the same code as the paper's CIFAR-10 script (scripts/run_cifar.py: train, sample, simple_eval) with a
small configuration: scikit-learn's 8x8 digits (grey, as RGB), a 0.5M-parameter U-Net ('demo': ch 32,
ch_mult (1, 2, 2), one residual block per level), the paper's T = 1000 linear betas, batch 32, lr 1e-3 with 100
warm-up steps, EMA decay 0.995 (the paper's 0.9999 averages over far more steps than a short run has), no dropout
and no flips (digits are not mirror-symmetric).

Outputs, in demo_output/<time>/ (printed at the end):
  model/                        the training run (checkpoints, kwargs.json, TensorBoard events)
  samples.png, samples_native.png  64 samples of the ancestral sampler with the EMA weights (enlarged to >= 256 px,
                                and at their native 8x8)
  samples.npz                   the samples, uint8 [64, 8, 8, 3] (arr_0)
  data.png                      64 training images, for comparison (enlarged)
  loss.csv, loss.png            the training loss curve (matplotlib)
  bpd.npz                       bits/dim of test images: total, per-timestep terms, prior, mse
  quality/                      digits-IS / digits-FID of quality_samples DDIM-50 samples (run_cifar.py reproduce
                                --features=digits) and of the held-out real digits: table.md, results.json
  summary.json                  the numbers and paths

  python3 scripts/demo.py [--train_secs=330] [--out_dir=demo_output] [--quality_samples=500]
"""

import datetime
import glob
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from diffusion_tf.cli import runner as cli  # noqa: E402  (pure Python: TensorFlow is quieted before it loads)

cli.quiet_tensorflow()

import numpy as np  # noqa: E402

from diffusion_tf.checks import check_known_flags  # noqa: E402

MIN_GRID_PIXELS = 256  # the image grids' short side at least (the README's pictures are 292 px)
DEMO_CONFIG = dict(
  dataset='digits', resolution=8, model_name='demo', num_diffusion_timesteps=1000, beta_start=0.0001,
  beta_end=0.02, beta_schedule='linear', total_bs=32, lr=1e-3, warmup=100, ema_decay=0.995, dropout=0.,
  randflip=0, save_summary_steps=10, log_every_steps=200, save_checkpoints_secs=60, seed=0)


# ---------------------------------------------------------------------------------------------------------------
# The pictures: the loss curve and the enlarged image grids

def read_scalars(model_dir, tag):
  """[(step, value)] of a scalar summary in a run's event files, sorted by step (the last value of a step wins)."""
  import tensorflow.compat.v1 as tf
  values = {}
  for path in sorted(glob.glob(os.path.join(model_dir, 'events.out.tfevents.*'))):
    try:
      for event in tf.train.summary_iterator(path):
        for v in event.summary.value:
          if v.tag == tag:
            values[int(event.step)] = float(v.simple_value)
    except tf.errors.DataLossError:  # a run killed while writing leaves a cut-short last record
      pass
  return sorted(values.items())


def smooth(values, weight=0.9):
  """Exponential smoothing as TensorBoard draws it: s_i = w s_{i-1} + (1 - w) v_i, debiased."""
  out, acc, norm = [], 0., 0.
  for v in values:
    acc, norm = weight * acc + (1 - weight) * v, weight * norm + (1 - weight)
    out.append(acc / norm)
  return out


def draw_curve(path, points, *, title, width=720, height=420):
  """Plot (step, value) points on a log-scale y axis into a PNG of width x height pixels with matplotlib: the raw
  values in light grey, their smoothing (as TensorBoard's) in blue."""
  import matplotlib  # late: only the loss plot needs it, and the Agg backend must be chosen before pyplot loads
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # late: see above
  from diffusion_tf import utils  # late: TensorFlow is quieted at the top of the script, before this loads it
  steps = [p[0] for p in points]
  values = np.maximum(np.array([p[1] for p in points], np.float64), 1e-8)
  dpi = 100
  fig, ax = plt.subplots(figsize=(width / dpi, height / dpi), dpi=dpi)
  ax.plot(steps, values, color='0.75', linewidth=1, label='loss')
  ax.plot(steps, np.exp(smooth(list(np.log(values)))), color='tab:blue', linewidth=2, label='smoothed')
  ax.set_yscale('log')
  ax.set_xlabel('step')
  ax.set_title(title, fontsize=10)
  ax.grid(True, which='both', color='0.9')
  ax.legend(loc='upper right')
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=dpi)
  plt.close(fig)
  utils.atomic_write_bytes(path, buffer.getvalue())


def enlarge(img, min_pixels=MIN_GRID_PIXELS):
  """Nearest-neighbour upscaling of an [H, W(, C)] uint8 image by the smallest integer factor that makes its short
  side at least min_pixels (8x8 digits are too small to see at their native size)."""
  factor = max(1, -(-min_pixels // min(img.shape[:2])))
  return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)


# ---------------------------------------------------------------------------------------------------------------

def main(out_dir='demo_output', train_secs=330, num_samples=64, bpd_images=33, quality_samples=500, **overrides):
  """Train, sample, and measure the demo model; see the module docstring. Other flags (e.g. --total_bs=64, --lr)
  change DEMO_CONFIG."""
  check_known_flags('demo.py', sorted(overrides), DEMO_CONFIG)
  config = dict(DEMO_CONFIG, **overrides)
  t_start = time.time()
  from diffusion_tf import utils
  from diffusion_tf.cli import cifar10 as run_cifar  # run_cifar.py's commands, from the package
  from diffusion_tf.data import digits
  from diffusion_tf.evaluation import protocol
  from diffusion_tf.runs.paths import check_writable_dir

  run_dir = os.path.abspath(os.path.join(out_dir, datetime.datetime.now().strftime('%Y%m%d-%H%M%S')))
  model_dir = os.path.join(run_dir, 'model')
  check_writable_dir(out_dir, 'out_dir')
  print('== diffusion_tf demo: DDPM on 8x8 handwritten digits, {} s of training on CPU -> {}'.format(
    train_secs, run_dir), flush=True)

  # 1. train
  print('\n== 1/5 training (run_cifar.py train, config {})'.format(
    ', '.join('{}={}'.format(k, v) for k, v in sorted(config.items()))), flush=True)
  run_cifar.train(exp_name='demo', model_dir=model_dir, max_train_secs=train_secs, **config)

  # 2. sample with the EMA weights (the original ancestral sampler, all T steps)
  print('\n== 2/5 sampling {} images with the EMA weights (run_cifar.py sample)'.format(num_samples), flush=True)
  sample_dir = os.path.join(run_dir, 'sample')
  run_cifar.sample(model_dir=model_dir, out_dir=sample_dir, num_samples=num_samples, batch_size=num_samples)
  samples = np.load(os.path.join(sample_dir, 'samples.npz'))['arr_0']
  utils.write_png(os.path.join(run_dir, 'samples.png'), enlarge(utils.tile_imgs(samples)))
  utils.save_tiled_imgs(os.path.join(run_dir, 'samples_native.png'), samples)
  os.replace(os.path.join(sample_dir, 'samples.npz'), os.path.join(run_dir, 'samples.npz'))
  real = digits.load_digits_images(config['resolution'])[:num_samples]
  utils.write_png(os.path.join(run_dir, 'data.png'), enlarge(utils.tile_imgs(real)))

  # 3. loss curve
  print('\n== 3/5 loss curve', flush=True)
  points = read_scalars(model_dir, 'train/loss')
  csv = 'step,loss\n' + ''.join('{},{:.6f}\n'.format(s, v) for s, v in points)
  utils.atomic_write_bytes(os.path.join(run_dir, 'loss.csv'), csv.encode())
  draw_curve(os.path.join(run_dir, 'loss.png'), points,
             title='training loss (eps mse), {} summaries; blue: smoothed'.format(len(points)))

  # 4. bits/dim on test images (the variational bound, all T terms)
  print('\n== 4/5 bits/dim of {} test images (run_cifar.py simple_eval --mode=bpd_eval)'.format(bpd_images),
        flush=True)
  run_cifar.simple_eval(model_dir=model_dir, mode='bpd_eval', total_bs=bpd_images, max_batches=1)
  bpd_file, = glob.glob(os.path.join(model_dir, 'simple_eval', 'bpd', 'bpd_eval_*.npz'))
  os.replace(bpd_file, os.path.join(run_dir, 'bpd.npz'))
  with np.load(os.path.join(run_dir, 'bpd.npz')) as bpd:
    total_bpd, prior_bpd, step = float(bpd['total_bpd'].mean()), float(bpd['prior_bpd'].mean()), int(bpd['step'])

  # 5. sample quality: the IS / FID code with the digits classifier standing in for Inception
  print('\n== 5/5 digits-IS and digits-FID of {} DDIM-50 samples and of the held-out real digits '
        '(run_cifar.py reproduce --features=digits)'.format(quality_samples), flush=True)
  quality_dir = os.path.join(run_dir, 'quality')
  model_quality = run_cifar.reproduce(
    model_dir=model_dir, features='digits', sampler='ddim', num_inference_steps=50, num_samples=quality_samples,
    batch_size=quality_samples, out_dir=os.path.join(quality_dir, 'ddim50_ema'))
  real_quality = run_cifar.reproduce(real_split='test', dataset='digits', resolution=config['resolution'],
                                     features='digits', out_dir=os.path.join(quality_dir, 'real_test'))
  quality = {name: {k: r['metrics'][k] for k in ('inception_score', 'inception_score_std', 'fid_train', 'fid_test',
                                                 'num_samples')}
             for name, r in [('samples_ddim50', model_quality), ('real_test_digits', real_quality)]}
  utils.atomic_write_bytes(os.path.join(quality_dir, 'table.md'), (
    protocol.format_table(model_quality) + protocol.format_table(real_quality).split('\n', 2)[2]).encode())

  summary = dict(
    steps=step, final_loss=points[-1][1] if points else None, test_bits_per_dim=total_bpd,
    test_prior_bits_per_dim=prior_bpd, num_bpd_images=bpd_images, digits_quality=quality,
    seconds=round(time.time() - t_start), config=config, model_dir=model_dir)
  utils.atomic_write_bytes(os.path.join(run_dir, 'summary.json'),
                           (json.dumps(summary, indent=2, sort_keys=True) + '\n').encode())
  print('\n== done in {:.0f} s: {} training steps, final loss {:.4f}, test bits/dim {:.3f}'.format(
    time.time() - t_start, step, summary['final_loss'] or float('nan'), total_bpd))
  q, r = quality['samples_ddim50'], quality['real_test_digits']
  print('   digits-IS {:.2f} +- {:.2f}, digits-FID {:.2f} (train) / {:.2f} (test) of {} DDIM-50 samples; '
        'held-out real digits: digits-IS {:.2f}, digits-FID {:.2f} (train)'.format(
          q['inception_score'], q['inception_score_std'], q['fid_train'], q['fid_test'], q['num_samples'],
          r['inception_score'], r['fid_train']))
  for name, what in [('samples.png', '{} samples (EMA weights), enlarged'.format(num_samples)),
                     ('samples_native.png', 'the same at their native 8x8'),
                     ('data.png', '64 training digits, for comparison'),
                     ('loss.png', 'training loss curve (loss.csv: the numbers)'),
                     ('bpd.npz', 'bits/dim: total_bpd, terms_bpd, prior_bpd, mse'),
                     ('quality/table.md', 'digits-IS and digits-FID (quality/*/results.json: the details)'),
                     ('summary.json', 'these numbers'),
                     ('model', 'the checkpoints and TensorBoard logs')]:
    print('  {:<70s} {}'.format(os.path.join(run_dir, name), what))
  print('DDIM, 50 steps, from this model:\n  {} scripts/run_cifar.py sample --model_dir={} '
        '--sampler=ddim --num_inference_steps=50 --num_samples=64'.format(os.path.relpath(sys.executable), model_dir))


cli.extra_flags(main, DEMO_CONFIG, 'the demo\'s training configuration (DEMO_CONFIG)')

def command_line(argv=None):
  """The script's command line: main() with its flags checked first (cli.run_cli)."""
  cli.run_cli(cli.subcommands(main=main)['main'], argv=argv, name='demo.py')


if __name__ == '__main__':
  command_line()
