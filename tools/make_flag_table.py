"""Writes the table of tests/README.md: each flag of each command and the test functions that set it.

Run from the repository root: `.venv/bin/python tools/make_flag_table.py > /tmp/table.md`, then paste. A flag is
listed with the functions of the tests/*/test_flags_*.py modules (written to prove flags) that set it, else
with the other tests that set it (exercised, not audited), else as **no test**. tests/cli/test_flag_table.py checks that
the table names every flag and only tests that exist.
"""

import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, 'tests')
sys.path.insert(0, os.path.join(TESTS, 'cli'))
sys.path.insert(0, TESTS)
sys.path.insert(0, REPO)

from diffusion_tf.cli import runner  # noqa: E402  (pure Python: TensorFlow is quieted before it loads)

runner.quiet_tensorflow()

import test_flag_table  # noqa: E402


# Set where no test function names the flag itself (a module-level flag list), or where the shared path is the point.
MANUAL = {
  'worker_timeout_secs': (
    'train/test_multi_worker.py::test_a_killed_worker_stops_the_others_with_an_error_after_resuming (the survivors '
    'stop within the step timeout, --worker_startup_secs being longer)'),
  'worker_startup_secs': (
    'train/test_multi_worker.py::test_a_peer_that_never_starts_stops_the_chief_at_the_startup_timeout (the chief '
    'stops at this bound, not at --worker_timeout_secs)'),
  # proven outside the test_flags_* modules (each assertion fails if the flag were ignored):
  'bpd_images': 'cli/test_demo.py::test_demo_outputs_exist_and_make_sense (bpd.npz holds that many images)',
  'quality_samples': 'cli/test_demo.py::test_demo_outputs_exist_and_make_sense (the quality numbers\' sample count)',
  'train_secs': 'cli/test_demo.py::test_demo_outputs_exist_and_make_sense (the stop hook\'s line names it)',
  'output_type': ('cli/test_scripts_end_to_end.py::test_sample_is_seeded_resumable_and_never_overwrites (png: the PNG '
                  'files are the images of the npz dump)'),
  'progressive': ('cli/test_scripts_end_to_end.py::test_celebahq_script_with_space_to_depth (progressive.npz: the x_0 '
                  'predictions, the last one the sample)'),
  # a folder of images and LSUN's LMDB (their module is not a test_flags_* one, so as not to displace the rows of the
  # flags it also sets, such as --resolution and --out_dir):
  'data_dir': ('cli/test_folder_commands.py::test_train_sample_simple_eval_and_reproduce_on_a_folder (train reads '
               'that folder; after it moved, simple_eval, evaluation and reproduce fail without the flag and read the '
               'moved folder with it; run_celebahq shares the commands.py path, its train checked by '
               'test_folder_flags_pick_the_model_of_the_resolution_and_bad_ones_fail_before_training)'),
  'eval_fraction': ('cli/test_folder_commands.py::test_train_sample_simple_eval_and_reproduce_on_a_folder (the '
                    'held-out count printed, bits/dim over exactly the held-out images, the test statistics\' count)'),
  'lmdb_dir': ('cli/test_folder_commands.py::test_prepare_lsun_lmdb_dir_writes_every_decodable_entry_in_key_order '
               '(the records are the LMDB\'s decodable images in key order)'),
  'part_size': ('cli/test_folder_commands.py::test_prepare_lsun_lmdb_max_images_and_an_interrupted_run_resumes_where_'
                'it_stopped (parts of 3 images: the rerun writes parts 2 and 3)'),
  # the memory levers (their module sets many training flags, so it is not a test_flags_* one either):
  'grad_accum_steps': ('train/test_memory_levers.py::test_grad_accum_steps_on_one_replica_is_the_whole_batch_update, '
                       'train/test_memory_levers.py::test_grad_accum_steps_on_two_cpu_replicas_is_the_whole_batch_'
                       'update (the loss is built for K microbatches; the update is the whole batch\'s), '
                       'train/test_memory_levers.py::test_memory_levers_reach_the_graph_and_their_checkpoints_restore_'
                       'both_ways (run_cifar train: K microbatches in the graph)'),
  'recompute': ('test_recompute.py::test_recompute_gives_the_same_variables_and_gradients, '
                'train/test_memory_levers.py::test_memory_levers_reach_the_graph_and_their_checkpoints_restore_both_'
                'ways (run_cifar train: the recomputed blocks are in the graph exactly with the flag)'),
  'precision': ('cli/test_precision_commands.py::test_precision_reaches_the_unet_of_train_sample_evaluation_and_'
                'simple_eval (the U-Net\'s Conv2D ops compute in the type named, kwargs.json keeps it; reproduce, '
                'interpolate and denoising_trajectory read it with the other training kwargs), '
                'train/test_precision.py (loss curves, loss scaling, checkpoints across precisions)'),
  'warm_start_model_dir': ('train/test_training.py::test_lsun_warm_start_initialises_every_variable (weights, Adam '
                           'slots, EMA and step continue from the source run)'),
}
CLOUD_ONLY = ('tpu_name', 'bucket_name_prefix', 'region')


class _Patch:
  def setattr(self, obj, name, value):
    setattr(obj, name, value)


def _functions(path):
  """{function name: source} of a test file's top-level functions."""
  text = open(path).read()
  parts = re.split(r'^(?=def \w+)', text, flags=re.M)
  return {re.match(r'def (\w+)', p).group(1): p for p in parts if p.startswith('def ')}


def _users(flag, files):
  pattern = re.compile(r"--{0}\b|\b{0}=|'{0}'".format(re.escape(flag)))
  return ['{}::{}'.format(f, name) for f in files for name, src in _functions(os.path.join(TESTS, f)).items()
          if pattern.search(src)]


def main():
  commands = test_flag_table._commands(_Patch())
  files = sorted(os.path.relpath(os.path.join(root, f), TESTS) for root, _, names in os.walk(TESTS) for f in names
                 if f.startswith('test_') and f.endswith('.py') and f != 'test_flag_table.py')
  audited = [f for f in files if os.path.basename(f).startswith('test_flags_')]
  others = [f for f in files if f not in audited]
  print('| command | flag | test |')
  print('| --- | --- | --- |')
  for command in sorted(commands):
    for flag in sorted(commands[command]):
      proof = _users(flag, audited)
      if flag in MANUAL:
        text = '**{}**'.format(MANUAL[flag])
      elif flag in CLOUD_ONLY:
        text = 'TPU/GCS only: the shared Paths/device code path, {}'.format(', '.join(
          (proof or _users(flag, others))[:3]))
      elif proof:
        text = '**{}**'.format(', '.join(proof[:4]))
      else:
        proof = _users(flag, others)
        text = 'exercised (not audited): {}'.format(', '.join(proof[:3])) if proof else '**no test**'
      print('| {} | `--{}` | {} |'.format(command, flag, text))


if __name__ == '__main__':
  main()
