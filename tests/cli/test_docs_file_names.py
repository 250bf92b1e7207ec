"""The output file names docs/scripts.md gives for simple_eval and sample are the ones the commands write (for the
conftest's tiny run), and docs/pretrained.md's provenance example is what the converter records for its command.

The names are read from the documents: every backticked file name in a section. In docs/scripts.md's simple_eval
section `<NNNNNNNNN>` stands for the checkpoint's step in 9 digits, `<PPPPPP>` for a part number in 6 and `<K>` for
--max_batches; in the sample section `000000` is the first of the numbered PNGs.
"""

import json
import os
import re

import pytest

from support.scripts import REPO, copy_run, run_main

from diffusion_tf import provenance


def _section(doc, heading):
  """The text of `heading` (a '## ' or '### ' line) up to the next heading of the same level."""
  with open(os.path.join(REPO, 'docs', doc)) as f:
    text = f.read()
  level = heading.split(' ')[0]
  start = text.index('\n' + heading + '\n')
  end = text.find('\n' + level + ' ', start + 1)
  return text[start:end if end >= 0 else len(text)]


def _documented_names(section, extensions=('npz', 'png', 'json')):
  return sorted(set(re.findall(r'`([\w/<>.]+\.(?:{}))`'.format('|'.join(extensions)), section)))


def _written(directory):
  """Relative paths of the files under directory (hidden ones, such as in-progress state, left out)."""
  out = []
  for root, dirs, files in os.walk(directory):
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    out += [os.path.relpath(os.path.join(root, f), directory) for f in files if not f.startswith('.')]
  return sorted(out)


PLACEHOLDERS = [('<NNNNNNNNN>', r'(?P<step>\d{9})'), ('<PPPPPP>', r'\d{6}'), ('<K>', r'(?P<K>\d+)')]


def _template_regex(name):
  assert '<' not in re.sub('|'.join(p for p, _ in PLACEHOLDERS), '', name), name  # an unknown placeholder
  pattern = re.escape(name)
  for placeholder, regex in PLACEHOLDERS:
    pattern = pattern.replace(re.escape(placeholder), regex)
  return re.compile(pattern + '$')


@pytest.fixture(scope='module')
def run(tiny_run, tmp_path_factory):
  return copy_run(tiny_run('run_cifar'), tmp_path_factory.mktemp('docs') / 'run')


def test_simple_eval_file_names_are_the_documented_ones(run, capsys):
  templates = [n for n in _documented_names(_section('scripts.md', '## simple_eval')) if '/' in n]
  assert len(templates) >= 6, templates  # bpd_train, bpd_eval (each also with _<K>batches), progressive npz + png
  base = ['simple_eval', '--model_dir={}'.format(run)]
  for flags in [['--mode=bpd_train', '--total_bs=750'], ['--mode=bpd_train', '--total_bs=100', '--max_batches=2'],
                ['--mode=bpd_eval', '--total_bs=99'], ['--mode=bpd_eval', '--total_bs=99', '--max_batches=1'],
                ['--mode=progressive_samples', '--total_bs=2', '--num_samples=2']]:
    code, _, err = run_main(capsys, 'run_cifar', base + flags)
    assert code == 0, (flags, err)
  written = _written(os.path.join(run, 'simple_eval'))
  matched = {t: [] for t in templates}
  for name in written:
    hits = [t for t in templates if _template_regex(t).match(name)]
    assert hits, '{} is written but docs/scripts.md does not give its name ({})'.format(name, templates)
    for t in hits:
      match = _template_regex(t).match(name)
      assert int(match.group('step')) == 3  # the tiny run's latest checkpoint
      if 'K' in match.groupdict():
        assert match.group('K') in ('1', '2')
      matched[t].append(name)
  assert all(matched.values()), 'documented but never written: {}'.format([t for t, n in matched.items() if not n])


def test_sample_file_names_are_the_documented_ones(run, capsys, tmp_path):
  documented = _documented_names(_section('scripts.md', '## sample'))
  base = ['sample', '--model_dir={}'.format(run), '--num_samples=2', '--batch_size=2', '--sampler=ddim',
          '--num_inference_steps=2']
  for output_type in ('npz', 'png'):
    out_dir = tmp_path / output_type
    code, _, err = run_main(capsys, 'run_cifar', base + ['--output_type={}'.format(output_type),
                                                         '--out_dir={}'.format(out_dir)])
    assert code == 0, err
    for name in _written(str(out_dir)):
      assert re.sub(r'^images/\d{6}\.png$', 'images/000000.png', name) in documented, (name, documented)


def test_provenance_example_is_what_its_command_records():
  section = _section('pretrained.md', '### Provenance of converted weights')
  command = re.search(r'convert_diffusers_checkpoint\.py to_tf\s+--src=(\S+) --out=\S+ --repo_id=(\S+)`', section)
  assert command, section
  example = json.loads(re.search(r'```json\n(.*?)```', section, re.S).group(1))
  assert example == provenance.make_provenance(command.group(1), repo_id=command.group(2))
  assert provenance.make_provenance(command.group(1))['repo_id'] is None  # as the text says, without --repo_id
