"""The task labels: the one place where a log row becomes click/long_view/like/skip/stay.

Binary tasks are 0/1 int64; `stay` is log1p of play seconds (float32), a
regression target that keeps the long tail of watch time from dominating.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

BINARY_TASKS = ("click", "long_view", "like", "skip")
REGRESSION_TASKS = ("stay",)
TASKS = BINARY_TASKS + REGRESSION_TASKS

# Log columns that are 0/1 flags copied as labels.
FLAG_SOURCES = {"click": "is_click", "long_view": "long_view", "like": "is_like"}
# `skip` and `stay` derive from this column.
PLAY_TIME = "play_time_ms"


def derive(log: pd.DataFrame, skip_threshold_ms: int) -> dict[str, np.ndarray]:
  """Labels of validated log rows, keyed by task name."""
  play = log[PLAY_TIME].to_numpy(np.int64)
  labels = {task: log[column].to_numpy(np.int64) for task, column in FLAG_SOURCES.items()}
  labels["skip"] = (play < skip_threshold_ms).astype(np.int64)
  labels["stay"] = np.log1p(play / 1000.0).astype(np.float32)
  return {task: labels[task] for task in TASKS}
