"""Set-up shared by every test module, done before any of them runs TensorFlow, and the fixtures they share.

tiny_run                a session-wide factory of tiny training runs: tiny_run(script='run_cifar', **flags) ->
                        model_dir, trained once per distinct (script, flags) (TINY_RUN_DEFAULTS below, updated with
                        flags). The directory is READ-ONLY for tests: a test whose commands write into a run
                        directory (an evaluation, simple_eval, a command with its default out_dir, a corruption)
                        works on helpers_scripts.copy_run(model_dir, dest). At the end of the session every run
                        directory is compared with its state after training, and a change is an error.
checkpoint_network      a factory of helpers_network.CheckpointNetwork (eps_theta(x, t) of a checkpoint's raw or EMA
                        weights as a numpy function), closed at the end of the module.
no_network              socket connections and DNS lookups fail; returns the recorded attempts.
private_inception_cache no network, an empty private download cache ($DIFFUSION_TF_INCEPTION_CACHE) and no
                        $DIFFUSION_TF_INCEPTION_GRAPH: an Inception graph or statistics a command finds must come from
                        its flags. offline_module is the same for a whole module (for module-scoped fixtures).
"""

import hashlib
import os

import pytest

from support import scripts as helpers_scripts
from support.data import block_network
from support.network import CheckpointNetwork

from diffusion_tf import compat, inception

# The multi-replica tests run a MirroredStrategy on 2 CPU devices inside this process. On TF 2.15 they must be
# configured before TensorFlow's runtime starts, which the first test to run an op would do.
compat.ensure_cpu_devices(2)

# The one standard tiny run: the 2-level 'tiny' U-Net on the embedded digits at 8x8, T = 10, 4 images a step, the
# full lr from the first step (warmup 0), no dropout or flips (deterministic given the seed), 3 steps, a checkpoint
# after every step (steps 0..3) and all of them kept. A module that needs other values passes them as flags; every
# distinct set of flags is a run of its own (~25 s on TF 1.15, ~60 s on TF 2.15), so prefer the defaults.
TINY_RUN_DEFAULTS = dict(
  exp_name='tiny', dataset='digits', resolution=8, model_name='tiny', num_diffusion_timesteps=10, total_bs=4,
  warmup=0, dropout=0., randflip=0, seed=0, max_steps=3, save_checkpoints_steps=1, keep_checkpoint_max=100)


def _listing(model_dir):
  """{relative path: (size, mtime_ns)} of every file under model_dir."""
  out = {}
  for root, _, files in os.walk(model_dir):
    for name in files:
      path = os.path.join(root, name)
      st = os.stat(path)
      out[os.path.relpath(path, model_dir)] = (st.st_size, st.st_mtime_ns)
  return out


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
  """tiny_run(script='run_cifar', **flags) -> the model_dir of `scripts/<script>.py train` with TINY_RUN_DEFAULTS
  updated with flags, trained on first use and shared by every later call with the same script and flags (in this
  process). Read-only: see helpers_scripts.copy_run."""
  runs = {}

  def make(script='run_cifar', **flags):
    full = dict(TINY_RUN_DEFAULTS, **flags)
    key = (script,) + tuple(sorted((k, repr(v)) for k, v in full.items()))
    if key not in runs:
      name = '{}_{}'.format(script, hashlib.sha1(repr(key).encode()).hexdigest()[:10])
      model_dir = str(tmp_path_factory.mktemp(name) / 'run')
      helpers_scripts.load_script(script).train(model_dir=model_dir, **full)
      runs[key] = (model_dir, _listing(model_dir))
    return runs[key][0]

  yield make
  changed = [model_dir for model_dir, listing in runs.values() if _listing(model_dir) != listing]
  assert not changed, 'tests wrote into the shared read-only run directories {} (use copy_run)'.format(changed)


@pytest.fixture(scope='module')
def checkpoint_network():
  """checkpoint_network(model, image_shape) -> a helpers_network.CheckpointNetwork of the script's model; load a
  checkpoint's weights with .load(ckpt, ema). Closed at the end of the module."""
  made = []

  def make(model, image_shape):
    made.append(CheckpointNetwork(model, image_shape))
    return made[-1]

  yield make
  for net in made:
    net.close()


def _go_offline(mp, cache_dir):
  attempts = block_network(mp)
  mp.setenv(inception.CACHE_ENV_VAR, str(cache_dir))
  mp.delenv(inception.GRAPH_ENV_VAR, raising=False)
  return attempts


@pytest.fixture
def no_network(monkeypatch):
  """Socket connections and DNS lookups raise OSError; returns the list of attempted addresses."""
  return block_network(monkeypatch)


@pytest.fixture
def private_inception_cache(monkeypatch, tmp_path):
  """No network, an empty download cache of the test's own and no Inception graph variable; returns
  dict(attempts=the recorded network attempts, cache=the cache directory)."""
  cache = tmp_path / 'inception_cache'
  return dict(attempts=_go_offline(monkeypatch, cache), cache=str(cache))


@pytest.fixture(scope='module')
def offline_module(tmp_path_factory):
  """private_inception_cache for a whole module (its module-scoped fixtures run commands): one cache per module."""
  mp = pytest.MonkeyPatch()
  cache = tmp_path_factory.mktemp('inception_cache')
  yield dict(attempts=_go_offline(mp, cache), cache=str(cache))
  mp.undo()
