"""`run_cifar.py reproduce`: the paper's sample-quality protocol (evaluation/protocol.py) as one command. It draws
the samples with the script's `sample` command (seeded, resumable, all local GPUs), measures them with the Inception
graph or, offline, the digits classifier, and writes the table and a JSON with everything needed to redo it.
"""

import json
import os
import sys

import numpy as np

from .. import checks, provenance, utils
from ..data import catalog
from ..errors import UsageError
from ..evaluation import feature_networks, protocol, watcher
from ..evaluation.simple_eval import SimpleEvalWorker
from ..experiments import model_source
from ..runs.paths import check_writable_dir
from ..sampler_schedules import sampler_settings_name
from . import commands, runner


def make_reproduce_command(script, sample_command):
  """The `reproduce` subcommand of a script; `sample_command` is its `sample` (commands.make_sample_command)."""
  def reproduce(model_dir=None, checkpoint=None, out_dir=None, num_samples=50000, batch_size=250, sampler='ddpm',
                num_inference_steps=None, eta=0., skip_type=None, skip_prk_steps=False, seed=0, ema=True,
                features='inception', inception_graph=None, stats_dir=None, tfds_data_dir='tensorflow_datasets',
                num_splits=10, bpd=False, bpd_batches=None, real_split=None, num_gpus=None, solver_order=None,
                **overrides):
    """The paper's protocol: samples, IS (10 splits), FID against the train and test sets, a table and a JSON.

    Draws --num_samples samples (default 50,000, the paper's) from the checkpoint with any sampler (the `sample`
    command's dump in <out_dir>/samples: seeded, resumable, all local GPUs), measures them, and writes
    <out_dir>/table.md (the measured row beside the published CIFAR-10 figures, labelled as references) and
    <out_dir>/results.json (checkpoint, step, sampler, steps, spacing, solver order, seed, feature network and its
    sha256, statistics files, numbers). A rerun reuses finished samples and cached statistics.

    The paper's CIFAR-10 row, and the DDIM paper's S = 50 row:
      python3 scripts/run_cifar.py reproduce --checkpoint=/data/diffusion_cifar10_model/model.ckpt-790000 \\
        --inception_graph=/data/frozen_inception_v1_2015_12_05_v4.tar.gz --tfds_data_dir=/data/tensorflow_datasets
      python3 scripts/run_cifar.py reproduce --checkpoint=... --sampler=ddim --num_inference_steps=50 \\
        --skip_type=quad

    Args:
      model_dir, checkpoint, sampler, num_inference_steps, eta, skip_type, skip_prk_steps, solver_order, seed, ema,
        batch_size, num_gpus: as for `sample` (its training-kwargs flags too, e.g. --model_name for a released
        checkpoint).
      features: inception (the paper's numbers; --inception_graph or $DIFFUSION_TF_INCEPTION_GRAPH) or digits (the
        offline stand-in for the digits dataset: digits-IS and digits-FID).
      stats_dir: where the real data's statistics are cached (default: next to the data, as `evaluation` does).
      bpd: also the test set's bits/dim (the variational bound, all T terms); --bpd_batches limits the batches.
      real_split: measure the dataset's own train or test images instead of samples (the real-data floor); takes
        --dataset/--resolution (and, for a folder of images, --data_dir/--eval_fraction) instead of a checkpoint.
      out_dir: default <model_dir or checkpoint dir>/reproduce/<sampler><steps>[_order<k>][_<spacing>]_<ema>_seed<seed>
        _n<num_samples> (the spacing named when not uniform, and always for the solvers).
    """
    _check_protocol_flags(features=features, inception_graph=inception_graph, num_samples=num_samples,
                          num_splits=num_splits, bpd=bpd, bpd_batches=bpd_batches, real_split=real_split,
                          overrides=overrides, has_model=model_dir is not None or checkpoint is not None)
    bpd, ema = checks.check_bool('bpd', bpd), checks.check_bool('ema', ema)
    # normalized here (the defaults filled in) so that the directory name and the reuse check see what `sample` does
    options = commands._check_sampler_flags(
      sampler=sampler, num_inference_steps=num_inference_steps, eta=eta, use_clipped_model_output=False,
      skip_prk_steps=skip_prk_steps, skip_type=skip_type, solver_order=solver_order, progressive=False)
    sampler_flags = dict({k: options[k] for k in ('sampler', 'num_inference_steps', 'eta', 'skip_type',
                                                  'skip_prk_steps', 'solver_order')}, seed=seed, ema=ema)
    source = None
    if real_split is None:  # the run or checkpoint first: a missing one fails before any directory, download or graph
      source = model_source.resolve_model_source(script, model_dir, checkpoint, overrides, command='reproduce',
                                                 printer=lambda *_: None)  # `sample` says it when it samples
    out_dir = _out_dir(out_dir, model_dir, checkpoint, real_split, num_samples=num_samples, **sampler_flags)
    check_writable_dir(out_dir, 'out_dir')
    # the feature network next: a missing Inception graph fails before any sampling
    extractor = feature_networks.make_extractor(features, inception_graph=inception_graph)

    if real_split is None:
      images, sampling = _model_samples(sample_command, source, os.path.join(out_dir, 'samples'), model_dir=model_dir,
                                        checkpoint=checkpoint, num_samples=num_samples, batch_size=batch_size,
                                        num_gpus=num_gpus, overrides=overrides, **sampler_flags)
      data_kwargs = source.kwargs
    else:
      defaults = checks.default_kwargs(script.train_fn)
      data_kwargs = dict(overrides, dataset=overrides.get('dataset', defaults.get('dataset')))
      sampling = {'real_split': real_split, 'dataset': data_kwargs['dataset'],
                  'image_size': catalog.image_size_of(data_kwargs)}
    ds = catalog.get_dataset(sampling['dataset'], tfds_data_dir=tfds_data_dir,
                             resolution=sampling['image_size'] if sampling['dataset'] in ('digits', 'folder') else None,
                             **catalog.folder_args(data_kwargs))
    if real_split is not None:
      images = protocol.real_images(ds, real_split)[:num_samples]

    stats_dir = stats_dir or watcher.default_stats_dir(sampling['dataset'], tfds_data_dir=tfds_data_dir)
    refs = watcher.reference_statistics(ds, extractor, stats_dir, max_images=50000)
    print('measuring {} images with {} ({}) against {}'.format(
      len(images), features, extractor.graph_sha256[:12], ', '.join(path for _, path in refs.values())))
    result_metrics = protocol.measure(images, extractor, refs, num_splits=num_splits)
    if bpd:
      result_metrics.update(_bits_per_dim(script, source, ds, out_dir, batch_size=batch_size, ema=ema,
                                          bpd_batches=bpd_batches, seed=seed, num_gpus=num_gpus))
    return _write_result(out_dir, sampling, extractor, refs, result_metrics, features=features,
                         num_splits=num_splits)

  return runner.extra_flags(reproduce, checks.default_kwargs(script.train_fn),
                            commands.TRAIN_KWARGS_ABOUT.format(script.name))


