"""Pusher work: TFX's filesystem push, then the eval record into the pushed version.

The record is the Trainer's `eval_metrics.json` plus the model artifact's id
and URI, written to `<version>/assets.extra/` (TF Serving ignores that
directory). A model without a record (a graph refresh evaluates nothing) is
pushed without one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.dsl.io import fileio
from tfx.types import artifact, artifact_utils, standard_component_specs
from tfx.utils import io_utils

from e2e_grec import contracts
from e2e_grec.components.trainer import executor as trainer_executor

# The PushedModel property TFX's Pusher sets to the version directory.
PUSHED_DESTINATION_PROPERTY = "pushed_destination"
# Keys added to the eval record: which model artifact the version came from.
MODEL_URI = "model_uri"
MODEL_ID = "model_id"


def write_pushed_record(model: artifact.Artifact, version_dir: str) -> bool:
  """Copies `model`'s eval record into `version_dir`; False if it has none."""
  if not fileio.exists(os.path.join(model.uri, contracts.MODEL_METRICS_FILE)):
    logging.info("%s has no eval record; pushed without one", model.uri)
    return False
  record = dataclasses.asdict(trainer_executor.read_model_metrics(model.uri))
  io_utils.write_string_file(
      os.path.join(version_dir, contracts.PUSHED_METRICS_FILE),
      json.dumps({MODEL_URI: model.uri, MODEL_ID: model.id, **record}, indent=2))
  return True


class Executor(tfx_pusher_executor.Executor):
  """TFX's Pusher executor; a pushed version also gets the model's eval record."""

  def Do(self, input_dict: dict[str, list[artifact.Artifact]],
         output_dict: dict[str, list[artifact.Artifact]],
         exec_properties: dict[str, Any]) -> None:
    super().Do(input_dict, output_dict, exec_properties)
    pushed = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if pushed.get_int_custom_property("pushed"):
      write_pushed_record(
          artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY]),
          pushed.get_string_custom_property(PUSHED_DESTINATION_PROPERTY))
