"""--precision on the commands: train, sample, evaluation and simple_eval build the U-Net in the type the flag
names (its Conv2D ops compute in it), the run's kwargs.json keeps the training precision, which later commands use
unless their --precision says otherwise; bad values and float16 on several replicas are one error line before any
work. Training, sampling and evaluation themselves are replaced by recorders (tests/train/test_precision.py runs
them); run_celebahq.py and run_lsun.py share these code paths (cli/commands.py, experiments/celebahq_lsun.py), and
reproduce hands its training-kwargs flags to `sample` (tests/cli/test_flags_reproduce_editing.py)."""

import pytest
import tensorflow.compat.v1 as tf

from support.scripts import assert_one_error, run_main, write_tiny_checkpoint

from diffusion_tf.cli import commands
from diffusion_tf.data import catalog
from diffusion_tf.evaluation import simple_eval
from diffusion_tf.generate import dump
from diffusion_tf.runs import run_dir
from diffusion_tf.train import loop as training

TRAIN = ['train', '--exp_name=p', '--dataset=digits', '--resolution=8', '--model_name=tiny', '--total_bs=2']


class _Digits:
  name, num_classes, image_size = 'digits', 1, 8

  def train_input_fn(self, params):
    raise AssertionError('not called: training is recorded, not run')


def _conv_dtypes(model, image_size=8):
  """The types the Conv2D ops of the model's U-Net compute in."""
  with tf.Graph().as_default() as g:
    model._denoise(tf.zeros([1, image_size, image_size, 3]), tf.zeros([1], tf.int32), tf.zeros([1], tf.int32), 0.)
  return {op.outputs[0].dtype.name for op in g.get_operations() if op.type == 'Conv2D'}


@pytest.fixture
def recorded(monkeypatch):
  calls = {}
  monkeypatch.setattr(catalog, 'get_dataset', lambda name, **kw: _Digits())
  monkeypatch.setattr(training, 'run_training', lambda **kw: calls.__setitem__('train', kw))
  monkeypatch.setattr(commands, 'evaluate_run', lambda **kw: calls.__setitem__('evaluation', kw))

  class _Dump:
    def __init__(self, source, load_model, out_dir, **kwargs):
      calls['sample'] = load_model(source.kwargs, source.ds_info)

    def run(self):
      pass

  class _SimpleEval:
    def __init__(self, **kwargs):
      calls['simple_eval'] = kwargs['model_constructor']()

    def run(self, **kwargs):
      pass

  monkeypatch.setattr(dump, 'SampleDump', _Dump)
  monkeypatch.setattr(simple_eval, 'SimpleEvalWorker', _SimpleEval)
  return calls


def test_precision_reaches_the_unet_of_train_sample_evaluation_and_simple_eval(recorded, capsys, tmp_path):
  model_dir = str(tmp_path / 'run')
  for flag, want in [([], 'float32'), (['--precision=bfloat16'], 'bfloat16'), (['--precision=float16'], 'float16')]:
    code, _, err = run_main(capsys, 'run_cifar', TRAIN + ['--model_dir=' + model_dir] + flag)
    assert code == 0, err
    kw = recorded.pop('train')
    assert kw['dump_kwargs']['precision'] == want  # kwargs.json
    model = kw['model_constructor']()
    assert model.precision == want and _conv_dtypes(model) == {want}

  tf.io.gfile.makedirs(model_dir)
  run_dir.write_kwargs_json(model_dir, dict(kw['dump_kwargs'], precision='bfloat16'))  # trained in bfloat16
  ckpt = write_tiny_checkpoint(model_dir + '/model.ckpt-1')
  reads = ['--model_dir=' + model_dir]
  for flag, want in [([], 'bfloat16'), (['--precision=float16'], 'float16'), (['--precision=float32'], 'float32')]:
    code, _, err = run_main(capsys, 'run_cifar', ['sample', '--checkpoint=' + ckpt,
                                                  '--out_dir=' + str(tmp_path / 's')] + reads + flag)
    assert code == 0, err
    assert _conv_dtypes(recorded.pop('sample')) == {want}, flag
    code, _, err = run_main(capsys, 'run_cifar', ['evaluation', '--once'] + reads + flag)
    assert code == 0, err
    assert _conv_dtypes(recorded.pop('evaluation')['model_constructor']()) == {want}, flag
    code, _, err = run_main(capsys, 'run_cifar', ['simple_eval'] + reads + flag)
    assert code == 0, err
    assert _conv_dtypes(recorded.pop('simple_eval')) == {want}, flag


@pytest.mark.parametrize('argv, needles', [
  (TRAIN + ['--precision=float64'], ["precision='float64' is not supported", 'float32, bfloat16, float16']),
  (TRAIN + ['--precision=float16', '--num_cpu_replicas=2'], ['precision=float16 with --num_cpu_replicas=2',
                                                            '--precision=bfloat16']),
  (['sample', '--checkpoint=nowhere', '--precision=half'], ["precision='half' is not supported"]),
])
def test_a_bad_precision_is_one_error_line(recorded, capsys, tmp_path, argv, needles):
  if argv[0] == 'sample':
    argv = [argv[0], '--checkpoint=' + write_tiny_checkpoint(str(tmp_path / 'model.ckpt-1'))] + argv[2:]
  code, _, err = run_main(capsys, 'run_cifar', argv + ['--model_dir=' + str(tmp_path / 'run')]
                          if argv[0] == 'train' else argv)
  assert_one_error(code, err, *needles)
  assert not recorded
