"""AnomaliesGate interface: ExampleValidator's anomalies in, nothing out.

ExampleValidator records anomalies but never fails, so without a gate bad data
would flow on into graph building and training. Downstream components depend
on the gate (`add_upstream_node`), so a failed gate stops the run there.
"""
from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.standard_component_specs import ANOMALIES_KEY

from e2e_grec import contracts
from e2e_grec.components.anomalies_gate import executor


class AnomaliesGateSpec(component_spec.ComponentSpec):
  PARAMETERS = {
      # Where the schema came from, named in the error so the user knows what to edit.
      contracts.SCHEMA_SOURCE_KEY: component_spec.ExecutionParameter(type=str),
  }
  INPUTS = {ANOMALIES_KEY: component_spec.ChannelParameter(
      type=standard_artifacts.ExampleAnomalies)}
  OUTPUTS = {}


class AnomaliesGate(base_component.BaseComponent):
  """Fails with every anomaly listed when the examples do not match the schema."""

  SPEC_CLASS = AnomaliesGateSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, anomalies: types.BaseChannel, schema_source: str):
    super().__init__(spec=AnomaliesGateSpec(**{
        ANOMALIES_KEY: anomalies, contracts.SCHEMA_SOURCE_KEY: schema_source}))
