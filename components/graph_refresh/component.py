"""Graph refresh interfaces: the two halves of `serving.graph_refresh` as components.

    model_run -> RefreshedGraphBuilder -> examples, graph     (steps 1-3)
    model_run, examples, graph -> RefreshExporter -> model   (step 4, Format-Serving)

`model_run` is a training run directory (the Trainer's `ModelRun`, or an
`e2e-grec train --out`): its config, weights and node tables. Between the two
the pipeline validates the refreshed examples (pipeline/graph_refresh.py); the
Pusher then pushes `model` as a new version, like a trained one.
"""
from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_beam_component, base_component, executor_spec
from tfx.types import channel, component_spec, standard_artifacts
from tfx.types.standard_component_specs import EXAMPLES_KEY, MODEL_KEY, MODEL_RUN_KEY

from e2e_grec import contracts
from e2e_grec.components import artifacts
from e2e_grec.components.graph_refresh import executor
from e2e_grec.config import Config


class RefreshedGraphBuilderSpec(component_spec.ComponentSpec):
  PARAMETERS = {
      contracts.CONFIG_KEY: component_spec.ExecutionParameter(type=str),
      contracts.DATA_DIR_KEY: component_spec.ExecutionParameter(type=str),
      # As ExampleGen's: newer logs under the same path invalidate the cache.
      contracts.DATA_FINGERPRINT_KEY: component_spec.ExecutionParameter(type=str),
      contracts.THROUGH_KEY: component_spec.ExecutionParameter(type=str),
  }
  INPUTS = {MODEL_RUN_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelRun)}
  OUTPUTS = {
      EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      contracts.GRAPH_KEY: component_spec.ChannelParameter(type=artifacts.Graph),
  }


class RefreshedGraphBuilder(base_beam_component.BaseBeamComponent):
  """Prepares the newer logs on the model's vocabularies and builds their graph."""

  SPEC_CLASS = RefreshedGraphBuilderSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.RefreshedGraphBuilderExecutor)

  def __init__(self, model_run: types.BaseChannel, data_dir: str, data_fingerprint: str,
               config: Config, through: str = ""):
    """`config` contributes `graph.beam_args` only; the window and everything that
    shapes the graph come from the model's own config. `data_fingerprint` is
    ExampleGen's (`example_gen.component.fingerprint`)."""
    super().__init__(spec=RefreshedGraphBuilderSpec(**{
        MODEL_RUN_KEY: model_run, contracts.DATA_DIR_KEY: data_dir,
        contracts.DATA_FINGERPRINT_KEY: data_fingerprint,
        contracts.CONFIG_KEY: contracts.encode_config(config), contracts.THROUGH_KEY: through,
        EXAMPLES_KEY: channel.Channel(type=standard_artifacts.Examples),
        contracts.GRAPH_KEY: channel.Channel(type=artifacts.Graph)}))


class RefreshExporterSpec(component_spec.ComponentSpec):
  PARAMETERS = {contracts.CONFIG_KEY: component_spec.ExecutionParameter(type=str)}
  INPUTS = {
      MODEL_RUN_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelRun),
      EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      contracts.GRAPH_KEY: component_spec.ChannelParameter(type=artifacts.Graph),
  }
  OUTPUTS = {MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model)}


class RefreshExporter(base_component.BaseComponent):
  """The trained weights on the refreshed graph, as a serving `Model` (no training)."""

  SPEC_CLASS = RefreshExporterSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.RefreshExporterExecutor)

  def __init__(self, model_run: types.BaseChannel, examples: types.BaseChannel,
               graph: types.BaseChannel, config: Config):
    """`config` contributes `serving` and `export` only."""
    super().__init__(spec=RefreshExporterSpec(**{
        MODEL_RUN_KEY: model_run, EXAMPLES_KEY: examples, contracts.GRAPH_KEY: graph,
        contracts.CONFIG_KEY: contracts.encode_config(config),
        MODEL_KEY: channel.Channel(type=standard_artifacts.Model)}))
