"""The command lines' front door (cli/runner.run_cli): every command of every script checks the flags it is given
against its signature before it reads a file, builds a graph or writes anything; --help lists every flag with its
default; the paths a command reads are checked before anything is downloaded. Each case runs the script's real
entry point in this process (support.scripts.run_main), from an empty working directory that must stay empty."""

import inspect
import os

import pytest

from support.scripts import assert_one_error, load_script, run_main

from diffusion_tf import checks

# The entry point that takes argv, per script (the others' is main(argv)).
ENTRY = {'evaluate_samples': 'command_line', 'demo': 'command_line'}
# Every command of every script: (script, subcommand or None, the function that runs it).
COMMANDS = [
  ('run_cifar', 'train'), ('run_cifar', 'evaluation'), ('run_cifar', 'simple_eval'), ('run_cifar', 'sample'),
  ('run_cifar', 'reproduce'),
  ('run_celebahq', 'train'), ('run_celebahq', 'evaluation'), ('run_celebahq', 'sample'),
  ('run_celebahq', 'interpolate'), ('run_celebahq', 'denoising_trajectory'),
  ('run_lsun', 'train'), ('run_lsun', 'evaluation'), ('run_lsun', 'sample'),
  ('evaluate_samples', None), ('merge_samples', None), ('convert_diffusers_checkpoint', 'to_tf'),
  ('convert_diffusers_checkpoint', 'to_diffusers'), ('prepare_lsun', None), ('demo', None),
]
FUNCTIONS = {'evaluate_samples': 'main', 'merge_samples': 'merge', 'prepare_lsun': 'prepare_lsun', 'demo': 'main'}
# The commands whose **overrides are their script's training kwargs (the demo's: its DEMO_CONFIG).
TAKES_TRAIN_KWARGS = {'sample', 'reproduce', 'interpolate', 'denoising_trajectory'}


def _run(capsys, script, argv):
  return run_main(capsys, script, argv, entry=ENTRY.get(script, 'main'))


def _function(script, command):
  return getattr(load_script(script), command or FUNCTIONS[script])


def _listing(root):
  return sorted(os.path.relpath(os.path.join(d, n), str(root)) for d, dirs, files in os.walk(str(root))
                for n in dirs + files)


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
  """An empty working directory: the commands' relative paths (outputs, and inputs that do not exist) land here."""
  monkeypatch.chdir(tmp_path)
  return tmp_path


# Each command with one misspelled flag, its other inputs naming files that do not exist: without the check the
# command would fail on those (or, given real inputs, run with the flag ignored).
MISSPELLED = [
  ('run_cifar', ['train', '--exp_name=x', '--log_dir=logs', '--tfds_data_dir=nodata', '--max_step', '4'],
   'max_step', 'max_steps'),
  ('run_cifar', ['evaluation', '--model_dir=norun', '--num_inception_sample=8'], 'num_inception_sample',
   'num_inception_samples'),
  ('run_cifar', ['simple_eval', '--model_dir=norun', '--max_batch=1'], 'max_batch', 'max_batches'),
  ('run_cifar', ['sample', '--model_dir=norun', '--num_sample=4'], 'num_sample', 'num_samples'),
  ('run_cifar', ['sample', '--checkpoint=norun', '--model_nmae=tiny'], 'model_nmae', 'model_name'),  # train's kwarg
  ('run_cifar', ['reproduce', '--model_dir=norun', '--num_split=2'], 'num_split', 'num_splits'),
  ('run_cifar', ['reproduce', '--checkpoint=norun', '--datset=digits'], 'datset', 'dataset'),
  ('run_celebahq', ['train', '--exp_name=x', '--log_dir=logs', '--tfds_data_dir=nodata', '--block_sise=2'],
   'block_sise', 'block_size'),
  ('run_celebahq', ['evaluation', '--model_dir=norun', '--full_reference_set'], 'full_reference_set',
   'full_reference_sets'),
  ('run_celebahq', ['sample', '--model_dir=norun', '--sampler=ddim', '--etta=0.5'], 'etta', 'eta'),
  ('run_celebahq', ['interpolate', '--image1=a.png', '--image2=b.png', '--model_dir=norun', '--num_lambda=3'],
   'num_lambda', 'num_lambdas'),
  ('run_celebahq', ['denoising_trajectory', '--model_dir=norun', '--num_frame', '3'], 'num_frame', 'num_frames'),
  ('run_lsun', ['train', '--exp_name=x', '--log_dir=logs', '--tfr_fille=none.tfrecords'], 'tfr_fille', 'tfr_file'),
  ('run_lsun', ['evaluation', '--model_dir=norun', '--tfr-fil=none.tfrecords'], 'tfr_fil', 'tfr_file'),  # hyphens
  ('run_lsun', ['sample', '--model_dir=norun', '--seeed=1'], 'seeed', 'seed'),
  ('evaluate_samples', ['--samples=none.npz', '--ref_stat=none_stats.npz', '--out_json=m.json'], 'ref_stat',
   'ref_stats'),
  ('merge_samples', ['--out_dri=merged', 'shard0', 'shard1'], 'out_dri', 'out_dir'),
  ('convert_diffusers_checkpoint', ['to_tf', '--src=nosrc', '--out=out', '--repoid', 'google/ddpm-cifar10-32'],
   'repoid', 'repo_id'),
  ('convert_diffusers_checkpoint', ['to_diffusers', '--ckpt=nockpt', '--out=out', '--resolution=32', '--prefx=m'],
   'prefx', 'prefix'),
  ('prepare_lsun', ['--image_dir=noimages', '--out_dir=lsun', '--max_image=3'], 'max_image', 'max_images'),
  ('demo', ['--out_dir=demo_out', '--train_sec=1'], 'train_sec', 'train_secs'),
  ('demo', ['--out_dir=demo_out', '--total_b=8'], 'total_b', 'total_bs'),  # a DEMO_CONFIG override
]


