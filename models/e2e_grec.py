"""The E2E-GRec model: one `tfrs.Model` for the modes e2e, two_stage and no_graph.

    inputs ──> ExampleFeatures ──────────────┐
    graph ──> [GFAE mask] ─> GraphEncoder ─> readout(user, video) ─> fusion ─> ranker ─> tasks
                                  └─> GFAE decoder ─> gfae loss

What each mode does is stated once, in `modes.py` (`self.mode`):
- `e2e`: the encoder trains with the ranker; every ranking loss (and the GFAE
  loss, if `model.gfae`) back-propagates into the GNN.
- `two_stage`: the encoder is pretrained separately (`two_stage.py`) and then
  frozen; the ranker reads precomputed embeddings (`user_gnn`, `video_gnn`
  inputs) in training, or runs the frozen encoder on `graph` when they are absent.
- `no_graph`: no encoder; the ranker sees example features only.

`call` is the serving contract: inputs `user_id`, `video_id`, `tab`, `hour`,
`day` (+ `graph` unless no_graph), outputs probabilities of the binary tasks
and the `stay` value. `train_step` is the one extension point of training: it
weights all losses with the configured balancer (GradNorm by default), adds
the regularisation losses (`self.losses`, as TFRS's base model does) and
feeds the balancer the per-loss gradient norms on the last shared layer
(every `train.gradnorm_every_steps` steps; 1 = every step, as in the paper).
"""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf
import tensorflow_recommenders as tfrs

from e2e_grec.config import Config
from e2e_grec.contracts import GRAPH_INPUT
from e2e_grec.datasets.labels import BINARY_TASKS, REGRESSION_TASKS
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.models import encoder as encoder_lib
from e2e_grec.models import modes
from e2e_grec.models.gfae import GraphFeatureAutoEncoder
from e2e_grec.models.loss_balancing import cross_replica_mean, make_balancer
from e2e_grec.models.ranker import MultiTaskRanker

GFAE_LOSS = "gfae"
PRECOMPUTED = {"user": "user_gnn", "video": "video_gnn"}


