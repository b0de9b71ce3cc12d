"""Temporal split by date: every day belongs to at most one split.

Rows dated outside both windows are `out_of_window`: counted in the report,
not quarantined (they are valid rows, just not part of this experiment).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from e2e_grec.config import DataConfig
from e2e_grec.contracts import EVAL_SPLIT, TRAIN_SPLIT
from e2e_grec.datasets.dates import day_of

OUT_OF_WINDOW = "out_of_window"


@dataclasses.dataclass(frozen=True)
class Window:
  """Inclusive range of days since epoch."""
  start: int
  end: int

  def contains(self, days: np.ndarray) -> np.ndarray:
    return (days >= self.start) & (days <= self.end)


def windows(config: DataConfig) -> dict[str, Window]:
  """The train and eval windows of the config, validated not to overlap."""
  result = {TRAIN_SPLIT: Window(day_of(config.train_start), day_of(config.train_end)),
            EVAL_SPLIT: Window(day_of(config.eval_start), day_of(config.eval_end))}
  if not (result[TRAIN_SPLIT].start <= result[TRAIN_SPLIT].end < result[EVAL_SPLIT].start
          <= result[EVAL_SPLIT].end):
    raise ValueError(f"split windows overlap or are reversed: {result}")
  return result


def assign(days: np.ndarray, config: DataConfig) -> np.ndarray:
  """Split name of each day: "train", "eval" or "out_of_window"."""
  days = np.asarray(days, dtype=np.int64)
  names = np.full(days.shape, OUT_OF_WINDOW, dtype=object)
  for name, window in windows(config).items():
    names[window.contains(days)] = name
  return names
