"""Where a run's files live: the original's GCS bucket layout `gs://PREFIX-REGION/<path>`, or plain paths.

The original scripts put everything (datasets, logs) in a bucket named after a prefix and the region of the Cloud TPU
VM, reading the region from the GCE metadata server. Here:
  - with `bucket_name_prefix`, relative paths go under `gs://{prefix}-{region}/`; the region is `region` if given,
    else asked from the metadata server (short timeout, clear error when not on GCE);
  - without it, paths are used as given (local directories, or gs:// URLs).
Absolute paths and URLs (gs://...) are never rewritten.
"""

import os
import re

from ..errors import PathError
from ..gcp import METADATA_ZONE_URL, get_gcp_region, zone_to_region  # noqa: F401 (the bucket's region)

_BUCKET_PREFIX_RE = re.compile(r'^[a-z0-9][a-z0-9._-]*$')
_REGION_RE = re.compile(r'^[a-z]+-[a-z]+[0-9]+$')


def bucket_url(bucket_name_prefix, region=None, *, metadata_timeout=2.0):
  """'gs://{prefix}-{region}', the bucket of the original layout."""
  if not isinstance(bucket_name_prefix, str) or not _BUCKET_PREFIX_RE.match(bucket_name_prefix):
    raise PathError('bucket_name_prefix={!r}; expected a GCS bucket name prefix (lowercase letters, digits, '
                    '".", "_", "-")'.format(bucket_name_prefix))
  if region is None:
    region = get_gcp_region(timeout=metadata_timeout)
  if not isinstance(region, str) or not _REGION_RE.match(region):
    raise PathError('region={!r}; expected a GCP region such as us-central1 or europe-west4'.format(region))
  return 'gs://{}-{}'.format(bucket_name_prefix, region)


def is_url(path):
  return isinstance(path, str) and re.match(r'^[a-z][a-z0-9+.-]*://', path) is not None


def under_bucket(path, bucket):
  """`path` placed in `bucket` (None: unchanged). Absolute paths and URLs are kept as they are."""
  if path is None or bucket is None or is_url(path) or os.path.isabs(path):
    return path
  return '{}/{}'.format(bucket.rstrip('/'), path[2:] if path.startswith('./') else path)


class Paths:
  """Resolves a script's path flags once: `Paths(bucket_name_prefix, region).resolve(path)`.

  The region (and so the metadata server) is only looked up when a bucket is given and a path needs it.
  """

  def __init__(self, bucket_name_prefix=None, region=None):
    if bucket_name_prefix is None and region is not None:
      raise PathError('region={!r} given without --bucket_name_prefix; the region only names the bucket '
                      'gs://PREFIX-REGION'.format(region))
    self.bucket_name_prefix = bucket_name_prefix
    self.region = region
    self._bucket = None
    if bucket_name_prefix is not None and region is not None:
      self._bucket = bucket_url(bucket_name_prefix, region)  # validate now

  @property
  def bucket(self):
    if self.bucket_name_prefix is None:
      return None
    if self._bucket is None:
      self._bucket = bucket_url(self.bucket_name_prefix, self.region)
    return self._bucket

  def resolve(self, path):
    if path is None or self.bucket_name_prefix is None or is_url(path) or os.path.isabs(path):
      return path
    return under_bucket(path, self.bucket)


def refuse_overwrite(out_dir, files, command):
  """PathError if out_dir already holds any of `files` (names relative to it): a command's outputs are written once
  and never replaced; `command` names the command in the message."""
  import tensorflow.compat.v1 as tf  # only when used: this module is also imported by light-weight code
  existing = [f for f in files if tf.io.gfile.exists(os.path.join(out_dir, f))]
  if existing:
    raise PathError('{} already holds {}: outputs are never overwritten ({} never overwrites); choose another '
                    '--out_dir or move the old files away'.format(out_dir, ', '.join(existing), command))


def check_writable_dir(path, what):
  """Create directory `path` if needed and prove it writable by writing and deleting a probe file."""
  import tensorflow.compat.v1 as tf  # only when used: this module is also imported by light-weight code
  try:
    tf.io.gfile.makedirs(path)
    probe = os.path.join(path, '.write_probe_{}'.format(os.getpid()))
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('ok')
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    message = getattr(e, 'message', None) or str(e)
    raise PathError('{}={!r} is not a writable directory ({}); expected a directory you can write to'.format(
      what, path, message.splitlines()[0] if message else type(e).__name__)) from None
