"""The U-Net's configurations by name: the keyword arguments of `unet.model` that fix its architecture.

The paper's CIFAR-10 and 256x256 models (Ho et al. 2020, appendix B), models for 64x64 and 128x128 images between
them, and small ones for the offline demo and the tests; the scripts' models pick theirs, and a training run on a
folder of images (data/folder.py) takes BY_RESOLUTION's unless --model_name says otherwise.

The 64 and 128 models keep the paper's width (ch=128), two residual blocks per level and attention at 16x16, and
take their channel multipliers from the DDPM follow-ups: (1, 2, 3, 4) at 64x64 (Nichol & Dhariwal 2021, improved
diffusion, script_util.py) and (1, 1, 2, 3, 4) at 128x128 (Dhariwal & Nichol 2021, guided diffusion): their lowest
level is 8x8, as that of the paper's 256x256 model. Plain Python (no TensorFlow import), so that the benchmarks'
PyTorch worker builds the same architectures from this one table.
"""

CONFIGS = {
  'unet2d16b2': dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,)),  # 35.7M params
  'unet2d16b2c112244': dict(ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,)),  # 114M
  'unet2d16b2c1234': dict(ch=128, ch_mult=(1, 2, 3, 4), num_res_blocks=2, attn_resolutions=(16,)),  # 64x64, 83.0M
  'unet2d16b2c11234': dict(ch=128, ch_mult=(1, 1, 2, 3, 4), num_res_blocks=2, attn_resolutions=(16,)),  # 128px, 85.6M
  'demo': dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,)),
  'tiny': dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,)),
}

# The model of each image size a training run on a folder of images picks by default.
BY_RESOLUTION = {32: 'unet2d16b2', 64: 'unet2d16b2c1234', 128: 'unet2d16b2c11234', 256: 'unet2d16b2c112244'}
