"""Bad input to the scripts: one clear `error:` line, a non-zero exit, and no work done (no run directory, no
graph). Every case runs the real command-line entry point (main(argv)) in this process."""

import os

import pytest

from support.data import block_network, make_tiny_lsun
from support.scripts import assert_one_error, checkpoint_steps, run_main

from diffusion_tf.runs import paths

TRAIN_DIGITS = ['train', '--exp_name=x', '--dataset=digits', '--resolution=8', '--model_name=tiny',
                '--num_diffusion_timesteps=10', '--total_bs=4']


@pytest.mark.parametrize('flag,value,needle', [
  ('dataset', 'mnist', "dataset='mnist'"),
  ('model_name', 'resnet', "model_name='resnet'"),
  ('model_mean_type', 'x0', "model_mean_type='x0'"),
  ('model_var_type', 'big', "model_var_type='big'"),
  ('loss_type', 'l1', "loss_type='l1'"),
  ('beta_schedule', 'cosine', "beta_schedule='cosine'"),
  ('optimizer', 'sgd', "optimizer='sgd'"),
  ('total_bs', '0', 'total_bs=0'),
  ('dropout', '1.5', 'dropout=1.5'),
  ('randflip', '2', 'randflip=2'),
  ('worker_timeout_secs', '0', 'worker_timeout_secs=0'),
  ('worker_startup_secs', '0', 'worker_startup_secs=0'),
])
def test_train_rejects_unknown_settings_before_any_work(capsys, tmp_path, flag, value, needle):
  log_dir = tmp_path / 'logs'
  code, _, err = run_main(capsys, 'run_cifar', ['train', '--exp_name=x', '--{}={}'.format(flag, value),
                                                '--log_dir={}'.format(log_dir)])
  assert_one_error(code, err, needle, 'expected')
  assert not log_dir.exists()


def test_learned_variance_with_mse_is_rejected(capsys, tmp_path):
  code, _, err = run_main(capsys, 'run_cifar', ['train', '--exp_name=x', '--model_var_type=learned',
                                                '--loss_type=mse', '--log_dir={}'.format(tmp_path / 'logs')])
  assert_one_error(code, err, 'learned', 'mse', "loss_type='kl'")
  assert not (tmp_path / 'logs').exists()


def test_celebahq_rejects_unknown_loss_and_model(capsys, tmp_path):
  code, _, err = run_main(capsys, 'run_celebahq', ['train', '--exp_name=x', '--loss_type=mse'])
  assert_one_error(code, err, "loss_type='mse'", 'noisepred')
  code, _, err = run_main(capsys, 'run_celebahq', ['train', '--exp_name=x', '--model_name=unet2d16b2'])
  assert_one_error(code, err, "model_name='unet2d16b2'")


def test_missing_tfds_dir(capsys, tmp_path):
  missing = tmp_path / 'no_such_tfds'
  code, _, err = run_main(capsys, 'run_cifar', ['train', '--exp_name=x', '--tfds_data_dir={}'.format(missing),
                                                '--log_dir={}'.format(tmp_path / 'logs')])
  assert_one_error(code, err, str(missing), 'does not exist')
  assert not (tmp_path / 'logs').exists()


def test_missing_tfrecord(capsys, tmp_path):
  missing = tmp_path / 'church-r08.tfrecords'
  code, _, err = run_main(capsys, 'run_lsun', ['train', '--exp_name=x', '--tfr_file={}'.format(missing)])
  assert_one_error(code, err, str(missing))
  # without --tfr_file: the original's default, tensorflow_datasets/lsun/church/church-r08.tfrecords (not here)
  code, _, err = run_main(capsys, 'run_lsun', ['train', '--exp_name=x'])
  assert_one_error(code, err, 'tensorflow_datasets/lsun/church/church-r08.tfrecords', 'matches no file')


