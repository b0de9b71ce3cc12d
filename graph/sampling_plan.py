"""The sampling plan: which edge sets each hop follows, with which fan-out.

One plan, built and checked here, drives both samplers: the in-memory
`SubgraphSampler` (graph/sampler.py, per-example day cutoffs, inside tf.data
and serving) and TF-GNN's Beam sampler (components/beam_subgraph_sampler,
graphs beyond one machine's memory), which gets it as a
`tfgnn.sampler.SamplingSpec`.

Hop h follows every configured edge set, and its `rev_` set, whose source set
the hop's frontier reached, with fan-out `sampling.fanouts[h]` (or the
per-edge-set override; an override of 0 skips the edge set). The frontier
starts at the seed node sets; each hop's frontier is the target sets of the
previous hop's steps.
"""
from __future__ import annotations

import dataclasses
import logging
import zlib
from typing import Any, Mapping, Sequence

import tensorflow_gnn as tfgnn

from e2e_grec import contracts
from e2e_grec.config import SamplingConfig


@dataclasses.dataclass(frozen=True)
class Step:
  """Following one edge set from one hop's frontier."""
  hop: int
  edge_set: str
  source_set: str
  target_set: str
  fanout: int

  @property
  def stream(self) -> int:
    """Mixed into the in-memory sampler's random key: (hop, edge set) draws are independent."""
    return zlib.crc32(f"{self.hop}/{self.edge_set}".encode())

  @property
  def op_name(self) -> str:
    """The sampling op's name in a TF-GNN SamplingSpec."""
    return f"hop{self.hop}/{self.edge_set}"


@dataclasses.dataclass(frozen=True)
class SamplingPlan:
  """The static traversal of `sampling` over a graph's edge sets."""
  seed_node_sets: tuple[str, ...]
  hops: int
  steps: tuple[Step, ...]

  @property
  def edge_set_names(self) -> tuple[str, ...]:
    """Every traversed edge set once, in first-use order."""
    return tuple(dict.fromkeys(s.edge_set for s in self.steps))

  @classmethod
  def build(cls, endpoints: Mapping[str, tuple[str, str]], config: SamplingConfig,
            seed_node_sets: Sequence[str] = contracts.SEED_NODE_SETS) -> "SamplingPlan":
    """Plans `config` over a graph whose edge sets have these (source, target) sets.

    Raises ValueError naming the key when an override names an edge set that is
    not sampled, a seed set is not in the graph, or nothing leaves the seeds;
    configured edge sets the graph lacks are skipped with a warning.
    """
    node_sets = {ns for pair in endpoints.values() for ns in pair}
    unknown_seeds = [ns for ns in seed_node_sets if ns not in node_sets]
    if unknown_seeds:
      raise ValueError(f"seed node set(s) {unknown_seeds} are not in the graph "
                       f"(has {sorted(node_sets)})")
    missing = [n for n in config.edge_sets if n not in endpoints]
    if missing:
      logging.warning("sampling.edge_sets %s are not in the graph (has: %s); they are "
                      "not sampled", missing, sorted(endpoints))
    known = set(config.edge_sets) | {contracts.REVERSE_PREFIX + n for n in config.edge_sets}
    unknown = sorted(set(config.fanout_overrides) - known)
    if unknown:
      raise ValueError(f"sampling.fanout_overrides names edge sets that are not sampled: "
                       f"{unknown}; sampled: {sorted(known)}")
    names = [n for n in config.edge_sets if n in endpoints]
    names += [contracts.REVERSE_PREFIX + n for n in names
              if contracts.REVERSE_PREFIX + n in endpoints]
    steps, frontier = [], set(seed_node_sets)
    for hop, default in enumerate(config.fanouts):
      reached = set()
      for name in names:
        source_set, target_set = endpoints[name]
        base = name.removeprefix(contracts.REVERSE_PREFIX)
        fanout = config.fanout_overrides.get(name, config.fanout_overrides.get(base, default))
        if source_set in frontier and fanout > 0:
          steps.append(Step(hop, name, source_set, target_set, int(fanout)))
          reached.add(target_set)
      frontier = reached
    if not steps:
      raise ValueError(f"nothing to sample: none of sampling.edge_sets "
                       f"{list(config.edge_sets)} leaves the seeds {list(seed_node_sets)} "
                       f"in the graph (has {sorted(endpoints)})")
    return cls(tuple(seed_node_sets), len(config.fanouts), tuple(steps))

  def sampling_spec(self, schema: tfgnn.GraphSchema) -> tfgnn.sampler.SamplingSpec:
    """The plan as TF-GNN's SamplingSpec (uniform sampling) for a one-seed-set plan."""
    if len(self.seed_node_sets) != 1:
      raise ValueError(f"a SamplingSpec has one seed node set; the plan has "
                       f"{list(self.seed_node_sets)}")
    builder = tfgnn.sampler.SamplingSpecBuilder(
        schema, default_strategy=tfgnn.sampler.SamplingStrategy.RANDOM_UNIFORM)
    (seed_set,) = self.seed_node_sets
    frontier: dict[str, list[Any]] = {seed_set: [builder.seed(seed_set)]}
    for hop in range(self.hops):
      reached: dict[str, list[Any]] = {}
      for step in (s for s in self.steps if s.hop == hop):
        sources = frontier[step.source_set]
        source = sources[0] if len(sources) == 1 else builder.join(sources)
        reached.setdefault(step.target_set, []).append(
            source.sample(step.fanout, step.edge_set, op_name=step.op_name))
      frontier = reached
    return builder.build()


def schema_endpoints(schema: tfgnn.GraphSchema) -> dict[str, tuple[str, str]]:
  """Edge set -> (source set, target set) of a TF-GNN graph schema."""
  return {name: (es.source, es.target) for name, es in schema.edge_sets.items()}
