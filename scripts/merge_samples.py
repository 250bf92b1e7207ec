"""Merge the shards of a sample dump drawn on several machines (`sample --shard=i/n`) into one samples.npz.

  python3 scripts/merge_samples.py --out_dir=samples50k shard0 shard1 shard2 shard3

Checks that the shards are all there, each once, and come from one sampling run (same checkpoint, EMA or raw
weights, sampler and steps, seed, batch size, sample count and replica count), then writes out_dir/samples.npz
(arr_0: uint8 [N, H, W, 3], the same array one machine drawing all N samples writes), grid.png and info.json.
scripts/evaluate_samples.py --samples=out_dir/samples.npz computes IS and FID from it. Shard directories may be
local or gs:// paths. Bad input ends with one "error:" line and exit status 1; nothing is written then.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from diffusion_tf.cli import runner  # noqa: E402

runner.quiet_tensorflow()

from diffusion_tf.generate import shards  # noqa: E402


def merge(*shard_dirs, out_dir=None):
  """Merge shard directories (positional) into --out_dir."""
  if not out_dir:
    raise shards.ShardError('--out_dir is required: the directory to write the merged samples.npz to')
  merged = shards.merge_shards([str(d) for d in shard_dirs], str(out_dir))
  print('merged {} shards: {} samples -> {}'.format(len(shard_dirs), len(merged),
                                                     os.path.join(str(out_dir), shards.SAMPLES_FILE)))


def main(argv=None):
  runner.run_cli(runner.subcommands(merge=merge)['merge'], argv=argv, name='merge_samples.py')


if __name__ == '__main__':
  main()
