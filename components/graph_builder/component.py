"""GraphBuilder: prepared examples -> the heterogeneous `Graph` artifact.

    graph_builder = GraphBuilder(examples=prepare.outputs["examples"], config=config)

Everything the graph is built from (training split, node tables, validated
pre-period history) is inside the `Examples` artifact. Beam options come from
the pipeline's `beam_pipeline_args` (after `graph.beam_args` of the config);
the DirectRunner is the classic one.
"""
from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from e2e_grec import contracts
from e2e_grec.components import artifacts
from e2e_grec.components.graph_builder import executor
from e2e_grec.config import Config


class GraphBuilderSpec(types.ComponentSpec):
  """Inputs, outputs and execution properties of GraphBuilder."""
  PARAMETERS = {
      # The resolved run config (`contracts.encode_config`).
      contracts.CONFIG_KEY: ExecutionParameter(type=str),
  }
  INPUTS = {standard_component_specs.EXAMPLES_KEY: ChannelParameter(
      type=standard_artifacts.Examples)}
  OUTPUTS = {contracts.GRAPH_KEY: ChannelParameter(type=artifacts.Graph)}


class GraphBuilder(base_beam_component.BaseBeamComponent):
  """Builds the graph of the training split (plus the pre-period history) with Beam."""

  SPEC_CLASS = GraphBuilderSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, config: Config):
    """Args:
      examples: the `Examples` channel of prepare.
      config: the run config; `config.graph` shapes the graph.
    """
    super().__init__(spec=GraphBuilderSpec(**{
        standard_component_specs.EXAMPLES_KEY: examples,
        contracts.CONFIG_KEY: contracts.encode_config(config),
        contracts.GRAPH_KEY: types.Channel(type=artifacts.Graph)}))
