"""Input pipelines of the paper's datasets, and an offline stand-in: `get_dataset` and the original's names, from
the modules that do one job each (input_pipeline.py: the shared input fns; tfds_datasets.py: cifar10 and
celebahq256; lsun_tfrecords.py: LSUN; digits_data.py: the offline digits).

Every dataset is built by `get_dataset(name, ...)` and exposes the interface of the original release:

  ds = get_dataset('cifar10', tfds_data_dir='tensorflow_datasets')
  ds.num_classes                 # 1: all models here are unconditional
  ds.image_size, ds.image_shape  # 32, [32, 32, 3]
  ds.train_input_fn(params)           # infinite, shuffled (seeded)
  ds.train_one_pass_input_fn(params)  # the training set once, in order (bits/dim over the training set)
  ds.eval_input_fn(params)            # the test split once, in order; None if the dataset has no test split

Each input fn reads `params['batch_size']` (TPUEstimator passes the per-host batch size there) and returns a
tf.data.Dataset of {'image': int32 [B, H, W, 3] in {0..255}, 'label': int32 [B] (zeros)}, batched with
drop_remainder=True (static shapes, as TPUs need) and prefetched. The model scales images itself (x / 127.5 - 1).

Datasets:
  cifar10      tfds cifar10:3.0.0 (tfds 2.1, TF 1.15) or 3.0.2 (tfds 4.9, TF 2.15: the same images, in the same
               order), 50000 train / 10000 test, 32x32.
  celebahq256  tfds celeb_a_hq/256:2.0.0, 30000 train, no test split, 256x256. tfds cannot download it: put
               data256x256.tar (a tar of 256x256 PNGs, made with the progressive_growing_of_gans tools) at
               <tfds_data_dir>/downloads/manual/celeb_a_hq/data256x256.tar.
  lsun         StyleGAN2-format TFRecords (scripts/prepare_lsun.py, or StyleGAN2's dataset_tool.py create_lsun):
               one tf.train.Example per image with 'shape' int64 [3] = (C, H, W) and 'data' bytes = the raw CHW
               uint8 pixels. `tfr_file` is a path or glob (local or gs://), e.g. lsun/church/church-r08.tfrecords
               (r08: 2^8 = 256 pixels). No test split.
  folder       the images of a folder of one's own (data/folder.py): every png/jpg/webp file under `data_dir`,
               centre-cropped and resized to `resolution`; an `eval_fraction` of them (by a hash of their path)
               is the test split.
  digits       offline demo data: scikit-learn's 1,797 real 8x8 handwritten digits (shipped inside the package,
               no network), upsampled bilinearly to 32x32 grey RGB; train = the first 1,500 images, test = the
               other 297.

tfds datasets are never downloaded here: get_dataset uses a prepared dataset under tfds_data_dir, prepares it
offline if the source archive is already in tfds' download cache (see `tfds_source_path`, `place_tfds_download`),
and otherwise raises a ValueError that says what to do (e.g. run `download_and_prepare` once with network access).
"""
import functools


from .digits import (  # noqa: F401 (this module's names)
  DIGITS_NUM_TRAIN, DIGITS_RESOLUTION, DIGITS_RESOLUTIONS, DigitsDataset, load_digits_images, upsample_bilinear)
from .. import checks
from ..checks import check_choice
from ..errors import UsageError
from .folder import DEFAULT_EVAL_FRACTION, FOLDER_FLAGS, FolderDataset  # noqa: F401 (this module's names)
from .pipeline import (  # noqa: F401 (this module's names)
  _SHUFFLE_BUFFER_BYTES, ImageDataset, _batch_size, _shuffle_buffer_size, input_pipeline, pack)
from .lsun import LSUN_RESOLUTION, LsunDataset, check_lsun_tfrecords  # noqa: F401 (this module's names)
from .tfds import (  # noqa: F401 (this module's names)
  _TFDS_SPECS, SimpleDataset, TfdsDataset, _tfds_info_file_contents, download_and_prepare, ensure_tfds_prepared,
  place_tfds_download, tfds_prepared_dir, tfds_source_path)

