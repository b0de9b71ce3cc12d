"""Per-example subgraphs in TF-GNN's tf.Example encoding, read as one batch graph.

The format the Beam sampler writes (graph/beam_sampling.py) and the
SavedModel's `serving_default` takes: each serialized tf.Example holds the
example's features and its own subgraph. `parse` turns a batch of them into
the GraphTensor shape the model trains on (one component per batch, as the
in-memory sampler builds it).
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_gnn as tfgnn


def parse(spec: tfgnn.GraphTensorSpec, serialized: tf.Tensor) -> tfgnn.GraphTensor:
  """Serialized tf.Examples [B] -> their subgraphs as one graph component."""
  return _single_component(tfgnn.parse_example(spec, serialized).merge_batch_to_components())


def _single_component(graph: tfgnn.GraphTensor) -> tfgnn.GraphTensor:
  """Merges all components into one, as the sampler's batches are built.

  After `merge_batch_to_components` each example is one component; node and
  edge indices are already global, so only the sizes change. The examples'
  subgraphs stay disconnected, so each example is scored on its own subgraph.
  """
  if graph.context.features:
    raise ValueError("per-example graphs with context features cannot be merged into "
                     f"one component: {sorted(graph.context.features)}")

  def total(sizes: tf.Tensor) -> tf.Tensor:
    return tf.reshape(tf.reduce_sum(sizes), [1])

  return tfgnn.GraphTensor.from_pieces(
      node_sets={
          name: tfgnn.NodeSet.from_fields(sizes=total(ns.sizes), features=ns.features)
          for name, ns in graph.node_sets.items()},
      edge_sets={
          name: tfgnn.EdgeSet.from_fields(
              sizes=total(es.sizes), features=es.features,
              adjacency=tfgnn.Adjacency.from_indices(
                  source=(es.adjacency.source_name, es.adjacency.source),
                  target=(es.adjacency.target_name, es.adjacency.target)))
          for name, es in graph.edge_sets.items()})
