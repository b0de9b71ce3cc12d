"""Trainer work: TFX's GenericExecutor calling `run_fn`, which trains and exports.

`run_fn` gets TFX's `FnArgs`; `custom_config` carries the resolved config
(under `contracts.CONFIG_KEY`) and, added by the executor, the example, graph and model
directories, since `train` reads whole artifacts (examples and node tables,
the graph and its sampling index), not just the example files.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Mapping

from tfx.components.trainer import executor as tfx_trainer_executor
from tfx.components.trainer import fn_args_utils
from tfx.types import artifact, artifact_utils, standard_component_specs
from tfx.utils import io_utils, json_utils

from e2e_grec import contracts
from e2e_grec.components import staging

RUN_FN = "e2e_grec.components.trainer.executor.run_fn"
# Artifact directories the executor adds to `custom_config` for `run_fn`.
EXAMPLES_DIR_KEY = "examples_dir"
GRAPH_DIR_KEY = "graph_dir"
MODEL_DIR_KEY = "model_dir"
# `custom_config` key set by the pipeline: a local directory under which each
# (examples, graph, config) trains, so a rerun after a killed Trainer resumes
# from its checkpoints instead of starting over in a new execution's ModelRun.
RESUME_ROOT_KEY = "resume_root"


@dataclasses.dataclass(frozen=True)
class ModelMetrics:
  """A trained model's eval metrics and what they were measured on."""
  mode: str
  examples: str
  metrics: dict[str, float]


def quality_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
  """The eval-quality entries of `train`'s metrics (`mean_*`, `<task>/<metric>`,
  `examples`); timing, throughput and history stay in the run's metrics.json."""
  return {key: float(value) for key, value in metrics.items()
          if (key.startswith("mean_") or "/" in key or key == "examples")
          and isinstance(value, (int, float)) and not isinstance(value, bool)}


def write_model_metrics(model_dir: str, record: ModelMetrics) -> None:
  io_utils.write_string_file(os.path.join(model_dir, contracts.MODEL_METRICS_FILE),
                             json.dumps(dataclasses.asdict(record), indent=2))


def read_model_metrics(model_dir: str) -> ModelMetrics:
  path = os.path.join(model_dir, contracts.MODEL_METRICS_FILE)
  try:
    return ModelMetrics(**json.loads(io_utils.read_string_file(path)))
  except Exception as e:  # any unreadable record names the file
    raise ValueError(f"cannot read the model's eval metrics {path}: {e}") from e


class ServingExporter:
  """Exports a run's model as the serving SavedModel (a `training.run.ModelExporter`)."""

  def save(self, result, export_dir: str) -> None:
    from e2e_grec.serving import export
    export.export_saved_model(result.model, result.sampler, result.tables, result.config,
                              export_dir)


def resumable_run_dir(custom: Mapping[str, Any]) -> str | None:
  """`<resume root>/<digest of the inputs and config>`, or None (no root, or a
  remote one: there the run trains in the execution's own ModelRun)."""
  root = custom.get(RESUME_ROOT_KEY)
  if not root or staging.is_remote(root):
    return None
  key = json.dumps([custom[EXAMPLES_DIR_KEY], custom.get(GRAPH_DIR_KEY) or "",
                    custom[contracts.CONFIG_KEY]])
  return os.path.join(root, hashlib.sha256(key.encode()).hexdigest()[:16])


def run_fn(fn_args: fn_args_utils.FnArgs) -> None:
  """Trains `config.model.mode`, exports the SavedModel, records the eval metrics."""
  from e2e_grec.training import distribute  # heavy imports only in the training step

  custom = fn_args.custom_config
  config = contracts.decode_config(custom[contracts.CONFIG_KEY])
  graph_dir = custom.get(GRAPH_DIR_KEY) or None
  with contextlib.ExitStack() as stack:
    examples_dir = stack.enter_context(staging.input_dir(custom[EXAMPLES_DIR_KEY]))
    if graph_dir:
      graph_dir = stack.enter_context(staging.input_dir(graph_dir))
    run_dir = stack.enter_context(staging.output_dir(fn_args.model_run_dir))
    export_dir = stack.enter_context(staging.output_dir(fn_args.serving_model_dir))
    train_dir = resumable_run_dir(custom) or run_dir
    logging.info("training a %s model; logs in %s", config.model.mode, train_dir)
    # In this process's role of the `train.strategy` cluster (TF_CONFIG).
    result = distribute.train(config, examples_dir, graph_dir, train_dir,
                              model_exporters=[ServingExporter()], export_dir=export_dir)
    if train_dir != run_dir:
      io_utils.copy_dir(train_dir, run_dir)
  write_model_metrics(custom[MODEL_DIR_KEY], ModelMetrics(
      mode=config.model.mode, examples=custom[EXAMPLES_DIR_KEY],
      metrics=quality_metrics(result.metrics)))


class Executor(tfx_trainer_executor.GenericExecutor):
  """GenericExecutor that also hands the artifact directories to `run_fn`."""

  def Do(self, input_dict: dict[str, list[artifact.Artifact]],
         output_dict: dict[str, list[artifact.Artifact]],
         exec_properties: dict[str, Any]) -> None:
    specs = standard_component_specs
    custom = json_utils.loads(exec_properties.get(specs.CUSTOM_CONFIG_KEY) or "null") or {}
    custom[EXAMPLES_DIR_KEY] = artifact_utils.get_single_uri(input_dict[specs.EXAMPLES_KEY])
    presampled = bool(input_dict.get(contracts.SUBGRAPHS_KEY))
    # sampling.where=beam reads its subgraphs and never the graph: nothing to stage.
    custom[GRAPH_DIR_KEY] = (artifact_utils.get_single_uri(input_dict[contracts.GRAPH_KEY])
                             if input_dict.get(contracts.GRAPH_KEY) and not presampled else "")
    custom[MODEL_DIR_KEY] = artifact_utils.get_single_uri(output_dict[specs.MODEL_KEY])
    if presampled:
      config = contracts.decode_config(custom[contracts.CONFIG_KEY])
      custom[contracts.CONFIG_KEY] = contracts.encode_config(config.replace(**{
          "sampling.subgraphs_dir": artifact_utils.get_single_uri(
              input_dict[contracts.SUBGRAPHS_KEY])}))
    super().Do(input_dict, output_dict,
               {**exec_properties, specs.CUSTOM_CONFIG_KEY: json_utils.dumps(custom)})
