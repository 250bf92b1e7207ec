"""Running a command line: fire with the project's errors reported as one `error: ...` line and exit status 1, and
TensorFlow kept quiet. Pure Python (no TensorFlow): scripts import it and call quiet_tensorflow() before anything
imports TensorFlow.

Before fire runs, the command line is read as fire would read it (the subcommand as first word, `--flag=value`,
`--flag value`, `--flag` / `--noflag` for booleans, hyphens as underscores, positional arguments by position) and
compared with the command's signature: an unknown flag, an argument too many or a missing one stops there, before
the command reads a file, builds a graph or writes anything (fire itself reports them only once the command has
run). `--help` prints the command's docstring and every flag with its default. What follows a lone `--` is fire's
own flags (`-- --trace`, `-- --verbose`, ...) and is left to fire.
"""

import difflib
import errno
import functools
import inspect
import logging
import os
import re
import shlex
import sys
import warnings

import fire

from .. import errors
from ..checks import check_known_flags

HELP_FLAGS = ('--help', '-h')
FIRE_FLAGS = ('help', 'interactive', 'separator', 'completion', 'trace', 'verbose')  # fire's, after a lone --


def extra_flags(fn, flags, about):
  """Marks a command whose **kwargs take exactly `flags` ({name: default}, e.g. its script's training kwargs):
  run_cli accepts these names besides fn's own arguments and --help lists them under `about`. Returns fn."""
  fn.extra_flags = (about, dict(flags))
  return fn


def run_cli(commands, argv=None, name=None):
  """fire.Fire(commands) with bad input reported as one `error: ...` line on stderr and exit status 1.

  The one place where an error becomes a command line's `error:` line and exit status. Expected errors are the
  project's (diffusion_tf.errors.Error), ValueErrors (the dataset code reports missing or malformed data
  with them) and OSErrors of a write without space or rights (a full disk, a read-only file system); set
  DIFFUSION_TF_DEBUG=1 for the full traceback. The command line is checked first (check_command_line); `--help`
  prints the command's help and returns.
  """
  if hasattr(sys.stdout, 'reconfigure'):  # progress lines reach a log file (a job scheduler's) as they are printed
    sys.stdout.reconfigure(line_buffering=True)
  argv = shlex.split(argv) if isinstance(argv, str) else list(sys.argv[1:] if argv is None else argv)
  name = name or os.path.basename(sys.argv[0])
  try:
    help_text = check_command_line(commands, argv, name)
    if help_text is not None:
      print(help_text)
      return
    fire.Fire(commands, command=argv, name=name)
  except (errors.Error, ValueError) as e:
    if os.environ.get('DIFFUSION_TF_DEBUG'):
      raise
    message = str(e).strip().splitlines()
    print('error: {}'.format(message[0] if message else type(e).__name__), file=sys.stderr)
    sys.exit(getattr(e, 'exit_code', 1))  # TrainingStopped: 128 + the signal, as a shell reports a signal's end
  except OSError as e:
    if os.environ.get('DIFFUSION_TF_DEBUG') or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
      raise
    print('error: cannot write {}: {}'.format(e.filename, e.strerror), file=sys.stderr)
    sys.exit(1)


def quiet_tensorflow():
  """Keep TensorFlow's C++ logs to errors and its Python logs to errors, without importing it: TensorFlow's C++
  side reads TF_CPP_MIN_LOG_LEVEL once, when it loads (TF 2.15 on AMX / AVX-512-VNNI CPUs prints its oneDNN notice
  then), so this must run before anything imports TensorFlow; its Python logger is the standard `tensorflow`
  logger, whose level tf.get_logger() keeps. Our progress lines go to stdout."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
  warnings.filterwarnings('ignore', category=FutureWarning)
  warnings.filterwarnings('ignore', category=DeprecationWarning)


def subcommands(**commands):
  """The fire command table, each command wrapped so that it returns nothing (fire would print a return value)."""
  def _wrap(fn):
    @functools.wraps(fn)
    def _command(*args, **kwargs):
      fn(*args, **kwargs)
    return _command
  return {name: _wrap(fn) for name, fn in commands.items()}


# ---------------------------------------------------------------------------------------------------------------
# The command line against the command's signature, read as fire reads it (fire.core._ParseKeywordArgs)

def _is_flag(arg):
  return arg.startswith('--') or re.match('^-[a-zA-Z]', arg) is not None  # -1 is a number, not a flag


def _split_fire_flags(argv):
  """(the command's arguments, fire's flags): fire's flags follow the last lone `--`; and the arguments end at
  fire's chaining separator (`-`, or --separator's), after which fire would call the command's result."""
  if '--' in argv:
    cut = len(argv) - 1 - argv[::-1].index('--')
    argv, fire_args = argv[:cut], argv[cut + 1:]
  else:
    fire_args = []
  separator = '-'
  for i, arg in enumerate(fire_args):
    if arg.startswith('--separator='):
      separator = arg.split('=', 1)[1]
    elif arg == '--separator' and i + 1 < len(fire_args):
      separator = fire_args[i + 1]
  return argv, fire_args, separator


def _find_command(commands, argv, name):
  """(fn, its label, its arguments), or None where fire answers by itself (no subcommand given, fire's help)."""
  if not isinstance(commands, dict):
    return commands, name, argv
  if not argv or _is_flag(argv[0]):
    return None
  word = argv[0] if argv[0] in commands else argv[0].replace('-', '_')
  if word not in commands:
    close = difflib.get_close_matches(word, sorted(commands), n=1, cutoff=0.5)
    raise errors.UsageError('unknown command {!r} for {}{}; expected one of {}'.format(
      argv[0], name, ' (did you mean {}?)'.format(close[0]) if close else '', ', '.join(sorted(commands))))
  return commands[word], '{} {}'.format(name, word), argv[1:]


