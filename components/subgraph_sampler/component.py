"""SubgraphSampler: Graph + Examples -> `Subgraphs` of a split's seeds (TF-GNN Beam sampler).

    subgraph_sampler = SubgraphSampler(graph=graph_builder.outputs["graph"],
                                       examples=prepare.outputs["examples"],
                                       config=config, split="eval")

For graphs that do not fit in memory. TF-GNN's Beam sampler has no per-example
day cutoff: it samples the graph as built (training window + pre-period
history), so its subgraphs are leak-free only for seeds of examples after the
training window -- the eval split, the default. See executor.py.
"""
from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from e2e_grec.components import artifacts
from e2e_grec.components.subgraph_sampler import executor
from e2e_grec.config import Config


class SubgraphSamplerSpec(types.ComponentSpec):
  """Inputs, outputs and execution properties of SubgraphSampler."""
  PARAMETERS = {
      # The resolved run config as YAML; `sampling` gives the fan-outs.
      executor.CONFIG_KEY: ExecutionParameter(type=str),
      # Split whose distinct users (or videos) are the seeds.
      executor.SPLIT_KEY: ExecutionParameter(type=str, optional=True),
      # "user" or "video".
      executor.SEED_NODE_SET_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      executor.GRAPH_KEY: ChannelParameter(type=artifacts.Graph),
      executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
  }
  OUTPUTS = {executor.SUBGRAPHS_KEY: ChannelParameter(type=artifacts.Subgraphs)}


class SubgraphSampler(base_beam_component.BaseBeamComponent):
  """Materialises one sampled subgraph per seed to TFRecords with Beam."""

  SPEC_CLASS = SubgraphSamplerSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, graph: types.BaseChannel, examples: types.BaseChannel,
               config: Config, split: str = "eval", seed_node_set: str = "user"):
    """Args:
      graph: the `Graph` channel of GraphBuilder.
      examples: the `Examples` channel whose split gives the seeds.
      config: the run config (`sampling` fan-outs, `graph.beam_args`).
      split: the split whose users (or videos) are seeded; keep "eval" (see above).
      seed_node_set: "user" or "video".
    """
    super().__init__(spec=SubgraphSamplerSpec(
        config=config.to_yaml(), split=split, seed_node_set=seed_node_set,
        graph=graph, examples=examples,
        subgraphs=types.Channel(type=artifacts.Subgraphs)))
