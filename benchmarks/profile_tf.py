"""Where ours spends its time: per-op-type totals of one U-Net forward (or training step) from TF's step stats.

Usage (from the repository root, with the TF venv to profile):
  .venv/bin/python benchmarks/profile_tf.py [--batch 8] [--train] [--variant bias_add,gn_moments] [--xla]
Prints the op types by total time (summed over the ops' own run times, so overlapping ops count twice) and the wall
time of the traced runs.
"""

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--train', action='store_true')
  p.add_argument('--variant', default='')
  p.add_argument('--xla', action='store_true')
  p.add_argument('--intra', type=int, default=2)
  p.add_argument('--inter', type=int, default=1)
  p.add_argument('--runs', type=int, default=3)
  p.add_argument('--top', type=int, default=25)
  args = p.parse_args()

  import numpy as np
  import tensorflow.compat.v1 as tf
  tf.disable_v2_behavior()
  from diffusion_tf import diffusion_utils_2, utils
  from diffusion_tf.models import unet
  import worker_tf
  if args.variant:
    import variants
    variants.apply(unet, args.variant.split(','))

  B = args.batch
  x = tf.placeholder(tf.float32, [B, 32, 32, 3])
  kw = dict(y=None, name='model', num_classes=1, out_ch=3, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
            attn_resolutions=(16,), dropout=0.1 if args.train else 0.)
  if args.train:
    diffusion = diffusion_utils_2.GaussianDiffusion2(
      betas=diffusion_utils_2.get_beta_schedule('linear', beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=1000),
      model_mean_type='eps', model_var_type='fixedlarge', loss_type='mse')
    t = tf.random_uniform([B], 0, 1000, dtype=tf.int32)
    loss = tf.reduce_mean(diffusion.training_losses(lambda x_, t_: unet.model(x_, t=t_, **kw), x, t))
    fetch, _ = utils.make_optimizer(loss=loss, trainable_variables=tf.trainable_variables(),
                                    global_step=tf.train.get_or_create_global_step(), tpu=False, optimizer='adam',
                                    lr=2e-4, grad_clip=1.0)
  else:
    fetch = unet.model(x, t=tf.fill([B], 500), **kw)
  types = {n.name: n.op for n in tf.get_default_graph().as_graph_def().node}
  sess = tf.Session(config=worker_tf.session_config(args.intra, dict(intra=args.intra, inter=args.inter,
                                                                      xla=args.xla)))
  sess.run(tf.global_variables_initializer())
  feed = {x: np.random.RandomState(0).randn(B, 32, 32, 3).astype(np.float32).clip(-1, 1)}
  for _ in range(2):
    sess.run(fetch, feed)
  t0 = time.perf_counter()
  for _ in range(args.runs):
    sess.run(fetch, feed)
  plain = (time.perf_counter() - t0) / args.runs

  totals, counts = collections.Counter(), collections.Counter()
  opts = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
  for _ in range(args.runs):
    meta = tf.RunMetadata()
    sess.run(fetch, feed, options=opts, run_metadata=meta)
    for dev in meta.step_stats.dev_stats:
      for ns in dev.node_stats:
        name = ns.node_name.split(':')[0]
        op = types.get(name) or ns.timeline_label.split('=')[-1].split('(')[0].strip() or name
        if ns.timeline_label:  # MKL and fused ops carry their real type in the label
          label = ns.timeline_label.split(' = ')[-1].split('(')[0].strip()
          op = label or op
        totals[op] += ns.op_end_rel_micros / 1e6 / args.runs
        counts[op] += 1
  total = sum(totals.values())
  print('wall per run (untraced): {:.3f} s; summed op time per run: {:.3f} s'.format(plain, total))
  for op, s in totals.most_common(args.top):
    print('{:40s} {:8.3f} s {:5.1f}%  x{}'.format(op, s, 100 * s / total, counts[op] // args.runs))


if __name__ == '__main__':
  main()
