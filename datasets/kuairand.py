"""The KuaiRand-Pure file layout: discovery, validated reading and quarantine.

Files of the official release (`KuaiRand-Pure/data/`), read unchanged:

  log_standard_<start>_to_<end>_pure.csv   one or more impression logs (required)
  log_random_<start>_to_<end>_pure.csv     random-exposure log (optional; read only
                                           with data.include_random_log)
  user_features_pure.csv                   static user side table (required)
  video_features_basic_pure.csv            static video side table (required)
  video_features_statistic_pure.csv        never read: its counts aggregate the whole
                                           period, so they leak future behaviour
  user_history_before_<date>.csv           optional pre-period history (derived file
                                           of the shared copy)

Columns are matched by header name, so extra columns are ignored and a missing
one is an error that names it. A malformed row (wrong column count, non-numeric
id, missing or invalid label, bad date or time) goes to the `Quarantine` with
its reason, file, line number and raw text; nothing is dropped silently.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import io
import itertools
import logging
import os
import re
from typing import Iterator

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from e2e_grec.datasets import labels
from e2e_grec.datasets.dates import day_of_ms

LOG_COLUMNS = (
    "user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like",
    "is_follow", "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms",
    "duration_ms", "profile_stay_time", "comment_stay_time", "is_profile_enter",
    "is_rand", "tab")
USER_COLUMNS = (
    "user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer",
    "is_video_author", "follow_user_num", "follow_user_num_range", "fans_user_num",
    "fans_user_num_range", "friend_user_num", "friend_user_num_range", "register_days",
    "register_days_range") + tuple(f"onehot_feat{i}" for i in range(18))
VIDEO_COLUMNS = (
    "video_id", "author_id", "video_type", "upload_dt", "upload_type", "visible_status",
    "video_duration", "server_width", "server_height", "music_id", "music_type", "tag")
HISTORY_COLUMNS = ("user_id", "last_time_ms", "watch_seq", "like_seq", "long_watch_seq")

LOG_STANDARD = "log_standard_*.csv"
LOG_RANDOM = "log_random_*.csv"
USER_FEATURES = "user_features_pure.csv"
VIDEO_FEATURES = "video_features_basic_pure.csv"
VIDEO_STATISTICS = "video_features_statistic_pure.csv"
USER_HISTORY = "user_history_before_*.csv"

# How a column is validated. Failing a row-level kind quarantines the row.
ID = "id"            # integer, required
OPTIONAL_ID = "optional_id"  # integer or empty (-1)
DATE = "date"        # YYYYMMDD, required -> extra column `day`
TIME = "time"        # integer milliseconds or hourmin, required
LABEL = "label"      # non-negative integer, required
FLAG_LABEL = "flag"  # 0 or 1, required
ID_LIST = "id_list"  # space-separated integers, may be empty
NUMBER = "number"    # float or empty (NaN); never quarantines
TEXT = "text"        # kept as the raw string ("" = missing)

CHUNK_ROWS = 200_000
_ID_LIST_RE = r"(?:\d+(?: \d+)*)?"


class DataError(ValueError):
  """Input data is missing, incomplete or too malformed to use."""


@dataclasses.dataclass(frozen=True)
class TableSpec:
  """Columns a table must have and how each is validated."""
  name: str
  kinds: dict[str, str]
  # Column whose values must be unique (later duplicates are quarantined).
  key: str | None = None


def _log_kinds() -> dict[str, str]:
  kinds = {c: NUMBER for c in LOG_COLUMNS}
  kinds.update(user_id=ID, video_id=ID, tab=ID, date=DATE, hourmin=TIME, time_ms=TIME)
  kinds.update({c: FLAG_LABEL for c in labels.FLAG_SOURCES.values()})
  kinds[labels.PLAY_TIME] = LABEL
  return kinds


LOG_SPEC = TableSpec("log", _log_kinds())
USER_SPEC = TableSpec(
    "user_features",
    {**{c: TEXT for c in USER_COLUMNS}, "user_id": ID,
     **{c: NUMBER for c in ("follow_user_num", "fans_user_num", "friend_user_num",
                            "register_days")}},
    key="user_id")
VIDEO_SPEC = TableSpec(
    "video_features",
    {**{c: TEXT for c in VIDEO_COLUMNS}, "video_id": ID, "author_id": OPTIONAL_ID,
     "music_id": OPTIONAL_ID,
     **{c: NUMBER for c in ("video_duration", "server_width", "server_height")}},
    key="video_id")
HISTORY_SPEC = TableSpec(
    "user_history",
    {"user_id": ID, "last_time_ms": TIME, "watch_seq": ID_LIST, "like_seq": ID_LIST,
     "long_watch_seq": ID_LIST},
    key="user_id")


@dataclasses.dataclass
class FileStats:
  """Rows in / out / quarantined of one file, with quarantine reasons."""
  file: str
  rows_in: int = 0
  rows_out: int = 0
  quarantined: int = 0
  reasons: dict[str, int] = dataclasses.field(default_factory=dict)


class Quarantine:
  """Collects malformed rows; written as quarantine.csv (file, line, reason, raw)."""

  COLUMNS = ("file", "line", "reason", "raw")

  def __init__(self):
    self.rows: list[tuple[str, int, str, str]] = []

  def add(self, stats: FileStats, line: int, reason: str, raw: str) -> None:
    self.rows.append((stats.file, int(line), reason, raw))
    stats.quarantined += 1
    category = reason.split(":", 1)[0]
    stats.reasons[category] = stats.reasons.get(category, 0) + 1

  def write(self, path: str) -> None:
    with open(path, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(self.COLUMNS)
      writer.writerows(self.rows)


def check_bad_fraction(stats: FileStats, max_bad_fraction: float, where: str) -> None:
  """Fails, naming the file, when too many of its rows were malformed."""
  if stats.rows_in and stats.quarantined / stats.rows_in > max_bad_fraction:
    raise DataError(
        f"{stats.file}: {stats.quarantined} of {stats.rows_in} rows "
        f"({stats.quarantined / stats.rows_in:.2%}) are malformed, more than "
        f"data.max_bad_fraction={max_bad_fraction:g}; reasons {stats.reasons}; "
        f"every bad row is listed in {where}")


@dataclasses.dataclass(frozen=True)
class Layout:
  """Paths of the files found in a KuaiRand-Pure directory."""
  data_dir: str
  logs: tuple[str, ...]
  random_logs: tuple[str, ...]
  user_features: str
  video_features: str
  user_history: tuple[str, ...]


def _date_key(path: str) -> tuple:
  """Sorts `log_*_<m>_<d>_to_...` files by their start date, then by name."""
  match = re.search(r"_(\d+)_(\d+)_to_", os.path.basename(path))
  return (int(match.group(1)), int(match.group(2))) if match else (99, 99), path


def discover(data_dir: str) -> Layout:
  """Finds the files of the layout; a missing required file is an error naming it."""
  if not os.path.isdir(data_dir):
    raise DataError(f"data directory {data_dir!r} does not exist")
  found = lambda pattern: tuple(sorted(glob.glob(os.path.join(data_dir, pattern)),
                                       key=_date_key))
  logs = found(LOG_STANDARD)
  missing = [] if logs else [LOG_STANDARD]
  missing += [name for name in (USER_FEATURES, VIDEO_FEATURES)
              if not os.path.isfile(os.path.join(data_dir, name))]
  if missing:
    raise DataError(f"{data_dir} is not in the KuaiRand-Pure layout: missing "
                    f"{', '.join(missing)}")
  if os.path.isfile(os.path.join(data_dir, VIDEO_STATISTICS)):
    logging.info("not reading %s: its statistics cover the whole period (future leak)",
                 VIDEO_STATISTICS)
  return Layout(data_dir, logs, found(LOG_RANDOM),
                os.path.join(data_dir, USER_FEATURES),
                os.path.join(data_dir, VIDEO_FEATURES), found(USER_HISTORY))


def _chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
  while chunk := list(itertools.islice(lines, size)):
    yield chunk


def _is_empty(raw: pd.Series) -> pd.Series:
  if pd.api.types.is_numeric_dtype(raw):
    return raw.isna()
  return raw.isna() | (raw.astype(str).str.strip() == "")


def _validate_chunk(frame: pd.DataFrame, spec: TableSpec) -> tuple[pd.DataFrame, pd.Series]:
  """Typed columns and the first failure reason per row ("" = valid)."""
  reason = pd.Series("", index=frame.index, dtype=object)

  def fail(mask: pd.Series, what: str, column: str, raw: pd.Series | None) -> None:
    mask = mask & (reason == "")
    if mask.any():
      shown = "" if raw is None else "=" + raw[mask].astype(str).str.slice(0, 40)
      reason[mask] = f"{what}: {column}" + shown

  out = {}
  for column, kind in spec.kinds.items():
    raw = frame[column]
    if kind == TEXT:
      out[column] = raw.fillna("").astype(str)
      continue
    if kind == ID_LIST:
      text = raw.fillna("").astype(str).str.strip()
      fail(~text.str.fullmatch(_ID_LIST_RE), "non-numeric id", column, raw)
      out[column] = text
      continue
    if kind == DATE:
      text = raw.fillna("").astype(str).str.strip()
      unique, inverse = np.unique(text.to_numpy(str), return_inverse=True)
      parsed = pd.to_datetime(pd.Series(unique), format="%Y%m%d", errors="coerce")
      days = (parsed - pd.Timestamp("1970-01-01")).dt.days.to_numpy()[inverse]
      fail(pd.Series(np.isnan(days), index=frame.index), "bad date", column, raw)
      out["day"] = pd.Series(np.nan_to_num(days, nan=0).astype(np.int64), index=frame.index)
      out[column] = pd.to_numeric(text, errors="coerce").fillna(0).astype(np.int64)
      continue
    number = (raw if pd.api.types.is_numeric_dtype(raw)
              else pd.to_numeric(raw, errors="coerce")).astype(np.float64)
    if kind == NUMBER:
      out[column] = number
      continue
    integral = number.notna() & (number == np.floor(number))
    if kind == OPTIONAL_ID:
      fail(~integral & ~_is_empty(raw), "non-numeric id", column, raw)
    elif kind == ID:
      fail(~integral, "non-numeric id", column, raw)
    elif kind == TIME:
      fail(~integral, "bad time", column, raw)
    elif kind in (LABEL, FLAG_LABEL):
      fail(_is_empty(raw), "missing label", column, None)
      valid = integral & (number >= 0)
      if kind == FLAG_LABEL:
        valid &= number <= 1
      fail(~valid, "bad label", column, raw)
    out[column] = number.where(integral, -1).astype(np.int64)
  return pd.DataFrame(out, index=frame.index), reason


def _field_counts(lines: list[str]) -> np.ndarray:
  """Fields per line: comma count, or the csv module's count for quoted lines."""
  counts = np.fromiter((line.count(",") + 1 if line else 0 for line in lines),
                       np.int64, len(lines))
  for i, line in enumerate(lines):
    if '"' in line:
      counts[i] = len(next(csv.reader([line]), []))
  return counts