def test_images_of_the_wrong_size(capsys, tmp_path):
  # 16x16 TFRecords cannot feed the 6-level 256x256 U-Net (its sizes must be divisible by 32)
  tfr = str(tmp_path / 'lsun' / 'church-r04.tfrecords')
  make_tiny_lsun(tfr, 2, 16)
  code, _, err = run_main(capsys, 'run_lsun', ['train', '--exp_name=x', '--tfr_file={}'.format(tfr),
                                               '--log_dir={}'.format(tmp_path / 'logs')])
  assert_one_error(code, err, 'size 16', 'divisible by 32')
  assert not (tmp_path / 'logs').exists()
  # and block_size must divide the image size
  code, _, err = run_main(capsys, 'run_lsun', ['train', '--exp_name=x', '--tfr_file={}'.format(tfr),
                                               '--model_name=tiny', '--block_size=3'])
  assert_one_error(code, err, 'block_size=3')
  # cifar10 images are 32x32
  code, _, err = run_main(capsys, 'run_cifar', ['train', '--exp_name=x', '--resolution=64'])
  assert_one_error(code, err, 'resolution=64')


def test_batch_not_divisible_by_replicas(capsys, tmp_path):
  code, _, err = run_main(capsys, 'run_cifar', TRAIN_DIGITS[:-1] + [
    '--total_bs=5', '--num_cpu_replicas=2', '--model_dir={}'.format(tmp_path / 'run')])
  assert_one_error(code, err, 'total_bs=5', 'not divisible', '2 replicas')
  assert not (tmp_path / 'run').exists()


