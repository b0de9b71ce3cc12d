"""The validated pre-period history, as `prepare` hands it to the graph builder.

`prepare` reads and validates `user_history_before_*.csv` once (malformed rows
are quarantined there) and saves it into its output as `contracts.HISTORY_FILE`:
one row per history event, columns `user_id`, `video_id` (raw ids) and `day`
(days since epoch of the user's newest history event). The graph builder reads
this file, never the raw CSVs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from e2e_grec.contracts import DAY, USER_ID, VIDEO_ID

COLUMNS = (USER_ID, VIDEO_ID, DAY)
# Id-list columns of `kuairand.read_history`; each listed video is one event.
_EVENT_LISTS = ("watch", "like", "long_view")


def events(history: pd.DataFrame) -> dict[str, np.ndarray]:
  """One (user_id, video_id, day) row per video in a user's watch, like and long-view lists."""
  lists = [sum(row, []) for row in zip(*(history[c].tolist() for c in _EVENT_LISTS))]
  lengths = np.array([len(videos) for videos in lists], np.int64)
  return {
      USER_ID: np.repeat(history[USER_ID].to_numpy(np.int64), lengths),
      VIDEO_ID: np.fromiter((v for videos in lists for v in videos), np.int64,
                            count=int(lengths.sum())),
      DAY: np.repeat(history[DAY].to_numpy(np.int64), lengths),
  }


def save(path: str, history: pd.DataFrame) -> None:
  np.savez(path, **events(history))


def load(path: str) -> dict[str, np.ndarray]:
  """The saved events; a file missing a column is an error naming it."""
  with np.load(path, allow_pickle=False) as data:
    missing = [c for c in COLUMNS if c not in data.files]
    if missing:
      raise ValueError(f"{path}: missing history column(s) {missing}")
    return {c: data[c].astype(np.int64) for c in COLUMNS}
