"""The U-Net's configurations by name: the keyword arguments of `unet.model` that fix its architecture.

The paper's CIFAR-10 and 256x256 models (Ho et al. 2020, appendix B) and small ones for the offline demo and the
tests; the scripts' models pick theirs. Plain Python (no TensorFlow import), so that the benchmarks' PyTorch worker
builds the same architectures from this one table.
"""

CONFIGS = {
  'unet2d16b2': dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,)),  # 35.7M params
  'unet2d16b2c112244': dict(ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,)),  # 114M
  'demo': dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,)),
  'tiny': dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,)),
}
