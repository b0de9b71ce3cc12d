"""Shared test fixtures. Importing e2e_grec first forces legacy Keras."""
import os

import e2e_grec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import pytest

from e2e_grec import config as config_lib

SHARED_DATA = config_lib.default_shared_data_dir()


@pytest.fixture(scope="session")
def kuairand_dir() -> str:
  """The shared KuaiRand-Pure copy; tests that need it skip when it is absent."""
  if SHARED_DATA is None:
    pytest.skip("real KuaiRand data not found at ../shared/data/kuairand_pure "
                "(beside the project root); synthetic-data tests still run")
  return SHARED_DATA
