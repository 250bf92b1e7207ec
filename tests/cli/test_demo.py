"""Smoke test of the demo (scripts/demo.py, what `make demo` runs): seconds of training with small T, in process.

Checks that every output the demo promises exists and makes sense: images decode to the tiled shape of the
requested number of samples, the samples are uint8 in [0, 255], the loss, bits/dim and quality numbers are finite
and in their valid ranges, the checkpoint of the last step is written, and summary.json agrees with the files.
Each of the demo's flags reaches the run: --out_dir (where the run is), --num_samples (samples.npz),
--bpd_images (bpd.npz), --quality_samples (the quality numbers' sample count), --train_secs (the stop hook's line
and the summaries' time span), and its config overrides (T: the bpd terms; lr and warmup: the learning-rate
summaries; save_summary_steps: a summary at every step).
"""

import glob
import json
import math
import os

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

from support import scripts as helpers_scripts

NUM_SAMPLES = 4  # tiled 2 x 2: (8 + 2) * 2 - 2 = 18 pixels a side
T = 50  # the demo samples with DDIM-50, which needs T >= 50
TRAIN_SECS = 3
# not the demo's lr 1e-3 and warm-up 100: without warm-up the learning rate is lr from the first step on, so the lr
# summary shows that both overrides reach the optimizer even when the few seconds of training fit one step
LR, WARMUP = 2e-3, 0


def _png(path):
  with Image.open(path) as img:
    assert img.format == 'PNG'
    return np.asarray(img)


def test_demo_outputs_exist_and_make_sense(tmp_path, capsys):
  demo = helpers_scripts.load_script('demo')
  out_dir = tmp_path / 'demo_output'
  demo.main(out_dir=str(out_dir), train_secs=TRAIN_SECS, num_samples=NUM_SAMPLES, bpd_images=2, quality_samples=16,
            num_diffusion_timesteps=T, warmup=WARMUP, lr=LR, save_summary_steps=1, log_every_steps=1000)
  printed = capsys.readouterr().out
  run_dir, = glob.glob(str(out_dir / '*'))
  assert '== done in' in printed and run_dir in printed

  summary = json.load(open(os.path.join(run_dir, 'summary.json')))
  assert summary['config'] == dict(demo.DEMO_CONFIG, num_diffusion_timesteps=T, warmup=WARMUP, lr=LR,
                                   save_summary_steps=1, log_every_steps=1000)
  assert summary['steps'] >= 1
  for key in ('final_loss', 'test_bits_per_dim', 'test_prior_bits_per_dim'):
    assert math.isfinite(summary[key]) and summary[key] >= 0, (key, summary[key])

  # the checkpoint of the last training step, which sample / simple_eval read
  model_dir = os.path.join(run_dir, 'model')
  assert summary['model_dir'] == model_dir
  assert helpers_scripts.checkpoint_steps(model_dir)[-1] == summary['steps']

  # --train_secs stops the training (not the default 330 s): the stop hook's line, and summaries spanning less
  # than a minute; the overrides reach the run: the learning rate of every step is lr (warm-up 0; with the demo's
  # warm-up the first step's would be 0), and every step is summarized (save_summary_steps=1; this shows only when
  # more than one step fits in the training time)
  assert 'stopping: --max_train_secs={} reached'.format(TRAIN_SECS) in printed
  lr = helpers_scripts.read_scalars(model_dir)['train/lr']
  assert sorted(lr) == list(range(1, max(lr) + 1))
  for step, value in lr.items():
    assert abs(value - LR) < 1e-6 * LR, (step, value)
  wall_times = [e.wall_time for path in glob.glob(os.path.join(model_dir, 'events.out.tfevents.*'))
                for e in tf.train.summary_iterator(path) if any(v.tag == 'train/loss' for v in e.summary.value)]
  assert max(wall_times) - min(wall_times) < TRAIN_SECS + 60

  # samples: uint8 [N, 8, 8, 3], and the PNGs are their tiles at native size and enlarged by the smallest whole
  # factor that makes them at least 256 px (18 * 15 = 270), each pixel a factor x factor block
  samples = np.load(os.path.join(run_dir, 'samples.npz'))['arr_0']
  assert samples.shape == (NUM_SAMPLES, 8, 8, 3) and samples.dtype == np.uint8
  tiled = _png(os.path.join(run_dir, 'samples_native.png'))
  assert tiled.shape[:2] == (18, 18) and tiled.dtype == np.uint8
  np.testing.assert_array_equal(tiled[:8, :8], samples[0])
  big = _png(os.path.join(run_dir, 'samples.png'))
  assert big.shape[:2] == (270, 270)
  np.testing.assert_array_equal(big, np.kron(tiled, np.ones((15, 15, 1), np.uint8)))
  data = _png(os.path.join(run_dir, 'data.png'))
  assert data.shape[:2] == (270, 270) and data.min() < 64 and data.max() > 192  # real digits: dark and bright

  # loss curve: finite positive values, one per summary step, the last one in summary.json
  lines = open(os.path.join(run_dir, 'loss.csv')).read().splitlines()
  assert lines[0] == 'step,loss' and len(lines) >= 2
  steps, losses = zip(*[(int(s), float(v)) for s, v in (line.split(',') for line in lines[1:])])
  assert list(steps) == sorted(set(steps))
  assert all(math.isfinite(v) and v > 0 for v in losses)
  assert abs(losses[-1] - summary['final_loss']) < 1e-5
  loss_png = _png(os.path.join(run_dir, 'loss.png'))
  assert loss_png.shape[:2] == (420, 720) and len(np.unique(loss_png.reshape(-1, loss_png.shape[-1]), axis=0)) > 2

  # bits/dim: per-image totals of T terms plus the prior; their mean is the number in summary.json
  with np.load(os.path.join(run_dir, 'bpd.npz')) as bpd:
    assert bpd['total_bpd'].shape == (2,) and bpd['terms_bpd'].shape == (2, T)
    assert np.all(np.isfinite(bpd['terms_bpd'])) and np.all(bpd['prior_bpd'] >= 0)
    np.testing.assert_allclose(bpd['total_bpd'], bpd['terms_bpd'].sum(1) + bpd['prior_bpd'], rtol=1e-4)
    assert abs(float(bpd['total_bpd'].mean()) - summary['test_bits_per_dim']) < 1e-4

  # digits-IS in [1, 10 classes], digits-FID >= 0, for the samples and the held-out real digits
  assert os.path.exists(os.path.join(run_dir, 'quality', 'table.md'))
  for name, q in summary['digits_quality'].items():
    assert 1 - 1e-6 <= q['inception_score'] <= 10 + 1e-6, (name, q)
    assert all(math.isfinite(q[k]) and q[k] >= -1e-6 for k in ('fid_train', 'fid_test')), (name, q)
  assert summary['digits_quality']['samples_ddim50']['num_samples'] == 16


def test_the_grids_are_enlarged_to_at_least_256_pixels():
  """64 digits tile to 78 px (8 x 8 cells of 8 px, 2 px apart): enlarged 4x to 312; a grid that is large enough
  stays as it is; the enlargement repeats pixels (nearest neighbour)."""
  demo = helpers_scripts.load_script('demo')
  grid = np.random.RandomState(0).randint(0, 256, size=(78, 78, 3)).astype(np.uint8)
  big = demo.enlarge(grid)
  assert big.shape == (312, 312, 3)
  np.testing.assert_array_equal(big[1::4, 2::4], grid)
  assert demo.enlarge(np.zeros((300, 256), np.uint8)).shape == (300, 256)