def _frame(header: list[str], lines: list[str], good: np.ndarray,
           spec: TableSpec) -> pd.DataFrame:
  """The spec's columns of the well-formed lines, indexed by chunk offset.

  The C parser does the work; if it reads the lines differently from the
  per-line csv module (e.g. an unbalanced quote), the csv fields are used.
  """
  names = list(spec.kinds)
  text = {c: str for c, kind in spec.kinds.items() if kind in (TEXT, ID_LIST, DATE)}
  try:
    frame = pd.read_csv(io.StringIO("\n".join(lines[i] for i in good)), header=None,
                        names=header, usecols=names, dtype=text, keep_default_na=False,
                        na_values=[""], engine="c")
    if len(frame) == len(good):
      return frame[names].set_axis(good)
  except (ValueError, pd.errors.ParserError):
    pass
  positions = [header.index(c) for c in names]
  fields = csv.reader(lines[i] for i in good)
  return pd.DataFrame([[row[p] for p in positions] for row in fields],
                      columns=names, index=good, dtype=object)


def read_table(path: str, spec: TableSpec, quarantine: Quarantine,
               max_rows: int = 0) -> tuple[pd.DataFrame, FileStats]:
  """Reads one CSV, validating every row; bad rows go to `quarantine`."""
  stats = FileStats(os.path.basename(path))
  with open(path, newline="", encoding="utf-8", errors="replace") as f:
    header = next(csv.reader([f.readline()]), [])
    missing = [c for c in spec.kinds if c not in header]
    if missing:
      raise DataError(f"{path}: missing column(s) {', '.join(missing)} "
                      f"(found: {', '.join(header) or 'an empty header'})")
    lines = (line.rstrip("\r\n") for line in f)
    if max_rows:
      lines = itertools.islice(lines, max_rows)
    frames = []
    progress = tqdm(desc=f"reading {stats.file}", unit=" rows", leave=False,
                    mininterval=2.0, disable=None)
    for chunk in _chunks(lines, CHUNK_ROWS):
      first_line = stats.rows_in + 2  # line 1 is the header
      stats.rows_in += len(chunk)
      counts = _field_counts(chunk)
      for offset in np.flatnonzero(counts != len(header)):
        quarantine.add(stats, first_line + offset,
                       f"wrong column count: expected {len(header)}, got {counts[offset]}",
                       chunk[offset])
      good = np.flatnonzero(counts == len(header))
      typed, reason = _validate_chunk(_frame(header, chunk, good, spec), spec)
      for offset, why in reason[reason != ""].items():
        quarantine.add(stats, first_line + offset, why, chunk[offset])
      typed = typed[(reason == "").to_numpy()]
      typed.insert(0, "_line", typed.index.to_numpy(np.int64) + first_line)
      if spec.key is not None:  # kept to quarantine duplicates with their raw text
        typed.insert(1, "_raw", [chunk[i] for i in typed.index])
      frames.append(typed)
      progress.update(len(chunk))
    progress.close()
  table = (pd.concat(frames, ignore_index=True) if frames else
           _validate_chunk(pd.DataFrame(columns=list(spec.kinds), dtype=object),
                           spec)[0].assign(_line=np.int64(0), _raw=""))
  if spec.key is not None:
    duplicate = table[spec.key].duplicated(keep="first").to_numpy()
    for line, key, raw in zip(table["_line"][duplicate], table[spec.key][duplicate],
                              table["_raw"][duplicate]):
      quarantine.add(stats, line, f"duplicate id: {spec.key}={key}", raw)
    table = table[~duplicate]
  stats.rows_out = len(table)
  logging.info("%s: %d rows in, %d out, %d quarantined", stats.file, stats.rows_in,
               stats.rows_out, stats.quarantined)
  return table.drop(columns=["_line", "_raw"], errors="ignore").reset_index(drop=True), stats