class E2EGRec(tfrs.Model):
  """GNN encoder + GFAE + fused multi-task ranker under one balanced loss."""

  def __init__(self, tables: NodeTables, config: Config,
               binary_tasks=BINARY_TASKS, regression_tasks=REGRESSION_TASKS, **kwargs):
    super().__init__(**kwargs)
    model_config = config.model
    self.mode = modes.of(config)
    self.binary_tasks, self.regression_tasks = tuple(binary_tasks), tuple(regression_tasks)
    self.task_names = self.binary_tasks + self.regression_tasks
    use_graph = self.mode.has_encoder
    self.encoder = (encoder_lib.GraphEncoder(tables, model_config, name="gnn")
                    if use_graph else None)
    self.gfae = (GraphFeatureAutoEncoder(
        tables, mask_rate=model_config.gfae_mask_rate, loss=model_config.gfae_loss,
        gamma=model_config.gfae_sce_gamma, hidden_dim=model_config.gnn_hidden_dim,
        max_decoded=model_config.gfae_max_decoded_nodes, seed=config.train.seed, name="gfae")
                 if use_graph and model_config.gfae else None)
    self.ranker = MultiTaskRanker(tables, model_config, self.task_names, use_graph,
                                  name="ranker")
    # Unreduced (averaged in `compute_losses`): Keras refuses its default
    # reduction inside a tf.distribute strategy's custom training step.
    unreduced = tf.keras.losses.Reduction.NONE
    self.tasks = {t: tfrs.tasks.Ranking(
        loss=tf.keras.losses.BinaryCrossentropy(from_logits=True, reduction=unreduced), name=t)
                  for t in self.binary_tasks}
    self.tasks.update({t: tfrs.tasks.Ranking(
        loss=tf.keras.losses.MeanSquaredError(reduction=unreduced), name=t)
                       for t in self.regression_tasks})
    self.trains_gfae = self.mode.trains_gfae(model_config)
    self.loss_names = self.task_names + ((GFAE_LOSS,) if self.trains_gfae else ())
    self.balancer = make_balancer(config.train, self.loss_names)
    self.balance_every = config.train.gradnorm_every_steps
    if self.balance_every < 1:
      raise ValueError(f"train.gradnorm_every_steps must be >= 1, got {self.balance_every}")
    if self.encoder is not None and not self.mode.encoder_trains_with_ranker:
      self.encoder.trainable = False
      if self.gfae is not None:
        self.gfae.trainable = False

  # -- forward -------------------------------------------------------------

  def graph_embeddings(self, inputs: Mapping[str, tf.Tensor], training: bool = False
                       ) -> tuple[dict[str, tf.Tensor] | None, tf.Tensor | None]:
    """GNN user/video embeddings [B, d] and, when training e2e, the GFAE loss."""
    if self.encoder is None:
      return None, None
    if all(key in inputs for key in PRECOMPUTED.values()):
      return {ns: inputs[key] for ns, key in PRECOMPUTED.items()}, None
    if GRAPH_INPUT not in inputs:
      raise ValueError(f"mode {self.mode.name!r} needs input {GRAPH_INPUT!r} (the sampled "
                       f"subgraph) or precomputed {sorted(PRECOMPUTED.values())}")
    graph = inputs[GRAPH_INPUT]
    masks = self.gfae.sample_masks(graph) if training and self.trains_gfae else None
    trains_encoder = self.mode.encoder_trains_with_ranker
    encoded = self.encoder(graph, masks=masks, training=training and trains_encoder)
    gfae_loss = self.gfae(encoded, masks) if masks is not None else None
    embeddings = encoder_lib.readout(encoded)
    if not trains_encoder:  # Frozen: no gradient may reach the encoder.
      embeddings = {ns: tf.stop_gradient(e) for ns, e in embeddings.items()}
    return embeddings, gfae_loss

  def logits(self, inputs: Mapping[str, tf.Tensor], training: bool = False
             ) -> tuple[dict[str, tf.Tensor], tf.Tensor | None]:
    embeddings, gfae_loss = self.graph_embeddings(inputs, training)
    return self.ranker(inputs, embeddings, training=training), gfae_loss

  def call(self, inputs: Mapping[str, tf.Tensor], training: bool = False
           ) -> dict[str, tf.Tensor]:
    logits, _ = self.logits(inputs, training)
    out = {t: tf.sigmoid(logits[t]) for t in self.binary_tasks}
    out.update({t: logits[t] for t in self.regression_tasks})
    return out

  # -- losses --------------------------------------------------------------

  def compute_losses(self, inputs: Mapping[str, tf.Tensor], training: bool = False
                     ) -> dict[str, tf.Tensor]:
    """Unweighted loss of every task (and `gfae` when it trains)."""
    logits, gfae_loss = self.logits(inputs, training)
    losses = {t: tf.reduce_mean(self.tasks[t](tf.cast(inputs[t], tf.float32), logits[t],
                                              compute_metrics=False))
              for t in self.task_names}
    if self.trains_gfae:
      losses[GFAE_LOSS] = gfae_loss if gfae_loss is not None else tf.constant(0.0)
    return losses

  def reference_losses(self, inputs: Mapping[str, tf.Tensor], mean=tf.reduce_mean
                       ) -> dict[str, tf.Tensor]:
    """Loss of the best constant prediction per task: GradNorm's L_i(0).

    The raw loss at initialisation would do for balanced tasks, but a
    rare-positive task (like: ~1.5% positives) drops from 0.69 to ~0.08 just
    by learning its base rate; GradNorm would read that as fast learning and
    starve it. Relative to the label entropy (BCE) or variance (MSE), loss
    ratios measure what a task has learned beyond its base rate. `mean`
    averages over the batch (over the global batch in a distributed step).
    """
    out = {}
    for t in self.binary_tasks:
      p = tf.clip_by_value(mean(tf.cast(inputs[t], tf.float32)), 1e-4, 1 - 1e-4)
      out[t] = -(p * tf.math.log(p) + (1 - p) * tf.math.log(1 - p))
    for t in self.regression_tasks:
      y = tf.cast(inputs[t], tf.float32)
      out[t] = mean(tf.square(y)) - tf.square(mean(y))
    return out

  def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
    return self.balancer.combine(self.compute_losses(inputs, training))

  def shared_variables(self) -> list[tf.Variable]:
    """The last layer all losses depend on: GradNorm's W.

    e2e: the GNN's last round (every task reads its user/video states, GFAE
    decodes from them); otherwise the last shared-bottom layer(s).
    """
    if self.mode.encoder_trains_with_ranker:
      return self.encoder.last_layer.trainable_variables
    return [v for layer in self.ranker.bottom.shared_layers
            for v in layer.trainable_variables]

  def train_step(self, inputs, balance: bool | None = None):
    """One step; under a strategy, logged losses and GradNorm inputs are cross-replica means.

    `balance`: whether the balancer updates its weights in this step; None
    decides in the graph (every `balance_every` optimizer steps). Under a
    tf.distribute strategy the caller decides: a step that synchronises
    replicas cannot sit inside a `tf.cond`.
    """
    balancer = self.balancer
    global_mean = lambda x: cross_replica_mean(tf.reduce_mean(x))
    with tf.GradientTape(persistent=balancer.needs_grad_norms) as tape:
      losses = self.compute_losses(inputs, training=True)
      total = balancer.combine(losses)
      if self.losses:  # Regularisation losses of the layers, as in tfrs.Model.
        total += tf.add_n(self.losses)
      # Replicas' gradients are summed: each contributes its share of the global mean.
      replica_share = total / tf.distribute.get_replica_context().num_replicas_in_sync
    variables = self.trainable_variables
    grads = tape.gradient(replica_share, variables)
    self.optimizer.apply_gradients(
        [(g, v) for g, v in zip(grads, variables) if g is not None])
    mean_losses = cross_replica_mean({n: losses[n] for n in self.loss_names})
    logs = {"loss": global_mean(total), **{f"loss/{n}": l for n, l in mean_losses.items()}}
    used_weights = balancer.loss_weights()
    if balancer.needs_grad_norms:

      def update_weights() -> tf.Tensor:
        shared = self.shared_variables()
        grads = cross_replica_mean([[g for g in tape.gradient(losses[n], shared)
                                     if g is not None] for n in self.loss_names])
        norms = [tf.linalg.global_norm(g) for g in grads]
        balancer.update(mean_losses, dict(zip(self.loss_names, norms)),
                        self.reference_losses(inputs, global_mean))
        return tf.stack(norms)

      no_update = lambda: tf.zeros([len(self.loss_names)])
      if balance is None and self.balance_every > 1:
        # Amortised: the per-loss backward passes are most of a step's cost.
        due = tf.equal(self.optimizer.iterations % self.balance_every, 0)
        norms = tf.cond(due, update_weights, no_update)
      else:
        norms = update_weights() if balance is not False else no_update()
      del tape
      for i, n in enumerate(self.loss_names):
        logs[f"grad_norm/{n}"] = norms[i]
        logs[f"weighted_grad_norm/{n}"] = used_weights[i] * norms[i]
    weights = balancer.loss_weights()
    logs.update({f"weight/{n}": weights[i] for i, n in enumerate(self.loss_names)})
    return logs

  def test_step(self, inputs):
    losses = self.compute_losses(inputs, training=False)
    return {"loss": self.balancer.combine(losses),
            **{f"loss/{n}": l for n, l in losses.items()}}
