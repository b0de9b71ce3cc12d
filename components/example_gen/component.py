"""ExampleGen interface: logs in, the standard `Examples` artifact out.

The output follows TFX ExampleGen's layout (`Split-train/`, `Split-eval/`, GZIP
TFRecords of tf.Example, `split_names` set), so StatisticsGen, ExampleValidator
and the Trainer read it unchanged; the node tables, the prepare report and the
quarantine file travel inside the same artifact (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import hashlib
import os

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, component_spec, standard_artifacts, standard_component_specs

from e2e_grec import contracts
from e2e_grec.components.example_gen import executor
from e2e_grec.config import Config


class ExampleGenSpec(component_spec.ComponentSpec):
  PARAMETERS = {
      # The KuaiRand-layout directory (generated first when `synthetic`).
      contracts.DATA_DIR_KEY: component_spec.ExecutionParameter(type=str),
      contracts.SYNTHETIC_KEY: component_spec.ExecutionParameter(type=bool),
      # Names, sizes and modification times of the input files: changed data
      # under the same path invalidates the cache.
      contracts.DATA_FINGERPRINT_KEY: component_spec.ExecutionParameter(type=str),
      contracts.CONFIG_KEY: component_spec.ExecutionParameter(type=str),
  }
  INPUTS = {}
  OUTPUTS = {standard_component_specs.EXAMPLES_KEY: component_spec.ChannelParameter(
      type=standard_artifacts.Examples)}


def fingerprint(data_dir: str) -> str:
  """A digest of the files of a local data directory ('' for remote or missing ones)."""
  if "://" in data_dir or not os.path.isdir(data_dir):
    return ""
  digest = hashlib.sha256()
  for name in sorted(os.listdir(data_dir)):
    stat = os.stat(os.path.join(data_dir, name))
    digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
  return digest.hexdigest()


class ExampleGen(base_component.BaseComponent):
  """Validates, splits and labels the logs with `datasets.prepare`."""

  SPEC_CLASS = ExampleGenSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, data_dir: str, config: Config, synthetic: bool = False):
    """`config` needs only its `data` and `synthetic` sections."""
    super().__init__(spec=ExampleGenSpec(**{
        contracts.DATA_DIR_KEY: data_dir, contracts.SYNTHETIC_KEY: synthetic,
        contracts.DATA_FINGERPRINT_KEY: "" if synthetic else fingerprint(data_dir),
        contracts.CONFIG_KEY: contracts.encode_config(config),
        standard_component_specs.EXAMPLES_KEY: channel.Channel(
            type=standard_artifacts.Examples)}))
