"""Set-up shared by every test module, done before any of them runs TensorFlow."""

from diffusion_tf import compat

# The multi-replica tests run a MirroredStrategy on 2 CPU devices inside this process. On TF 2.15 they must be
# configured before TensorFlow's runtime starts, which the first test to run an op would do.
compat.ensure_cpu_devices(2)
