"""Node tables (vocabularies + normalised side features) from the training split only.

Vocabularies hold the ids seen in the training window plus those of the
pre-period history (which predates training, so it cannot leak). Everything
else maps to index 0 (OOV) at lookup time. Normalisation statistics and
categorical vocabularies are computed over the vocabulary's own rows, i.e. the
training population. Side features are static attributes only; nothing that
aggregates behaviour (such as video_features_statistic_pure.csv) is used.
The array format is documented in `e2e_grec.datasets.node_tables`.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from e2e_grec.datasets import node_tables

# User numeric features: log1p of counts, then z-scored.
USER_COUNTS = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
USER_CATEGORICAL = (
    "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
    "follow_user_num_range", "fans_user_num_range", "friend_user_num_range",
    "register_days_range") + tuple(f"onehot_feat{i}" for i in range(18))
VIDEO_DENSE = ("log_duration_s", "duration_missing", "log_width", "log_height",
               "log_aspect", "log_upload_age_days")
VIDEO_CATEGORICAL = ("video_type", "upload_type", "visible_status", "music_type",
                     "tag_count")


def _ids(*parts: np.ndarray) -> np.ndarray:
  values = [np.asarray(p, dtype=np.int64) for p in parts if len(p)]
  return np.unique(np.concatenate(values)) if values else np.zeros([0], np.int64)


def _index(ids: np.ndarray, raw: np.ndarray) -> np.ndarray:
  """Node index (position + 1) of raw ids in sorted `ids`; 0 when absent."""
  raw = np.asarray(raw, dtype=np.int64)
  if not len(ids):
    return np.zeros(raw.shape, np.int64)
  position = np.minimum(np.searchsorted(ids, raw), len(ids) - 1)
  return np.where(ids[position] == raw, position + 1, 0).astype(np.int64)


def _rows(ids: np.ndarray, table: pd.DataFrame, key: str) -> pd.DataFrame:
  """The side-table row of every vocabulary id (all-missing when absent)."""
  return table.set_index(key).reindex(ids)


def _zscore(matrix: np.ndarray, fit: np.ndarray) -> np.ndarray:
  """Z-scores columns with statistics of the `fit` rows; NaN (missing) -> 0."""
  rows = matrix[fit]
  mean = np.nanmean(rows, axis=0) if len(rows) else np.zeros(matrix.shape[1])
  std = np.nanstd(rows, axis=0) if len(rows) else np.ones(matrix.shape[1])
  mean = np.nan_to_num(mean)
  std = np.where(np.nan_to_num(std) > 0, np.nan_to_num(std), 1.0)
  return np.nan_to_num((matrix - mean) / std).astype(np.float32)


def _categorical(frame: pd.DataFrame, names: tuple[str, ...], fit: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Codes 1..K by sorted value within the `fit` rows; 0 = missing or unseen."""
  codes, sizes = [], []
  for name in names:
    column = frame[name].replace("", np.nan)
    categories = pd.Categorical(column[fit]).categories  # sorted
    values = pd.Categorical(column, categories=categories)
    codes.append(values.codes.astype(np.int64) + 1)
    sizes.append(len(values.categories) + 1)
  matrix = np.stack(codes, axis=1) if codes else np.zeros([len(frame), 0])
  return matrix.astype(np.int64), np.asarray(sizes, np.int64)


def _with_oov_row(matrix: np.ndarray) -> np.ndarray:
  return np.concatenate([np.zeros((1,) + matrix.shape[1:], matrix.dtype), matrix])


def _put_features(arrays: dict[str, np.ndarray], node_set: str, dense: np.ndarray,
                  dense_names: tuple[str, ...], categorical: np.ndarray,
                  categorical_sizes: np.ndarray,
                  categorical_names: tuple[str, ...]) -> None:
  arrays[f"{node_set}/dense"] = _with_oov_row(dense)
  arrays[f"{node_set}/dense_names"] = np.asarray(dense_names, dtype=str)
  arrays[f"{node_set}/categorical"] = _with_oov_row(categorical)
  arrays[f"{node_set}/categorical_names"] = np.asarray(categorical_names, dtype=str)
  arrays[f"{node_set}/categorical_sizes"] = categorical_sizes


def first_tag(tags: pd.Series) -> np.ndarray:
  """The first id of each comma-separated `tag` value; -1 when empty."""
  first = tags.fillna("").astype(str).str.split(",").str[0].str.strip()
  return pd.to_numeric(first, errors="coerce").fillna(-1).astype(np.int64).to_numpy()


