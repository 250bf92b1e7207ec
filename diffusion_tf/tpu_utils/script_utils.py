"""What the three scripts (scripts/run_cifar.py, run_celebahq.py, run_lsun.py) share: flag validation, the
command-line runner (one `error:` line and a non-zero exit on bad input), and the `sample` subcommand.
"""

import errno
import functools
import inspect
import json
import os
import sys

import numpy as np

from .. import provenance
from . import sample_shards
from .paths import PathError

IMAGE_SIZES = {'cifar10': 32, 'celebahq256': 256, 'lsun': 256, 'digits': 32}
SAMPLERS = ('ddpm', 'ddim', 'pndm')
OUTPUT_TYPES = ('png', 'npz')


def _usage_error(message):
  from .tpu_utils import UsageError
  return UsageError(message)


# ---------------------------------------------------------------------------------------------------------------
# Flag validation (pure Python: runs before TensorFlow builds anything)

def check_choice(name, value, choices):
  if value not in choices:
    raise _usage_error('{}={!r} is not supported; expected one of {}'.format(name, value, ', '.join(map(str, choices))))
  return value


def check_int(name, value, *, minimum=1, allow_none=False):
  if value is None and allow_none:
    return value
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
    raise _usage_error('{}={!r}; expected an integer >= {}'.format(name, value, minimum))
  return int(value)


def check_number(name, value, *, low=None, high=None, low_inclusive=True, high_inclusive=True):
  if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool) or not np.isfinite(value):
    raise _usage_error('{}={!r}; expected a number'.format(name, value))
  bad_low = low is not None and (value < low if low_inclusive else value <= low)
  bad_high = high is not None and (value > high if high_inclusive else value >= high)
  if bad_low or bad_high:
    raise _usage_error('{}={!r}; expected a number in {}{}, {}{}'.format(
      name, value, '[' if low_inclusive else '(', '-inf' if low is None else low,
      'inf' if high is None else high, ']' if high_inclusive else ')'))
  return value


def check_bool(name, value):
  if value in (0, 1, True, False) and not isinstance(value, float):
    return bool(value)
  raise _usage_error('{}={!r}; expected 0/1 or True/False'.format(name, value))


def check_str(name, value, allow_none=False):
  if value is None and allow_none:
    return value
  if isinstance(value, (int, float)) and not isinstance(value, bool):  # fire turns --exp_name=1 into an int
    value = str(value)
  if not isinstance(value, str) or not value:
    raise _usage_error('{}={!r}; expected a non-empty string'.format(name, value))
  return value


def check_beta_schedule(kwargs):
  from ..diffusion_utils_2 import BETA_SCHEDULES
  check_choice('beta_schedule', kwargs['beta_schedule'], BETA_SCHEDULES)
  check_int('num_diffusion_timesteps', kwargs['num_diffusion_timesteps'], minimum=1)
  check_number('beta_start', kwargs['beta_start'], low=0., high=1., low_inclusive=False)
  check_number('beta_end', kwargs['beta_end'], low=0., high=1., low_inclusive=False)
  # const and jsd ignore beta_start; the other schedules run from beta_start up to beta_end
  if kwargs['beta_schedule'] not in ('const', 'jsd') and kwargs['beta_start'] > kwargs['beta_end']:
    raise _usage_error('beta_start={!r} is larger than beta_end={!r}; expected beta_start <= beta_end (the {} '
                       'schedule increases from beta_start to beta_end)'.format(
                         kwargs['beta_start'], kwargs['beta_end'], kwargs['beta_schedule']))


def check_model_config(model_name, configs, image_size, *, block_size=1):
  """The U-Net of `model_name` must fit images of image_size (after space_to_depth by block_size)."""
  config = configs[check_choice('model_name', model_name, sorted(configs))]
  if image_size % block_size:
    raise _usage_error('image size {} is not divisible by block_size={}'.format(image_size, block_size))
  size = image_size // block_size
  factor = 2 ** (len(config['ch_mult']) - 1)
  if size % factor:
    raise _usage_error('images of size {} (after block_size={}: {}) do not fit model {!r}: its {} resolution levels '
                       'need a size divisible by {}'.format(image_size, block_size, size, model_name,
                                                            len(config['ch_mult']), factor))
  return config