def test_unwritable_output_dir(capsys, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  code, _, err = run_main(capsys, 'run_cifar', TRAIN_DIGITS + ['--model_dir={}'.format(blocker / 'run')])
  assert_one_error(code, err, 'not a writable directory', str(blocker / 'run'))


def test_missing_kwargs_json_and_checkpoint(capsys, tmp_path):
  empty = tmp_path / 'empty_run'
  empty.mkdir()
  code, _, err = run_main(capsys, 'run_cifar', ['evaluation', '--model_dir={}'.format(empty)])
  assert_one_error(code, err, 'kwargs.json does not exist')
  code, _, err = run_main(capsys, 'run_cifar', ['simple_eval', '--model_dir={}'.format(empty)])
  assert_one_error(code, err, 'kwargs.json does not exist')
  code, _, err = run_main(capsys, 'run_cifar', ['sample', '--checkpoint={}'.format(empty / 'model.ckpt-7')])
  assert_one_error(code, err, 'model.ckpt-7', 'does not exist')
  code, _, err = run_main(capsys, 'run_cifar', ['sample', '--model_dir={}'.format(empty)])
  assert_one_error(code, err, 'has no checkpoint')
  code, _, err = run_main(capsys, 'run_cifar', ['sample'])
  assert_one_error(code, err, '--model_dir', '--checkpoint')


@pytest.mark.parametrize('argv,needle', [
  (['--sampler=lms'], "sampler='lms'"),
  (['--output_type=gif'], "output_type='gif'"),
  (['--num_samples=0'], 'num_samples=0'),
  (['--eta=0.5'], 'eta=0.5'),  # eta only applies to ddim
  (['--sampler=ddim', '--eta=-1'], 'eta=-1'),
  (['--model_nam=tiny'], '--model_nam'),  # a typo is not silently ignored
  (['--progressive', '--sampler=ddim'], '--progressive'),
  (['--solver_order=2'], '--solver_order=2'),  # ddpm has no order
  (['--sampler=sde-dpmsolver++', '--solver_order=3'], '--solver_order=3'),
  (['--skip_type=leading'], "skip_type='leading'"),
])
def test_sample_rejects_bad_flags(capsys, tmp_path, argv, needle):
  code, _, err = run_main(capsys, 'run_cifar', ['sample', '--model_dir={}'.format(tmp_path)] + argv)
  assert_one_error(code, err, needle)


def test_bucket_flags(capsys, tmp_path, monkeypatch):
  code, _, err = run_main(capsys, 'run_cifar', ['train', '--exp_name=x', '--region=us-central1'])
  assert_one_error(code, err, 'region', 'without --bucket_name_prefix')
  code, _, err = run_main(capsys, 'run_cifar', ['train', '--exp_name=x', '--bucket_name_prefix=Bad_Bucket!',
                                                '--region=us-central1'])
  assert_one_error(code, err, 'bucket_name_prefix')
  # Off GCE, the metadata server is unreachable: one error that says to pass --region, without waiting long
  attempts = block_network(monkeypatch)
  code, _, err = run_main(capsys, 'run_cifar', ['train', '--exp_name=x', '--bucket_name_prefix=mybucket'])
  assert_one_error(code, err, 'metadata server', '--region')
  assert attempts, 'the metadata server should have been asked'


def test_paths_keep_the_original_bucket_layout():
  assert paths.zone_to_region('projects/123/zones/europe-west4-a') == 'europe-west4'
  p = paths.Paths('mybucket', 'us-central1')
  assert p.resolve('logs') == 'gs://mybucket-us-central1/logs'
  assert p.resolve('./tensorflow_datasets') == 'gs://mybucket-us-central1/tensorflow_datasets'
  assert p.resolve('gs://other/x') == 'gs://other/x'  # URLs and absolute paths are kept
  assert p.resolve('/abs/dir') == '/abs/dir'
  local = paths.Paths()
  assert local.resolve('logs') == 'logs' and local.resolve(None) is None
  with pytest.raises(paths.PathError, match='region'):
    paths.Paths('mybucket', 'nowhere')


def test_unknown_subcommand_exits_non_zero(capsys):
  code, _, _ = run_main(capsys, 'run_cifar', ['trian'])
  assert code != 0
  assert not os.path.exists('trian')


@pytest.mark.parametrize('flags,needles', [
  (['--beta_start=0.03', '--beta_end=0.02'], ['beta_start=0.03', 'beta_end=0.02', 'beta_start <= beta_end']),
  (['--beta_schedule=quad', '--beta_start=0.5', '--beta_end=0.1'], ['beta_start=0.5', 'beta_start <= beta_end']),
  (['--beta_end=1.5'], ['beta_end=1.5', '(0.0, 1.0]']),
  (['--beta_start=0'], ['beta_start=0', '(0.0, 1.0]']),
  (['--num_diffusion_timesteps=0'], ['num_diffusion_timesteps=0', 'integer >= 1']),
])
def test_train_rejects_schedules_that_make_no_sense_before_any_work(capsys, tmp_path, flags, needles):
  log_dir = tmp_path / 'logs'
  code, _, err = run_main(capsys, 'run_cifar', TRAIN_DIGITS + flags + ['--log_dir={}'.format(log_dir)])
  assert_one_error(code, err, *needles)
  assert not log_dir.exists()


def test_beta_order_is_only_checked_for_schedules_that_use_beta_start():
  """const ignores beta_start, so beta_start > beta_end is fine there, not for warmup10."""
  from diffusion_tf.experiments import model
  kwargs = dict(beta_schedule='const', beta_start=0.5, beta_end=0.02, num_diffusion_timesteps=10)
  model.check_beta_schedule(kwargs)
  with pytest.raises(ValueError):
    model.check_beta_schedule(dict(kwargs, beta_schedule='warmup10'))


def test_a_run_shorter_than_the_warmup_trains_with_one_warning(capsys, tmp_path):
  """--max_steps below --warmup (the paper's 5000) is a short trial run, not a mistake: it trains, and one line says
  that the learning rate stops at lr * max_steps / warmup."""
  run = tmp_path / 'run'
  code, _, err = run_main(capsys, 'run_cifar', TRAIN_DIGITS + ['--warmup=4', '--max_steps=1', '--lr=2e-4',
                                                              '--model_dir={}'.format(run)])
  assert code == 0, err
  assert checkpoint_steps(str(run))[-1] == 1
  warnings = [line for line in err.splitlines() if line.startswith('warning:')]
  assert warnings == ['warning: the learning rate never reaches --lr=0.0002 within --max_steps=1: the warm-up takes '
                      '--warmup=4 steps, so it ends at 5e-05']


def test_the_warmup_warning_only_when_the_warmup_outlasts_the_run():
  from diffusion_tf import checks
  assert checks.warmup_warning(5000, None, 2e-4) is None  # no step limit
  assert checks.warmup_warning(100, 100, 2e-4) is None
  assert '--max_steps=100' in checks.warmup_warning(5000, 100, 2e-4)
  assert checks.warmup_warning(5000, 100, 2e-4).endswith('ends at {:.3g}'.format(2e-4 * 100 / 5000))