def _all_tags(tags: pd.Series) -> np.ndarray:
  flat = tags.fillna("").astype(str).str.split(",").explode().str.strip()
  return pd.to_numeric(flat, errors="coerce").dropna().astype(np.int64).to_numpy()


def build(train: pd.DataFrame, users: pd.DataFrame, videos: pd.DataFrame,
          history: pd.DataFrame, train_start_day: int,
          reference: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """Node-table arrays from training rows (user_id, video_id, tab) and side tables.

  `reference`: a trained model's node-table arrays to extend (see the module
  docstring); `train_start_day` must then be the reference's.
  """
  arrays: dict[str, np.ndarray] = {}
  known = lambda ns: reference[f"{ns}/ids"] if reference else np.zeros([0], np.int64)
  fit_rows = lambda ns, ids: np.isin(ids, known(ns)) if reference else np.ones(len(ids), bool)
  history_videos = np.fromiter(itertools.chain.from_iterable(
      itertools.chain(history["watch"], history["like"], history["long_view"])),
      dtype=np.int64)
  user_ids = _ids(train["user_id"].to_numpy(), history["user_id"].to_numpy(), known("user"))
  video_ids = _ids(train["video_id"].to_numpy(), history_videos, known("video"))
  arrays["user/ids"] = user_ids
  arrays["video/ids"] = video_ids
  arrays["tab/ids"] = known("tab") if reference else _ids(train["tab"].to_numpy())

  user_rows = _rows(user_ids, users, "user_id")
  counts = user_rows[list(USER_COUNTS)].to_numpy(np.float64)
  user_fit = fit_rows("user", user_ids)
  user_dense = _zscore(np.log1p(np.clip(counts, 0, None)), user_fit)
  user_codes, user_sizes = _categorical(user_rows, USER_CATEGORICAL, user_fit)
  _put_features(arrays, "user", user_dense, tuple(f"log_{c}" for c in USER_COUNTS),
                user_codes, user_sizes, USER_CATEGORICAL)

  video_rows = _rows(video_ids, videos, "video_id")
  duration_s = video_rows["video_duration"].to_numpy(np.float64) / 1000.0
  width = video_rows["server_width"].to_numpy(np.float64)
  height = video_rows["server_height"].to_numpy(np.float64)
  upload_day = (pd.to_datetime(video_rows["upload_dt"], errors="coerce")
                - pd.Timestamp("1970-01-01")).dt.days.to_numpy(np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    video_dense = np.stack([
        np.log1p(np.clip(duration_s, 0, None)),
        np.isnan(duration_s).astype(np.float64),
        np.log1p(np.clip(width, 0, None)),
        np.log1p(np.clip(height, 0, None)),
        np.log(np.where((width > 0) & (height > 0), height / width, np.nan)),
        np.log1p(np.clip(train_start_day - upload_day, 0, None)),
    ], axis=1)
  video_frame = video_rows.assign(
      tag_count=video_rows["tag"].fillna("").astype(str).str.split(",").map(
          lambda parts: str(sum(1 for p in parts if p.strip()))).where(
              video_rows["tag"].notna(), ""))
  video_fit = fit_rows("video", video_ids)
  video_codes, video_sizes = _categorical(video_frame, VIDEO_CATEGORICAL, video_fit)
  _put_features(arrays, "video", _zscore(video_dense, video_fit), VIDEO_DENSE, video_codes,
                video_sizes, VIDEO_CATEGORICAL)

  links = {
      "author": video_rows["author_id"].fillna(-1).to_numpy(np.int64),
      "tag": first_tag(video_rows["tag"]),
      "music": video_rows["music_id"].fillna(-1).to_numpy(np.int64),
  }
  vocabularies = {
      "author": links["author"], "music": links["music"],
      "tag": _all_tags(video_rows["tag"]),
  }
  for link in node_tables.VIDEO_LINKS:
    values = vocabularies[link]
    ids = _ids(values[values >= 0], known(link))
    arrays[f"{link}/ids"] = ids
    arrays[f"video/{link}"] = _with_oov_row(_index(ids, links[link]))
  return arrays


def sizes(arrays: dict[str, np.ndarray]) -> dict[str, int]:
  """Number of vocabulary entries (without OOV) per node set."""
  return {key.split("/")[0]: int(value.shape[0]) for key, value in arrays.items()
          if key.endswith("/ids")}


def index(arrays: dict[str, np.ndarray], node_set: str, raw_ids: np.ndarray) -> np.ndarray:
  """NumPy mirror of NodeTables.lookup: raw ids -> node index, unseen -> 0."""
  return _index(arrays[f"{node_set}/ids"], raw_ids)