def default_kwargs(fn):
  """{name: default} of the keyword arguments of fn (a script's `train`)."""
  return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}


class DatasetInfo:
  """What a model needs to know about its data without reading it (sampling from a checkpoint)."""

  def __init__(self, image_size, num_classes=1):
    self.image_size = int(image_size)
    self.num_classes = num_classes

  @property
  def image_shape(self):
    return [self.image_size, self.image_size, 3]


def image_size_of(kwargs):
  """The training image size recorded in kwargs.json, else the dataset's standard size."""
  if kwargs.get('image_size'):
    return int(kwargs['image_size'])
  if kwargs.get('resolution'):
    return int(kwargs['resolution'])
  return IMAGE_SIZES[check_choice('dataset', kwargs.get('dataset'), sorted(IMAGE_SIZES))]


# ---------------------------------------------------------------------------------------------------------------
# Running a fire CLI

def _expected_errors():
  from .tpu_utils import UsageError, NonFiniteLossError, TrainingStopped, ClusterError
  from .. import utils
  errors = [UsageError, PathError, NonFiniteLossError, TrainingStopped, ClusterError, utils.WriteError,
            sample_shards.ShardError]
  try:
    from ..inception import InceptionGraphError
    errors.append(InceptionGraphError)
  except ImportError:
    pass
  try:
    from ..checkpoints import CheckpointError
    errors.append(CheckpointError)
  except ImportError:
    pass
  return tuple(errors)


def run_cli(commands, argv=None, name=None):
  """fire.Fire(commands) with bad input reported as one `error: ...` line on stderr and exit status 1.

  Expected errors are our own error types, ValueErrors (the dataset code reports missing or malformed data
  with them) and OSErrors of a write without space or rights (a full disk, a read-only file system); set
  DIFFUSION_TF_DEBUG=1 for the full traceback.
  """
  import fire
  if hasattr(sys.stdout, 'reconfigure'):  # progress lines reach a log file (a job scheduler's) as they are printed
    sys.stdout.reconfigure(line_buffering=True)
  try:
    fire.Fire(commands, command=argv, name=name)
  except _expected_errors() + (ValueError,) as e:
    if os.environ.get('DIFFUSION_TF_DEBUG'):
      raise
    message = str(e).strip().splitlines()
    print('error: {}'.format(message[0] if message else type(e).__name__), file=sys.stderr)
    sys.exit(getattr(e, 'exit_code', 1))  # TrainingStopped: 128 + the signal, as a shell reports a signal's end
  except OSError as e:
    if os.environ.get('DIFFUSION_TF_DEBUG') or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
      raise
    print('error: cannot write {}: {}'.format(e.filename, e.strerror), file=sys.stderr)
    sys.exit(1)


