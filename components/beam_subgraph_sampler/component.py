"""BeamSubgraphSampler: Graph + Examples -> `Subgraphs` of every example, or of a split's seeds.

    beam_sampler = BeamSubgraphSampler(graph=graph_builder.outputs["graph"],
                                       examples=prepare.outputs["examples"],
                                       config=config, seed_node_set=PER_EXAMPLE)

With `seed_node_set=PER_EXAMPLE` (the pipeline's `sampling.where=beam`) every
example of every split gets the subgraph the in-trainer sampler would give it,
with its day as cutoff (graph/beam_sampling.py), for the Trainer to read.

With a node set ("user", "video"), for graphs that do not fit in memory: TF-GNN's Beam sampler runs the same
`SamplingPlan` as the in-memory `graph.sampler.SubgraphSampler`. It has no
per-example day cutoff: it samples the graph as built (training window +
pre-period history), so its subgraphs are leak-free only for seeds of examples
after the training window -- the eval split, the default. See executor.py.
"""
from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from e2e_grec import contracts
from e2e_grec.components import artifacts
from e2e_grec.components.beam_subgraph_sampler import executor
from e2e_grec.components.beam_subgraph_sampler.executor import PER_EXAMPLE
from e2e_grec.config import Config


class BeamSubgraphSamplerSpec(types.ComponentSpec):
  """Inputs, outputs and execution properties of BeamSubgraphSampler."""
  PARAMETERS = {
      # The resolved run config; `sampling` gives the plan, `graph.beam_args` Beam options.
      contracts.CONFIG_KEY: ExecutionParameter(type=str),
      # Split whose distinct users (or videos) are the seeds.
      contracts.SPLIT_KEY: ExecutionParameter(type=str, optional=True),
      # PER_EXAMPLE ("example": every example of every split), "user" or "video".
      contracts.SEED_NODE_SET_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      contracts.GRAPH_KEY: ChannelParameter(type=artifacts.Graph),
      standard_component_specs.EXAMPLES_KEY: ChannelParameter(
          type=standard_artifacts.Examples),
  }
  OUTPUTS = {contracts.SUBGRAPHS_KEY: ChannelParameter(type=artifacts.Subgraphs)}


class BeamSubgraphSampler(base_beam_component.BaseBeamComponent):
  """Materialises one sampled subgraph per seed to TFRecords with Beam."""

  SPEC_CLASS = BeamSubgraphSamplerSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, graph: types.BaseChannel, examples: types.BaseChannel,
               config: Config, split: str = contracts.EVAL_SPLIT,
               seed_node_set: str = "user"):
    """Args:
      graph: the `Graph` channel of GraphBuilder.
      examples: the `Examples` channel whose split gives the seeds.
      config: the run config (`sampling`, `graph.beam_args`).
      split: the split whose users (or videos) are seeded; keep "eval" (see above).
        Ignored for PER_EXAMPLE, which samples every split.
      seed_node_set: PER_EXAMPLE, "user" or "video".
    """
    super().__init__(spec=BeamSubgraphSamplerSpec(**{
        contracts.CONFIG_KEY: contracts.encode_config(config),
        contracts.SPLIT_KEY: split, contracts.SEED_NODE_SET_KEY: seed_node_set,
        contracts.GRAPH_KEY: graph, standard_component_specs.EXAMPLES_KEY: examples,
        contracts.SUBGRAPHS_KEY: types.Channel(type=artifacts.Subgraphs)}))
