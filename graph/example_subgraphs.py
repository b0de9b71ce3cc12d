"""Per-example subgraphs in TF-GNN's tf.Example encoding, read as one batch graph.

The format the Beam sampler writes (graph/beam_sampling.py) and the
SavedModel's `serving_default` takes: each serialized tf.Example holds the
example's features and its own subgraph. `parse` turns a batch of them into
the GraphTensor shape the model trains on (one component per batch, as the
in-memory sampler builds it). `read_spec` and `records` read a directory of
them (the `Subgraphs` artifact: `Split-<split>/*.gz` and `graph_schema.pbtxt`)
without touching the graph they were sampled from.
"""
from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_gnn as tfgnn

from e2e_grec import contracts


def read_spec(subgraphs_dir: str) -> tfgnn.GraphTensorSpec:
  """The GraphTensorSpec of the subgraphs in `subgraphs_dir` (int32 indices, as the sampler)."""
  path = os.path.join(subgraphs_dir, contracts.GRAPH_SCHEMA_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"no subgraph schema at {path}: not a directory of "
                            "pre-sampled subgraphs (BeamSubgraphSampler output)")
  return tfgnn.create_graph_spec_from_schema_pb(tfgnn.read_schema(path),
                                                indices_dtype=tf.int32)


def records(subgraphs_dir: str, split: str) -> tf.data.Dataset:
  """The split's serialized examples (each with its subgraph), in file order."""
  pattern = contracts.split_glob(subgraphs_dir, split)
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f"no pre-sampled {split} examples match {pattern} "
                            "(BeamSubgraphSampler output)")
  return tf.data.TFRecordDataset(files, compression_type="GZIP")


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
