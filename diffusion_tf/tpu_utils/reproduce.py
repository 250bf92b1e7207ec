"""The paper's sample-quality protocol as one command (`run_cifar.py reproduce`): draw samples from a checkpoint,
compute the Inception Score (10 splits) and FID against the training and the test set, optionally bits/dim, and
write a table beside the published figures plus a JSON with everything needed to redo the measurement.

The samples come from the `sample` subcommand's dump (seeded, resumable, all local GPUs); the numbers from
fid_stats / classifier_metrics_numpy, fed by the Inception graph or, offline, by the digits classifier
(tpu_utils/digits_classifier.py), which has the same interface. The published figures are reference figures,
printed as such next to the measured row.
"""

import json
import os

import numpy as np

from .. import inception, utils
from ..errors import UsageError
from . import classifier_metrics_numpy as metrics
from . import datasets, evaluation, fid_stats, flags, run_dir
from .digits_classifier import DigitsClassifier
from .paths import check_writable_dir
from .simple_eval_worker import SimpleEvalWorker

FEATURES = ('inception', 'digits')
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


def reference_stats(ds, extractor, stats_dir, *, stats_name=None):
  """{split: (stats, path)} of the dataset's train and (if it has one) test split, cached in stats_dir."""
  stats_name = stats_name or '{}-{}px'.format(ds.name, ds.image_size)
  refs = {}
  splits = [('train', ds.train_one_pass_input_fn, ds.num_train_examples)]
  if ds.num_eval_examples:
    splits.append(('test', ds.eval_input_fn, ds.num_eval_examples))
  for split, input_fn, count in splits:
    num = None if (count and count <= 50000) else 50000
    refs[split] = fid_stats.get_or_compute_statistics(
      stats_dir, dataset=stats_name, split=split, extractor=extractor, num_samples=num,
      batches_fn=lambda input_fn=input_fn, count=count: evaluation.iterate_real_images(input_fn, count))
  return refs


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
  """'DDPM-1000, EMA' / 'DDIM-50 (eta 0, quad), EMA' / 'held-out real images (test split)'."""
  if sampling.get('real_split'):
    return 'real images ({} split)'.format(sampling['real_split'])
  name = sampling['sampler'].upper()
  steps = sampling.get('num_inference_steps') or sampling.get('num_diffusion_timesteps')
  extras = []
  if sampling['sampler'] == 'ddim':
    extras.append('eta {:g}'.format(sampling.get('eta', 0.)))
  if sampling.get('skip_type', 'uniform') != 'uniform':
    extras.append(sampling['skip_type'])
  return '{}-{}{}, {} weights, step {}'.format(name, steps, ' ({})'.format(', '.join(extras)) if extras else '',
                                               'EMA' if sampling.get('ema') else 'non-EMA', sampling.get('step'))


# ---------------------------------------------------------------------------------------------------------------
# The command

