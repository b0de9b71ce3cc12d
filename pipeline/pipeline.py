"""The E2E-GRec TFX pipeline: one DAG for local runs and for Kubeflow.

    ExampleGen -> StatisticsGen -> ExampleValidator (schema: ImportSchemaGen)
      -> AnomaliesGate -> GraphBuilder -> Trainer (model.mode) --------> Evaluator -> Pusher
                       \\-> BaselineTrainer (eval.baseline_mode) ------/
                            LatestBlessedModelResolver --------------/

With `sampling.where=beam` a BeamSubgraphSampler (GraphBuilder -> it -> the
trainers) samples every example's subgraph before training, for graphs beyond a
trainer's memory.

The resolver node exists where the orchestrator implements TFX resolvers (the
LocalDagRunner, Vertex AI Pipelines); open-source Kubeflow Pipelines has none,
so there the Evaluator reads the last blessed model's eval record from the
newest version the Pusher wrote (components/pusher leaves it in each version).

Each custom component gets the resolved config as a YAML exec property holding
only the sections it reads (the others at their defaults): changing, say,
`train.epochs` then reruns the trainers and what follows, while ExampleGen and
GraphBuilder stay cached.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

from tfx.components import ExampleValidator, StatisticsGen
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.dsl.components.common import resolver
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy
from tfx.orchestration import metadata
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.proto import pusher_pb2
from tfx.types import channel, standard_artifacts

from e2e_grec import contracts
from e2e_grec.components.anomalies_gate.component import AnomaliesGate
from e2e_grec.components.beam_subgraph_sampler.component import (PER_EXAMPLE,
                                                                 BeamSubgraphSampler)
from e2e_grec.components.evaluator.component import Evaluator
from e2e_grec.components.example_gen.component import ExampleGen
from e2e_grec.components.graph_builder.component import GraphBuilder
from e2e_grec.components.pusher.component import Pusher
from e2e_grec.components.trainer.component import Trainer
from e2e_grec.config import Config

# Config sections each custom component reads.
EXAMPLE_GEN_SECTIONS = ("data", "synthetic")
GRAPH_SECTIONS = ("data", "graph")
BEAM_SAMPLER_SECTIONS = ("graph", "sampling")
TRAINER_SECTIONS = ("data", "graph", "sampling", "model", "train", "export")
TRAINER_RUNS_DIR = "trainer_runs"
EVALUATOR_SECTIONS = ("eval",)


@dataclasses.dataclass(frozen=True)
class Locations:
  """Where one pipeline instance reads and writes; local paths or remote URIs."""
  root: str
  data_dir: str
  synthetic: bool
  serving_dir: str
  schema_file: str
  metadata_path: str | None = None  # local SQLite MLMD; None on Kubeflow


def default_schema_file() -> str:
  """schemas/examples.pbtxt of the installed package (local runs)."""
  return contracts.EXAMPLES_SCHEMA_PATH


def synthetic_data_dir(root: str, config: Config) -> str:
  """Deterministic per synthetic config, so reruns reuse the generated logs."""
  digest = hashlib.sha256(repr(dataclasses.astuple(config.synthetic)).encode())
  return os.path.join(root, "data", f"synthetic-{digest.hexdigest()[:10]}")


def locations(config: Config, root: str, serving_dir: str, schema_file: str,
              metadata_path: str | None) -> Locations:
  """`config.data.data_dir`, or synthetic logs generated under `root`."""
  data_dir = config.data.data_dir
  return Locations(root=root, data_dir=data_dir or synthetic_data_dir(root, config),
                   synthetic=not data_dir, serving_dir=serving_dir,
                   schema_file=schema_file, metadata_path=metadata_path)


def sections(config: Config, names: tuple[str, ...]) -> Config:
  """`config` with only the named sections kept; the others at their defaults."""
  return Config().replace(**{name: getattr(config, name) for name in names})


def validated(examples: channel.BaseChannel, schema_file: str) -> list:
  """StatisticsGen, ImportSchemaGen, ExampleValidator and the AnomaliesGate that
  stops the run when `examples` do not match the schema (last in the list)."""
  statistics_gen = StatisticsGen(examples=examples)
  schema_gen = ImportSchemaGen(schema_file=schema_file)
  example_validator = ExampleValidator(
      statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
  return [statistics_gen, schema_gen, example_validator,
          AnomaliesGate(anomalies=example_validator.outputs["anomalies"],
                        schema_source=schema_file)]


def pushing(model: channel.BaseChannel, pushed_models_dir: str,
            model_blessing: channel.BaseChannel | None = None) -> Pusher:
  """The Pusher of `model` into the versioned `pushed_models_dir`."""
  return Pusher(model=model, model_blessing=model_blessing,
                push_destination=pusher_pb2.PushDestination(
                    filesystem=pusher_pb2.PushDestination.Filesystem(
                        base_directory=pushed_models_dir)))


def create_pipeline(config: Config, where: Locations,
                    resolve_last_blessed: bool = True) -> tfx_pipeline.Pipeline:
  """The DAG of the module docstring for `config`, reading and writing at `where`.

  `resolve_last_blessed=False` leaves out the LatestBlessedModelResolver: the
  Evaluator then reads the last blessed model from the pushed versions.
  """
  example_gen = ExampleGen(data_dir=where.data_dir, synthetic=where.synthetic,
                           config=sections(config, EXAMPLE_GEN_SECTIONS))
  *validation, gate = validated(example_gen.outputs["examples"], where.schema_file)

  graph_builder = GraphBuilder(examples=example_gen.outputs["examples"],
                               config=sections(config, GRAPH_SECTIONS))
  graph_builder.add_upstream_node(gate)

  trainer_config = sections(config, TRAINER_SECTIONS)
  # Local roots keep each Trainer's runs under <root>/trainer_runs/<id>, so a
  # rerun resumes a killed training from its checkpoints.
  resume = (lambda node_id: "" if "://" in where.root
            else os.path.join(os.path.abspath(where.root), TRAINER_RUNS_DIR, node_id))
  beam_sampling, subgraphs = [], None
  if config.sampling.where == "beam":
    beam_sampling = [BeamSubgraphSampler(
        graph=graph_builder.outputs["graph"], examples=example_gen.outputs["examples"],
        config=sections(config, BEAM_SAMPLER_SECTIONS), seed_node_set=PER_EXAMPLE)]
    subgraphs = beam_sampling[0].outputs[contracts.SUBGRAPHS_KEY]
  trainer = Trainer(examples=example_gen.outputs["examples"], graph=graph_builder.outputs["graph"],
                    subgraphs=subgraphs, config=trainer_config, mode=config.model.mode,
                    resume_root=resume("Trainer"))
  baseline_graph = (None if config.eval.baseline_mode == "no_graph"
                    else graph_builder.outputs["graph"])
  baseline_trainer = Trainer(examples=example_gen.outputs["examples"], graph=baseline_graph,
                             subgraphs=subgraphs if baseline_graph is not None else None,
                             config=trainer_config, mode=config.eval.baseline_mode,
                             resume_root=resume("BaselineTrainer")).with_id("BaselineTrainer")
  baseline_trainer.add_upstream_node(gate)

  last_blessed = [resolver.Resolver(
      strategy_class=latest_blessed_model_strategy.LatestBlessedModelStrategy,
      model=channel.Channel(type=standard_artifacts.Model),
      model_blessing=channel.Channel(type=standard_artifacts.ModelBlessing),
  ).with_id("LatestBlessedModelResolver")] if resolve_last_blessed else []
  pushed_models_dir = os.path.join(where.serving_dir, config.serving.model_name)
  evaluator = Evaluator(model=trainer.outputs["model"],
                        baseline_model=baseline_trainer.outputs["model"],
                        last_blessed_model=(last_blessed[0].outputs["model"] if last_blessed
                                            else None),
                        pushed_models_dir=None if last_blessed else pushed_models_dir,
                        config=sections(config, EVALUATOR_SECTIONS))
  pusher = pushing(trainer.outputs["model"], pushed_models_dir,
                   model_blessing=evaluator.outputs["blessing"])

  return tfx_pipeline.Pipeline(
      pipeline_name=config.pipeline.name,
      pipeline_root=where.root,
      components=[example_gen, *validation, gate, graph_builder, *beam_sampling,
                  baseline_trainer, trainer, *last_blessed, evaluator, pusher],
      enable_cache=config.pipeline.enable_cache,
      metadata_connection_config=(
          metadata.sqlite_metadata_connection_config(where.metadata_path)
          if where.metadata_path else None),
      beam_pipeline_args=list(config.pipeline.beam_args))
