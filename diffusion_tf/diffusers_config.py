"""diffusers `UNet2DModel` config.json <-> the hyper-parameters of our models/unet.model (UnetHParams): which configs
are the DDPM U-Net, and the config of ours."""

import collections

from .errors import CheckpointError

# The diffusers release whose UNet2DModel source this mapping was checked against (written into exported configs).
DIFFUSERS_VERSION = '0.42.1'

# The hyper-parameters of our unet.model() that the weights determine, plus the image size.
UnetHParams = collections.namedtuple(
  'UnetHParams', ['ch', 'ch_mult', 'num_res_blocks', 'attn_resolutions', 'resolution', 'in_ch', 'out_ch'])


# ---------------------------------------------------------------------------------------------------------------------
# diffusers config <-> our hyper-parameters.

# UNet2DModel.__init__ defaults (diffusers 0.42.1): a key missing from an (older) config.json takes this value.
DIFFUSERS_DEFAULTS = {
  'sample_size': None, 'in_channels': 3, 'out_channels': 3, 'center_input_sample': False,
  'time_embedding_type': 'positional', 'time_embedding_dim': None, 'freq_shift': 0, 'flip_sin_to_cos': True,
  'down_block_types': ('DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D'),
  'mid_block_type': 'UNetMidBlock2D',
  'up_block_types': ('AttnUpBlock2D', 'AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'),
  'block_out_channels': (224, 448, 672, 896), 'layers_per_block': 2, 'mid_block_scale_factor': 1,
  'downsample_padding': 1, 'downsample_type': 'conv', 'upsample_type': 'conv', 'dropout': 0.0, 'act_fn': 'silu',
  'attention_head_dim': 8, 'norm_num_groups': 32, 'attn_norm_num_groups': None, 'norm_eps': 1e-5,
  'resnet_time_scale_shift': 'default', 'add_attention': True, 'class_embed_type': None, 'num_class_embeds': None,
  'num_train_timesteps': None,
}

# What the DDPM U-Net is, in diffusers' terms: (key, accepted values, why).
_DDPM_ARCH = [
  ('center_input_sample', (False,), 'inputs are already in [-1, 1]'),
  ('time_embedding_type', ('positional',), 'sinusoidal timestep embedding'),
  ('freq_shift', (1,), 'frequencies exp(-log(10000) i / (half - 1))'),
  ('flip_sin_to_cos', (False,), 'embedding is [sin, cos]'),
  ('mid_block_type', ('UNetMidBlock2D',), 'resnet-attention-resnet middle'),
  ('mid_block_scale_factor', (1,), 'unscaled residuals'),
  ('downsample_padding', (0,), 'stride-2 SAME convolution pads only bottom/right'),
  ('downsample_type', ('conv',), 'convolutional downsampling'),
  ('upsample_type', ('conv',), 'nearest x2 + convolution'),
  ('act_fn', ('silu', 'swish'), 'swish nonlinearity'),
  ('norm_num_groups', (32,), 'group norm with 32 groups'),
  ('attn_norm_num_groups', (None, 32), 'group norm with 32 groups'),
  ('norm_eps', (1e-6,), 'group norm epsilon 1e-6'),
  ('resnet_time_scale_shift', ('default',), 'timestep embedding added, not scale-shift'),
  ('add_attention', (True,), 'attention in the middle block'),
  ('class_embed_type', (None,), 'unconditional'),
  ('num_class_embeds', (None,), 'unconditional'),
]


def _cfg(config, key):
  return config[key] if key in config else DIFFUSERS_DEFAULTS[key]


