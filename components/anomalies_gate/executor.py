"""AnomaliesGate work: read each split's anomalies, fail naming every one."""
from __future__ import annotations

import logging
import os
from typing import Any

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact, artifact_utils
from tfx.types.standard_component_specs import ANOMALIES_KEY
from tfx.utils import io_utils

from e2e_grec import contracts

# ExampleValidator's file per split (tfx.components.example_validator.executor).
ANOMALIES_FILE = "SchemaDiff.pb"


class DataAnomaliesError(RuntimeError):
  """The examples do not match the schema."""


def load(anomalies: artifact.Artifact) -> dict[str, anomalies_pb2.Anomalies]:
  """Split name -> Anomalies proto of an ExampleAnomalies artifact."""
  result = {}
  for split in artifact_utils.decode_split_names(anomalies.split_names):
    path = os.path.join(artifact_utils.get_split_uri([anomalies], split), ANOMALIES_FILE)
    if not fileio.exists(path):
      raise FileNotFoundError(f"no anomalies file for split {split!r} at {path}")
    result[split] = anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))
  return result


def problems(by_split: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
  """One readable line per anomaly: split, feature, what is wrong."""
  lines = []
  for split, anomalies in sorted(by_split.items()):
    for feature, info in sorted(anomalies.anomaly_info.items()):
      lines.append(f"split {split!r}, feature {feature!r}: {_describe(info)}")
    if anomalies.HasField("dataset_anomaly_info"):
      lines.append(f"split {split!r}, whole dataset: "
                   f"{_describe(anomalies.dataset_anomaly_info)}")
  return lines


def _describe(info: anomalies_pb2.AnomalyInfo) -> str:
  reasons = [_text(r.short_description, r.description) for r in info.reason]
  return "; ".join(reasons) or _text(info.short_description, info.description)


def _text(short: str, long: str) -> str:
  """'short: long', or just `long` when it already starts with `short`."""
  if not long or long == short:
    return short
  return long if long.startswith(short) else f"{short}: {long}"


class Executor(base_executor.BaseExecutor):
  """Raises DataAnomaliesError listing the anomalies, if there are any."""

  def Do(self, input_dict: dict[str, list[artifact.Artifact]],
         output_dict: dict[str, list[artifact.Artifact]],
         exec_properties: dict[str, Any]) -> None:
    anomalies = artifact_utils.get_single_instance(input_dict[ANOMALIES_KEY])
    found = problems(load(anomalies))
    if found:
      raise DataAnomaliesError(
          f"the examples do not match the schema "
          f"({exec_properties[contracts.SCHEMA_SOURCE_KEY]}); "
          f"{len(found)} anomal{'y' if len(found) == 1 else 'ies'}:\n  "
          + "\n  ".join(found)
          + "\nFix the input data, or update the schema if the data is right. "
          f"Details: {anomalies.uri}")
    logging.info("no anomalies in %s", anomalies.uri)
