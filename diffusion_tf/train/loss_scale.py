"""Dynamic loss scaling for a U-Net that computes in float16 (--precision=float16; Micikevicius et al. 2018, sec. 3.2).

float16 resolves nothing below 2^-24 (6e-8), and many of the U-Net's activation gradients are smaller. The loss is
multiplied by a scale S before differentiation, so the gradients flow through the float16 layers S times larger,
and the float32 weight gradients are divided by S before clipping and the update. When S is too large a gradient
overflows to inf (or becomes NaN): that step is skipped (the weights, the optimizer's moments and the EMA stay as
they are; the global step advances, so that a run's step count and max_steps keep their meaning) and S is halved.
After `growth_interval` finite steps in a row S is doubled again, so S stays near the largest scale that does not
overflow.

The scale, the count of finite steps since the last change and the count of skipped steps are local variables:
checkpoints hold the same float32 variables at every precision, so a float16 run restores a float32 run's
checkpoint and the other way round. A resumed float16 run starts again from the initial scale, which costs at most
a few skipped steps (one per halving) before S settles.
"""

import tensorflow.compat.v1 as tf

INITIAL_SCALE = 2. ** 15
GROWTH_INTERVAL = 2000  # finite steps in a row before S doubles (improved-diffusion and torch.cuda.amp: 2000)


def _local(name, initial_value):
  return tf.get_variable(name, initializer=initial_value, trainable=False,
                         collections=[tf.GraphKeys.LOCAL_VARIABLES])


def all_finite(tensors):
  """A scalar bool: whether every entry of every tensor is finite."""
  return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in tensors]))


class DynamicLossScale:
  """The scale S and its updates; `wrap(optimizer)` gives an optimizer that applies them (see the module docstring).

  Summaries: `scale` (S of the step) and `skipped_steps` (steps skipped by this process). `applied`, a scalar bool
  once the wrapped optimizer's apply_gradients is built, says whether this step updated the weights.
  """

  def __init__(self, initial_scale=INITIAL_SCALE, growth_interval=GROWTH_INTERVAL, factor=2.):
    assert initial_scale > 0 and growth_interval >= 1 and factor > 1, (initial_scale, growth_interval, factor)
    self.growth_interval, self.factor = int(growth_interval), float(factor)
    with tf.variable_scope('loss_scale'):
      self.scale = _local('scale', tf.constant(float(initial_scale), tf.float32))
      self.good_steps = _local('good_steps', tf.constant(0, tf.int64))
      self.skipped_steps = _local('skipped_steps', tf.constant(0, tf.int64))
    self.applied = None

  def wrap(self, optimizer):
    return LossScaledOptimizer(optimizer, self)

  def gate_ema_decay(self, ema_decay):
    """The EMA decay of this step: 1 (the shadows stay) on a skipped step. Needs `applied`."""
    assert self.applied is not None, 'build the optimizer step first'
    return tf.where(self.applied, tf.convert_to_tensor(ema_decay, tf.float32), 1.)

  def _update(self, finite):
    """The scale's update after a step whose unscaled gradients were all finite or not."""
    grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_interval)
    new_scale = tf.where(finite, tf.where(grow, self.scale * self.factor, self.scale), self.scale / self.factor)
    new_good = tf.where(tf.logical_and(finite, tf.logical_not(grow)), self.good_steps + 1,
                        tf.zeros_like(self.good_steps))
    return tf.group(self.scale.assign(new_scale), self.good_steps.assign(new_good),
                    self.skipped_steps.assign_add(tf.cast(tf.logical_not(finite), tf.int64)))


class LossScaledOptimizer:
  """`optimizer` (a tf.train.Optimizer, maybe a CrossShardOptimizer) with the loss scaled by S for differentiation,
  the gradients unscaled, and apply_gradients skipped when they are not all finite (DynamicLossScale)."""

  def __init__(self, optimizer, loss_scale):
    self._optimizer, self._loss_scale = optimizer, loss_scale

  def compute_gradients(self, loss, var_list=None, **kwargs):
    """[(gradient of loss, variable)]: d(S loss)/dw / S, in float32 (the weights are float32)."""
    scale = self._loss_scale.scale
    grads_and_vars = self._optimizer.compute_gradients(loss * scale, var_list=var_list, **kwargs)
    return [(None if g is None else g / scale, v) for g, v in grads_and_vars]

  def apply_gradients(self, grads_and_vars, global_step=None, name=None):
    """The optimizer's update if every gradient is finite, else only global_step + 1; then the scale's update."""
    grads_and_vars = list(grads_and_vars)
    finite = all_finite([g for g, _ in grads_and_vars if g is not None])
    self._loss_scale.applied = finite

    # The optimizer makes its non-slot variables (Adam's beta1_power, beta2_power) on its first apply, named by the
    # current name scope. Inside TF 1.15's tf.cond that scope is 'cond/', so a float16 checkpoint would not restore
    # at float32 (nor the original's at float16): the update is built in the scope outside the cond.
    outer_scope = tf.get_default_graph().get_name_scope()

    def apply():
      with tf.name_scope(outer_scope + '/' if outer_scope else None):
        return tf.group(self._optimizer.apply_gradients(grads_and_vars, global_step=global_step, name=name))

    def skip():
      return tf.group(global_step.assign_add(1)) if global_step is not None else tf.no_op()

    step = tf.cond(finite, apply, skip)
    with tf.control_dependencies([step]):
      return tf.group(self._loss_scale._update(finite))
