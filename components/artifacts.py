"""Custom TFX artifact types produced by the E2E-GRec components.

Both are directories; their layouts are the data contracts of
docs/ARCHITECTURE.md. Executors also set custom properties (counts, timing)
so the metadata store shows what a run produced without opening files.
"""
from __future__ import annotations

from tfx.types import artifact


class Graph(artifact.Artifact):
  """The heterogeneous graph of `build-graph`.

  Layout: `graph_schema.pbtxt`, `nodes/<set>.tfrecord`, `edges/<set>.tfrecord`
  (TF-GNN unigraph), `sampling_index.npz`, `manifest.json`, `degrees.png`.
  """
  TYPE_NAME = "e2e_grec.Graph"


class Subgraphs(artifact.Artifact):
  """Subgraphs materialised by TF-GNN's Beam sampler, one per seed node.

  Layout: `subgraphs.tfrecord` (serialized GraphTensors as tf.Examples),
  `graph_schema.pbtxt` (their schema, for `tfgnn.parse_example`),
  `sampling_spec.pbtxt`, `seeds.tfrecord`, `artifacts/` (sampling programs).
  """
  TYPE_NAME = "e2e_grec.Subgraphs"
