"""The command lines of the original scripts' docstrings (and positional calls in the original's argument order)
parse to the same run directory, data paths and settings as in the original. Training and evaluation themselves are
replaced by recorders; the GCE region is fixed, so nothing touches the network."""

import json
import os

import pytest

from support.scripts import run_main, write_tiny_checkpoint

from diffusion_tf.data import catalog as datasets
from diffusion_tf.runs import paths
from diffusion_tf.cli import commands as script_utils
from diffusion_tf.evaluation import simple_eval as simple_eval_worker
from diffusion_tf.tpu_utils import tpu_utils
from diffusion_tf.train import loop as training

BUCKET = 'gs://bkt-us-central1'
CIFAR_DIR = ('exp_cifar10_unet2d16b2_adam_bs128_lr0.0002w5000_beta0.0001-0.02-linear_t1000_eps-fixedlarge-mse_'
             'dropout0.1_randflip1')
CELEBAHQ_DIR = ('exp_celebahq256_unet2d16b2c112244_adam_bs64_lr2e-05w5000_beta0.0001-0.02-linear_t1000_noisepred_'
                'dropout0.0_randflip1_blk1')
LSUN_DIR = 'exp_lsun_unet2d16b2c112244_adam_bs64_lr2e-05w5000_beta0.0001-0.02-linear_t1000_noisepred_dropout0.0_{}_blk1'


class _FakeDataset:
  num_classes = 1

  def __init__(self, name, **kwargs):
    self.name, self.kwargs = name, kwargs
    self.image_size = 32 if name == 'cifar10' else 256

  def train_input_fn(self, params):
    raise AssertionError('not called: training is recorded, not run')


@pytest.fixture
def recorded(monkeypatch):
  calls = {}
  monkeypatch.setattr(paths, 'get_gcp_region', lambda timeout=2.: 'us-central1')
  monkeypatch.setattr(datasets, 'get_dataset', lambda name, **kw: calls.setdefault('dataset', _FakeDataset(name, **kw)))
  monkeypatch.setattr(training, 'run_training', lambda **kw: calls.setdefault('train', kw))
  monkeypatch.setattr(script_utils, 'evaluate_run', lambda **kw: calls.setdefault('evaluation', kw))

  class _Worker:
    def __init__(self, *args, **kwargs):
      calls['simple_eval_worker'] = (args, kwargs)

    def run(self, **kwargs):
      calls['simple_eval'] = kwargs

  monkeypatch.setattr(simple_eval_worker, 'SimpleEvalWorker', _Worker)
  return calls


def _train(capsys, calls, script, command):
  code, out, err = run_main(capsys, script, command.split())
  assert code == 0, err
  kw = calls.pop('train')
  ds = calls.pop('dataset')
  return tpu_utils.make_model_dir(kw['log_dir'], kw['exp_name'], kw['date_str']), kw, ds, out


@pytest.mark.parametrize('script, command, run_dir, data', [
  ('run_cifar', 'train --bucket_name_prefix bkt --exp_name exp --tpu_name tpu', CIFAR_DIR,
   {'tfds_data_dir': BUCKET + '/tensorflow_datasets'}),
  ('run_cifar', 'train exp tpu bkt', CIFAR_DIR, {'tfds_data_dir': BUCKET + '/tensorflow_datasets'}),  # positional
  ('run_celebahq', 'train --bucket_name_prefix bkt --exp_name exp --tpu_name tpu', CELEBAHQ_DIR,
   {'tfds_data_dir': BUCKET + '/tensorflow_datasets'}),
  ('run_lsun', 'train --bucket_name_prefix bkt --exp_name exp --tpu_name tpu '
   '--tfr_file tensorflow_datasets/lsun/church/church-r08.tfrecords', LSUN_DIR.format('randflip1'),
   {'tfr_file': BUCKET + '/tensorflow_datasets/lsun/church/church-r08.tfrecords'}),
  ('run_lsun', 'train --bucket_name_prefix bkt --tpu_name tpu --exp_name exp --tpu_name tpu '  # (sic)
   '--tfr_file tensorflow_datasets/lsun/church/church-r08.tfrecords', LSUN_DIR.format('randflip1'),
   {'tfr_file': BUCKET + '/tensorflow_datasets/lsun/church/church-r08.tfrecords'}),
  ('run_lsun', 'train --bucket_name_prefix bkt --exp_name exp --tpu_name tpu', LSUN_DIR.format('randflip1'),
   {'tfr_file': BUCKET + '/tensorflow_datasets/lsun/church/church-r08.tfrecords'}),  # the default tfr_file
  ('run_lsun', 'train --bucket_name_prefix bkt --exp_name exp --tpu_name tpu '
   '--tfr_file tensorflow_datasets/lsun/cat/cat-r08.tfrecords --randflip 0', LSUN_DIR.format('randflip0'),
   {'tfr_file': BUCKET + '/tensorflow_datasets/lsun/cat/cat-r08.tfrecords'}),
])
def test_original_train_commands(capsys, recorded, script, command, run_dir, data):
  model_dir, kw, ds, out = _train(capsys, recorded, script, command)
  assert model_dir == BUCKET + '/logs/9999-99-99/' + run_dir
  assert kw['tpu'] == 'tpu' and kw['grad_clip'] == 1.
  assert kw['iterations_per_loop'] == (2000 if script == 'run_cifar' else 1000)  # the original's
  assert {k: v for k, v in ds.kwargs.items() if k in data} == data
  assert 'without --tpu_name' not in out


