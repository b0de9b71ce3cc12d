"""Runs local-file code on remote artifact URIs.

The project's steps read and write local files (pandas, numpy, TF-GNN schema
readers). On Kubeflow, artifact URIs are remote (`gs://...`), so executors
stage remote inputs into a temporary directory and upload outputs when the step
is done; local URIs are used in place, so local runs copy nothing.
"""
from __future__ import annotations

import contextlib
import tempfile
from typing import Iterator

from tfx.dsl.io import fileio
from tfx.utils import io_utils


def is_remote(uri: str) -> bool:
  return "://" in uri


@contextlib.contextmanager
def input_dir(uri: str) -> Iterator[str]:
  """A local directory with the contents of `uri`."""
  if not is_remote(uri):
    yield uri
    return
  with tempfile.TemporaryDirectory(prefix="e2e_grec_in_") as local:
    io_utils.copy_dir(uri, local)
    yield local


@contextlib.contextmanager
def output_dir(uri: str) -> Iterator[str]:
  """A local directory whose contents end up in `uri` when the block succeeds."""
  if not is_remote(uri):
    fileio.makedirs(uri)
    yield uri
    return
  with tempfile.TemporaryDirectory(prefix="e2e_grec_out_") as local:
    yield local
    io_utils.copy_dir(local, uri)
