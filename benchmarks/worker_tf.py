"""Ours: diffusion_tf's U-Net, training step and samplers in a TF 1.15 graph, run by the same work as
worker_torch.py. Started by bench.py under the Python of the TF venv being measured (the project's .venv with the
stock tensorflow wheel, benchmarks/.venv-mkl with intel-tensorflow, or .venv-tf2 with TF 2.15 and oneDNN);
speaks the line protocol of common.py.

Session options (the case's "tf" dict): intra / inter op threads, XLA auto-clustering ("xla": true), and "variant":
names of U-Net formulations from variants.py to swap in (benchmark-only experiments; the default is the library's
model as it is).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def session_config(threads, opts, device='cpu'):
  import tensorflow.compat.v1 as tf
  config = tf.ConfigProto(intra_op_parallelism_threads=opts.get('intra', threads),
                          inter_op_parallelism_threads=opts.get('inter', 1))
  if device == 'cpu':
    config.device_count['GPU'] = 0
  else:
    config.gpu_options.allow_growth = True
  if opts.get('xla'):
    config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
  return config


def _build_note(version):
  """' (MKL)' for intel-tensorflow 1.x, ' (oneDNN)' for a TF 2 wheel running with TF_ENABLE_ONEDNN_OPTS=1."""
  if version.startswith('1.'):
    from tensorflow.python import pywrap_tensorflow
    return ' (MKL)' if pywrap_tensorflow.IsMklEnabled() else ''
  from tensorflow.python.util import _pywrap_util_port
  onednn = _pywrap_util_port.IsMklEnabled() or os.environ.get('TF_ENABLE_ONEDNN_OPTS') == '1'
  return ' (oneDNN)' if onednn else ''


def setup(case):
  import numpy as np
  import tensorflow.compat.v1 as tf
  tf.disable_v2_behavior()
  tf.logging.set_verbosity(tf.logging.ERROR)
  from diffusion_tf import diffusion_utils_2, precision, utils
  from diffusion_tf.models import unet

  opts = dict(case.get('tf') or {})
  variants = opts.get('variant') or []
  if variants:
    import variants as variants_mod
    variants_mod.apply(unet, variants)

  threads = case['threads']
  kind, model_name, batch = case['kind'], case['model'], case['batch']
  cfg = dict(common.MODELS[model_name])
  res = cfg.pop('resolution')
  dropout = case.get('dropout', 0.) if kind == 'train' else 0.
  dtype = precision.compute_dtype(case.get('precision', 'float32'))  # the U-Net's --precision

  tf.reset_default_graph()
  tf.set_random_seed(0)
  rng = np.random.RandomState(0)

  def denoise_fn(x, t):
    return unet.model(x, t=t, y=None, name='model', num_classes=1, out_ch=3, dropout=dropout, dtype=dtype, **cfg)

  diffusion = diffusion_utils_2.GaussianDiffusion2(
    betas=diffusion_utils_2.get_beta_schedule('linear', beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=1000),
    model_mean_type='eps', model_var_type='fixedlarge', loss_type='mse')
  x_np = rng.randn(batch, res, res, 3).astype(np.float32)
  info = {}

  if kind == 'forward':
    x = tf.placeholder(tf.float32, [batch, res, res, 3])
    t = tf.placeholder(tf.int32, [batch])
    fetch = denoise_fn(x, t)
    feed = {x: x_np, t: rng.randint(0, 1000, size=batch).astype(np.int32)}
  elif kind == 'train':
    x = tf.placeholder(tf.float32, [batch, res, res, 3])
    t = tf.random_uniform([batch], 0, 1000, dtype=tf.int32)
    loss = tf.reduce_mean(diffusion.training_losses(denoise_fn, x, t))
    global_step = tf.train.get_or_create_global_step()
    fetch, _ = utils.make_optimizer(loss=loss, trainable_variables=tf.trainable_variables(), global_step=global_step,
                                    tpu=False, optimizer='adam', lr=2e-4, grad_clip=1.0)
    feed = {x: np.clip(x_np, -1., 1.)}
  elif kind == 'sample':
    sampler, steps = case['sampler'], case['num_inference_steps']
    fetch = diffusion.sample_loop(denoise_fn, shape=[batch, res, res, 3], sampler=sampler,
                                  num_inference_steps=steps)
    feed = {}
    info['model_evals'] = {'pndm': steps + 9, 'heun': 2 * steps - 1}.get(sampler, steps)
  else:
    raise ValueError('unknown kind {!r}'.format(kind))

  n_params = sum(int(np.prod(v.shape.as_list())) for v in tf.trainable_variables())
  device = case.get('device', 'cpu')
  peak_gpu_bytes = None
  if device == 'gpu':
    if not tf.test.is_gpu_available():
      raise RuntimeError('--device gpu, but this TensorFlow sees no GPU (a CPU-only wheel, or no CUDA 10.0 / cuDNN 7)')
    from tensorflow.contrib.memory_stats import MaxBytesInUse  # benchmark-only; tf.contrib is fine outside the core
    with tf.device('/gpu:0'):
      peak_gpu_bytes = MaxBytesInUse()
  sess = tf.Session(config=session_config(threads, opts, device))
  sess.run(tf.global_variables_initializer())
  if peak_gpu_bytes is not None:
    info['peak_gpu_mb'] = lambda: round(sess.run(peak_gpu_bytes) / 2. ** 20, 1)
    info['gpu'] = tf.test.gpu_device_name()
  info.update(framework='tensorflow {}{}'.format(tf.__version__, _build_note(tf.__version__)), precision=dtype.name,
              threads=opts.get('intra', threads), interop_threads=opts.get('inter', 1), params=n_params,
              xla=bool(opts.get('xla')), variant=variants,
              env={k: v for k, v in os.environ.items()
                   if k.startswith(('OMP_', 'KMP_', 'MKL_', 'TF_XLA', 'TF_ENABLE', 'TF_DISABLE'))})

  def run_once():
    sess.run(fetch, feed_dict=feed)

  common.warm_up(run_once, case['warmup'], info)
  return run_once, info


if __name__ == '__main__':
  common.serve(setup)