def unet_hparams_from_diffusers_config(config):
  """diffusers UNet2DModel config (dict) -> UnetHParams, or CheckpointError if it is not the DDPM U-Net."""
  cls = config.get('_class_name')
  if cls != 'UNet2DModel':
    raise CheckpointError('config _class_name is {!r}; expected "UNet2DModel"'.format(cls))
  for key, accepted, why in _DDPM_ARCH:
    value = _cfg(config, key)
    if value not in accepted or isinstance(value, bool) != isinstance(accepted[0], bool):
      raise CheckpointError('config {} = {!r} is not the DDPM U-Net (expected {}: {})'.format(
        key, value, ' or '.join(repr(a) for a in accepted), why))
  chans = [int(c) for c in _cfg(config, 'block_out_channels')]
  ch = chans[0]
  if any(c % ch for c in chans):
    raise CheckpointError('config block_out_channels = {} is not ch * ch_mult (each a multiple of {})'.format(
      chans, ch))
  num_levels = len(chans)
  down, up = list(_cfg(config, 'down_block_types')), list(_cfg(config, 'up_block_types'))
  if len(down) != num_levels or len(up) != num_levels:
    raise CheckpointError('config has {} block_out_channels but {} down_block_types and {} up_block_types'.format(
      num_levels, len(down), len(up)))
  attn_levels = []
  for i, (d, u) in enumerate(zip(down, reversed(up))):
    if (d, u) == ('AttnDownBlock2D', 'AttnUpBlock2D'):
      attn_levels.append(i)
    elif (d, u) != ('DownBlock2D', 'UpBlock2D'):
      raise CheckpointError('config level {} has down block {!r} and up block {!r}; expected DownBlock2D/UpBlock2D '
                            'or AttnDownBlock2D/AttnUpBlock2D'.format(i, d, u))
  head_dim = _cfg(config, 'attention_head_dim')
  for c in [chans[i] for i in attn_levels] + [chans[-1]]:
    if head_dim is not None and head_dim != c:
      raise CheckpointError('config attention_head_dim = {!r} makes multi-head attention; the DDPM U-Net has one '
                            'head (expected null or {})'.format(head_dim, c))
  temb_dim = _cfg(config, 'time_embedding_dim')
  if temb_dim not in (None, 4 * ch):
    raise CheckpointError('config time_embedding_dim = {!r}; expected null or {}'.format(temb_dim, 4 * ch))
  size = _cfg(config, 'sample_size')
  if isinstance(size, (list, tuple)):
    if len(size) != 2 or size[0] != size[1]:
      raise CheckpointError('config sample_size = {!r}; expected a square size'.format(size))
    size = size[0]
  if not isinstance(size, int) or size % (2 ** (num_levels - 1)):
    raise CheckpointError('config sample_size = {!r}; expected an int divisible by {}'.format(
      size, 2 ** (num_levels - 1)))
  return UnetHParams(ch=ch, ch_mult=tuple(c // ch for c in chans), num_res_blocks=int(_cfg(config,
                     'layers_per_block')), attn_resolutions=tuple(size // 2 ** i for i in attn_levels),
                     resolution=size, in_ch=int(_cfg(config, 'in_channels')),
                     out_ch=int(_cfg(config, 'out_channels')))


def attn_levels(hp):
  """The levels i whose resolution (resolution / 2^i) is in attn_resolutions."""
  sizes = [hp.resolution // 2 ** i for i in range(len(hp.ch_mult))]
  if any(r not in sizes for r in hp.attn_resolutions):
    raise CheckpointError('attn_resolutions {} are not among the level resolutions {} of a {}px U-Net with '
                          'ch_mult {}'.format(list(hp.attn_resolutions), sizes, hp.resolution, list(hp.ch_mult)))
  return [i for i, r in enumerate(sizes) if r in hp.attn_resolutions]


def diffusers_config_from_unet_hparams(hp, *, dropout=0.0):
  """UnetHParams -> a complete diffusers UNet2DModel config dict for the DDPM U-Net."""
  levels = attn_levels(hp)
  down = ['AttnDownBlock2D' if i in levels else 'DownBlock2D' for i in range(len(hp.ch_mult))]
  up = ['AttnUpBlock2D' if i in levels else 'UpBlock2D' for i in reversed(range(len(hp.ch_mult)))]
  config = collections.OrderedDict([('_class_name', 'UNet2DModel'), ('_diffusers_version', DIFFUSERS_VERSION)])
  config.update(sorted(DIFFUSERS_DEFAULTS.items()))
  config.update({key: accepted[0] for key, accepted, _ in _DDPM_ARCH})
  config.update(
    sample_size=hp.resolution, in_channels=hp.in_ch, out_channels=hp.out_ch, attention_head_dim=None,
    block_out_channels=[hp.ch * m for m in hp.ch_mult], down_block_types=down, up_block_types=up,
    layers_per_block=hp.num_res_blocks, dropout=dropout)
  return config
