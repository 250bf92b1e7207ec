"""The measured tables and pictures of docs/editing.md, on a digits model (the demo's: scripts/demo.py):

  1. inpainting of the held-out digits with their right half masked: the digits classifier's accuracy
     (evaluation/digits_classifier.py) on the inpainted digits against the true labels, RePaint (jumps) against
     replacing the known part at every step (jump_n_sample=1) at the same number of network calls, eta 0 and 1;
  2. DDIM inversion then DDIM decoding (eta 0, the same steps): the reconstruction error per step count;
  3. pictures: resources/editing_inpaint.png, editing_img2img.png, editing_inversion.png.

Everything runs in this process with the library loops (editing.py) on the EMA weights, noise seeded as the
commands' (generate/seeded.SeededNoise, seed 0, batch 0). Prints the markdown tables and writes results.json.

  PYTHONPATH=. nice -n 10 .venv/bin/python tools/editing_digits_table.py MODEL_DIR OUT_DIR [--pictures=resources]
    [--num_digits=N]
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from diffusion_tf.cli import runner  # noqa: E402  (pure Python: TensorFlow is quieted before it loads)

runner.quiet_tensorflow()

import tensorflow.compat.v1 as tf  # noqa: E402

from diffusion_tf import editing, utils  # noqa: E402
from diffusion_tf.data import catalog as datasets  # noqa: E402
from diffusion_tf.data.catalog import DatasetInfo  # noqa: E402
from diffusion_tf.evaluation import digits_classifier  # noqa: E402
from diffusion_tf.experiments import cifar10  # noqa: E402
from diffusion_tf.generate.seeded import SeededNoise, run_seeded  # noqa: E402
from diffusion_tf.runs import devices, run_dir  # noqa: E402

SIZE = 8
# (name, options) of the inpainting rows; RePaint (S = 25, L = 5, n = 5) makes 25 + 4 * 5 * 4 = 105 network calls,
# the same as 105 steps without jumps
INPAINT_ROWS = [
  ('replace the known part, 105 steps, eta 0', dict(num_inference_steps=105, jump_length=1, jump_n_sample=1, eta=0.)),
  ('RePaint 25 steps, jumps of 5 x 5, eta 0', dict(num_inference_steps=25, jump_length=5, jump_n_sample=5, eta=0.)),
  ('replace the known part, 105 steps, eta 1', dict(num_inference_steps=105, jump_length=1, jump_n_sample=1, eta=1.)),
  ('RePaint 25 steps, jumps of 5 x 5, eta 1', dict(num_inference_steps=25, jump_length=5, jump_n_sample=5, eta=1.)),
]
INVERSION_STEPS = (10, 50)
STRENGTHS = (0.3, 0.5, 0.8)
IMG2IMG_STEPS = 20  # DDIM steps below the strength's noise level
PICTURE_DIGITS = 8
ZOOM = 8


def held_out_digits():
  """The digits' held-out split (after datasets.DIGITS_NUM_TRAIN) as uint8 [N, 8, 8, 3] and their labels [N]."""
  images, labels = digits_classifier._labelled_digits()
  n = datasets.DIGITS_NUM_TRAIN
  return images[n:], labels[n:]


def run_all(model_dir, images, mask, builders):
  """{name: float [N, ...] outputs} of builders {name: fn(model, image, mask, noise_fn) -> tensor}, one graph each
  way: images and mask fed whole, noise seeded (seed 0, batch 0)."""
  with open(os.path.join(model_dir, 'kwargs.json')) as f:
    kwargs = json.load(f)
  ckpt = run_dir.resolve_checkpoint(model_dir)
  out = {}
  with tf.Graph().as_default():
    model = cifar10.load_model(kwargs, DatasetInfo(SIZE))
    image_ph = tf.placeholder(tf.float32, [len(images), SIZE, SIZE, 3])
    mask_ph = tf.placeholder(tf.float32, [len(images), SIZE, SIZE, 1])
    built = {}
    for name, fn in builders.items():
      noise = SeededNoise()
      built[name] = (noise, fn(model, image_ph, mask_ph, noise))
    with run_dir.open_restored_session(devices.choose_distribution(num_gpus=None), ckpt, True) as sess:
      feed = {image_ph: utils.normalize_data(images.astype(np.float32)), mask_ph: mask}
      for name, (noise, tensor) in built.items():
        start = time.time()
        out[name] = run_seeded(sess, tensor, [noise], 0, 0, feed=feed)
        print('{}: {:.0f} s'.format(name, time.time() - start), flush=True)
  return out, ckpt, model.diffusion


def zoom(images):
  return np.repeat(np.repeat(images, ZOOM, axis=-3), ZOOM, axis=-2)


