"""The shared fixtures' own guard: conftest.tiny_run compares each shared run directory, at the end of the session,
with its listing after training. Here that listing is shown to change on each kind of write a test could make."""

import os
import time

import conftest


def test_run_listing_changes_on_a_new_file_a_rewrite_a_touch_and_a_deletion(tmp_path):
  run = tmp_path / 'run'
  (run / 'eval').mkdir(parents=True)
  (run / 'model.ckpt-1.index').write_bytes(b'abc')
  (run / 'eval' / 'metrics.json').write_text('{}')
  before = conftest._listing(str(run))
  assert sorted(before) == ['eval/metrics.json', 'model.ckpt-1.index']
  assert conftest._listing(str(run)) == before  # nothing written: unchanged

  (run / 'samples.npz').write_bytes(b'x')  # a new file (e.g. a sample dump's default out_dir)
  assert conftest._listing(str(run)) != before
  os.remove(str(run / 'samples.npz'))
  assert conftest._listing(str(run)) == before

  (run / 'eval' / 'metrics.json').write_text('{"a": 1}')  # a rewrite of another size
  assert conftest._listing(str(run)) != before
  (run / 'eval' / 'metrics.json').write_text('{}')
  ns = time.time_ns() + 10 ** 9
  os.utime(str(run / 'eval' / 'metrics.json'), ns=(ns, ns))  # the same size, written again later
  assert conftest._listing(str(run)) != before

  os.remove(str(run / 'model.ckpt-1.index'))  # a deletion
  assert 'model.ckpt-1.index' not in conftest._listing(str(run))
