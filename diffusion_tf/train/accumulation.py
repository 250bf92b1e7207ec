"""Gradient accumulation (--grad_accum_steps=K): the update of one batch computed as K microbatches in a row, so that
the activations of one microbatch at a time are in memory.

Every replica splits its batch of B examples into K equal microbatches of B/K. The batch's loss is the mean of the
per-example losses, which is the mean of the K microbatch means, so

    grad (1/B) sum_i l_i  =  sum_k grad (l_k / K),      l_k = (K/B) sum_{i in microbatch k} l_i,

the gradient of the whole batch, accumulated in one training step: the optimizer, its clipping, the learning-rate
warm-up, the EMA and the global step see one update per batch, as without accumulation. No variable is added (the
sum is a tensor of the step), so the checkpoints are the same with and without it.
"""

import contextlib

import tensorflow.compat.v1 as tf


def split_batch(features, num_microbatches):
  """{key: [B, ...]} -> K dicts {key: [B/K, ...]}, microbatch k holding the examples k B/K ... (k + 1) B/K - 1."""
  batch = {key: value.shape.as_list()[0] for key, value in features.items()}
  assert len(set(batch.values())) == 1, batch
  B = next(iter(batch.values()))
  assert B % num_microbatches == 0, (B, num_microbatches)
  m = B // num_microbatches
  return [{key: value[k * m:(k + 1) * m] for key, value in features.items()} for k in range(num_microbatches)]


def accumulate_gradients(loss_fn, features, *, num_microbatches, compute_gradients):
  """(loss, grads_and_vars) of the batch `features`, from K = num_microbatches microbatches one after another.

  loss_fn(microbatch features) -> the scalar mean loss of a microbatch (it builds the model; the first call creates
  the variables, the others reuse them); compute_gradients(loss) -> [(gradient, variable)], the optimizer's (which
  also divides by the number of replicas). Returns the batch's loss, the mean of the K microbatch losses, and
  sum_k compute_gradients(loss_k / K) (the module's equation). With K = 1 it is compute_gradients(loss_fn(features)).

  Microbatch k + 1's inputs wait for the running sum of the gradients of microbatches 0..k, so that its forward pass
  starts once the backward pass of microbatch k is done and the scheduler cannot keep several microbatches'
  activations alive at once.
  """
  if num_microbatches == 1:
    loss = loss_fn(features)
    return loss, compute_gradients(loss)
  losses, summed, variables = [], None, None
  for k, microbatch in enumerate(split_batch(features, num_microbatches)):
    if summed is not None:
      with tf.control_dependencies([g for g in summed if g is not None]):
        microbatch = {key: tf.identity(value) for key, value in microbatch.items()}
    # microbatches after the first reuse the variables it created (as the U-Net's AUTO_REUSE would)
    reuse = (tf.variable_scope(tf.get_variable_scope(), reuse=True, auxiliary_name_scope=False) if k else
             contextlib.nullcontext())
    with tf.name_scope('microbatch_{}'.format(k)), reuse:
      loss_k = loss_fn(microbatch)
      assert loss_k.shape.as_list() == [], loss_k.shape
      grads_and_vars = compute_gradients(loss_k / float(num_microbatches))
    grads = [None if g is None else tf.convert_to_tensor(g) for g, _ in grads_and_vars]
    if variables is None:
      variables = [v for _, v in grads_and_vars]
    assert [v for _, v in grads_and_vars] == variables, 'each microbatch must differentiate the same variables'
    summed = grads if summed is None else [a if g is None else g if a is None else a + g
                                           for a, g in zip(summed, grads)]
    losses.append(loss_k)
  return tf.add_n(losses) / float(num_microbatches), list(zip(summed, variables))