@pytest.mark.parametrize('script, argv, flag, closest', MISSPELLED, ids=['{}-{}'.format(s, f) for s, _, f, _ in
                                                                          MISSPELLED])
def test_a_misspelled_flag_stops_the_command_before_any_work(capsys, empty_cwd, no_network, script, argv, flag,
                                                             closest):
  code, out, err = _run(capsys, script, argv)
  assert code == 1, (out, err)
  assert_one_error(code, err, '--{} (did you mean --{}?)'.format(flag, closest))
  assert _listing(empty_cwd) == []  # no run directory, kwargs.json, output file or created directory
  assert not no_network


def test_every_command_is_covered_by_the_misspelling_cases():
  covered = {(s, a[0] if s.startswith('run_') or s == 'convert_diffusers_checkpoint' else None)
             for s, a, _, _ in MISSPELLED}
  assert covered == set(COMMANDS)


def test_several_unknown_flags_are_named_in_one_line(capsys, empty_cwd):
  code, _, err = _run(capsys, 'run_cifar', ['train', '--exp_name=x', '--max_step=4', '--lrr=1e-3', '--zzzz=1'])
  line = assert_one_error(code, err, '--max_step (did you mean --max_steps?)', '--lrr (did you mean --lr?)',
                          '--zzzz (no flag of that name; see run_cifar.py train --help)')
  assert line.startswith('error: unknown flags for run_cifar.py train:')


def test_a_training_kwarg_is_not_a_flag_of_train_only_commands(capsys, empty_cwd):
  """evaluation reads its training kwargs from the run's kwargs.json: --model_name is not one of its flags."""
  code, _, err = _run(capsys, 'run_cifar', ['evaluation', '--model_dir=norun', '--model_name=tiny'])
  assert_one_error(code, err, 'unknown flag for run_cifar.py evaluation: --model_name')


def test_booleans_hyphens_and_positional_arguments_parse_as_fire_reads_them(capsys, empty_cwd):
  """--noema (a sample flag), --no<kwarg>-less booleans, hyphens as underscores and positional arguments pass the
  check: the error that follows is the command's own (the missing run), not a flag."""
  for script, argv, needle in [
      ('run_cifar', ['sample', '--model_dir=norun', '--noema', '--num-samples', '4', '--randflip=0'], 'norun'),
      ('run_cifar', ['simple_eval', 'norun', '--mode', 'bpd_train'], 'norun'),  # model_dir by position
      ('merge_samples', ['--out_dir=merged', 'shard0', 'shard1'], 'shard0'),  # *shard_dirs
      ('convert_diffusers_checkpoint', ['to_tf', 'nosrc', 'out'], 'nosrc')]:
    code, _, err = _run(capsys, script, argv)
    line = assert_one_error(code, err, needle)
    assert 'flag' not in line, line


