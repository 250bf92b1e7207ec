"""Converts DDPM U-Net weights between the diffusers format and our TF checkpoints, without PyTorch.

Published weights -> a TF checkpoint that `sample` / `evaluation` load (live weights, EMA shadows, global_step):

  git clone https://huggingface.co/google/ddpm-cifar10-32 /data/ddpm-cifar10-32   # see docs/pretrained.md
  python scripts/convert_diffusers_checkpoint.py to_tf --src /data/ddpm-cifar10-32 --out /data/ckpt_cifar10

Our checkpoint (EMA weights by default) -> a diffusers UNet2DModel directory (config.json + safetensors):

  python scripts/convert_diffusers_checkpoint.py to_diffusers --ckpt /data/ckpt_cifar10 --out /data/export \
      --resolution 32

`--src` may also be a pipeline clone whose U-Net is in its unet/ subfolder. Both commands print the matching
hyper-parameters of our models/unet.model (ch, ch_mult, num_res_blocks, attn_resolutions).
"""

import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from diffusion_tf.cli import runner as cli  # noqa: E402  (pure Python: TensorFlow is quieted before it loads)

cli.quiet_tensorflow()

from diffusion_tf import checkpoints  # noqa: E402  (numpy only; TF is imported when a checkpoint is written or read)
from diffusion_tf import provenance  # noqa: E402


def _hparams_text(hp):
  return ('ch={}, ch_mult={}, num_res_blocks={}, attn_resolutions={}, image size {}x{}, {} -> {} channels'.format(
    hp.ch, tuple(hp.ch_mult), hp.num_res_blocks, tuple(hp.attn_resolutions), hp.resolution, hp.resolution,
    hp.in_ch, hp.out_ch))


def to_tf(src, out, global_step=0, with_ema=True, prefix='model', repo_id=None, source_weights=None):
  """Reads a diffusers UNet2DModel directory `src`; writes the TF checkpoint directory `out` (new or empty).

  The weights are saved under `<prefix>/...` (our unet.model names) and, with `with_ema`, also as the EMA shadows
  `<name>/ExponentialMovingAverage`; `global_step` is stored as the int64 variable global_step. provenance.json
  records the source and whether its weights are EMA ones: from --source_weights (ema, non-ema, unknown) if given,
  else from the hub repository name --repo_id (default: src's folder name), e.g. google/ddpm-ema-cifar10-32 ->
  ema, google/ddpm-cifar10-32 -> non-ema.
  """
  if not isinstance(global_step, int) or global_step < 0:
    raise checkpoints.CheckpointError('global_step = {!r}; expected a non-negative int'.format(global_step))
  if source_weights is not None and source_weights not in provenance.SOURCE_WEIGHTS:
    raise checkpoints.CheckpointError('source_weights = {!r}; expected one of {}'.format(
      source_weights, ', '.join(provenance.SOURCE_WEIGHTS)))
  src = str(src)
  record = provenance.make_provenance(os.path.abspath(src), source_weights=source_weights,
                                     repo_id=None if repo_id is None else str(repo_id))
  if not os.path.isfile(os.path.join(src, checkpoints.CONFIG_NAME)) and os.path.isfile(
      os.path.join(src, 'unet', checkpoints.CONFIG_NAME)):
    src = os.path.join(src, 'unet')  # a pipeline directory (model_index.json + unet/ + scheduler/)
  config, hp, state = checkpoints.read_diffusers_dir(src)
  arrays = checkpoints.diffusers_to_tf(state, hp, prefix=prefix)
  # The hyper-parameters of our unet.model that these weights need, for the record.
  hparams = json.dumps(dict(hp._asdict(), source=os.path.abspath(src), dropout=config.get('dropout', 0.0)), indent=2)
  ckpt = checkpoints.write_tf_checkpoint(str(out), arrays, global_step=global_step, with_ema=with_ema,
                                         extra_files={'unet_hparams.json': hparams + '\n',
                                                      provenance.PROVENANCE_FILE: json.dumps(record, indent=2) + '\n'})
  n = sum(a.size for a in arrays.values())
  print('wrote {} ({} variables, {:,} parameters{}); U-Net: {}'.format(
    ckpt, len(arrays), n, ', with EMA shadows' if with_ema else '', _hparams_text(hp)))
  print('source weights: {} ({}); the EMA slots hold {}'.format(
    record['source_weights'], record['known_from'], record['ema_slots']))
  if record['source_weights'] == 'non-ema':
    print(provenance.ema_warning(ckpt))


def to_diffusers(ckpt, out, resolution, ema=True, prefix='model'):
  """Reads our TF checkpoint `ckpt` (a prefix, or a directory: its latest checkpoint); writes `out` (new or empty)
  as a diffusers UNet2DModel directory. `resolution` is the image size the model was trained at (32 for CIFAR-10,
  256 for CelebA-HQ / LSUN); `ema` picks the EMA weights (the ones the paper samples with) over the live ones."""
  from diffusion_tf.runs import run_dir  # TensorFlow only now: to_tf needs none
  ckpt = run_dir.resolve_checkpoint(str(ckpt))  # a directory's newest readable checkpoint (unreadable ones set aside)
  values = checkpoints.read_tf_checkpoint(ckpt)
  arrays = checkpoints.unet_weights_from_tf(values, ema=bool(ema), prefix=prefix)
  hp = checkpoints.unet_hparams_from_tf(arrays, resolution=resolution, prefix=prefix)
  state = checkpoints.tf_to_diffusers(arrays, hp, prefix=prefix)
  checkpoints.write_diffusers_dir(str(out), hp, state)
  print('wrote {} ({} weights of {}, {} tensors); U-Net: {}'.format(
    out, 'EMA' if ema else 'live', ckpt, len(state), _hparams_text(hp)))


def main(argv=None):
  """Runs the command in `argv` (default: sys.argv[1:]); an error exits with status 1 and one `error:` line."""
  cli.run_cli({'to_tf': to_tf, 'to_diffusers': to_diffusers}, argv=argv, name='convert_diffusers_checkpoint.py')


if __name__ == '__main__':
  main()