def make_reproduce_command(script, sample_command):
  """The `reproduce` subcommand of a script; `sample_command` is its `sample` (script_utils.make_sample_command)."""
  def reproduce(model_dir=None, checkpoint=None, out_dir=None, num_samples=50000, batch_size=250, sampler='ddpm',
                num_inference_steps=None, eta=0., skip_type='uniform', skip_prk_steps=False, seed=0, ema=True,
                features='inception', inception_graph=None, stats_dir=None, tfds_data_dir='tensorflow_datasets',
                num_splits=10, bpd=False, bpd_batches=None, real_split=None, num_gpus=None, **overrides):
    """The paper's protocol: samples, IS (10 splits), FID against the train and test sets, a table and a JSON.

    Draws --num_samples samples (default 50,000, the paper's) from the checkpoint with any sampler (the `sample`
    command's dump in <out_dir>/samples: seeded, resumable, all local GPUs), measures them, and writes
    <out_dir>/table.md (the measured row beside the published CIFAR-10 figures, labelled as references) and
    <out_dir>/results.json (checkpoint, step, sampler, steps, seed, feature network and its sha256, statistics
    files, numbers). A rerun reuses finished samples and cached statistics.

    The paper's CIFAR-10 row, and the DDIM paper's S = 50 row:
      python3 scripts/run_cifar.py reproduce --checkpoint=/data/diffusion_cifar10_model/model.ckpt-790000 \\
        --inception_graph=/data/frozen_inception_v1_2015_12_05_v4.tar.gz --tfds_data_dir=/data/tensorflow_datasets
      python3 scripts/run_cifar.py reproduce --checkpoint=... --sampler=ddim --num_inference_steps=50 \\
        --skip_type=quad

    Args:
      model_dir, checkpoint, sampler, num_inference_steps, eta, skip_type, skip_prk_steps, seed, ema, batch_size,
        num_gpus: as for `sample` (its training-kwargs flags too, e.g. --model_name for a released checkpoint).
      features: inception (the paper's numbers; --inception_graph or $DIFFUSION_TF_INCEPTION_GRAPH) or digits (the
        offline stand-in for the digits dataset: digits-IS and digits-FID).
      stats_dir: where the real data's statistics are cached (default: next to the data, as `evaluation` does).
      bpd: also the test set's bits/dim (the variational bound, all T terms); --bpd_batches limits the batches.
      real_split: measure the dataset's own train or test images instead of samples (the real-data floor); takes
        --dataset/--resolution instead of a checkpoint.
      out_dir: default <model_dir or checkpoint dir>/reproduce/<sampler><steps>_<ema>_seed<seed>_n<num_samples>.
    """
    # -- flags (the sampling flags are checked by `sample` before anything is built)
    flags.check_choice('features', features, FEATURES)
    flags.check_int('num_samples', num_samples, minimum=2)
    flags.check_int('num_splits', num_splits)
    if num_samples < num_splits:
      raise UsageError('num_samples={} is smaller than num_splits={}; expected at least one sample per '
                                 'Inception Score split'.format(num_samples, num_splits))
    bpd = flags.check_bool('bpd', bpd)
    flags.check_int('bpd_batches', bpd_batches, allow_none=True)
    ema = flags.check_bool('ema', ema)
    if real_split is not None:
      flags.check_choice('real_split', real_split, REAL_SPLITS)
      if bpd:
        raise UsageError('--bpd needs a model; drop it with --real_split')
      unknown = sorted(set(overrides) - {'dataset', 'resolution'})
      if unknown:
        raise UsageError('{} do(es) not apply to --real_split; expected only --dataset and '
                                   '--resolution'.format(', '.join('--' + k for k in unknown)))
    elif model_dir is None and checkpoint is None:
      raise UsageError('give --model_dir or --checkpoint (or --real_split to measure real images)')
    if real_split is None:
      base = model_dir or (checkpoint if os.path.isdir(str(checkpoint)) else os.path.dirname(str(checkpoint)))
      default_name = '{}{}{}_{}_seed{}_n{}'.format(
        sampler, num_inference_steps or '', '' if skip_type == 'uniform' else '_' + skip_type,
        'ema' if ema else 'noema', seed, num_samples)
    else:
      base, default_name = os.getcwd(), 'real_{}'.format(real_split)
    out_dir = os.path.abspath(out_dir or os.path.join(base, 'reproduce', default_name))
    check_writable_dir(out_dir, 'out_dir')

    # -- the feature network first: a missing Inception graph fails before any sampling
    if features == 'inception':
      extractor = inception.InceptionExtractor(path=inception_graph)
    else:
      extractor = DigitsClassifier()

    # -- the images
    if real_split is None:
      sample_dir = os.path.join(out_dir, 'samples')
      if not os.path.isfile(os.path.join(sample_dir, 'info.json')):
        sample_command(model_dir=model_dir, checkpoint=checkpoint, out_dir=sample_dir, num_samples=num_samples,
                       batch_size=batch_size, sampler=sampler, num_inference_steps=num_inference_steps, eta=eta,
                       skip_type=skip_type, skip_prk_steps=skip_prk_steps, seed=seed, output_type='npz', ema=ema,
                       num_gpus=num_gpus, **overrides)
      with open(os.path.join(sample_dir, 'info.json')) as f:
        sampling = json.load(f)
      for key, want in [('num_samples', num_samples), ('sampler', sampler), ('seed', seed), ('ema', ema),
                        ('skip_type', skip_type)]:
        if sampling.get(key) != want:
          raise UsageError('{} holds samples with {}={!r}, not {!r}; expected a fresh --out_dir'.format(
            sample_dir, key, sampling.get(key), want))
      with np.load(os.path.join(sample_dir, 'samples.npz')) as f:
        images = f['arr_0']
      dataset_name, image_size = sampling['dataset'], sampling['image_size']
      sampling['num_diffusion_timesteps'] = _kwargs_of(script, sampling)['num_diffusion_timesteps']
    else:
      defaults = flags.default_kwargs(script.train_fn)
      dataset_name = overrides.get('dataset', defaults.get('dataset'))
      image_size = overrides.get('resolution') or flags.IMAGE_SIZES[dataset_name]
      sampling = {'real_split': real_split, 'dataset': dataset_name, 'image_size': image_size}
    ds = datasets.get_dataset(dataset_name, tfds_data_dir=tfds_data_dir,
                              resolution=image_size if dataset_name == 'digits' else None)
    if real_split is not None:
      images = real_images(ds, real_split)
      if len(images) > num_samples:
        images = images[:num_samples]

    # -- the numbers
    stats_dir = stats_dir or evaluation.default_stats_dir(dataset_name, tfds_data_dir=tfds_data_dir)
    refs = reference_stats(ds, extractor, stats_dir)
    print('measuring {} images with {} ({}) against {}'.format(
      len(images), features, extractor.graph_sha256[:12], ', '.join(path for _, path in refs.values())))
    result_metrics = measure(images, extractor, refs, num_splits=num_splits)
    if bpd:
      worker = SimpleEvalWorker(tpu_name=None,
                                model_constructor=lambda: script.load_model(_kwargs_of(script, sampling), ds),
                                total_bs=batch_size if ds.num_eval_examples >= batch_size else ds.num_eval_examples,
                                dataset=ds, num_gpus=num_gpus)
      bpd_path = worker.run(mode='bpd_eval', logdir=out_dir, load_ckpt=sampling['checkpoint'], ema=ema,
                            max_batches=bpd_batches, seed=seed)
      with np.load(bpd_path) as f:
        result_metrics['bits_per_dim'] = float(f['total_bpd'].mean())
        result_metrics['bits_per_dim_num_images'] = int(f['total_bpd'].shape[0])

    result = {
      'label': row_label(sampling), 'dataset': dataset_name, 'image_size': image_size, 'features': features,
      'feature_network': {'path': extractor.graph_path, 'sha256': extractor.graph_sha256},
      'reference_statistics': {split: path for split, (_, path) in refs.items()},
      'sampling': sampling, 'metrics': result_metrics, 'num_splits': num_splits,
      'samples': None if real_split else os.path.join(out_dir, 'samples', 'samples.npz'),
    }
    table = format_table(result)
    utils.write_json_atomic(os.path.join(out_dir, 'results.json'), result)
    utils.atomic_write_bytes(os.path.join(out_dir, 'table.md'), table.encode('utf-8'))
    print(table + 'wrote {} and {}'.format(os.path.join(out_dir, 'table.md'), os.path.join(out_dir, 'results.json')))
    return result

  return reproduce


def _kwargs_of(script, sampling):
  """The training kwargs a sample dump was drawn with (its kwargs.json, else the script's defaults) + overrides."""
  path = sampling.get('kwargs_json')
  kwargs = run_dir.load_train_kwargs(os.path.dirname(path)) if path else flags.default_kwargs(script.train_fn)
  return dict(kwargs, **(sampling.get('overrides') or {}))