@pytest.mark.parametrize('script, argv, needles', [
  ('convert_diffusers_checkpoint', ['to_diffusers', 'a', 'b', '32', 'True', 'model', 'extra'],
   ["unexpected argument 'extra' for convert_diffusers_checkpoint.py to_diffusers"]),
  ('run_cifar', ['train'], ['run_cifar.py train needs --exp_name']),
  ('merge_samples', ['a', 'b', '-', 'upper'], ["unexpected argument"]),  # fire's chaining onto the result
  ('run_cifar', ['trian'], ["unknown command 'trian'", 'did you mean train?']),
  ('run_cifar', ['train', '--exp_name=x', '--trace'], ['--trace is a flag of fire', '-- --trace']),
])
def test_arguments_too_many_or_missing_stop_before_any_work(capsys, empty_cwd, script, argv, needles):
  code, _, err = _run(capsys, script, argv)
  assert code == 1
  assert_one_error(code, err, *needles)
  assert _listing(empty_cwd) == []


# ---------------------------------------------------------------------------------------------------------------
# --help

def _flag_lines(out):
  return {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()
          if line.startswith('  --') and len(line.split()) > 1}


@pytest.mark.parametrize('script, command', COMMANDS, ids=['{}-{}'.format(s, c) for s, c in COMMANDS])
def test_help_lists_every_flag_with_its_default(capsys, empty_cwd, script, command):
  fn = _function(script, command)
  code, out, err = _run(capsys, script, ([command] if command else []) + ['--help'])
  assert code == 0, err
  assert not [line for line in err.splitlines() if line.startswith('error')]
  flags = _flag_lines(out)
  expected = {p.name: ('required' if p.default is p.empty else repr(p.default))
              for p in inspect.signature(fn).parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
  if command in TAKES_TRAIN_KWARGS:
    expected.update({k: repr(v) for k, v in checks.default_kwargs(load_script(script).train).items()
                     if k not in expected})
  if script == 'demo':
    expected.update({k: repr(v) for k, v in load_script('demo').DEMO_CONFIG.items() if k not in expected})
  assert {k[2:]: v for k, v in flags.items()} == expected
  assert inspect.getdoc(fn).splitlines()[0] in out
  assert _listing(empty_cwd) == []


def test_help_wins_wherever_it_is_given(capsys, empty_cwd):
  for argv in (['reproduce', '--model_dir=norun', '-h'], ['sample', '--model_dir=norun', '--bogus=1', '--help']):
    code, out, err = _run(capsys, 'run_cifar', argv)
    assert code == 0 and '--num_samples' in out and not err.strip(), err
  assert _listing(empty_cwd) == []


def test_fires_own_help_after_a_lone_double_dash_still_works(capsys, empty_cwd):
  code, out, err = _run(capsys, 'run_cifar', ['train', '--', '--help'])
  assert code == 0 and 'EXP_NAME' in out + err and 'WORKER_TIMEOUT_SECS' in out + err  # fire's help, on stderr


# ---------------------------------------------------------------------------------------------------------------
# Paths before anything is fetched or built

@pytest.mark.parametrize('argv, needles', [
  (['reproduce', '--model_dir=no/such/dir'], ["model_dir='no/such/dir' does not exist"]),
  (['reproduce', '--checkpoint=no/such/dir/model.ckpt-5'], ['no/such/dir/model.ckpt-5 does not exist']),
  (['sample', '--model_dir=no/such/dir'], ["model_dir='no/such/dir' does not exist"]),
  (['evaluation', '--model_dir=no/such/dir'], ["model_dir='no/such/dir' does not exist"]),
])
def test_a_missing_run_is_reported_before_any_download_or_directory(capsys, empty_cwd, private_inception_cache, argv,
                                                                    needles):
  """With no Inception graph anywhere, reproduce would download it first; the missing run must come before that,
  and before the output directory is made."""
  code, _, err = _run(capsys, 'run_cifar', argv)
  assert_one_error(code, err, *needles)
  assert private_inception_cache['attempts'] == []
  assert _listing(empty_cwd) == []