def test_bucket_without_tpu_trains_here_and_says_so(capsys, recorded):
  # the original's LSUN bedroom command has no --tpu_name
  model_dir, kw, ds, out = _train(capsys, recorded, 'run_lsun', 'train --bucket_name_prefix bkt --exp_name exp '
                                  '--tfr_file tensorflow_datasets/lsun/bedroom-full/bedroom-full-r08.tfrecords')
  assert model_dir == BUCKET + '/logs/9999-99-99/' + LSUN_DIR.format('randflip1')
  assert kw['tpu'] is None
  lines = [line for line in out.splitlines() if 'without --tpu_name' in line]
  assert len(lines) == 1 and "this machine's devices" in lines[0] and BUCKET in lines[0]


def _model_dir(tmp_path, capsys, recorded, script, command):
  """A local model dir holding the kwargs.json the train command would write."""
  _, kw, _, _ = _train(capsys, recorded, script, command)
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  (model_dir / 'kwargs.json').write_text(json.dumps(kw['dump_kwargs']))
  write_tiny_checkpoint(str(model_dir / 'model.ckpt-790000'))
  return str(model_dir)


@pytest.mark.parametrize('script, train_command, command, expected', [
  ('run_cifar', 'train exp tpu bkt', 'evaluation --bucket_name_prefix bkt --tpu_name etpu --model_dir {}',
   dict(total_bs=256, num_inception_samples=50000, limit_dataset_size=0)),
  ('run_celebahq', 'train exp tpu bkt', 'evaluation --bucket_name_prefix bkt --tpu_name etpu --model_dir {}',
   dict(total_bs=128, num_inception_samples=2048, limit_dataset_size=0)),
  ('run_lsun', 'train exp tpu bkt', 'evaluation --bucket_name_prefix bkt --tpu_name etpu --model_dir {} '
   '--tfr_file tensorflow_datasets/lsun/bedroom-full/bedroom-full-r08.tfrecords',
   dict(total_bs=128, num_inception_samples=2048, limit_dataset_size=30000)),
])
def test_original_evaluation_commands(tmp_path, capsys, recorded, script, train_command, command, expected):
  model_dir = _model_dir(tmp_path, capsys, recorded, script, train_command)
  code, _, err = run_main(capsys, script, command.format(model_dir).split())
  assert code == 0, err
  kw = recorded['evaluation']
  assert kw['model_dir'] == model_dir and kw['tpu_name'] == 'etpu' and kw['load_ckpt'] is None
  for k, v in expected.items():
    assert kw.get(k, 0) == v, k
  if script == 'run_lsun':
    assert recorded['dataset'].kwargs['tfr_file'] == (
      BUCKET + '/tensorflow_datasets/lsun/bedroom-full/bedroom-full-r08.tfrecords')
  else:
    assert recorded['dataset'].kwargs['tfds_data_dir'] == BUCKET + '/tensorflow_datasets'


def test_original_simple_eval_and_load_ckpt(tmp_path, capsys, recorded):
  model_dir = _model_dir(tmp_path, capsys, recorded, 'run_cifar', 'train exp tpu bkt')
  # positional, in the original's order: model_dir tpu_name bucket_name_prefix mode load_ckpt
  code, _, err = run_main(capsys, 'run_cifar',
                          ['simple_eval', model_dir, 'tpu', 'bkt', 'bpd_train', 'model.ckpt-790000'])
  assert code == 0, err
  args, kwargs = recorded['simple_eval_worker']
  assert kwargs['tpu_name'] == 'tpu' and kwargs['total_bs'] == 256
  run = recorded['simple_eval']
  assert run['mode'] == 'bpd_train' and run['load_ckpt'] == os.path.join(model_dir, 'model.ckpt-790000')
  assert run['num_samples'] == 50000


def test_lsun_evaluation_default_tfr_file_falls_back_to_the_runs(tmp_path, capsys, recorded):
  """The original's evaluation default (tensorflow_datasets/lsun/church-r08.tfrecords) names a file its own train
  does not write: when it does not exist, the run's TFRecords are used, and one line says so."""
  model_dir = _model_dir(tmp_path, capsys, recorded, 'run_lsun', 'train exp tpu bkt')
  recorded.pop('dataset', None)
  code, out, err = run_main(capsys, 'run_lsun', ['evaluation', '--model_dir={}'.format(model_dir), '--once'])
  assert code == 0, err
  assert recorded['dataset'].kwargs['tfr_file'] == BUCKET + '/tensorflow_datasets/lsun/church/church-r08.tfrecords'
  assert sum('does not exist: using the TFRecords the run trained on' in line for line in out.splitlines()) == 1