def _check_protocol_flags(*, features, inception_graph, num_samples, num_splits, bpd, bpd_batches, real_split,
                          overrides, has_model):
  """reproduce's own flags (the sampling flags are checked by `sample` before anything is built)."""
  feature_networks.check_features(features, inception_graph=inception_graph)
  checks.check_int('num_samples', num_samples, minimum=2)
  checks.check_int('num_splits', num_splits)
  if num_samples < num_splits:
    raise UsageError('num_samples={} is smaller than num_splits={}; expected at least one sample per Inception Score '
                     'split'.format(num_samples, num_splits))
  checks.check_int('bpd_batches', bpd_batches, allow_none=True)
  if real_split is not None:
    checks.check_choice('real_split', real_split, protocol.REAL_SPLITS)
    if checks.check_bool('bpd', bpd):
      raise UsageError('--bpd needs a model; drop it with --real_split')
    unknown = sorted(set(overrides) - {'dataset', 'resolution', 'data_dir', 'eval_fraction'})
    if unknown:
      raise UsageError('{} do(es) not apply to --real_split; expected only --dataset, --resolution, --data_dir and '
                       '--eval_fraction'.format(', '.join('--' + k for k in unknown)))
  elif not has_model:
    raise UsageError('give --model_dir or --checkpoint (or --real_split to measure real images)')


