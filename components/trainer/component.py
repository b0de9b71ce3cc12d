"""Trainer interface: TFX's Trainer spec plus the `graph` input channel.

It keeps TFX's Trainer contract (train/eval args, `run_fn`, `custom_config`,
the standard `Model` and `ModelRun` outputs with the SavedModel under
`Format-Serving`), so the standard Pusher and model resolvers consume it. The
only additions are the `Graph` artifact, absent for `no_graph` models, and the
`Subgraphs` artifact of a BeamSubgraphSampler (`sampling.where=beam`), whose
pre-sampled subgraphs the Trainer reads instead of sampling in memory.
"""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import trainer_pb2
from tfx.types import channel, component_spec, standard_artifacts, standard_component_specs
from tfx.utils import json_utils

from e2e_grec import contracts
from e2e_grec.components import artifacts
from e2e_grec.components.trainer import executor
from e2e_grec.config import Config


class TrainerSpec(standard_component_specs.TrainerSpec):
  INPUTS = {**standard_component_specs.TrainerSpec.INPUTS,
            contracts.GRAPH_KEY: component_spec.ChannelParameter(type=artifacts.Graph,
                                                                 optional=True),
            contracts.SUBGRAPHS_KEY: component_spec.ChannelParameter(
                type=artifacts.Subgraphs, optional=True)}


class Trainer(base_component.BaseComponent):
  """Trains and exports one model of `mode` (e2e, two_stage, no_graph)."""

  SPEC_CLASS = TrainerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, config: Config, mode: str,
               graph: Optional[types.BaseChannel] = None,
               subgraphs: Optional[types.BaseChannel] = None, resume_root: str = ""):
    """`config` is the whole training config; `mode` overrides `model.mode`;
    `subgraphs` (with `sampling.where=beam`) are read instead of sampling;
    a local `resume_root` lets a rerun resume a killed training (see executor)."""
    if mode != "no_graph" and graph is None:
      raise ValueError(f"a {mode} model needs the graph channel")
    config = config.replace(**{"model.mode": mode})
    super().__init__(spec=TrainerSpec(
        examples=examples, graph=graph, subgraphs=subgraphs,
        train_args=trainer_pb2.TrainArgs(splits=["train"]),
        eval_args=trainer_pb2.EvalArgs(splits=["eval"]),
        run_fn=executor.RUN_FN,
        custom_config=json_utils.dumps(
            {contracts.CONFIG_KEY: contracts.encode_config(config),
             executor.RESUME_ROOT_KEY: resume_root}),
        model=channel.Channel(type=standard_artifacts.Model),
        model_run=channel.Channel(type=standard_artifacts.ModelRun)))
