"""What a graph build produced: counts, degree statistics, dropped edges, timing.

`GraphManifest` is returned by `build_graph` and saved as `manifest.json` in
the graph directory; `plot_degrees` draws `degrees.png` (degree CCDF per node
set, log-log). Degrees are computed from the CSR sampling index, so they are
exactly what the in-memory sampler sees. Node index 0 (the OOV bucket) is left
out of every degree statistic.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np

from e2e_grec import contracts
from e2e_grec.graph.sampling_index import SamplingIndex


@dataclasses.dataclass(frozen=True)
class DegreeStats:
  """Distribution of the degrees of a node set's nodes (OOV excluded)."""
  min: int
  mean: float
  p50: float
  p99: float
  max: int
  # Nodes with degree 0.
  isolated: int

  @classmethod
  def of(cls, degrees: np.ndarray) -> "DegreeStats":
    if degrees.size == 0:
      return cls(0, 0.0, 0.0, 0.0, 0, 0)
    p50, p99 = np.percentile(degrees, [50, 99])
    return cls(int(degrees.min()), round(float(degrees.mean()), 4), float(p50),
               float(p99), int(degrees.max()), int((degrees == 0).sum()))


@dataclasses.dataclass(frozen=True)
class NodeSetStats:
  # Nodes including the OOV node 0.
  nodes: int
  # Edges leaving each node over all edge sets (reverse sets included).
  degree: DegreeStats


@dataclasses.dataclass(frozen=True)
class EdgeSetStats:
  source: str
  target: str
  edges: int
  # Range of the edges' `day` (None when empty).
  day_min: int | None
  day_max: int | None
  # Out-degree of the source node set's nodes in this edge set.
  degree: DegreeStats


@dataclasses.dataclass(frozen=True)
class GraphManifest:
  """Summary of one `build-graph` run (see the module docstring)."""
  graph_dir: str
  node_sets: Mapping[str, NodeSetStats]
  edge_sets: Mapping[str, EdgeSetStats]
  # edge set -> reason (e.g. `unknown_video`) -> edges not built.
  dropped: Mapping[str, Mapping[str, int]]
  # Input counts, e.g. `examples`, `history_users`, `history_rows_quarantined`.
  inputs: Mapping[str, int]
  build_seconds: float
  # Wall time of the phases: `beam` (the pipeline), `index` (reading the
  # edges back into the sampling index), `outputs` (schema, manifest, plot).
  phase_seconds: Mapping[str, float]
  beam_args: tuple[str, ...]

  @property
  def num_edges(self) -> int:
    """Edges stored, counting reverse sets (what the sampler can traverse)."""
    return sum(es.edges for es in self.edge_sets.values())

  @property
  def num_dropped(self) -> int:
    return sum(sum(reasons.values()) for reasons in self.dropped.values())

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def save(self, graph_dir: str) -> str:
    path = os.path.join(graph_dir, contracts.MANIFEST_FILE)
    with open(path, "w") as f:
      json.dump(self.to_dict(), f, indent=2)
    return path

  @classmethod
  def load(cls, graph_dir: str) -> "GraphManifest":
    with open(os.path.join(graph_dir, contracts.MANIFEST_FILE)) as f:
      raw = json.load(f)
    return cls(
        graph_dir=raw["graph_dir"],
        node_sets={name: NodeSetStats(s["nodes"], DegreeStats(**s["degree"]))
                   for name, s in raw["node_sets"].items()},
        edge_sets={name: EdgeSetStats(**{**s, "degree": DegreeStats(**s["degree"])})
                   for name, s in raw["edge_sets"].items()},
        dropped=raw["dropped"], inputs=raw["inputs"],
        build_seconds=raw["build_seconds"], phase_seconds=raw["phase_seconds"],
        beam_args=tuple(raw["beam_args"]))


def node_degrees(index: SamplingIndex) -> dict[str, np.ndarray]:
  """Total degree of every node (OOV excluded), per node set."""
  totals = {ns: np.zeros(max(size - 1, 0), np.int64)
            for ns, size in index.node_set_sizes.items()}
  for es in index.edge_sets.values():
    totals[es.source_set] += np.diff(es.row_splits)[1:]
  return totals


def summarize(index: SamplingIndex, *, graph_dir: str,
              dropped: Mapping[str, Mapping[str, int]], inputs: Mapping[str, int],
              build_seconds: float, phase_seconds: Mapping[str, float],
              beam_args: tuple[str, ...]) -> GraphManifest:
  """The manifest of a graph whose edges are all in `index`."""
  degrees = node_degrees(index)
  node_sets = {ns: NodeSetStats(int(size), DegreeStats.of(degrees[ns]))
               for ns, size in sorted(index.node_set_sizes.items())}
  edge_sets = {}
  for name, es in sorted(index.edge_sets.items()):
    empty = es.num_edges == 0
    edge_sets[name] = EdgeSetStats(
        es.source_set, es.target_set, es.num_edges,
        None if empty else int(es.days.min()), None if empty else int(es.days.max()),
        DegreeStats.of(np.diff(es.row_splits)[1:]))
  return GraphManifest(graph_dir, node_sets, edge_sets,
                       {k: dict(v) for k, v in sorted(dropped.items())}, dict(inputs),
                       round(build_seconds, 3),
                       {k: round(v, 3) for k, v in phase_seconds.items()}, tuple(beam_args))


def plot_degrees(index: SamplingIndex, path: str) -> str:
  """Writes the degree CCDF (fraction of nodes with degree >= d) per node set."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  figure, axes = plt.subplots(figsize=(6.4, 4.2))
  for ns, degrees in sorted(node_degrees(index).items()):
    positive = np.sort(degrees[degrees > 0])
    if positive.size == 0:
      continue
    ccdf = 1.0 - np.arange(positive.size) / degrees.size
    axes.step(positive, ccdf, where="post",
              label=f"{ns} ({positive.size:,} of {degrees.size:,} nodes linked)")
  axes.set_xscale("log")
  axes.set_yscale("log")
  axes.set_xlabel("degree d (all edge sets, both directions)")
  axes.set_ylabel("fraction of nodes with degree >= d")
  axes.set_title("Node degree distribution")
  axes.grid(True, which="both", alpha=0.3)
  axes.legend(fontsize=8, loc="lower left")
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path
