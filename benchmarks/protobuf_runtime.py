"""Wall time of a short training run under protobuf's compiled runtime and under its pure-Python one, side by side.

Graph-mode TensorFlow serializes the whole graph through Python protobuf messages when a session starts, when a
checkpoint is saved (the meta graph) and when the graph is written for TensorBoard. protobuf 3.20.3 has no compiled
runtime for Python 3.11, so on that version the TF 2.15 stack ran all of it in pure Python; requirements-tf2.txt now
pins protobuf 4.25 (upb). This measures what that costs, in one venv: each repetition runs the same command twice,
once as installed and once with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, in alternating order, and reports
the median ratio.

  .venv-tf2/bin/python benchmarks/protobuf_runtime.py --reps 3            # TF 2.15 (upb against pure Python)
  .venv/bin/python benchmarks/protobuf_runtime.py --reps 3                # TF 1.15 (cpp against pure Python)
  .venv-tf2/bin/python benchmarks/protobuf_runtime.py --model_name=unet2d16b2 --resolution=32 --reps 1

The command is `scripts/run_cifar.py train` on the embedded digits (offline), --max_steps steps with a checkpoint
after every step, into a fresh temporary directory. Results: results/protobuf-<date>.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_VAR = 'PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION'


def runtime_of(env):
  """protobuf's version and runtime ('upb', 'cpp' or 'python') in a Python process started with env."""
  code = ('import google.protobuf as p; from google.protobuf.internal import api_implementation as a; '
          'print(p.__version__, a.Type())')
  return subprocess.run([sys.executable, '-c', code], env=env, check=True, stdout=subprocess.PIPE,
                        universal_newlines=True).stdout.split()


def timed_run(args, env):
  """Seconds of wall time of one training run (the whole process, imports included)."""
  with tempfile.TemporaryDirectory() as tmp:
    argv = [sys.executable, os.path.join(REPO, 'scripts', 'run_cifar.py'), 'train', '--exp_name=pb',
            '--dataset=digits', '--resolution={}'.format(args.resolution), '--model_name={}'.format(args.model_name),
            '--num_diffusion_timesteps=10', '--total_bs=4', '--warmup=0', '--max_steps={}'.format(args.max_steps),
            '--save_checkpoints_steps=1', '--model_dir={}'.format(os.path.join(tmp, 'run'))]
    start = time.time()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--reps', type=int, default=3)
  parser.add_argument('--max_steps', type=int, default=2)
  parser.add_argument('--model_name', default='tiny')
  parser.add_argument('--resolution', type=int, default=8)
  args = parser.parse_args()
  if args.reps < 1 or args.max_steps < 1:
    parser.error('--reps and --max_steps must be >= 1, got {} and {}'.format(args.reps, args.max_steps))

  installed = {k: v for k, v in os.environ.items() if k != ENV_VAR}
  envs = {'installed': installed, 'python': dict(installed, **{ENV_VAR: 'python'})}
  runtimes = {name: runtime_of(env) for name, env in envs.items()}
  times = {name: [] for name in envs}
  for rep in range(args.reps):
    order = list(envs) if rep % 2 == 0 else list(reversed(list(envs)))
    for name in order:
      times[name].append(timed_run(args, envs[name]))
    print('rep {}: {}'.format(rep, ', '.join('{} {:.1f} s'.format(n, times[n][-1]) for n in envs)), flush=True)
  medians = {name: statistics.median(t) for name, t in times.items()}
  ratio = medians['python'] / medians['installed']
  print('protobuf {} ({}) against pure Python: median {:.1f} s against {:.1f} s, {:.2f}x faster; load average {}'
        .format(runtimes['installed'][0], runtimes['installed'][1], medians['installed'], medians['python'], ratio,
                ' '.join('{:.2f}'.format(x) for x in os.getloadavg())))
  result = dict(args=vars(args), python=sys.version.split()[0], runtimes=runtimes, seconds=times,
                median_seconds=medians, ratio_python_over_installed=ratio, load_average=os.getloadavg())
  out = os.path.join(REPO, 'benchmarks', 'results', time.strftime('protobuf-%Y%m%d-%H%M%S.json'))
  with open(out + '.tmp', 'w') as f:
    json.dump(result, f, indent=1)
  os.replace(out + '.tmp', out)
  print('wrote', out)


if __name__ == '__main__':
  main()