def read_logs(paths: tuple[str, ...], quarantine: Quarantine,
              max_rows: int = 0) -> tuple[pd.DataFrame, list[FileStats]]:
  """Concatenated, validated impression logs sorted by time, with `day` and `hour`."""
  frames, all_stats = [], []
  remaining = max_rows
  for path in paths:
    if max_rows and remaining <= 0:
      break
    frame, stats = read_table(path, LOG_SPEC, quarantine, remaining if max_rows else 0)
    remaining -= stats.rows_in
    frames.append(frame)
    all_stats.append(stats)
  log = pd.concat(frames, ignore_index=True)
  log["hour"] = (log["hourmin"] // 100).clip(0, 23)
  log = log.sort_values(["time_ms", "user_id", "video_id"], kind="stable",
                        ignore_index=True)
  return log, all_stats


def _id_lists(text: pd.Series) -> list[list[int]]:
  return [list(map(int, s.split())) for s in text.tolist()]


def read_history(paths: tuple[str, ...], quarantine: Quarantine
                 ) -> tuple[pd.DataFrame, list[FileStats]]:
  """Pre-period histories: user_id, day, watch, like, long_view (id lists, newest last).

  `day` is the day (since epoch) of the user's newest history event.
  """
  frames, all_stats = [], []
  for path in paths:
    frame, stats = read_table(path, HISTORY_SPEC, quarantine)
    frames.append(frame)
    all_stats.append(stats)
  table = (pd.concat(frames, ignore_index=True) if frames else
           pd.DataFrame({c: pd.Series(dtype=object) for c in HISTORY_COLUMNS}))
  history = pd.DataFrame({
      "user_id": table["user_id"].to_numpy(np.int64),
      "day": day_of_ms(table["last_time_ms"].to_numpy(np.int64)),
      "watch": _id_lists(table["watch_seq"]),
      "like": _id_lists(table["like_seq"]),
      "long_view": _id_lists(table["long_watch_seq"]),
  })
  return history, all_stats


def read_user_history(data_dir: str) -> pd.DataFrame:
  """`read_history` of the directory's user_history_before_*.csv (empty if none)."""
  paths = tuple(sorted(glob.glob(os.path.join(data_dir, USER_HISTORY))))
  return read_history(paths, Quarantine())[0]
