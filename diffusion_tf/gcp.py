"""The Cloud TPU VM's region, read from the GCE metadata server: the original scripts named their GCS bucket after it
(gs://PREFIX-REGION, runs/paths.py). Imports nothing of the package but its errors, so that utils.py keeps the
original's `get_gcp_region` without depending on the run-directory code.
"""

import urllib.error
import urllib.request

from .errors import PathError

METADATA_ZONE_URL = 'http://metadata.google.internal/computeMetadata/v1/instance/zone'


def zone_to_region(zone):
  """'projects/123/zones/us-central1-f' or 'us-central1-f' -> 'us-central1'."""
  zone = zone.strip().split('/')[-1]
  parts = zone.split('-')
  if len(parts) != 3:
    raise PathError('cannot read a region from the zone {!r}; expected e.g. us-central1-f'.format(zone))
  return '-'.join(parts[:2])


def get_gcp_region(timeout=2.0):
  """The region of this GCE VM, from the metadata server; raises PathError quickly when not on GCE."""
  request = urllib.request.Request(METADATA_ZONE_URL, headers={'Metadata-Flavor': 'Google'})
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      zone = response.read().decode('utf-8')
  except (urllib.error.URLError, OSError, ValueError) as e:  # no such host, refused, timeout
    raise PathError('could not read the region from the GCE metadata server ({}: {}); pass --region (e.g. '
                    '--region=us-central1) or run without --bucket_name_prefix to use local paths'.format(
                      type(e).__name__, e)) from None
  return zone_to_region(zone)
