"""The flags of `run_cifar.py inpaint`, `img2img` and `invert` (cli/editing.py; the three scripts share the code):
each command runs once end to end through its command line on the shared tiny digits run (8x8, T = 10, shared with
test_flags_reproduce_editing.py), and its results.npz must hold exactly the images computed here from the same
checkpoint with the library loop the flags name (model.inpaint_fn / img2img_fn / invert_fn, whose numbers
tests/test_editing.py proves against diffusers), batch by batch with the documented seeded noise. The same
computation with each flag at another value (its default, or another seed, the raw weights, one batch) must give
other images, so a flag dropped after validation fails here. Bad input is checked in-process, without a model.
"""

import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from support.scripts import LARGE_LR_FLAGS, assert_one_error, load_npz, load_script, run_main

from diffusion_tf import utils
from diffusion_tf.cli import editing
from diffusion_tf.data import catalog as datasets
from diffusion_tf.data.catalog import DatasetInfo
from diffusion_tf.errors import UsageError
from diffusion_tf.generate.seeded import SeededNoise, run_seeded
from diffusion_tf.runs import devices, run_dir

SIZE = 8


@pytest.fixture(scope='module')
def edit_run(tiny_run, tmp_path_factory):
  """The tiny run_cifar run of test_flags_reproduce_editing.py (read-only), three held-out digits as an .npz and as
  a directory of PNGs, and a mask PNG keeping the left half."""
  root = tmp_path_factory.mktemp('edit')
  model_dir = tiny_run('run_cifar', max_steps=2, **LARGE_LR_FLAGS)
  pixels = datasets.load_digits_images(SIZE)[-3:]
  np.savez(str(root / 'digits.npz'), arr_0=pixels)
  os.makedirs(str(root / 'pngs'))
  for i, img in enumerate(pixels):
    utils.write_png(str(root / 'pngs' / '{}.png'.format(i)), img)
  mask = np.zeros((SIZE, SIZE), np.uint8)
  mask[:, :SIZE // 2] = 255
  Image.fromarray(mask, 'L').save(str(root / 'left.png'))
  return dict(root=root, model_dir=model_dir, pixels=pixels, mask=(mask == 255).astype(np.float32)[..., None])


def _reference(model_dir, images, masks, batch_size, variants):
  """The uint8 results of each variant (checkpoint number, ema, seed, fn(model, y, noise_fn, images, masks) ->
  {'samples'}) run batch by batch as EditDump does (the last batch padded with the last image; batch b's noise from
  (seed, b))."""
  script = load_script('run_cifar')
  with open(os.path.join(model_dir, 'kwargs.json')) as f:
    kwargs = json.load(f)
  N = len(images)
  results = []
  for step, ema in sorted({v[:2] for v in variants}):
    ckpt = os.path.join(model_dir, 'model.ckpt-{}'.format(step))
    with tf.Graph().as_default():
      model = script._load_model(kwargs, DatasetInfo(SIZE))
      image_ph = tf.placeholder(tf.float32, [batch_size, SIZE, SIZE, 3])
      mask_ph = tf.placeholder(tf.float32, [batch_size, SIZE, SIZE, 1])
      built = []
      for i, (v_step, v_ema, seed, fn) in enumerate(variants):
        if (v_step, v_ema) == (step, ema):
          noise = SeededNoise()
          built.append((i, seed, noise, fn(model, tf.zeros([batch_size], tf.int32), noise, image_ph, mask_ph)))
      with run_dir.open_restored_session(devices.choose_distribution(num_gpus=None), ckpt, ema) as sess:
        for i, seed, noise, out in built:
          parts = []
          for b in range(-(-N // batch_size)):
            index = np.minimum(np.arange(b * batch_size, (b + 1) * batch_size), N - 1)
            feed = {image_ph: utils.normalize_data(images[index].astype(np.float32)), mask_ph: masks[index]}
            parts.append(run_seeded(sess, out['samples'], [noise], seed, b, feed=feed))
          results.append((i, utils.to_uint8(np.concatenate(parts)[:N])))
  return [r for _, r in sorted(results, key=lambda item: item[0])]


def _assert_distinct(expected, others):
  for name, other in others.items():
    assert np.any(other != expected), 'the flag {} made no difference here'.format(name)


def test_inpaint_flags_give_the_repaint_loop_of_those_settings(edit_run, capsys, tmp_path):
  run = edit_run
  ckpt = os.path.join(run['model_dir'], 'model.ckpt-1')
  out_dir = str(tmp_path / 'inpaint')
  args = ['inpaint', '--checkpoint={}'.format(ckpt), '--images={}'.format(run['root'] / 'digits.npz'),
          '--mask={}'.format(run['root'] / 'left.png'), '--num_inference_steps=5', '--jump_length=2',
          '--jump_n_sample=3', '--eta=0.5', '--batch_size=2', '--seed=3', '--out_dir={}'.format(out_dir)]
  code, _, err = run_main(capsys, 'run_cifar', args)
  assert code == 0, err
  results = load_npz(os.path.join(out_dir, 'results.npz'))
  masks = np.repeat(run['mask'][None], 3, axis=0)

  def repaint(**changes):
    options = dict(dict(num_inference_steps=5, jump_length=2, jump_n_sample=3, eta=0.5), **changes)
    return lambda model, y, noise_fn, image, mask: model.inpaint_fn(image, mask, y, noise_fn=noise_fn, **options)

  expected, *others = _reference(run['model_dir'], run['pixels'], masks, 2, [
    (1, True, 3, repaint()), (1, True, 3, repaint(num_inference_steps=4)), (1, True, 3, repaint(jump_length=3)),
    (1, True, 3, repaint(jump_n_sample=1)), (1, True, 3, repaint(eta=0.)), (1, True, 0, repaint()),
    (2, True, 3, repaint())])
  np.testing.assert_array_equal(results, expected)
  _assert_distinct(expected, dict(zip(['num_inference_steps', 'jump_length', 'jump_n_sample', 'eta', 'seed',
                                       'checkpoint'], others)))
  known = np.broadcast_to(masks, results.shape) == 1  # --mask: white pixels are the image's
  np.testing.assert_array_equal(results[known], run['pixels'][known])
  assert np.any(results[~known] != run['pixels'][~known])
  with np.load(os.path.join(out_dir, 'results.npz')) as f:
    np.testing.assert_array_equal(f['inputs'], run['pixels'])
    np.testing.assert_array_equal(f['masks'], masks.astype(np.uint8))
  assert sorted(os.listdir(os.path.join(out_dir, 'images'))) == ['000000.png', '000001.png', '000002.png']
  assert Image.open(os.path.join(out_dir, 'grid.png')).size[0] > 3 * SIZE  # input | mask | result
  code, _, err = run_main(capsys, 'run_cifar', args)
  assert_one_error(code, err, 'never overwritten')


def test_img2img_flags_give_sdedit_of_those_settings(edit_run, capsys, tmp_path):
  run = edit_run
  out_dir = str(tmp_path / 'img2img')
  args = ['img2img', '--model_dir={}'.format(run['model_dir']), '--images={}'.format(run['root'] / 'pngs'),
          '--strength=0.7', '--sampler=ddim', '--num_inference_steps=3', '--eta=1', '--skip_type=quad',
          '--batch_size=2', '--seed=1', '--noema', '--out_dir={}'.format(out_dir)]
  code, _, err = run_main(capsys, 'run_cifar', args)
  assert code == 0, err
  results = load_npz(os.path.join(out_dir, 'results.npz'))

  def sdedit(strength=0.7, **changes):
    options = dict(dict(sampler='ddim', num_inference_steps=3, eta=1., skip_type='quad'), **changes)
    return lambda model, y, noise_fn, image, mask: model.img2img_fn(image, y, strength=strength, noise_fn=noise_fn,
                                                                   **options)

  none = np.zeros([3, SIZE, SIZE, 1], np.float32)
  expected, *others = _reference(run['model_dir'], run['pixels'], none, 2, [
    (2, False, 1, sdedit()), (2, False, 1, sdedit(strength=0.5)),
    (2, False, 1, sdedit(sampler='ddpm', eta=0.)),
    (2, False, 1, sdedit(num_inference_steps=2)), (2, False, 1, sdedit(eta=0.)),
    (2, False, 1, sdedit(skip_type='uniform')), (2, False, 0, sdedit()), (2, True, 1, sdedit())])
  np.testing.assert_array_equal(results, expected)
  _assert_distinct(expected, dict(zip(['strength', 'sampler', 'num_inference_steps', 'eta', 'skip_type', 'seed',
                                       'ema'], others)))


def test_invert_flags_give_the_ddim_inversion_and_its_decoding(edit_run, capsys, tmp_path):
  run = edit_run
  out_dir = str(tmp_path / 'invert')
  args = ['invert', '--model_dir={}'.format(run['model_dir']), '--images={}'.format(run['root'] / 'digits.npz'),
          '--num_inference_steps=5', '--clip_denoised', '--batch_size=2', '--out_dir={}'.format(out_dir)]
  code, _, err = run_main(capsys, 'run_cifar', args)
  assert code == 0, err
  with np.load(os.path.join(out_dir, 'results.npz')) as f:
    results, latents = f['arr_0'], f['latents']

  def invert(**changes):
    options = dict(dict(num_inference_steps=5, clip_denoised=True), **changes)
    return lambda model, y, noise_fn, image, mask: {
      'samples': model.invert_fn(image, y, **options)['latents'] / 3.}  # latents through to_uint8, as a check

  none = np.zeros([3, SIZE, SIZE, 1], np.float32)
  expected, fewer, unclipped = _reference(run['model_dir'], run['pixels'], none, 2, [
    (2, True, 0, invert()), (2, True, 0, invert(num_inference_steps=3)), (2, True, 0, invert(clip_denoised=False))])
  np.testing.assert_array_equal(utils.to_uint8(latents / 3.), expected)
  _assert_distinct(expected, dict(num_inference_steps=fewer, clip_denoised=unclipped))
  info = json.load(open(os.path.join(out_dir, 'info.json')))
  diff = np.abs(results.astype(int) - run['pixels'].astype(int))
  assert info['reconstruction_max_abs_error'] == diff.max() and info['num_inference_steps'] == 5


def test_editing_inputs_are_checked_with_one_clear_error(tmp_path):
  img = np.zeros((SIZE, SIZE, 3), np.uint8)
  utils.write_png(str(tmp_path / 'big.png'), np.zeros((16, 16, 3), np.uint8))
  np.savez(str(tmp_path / 'float.npz'), arr_0=img.astype(np.float32)[None])
  Image.fromarray(np.full((SIZE, SIZE), 128, np.uint8), 'L').save(str(tmp_path / 'grey.png'))
  Image.fromarray(np.zeros((SIZE, SIZE, 4), np.uint8), 'RGBA').save(str(tmp_path / 'rgba.png'))
  Image.fromarray(np.zeros((4, 4), np.uint8), 'L').save(str(tmp_path / 'small.png'))
  bad = [
    (lambda: editing.read_images(tmp_path / 'big.png', SIZE), "is 16x16; expected an image of the model's size 8x8"),
    (lambda: editing.read_images(tmp_path / 'float.npz', SIZE), 'expected arr_0 uint8 [N, 8, 8, 3]'),
    (lambda: editing.read_images(tmp_path / 'none.png', SIZE), 'does not exist'),
    (lambda: editing.read_masks(tmp_path / 'grey.png', 2, SIZE), 'has grey levels [128]; expected black'),
    (lambda: editing.read_masks(tmp_path / 'rgba.png', 2, SIZE), 'has mode RGBA; expected a grey'),
    (lambda: editing.read_masks(tmp_path / 'small.png', 2, SIZE), "is 4x4; expected an image of the model's size"),
    (lambda: editing.read_masks(tmp_path / 'big.jpg', 2, SIZE), 'is not a PNG'),
  ]
  for fn, message in bad:
    with pytest.raises(UsageError) as e:
      fn()
    assert message in str(e.value), (message, str(e.value))
  mask = np.zeros((SIZE, SIZE, 3), np.uint8)
  mask[:, :2] = 255
  Image.fromarray(mask, 'RGB').save(str(tmp_path / 'rgb.png'))
  masks = editing.read_masks(tmp_path / 'rgb.png', 2, SIZE)
  assert masks.shape == (2, SIZE, SIZE, 1) and masks[:, :, :2].all() and not masks[:, :, 2:].any()


@pytest.mark.parametrize('argv,message', [
  (['img2img', '--images=x.png', '--model_dir=/nonexistent', '--strength=1.5'], 'strength=1.5; expected a number'),
  (['img2img', '--images=x.png', '--model_dir=/nonexistent', '--strength=0'], 'strength=0; expected a number in (0'),
  (['inpaint', '--images=x.png', '--mask=m.png', '--model_dir=/nonexistent', '--eta=2'], 'eta=2; expected a number'),
  (['inpaint', '--images=x.png', '--mask=m.png', '--model_dir=/nonexistent', '--jump_length=0'], 'jump_length=0'),
  (['invert', '--images=x.png', '--model_dir=/nonexistent'], "model_dir='/nonexistent' does not exist"),
])
def test_editing_flags_are_checked_before_the_model_is_read(capsys, argv, message):
  code, _, err = run_main(capsys, 'run_cifar', argv)
  assert_one_error(code, err, message)


def test_editing_num_gpus_reaches_the_device_choice(edit_run, capsys, tmp_path):
  """--num_gpus=1 with no GPU: an error naming the flag and the 0 visible GPUs, from the dump's device choice
  (nothing written), for each of the three commands."""
  base = ['--model_dir={}'.format(edit_run['model_dir']), '--images={}'.format(edit_run['root'] / 'digits.npz'),
          '--num_gpus=1']
  for command, extra in [('inpaint', ['--mask={}'.format(edit_run['root'] / 'left.png'), '--num_inference_steps=5']),
                         ('img2img', []), ('invert', ['--num_inference_steps=5'])]:
    out_dir = tmp_path / command
    code, _, err = run_main(capsys, 'run_cifar', [command] + base + extra + ['--out_dir={}'.format(out_dir)])
    assert_one_error(code, err, 'num_gpus=1', '0 visible GPU')
    assert not os.path.exists(str(out_dir / 'results.npz'))