def _parse(args, params, varkw):
  """({keyword: token}, [unknown flag as typed], [positional arguments], help asked) of a command's arguments."""
  names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
  named, unknown, positional, wants_help = {}, [], [], False
  skip = False
  for i, arg in enumerate(args):
    if skip:
      skip = False
      continue
    if not _is_flag(arg):
      positional.append(arg)
      continue
    has_value = '=' in arg
    key = arg.lstrip('-').split('=', 1)[0].replace('-', '_')
    bool_syntax = not has_value and (i + 1 == len(args) or _is_flag(args[i + 1]))
    skip = not has_value and not bool_syntax  # `--flag value`: the next word is its value
    if key in names:
      keyword = key
    elif bool_syntax and key.startswith('no') and key[2:] in names:
      keyword = key[2:]
    elif varkw is not None:  # fire passes any name to **kwargs; `--noname` alone is name=False
      keyword = key[2:] if bool_syntax and key.startswith('no') and key[2:] in varkw else key
      if keyword not in varkw:
        keyword = None
    elif len(key) == 1 and len([n for n in names if n[0] == key]) == 1:  # fire's one-letter shortcut
      keyword = [n for n in names if n[0] == key][0]
    else:
      keyword = None
    if keyword is None and arg in HELP_FLAGS:
      wants_help = True
    elif keyword is None:
      unknown.append(key)
    else:
      named[keyword] = arg
  return named, unknown, positional, wants_help


def check_command_line(commands, argv, name):
  """Raises UsageError for an unknown command or flag (with the closest known name), a positional argument too
  many or a missing required one, before fire runs the command; returns the command's help text if --help or -h
  is among its arguments, else None."""
  argv, fire_args, separator = _split_fire_flags(argv)
  if set(fire_args) & {'--help', '-h', '--completion'}:
    return None  # fire answers these itself without running the command
  found = _find_command(commands, argv, name)
  if found is None:
    return None
  fn, label, args = found
  chained = args[args.index(separator):] if separator in args else []
  args = args[:len(args) - len(chained)]
  params = list(inspect.signature(fn).parameters.values())
  has_varkw = any(p.kind == p.VAR_KEYWORD for p in params)
  about_extra, extra = getattr(fn, 'extra_flags', (None, {}))
  named, unknown, positional, wants_help = _parse(args, params, extra if has_varkw else None)
  if wants_help:
    return command_help(fn, label)
  known = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)] + sorted(extra)
  fire_flags = [k for k in unknown if k in FIRE_FLAGS]
  if fire_flags:
    raise errors.UsageError('--{} is a flag of fire, not of {}; put it after a lone --: {} ... -- --{}'.format(
      fire_flags[0], label, label, fire_flags[0]))
  check_known_flags(label, unknown, known)
  slots = [p for p in params if p.kind == p.POSITIONAL_OR_KEYWORD and p.name not in named]
  takes_varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
  if (len(positional) > len(slots) and not takes_varargs) or chained:
    extra_args = chained if chained else positional[len(slots):]
    raise errors.UsageError('unexpected argument{} {} for {}; expected {}'.format(
      's' if len(extra_args) > 1 else '', ' '.join(map(repr, extra_args)), label,
      'at most {} positional argument(s) ({})'.format(len(slots), ', '.join(p.name for p in slots)) if slots else
      '--flag=value settings only'))
  filled = {p.name for p in slots[:len(positional)]} | set(named)
  missing = [p.name for p in params if p.default is p.empty and p.name not in filled and
             p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
  if missing:
    raise errors.UsageError('{} needs {}; see {} --help'.format(
      label, ', '.join('--' + m for m in missing), label))
  return None


def command_help(fn, label):
  """The command's docstring and every flag with its default (and the **kwargs it takes, see extra_flags)."""
  params = list(inspect.signature(fn).parameters.values())
  about_extra, extra = getattr(fn, 'extra_flags', (None, {}))
  extra = {k: v for k, v in extra.items() if k not in {p.name for p in params}}  # a flag of its own wins (fire)
  required = [p.name for p in params if p.default is p.empty and p.kind == p.POSITIONAL_OR_KEYWORD]
  varargs = [p.name for p in params if p.kind == p.VAR_POSITIONAL]
  usage = ' '.join(['usage:', label] + ['--{}={}'.format(n, n.upper()) for n in required] + ['[--flag=value ...]'] +
                   ['{}...'.format(n.upper()) for n in varargs])
  lines = [usage, '', inspect.getdoc(fn) or '', '', 'flags (default):']
  width = max([len(p.name) for p in params] + [len(k) for k in extra] + [10]) + 4
  for p in params:
    if p.kind == p.VAR_POSITIONAL:
      lines.append('  {:<{w}s}{}'.format(p.name.upper() + '...', 'positional arguments', w=width))
    elif p.kind != p.VAR_KEYWORD:
      lines.append('  {:<{w}s}{}'.format('--' + p.name, 'required' if p.default is p.empty else repr(p.default),
                                          w=width))
  if extra:
    lines += ['', '{} (default):'.format(about_extra)]
    lines += ['  {:<{w}s}{!r}'.format('--' + k, v, w=width) for k, v in sorted(extra.items())]
  lines += ['', 'Booleans: --flag or --noflag. Required flags may also be given by position. Bad input ends with one '
                '"error:" line and exit status 1.']
  return '\n'.join(lines)
