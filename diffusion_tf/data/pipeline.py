"""What every dataset's input fns share (see datasets.py for the interface): the element format, the batch size and
the index of the input pipeline an input fn builds, and ImageDataset, the base class that turns a dataset's uint8
images into shuffled, batched, prefetched input."""

import tensorflow.compat.v1 as tf

from .. import checks


# Bytes of decoded uint8 images the training shuffle buffer may hold (StyleGAN's TFRecord reader allowed 4 GiB). The
# original shuffled 50,000 images after repeat(), 9.8 GB for CelebA-HQ at 256x256 (docs/fidelity.md).
_SHUFFLE_BUFFER_BYTES = 2 << 30


def pack(image, label):
  """The element format of every input fn: {'image': int32, 'label': int32}."""
  return {'image': tf.cast(image, tf.int32), 'label': tf.cast(label, tf.int32)}


def _shuffle_buffer_size(image_size, num_examples):
  """Whole dataset if it fits in _SHUFFLE_BUFFER_BYTES (CIFAR-10: all 50000), else as many images as fit."""
  fit = max(1, _SHUFFLE_BUFFER_BYTES // (image_size * image_size * 3))
  return int(min(fit, num_examples)) if num_examples else int(fit)


def _batch_size(params):
  batch_size = params.get('batch_size') if isinstance(params, dict) else None
  if not checks.is_int(batch_size) or batch_size < 1:
    raise ValueError('params[\'batch_size\']={!r}; expected a positive int'.format(batch_size))
  return int(batch_size)


def input_pipeline(params):
  """(index, count) of the input pipeline an input fn is building, from `params['context']`: a TPUEstimator
  TPUContext (with per-host input, PER_HOST_V2: one pipeline per host of the TPU system), a tf.distribute
  InputContext (one pipeline per worker of a multi-worker cluster), or None (the one pipeline: (0, 1))."""
  context = params.get('context') if isinstance(params, dict) else None
  if context is None:
    return 0, 1
  if hasattr(context, 'num_input_pipelines'):  # tf.distribute.InputContext
    index, count = context.input_pipeline_id, context.num_input_pipelines
  else:  # TPUContext: (host device, invocation index, number of invocations, replicas fed by this one)
    _, index, count, _ = context.current_input_fn_deployment()
  if not 0 <= index < count:
    raise ValueError('input pipeline {} of {}; expected an index in 0..{}'.format(index, count, count - 1))
  return int(index), int(count)


class ImageDataset:
  """Shared input fns. Subclasses provide `_train_images(shuffle, seed)` and `_eval_images()`: datasets of uint8
  [H, W, 3] images, unbatched (`seed` seeds any file-order shuffle)."""

  num_classes = 1  # unconditional

  def __init__(self, *, name, image_size, seed, num_train_examples, num_eval_examples):
    self.name = name
    self.image_size = image_size
    self.seed = seed
    self.num_train_examples = num_train_examples  # None if unknown (LSUN: not counted)
    self.num_eval_examples = num_eval_examples  # None if there is no test split
    self.shuffle_buffer_size = _shuffle_buffer_size(image_size, num_train_examples)

  @property
  def image_shape(self):
    return [self.image_size, self.image_size, 3]

  def _train_images(self, shuffle, seed=None):
    raise NotImplementedError

  def _eval_images(self):
    raise NotImplementedError

  def _train_shard(self, count, index, seed=None):
    """Training images index, index + count, ... of the fixed file order (a subclass may read only those)."""
    del seed  # the shard is shuffled by train_input_fn's buffer
    return self._train_images(shuffle=False).shard(count, index)

  def _proc_and_batch(self, ds, batch_size):
    """uint8 [H, W, 3] images -> batches of pack(image=int32 [B, H, W, 3], label=zeros [B])."""
    def _process(img):
      img.set_shape(self.image_shape)
      return pack(image=img, label=tf.constant(0, dtype=tf.int32))
    ds = ds.map(_process, num_parallel_calls=tf.data.experimental.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.experimental.AUTOTUNE)

  def train_input_fn(self, params):
    """Infinite shuffled training batches (reshuffled every epoch; seeded by `seed` and the input pipeline's index).

    When several input pipelines feed one training run (the hosts of a TPU pod slice, the workers of a cluster; see
    `input_pipeline`), pipeline i of n reads the images i, i + n, i + 2n, ... of the training set in its fixed file
    order, so that the pipelines together read each image once per epoch.
    """
    batch_size = _batch_size(params)
    index, count = input_pipeline(params)
    seed = None if self.seed is None else self.seed + 1000003 * index
    if count == 1:
      ds = self._train_images(shuffle=True, seed=seed)
      buffer_size = self.shuffle_buffer_size
    else:
      ds = self._train_shard(count, index, seed)
      buffer_size = self.shuffle_buffer_size // count if self.num_train_examples else self.shuffle_buffer_size
    ds = ds.shuffle(max(buffer_size, 1), seed=seed, reshuffle_each_iteration=True).repeat()
    return self._proc_and_batch(ds, batch_size)

  def train_one_pass_input_fn(self, params):
    """The training set once, in a fixed order (the last incomplete batch is dropped)."""
    return self._proc_and_batch(self._train_images(shuffle=False), _batch_size(params))

  # The training images whose Inception statistics the evaluation compares samples with, and their name in the
  # statistics cache: as the original, the one-pass training set.
  reference_split_name = 'train'

  def reference_input_fn(self, params):
    return self.train_one_pass_input_fn(params)

  def eval_input_fn(self, params):
    """The test split once, in a fixed order; None if the dataset has no test split."""
    batch_size = _batch_size(params)
    ds = self._eval_images()
    return None if ds is None else self._proc_and_batch(ds, batch_size)
