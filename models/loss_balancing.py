"""How the task losses (and the GFAE loss) are weighted into one training loss.

- `FixedWeights`: constant weights (`train.loss_weights`, missing = 1).
- `UncertaintyWeighting` (Kendall et al., CVPR 2018): one learned log-variance
  s_i per loss, total = sum_i exp(-s_i) L_i + s_i / 2, trained with the model.
- `GradNorm` (Chen et al., ICML 2018): weights w_i that the main optimizer
  never touches. After each step, with G_i = ||grad_W (w_i L_i)|| on the last
  layer W shared by all losses, r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))
  and target_i = mean_j(G_j) * r_i ** alpha (held constant), the weights take
  one step of their own Adam optimizer on sum_i |G_i - target_i| and are then
  renormalised to sum to the number of losses. L_i(0) may be given as a
  reference loss instead of the first step's loss: the model passes the loss
  of the best constant prediction (see `E2EGRec.reference_losses`). Because G_i is linear in w_i,
  that gradient is sign(G_i - target_i) * ||grad_W L_i||: no second-order
  derivatives are needed, only the per-loss gradient norms on W.

Every balancer is a Keras layer so its state is checkpointed with the model.
Under a `tf.distribute` strategy with several replicas, `update` must be given
cross-replica means (`cross_replica_mean`): every replica then computes the
same GradNorm step, so the loss weights stay identical on every worker.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

from e2e_grec.config import TrainConfig


def cross_replica_mean(value):
  """Mean of `value` (a nested structure) over the replicas in sync; as is with one."""
  replica = tf.distribute.get_replica_context()
  if replica is None or replica.num_replicas_in_sync == 1:
    return value
  return replica.all_reduce(tf.distribute.ReduceOp.MEAN, value)


class LossBalancer(tf.keras.layers.Layer):
  """Base: `combine` weights losses; `update` sees per-loss gradient norms."""

  # Whether `update` needs the per-loss gradient norms on the shared layer.
  needs_grad_norms = False

  def __init__(self, names: Sequence[str], **kwargs):
    super().__init__(**kwargs)
    self.names = tuple(names)

  def loss_weights(self) -> tf.Tensor:
    """Effective weight of each loss, in `names` order (for logging)."""
    raise NotImplementedError

  def combine(self, losses: Mapping[str, tf.Tensor]) -> tf.Tensor:
    return tf.reduce_sum(self.loss_weights() * self._stack(losses))

  def update(self, losses: Mapping[str, tf.Tensor], grad_norms: Mapping[str, tf.Tensor],
             reference_losses: Mapping[str, tf.Tensor] | None = None) -> None:
    """Adjusts the weights after a step (GradNorm); a no-op by default."""
    del losses, grad_norms, reference_losses

  def _stack(self, values: Mapping[str, tf.Tensor]) -> tf.Tensor:
    missing = [n for n in self.names if n not in values]
    if missing:
      raise ValueError(f"losses {missing} missing; the balancer expects {self.names}")
    return tf.stack([tf.cast(values[n], tf.float32) for n in self.names])


class FixedWeights(LossBalancer):
  """Constant weights."""

  def __init__(self, names: Sequence[str], weights: Mapping[str, float] | None = None,
               **kwargs):
    super().__init__(names, **kwargs)
    self._weights = tf.constant([float((weights or {}).get(n, 1.0)) for n in self.names])

  def loss_weights(self) -> tf.Tensor:
    return self._weights


class UncertaintyWeighting(LossBalancer):
  """Homoscedastic-uncertainty weights exp(-s_i), s_i trained with the model."""

  def build(self, input_shape=None):
    self.log_vars = self.add_weight(name="log_vars", shape=[len(self.names)],
                                    initializer="zeros", trainable=True)
    super().build(input_shape)

  def loss_weights(self) -> tf.Tensor:
    if not self.built:
      self.build()
    return tf.exp(-self.log_vars)

  def combine(self, losses: Mapping[str, tf.Tensor]) -> tf.Tensor:
    return super().combine(losses) + 0.5 * tf.reduce_sum(self.log_vars)


class GradNorm(LossBalancer):
  """GradNorm weights, updated by their own optimizer after every step."""

  needs_grad_norms = True

  def __init__(self, names: Sequence[str], *, alpha: float, learning_rate: float,
               initial_weights: Mapping[str, float] | None = None, **kwargs):
    super().__init__(names, **kwargs)
    self.alpha = alpha
    initial = [float((initial_weights or {}).get(n, 1.0)) for n in self.names]
    total = sum(initial)
    self._initial = [w * len(initial) / total for w in initial]
    self.optimizer = tf.keras.optimizers.Adam(learning_rate=learning_rate)

  def build(self, input_shape=None):
    # Replicas compute identical updates from cross-replica means; the first's is kept.
    same_on_replicas = tf.VariableAggregation.ONLY_FIRST_REPLICA
    self.weights_var = self.add_weight(
        name="weights", shape=[len(self.names)], trainable=False,
        initializer=tf.keras.initializers.Constant(self._initial),
        aggregation=same_on_replicas)
    self.initial_losses = self.add_weight(name="initial_losses", shape=[len(self.names)],
                                          trainable=False, initializer="zeros",
                                          aggregation=same_on_replicas)
    self.optimizer.build([self.weights_var])
    super().build(input_shape)

  def loss_weights(self) -> tf.Tensor:
    if not self.built:
      self.build()
    return tf.identity(self.weights_var)

  def update(self, losses: Mapping[str, tf.Tensor], grad_norms: Mapping[str, tf.Tensor],
             reference_losses: Mapping[str, tf.Tensor] | None = None) -> None:
    """One GradNorm step; `reference_losses` (where given) replace L_i(0).

    All arguments are over the global batch (cross-replica means under a
    strategy), so the gradient is not aggregated again across replicas.
    """
    loss = tf.stop_gradient(self._stack(losses))
    norms = tf.stop_gradient(self._stack(grad_norms))
    # L_i(0), fixed at the first update (the variable starts at zero).
    reference = tf.stop_gradient(self._stack({**losses, **(reference_losses or {})}))
    first = tf.reduce_all(tf.equal(self.initial_losses, 0.0))
    self.initial_losses.assign(tf.where(first, reference, self.initial_losses))
    w = self.weights_var
    weighted_norms = w * norms
    ratio = tf.math.divide_no_nan(loss, self.initial_losses)
    relative = tf.math.divide_no_nan(ratio, tf.reduce_mean(ratio))
    target = tf.reduce_mean(weighted_norms) * tf.pow(relative, self.alpha)
    self.optimizer.apply_gradients([(tf.sign(weighted_norms - target) * norms, w)],
                                   skip_gradients_aggregation=True)
    positive = tf.maximum(w, 1e-4)
    w.assign(positive * len(self.names) / tf.reduce_sum(positive))


def make_balancer(config: TrainConfig, names: Sequence[str]) -> LossBalancer:
  """The balancer chosen by `train.loss_balancer` over the losses `names`."""
  if config.loss_balancer == "fixed":
    return FixedWeights(names, config.loss_weights, name="loss_balancer")
  if config.loss_balancer == "uncertainty":
    return UncertaintyWeighting(names, name="loss_balancer")
  if config.loss_balancer == "gradnorm":
    return GradNorm(names, alpha=config.gradnorm_alpha,
                    learning_rate=config.gradnorm_learning_rate,
                    initial_weights=config.loss_weights, name="loss_balancer")
  raise ValueError(f"train.loss_balancer: unknown balancer {config.loss_balancer!r}")
