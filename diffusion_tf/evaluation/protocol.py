"""The paper's sample-quality protocol, the numbers behind `run_cifar.py reproduce` (its command: cli/reproduce.py):
the Inception Score (10 splits) and FID of samples against the training and the test set, and the table that puts
them beside the published figures.

The samples come from the `sample` subcommand's dump (seeded, resumable, all local GPUs); the numbers from
reference_stats / metrics, fed by the Inception graph or, offline, by the digits classifier, which has the same
interface (evaluation/feature_networks.py). The published figures are reference figures, printed as such next to
the measured row.
"""

import numpy as np

from .. import provenance
from ..sampler_schedules import SOLVERS
from . import metrics
from . import watcher as evaluation, reference_stats as fid_stats
from .feature_networks import FEATURES  # noqa: F401 (the choice of feature network, defined once there)

REAL_SPLITS = ('train', 'test')

# Published CIFAR-10 figures (50,000 samples, TF-GAN Inception, FID against the training set unless noted).
CIFAR10_REFERENCES = [
  dict(what='DDPM paper, Table 1 (EMA, 1000 steps)', inception_score='9.46 +- 0.11', fid_train='3.17',
       fid_test='5.24', bits_per_dim='<= 3.75'),
  dict(what='released EMA checkpoint, PyTorch port', inception_score='9.49', fid_train='3.21'),
  dict(what='released EMA checkpoint, original TF code', fid_train='3.25'),
  dict(what='released non-EMA weights', fid_train='12.1 - 12.3'),
]
# DDIM paper (Song et al. 2021), Table 1, CIFAR-10, eta = 0, quadratic spacing: S -> FID.
DDIM_CIFAR10_FID = {10: '13.36', 20: '6.84', 50: '4.67', 100: '4.16'}


# ---------------------------------------------------------------------------------------------------------------
# The numbers

def measure(images, extractor, refs, num_splits=10):
  """IS and FID of uint8 images [N, H, W, 3] with `extractor` (.features -> (features, logits), .graph_sha256).

  IS = mean +- std over `num_splits` splits of exp(E_x KL(p(y|x) || p(y))); FID_s = |mu_s - mu|^2 +
  Tr(C_s + C - 2 (C_s C)^(1/2)) against each reference statistics refs[s] = (stats, path).
  :return: dict inception_score, inception_score_std, inception_score_one_split, fid_<split>, num_samples.
  """
  N = len(images)
  assert images.ndim == 4 and images.dtype == np.uint8, (images.shape, images.dtype)
  stats = fid_stats.compute_statistics((images[i:i + 500] for i in range(0, N, 500)), extractor, keep_logits=True)
  is_mean, is_std = metrics.inception_score_mean_std(stats['logits'], num_splits=num_splits)
  out = {'inception_score': is_mean, 'inception_score_std': is_std,
         'inception_score_one_split': stats['inception_score'], 'num_samples': N}
  for split, (ref, _) in sorted(refs.items()):
    out['fid_' + split] = metrics.frechet_distance(ref['mu'], ref['sigma'], stats['mu'], stats['sigma'])
  return out


def real_images(ds, split):
  """All uint8 images [N, H, W, 3] of a dataset split ('train' or 'test'), in the input pipeline's order."""
  if split == 'train':
    input_fn, count = ds.train_one_pass_input_fn, ds.num_train_examples
  else:
    input_fn, count = ds.eval_input_fn, ds.num_eval_examples
  return np.concatenate(list(evaluation.iterate_real_images(input_fn, count)))


# ---------------------------------------------------------------------------------------------------------------
# The table

def _fmt(value, digits=2):
  return '-' if value is None else '{:.{}f}'.format(value, digits)


def format_table(result):
  """Markdown: the measured row, then (CIFAR-10 with the Inception graph) the published reference figures."""
  prefix = 'digits-' if result['features'] == 'digits' else ''
  header = ('| | {p}IS (10 splits) | {p}FID train | {p}FID test | bits/dim | samples |\n'
            '| --- | --- | --- | --- | --- | --- |\n').format(p=prefix)
  m = result['metrics']
  is_text = '{:.2f} +- {:.2f}'.format(m['inception_score'], m['inception_score_std'])
  rows = ['| **measured**: {} | {} | {} | {} | {} | {:,} |'.format(
    result['label'], is_text, _fmt(m.get('fid_train')), _fmt(m.get('fid_test')), _fmt(m.get('bits_per_dim'), 3),
    m['num_samples'])]
  if result['dataset'] == 'cifar10' and result['features'] == 'inception':
    for ref in CIFAR10_REFERENCES:
      rows.append('| reference: {} | {} | {} | {} | {} | 50,000 |'.format(
        ref['what'], ref.get('inception_score', '-'), ref.get('fid_train', '-'), ref.get('fid_test', '-'),
        ref.get('bits_per_dim', '-')))
    steps = result['sampling'].get('num_inference_steps')
    if result['sampling'].get('sampler') == 'ddim' and steps in DDIM_CIFAR10_FID:
      rows.append('| reference: DDIM paper, eta 0, S = {}, quadratic spacing | - | {} | - | - | 50,000 |'.format(
        steps, DDIM_CIFAR10_FID[steps]))
  return header + '\n'.join(rows) + '\n'


def row_label(sampling):
  """'DDPM-1000, EMA' / 'DDIM-50 (eta 0, quad), EMA' / 'UNIPC-10 (order 2, linspace), EMA' / 'held-out real images
  (test split)'."""
  if sampling.get('real_split'):
    return 'real images ({} split)'.format(sampling['real_split'])
  name = sampling['sampler'].upper()
  steps = sampling.get('num_inference_steps') or sampling.get('num_diffusion_timesteps')
  extras = []
  if sampling['sampler'] == 'ddim':
    extras.append('eta {:g}'.format(sampling.get('eta', 0.)))
  if sampling.get('solver_order') is not None:
    extras.append('order {}'.format(sampling['solver_order']))
  if sampling.get('skip_type', 'uniform') != 'uniform' or sampling['sampler'] in SOLVERS:
    extras.append(sampling['skip_type'])
  return '{}-{}{}, {}, step {}'.format(name, steps, ' ({})'.format(', '.join(extras)) if extras else '',
                                       provenance.weights_label(sampling.get('ema'), sampling.get('provenance')),
                                       sampling.get('step'))
