"""The GNN encoder: sampled heterogeneous subgraph -> user and video embeddings.

The sampled graph carries only node feature `id` (an index into the node
tables), so `NodeInputs` looks up each node's ID embedding and side features
and projects them to the hidden size. `GraphEncoder` then runs
`gnn_layers` rounds of GraphSAGE, GATv2 or HGT message passing towards the
seeds (`receiver_tag=tfgnn.SOURCE`: the sampler stores edges in traversal
direction, away from the seeds) and reads out the final `user` and `video`
states of each example with the `_readout` structure, in example order.
"""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf
import tensorflow_gnn as tfgnn
from tensorflow_gnn.models import gat_v2, graph_sage, hgt

from e2e_grec.config import ModelConfig
from e2e_grec.contracts import NODE_ID_FEATURE, SEED_NODE_SETS, readout_edge_set
from e2e_grec.datasets.node_tables import NODE_SETS, NodeTables

READOUT_NODE_SETS = SEED_NODE_SETS


def edges_into(graph: tfgnn.GraphTensor, keep: Mapping[str, tf.Tensor]) -> tfgnn.GraphTensor:
  """`graph` without the edges whose receiver (SOURCE) is a node that `keep` drops.

  `keep` is bool [N] per node set; edge sets into other node sets and the
  `_readout` structure are left whole. A round on the result gives every kept
  node exactly the state it gets on `graph` (it sees all its edges).
  """
  edge_sets = {}
  for name, edge_set in graph.edge_sets.items():
    adjacency = edge_set.adjacency
    if name.startswith("_") or adjacency.source_name not in keep:
      edge_sets[name] = edge_set
      continue
    selected = tf.gather(keep[adjacency.source_name], adjacency.source)
    component = tf.repeat(tf.range(graph.num_components), edge_set.sizes)
    sizes = tf.math.unsorted_segment_sum(tf.cast(selected, edge_set.sizes.dtype),
                                         component, graph.num_components)
    edge_sets[name] = tfgnn.EdgeSet.from_fields(
        sizes=sizes,
        adjacency=tfgnn.Adjacency.from_indices(
            source=(adjacency.source_name, tf.boolean_mask(adjacency.source, selected)),
            target=(adjacency.target_name, tf.boolean_mask(adjacency.target, selected))),
        features={k: tf.boolean_mask(v, selected) for k, v in edge_set.features.items()})
  return tfgnn.GraphTensor.from_pieces(context=graph.context, node_sets=graph.node_sets,
                                       edge_sets=edge_sets)


def seed_mask(graph: tfgnn.GraphTensor, node_set: str) -> tf.Tensor:
  """bool [N] of `node_set`: True for nodes that are some example's seed."""
  readout = graph.edge_sets[readout_edge_set(node_set)].adjacency.source
  size = graph.node_sets[node_set].total_size
  hits = tf.math.unsorted_segment_max(tf.ones_like(readout), readout, size)
  return hits > 0


class NodeInputs(tf.keras.layers.Layer):
  """Initial node states from the node tables: ID embedding + side features.

  Per node set the input vector is [ID embedding, dense features, one small
  embedding per categorical column], projected to `hidden_dim`. `masks`
  (bool [N] per node set) replace the whole input vector of the marked nodes
  by a learned mask token before the projection, so nothing about a masked
  node reaches the GNN (the GFAE objective).
  """

  def __init__(self, tables: NodeTables, *, embedding_dim: int, hidden_dim: int,
               **kwargs):
    super().__init__(**kwargs)
    self._tables = tables
    self._ids, self._categorical, self._project, self._mask_token = {}, {}, {}, {}
    for ns in NODE_SETS:
      if ns not in tables.sizes:
        continue
      self._ids[ns] = tf.keras.layers.Embedding(tables.sizes[ns], embedding_dim,
                                                name=f"{ns}_id")
      self._categorical[ns] = [
          tf.keras.layers.Embedding(size, min(embedding_dim, 8), name=f"{ns}_{col}")
          for col, size in zip(tables.categorical_names.get(ns, ()),
                               tables.categorical_sizes.get(ns, ()))]
      self._project[ns] = tf.keras.layers.Dense(hidden_dim, activation="relu",
                                                name=f"{ns}_project")
    self._input_dims = {ns: embedding_dim + (tables.dense(ns, 0).shape[-1]
                                             if tables.has_dense(ns) else 0)
                        + sum(min(embedding_dim, 8) for _ in self._categorical[ns])
                        for ns in self._ids}

  def build(self, input_shape):
    for ns, dim in self._input_dims.items():
      self._mask_token[ns] = self.add_weight(
          name=f"{ns}_mask_token", shape=[dim], initializer="zeros")
    super().build(input_shape)

  def node_input(self, node_set: str, index: tf.Tensor) -> tf.Tensor:
    """The unprojected input vector [N, D] of node indices."""
    parts = [self._ids[node_set](index)]
    if self._tables.has_dense(node_set):
      parts.append(self._tables.dense(node_set, index))
    if self._categorical[node_set]:
      codes = self._tables.categorical(node_set, index)
      parts.extend(emb(codes[:, i]) for i, emb in enumerate(self._categorical[node_set]))
    return tf.concat(parts, axis=-1)

  def call(self, graph: tfgnn.GraphTensor,
           masks: Mapping[str, tf.Tensor] | None = None) -> tfgnn.GraphTensor:
    states = {}
    for ns in graph.node_sets:
      if ns not in self._ids:
        continue
      ids = graph.node_sets[ns][NODE_ID_FEATURE]
      # A node's input depends on its index only, not on its cutoff: the same
      # user or video under several cutoffs (a third to half of a batch's
      # nodes) is looked up and projected once. The projection is row-wise,
      # so projecting before or after the masking is the same.
      distinct, where = tf.unique(ids)
      state = tf.gather(self._project[ns](self.node_input(ns, distinct)), where)
      if masks is not None and ns in masks:
        masked = self._project[ns](self._mask_token[ns][None, :])
        state = tf.where(masks[ns][:, None], masked, state)
      states[ns] = {NODE_ID_FEATURE: ids, tfgnn.HIDDEN_STATE: state}
    return graph.replace_features(node_sets=states)


