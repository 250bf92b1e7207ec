"""utils.py: learning-rate warm-up, gradient clipping, EMA and its scope, image tiling, summaries."""

import glob
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from diffusion_tf import utils


def test_warmed_up_lr_is_linear_then_constant():
  with tf.Graph().as_default(), tf.Session() as sess:
    step = tf.placeholder(tf.int64, [])
    lr = utils.get_warmed_up_lr(max_lr=2e-4, warmup=5000, global_step=step)
    got = [sess.run(lr, {step: s}) for s in [0, 1, 2500, 5000, 100000]]
  np.testing.assert_allclose(got, [0., 2e-4 / 5000, 1e-4, 2e-4, 2e-4], rtol=1e-5)
  assert utils.get_warmed_up_lr(max_lr=1e-3, warmup=0, global_step=None) == 1e-3


def test_optimizer_clips_to_global_norm_and_reports_it():
  with tf.Graph().as_default(), tf.Session() as sess:
    w = tf.get_variable('w', initializer=tf.constant([3., 4.]))
    loss = tf.reduce_sum(w * tf.constant([30., 40.]))  # gradient (30, 40), norm 50
    step = tf.train.get_or_create_global_step()
    train_op, gnorm = utils.make_optimizer(loss=loss, trainable_variables=[w], global_step=step, tpu=False,
                                           optimizer='rmsprop', lr=0.1, grad_clip=1.)
    sess.run(tf.global_variables_initializer())
    _, g = sess.run([train_op, gnorm])
    assert g == pytest.approx(50.)
    assert sess.run(step) == 1
    with pytest.raises(NotImplementedError):
      utils.make_optimizer(loss=loss, trainable_variables=[w], global_step=step, tpu=False, optimizer='sgd',
                           lr=0.1, grad_clip=1.)


def test_ema_starts_at_the_weights_and_ema_scope_reads_the_shadows():
  with tf.Graph().as_default(), tf.Session() as sess:
    def net():
      return tf.get_variable('v', initializer=tf.constant(1.0)) * 1.
    out = net()
    v = tf.trainable_variables()[0]
    step = tf.train.get_or_create_global_step()
    ema, ema_op = utils.make_ema(global_step=step, ema_decay=0.5, trainable_variables=[v])
    with utils.ema_scope(ema):
      out_ema = net()
    assert [x.op.name for x in tf.global_variables()] == ['v', 'global_step', 'v/ExponentialMovingAverage']
    sess.run(tf.global_variables_initializer())
    sess.run(v.assign(3.))
    sess.run(ema_op)  # step 0: decay ~0, the shadow becomes the weights
    assert sess.run(out_ema) == pytest.approx(3.)
    sess.run([v.assign(5.), step.assign(1)])
    sess.run(ema_op)  # decay 0.5 (TF caps it at (1 + step) / (10 + step) only with num_updates, not used here)
    assert sess.run(out_ema) == pytest.approx(4.)
    assert sess.run(out) == pytest.approx(5.)


def test_tile_imgs_places_images_row_by_row():
  imgs = np.stack([np.full([2, 3, 3], i * 10, np.uint8) for i in range(5)])
  grid = utils.tile_imgs(imgs, pad_pixels=1, pad_val=255, num_col=3)
  # the original's layout: 2 pixels between neighbours, no outer frame
  assert grid.shape == (2 * (2 + 2) - 2, 3 * (3 + 2) - 2, 3)
  assert grid[0, 0, 0] == 0 and grid[0, 5, 0] == 10 and grid[0, 10, 0] == 20 and grid[4, 0, 0] == 30
  assert grid[4, 10, 0] == 255  # the empty sixth cell is padding
  assert grid[2:4].min() == 255 and grid[:, 3:5].min() == 255
  square = utils.tile_imgs(np.zeros([16, 4, 4, 1], np.uint8), pad_pixels=0)
  assert square.shape == (16, 16)
  assert utils.tile_imgs(imgs, pad_pixels=0).shape == (3 * 2, 3 * 3, 3)  # 5 images: a 3 x 3 square
  with pytest.raises(AssertionError, match='uint8'):
    utils.tile_imgs(np.zeros([2, 4, 4, 3], np.float32))


def test_save_tiled_imgs_writes_a_png_atomically(tmp_path):
  imgs = np.random.RandomState(0).randint(0, 256, [4, 8, 8, 3]).astype(np.uint8)
  path = str(tmp_path / 'grid.png')
  utils.save_tiled_imgs(path, imgs, pad_pixels=0)
  back = np.asarray(Image.open(path))
  np.testing.assert_array_equal(back, utils.tile_imgs(imgs, pad_pixels=0))
  assert os.listdir(str(tmp_path)) == ['grid.png']  # no temporary file left behind


def test_summary_writer_writes_scalars_and_images(tmp_path):
  with tf.Graph().as_default():
    w = utils.SummaryWriter(str(tmp_path), write_graph=False)
    w.scalar('train/loss', 0.5, step=3)
    w.images('samples', np.zeros([4, 8, 8, 3], np.uint8), step=3)
    w.close()
  events = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  assert len(events) == 1
  tags = {}
  for e in tf.train.summary_iterator(events[0]):
    for v in e.summary.value:
      tags[v.tag] = (e.step, v)
  assert tags['train/loss'][0] == 3 and tags['train/loss'][1].simple_value == pytest.approx(0.5)
  assert tags['samples'][1].image.height == 2 * (8 + 2) - 2  # the original tile_imgs grid of 2 x 2


def test_data_scaling_round_trips():
  x = np.arange(256, dtype=np.float32)
  y = utils.normalize_data(x)
  assert y.min() == -1. and y.max() == 1.
  np.testing.assert_allclose(utils.unnormalize_data(y), x, atol=1e-4)


def test_weight_ema_matches_tf_exponential_moving_average():
  """Same shadow names and the same values after a few updates as tf.train.ExponentialMovingAverage.apply."""
  def build(use_tf):
    with tf.variable_scope('model'):
      a = tf.get_variable('a', initializer=tf.constant([1., 2.]))
      b = tf.get_variable('sub/b', initializer=tf.constant(3.))
    step = tf.train.get_or_create_global_step()
    if use_tf:
      ema = tf.train.ExponentialMovingAverage(decay=tf.where(tf.less(step, 1), 1e-10, 0.9))
      op = ema.apply([a, b])
    else:
      ema, op = utils.make_ema(global_step=step, ema_decay=0.9, trainable_variables=[a, b])
    train = [a.assign_add([1., -1.]), b.assign(b * 2.), step.assign_add(1)]
    return a, b, ema, op, train

  results = []
  for use_tf in [True, False]:
    with tf.Graph().as_default(), tf.Session() as sess:
      a, b, ema, op, train = build(use_tf)
      names = sorted(v.op.name for v in tf.global_variables())
      sess.run(tf.global_variables_initializer())
      for _ in range(4):
        sess.run(op)
        sess.run(train)
      results.append((names, sess.run([ema.average(a), ema.average(b)])))
  (names_tf, vals_tf), (names_ours, vals_ours) = results
  assert names_tf == names_ours
  assert 'model/sub/b/ExponentialMovingAverage' in names_ours
  for x, y in zip(vals_tf, vals_ours):
    np.testing.assert_allclose(x, y, rtol=1e-6)
