"""Columnar chunks: a dict of equal-length NumPy arrays, the unit the Beam
graph build and the Beam subgraph sampler pass between their steps (far fewer,
larger elements than one per row)."""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

Columns = dict[str, np.ndarray]


def take(columns: Columns, index: np.ndarray) -> Columns:
  return {name: values[index] for name, values in columns.items()}


def concat(chunks: Iterable[Columns]) -> Columns:
  chunks = list(chunks)
  return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def length(columns: Columns) -> int:
  return len(next(iter(columns.values())))


def by_shard(columns: Columns, key: np.ndarray, shards: int) -> Iterator[tuple[int, Columns]]:
  """Splits a chunk into (shard, sub-chunk) by `key % shards`."""
  shard = key % shards
  order = np.argsort(shard, kind="stable")
  counts = np.bincount(shard, minlength=shards)
  for s, (begin, end) in enumerate(zip(np.cumsum(counts) - counts, np.cumsum(counts))):
    if end > begin:
      yield s, take(columns, order[begin:end])