def save_rows(path, columns):
  """One row per digit, one column per array of uint8 [n, 8, 8, 3], enlarged ZOOM times."""
  grid = np.stack([zoom(c) for c in columns], axis=1)
  utils.save_tiled_imgs(path, grid.reshape(-1, *grid.shape[2:]), num_col=len(columns), pad_pixels=2)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('model_dir')
  parser.add_argument('out_dir')
  parser.add_argument('--pictures', default=None, help='directory for the three PNGs (default: out_dir)')
  parser.add_argument('--num_digits', type=int, default=None, help='the first N held-out digits (default: all)')
  args = parser.parse_args(argv)
  os.makedirs(args.out_dir, exist_ok=True)
  pictures = args.pictures or args.out_dir
  images, labels = held_out_digits()
  images, labels = images[:args.num_digits], labels[:args.num_digits]
  N = len(images)
  mask = np.zeros([N, SIZE, SIZE, 1], np.float32)
  mask[:, :, :SIZE // 2] = 1.  # keep the left half, generate the right half

  def _inpaint(options):
    return lambda model, image, m, noise: model.inpaint_fn(image, m, tf.zeros([N], tf.int32), noise_fn=noise,
                                                           **options)['samples']

  def _img2img(strength):
    return lambda model, image, m, noise: model.img2img_fn(image, tf.zeros([N], tf.int32), strength=strength,
                                                           sampler='ddim', num_inference_steps=IMG2IMG_STEPS,
                                                           noise_fn=noise)['samples']

  def _invert(steps, clip):
    return lambda model, image, m, noise: model.invert_fn(image, tf.zeros([N], tf.int32), num_inference_steps=steps,
                                                          clip_denoised=clip)

  builders = {name: _inpaint(options) for name, options in INPAINT_ROWS}
  builders.update({'img2img {:g}'.format(s): _img2img(s) for s in STRENGTHS})
  builders.update({'invert {} clip{:d}'.format(S, clip): _invert(S, clip) for S in INVERSION_STEPS
                   for clip in (True, False)})
  out, ckpt, diffusion = run_all(args.model_dir, images, mask, builders)

  classifier = digits_classifier.DigitsClassifier()

  def accuracy(x):
    return float(np.mean(np.argmax(classifier.features(x)[1], axis=1) == labels))

  half = images * mask.astype(np.uint8)  # the right half black
  rows = [('the held-out digits themselves', accuracy(images), 0),
          ('left half only (right half black, no inpainting)', accuracy(half), 0)]
  for name, options in INPAINT_ROWS:
    plan = editing.repaint_plan(diffusion.alphas_cumprod, diffusion.betas, options['num_inference_steps'],
                                options['jump_length'], options['jump_n_sample'], options['eta'])
    result = utils.to_uint8(out[name])
    known = np.broadcast_to(mask, result.shape) == 1
    assert np.array_equal(result[known], images[known]), name  # RePaint keeps the known pixels exactly
    rows.append((name, accuracy(result), plan['num_network_calls']))
  se = [np.sqrt(a * (1 - a) / N) for _, a, _ in rows]
  lines = ['| inpainting (right half of {} held-out digits) | network calls | digits-classifier accuracy |'.format(N),
           '| --- | --- | --- |']
  lines += ['| {} | {} | {:.3f} +- {:.3f} |'.format(name, calls or '-', a, s) for (name, a, calls), s in zip(rows, se)]
  inversion = []
  lines += ['', '| inversion + decoding, steps each way | clip | max abs error (levels 0..255) | mean abs error | '
            'RMSE in [-1, 1] |', '| --- | --- | --- | --- | --- |']
  for S in INVERSION_STEPS:
    for clip in (True, False):
      rec = out['invert {} clip{:d}'.format(S, clip)]['samples']
      diff = np.abs(utils.to_uint8(rec).astype(np.int64) - images.astype(np.int64))
      rmse = float(np.sqrt(np.mean((rec - utils.normalize_data(images.astype(np.float64))) ** 2)))
      inversion.append(dict(steps=S, clip=clip, max_abs=int(diff.max()), mean_abs=float(diff.mean()), rmse=rmse))
      lines.append('| {} | {} | {} | {:.2f} | {:.4f} |'.format(S, 'yes' if clip else 'no', diff.max(), diff.mean(),
                                                               rmse))
  print('\n'.join(lines))
  with open(os.path.join(args.out_dir, 'results.json'), 'w') as f:
    json.dump(dict(checkpoint=ckpt, num_digits=N, inpainting=[dict(name=n, accuracy=a, network_calls=c)
                                                               for n, a, c in rows], inversion=inversion), f,
              indent=2)
  with open(os.path.join(args.out_dir, 'tables.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')

  k = PICTURE_DIGITS
  grey_mask = np.repeat((mask[:k] * 255).astype(np.uint8), 3, axis=-1)
  save_rows(os.path.join(pictures, 'editing_inpaint.png'),
            [images[:k], grey_mask, half[:k], utils.to_uint8(out[INPAINT_ROWS[0][0]][:k]),
             utils.to_uint8(out[INPAINT_ROWS[1][0]][:k])])
  save_rows(os.path.join(pictures, 'editing_img2img.png'),
            [images[:k]] + [utils.to_uint8(out['img2img {:g}'.format(s)][:k]) for s in STRENGTHS])
  inv = out['invert 50 clip1']
  save_rows(os.path.join(pictures, 'editing_inversion.png'),
            [images[:k], utils.to_uint8(np.clip(inv['latents'][:k] / 3., -1., 1.)), utils.to_uint8(inv['samples'][:k])])
  print('wrote {} and the pictures in {}'.format(os.path.join(args.out_dir, 'tables.md'), pictures))


if __name__ == '__main__':
  main()