def _graph_update(gnn: str, hidden_dim: int, dropout: float, node_sets):
  """One round of message passing towards the seeds."""
  if gnn == "graph_sage":
    return tfgnn.keras.ConvGNNBuilder(
        lambda edge_set, receiver_tag: graph_sage.GraphSAGEAggregatorConv(
            receiver_tag=receiver_tag, reduce_type="mean", units=hidden_dim,
            dropout_rate=dropout),
        lambda node_set: graph_sage.GraphSAGENextState(
            units=hidden_dim, dropout_rate=dropout, l2_normalize=False),
        receiver_tag=tfgnn.SOURCE).Convolve(node_sets)
  if gnn == "gatv2":
    return gat_v2.GATv2MPNNGraphUpdate(
        units=hidden_dim, message_dim=hidden_dim, num_heads=4,
        receiver_tag=tfgnn.SOURCE, node_set_names=node_sets,
        state_dropout_rate=dropout)
  if gnn == "hgt":
    return hgt.HGTGraphUpdate(num_heads=4, per_head_channels=hidden_dim // 4,
                              receiver_tag=tfgnn.SOURCE, dropout_rate=dropout)
  raise ValueError(f"model.gnn: unknown GNN {gnn!r}; use graph_sage, gatv2 or hgt")


class GraphEncoder(tf.keras.layers.Layer):
  """`gnn_layers` rounds of message passing; returns the final graph.

  The last round updates only `user` and `video` (all that the readout and
  the GFAE decoder use), except for HGT, which always updates every receiver.
  Of those, only the seeds and the GFAE-masked nodes are read afterwards, so
  the last round passes messages only into them (`edges_into`): their states
  are exact, other `user`/`video` final states are not meaningful. That skips
  the outermost hop's edges, most of a round's work.
  `last_layer` is the layer whose weights every loss depends on (GradNorm
  measures gradient norms there in e2e mode).
  """

  def __init__(self, tables: NodeTables, config: ModelConfig, **kwargs):
    super().__init__(**kwargs)
    self.node_inputs = NodeInputs(tables, embedding_dim=config.embedding_dim,
                             hidden_dim=config.gnn_hidden_dim)
    n = config.gnn_layers
    if n < 1:
      raise ValueError(f"model.gnn_layers must be >= 1, got {n}")
    self._prune_last_round = config.gnn != "hgt"
    self.rounds = [
        _graph_update(config.gnn, config.gnn_hidden_dim, config.gnn_dropout,
                      READOUT_NODE_SETS if i == n - 1 else None)
        for i in range(n)]

  @property
  def last_layer(self) -> tf.keras.layers.Layer:
    return self.rounds[-1]

  def call(self, graph: tfgnn.GraphTensor, masks: Mapping[str, tf.Tensor] | None = None,
           training: bool = False) -> tfgnn.GraphTensor:
    graph = self.node_inputs(graph, masks=masks)
    for update in self.rounds[:-1]:
      graph = update(graph, training=training)
    last = graph
    if self._prune_last_round:
      read = {ns: seed_mask(graph, ns) for ns in READOUT_NODE_SETS if ns in graph.node_sets}
      for ns, mask in (masks or {}).items():
        read[ns] = tf.logical_or(read[ns], mask)
      last = edges_into(graph, read)
    return self.rounds[-1](last, training=training)


def readout(graph: tfgnn.GraphTensor) -> dict[str, tf.Tensor]:
  """Final `user` and `video` states of each example's seeds, [B, d] each."""
  return {ns: tfgnn.structured_readout(graph, ns, feature_name=tfgnn.HIDDEN_STATE,
                                       validate=False)
          for ns in READOUT_NODE_SETS}
