"""GraphBuilder: prepared examples -> the heterogeneous `Graph` artifact.

    graph_builder = GraphBuilder(examples=prepare.outputs["examples"],
                                 config=config, data_dir=data_dir)

Beam options come from the pipeline's `beam_pipeline_args` (after
`graph.beam_args` of the config); the DirectRunner is the classic one.
"""
from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from e2e_grec.components import artifacts
from e2e_grec.components.graph_builder import executor
from e2e_grec.config import Config

EXAMPLES_KEY, GRAPH_KEY = executor.EXAMPLES_KEY, executor.GRAPH_KEY
CONFIG_KEY, DATA_DIR_KEY = executor.CONFIG_KEY, executor.DATA_DIR_KEY


class GraphBuilderSpec(types.ComponentSpec):
  """Inputs, outputs and execution properties of GraphBuilder."""
  PARAMETERS = {
      # The resolved run config as YAML (`Config.to_yaml()`).
      CONFIG_KEY: ExecutionParameter(type=str),
      # KuaiRand-layout directory with the pre-period history ("" = none).
      DATA_DIR_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}
  OUTPUTS = {GRAPH_KEY: ChannelParameter(type=artifacts.Graph)}


class GraphBuilder(base_beam_component.BaseBeamComponent):
  """Builds the graph of the training split (plus the pre-period history) with Beam."""

  SPEC_CLASS = GraphBuilderSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, config: Config, data_dir: str = ""):
    """Args:
      examples: the `Examples` channel of prepare (Split-train + node_tables.npz).
      config: the run config; `config.graph` shapes the graph.
      data_dir: KuaiRand directory whose user_history_before_*.csv to read.
    """
    super().__init__(spec=GraphBuilderSpec(
        examples=examples, config=config.to_yaml(), data_dir=data_dir,
        graph=types.Channel(type=artifacts.Graph)))