def quiet_tensorflow():
  """Keep TensorFlow's C++ and Python logs to warnings and errors; our progress lines go to stdout."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow.compat.v1 as tf
  tf.logging.set_verbosity(tf.logging.ERROR)
  try:
    import warnings
    warnings.filterwarnings('ignore', category=FutureWarning)
    warnings.filterwarnings('ignore', category=DeprecationWarning)
  except Exception:  # pragma: no cover
    pass


# ---------------------------------------------------------------------------------------------------------------
# Images

def to_uint8(x):
  """Samples in [-1, 1] -> uint8 pixels: round((x + 1) * 127.5), clipped to {0..255}."""
  return np.clip(np.round((np.asarray(x, np.float64) + 1.) * 127.5), 0, 255).astype(np.uint8)


def save_npz_atomic(path, **arrays):
  """np.savez to a temporary name in the same directory, then rename (never a half-written file)."""
  import io
  from .. import utils
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  utils.atomic_write_bytes(path, buf.getvalue())


def write_json_atomic(path, obj):
  from .. import utils
  utils.atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + '\n').encode('utf-8'))


# ---------------------------------------------------------------------------------------------------------------
# Seeded noise: same seed (and batch size) -> same images, even when a dump is resumed

class SeededNoise:
  """A `noise_fn` for the samplers whose k-th draw in batch b is stateless_normal(seed=(seed, b * 2^20 + k)).

  Every batch restarts the count (`reset`), so batch b gets the same noise whether or not the batches before it ran
  in this process. Draws happen in a fixed order: each sampling step's noise feeds the next step.
  """

  def __init__(self, replica=0):
    import tensorflow.compat.v1 as tf
    self._seed = tf.placeholder_with_default(tf.constant(0, tf.int64), [], name='noise_seed')
    self._batch = tf.placeholder_with_default(tf.constant(0, tf.int64), [], name='noise_batch')
    self._counter = tf.Variable(0, dtype=tf.int64, trainable=False, use_resource=True, name='noise_counter',
                                collections=[tf.GraphKeys.LOCAL_VARIABLES])
    self._replica = replica
    self.reset_op = self._counter.assign(0)

  def __call__(self, shape, dtype):
    import tensorflow.compat.v1 as tf
    k = self._counter.assign_add(1)
    stream = (self._batch * 64 + self._replica) * (1 << 20) + k
    return tf.random.stateless_normal(shape=shape, seed=tf.stack([self._seed, stream]), dtype=dtype)

  def feed(self, seed, batch):
    return {self._seed: seed, self._batch: batch}


def build_seeded_samples(dist, batch_size, image_shape, sample_fn):
  """Replicate `sample_fn(dummy_noise, y, noise_fn) -> dict` over `dist` for `batch_size` images of `image_shape`,
  each replica with its own SeededNoise (on a TPU plain tf.random_normal: the counter variable stays off the TPU
  program). Returns (outputs, noises); run a batch with `run_seeded`."""
  import tensorflow.compat.v1 as tf
  noises = []

  def _fn(dummy_noise):
    if dist.kind == 'tpu':
      noise_fn = tf.random_normal
    else:
      noise_fn = SeededNoise(replica=len(noises))
      noises.append(noise_fn)
    return sample_fn(dummy_noise, tf.zeros([dummy_noise.shape[0]], dtype=tf.int32), noise_fn)

  dummy = tf.zeros([batch_size] + list(image_shape), tf.float32)
  return dist.replicate(_fn, [dummy]), noises


def run_seeded(sess, outputs, noises, seed, batch):
  """sess.run(outputs) for batch number `batch` of a seeded sampling run (the noise counters restart at 0)."""
  feed = {}
  for noise in noises:
    feed.update(noise.feed(seed, batch))
  if noises:
    sess.run([noise.reset_op for noise in noises])
  return sess.run(outputs, feed)


# ---------------------------------------------------------------------------------------------------------------
# The `sample` subcommand

class _Script:
  """What `sample` needs from a script: its train() (for defaults and accepted keys), how to build its Model from
  kwargs, and how to validate kwargs."""

  def __init__(self, *, name, train_fn, load_model, validate_kwargs):
    self.name, self.train_fn, self.load_model, self.validate_kwargs = name, train_fn, load_model, validate_kwargs


def _find_kwargs(model_dir, ckpt):
  from . import tpu_utils
  import tensorflow.compat.v1 as tf
  for d in [model_dir, os.path.dirname(ckpt)]:
    if d and tf.io.gfile.exists(os.path.join(d, tpu_utils.KWARGS_FILE)):
      return tpu_utils.load_train_kwargs(d), os.path.join(d, tpu_utils.KWARGS_FILE)
  return None, None


def make_sample_command(script):
  """The `sample` subcommand of a script (see its docstring)."""

  def sample(model_dir=None, checkpoint=None, out_dir=None, num_samples=64, batch_size=64, sampler='ddpm',
             num_inference_steps=None, eta=0., use_clipped_model_output=False, skip_prk_steps=False, seed=0,
             output_type='npz', ema=True, progressive=False, bucket_name_prefix=None, region=None, num_gpus=None,
             skip_type='uniform', shard=None, **overrides):
    """Draw samples from a checkpoint (EMA weights by default) and write a PNG grid plus the images.

    Outputs in --out_dir (default <model_dir>/samples/<checkpoint>_<sampler>..._seed<seed>_n<num_samples>):
      grid.png (up to 100 samples), samples.npz (arr_0: uint8 [N, H, W, 3]) or images/000000.png ...
      (--output_type=png), info.json (the settings, checkpoint and step). With --progressive: progressive.png
      (one row per sample: the x_0 predictions along the chain, then the sample) and progressive.npz.
    Batches are written as they finish; an interrupted run continues where it stopped. Nothing is overwritten.

    Args:
      model_dir: a training run's directory (kwargs.json + checkpoints); or give --checkpoint.
      checkpoint: a checkpoint prefix (model.ckpt-N) or directory; default: the latest in model_dir. Released or
        converted checkpoints without kwargs.json use this script's train() defaults, changeable with flags such as
        --model_name, --dataset, --num_diffusion_timesteps.
      sampler: ddpm (the original ancestral sampler over all T steps; respaced to --num_inference_steps if given),
        ddim or pndm (default 50 steps, or T if smaller).
      num_inference_steps: number of network calls (1..T).
      eta: DDIM noise (0: deterministic; 1 with all steps: ancestral).
      use_clipped_model_output: DDIM: recompute eps from the clipped x_0 prediction.
      skip_prk_steps: PNDM: skip the Runge-Kutta warm-up (pure PLMS).
      skip_type: ddpm (respaced) / ddim: which timesteps the steps visit: uniform (every T/S) or quad (quadratic
        spacing, denser near t = 0, as in the DDIM paper's CIFAR-10 table).
      seed: same seed and batch size give the same images.
      output_type: npz (one uint8 .npz) or png (one PNG per sample).
      ema: use the EMA weights (--noema: the raw weights).
      progressive: write the x_0-prediction sequence of one batch instead (original ancestral sampler).
      shard: i/n draws only shard i of n of the dump (its batches b with b % n == i; default out_dir name ends in
        _shard<i>of<n>); merge the n shard directories with scripts/merge_samples.py into the very samples.npz that
        one run without --shard gives. Needs --output_type=npz.
    """
    from . import tpu_utils
    from .paths import Paths
    # -- flags
    check_int('num_samples', num_samples)
    check_int('batch_size', batch_size)
    check_choice('sampler', sampler, SAMPLERS)
    check_int('num_inference_steps', num_inference_steps, allow_none=True)
    check_number('eta', eta, low=0.)
    use_clipped_model_output = check_bool('use_clipped_model_output', use_clipped_model_output)
    skip_prk_steps = check_bool('skip_prk_steps', skip_prk_steps)
    check_int('seed', seed, minimum=0)
    check_choice('output_type', output_type, OUTPUT_TYPES)
    from .. import samplers
    check_choice('skip_type', skip_type, samplers.SKIP_TYPES)
    ema, progressive = check_bool('ema', ema), check_bool('progressive', progressive)
    shard = sample_shards.parse_shard(shard)
    if shard and (progressive or output_type != 'npz'):
      raise _usage_error('--shard={}/{} with {}; expected --output_type=npz and no --progressive (shards are merged as '
                         '.npz)'.format(shard[0], shard[1], '--progressive' if progressive else '--output_type=png'))
    train_defaults = default_kwargs(script.train_fn)
    unknown = sorted(set(overrides) - set(train_defaults))
    if unknown:
      raise _usage_error('unknown flag(s) for sample: {}; expected sample flags or training kwargs such as '
                         '--model_name, --dataset'.format(', '.join('--' + k for k in unknown)))
    for flag, value, set_, owner in [('eta', eta, eta != 0, 'ddim'),
                                     ('use_clipped_model_output', use_clipped_model_output, use_clipped_model_output,
                                      'ddim'),
                                     ('skip_prk_steps', skip_prk_steps, skip_prk_steps, 'pndm')]:
      if set_ and sampler != owner:
        raise _usage_error('--{}={} does not apply to --sampler={}; expected it only with sampler {}'.format(
          flag, value, sampler, owner))
    if progressive and (sampler != 'ddpm' or num_inference_steps is not None or skip_type != 'uniform'):
      raise _usage_error('--progressive uses the original ancestral sampler; drop --sampler/--num_inference_steps/'
                         '--skip_type')
    if model_dir is None and checkpoint is None:
      raise _usage_error('give --model_dir (a training run) or --checkpoint (a checkpoint prefix or directory)')
    paths = Paths(bucket_name_prefix, region)
    model_dir, checkpoint, out_dir = paths.resolve(model_dir), paths.resolve(checkpoint), paths.resolve(out_dir)

    import tensorflow.compat.v1 as tf
    if model_dir is not None and not tf.io.gfile.isdir(model_dir):
      raise _usage_error('model_dir={!r} does not exist; expected a training run directory'.format(model_dir))
    ckpt = tpu_utils.resolve_checkpoint(checkpoint or model_dir)
    kwargs, kwargs_path = _find_kwargs(model_dir, ckpt)
    if kwargs is None:
      kwargs = dict(train_defaults)
      print('no kwargs.json next to {}: using {} train() defaults'.format(ckpt, script.name))
    kwargs = dict(kwargs, **overrides)
    script.validate_kwargs(kwargs)
    T = int(kwargs['num_diffusion_timesteps'])
    if num_inference_steps is not None and num_inference_steps > T:
      raise _usage_error('num_inference_steps={} exceeds the model\'s num_diffusion_timesteps={}'.format(
        num_inference_steps, T))
    resolved_steps = samplers.resolve_sampler_options(  # raises ValueError on a bad combination
      T, sampler=sampler, num_inference_steps=num_inference_steps, eta=eta,
      use_clipped_model_output=use_clipped_model_output, skip_prk_steps=skip_prk_steps, skip_type=skip_type)
    if sampler != 'ddpm':
      num_inference_steps = resolved_steps
    ds_info = DatasetInfo(image_size_of(kwargs))
    step = tpu_utils.checkpoint_step(ckpt)

    steps_tag = '' if num_inference_steps is None else str(num_inference_steps)
    eta_tag = '_eta{:g}'.format(eta) if sampler == 'ddim' else ''
    eta_tag += '_clipped' if use_clipped_model_output else ''
    eta_tag += '_noprk' if skip_prk_steps else ''
    eta_tag += '_' + skip_type if skip_type != 'uniform' else ''
    if out_dir is None:
      base = model_dir or os.path.dirname(ckpt)
      out_dir = os.path.join(base, 'samples', '{}_{}{}{}_{}_seed{}_n{}{}{}'.format(
        os.path.basename(ckpt), sampler, steps_tag, eta_tag, 'ema' if ema else 'noema', seed, num_samples,
        '_progressive' if progressive else '', '_shard{}of{}'.format(*shard) if shard else ''))
    settings = dict(checkpoint=ckpt, step=step, kwargs_json=kwargs_path, ema=ema, sampler=sampler,
                    num_inference_steps=num_inference_steps, eta=eta,
                    use_clipped_model_output=use_clipped_model_output, skip_prk_steps=skip_prk_steps,
                    skip_type=skip_type, seed=seed, batch_size=batch_size,
                    num_samples=num_samples, progressive=progressive, overrides=overrides,
                    dataset=kwargs.get('dataset'), image_size=ds_info.image_size,
                    provenance=provenance.read_provenance(ckpt))
    final_files = (['progressive.png', 'progressive.npz'] if progressive else
                   ['grid.png', 'samples.npz' if output_type == 'npz' else 'images'])
    final_files.append('info.json')
    existing = [f for f in final_files if tf.io.gfile.exists(os.path.join(out_dir, f))]
    if existing:
      raise _usage_error('{} already holds {}; sample dumps never overwrite: choose another --out_dir or move the '
                         'old files away'.format(out_dir, ', '.join(existing)))
    from .paths import check_writable_dir
    check_writable_dir(out_dir, 'out_dir')
    dist = tpu_utils.choose_distribution(num_gpus=num_gpus)
    batch_size = min(batch_size, num_samples) if progressive else batch_size
    dist.check_batch_size(batch_size, 'batch_size')
    if shard and shard[1] > -(-num_samples // batch_size):
      raise _usage_error('--shard={}/{}: {} samples in batches of {} are only {} batch(es); expected at most that many '
                         'shards'.format(shard[0], shard[1], num_samples, batch_size, -(-num_samples // batch_size)))
    if shard:  # what the shards of one dump must share (sample_shards.RUN_KEYS)
      settings.update(shard=list(shard), num_replicas=dist.num_replicas, model_kwargs=kwargs,
                      checkpoint_sha256=sample_shards.checkpoint_sha256(ckpt))

    print('sampling {} images from {} (step {}, {} weights) with {}{} -> {}'.format(
      batch_size if progressive else num_samples, ckpt, step, 'EMA' if ema else 'raw', sampler,
      '' if num_inference_steps is None else ' ({} steps)'.format(num_inference_steps), out_dir))
    if progressive:
      _progressive(script, kwargs, ds_info, ckpt, ema, batch_size, seed, out_dir, settings, dist)
    else:
      _dump_samples(script, kwargs, ds_info, ckpt, ema, num_samples, batch_size, seed, out_dir, settings, dist,
                    output_type=output_type, sampler=sampler, num_inference_steps=num_inference_steps, eta=eta,
                    use_clipped_model_output=use_clipped_model_output, skip_prk_steps=skip_prk_steps,
                    skip_type=skip_type, shard=shard)

  sample.__doc__ = sample.__doc__.replace('this script', script.name)
  return sample


def _open_session(dist, ckpt, ema):
  import tensorflow.compat.v1 as tf
  from . import tpu_utils
  sess = dist.session()
  sess.run(tf.local_variables_initializer())
  tpu_utils.restore_weights(sess, ckpt, ema=ema)
  return sess


def _dump_samples(script, kwargs, ds_info, ckpt, ema, num_samples, batch_size, seed, out_dir, settings, dist, *,
                  output_type, sampler, num_inference_steps, eta, use_clipped_model_output, skip_prk_steps,
                  skip_type='uniform', shard=None):
  import tensorflow.compat.v1 as tf
  from tqdm import tqdm
  from .. import utils

  shard_dir = os.path.join(out_dir, '.shards')
  tf.io.gfile.makedirs(shard_dir)
  config_path = os.path.join(shard_dir, 'config.json')
  shard_settings = {k: v for k, v in settings.items() if k != 'kwargs_json'}
  shard_settings['kwargs'] = kwargs
  if tf.io.gfile.exists(config_path):
    with tf.io.gfile.GFile(config_path) as f:
      old = json.load(f)
    if old != json.loads(json.dumps(shard_settings)):
      raise _usage_error('{} holds partial results of a different sampling run; use another --out_dir or remove '
                         'that directory'.format(shard_dir))
  else:
    write_json_atomic(config_path, shard_settings)

  batches = sample_shards.shard_batches(-(-num_samples // batch_size), shard)
  num_batches = len(batches)
  shard_path = lambda b: os.path.join(shard_dir, 'batch_{:06d}.npz'.format(b))
  todo = [b for b in batches if not tf.io.gfile.exists(shard_path(b))]
  if len(todo) < num_batches:
    print('resuming: {} of {} batches already done in {}'.format(num_batches - len(todo), num_batches, shard_dir))

  if todo:
    use_original = sampler == 'ddpm' and num_inference_steps is None and skip_type == 'uniform'
    with tf.Graph().as_default():
      model = script.load_model(kwargs, ds_info)
      if use_original:
        sample_fn = lambda dummy, y, noise_fn: model.samples_fn(dummy, y, noise_fn=noise_fn)
      else:
        sample_fn = lambda dummy, y, noise_fn: model.sampler_samples_fn(
          dummy, y, noise_fn=noise_fn, sampler=sampler, num_inference_steps=num_inference_steps, eta=eta,
          use_clipped_model_output=use_clipped_model_output, skip_prk_steps=skip_prk_steps, skip_type=skip_type)
      outputs, noises = build_seeded_samples(dist, batch_size, ds_info.image_shape, sample_fn)
      with _open_session(dist, ckpt, ema) as sess:
        for b in tqdm(todo, desc='batches', unit='batch', file=sys.stdout, dynamic_ncols=True):
          images = to_uint8(run_seeded(sess, outputs['samples'], noises, seed, b))
          save_npz_atomic(shard_path(b), arr_0=images)

  # assemble
  images = []
  for b in batches:
    with tf.io.gfile.GFile(shard_path(b), 'rb') as f:
      images.append(np.load(f)['arr_0'])
  sample_index = sample_shards.sample_indices(batches, batch_size, num_samples)
  images = np.concatenate(images)[:len(sample_index)]
  assert images.shape == (len(sample_index), *ds_info.image_shape) and images.dtype == np.uint8, images.shape
  if shard:
    save_npz_atomic(os.path.join(out_dir, 'samples.npz'), arr_0=images, sample_index=sample_index)
  elif output_type == 'npz':
    save_npz_atomic(os.path.join(out_dir, 'samples.npz'), arr_0=images)
  else:
    img_dir = os.path.join(out_dir, 'images')
    tmp_dir = img_dir + '.partial'
    tf.io.gfile.makedirs(tmp_dir)
    for i, img in enumerate(images):
      path = os.path.join(tmp_dir, '{:06d}.png'.format(i))
      if not tf.io.gfile.exists(path):
        utils.write_png(path, img)
    tf.io.gfile.rename(tmp_dir, img_dir)
  utils.save_tiled_imgs(os.path.join(out_dir, 'grid.png'), images[:100])
  write_json_atomic(os.path.join(out_dir, 'info.json'), settings)
  tf.io.gfile.rmtree(shard_dir)
  print('wrote {} samples{}: {} and {}'.format(
    len(images), ' (shard {}/{} of {})'.format(shard[0], shard[1], num_samples) if shard else '',
    os.path.join(out_dir, 'grid.png'),
    os.path.join(out_dir, 'samples.npz' if output_type == 'npz' else 'images/')))


def _progressive(script, kwargs, ds_info, ckpt, ema, batch_size, seed, out_dir, settings, dist):
  import tensorflow.compat.v1 as tf
  from .. import utils
  with tf.Graph().as_default():
    model = script.load_model(kwargs, ds_info)
    outputs, noises = build_seeded_samples(
      dist, batch_size, ds_info.image_shape,
      lambda dummy, y, noise_fn: model.progressive_samples_fn(dummy, y, noise_fn=noise_fn))
    with _open_session(dist, ckpt, ema) as sess:
      out = run_seeded(sess, outputs, noises, seed, 0)
  # slot k of progressive_samples is the x_0 prediction at t = k * freq: reverse it to follow the chain from noise
  seq = np.concatenate([out['progressive_samples'][:, ::-1], out['samples'][:, None]], axis=1)  # [B, K + 1, H, W, C]
  seq = to_uint8(seq)
  B, K1 = seq.shape[:2]
  save_npz_atomic(os.path.join(out_dir, 'progressive.npz'), arr_0=seq)
  utils.save_tiled_imgs(os.path.join(out_dir, 'progressive.png'), seq.reshape(B * K1, *seq.shape[2:]), num_col=K1)
  write_json_atomic(os.path.join(out_dir, 'info.json'), settings)
  print('wrote {} progressive sequences of {} images: {}'.format(B, K1, os.path.join(out_dir, 'progressive.png')))


def subcommands(**commands):
  """The fire command table, each command wrapped so that it returns nothing (fire would print a return value)."""
  def _wrap(fn):
    @functools.wraps(fn)
    def _command(*args, **kwargs):
      fn(*args, **kwargs)
    return _command
  return {name: _wrap(fn) for name, fn in commands.items()}


# ---------------------------------------------------------------------------------------------------------------
# `train` and `evaluation`: what the three scripts share once their own flags are checked and their data is found

OPTIMIZERS = ('adam', 'rmsprop')


def check_train_flags(kwargs):
  """The optimizer and run-control flags of every script's train()."""
  from .tpu_utils import UsageError
  check_str('exp_name', kwargs['exp_name'])
  check_choice('optimizer', kwargs['optimizer'], OPTIMIZERS)
  check_int('total_bs', kwargs['total_bs'])
  check_number('grad_clip', kwargs['grad_clip'], low=0., low_inclusive=False)
  check_number('lr', kwargs['lr'], low=0., low_inclusive=False)
  check_int('warmup', kwargs['warmup'], minimum=0)
  check_number('ema_decay', kwargs['ema_decay'], low=0., high=1., high_inclusive=False)
  for name in ['keep_checkpoint_max', 'iterations_per_loop', 'log_every_steps', 'save_summary_steps',
               'worker_timeout_secs']:
    check_int(name, kwargs[name])
  for name in ['max_steps', 'save_checkpoints_steps', 'save_checkpoints_secs', 'max_train_secs']:
    check_int(name, kwargs[name], allow_none=True)
  if kwargs['save_checkpoints_steps'] is not None and kwargs['save_checkpoints_secs'] is not None:
    raise UsageError('give --save_checkpoints_steps or --save_checkpoints_secs, not both')
  if kwargs['max_steps'] is not None and kwargs['warmup'] > kwargs['max_steps']:
    raise UsageError('warmup={} is longer than max_steps={}; expected warmup <= max_steps (the learning rate '
                     'would never reach --lr)'.format(kwargs['warmup'], kwargs['max_steps']))
  check_int('seed', kwargs['seed'], minimum=0, allow_none=True)


def train_from_kwargs(kwargs, *, ds, paths, exp_name, model_constructor, warm_start_from=None):
  """tpu_utils.run_training with a script's checked train() kwargs; `exp_name` is the run's full name, to which a
  non-default EMA decay and image size are appended. kwargs (with the image size) become the run's kwargs.json."""
  from . import tpu_utils
  if kwargs.get('bucket_name_prefix') is not None and kwargs.get('tpu_name') is None:
    print('--bucket_name_prefix without --tpu_name: training on this machine\'s devices with paths in {} (the '
          'original required a TPU)'.format(paths.bucket))
  kwargs['image_size'] = ds.image_size
  if kwargs['ema_decay'] != 0.9999:
    exp_name += '_ema{}'.format(kwargs['ema_decay'])
  if kwargs.get('resolution') is not None:
    exp_name += '_res{}'.format(kwargs['resolution'])
  return tpu_utils.run_training(
    date_str=kwargs['date_str'],
    exp_name=exp_name,
    model_dir=paths.resolve(kwargs['model_dir']),
    model_constructor=model_constructor,
    optimizer=kwargs['optimizer'],
    total_bs=kwargs['total_bs'],
    lr=kwargs['lr'],
    warmup=kwargs['warmup'],
    grad_clip=kwargs['grad_clip'],
    ema_decay=kwargs['ema_decay'],
    train_input_fn=ds.train_input_fn,
    tpu=kwargs['tpu_name'],
    log_dir=paths.resolve(kwargs['log_dir']),
    dump_kwargs=kwargs,
    iterations_per_loop=kwargs['iterations_per_loop'],
    keep_checkpoint_max=kwargs['keep_checkpoint_max'],
    max_steps=kwargs['max_steps'] or int(1e10),
    save_checkpoints_steps=kwargs['save_checkpoints_steps'],
    save_checkpoints_secs=kwargs['save_checkpoints_secs'],
    save_summary_steps=kwargs['save_summary_steps'],
    log_every_steps=kwargs['log_every_steps'],
    num_gpus=kwargs['num_gpus'],
    num_cpu_replicas=kwargs['num_cpu_replicas'],
    seed=kwargs['seed'],
    max_train_secs=kwargs['max_train_secs'],
    worker_timeout_secs=kwargs['worker_timeout_secs'],
    warm_start_from=warm_start_from)


def evaluate_run(*, model_dir, model_constructor, ds, paths, tpu_name, once, dump_samples_only, total_bs, load_ckpt,
                 num_inception_samples, inception_graph, stats_dir, non_ema_pass, num_gpus, poll_secs, timeout_secs,
                 seed, stats_name=None, samples_dir=None, full_reference_sets=False, limit_dataset_size=0):
  """A script's `evaluation` once its model_dir, dataset and statistics directory are known: tpu_utils.EvalWorker.

  load_ckpt is relative to model_dir as in the original (model.ckpt-N), or a prefix or directory; samples_dir
  receives --dump_samples_only's .npz; full_reference_sets: reference statistics of every image of the splits
  instead of the original's drop-remainder batches (and limit_dataset_size).
  """
  from . import tpu_utils
  check_bool('full_reference_sets', full_reference_sets)
  if load_ckpt is not None:
    load_ckpt = tpu_utils.resolve_load_ckpt(model_dir, load_ckpt, paths.resolve)
  worker = tpu_utils.EvalWorker(
    tpu_name=tpu_name,
    model_constructor=model_constructor,
    total_bs=total_bs,
    num_inception_samples=num_inception_samples,
    inception_bs=total_bs,
    dataset=ds,
    limit_dataset_size=limit_dataset_size,
    inception_graph=inception_graph,
    stats_dir=stats_dir,
    stats_name=stats_name,
    num_gpus=num_gpus,
    reference='full' if full_reference_sets else 'original')
  worker.run(logdir=model_dir, once=once, skip_non_ema_pass=not non_ema_pass, dump_samples_only=dump_samples_only,
             load_ckpt=load_ckpt, samples_dir=paths.resolve(samples_dir), poll_secs=poll_secs,
             timeout_secs=timeout_secs, seed=seed)
