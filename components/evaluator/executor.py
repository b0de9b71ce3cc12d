"""Evaluator work: compare mean GAUC, write the metrics table, bless or not.

The metrics are the trainer's evaluation on the eval split (models/metrics),
stored with each Model artifact, so comparing with the last blessed model does
not retrain or re-sample it. The last blessed model is the resolver's, or,
without a resolver (open-source KFP), the newest version in the pushed models'
directory that carries an eval record (components/pusher writes it; versions
without one, such as graph refreshes, are skipped). A last blessed model evaluated on other examples
is not comparable and is reported but not compared; the baseline is trained on
the same examples in the same run, so it always is.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Optional

from tfx.components.evaluator import constants
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact, artifact_utils
from tfx.types.standard_component_specs import (BASELINE_MODEL_KEY, BLESSING_KEY,
                                                EVALUATION_KEY, MODEL_KEY)
from tfx.utils import io_utils

from e2e_grec import contracts
from e2e_grec.components.pusher import executor as pusher_executor
from e2e_grec.components.trainer import executor as trainer_executor

LAST_BLESSED = "last blessed"


@dataclasses.dataclass(frozen=True)
class Evaluated:
  """One model's metrics as the Evaluator compares them."""
  label: str
  artifact_id: int
  uri: str
  mode: str
  examples: str
  metrics: dict[str, float]


@dataclasses.dataclass(frozen=True)
class Decision:
  blessed: bool
  message: str


def evaluated(label: str, model: artifact.Artifact) -> Evaluated:
  record = trainer_executor.read_model_metrics(model.uri)
  return Evaluated(label=label, artifact_id=model.id, uri=model.uri, mode=record.mode,
                   examples=record.examples, metrics=record.metrics)


def last_pushed(pushed_models_dir: str) -> Optional[Evaluated]:
  """The newest version under `pushed_models_dir` with an eval record, or None."""
  if not fileio.isdir(pushed_models_dir):
    return None
  versions = sorted((int(v.rstrip("/")) for v in fileio.listdir(pushed_models_dir)
                     if v.rstrip("/").isdigit()), reverse=True)
  for version in versions:
    path = os.path.join(pushed_models_dir, str(version), contracts.PUSHED_METRICS_FILE)
    if not fileio.exists(path):
      continue
    try:
      record = json.loads(io_utils.read_string_file(path))
      return Evaluated(label=LAST_BLESSED, artifact_id=int(record[pusher_executor.MODEL_ID]),
                       uri=record[pusher_executor.MODEL_URI], mode=record["mode"],
                       examples=record["examples"], metrics=record["metrics"])
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"cannot read the pushed model's eval record {path}: "
                       f"{type(e).__name__}: {e}") from e
  return None


def decide(candidate: Evaluated, baseline: Evaluated, last_blessed: Optional[Evaluated],
           metric: str, margin: float) -> Decision:
  """Bless if `metric` beats the baseline and a comparable last blessed model by `margin`."""
  if last_blessed is not None and last_blessed.uri == candidate.uri:
    return Decision(False, "this model is already the last blessed one (pushed by an "
                    "earlier run): nothing new to push")
  references = [baseline]
  if last_blessed is not None:
    if last_blessed.examples == candidate.examples:
      references.append(last_blessed)
    else:
      logging.info("the last blessed model was evaluated on other examples (%s); "
                   "comparing with the baseline only", last_blessed.examples)
  for model in (candidate, *references):
    if metric not in model.metrics:
      raise KeyError(f"{model.label} has no metric {metric!r}; it has "
                     f"{', '.join(sorted(model.metrics))} ({model.uri})")
  value = candidate.metrics[metric]
  failed = [r for r in references if not value > r.metrics[metric] + margin]
  comparison = ", ".join(f"{r.label} {r.metrics[metric]:.4f}" for r in references)
  if failed:
    return Decision(False, f"{metric} {value:.4f} does not beat "
                    f"{' and '.join(r.label for r in failed)} by the margin {margin:+.4f} "
                    f"({comparison})")
  return Decision(True, f"{metric} {value:.4f} beats {comparison} by more than {margin:+.4f}")


def table(models: list[Evaluated], metric: str) -> str:
  """A markdown table: one row per metric, one column per model, `metric` first."""
  names = sorted({name for m in models for name in m.metrics},
                 key=lambda n: (n != metric, "/" in n, n))
  header = "| metric | " + " | ".join(f"{m.label} ({m.mode})" for m in models) + " |"
  lines = [header, "|---" * (len(models) + 1) + "|"]
  for name in names:
    cells = [_cell(m.metrics.get(name)) for m in models]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _cell(value: Optional[float]) -> str:
  if value is None:
    return ""
  return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 10 else f"{value:.4f}"


def bless(blessing: artifact.Artifact, candidate: Evaluated, baseline: Evaluated,
          decision: Decision) -> None:
  """Marks the blessing as TFX's Evaluator does, for the Pusher and the resolver."""
  name = constants.BLESSED_FILE_NAME if decision.blessed else constants.NOT_BLESSED_FILE_NAME
  io_utils.write_string_file(os.path.join(blessing.uri, name), decision.message)
  blessing.set_int_custom_property(
      constants.ARTIFACT_PROPERTY_BLESSED_KEY,
      constants.BLESSED_VALUE if decision.blessed else constants.NOT_BLESSED_VALUE)
  blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY,
                                      candidate.uri)
  blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY,
                                   candidate.artifact_id)
  blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY,
                                      baseline.uri)
  blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY,
                                   baseline.artifact_id)
  blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_BLESSING_MESSAGE_KEY,
                                      decision.message)


class Executor(base_executor.BaseExecutor):
  """Writes metrics.json and metrics.md, and the blessing."""

  def Do(self, input_dict: dict[str, list[artifact.Artifact]],
         output_dict: dict[str, list[artifact.Artifact]],
         exec_properties: dict[str, Any]) -> None:
    settings = contracts.decode_config(exec_properties[contracts.CONFIG_KEY]).eval
    candidate = evaluated("candidate", artifact_utils.get_single_instance(input_dict[MODEL_KEY]))
    baseline = evaluated("baseline", artifact_utils.get_single_instance(
        input_dict[BASELINE_MODEL_KEY]))
    last = input_dict.get(contracts.LAST_BLESSED_MODEL_KEY) or []
    pushed_models_dir = exec_properties.get(contracts.PUSHED_MODELS_DIR_KEY)
    last_blessed = (evaluated(LAST_BLESSED, last[0]) if last
                    else last_pushed(pushed_models_dir) if pushed_models_dir else None)
    decision = decide(candidate, baseline, last_blessed, settings.metric,
                      settings.blessing_margin)
    logging.info("%s: %s", "BLESSED" if decision.blessed else "NOT BLESSED", decision.message)

    models = [candidate, baseline]
    if last_blessed is not None and last_blessed.uri != candidate.uri:
      models.append(last_blessed)
    evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION_KEY])
    io_utils.write_string_file(os.path.join(evaluation.uri, contracts.EVALUATION_METRICS_FILE), json.dumps({
        "metric": settings.metric, "margin": settings.blessing_margin,
        "blessed": decision.blessed, "message": decision.message,
        "models": [dataclasses.asdict(m) for m in models]}, indent=2))
    io_utils.write_string_file(os.path.join(evaluation.uri, contracts.EVALUATION_TABLE_FILE),
                               table(models, settings.metric))
    bless(artifact_utils.get_single_instance(output_dict[BLESSING_KEY]), candidate, baseline,
          decision)
