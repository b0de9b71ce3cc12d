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
from tfx.types import channel, component_spec, standard_artifacts

from e2e_grec.components.example_gen import executor
from e2e_grec.config import Config

DATA_DIR_KEY = "data_dir"
SYNTHETIC_KEY = "synthetic"
FINGERPRINT_KEY = "data_fingerprint"
CONFIG_KEY = "config_yaml"
EXAMPLES_KEY = "examples"


class ExampleGenSpec(component_spec.ComponentSpec):
  PARAMETERS = {
      # The KuaiRand-layout directory (generated first when `synthetic`).
      DATA_DIR_KEY: component_spec.ExecutionParameter(type=str),
      SYNTHETIC_KEY: component_spec.ExecutionParameter(type=bool),
      # Names, sizes and modification times of the input files: changed data
      # under the same path invalidates the cache.
      FINGERPRINT_KEY: component_spec.ExecutionParameter(type=str),
      CONFIG_KEY: component_spec.ExecutionParameter(type=str),
  }
  INPUTS = {}
  OUTPUTS = {EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples)}


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
    super().__init__(spec=ExampleGenSpec(
        data_dir=data_dir, synthetic=synthetic,
        data_fingerprint="" if synthetic else fingerprint(data_dir),
        config_yaml=config.to_yaml(),
        examples=channel.Channel(type=standard_artifacts.Examples)))
