"""LSUN's own release, LMDB databases (e.g. church_outdoor_train_lmdb/: data.mdb, lock.mdb) whose values are the
encoded images (WebP or JPEG) keyed by image id, written as the StyleGAN2-format TFRecords of data/lsun.py
(`convert_lmdb`; scripts/prepare_lsun.py --lmdb_dir).

The entries are read in key order (LMDB's own), as StyleGAN2's dataset_tool.py create_lsun reads them, each
centre-cropped and resized (data/images.py). The conversion is resumable: it writes parts of `part_size` images
(<out>.parts/part-00000.tfrecords, ..., each written under a .incomplete name and renamed when closed, then recorded
with the key it ended at in <out>.parts/state.json), and a rerun with the same settings continues after the last
recorded part. When all are written, the parts are joined into <out> (TFRecord files concatenate into one: each
record carries its own length and checksums) under a temporary name, renamed, and the parts are removed. Entries
that are not decodable images are skipped and their keys reported.
"""

import json
import os

import lmdb
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from ..errors import UsageError
from .images import DECODE_ERRORS, center_crop_resize, decode_rgb
from .lsun import serialize_example

STATE_FILE = 'state.json'
_MAX_LISTED = 20  # skipped keys named in the final line (all are counted and kept in the state)


def open_lmdb(lmdb_dir):
  """The read-only LMDB environment of lmdb_dir (a directory with data.mdb), with a clear error otherwise."""
  if not os.path.isfile(os.path.join(str(lmdb_dir), 'data.mdb')):
    raise UsageError('lmdb_dir={!r} has no data.mdb; expected an LSUN LMDB directory such as '
                     'church_outdoor_train_lmdb'.format(lmdb_dir))
  try:
    return lmdb.open(str(lmdb_dir), readonly=True, lock=False, readahead=False, max_readers=1, subdir=True)
  except lmdb.Error as e:
    raise UsageError('cannot open the LMDB database {}: {}'.format(lmdb_dir, e)) from e


def _read_state(parts_dir, settings):
  path = os.path.join(parts_dir, STATE_FILE)
  if not tf.io.gfile.exists(path):
    return dict(settings, parts=[])
  with tf.io.gfile.GFile(path) as f:
    state = json.load(f)
  differ = sorted(k for k in settings if state.get(k) != settings[k])
  if differ:
    raise UsageError('{} holds the parts of a conversion with other settings ({}); expected the same flags to '
                     'resume it, or remove {} to start again'.format(parts_dir, ', '.join(
                       '{}={!r}, not {!r}'.format(k, state.get(k), settings[k]) for k in differ), parts_dir))
  return state


def _write_state(parts_dir, state):
  path = os.path.join(parts_dir, STATE_FILE)
  with tf.io.gfile.GFile(path + '.incomplete', 'w') as f:
    json.dump(state, f, indent=1)
  tf.io.gfile.rename(path + '.incomplete', path, overwrite=True)


def _write_part(cursor, path, count, resolution, bar):
  """Write up to `count` entries from the cursor's position to the TFRecord file `path` (under a temporary name,
  renamed when closed). Returns (entries read, images written, skipped keys as hex, last key read, more left)."""
  read, written, skipped, last_key, more = 0, 0, [], None, True
  with tf.io.TFRecordWriter(path + '.incomplete') as writer:
    while read < count and more:
      last_key, value = bytes(cursor.key()), bytes(cursor.value())
      try:
        img = center_crop_resize(decode_rgb(value)[0], resolution)
      except DECODE_ERRORS:
        skipped.append(last_key.hex())
      else:
        writer.write(serialize_example(img.transpose(2, 0, 1)))  # HWC -> CHW
        written += 1
      read += 1
      bar.update(1)
      more = cursor.next()
  tf.io.gfile.rename(path + '.incomplete', path, overwrite=True)
  return read, written, skipped, last_key, more


def convert_lmdb(lmdb_dir, out_path, *, resolution, max_images=None, part_size=10000, printer=print):
  """Write the images of the LSUN LMDB at lmdb_dir as StyleGAN2-format TFRecords at out_path (see the module
  docstring); max_images: only the first max_images entries (in key order). Returns (images written, skipped keys)."""
  env = open_lmdb(lmdb_dir)
  try:
    total = env.stat()['entries']
    if not total:
      raise UsageError('the LMDB database {} holds no entries; expected LSUN images'.format(lmdb_dir))
    target = min(total, max_images or total)
    parts_dir = out_path + '.parts'
    tf.io.gfile.makedirs(parts_dir)
    settings = dict(lmdb_dir=os.path.abspath(str(lmdb_dir)), entries=total, resolution=resolution,
                    max_images=max_images, part_size=part_size)
    state = _read_state(parts_dir, settings)
    done = sum(p['read'] for p in state['parts'])
    if done:
      printer('resuming {}: {} of {} entries already written in {} part(s)'.format(
        out_path, done, target, len(state['parts'])))
    with env.begin() as txn, tqdm(total=target, initial=done, unit='img', desc='lmdb -> tfrecords') as bar:
      cursor = txn.cursor()
      if state['parts']:  # the entry after the last one of the recorded parts
        more = cursor.set_range(bytes.fromhex(state['parts'][-1]['last_key'])) and cursor.next()
      else:
        more = cursor.first()
      while done < target and more:
        name = 'part-{:05d}.tfrecords'.format(len(state['parts']))
        read, written, skipped, last_key, more = _write_part(
          cursor, os.path.join(parts_dir, name), min(part_size, target - done), resolution, bar)
        state['parts'].append(dict(file=name, read=read, written=written, skipped=skipped, last_key=last_key.hex()))
        _write_state(parts_dir, state)
        done += read
    tmp_path = out_path + '.incomplete'
    with tf.io.gfile.GFile(tmp_path, 'wb') as out:
      for part in state['parts']:
        with tf.io.gfile.GFile(os.path.join(parts_dir, part['file']), 'rb') as f:
          while True:
            chunk = f.read(64 << 20)
            if not chunk:
              break
            out.write(chunk)
    tf.io.gfile.rename(tmp_path, out_path, overwrite=True)
    tf.io.gfile.rmtree(parts_dir)
  finally:
    env.close()
  written = sum(p['written'] for p in state['parts'])
  skipped = [key for p in state['parts'] for key in p['skipped']]
  note = '' if not skipped else '; skipped {} entries that are not decodable images (keys, hex: {}{})'.format(
    len(skipped), ', '.join(skipped[:_MAX_LISTED]), ' ...' if len(skipped) > _MAX_LISTED else '')
  printer('wrote {} images of {}x{} from {} entries of {} to {}{}'.format(
    written, resolution, resolution, done, lmdb_dir, out_path, note))
  return written, skipped
