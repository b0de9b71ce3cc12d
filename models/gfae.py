"""Graph Feature Auto-Encoder (GFAE): the self-supervised loss on the subgraph.

A fraction `mask_rate` of the *non-seed* `user` and `video` nodes get their
whole input vector replaced by a learned mask token (see
`encoder.NodeInputs`); after message passing, a small decoder maps each masked
node's final state back to its side features, and the loss counts masked
nodes only. Seeds are never masked: the ranker reads their states.
With `max_decoded` > 0 the decoder scores a uniform sample of at most that
many masked nodes per node set: the same loss in expectation, at a bounded
cost (a batch masks thousands of nodes; KuaiRand users have 26 categorical
columns, each its own softmax head).

Loss, per masked node: dense features with the scaled cosine error of
GraphMAE (Hou et al., KDD 2022), `(1 - cos(x, x_hat)) ** gamma`, the default,
or MSE; plus softmax cross-entropy for each categorical column. SCE is the
default because it ignores the scale of the (z-scored, heavy-tailed) dense
features and, with gamma > 1, down-weights nodes that are already easy to
reconstruct; MSE lets a few extreme counts dominate the gradient.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_gnn as tfgnn

from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.models.encoder import READOUT_NODE_SETS, seed_mask


def scaled_cosine_error(target: tf.Tensor, prediction: tf.Tensor,
                        gamma: float) -> tf.Tensor:
  """GraphMAE's SCE per row: (1 - cos)^gamma."""
  cos = tf.reduce_sum(tf.math.l2_normalize(target, -1) *
                      tf.math.l2_normalize(prediction, -1), axis=-1)
  return tf.pow(1.0 - cos, gamma)


class GraphFeatureAutoEncoder(tf.keras.layers.Layer):
  """Samples masks before encoding and scores the reconstruction after it."""

  def __init__(self, tables: NodeTables, *, mask_rate: float, loss: str = "sce",
               gamma: float = 2.0, hidden_dim: int = 32, max_decoded: int = 0,
               seed: int | None = None, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 < mask_rate < 1.0:
      raise ValueError(f"model.gfae_mask_rate must be in (0, 1), got {mask_rate}")
    if loss not in ("sce", "mse"):
      raise ValueError(f"model.gfae_loss: {loss!r} is not one of sce, mse")
    self._tables = tables
    if max_decoded < 0:
      raise ValueError(f"model.gfae_max_decoded_nodes must be >= 0, got {max_decoded}")
    self._mask_rate, self._loss, self._gamma = mask_rate, loss, gamma
    self._max_decoded = max_decoded
    self._rng = tf.random.Generator.from_seed(seed if seed is not None else 0)
    self.node_sets = tuple(ns for ns in READOUT_NODE_SETS
                           if tables.has_dense(ns) or tables.has_categorical(ns))
    self._dense_heads, self._cat_heads = {}, {}
    for ns in self.node_sets:
      if tables.has_dense(ns):
        dim = len(tables.dense_names[ns])
        self._dense_heads[ns] = tf.keras.Sequential(
            [tf.keras.layers.Dense(hidden_dim, activation="relu"),
             tf.keras.layers.Dense(dim)], name=f"{ns}_dense_decoder")
      if tables.has_categorical(ns):
        self._cat_heads[ns] = [tf.keras.layers.Dense(size, name=f"{ns}_{col}_decoder")
                               for col, size in zip(tables.categorical_names[ns],
                                                    tables.categorical_sizes[ns])]

  def sample_masks(self, graph: tfgnn.GraphTensor) -> dict[str, tf.Tensor]:
    """bool [N] per node set: a `mask_rate` share of the non-seed nodes."""
    masks = {}
    for ns in self.node_sets:
      if ns not in graph.node_sets:
        continue
      size = graph.node_sets[ns].total_size
      draw = self._rng.uniform([size]) < self._mask_rate
      masks[ns] = tf.logical_and(draw, tf.logical_not(seed_mask(graph, ns)))
    return masks

  def _decoded(self, mask: tf.Tensor) -> tf.Tensor:
    """Positions of the masked nodes the decoder scores: all, or a uniform sample."""
    masked = tf.where(mask)[:, 0]
    if not self._max_decoded:
      return masked
    size = tf.size(masked)
    keys = self._rng.uniform([size])
    return tf.gather(masked, tf.math.top_k(keys, tf.minimum(size, self._max_decoded)).indices)

  def call(self, encoded: tfgnn.GraphTensor, masks: dict[str, tf.Tensor]) -> tf.Tensor:
    """Mean reconstruction loss over (decoded) masked nodes (0 if none is masked)."""
    total, count = tf.constant(0.0), tf.constant(0.0)
    for ns, mask in masks.items():
      decoded = self._decoded(mask)
      states = tf.gather(encoded.node_sets[ns][tfgnn.HIDDEN_STATE], decoded)
      index = tf.gather(encoded.node_sets[ns]["id"], decoded)
      per_node = tf.zeros_like(states[:, 0])
      if ns in self._dense_heads:
        target = self._tables.dense(ns, index)
        pred = self._dense_heads[ns](states)
        if self._loss == "sce":
          per_node += scaled_cosine_error(target, pred, self._gamma)
        else:
          per_node += tf.reduce_mean(tf.square(target - pred), axis=-1)
      if ns in self._cat_heads:
        codes = self._tables.categorical(ns, index)
        ce = [tf.keras.losses.sparse_categorical_crossentropy(
            codes[:, i], head(states), from_logits=True)
              for i, head in enumerate(self._cat_heads[ns])]
        per_node += tf.add_n(ce) / len(ce)
      # Each decoded node stands for masked / decoded masked nodes of its set.
      masked = tf.reduce_sum(tf.cast(mask, tf.float32))
      total += tf.math.divide_no_nan(tf.reduce_sum(per_node) * masked,
                                     tf.cast(tf.size(per_node), tf.float32))
      count += masked
    return tf.math.divide_no_nan(total, count)
