"""Evaluator interface: models in, the standard ModelEvaluation and ModelBlessing out.

The blessing carries the custom properties of TFX's own Evaluator (`blessed`,
`current_model_id`, ...), so the standard Pusher and the
`LatestBlessedModelStrategy` resolver work with it unchanged.

The last blessed model comes from the resolver channel where the orchestrator
has resolvers (local, Vertex AI), or, on open-source Kubeflow Pipelines, from
the newest pushed version's eval record under `pushed_models_dir` (written by
components/pusher).
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
  PARAMETERS = {
      contracts.CONFIG_KEY: component_spec.ExecutionParameter(type=str),
      contracts.PUSHED_MODELS_DIR_KEY: component_spec.ExecutionParameter(type=str,
                                                                         optional=True),
  }
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
               config: Config, last_blessed_model: Optional[types.BaseChannel] = None,
               pushed_models_dir: Optional[str] = None):
    """`config` needs only its `eval` section; give `last_blessed_model` (a
    resolver's output) or `pushed_models_dir` (the Pusher's base directory)."""
    if last_blessed_model is not None and pushed_models_dir:
      raise ValueError("give the last blessed model as a channel or as the pushed "
                       "models' directory, not both")
    super().__init__(spec=EvaluatorSpec(**{
        MODEL_KEY: model, BASELINE_MODEL_KEY: baseline_model,
        contracts.LAST_BLESSED_MODEL_KEY: last_blessed_model,
        contracts.PUSHED_MODELS_DIR_KEY: pushed_models_dir,
        contracts.CONFIG_KEY: contracts.encode_config(config),
        EVALUATION_KEY: channel.Channel(type=standard_artifacts.ModelEvaluation),
        BLESSING_KEY: channel.Channel(type=standard_artifacts.ModelBlessing)}))
