"""Evaluator interface: models in, the standard ModelEvaluation and ModelBlessing out.

The blessing carries the custom properties of TFX's own Evaluator (`blessed`,
`current_model_id`, ...), so the standard Pusher and the
`LatestBlessedModelStrategy` resolver work with it unchanged.
"""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, component_spec, standard_artifacts
from tfx.types.standard_component_specs import (BASELINE_MODEL_KEY, BLESSING_KEY,
                                                EVALUATION_KEY, MODEL_KEY)

from e2e_grec import contracts
from e2e_grec.components.evaluator import executor
from e2e_grec.config import Config


class EvaluatorSpec(component_spec.ComponentSpec):
  PARAMETERS = {contracts.CONFIG_KEY: component_spec.ExecutionParameter(type=str)}
  INPUTS = {
      MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
      BASELINE_MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
      contracts.LAST_BLESSED_MODEL_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.Model, optional=True),
  }
  OUTPUTS = {
      EVALUATION_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelEvaluation),
      BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
  }


class Evaluator(base_component.BaseComponent):
  """Blesses `model` if its mean GAUC beats every reference by `eval.blessing_margin`."""

  SPEC_CLASS = EvaluatorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, baseline_model: types.BaseChannel,
               config: Config, last_blessed_model: Optional[types.BaseChannel] = None):
    """`config` needs only its `eval` section."""
    super().__init__(spec=EvaluatorSpec(**{
        MODEL_KEY: model, BASELINE_MODEL_KEY: baseline_model,
        contracts.LAST_BLESSED_MODEL_KEY: last_blessed_model,
        contracts.CONFIG_KEY: contracts.encode_config(config),
        EVALUATION_KEY: channel.Channel(type=standard_artifacts.ModelEvaluation),
        BLESSING_KEY: channel.Channel(type=standard_artifacts.ModelBlessing)}))
