"""The original release's `diffusion_tf.tpu_utils.datasets`, kept as its face: its names, from diffusion_tf/data/
(catalog.py: get_dataset and the table of datasets; pipeline.py: the input fns; tfds.py: cifar10 and celebahq256;
lsun.py: LSUN TFRecords). New code imports from there.
"""

from ..data.catalog import DATASET_NAMES, DATASETS, get_dataset  # noqa: F401
from ..data.lsun import LsunDataset  # noqa: F401
from ..data.pipeline import pack  # noqa: F401
from ..data.tfds import SimpleDataset  # noqa: F401
