"""The type the U-Net computes in (`--precision`): float32, bfloat16 or float16, with float32 weights.

Variables are always float32: the checkpoints, the optimizer's slots and the EMA shadows do not depend on the
precision. Each layer of nn.py reads its float32 variables cast to the type of its input (cast_like), so the U-Net
computes in the type its input is cast to at its entry (models/unet.py), and its output is cast back to float32.
What needs the range or the resolution of float32 is computed in float32 whatever the precision (in_float32):
the group-norm statistics (a mean of squares over H*W*C/G values), the attention softmax (an exponential), the
sinusoidal timestep embedding and its MLP (t up to T - 1 = 999 times frequencies, resolved to 1/128 at best in
bfloat16), the loss and the diffusion coefficients (outside the U-Net). The gradient of a cast is the cast back, so
the weights' gradients are float32.

With float32 every function here returns its input and adds no op: the graph is the one of a run without the flag.
"""

import tensorflow.compat.v1 as tf

from .checks import PRECISIONS

DTYPES = {'float32': tf.float32, 'bfloat16': tf.bfloat16, 'float16': tf.float16}
assert tuple(DTYPES) == PRECISIONS


def compute_dtype(precision):
  """The tf.DType of a --precision name."""
  if precision not in DTYPES:
    raise ValueError('precision={!r}; expected one of {}'.format(precision, ', '.join(DTYPES)))
  return DTYPES[precision]


def cast(x, dtype):
  """x in `dtype`; x itself (no op) when it already is."""
  return x if x.dtype.base_dtype == dtype else tf.cast(x, dtype)


def cast_like(variable, x):
  """A (float32) variable read in the type of the layer's input x."""
  return cast(variable, x.dtype.base_dtype)


def in_float32(fn, x):
  """fn(x) computed in float32 and returned in x's type: fn(x) itself for a float32 x."""
  if x.dtype.base_dtype == tf.float32:
    return fn(x)
  return cast(fn(tf.cast(x, tf.float32)), x.dtype.base_dtype)
