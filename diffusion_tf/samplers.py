"""Fast samplers over the coefficient tables of diffusion_core.GaussianDiffusionBase (filled in by the samplers work)."""


class SamplerMixin:
  pass