def _out_dir(out_dir, model_dir, checkpoint, real_split, *, sampler, num_inference_steps, skip_type, solver_order,
             ema, seed, num_samples, **_):
  """--out_dir, by default <model_dir or checkpoint dir>/reproduce/<sampler settings>_<ema>_seed<s>_n<N>, the
  settings of sampler_schedules.sampler_settings_name without eta (real images: ./reproduce/real_<split>)."""
  if real_split is not None:
    base, name = os.getcwd(), 'real_{}'.format(real_split)
  else:
    base = model_dir or (checkpoint if os.path.isdir(str(checkpoint)) else os.path.dirname(str(checkpoint)))
    name = '{}_{}_seed{}_n{}'.format(
      sampler_settings_name(sampler, num_inference_steps or None, skip_type=skip_type, solver_order=solver_order),
      'ema' if ema else 'noema', seed, num_samples)
  return os.path.abspath(out_dir or os.path.join(base, 'reproduce', name))


def _model_samples(sample_command, source, sample_dir, *, model_dir, checkpoint, num_samples, batch_size, num_gpus,
                   overrides, **sampler_flags):
  """(uint8 samples [N, H, W, 3], the dump's info.json) of the `sample` dump in sample_dir: drawn now, or those of
  an earlier run with the same settings (then the provenance warning that sampling would print is printed here)."""
  info_path = os.path.join(sample_dir, 'info.json')
  if os.path.isfile(info_path):
    warning = provenance.ema_warning(source.checkpoint, source.provenance) if sampler_flags['ema'] else None
    if warning:
      print(warning, file=sys.stderr)
  else:
    sample_command(model_dir=model_dir, checkpoint=checkpoint, out_dir=sample_dir, num_samples=num_samples,
                   batch_size=batch_size, output_type='npz', num_gpus=num_gpus, **sampler_flags, **overrides)
  with open(info_path) as f:
    sampling = json.load(f)
  for key in ('num_samples', 'sampler', 'seed', 'ema', 'skip_type', 'solver_order'):
    want = num_samples if key == 'num_samples' else sampler_flags[key]
    if sampling.get(key) != want:
      raise UsageError('{} holds samples with {}={!r}, not {!r}; expected a fresh --out_dir'.format(
        sample_dir, key, sampling.get(key), want))
  with np.load(os.path.join(sample_dir, 'samples.npz')) as f:
    images = f['arr_0']
  sampling['num_diffusion_timesteps'] = source.kwargs['num_diffusion_timesteps']
  return images, sampling


def _bits_per_dim(script, source, ds, out_dir, *, batch_size, ema, bpd_batches, seed, num_gpus):
  """The test set's bits/dim under the model (all T terms of the variational bound)."""
  worker = SimpleEvalWorker(tpu_name=None, model_constructor=lambda: script.load_model(source.kwargs, ds),
                            total_bs=batch_size if ds.num_eval_examples >= batch_size else ds.num_eval_examples,
                            dataset=ds, num_gpus=num_gpus)
  bpd_path = worker.run(mode='bpd_eval', logdir=out_dir, load_ckpt=source.checkpoint, ema=ema,
                        max_batches=bpd_batches, seed=seed)
  with np.load(bpd_path) as f:
    return {'bits_per_dim': float(f['total_bpd'].mean()), 'bits_per_dim_num_images': int(f['total_bpd'].shape[0])}


def _write_result(out_dir, sampling, extractor, refs, result_metrics, *, features, num_splits):
  """<out_dir>/results.json and table.md (rewritten by every run: they describe the latest measurement)."""
  result = {
    'label': protocol.row_label(sampling), 'dataset': sampling['dataset'], 'image_size': sampling['image_size'],
    'features': features, 'feature_network': {'path': extractor.graph_path, 'sha256': extractor.graph_sha256},
    'reference_statistics': {split: path for split, (_, path) in refs.items()},
    'sampling': sampling, 'metrics': result_metrics, 'num_splits': num_splits,
    'samples': None if sampling.get('real_split') else os.path.join(out_dir, 'samples', 'samples.npz'),
  }
  table = protocol.format_table(result)
  utils.write_json_atomic(os.path.join(out_dir, 'results.json'), result)
  utils.atomic_write_bytes(os.path.join(out_dir, 'table.md'), table.encode('utf-8'))
  print(table + 'wrote {} and {}'.format(os.path.join(out_dir, 'table.md'), os.path.join(out_dir, 'results.json')))
  return result
