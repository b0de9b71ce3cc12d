"""The graph refresh pipeline: a trained model served on a graph rebuilt from newer logs.

    Importer (the trained run) -> RefreshedGraphBuilder -> StatisticsGen -> ExampleValidator
      -> AnomaliesGate -> RefreshExporter -> Pusher

No training step runs: `serving.graph_refresh` in two components, with the
schema gate of the training pipeline between them, so logs that fail
validation stop the run before anything is exported and the served versions
stay untouched. The Pusher has no blessing to wait for (the weights were
blessed when trained) and writes the next version beside the served ones.
Locally: `e2e-grec run --refresh-from RUN`; on Kubeflow: `e2e-grec
compile-kubeflow --pipeline graph_refresh`, with the trained run as the
run-time parameter `model_run`.
"""
from __future__ import annotations

import os

from tfx.dsl.components.common import importer
from tfx.orchestration import data_types
from tfx.orchestration import metadata
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.types import standard_artifacts

from e2e_grec.components.example_gen.component import fingerprint
from e2e_grec.components.graph_refresh.component import (RefreshedGraphBuilder,
                                                         RefreshExporter)
from e2e_grec.config import Config
from e2e_grec.pipeline import pipeline as pipeline_lib

# Config sections each refresh component reads (the model's own config does the rest).
BUILDER_SECTIONS = ("graph",)
EXPORTER_SECTIONS = ("serving", "export")
# The run-time parameter (Kubeflow) naming the trained run directory.
MODEL_RUN_PARAMETER = "model_run"


def pipeline_name(config: Config) -> str:
  return f"{config.pipeline.name}-graph-refresh"


def create_pipeline(config: Config, where: pipeline_lib.Locations,
                    model_run: str | data_types.RuntimeParameter,
                    through: str = "") -> tfx_pipeline.Pipeline:
  """The DAG of the module docstring.

  Args:
    config: the pipeline's config; `graph.beam_args`, `serving` and `export` apply.
    where: the locations; `where.data_dir` holds the logs from the model's
      training start through the newest day.
    model_run: the trained run directory (a Trainer's `ModelRun` or `e2e-grec
      train --out`), or a run-time parameter giving it.
    through: last day of the refreshed graph ("" = the newest in the logs).
  """
  trained = importer.Importer(source_uri=model_run, artifact_type=standard_artifacts.ModelRun
                              ).with_id("TrainedModelImporter")
  builder = RefreshedGraphBuilder(
      model_run=trained.outputs["result"], data_dir=where.data_dir,
      data_fingerprint=fingerprint(where.data_dir), through=through,
      config=pipeline_lib.sections(config, BUILDER_SECTIONS))
  *validation, gate = pipeline_lib.validated(builder.outputs["examples"], where.schema_file)
  exporter = RefreshExporter(model_run=trained.outputs["result"],
                             examples=builder.outputs["examples"],
                             graph=builder.outputs["graph"],
                             config=pipeline_lib.sections(config, EXPORTER_SECTIONS))
  exporter.add_upstream_node(gate)
  pusher = pipeline_lib.pushing(exporter.outputs["model"],
                                os.path.join(where.serving_dir, config.serving.model_name))
  return tfx_pipeline.Pipeline(
      pipeline_name=pipeline_name(config),
      pipeline_root=where.root,
      components=[trained, builder, *validation, gate, exporter, pusher],
      enable_cache=config.pipeline.enable_cache,
      metadata_connection_config=(
          metadata.sqlite_metadata_connection_config(where.metadata_path)
          if where.metadata_path else None),
      beam_pipeline_args=list(config.pipeline.beam_args))