_ImageDataset = ImageDataset
DATASET_NAMES = ('cifar10', 'celebahq256', 'lsun', 'digits', 'folder')
# Each dataset's standard image size (lsun: the paper's 256; its TFRecords may hold another; folder: none, its
# resolution is always given).
IMAGE_SIZES = {'cifar10': _TFDS_SPECS['cifar10'].image_size, 'celebahq256': _TFDS_SPECS['celebahq256'].image_size,
               'lsun': LSUN_RESOLUTION, 'digits': DIGITS_RESOLUTION}

# The original's table of dataset constructors.
DATASETS = {
  'cifar10': functools.partial(SimpleDataset, name='cifar10'),
  'celebahq256': functools.partial(SimpleDataset, name='celebahq256'),
  'lsun': LsunDataset,
}


def get_dataset(name, *, tfds_data_dir=None, tfr_file=None, seed=547, resolution=None, data_dir=None,
                eval_fraction=DEFAULT_EVAL_FRACTION):
  """The dataset `name` (one of DATASET_NAMES); see the module docstring for the interface.

  Args:
    name: 'cifar10', 'celebahq256', 'lsun', 'digits' or 'folder'.
    tfds_data_dir: tfds data dir for cifar10/celebahq256 (None: ~/tensorflow_datasets); ignored otherwise.
    tfr_file: path or glob of the LSUN TFRecords; required for (and only accepted by) 'lsun'.
    seed: seed of the training shuffle (None: not seeded).
    resolution: expected image size; None accepts the dataset's own (lsun: whatever the TFRecords hold; digits: 32).
      Must equal it for cifar10 (32) and celebahq256 (256); digits accepts 8, 16, 32 or 64; folder needs it.
    data_dir, eval_fraction: the folder of images and the fraction held out for evaluation; only for 'folder'.
  Raises:
    ValueError: unknown name, missing or unprepared data, images of the wrong size.
  """
  if name not in DATASET_NAMES:
    raise ValueError('unknown dataset name {!r}; expected one of {}'.format(name, ', '.join(DATASET_NAMES)))
  if tfr_file is not None and name != 'lsun':
    raise ValueError('tfr_file={!r} given for dataset {!r}; expected tfr_file only with name=\'lsun\''.format(
      tfr_file, name))
  if data_dir is not None and name != 'folder':
    raise ValueError('data_dir={!r} given for dataset {!r}; expected data_dir only with name=\'folder\''.format(
      data_dir, name))
  if name == 'folder':
    return FolderDataset(data_dir, resolution=resolution, eval_fraction=eval_fraction, seed=seed)
  checks.check_int('resolution', resolution, allow_none=True)
  if name in _TFDS_SPECS:
    size = _TFDS_SPECS[name].image_size
    if resolution not in (None, size):
      raise ValueError('{} images are {}x{}; got resolution={!r}'.format(name, size, size, resolution))
    return TfdsDataset(name, tfds_data_dir=tfds_data_dir, seed=seed)
  if name == 'lsun':
    return LsunDataset(tfr_file, resolution=resolution, seed=seed)
  return DigitsDataset(resolution=resolution or DIGITS_RESOLUTION, seed=seed)


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
  if kwargs.get('dataset') == 'folder':
    raise UsageError('dataset folder has no standard image size; expected --resolution (e.g. 64)')
  return IMAGE_SIZES[check_choice('dataset', kwargs.get('dataset'), sorted(IMAGE_SIZES))]


def folder_args(kwargs, data_dir=None):
  """get_dataset's folder arguments of a run trained on a folder of images (kwargs: its kwargs.json): {'data_dir',
  'eval_fraction'}, data_dir replaced by the one given (the images moved); {} for the other datasets."""
  if kwargs.get('dataset') != 'folder':
    if data_dir is not None:
      raise UsageError('--data_dir={} applies to runs on dataset folder; this run trained on {}'.format(
        data_dir, kwargs.get('dataset')))
    return {}
  args = {k: kwargs.get(k, default) for k, default in FOLDER_FLAGS.items()}
  if data_dir is not None:
    args['data_dir'] = data_dir
  return args
