"""ExampleGen work: (generate synthetic logs,) run `prepare`, describe the splits."""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
from typing import Any

import yaml
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact, artifact_utils, standard_component_specs
from tfx.utils import io_utils

from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.components import staging
from e2e_grec.datasets import kuairand, prepare

# Written last into a generated synthetic directory: its presence means complete.
SYNTHETIC_STAMP = "synthetic_config.yaml"


def ensure_synthetic(settings: config_lib.SyntheticConfig, data_dir: str) -> None:
  """Generates synthetic logs into `data_dir` unless the same ones are there.

  Generation goes to a temporary directory that is moved (or uploaded) into
  place, so a run killed midway never leaves a half-written data directory.
  """
  from e2e_grec.datasets import synthetic  # only synthetic runs need it

  wanted = yaml.safe_dump(dataclasses.asdict(settings))
  stamp = os.path.join(data_dir, SYNTHETIC_STAMP)
  if fileio.exists(stamp) and io_utils.read_string_file(stamp) == wanted:
    logging.info("synthetic logs already in %s", data_dir)
    return
  logging.info("generating synthetic logs into %s", data_dir)
  parent = None if staging.is_remote(data_dir) else os.path.dirname(os.path.abspath(data_dir))
  if parent:
    os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
  try:
    synthetic.generate(settings, tmp)
    with open(os.path.join(tmp, SYNTHETIC_STAMP), "w") as f:
      f.write(wanted)
    if parent:
      shutil.rmtree(data_dir, ignore_errors=True)
      os.replace(tmp, data_dir)
    else:
      io_utils.copy_dir(tmp, data_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def rejected_dir(examples_uri: str) -> str:
  """`<root>/ExampleGen/rejected/<execution>`: outlives the failed execution, whose
  output directory TFX deletes."""
  uri = examples_uri.rstrip("/")
  return os.path.join(os.path.dirname(os.path.dirname(uri)), "rejected", os.path.basename(uri))


def keep_rejected(error: Exception, out_dir: str, keep_dir: str) -> Exception:
  """Copies prepare's quarantine and report to `keep_dir`; the error points there."""
  io_utils.copy_dir(out_dir, keep_dir, allow_regex_patterns=[
      re.escape(contracts.QUARANTINE_FILE), re.escape(contracts.PREPARE_REPORT_FILE)])
  return type(error)(str(error).replace(out_dir, keep_dir))


def describe(examples: artifact.Artifact, split_names: list[str]) -> None:
  """Sets the properties TFX readers rely on (as TFX's own ExampleGen does)."""
  examples.split_names = artifact_utils.encode_split_names(split_names)
  examples.span = 0
  examples.version = 0
  examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
  examples_utils.set_file_format(examples, "tfrecords_gzip")


class Executor(base_executor.BaseExecutor):
  """Writes the Examples artifact with `datasets.prepare.prepare`."""

  def Do(self, input_dict: dict[str, list[artifact.Artifact]],
         output_dict: dict[str, list[artifact.Artifact]],
         exec_properties: dict[str, Any]) -> None:
    config = contracts.decode_config(exec_properties[contracts.CONFIG_KEY])
    data_dir = exec_properties[contracts.DATA_DIR_KEY]
    examples = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.EXAMPLES_KEY])
    if exec_properties[contracts.SYNTHETIC_KEY]:
      ensure_synthetic(config.synthetic, data_dir)
    with staging.input_dir(data_dir) as local_data, \
        staging.output_dir(examples.uri) as local_out:
      try:
        report = prepare.prepare(config, local_data, local_out)
      except kuairand.DataError as error:
        raise keep_rejected(error, local_out, rejected_dir(examples.uri)) from error
    empty = [name for name in contracts.SPLITS if not report.splits.get(name, {}).get("rows")]
    if empty:
      raise ValueError(
          f"the {' and '.join(empty)} split(s) of {data_dir} are empty: check "
          f"data.train_start..train_end ({config.data.train_start}..{config.data.train_end}) "
          f"and data.eval_start..eval_end ({config.data.eval_start}..{config.data.eval_end}) "
          f"against the dates of the logs")
    describe(examples, list(contracts.SPLITS))
