"""Where a converted checkpoint's weights came from, and whether its EMA slots hold real EMA weights.

The paper's numbers need the EMA weights (released CIFAR-10 checkpoint: FID about 3.2 with them, about 12 with the
live weights). The diffusers hub repositories `google/ddpm-<name>` hold the live (non-EMA) weights and
`google/ddpm-ema-<name>` the EMA ones; a diffusers directory holds one set only, so the converter copies it into
both the live and the EMA slots. `provenance.json`, written beside the converted checkpoint, says which it was:

  {"source": "...", "source_weights": "ema" | "non-ema" | "unknown", "known_from": "...", "ema_slots": "..."}

Public API (plain Python, no TensorFlow):
  source_weights_from_name(name) -> ('ema' | 'non-ema' | 'unknown', how it is known)
  make_provenance(source, source_weights=None) -> dict
  read_provenance(checkpoint_prefix) -> dict or None
  ema_warning(checkpoint_prefix, record=None) -> one line, or None when the EMA slots are not known copies of live
    weights
  weights_label(ema, record) -> what the weights a command used are: 'EMA weights', 'non-EMA weights', ...
"""

import json
import os
import re

PROVENANCE_FILE = 'provenance.json'
SOURCE_WEIGHTS = ('ema', 'non-ema', 'unknown')
# What the non-EMA weights cost on the paper's benchmark (independent reproductions of the released CIFAR-10
# checkpoint, 50,000 samples, FID against the training set).
NON_EMA_COST = 'CIFAR-10 FID about 12 instead of about 3.2 with EMA weights'


def source_weights_from_name(name):
  """Whether a hub repository (or a clone's folder) named `name` holds EMA weights, from its name alone.

  `ddpm-ema-*` -> 'ema'; `google/ddpm-*` (the non-EMA counterparts) -> 'non-ema'; anything else -> 'unknown'.
  :return: (source_weights, how it is known).
  """
  text = str(name).rstrip('/').replace('\\', '/')
  base = text.split('/')[-1] if not text.endswith('/unet') else text.split('/')[-2]
  if re.match(r'^ddpm-ema-', base):
    return 'ema', 'repository name {!r} (ddpm-ema-*)'.format(base)
  if re.match(r'^ddpm-', base) and (text.startswith('google/') or '/google/' in text or
                                    re.match(r'^ddpm-(cifar10-32|celebahq-256|church-256|bedroom-256|cat-256)$',
                                             base)):
    return 'non-ema', 'repository name {!r} (google/ddpm-* hold the live weights; google/ddpm-ema-* the EMA)'.format(
      base)
  return 'unknown', 'name {!r} does not say'.format(base)


def make_provenance(source, source_weights=None, repo_id=None):
  """The provenance record of weights converted from `source` (a path); `source_weights` given by the user
  ('ema', 'non-ema' or 'unknown') wins over what the name `repo_id` (default: source's folder) says."""
  if source_weights is not None:
    if source_weights not in SOURCE_WEIGHTS:
      raise ValueError('source_weights={!r}; expected one of {}'.format(source_weights, ', '.join(SOURCE_WEIGHTS)))
    known_from = 'given by the user (--source_weights)'
  else:
    source_weights, known_from = source_weights_from_name(repo_id or source)
  slots = {'ema': 'EMA weights (the live slots hold the same EMA weights)',
           'non-ema': 'copies of the live (non-EMA) weights',
           'unknown': 'copies of the source weights, EMA or not unknown'}[source_weights]
  return {'source': str(source), 'repo_id': repo_id, 'source_weights': source_weights, 'known_from': known_from,
          'ema_slots': slots}


def read_provenance(checkpoint):
  """provenance.json beside a checkpoint prefix (or in a checkpoint directory), or None if there is none."""
  if checkpoint is None:
    return None
  directory = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
  path = os.path.join(directory, PROVENANCE_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    try:
      record = json.load(f)
    except ValueError:
      return None
  return record if isinstance(record, dict) else None


def weights_label(ema, record):
  """What the weights read with `ema` (the EMA slots) or without are, given a converted checkpoint's provenance
  `record` (None: not converted, the slots hold what their names say)."""
  if not ema:
    return 'non-EMA weights'
  source_weights = (record or {}).get('source_weights', 'ema')
  return {'ema': 'EMA weights',
          'non-ema': 'non-EMA weights (EMA slots copied from live weights)',
          'unknown': 'EMA slots of unknown origin (converted; EMA or not unknown)'}.get(source_weights, 'EMA weights')


def ema_warning(checkpoint, record=None):
  """One line when sampling or evaluating the 'EMA' weights of `checkpoint` means using copies of live weights;
  `record`: its provenance as recorded earlier (default: read provenance.json beside it)."""
  record = read_provenance(checkpoint) if record is None else record
  if not record or record.get('source_weights') != 'non-ema':
    return None
  return ('warning: the EMA weights of {} are copies of non-EMA weights (source {}, {}); expect non-EMA sample '
          'quality ({}); see docs/pretrained.md for the EMA weights'.format(
            checkpoint, record.get('repo_id') or record.get('source'), record.get('known_from'), NON_EMA_COST))
