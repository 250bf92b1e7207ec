"""Every script and tool sets TensorFlow's C++ log level before anything imports TensorFlow (TF 2.15 prints its
oneDNN notice on stderr when it loads on AMX / AVX-512-VNNI CPUs, so a script that imports it first prints that
line). Each script runs `--help` in a process of its own with TF_CPP_MIN_LOG_LEVEL unset, under an import hook that
reports the variable's value at the moment `tensorflow` is first imported; this CPU may print nothing either way."""

import glob
import os
import subprocess
import sys

import pytest

from support.scripts import REPO

pytestmark = pytest.mark.slow  # a process (and a TensorFlow import) per script

SCRIPTS = sorted(glob.glob(os.path.join(REPO, 'scripts', '*.py')) + glob.glob(os.path.join(REPO, 'tools', '*.py')))
MARK = 'TF_CPP_MIN_LOG_LEVEL when tensorflow was imported: '
DRIVER = '''
import os, runpy, sys
class _Watch:
  def find_spec(self, name, path=None, target=None):
    if name == 'tensorflow':
      sys.stderr.write({mark!r} + repr(os.environ.get('TF_CPP_MIN_LOG_LEVEL')) + '\\n')
      sys.meta_path.remove(self)
    return None
sys.meta_path.insert(0, _Watch())
sys.argv = [sys.argv[1], '--help']
runpy.run_path(sys.argv[0], run_name='__main__')
'''.format(mark=MARK)


def test_every_script_and_tool_is_checked():
  names = {os.path.relpath(p, REPO) for p in SCRIPTS}
  assert {'scripts/run_cifar.py', 'scripts/prepare_lsun.py', 'scripts/convert_diffusers_checkpoint.py',
          'tools/make_flag_table.py'} <= names


@pytest.mark.parametrize('script', SCRIPTS, ids=[os.path.relpath(p, REPO) for p in SCRIPTS])
def test_tensorflow_loads_with_its_logs_quieted(script, tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  env['PYTHONPATH'] = os.pathsep.join([REPO, os.path.join(REPO, 'tests')])
  proc = subprocess.run([sys.executable, '-c', DRIVER, script], cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
  seen = [line[len(MARK):] for line in proc.stderr.splitlines() if line.startswith(MARK)]
  assert seen in ([], ["'2'"]), proc.stderr  # [] : --help answered before anything imported TensorFlow
  assert not [line for line in proc.stderr.splitlines() if 'oneDNN custom operations' in line], proc.stderr
