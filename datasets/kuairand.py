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

Any of them may be gzip-compressed, named `<name>.csv.gz` (a gzip file is
recognised by its first bytes, whatever its name); a name present both plain and
`.gz` is an error. A UTF-8 byte-order mark is skipped.

Columns are matched by header name, so extra columns are ignored and a missing
one is an error that names it. A record is one physical line: a quote left open
at the end of a line makes that line malformed (it is never continued on the
next line, so a field with an embedded newline quarantines both halves).

A malformed row goes to the `Quarantine` with its reason (naming the column),
file, line number and raw text; nothing is dropped silently and nothing is
coerced. Malformed means: wrong column count, bad quoting, invalid UTF-8, a NUL
byte or stray carriage return, a missing or invalid label, bad date or time, a
non-numeric or non-finite value in a numeric column, or an id that is not a
non-negative integer within int64. Ids are parsed exactly as integers, never
through float64 (an integer written as `12.0` is accepted as 12).

Duplicates: a log line identical, character for character (line endings aside),
to an earlier line of any log file is an exact duplicate. Each is counted in its
file's `duplicates` (prepare_report.json) and kept, since the released log itself
repeats lines (4,931 of 198,895 in the shared copy); `read_logs(drop_duplicates=
True)` drops them instead, keeping the first. A second row with the id of an
earlier row of a side table is quarantined as `duplicate id`.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import decimal
import glob
import gzip
import io
import itertools
import logging
import os
import re
import zlib
from typing import BinaryIO, Iterator

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
GZIP_SUFFIX = ".gz"

# How a column is validated. Failing a row-level kind quarantines the row.
ID = "id"            # non-negative int64, required
OPTIONAL_ID = "optional_id"  # non-negative int64 or empty (-1)
DATE = "date"        # YYYYMMDD, required -> extra column `day`
TIME = "time"        # non-negative integer milliseconds or hourmin, required
LABEL = "label"      # non-negative integer, required
FLAG_LABEL = "flag"  # 0 or 1, required
ID_LIST = "id_list"  # space-separated non-negative int64 ids, may be empty
NUMBER = "number"    # finite float or empty (NaN)
TEXT = "text"        # kept as the raw string ("" = missing)
_INTEGER_KINDS = (ID, OPTIONAL_ID, TIME, LABEL, FLAG_LABEL)
# What a failed value of a kind is called in a quarantine reason.
_NOUN = {ID: "id", OPTIONAL_ID: "id", TIME: "time", LABEL: "label", FLAG_LABEL: "label"}

CHUNK_ROWS = 200_000
INT64_MAX = np.iinfo(np.int64).max
MAX_RAW_CHARS = 10_000  # of a quarantined line kept in quarantine.csv
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
# Lists whose ids are all below 10**18 (others are checked one by one).
_ID_LIST_RE = r"(?:[0-9]{1,18}(?: [0-9]{1,18})*)?"
# An integer as CSV writers write it: ASCII digits, maybe signed "+", or a float
# rendering of an integer ("12.0"); group 1 holds the significant digits.
_INTEGER_RE = r"^\s*\+?0*([0-9]{1,19})(?:\.0*)?\s*$"


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
  """Rows in / out / quarantined of one file: counts per reason and per column at
  fault, and the first bad row (line and reason) to show in an error.

  rows_in == rows_out + quarantined (+ duplicates when they are dropped).
  """
  file: str
  rows_in: int = 0
  rows_out: int = 0
  quarantined: int = 0
  duplicates: int = 0  # log lines equal to an earlier log line (see `read_logs`)
  reasons: dict[str, int] = dataclasses.field(default_factory=dict)
  columns: dict[str, int] = dataclasses.field(default_factory=dict)
  first_bad: str = ""


class Quarantine:
  """Collects malformed rows; written as quarantine.csv (file, line, reason, raw)."""

  COLUMNS = ("file", "line", "reason", "raw")

  def __init__(self):
    self.rows: list[tuple[str, int, str, str]] = []

  def add(self, stats: FileStats, line: int, reason: str, raw: str,
          column: str = "") -> None:
    """Records one bad row; `column` (if one is at fault) is counted per column."""
    self.rows.append((stats.file, int(line), reason, raw[:MAX_RAW_CHARS]))
    stats.quarantined += 1
    category = reason.split(":", 1)[0]
    stats.reasons[category] = stats.reasons.get(category, 0) + 1
    if column:
      stats.columns[column] = stats.columns.get(column, 0) + 1
    if not stats.first_bad:
      stats.first_bad = f"line {line}: {reason}"

  def write(self, path: str) -> None:
    with open(path, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(self.COLUMNS)
      writer.writerows(self.rows)


def check_bad_fraction(stats: FileStats, max_bad_fraction: float, where: str) -> None:
  """Fails, naming the file and its first bad row, when too many rows were malformed."""
  if stats.rows_in and stats.quarantined / stats.rows_in > max_bad_fraction:
    per_column = f", per column {stats.columns}" if stats.columns else ""
    raise DataError(
        f"{stats.file}: {stats.quarantined} of {stats.rows_in} rows "
        f"({stats.quarantined / stats.rows_in:.2%}) are malformed, more than "
        f"data.max_bad_fraction={max_bad_fraction:g}; first at {stats.first_bad}; "
        f"reasons {stats.reasons}{per_column}; every bad row is listed in {where}")


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


def find(data_dir: str, pattern: str) -> tuple[str, ...]:
  """Files matching `pattern` or its `.gz` form, by date; one name in both is an error."""
  paths = glob.glob(os.path.join(data_dir, pattern))
  compressed = glob.glob(os.path.join(data_dir, pattern + GZIP_SUFFIX))
  both = sorted(set(paths) & {p.removesuffix(GZIP_SUFFIX) for p in compressed})
  if both:
    raise DataError(f"{both[0]} and {os.path.basename(both[0])}{GZIP_SUFFIX} both exist "
                    f"in {data_dir}: keep one, or its rows would be read twice")
  return tuple(sorted(paths + compressed, key=_date_key))


def discover(data_dir: str) -> Layout:
  """Finds the files of the layout; a missing required file is an error naming it."""
  if not os.path.isdir(data_dir):
    raise DataError(f"data directory {data_dir!r} does not exist")
  found = {name: find(data_dir, name) for name in (
      LOG_STANDARD, LOG_RANDOM, USER_FEATURES, VIDEO_FEATURES, USER_HISTORY)}
  missing = [name for name in (LOG_STANDARD, USER_FEATURES, VIDEO_FEATURES)
             if not found[name]]
  if missing:
    raise DataError(f"{data_dir} is not in the KuaiRand-Pure layout: missing "
                    f"{', '.join(missing)}")
  if find(data_dir, VIDEO_STATISTICS):
    logging.info("not reading %s: its statistics cover the whole period (future leak)",
                 VIDEO_STATISTICS)
  return Layout(data_dir, found[LOG_STANDARD], found[LOG_RANDOM],
                found[USER_FEATURES][0], found[VIDEO_FEATURES][0], found[USER_HISTORY])


@contextlib.contextmanager
def _open(path: str) -> Iterator[BinaryIO]:
  """The file's bytes, gunzipped if it starts with the gzip magic (whatever its
  name); an unreadable file or corrupt gzip data is a DataError naming the file."""
  try:
    raw = open(path, "rb")
  except OSError as error:
    raise DataError(f"{path}: cannot open: {error.strerror or error}") from error
  with raw:
    gzipped = raw.peek(len(_GZIP_MAGIC)).startswith(_GZIP_MAGIC)
    try:
      with gzip.GzipFile(fileobj=raw) if gzipped else contextlib.nullcontext(raw) as f:
        yield f
    except (OSError, EOFError, zlib.error) as error:
      what = "gzip data" if gzipped else "file"
      raise DataError(f"{path}: cannot read the {what}: {error}") from error


def _header(path: str, line: bytes, spec: TableSpec) -> list[str]:
  """Column names of line 1, checked to be UTF-8 text with every column of `spec`."""
  try:
    text = line.removeprefix(_BOM).rstrip(b"\r\n").decode("utf-8")
    if "\x00" in text:
      raise UnicodeError("NUL byte")
    header = next(csv.reader([text], strict=True), [])
  except (UnicodeError, csv.Error) as error:
    raise DataError(f"{path}: line 1 is not a CSV header in UTF-8 ({error}); expected "
                    f"a plain or gzip-compressed CSV file") from error
  missing = [c for c in spec.kinds if c not in header]
  if missing:
    raise DataError(f"{path}: missing column(s) {', '.join(missing)} "
                    f"(found: {', '.join(header)[:300] or 'an empty header'})")
  repeated = [c for c in spec.kinds if header.count(c) > 1]
  if repeated:
    raise DataError(f"{path}: column(s) {', '.join(repeated)} appear more than once "
                    f"in the header (line 1)")
  return header


def _column_at(header: list[str], prefix: str) -> str:
  """Name of the column in which a line that starts with `prefix` continues."""
  try:
    index = len(next(csv.reader([prefix]), [""])) - 1
  except csv.Error:  # a field beyond the csv module's size limit: count commas
    index = prefix.count(",")
  return header[index] if index < len(header) else f"field {index + 1}"


def _decode(chunk: list[bytes], header: list[str]
            ) -> tuple[list[str], dict[int, tuple[str, str]]]:
  """Lines without their line ending, and the lines that are not UTF-8.

  Undecodable lines come back with escapes (\\xff) for the quarantine's raw text.
  """
  lines = [line.rstrip(b"\r\n") for line in chunk]
  try:
    return b"\n".join(lines).decode("utf-8").split("\n"), {}
  except UnicodeDecodeError:
    pass
  text, bad = [], {}
  for offset, line in enumerate(lines):
    try:
      text.append(line.decode("utf-8"))
    except UnicodeDecodeError as error:
      text.append(line.decode("utf-8", "backslashreplace"))
      column = _column_at(header, line[:error.start].decode("utf-8"))
      bad[offset] = (f"invalid UTF-8: {column} (byte 0x{line[error.start]:02x})", column)
  return text, bad


def _line_problem(line: str, header: list[str]) -> tuple[str, str] | None:
  """(reason, column) if the line cannot be split into exactly the header's fields."""
  if "\x00" in line:
    return "binary data: NUL byte", _column_at(header, line[:line.index("\x00")])
  if "\r" in line:
    return "stray carriage return", _column_at(header, line[:line.index("\r")])
  if '"' in line:
    try:
      fields = next(csv.reader([line], strict=True), [])
    except csv.Error as error:
      if "unexpected end of data" in str(error):
        column = _column_at(header, line)
        return f"unbalanced quote: {column} (a quoted field does not end on its line)", column
      return f"unparsable CSV: {error}", ""
  else:
    fields = line.split(",") if line else []
  if len(fields) != len(header):
    return f"wrong column count: expected {len(header)}, got {len(fields)}", ""
  return None


def _problems(chunk: list[bytes], header: list[str]
              ) -> tuple[list[str], dict[int, tuple[str, str]]]:
  """Decoded lines and, per unusable line offset, its (reason, column at fault)."""
  text, bad = _decode(chunk, header)
  commas = len(header) - 1
  for offset, line in enumerate(text):
    if offset not in bad and (line.count(",") != commas or '"' in line or "\r" in line
                              or "\x00" in line):
      problem = _line_problem(line, header)
      if problem:
        bad[offset] = problem
  return text, bad


def _is_empty(raw: pd.Series) -> pd.Series:
  return raw.isna() | (raw.astype(str).str.strip() == "")


def _exact_integers(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
  """int64 values (-1 where invalid) and which entries are non-negative integers
  within int64. A column pandas parsed as int64 is exact; any other is read from
  its text, never through float64, so ids above 2**53 stay exact."""
  if raw.dtype == np.int64:
    valid = raw >= 0
    return raw.where(valid, -1), valid
  digits = raw.fillna("").astype(str).str.extract(_INTEGER_RE, expand=False)
  valid = digits.notna() & ((digits.str.len() < 19) | (digits <= str(INT64_MAX)))
  values = np.full(len(raw), -1, np.int64)
  values[valid.to_numpy()] = digits[valid].astype(np.int64).to_numpy()
  return pd.Series(values, index=raw.index), valid


def _id_problem(text: str) -> str:
  """Why `text` is not an id (a non-negative integer within int64)."""
  try:
    value = decimal.Decimal(text.strip())
  except decimal.InvalidOperation:
    return "non-numeric id"
  if not (text.isascii() and value.is_finite()):
    return "non-numeric id"
  if value < 0:
    return "negative id"
  if value > INT64_MAX:
    return "id out of int64 range"
  if value != value.to_integral_value():
    return "non-integer id"
  return "id not written as an integer"


def _id_list_problem(text: str) -> str:
  """Why a space-separated list is not of ids ("" if it is: long ids within int64)."""
  tokens = text.split()
  if " ".join(tokens) != text or not all(t.isascii() and t.isdigit() for t in tokens):
    return "non-numeric id"
  return "id out of int64 range" if max(map(int, tokens)) > INT64_MAX else ""


def _validate_chunk(frame: pd.DataFrame, spec: TableSpec
                    ) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
  """Typed columns, the first failure reason per row ("" = valid) and its column."""
  reason = pd.Series("", index=frame.index, dtype=object)
  at_fault = pd.Series("", index=frame.index, dtype=object)

  def fail(mask: pd.Series, what: str | pd.Series, column: str,
           raw: pd.Series | None) -> None:
    if not mask.any():
      return
    mask = mask & (reason == "")
    if mask.any():
      what = what.reindex(mask.index)[mask] if isinstance(what, pd.Series) else what
      shown = "" if raw is None else "=" + raw[mask].astype(str).str.slice(0, 40)
      reason[mask] = what + f": {column}" + shown
      at_fault[mask] = column

  out = {}
  for column, kind in spec.kinds.items():
    raw = frame[column]
    if kind == TEXT:
      out[column] = raw.fillna("").astype(str)
    elif kind == ID_LIST:
      text = raw.fillna("").astype(str).str.strip()
      unusual = ~text.str.fullmatch(_ID_LIST_RE)
      if unusual.any():
        what = text[unusual].map(_id_list_problem)
        fail(unusual & what.reindex(text.index, fill_value="").ne(""), what, column, raw)
      out[column] = text
    elif kind == DATE:
      text = raw.fillna("").astype(str).str.strip()
      unique, inverse = np.unique(text.to_numpy(str), return_inverse=True)
      parsed = pd.to_datetime(pd.Series(unique), format="%Y%m%d", errors="coerce")
      days = (parsed - pd.Timestamp("1970-01-01")).dt.days.to_numpy()[inverse]
      fail(pd.Series(np.isnan(days), index=frame.index), "bad date", column, raw)
      out["day"] = pd.Series(np.nan_to_num(days, nan=0).astype(np.int64), index=frame.index)
      out[column] = pd.to_numeric(text, errors="coerce").fillna(0).astype(np.int64)
    elif kind == NUMBER:
      number = pd.to_numeric(raw, errors="coerce").astype(np.float64)
      fail(raw.notna() & ~np.isfinite(number), "non-numeric value", column, raw)
      out[column] = number
    else:
      values, valid = _exact_integers(raw)
      if kind == FLAG_LABEL:
        valid &= values <= 1
      invalid = ~valid
      if invalid.any():
        empty = invalid & _is_empty(raw)
        noun = _NOUN[kind]
        if kind == OPTIONAL_ID:
          invalid &= ~empty
        else:
          fail(empty, f"missing {noun}", column, None)
        what = (raw[invalid].astype(str).map(_id_problem) if noun == "id"
                else f"bad {noun}")
        fail(invalid, what, column, raw)
      out[column] = values
  return pd.DataFrame(out, index=frame.index), reason, at_fault


def _frame(path: str, header: list[str], lines: list[str], good: np.ndarray,
           spec: TableSpec) -> pd.DataFrame:
  """The spec's columns of the well-formed lines, indexed by chunk offset.

  Every line given has exactly the header's fields and balanced quotes on its own,
  so pandas' C parser splits it as the csv module does. Integer columns it cannot
  parse as int64 are read again as text, for exact validation.
  """
  names = list(spec.kinds)
  if not len(good):
    return pd.DataFrame({c: pd.Series(dtype=object) for c in names})
  text = "\n".join(lines[i] for i in good)
  positions = [header.index(c) for c in names]
  read = lambda columns, parsed: pd.read_csv(
      io.StringIO(text), header=None, usecols=columns, keep_default_na=False,
      na_values=[""], engine="c",
      dtype={p: str for p, c in zip(positions, names) if spec.kinds[c] not in parsed})
  frame = read(positions, (NUMBER,) + _INTEGER_KINDS)
  if len(frame) != len(good):
    raise DataError(f"{path}: pandas read {len(frame)} rows where {len(good)} "
                    f"well-formed lines were given (a reader bug; please report it)")
  inexact = [p for p, c in zip(positions, names)
             if spec.kinds[c] in _INTEGER_KINDS and frame[p].dtype != np.int64]
  if inexact:
    frame[inexact] = read(inexact, (NUMBER,))
  return frame[positions].set_axis(names, axis=1).set_axis(good)


def _read_rows(path: str, spec: TableSpec, quarantine: Quarantine, max_rows: int = 0
               ) -> tuple[pd.DataFrame, list[str], FileStats]:
  """Valid rows of one CSV with their `_line` number, and their raw text; bad rows
  go to `quarantine`. `rows_out` is left for the caller (duplicates may follow)."""
  stats = FileStats(os.path.basename(path))
  frames, raw = [], []
  with _open(path) as f:
    header = _header(path, f.readline(), spec)
    lines = iter(f)
    if max_rows:
      lines = itertools.islice(lines, max_rows)
    progress = tqdm(desc=f"reading {stats.file}", unit=" rows", leave=False,
                    mininterval=2.0, disable=None)
    for chunk in _chunks(lines, CHUNK_ROWS):
      first_line = stats.rows_in + 2  # line 1 is the header
      stats.rows_in += len(chunk)
      text, bad = _problems(chunk, header)
      good = np.array([i for i in range(len(text)) if i not in bad], np.int64)
      typed, reason, column = _validate_chunk(_frame(path, header, text, good, spec), spec)
      bad.update((offset, (reason[offset], column[offset]))
                 for offset in reason.index[reason != ""])
      for offset in sorted(bad):
        why, at_fault = bad[offset]
        quarantine.add(stats, first_line + offset, why, text[offset], at_fault)
      typed = typed[(reason == "").to_numpy()]
      typed.insert(0, "_line", typed.index.to_numpy(np.int64) + first_line)
      raw += [text[i] for i in typed.index]
      frames.append(typed)
      progress.update(len(chunk))
    progress.close()
  table = (pd.concat(frames, ignore_index=True) if frames else
           _validate_chunk(pd.DataFrame(columns=list(spec.kinds), dtype=object),
                           spec)[0].assign(_line=np.int64(0)))
  return table, raw, stats


def _chunks(lines: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
  while chunk := list(itertools.islice(lines, size)):
    yield chunk


def _finish(table: pd.DataFrame, all_stats: list[FileStats], rows_out) -> pd.DataFrame:
  """Records the rows kept per file and drops the bookkeeping column."""
  for stats, rows in zip(all_stats, rows_out):
    stats.rows_out = int(rows)
    logging.info("%s: %d rows in, %d out, %d quarantined", stats.file, stats.rows_in,
                 stats.rows_out, stats.quarantined)
  return table.drop(columns="_line").reset_index(drop=True)


def read_table(path: str, spec: TableSpec, quarantine: Quarantine,
               max_rows: int = 0) -> tuple[pd.DataFrame, FileStats]:
  """Reads one CSV, validating every row; bad rows go to `quarantine`."""
  table, raw, stats = _read_rows(path, spec, quarantine, max_rows)
  if spec.key is not None:
    duplicate = table[spec.key].duplicated(keep="first").to_numpy()
    for i in np.flatnonzero(duplicate):
      key = table[spec.key].iat[i]
      quarantine.add(stats, table["_line"].iat[i], f"duplicate id: {spec.key}={key}",
                     raw[i], spec.key)
    table = table[~duplicate]
  return _finish(table, [stats], [len(table)]), stats


def read_logs(paths: tuple[str, ...], quarantine: Quarantine, max_rows: int = 0,
              drop_duplicates: bool = False) -> tuple[pd.DataFrame, list[FileStats]]:
  """Concatenated, validated impression logs sorted by time, with `day` and `hour`.

  Exact duplicate lines (across all the files) are counted in the later file's
  `duplicates`; they are kept unless `drop_duplicates` (then the first is kept).
  """
  frames, raw, all_stats = [], [], []
  remaining = max_rows
  for path in paths:
    if max_rows and remaining <= 0:
      break
    frame, file_raw, stats = _read_rows(path, LOG_SPEC, quarantine,
                                        remaining if max_rows else 0)
    remaining -= stats.rows_in
    frames.append(frame)
    raw += file_raw
    all_stats.append(stats)
  log = pd.concat(frames, ignore_index=True)
  file_of = np.repeat(np.arange(len(frames)), [len(frame) for frame in frames])
  duplicate = pd.Series(raw, dtype=object).duplicated(keep="first").to_numpy()
  for stats, count in zip(all_stats, np.bincount(file_of[duplicate],
                                                 minlength=len(all_stats))):
    stats.duplicates = int(count)
    if count:
      logging.info("%s: %d lines repeat an earlier log line exactly; %s", stats.file,
                   count, "dropped" if drop_duplicates else "kept")
  if drop_duplicates:
    log, file_of = log[~duplicate], file_of[~duplicate]
  log = _finish(log, all_stats, np.bincount(file_of, minlength=len(all_stats)))
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
  return read_history(find(data_dir, USER_HISTORY), Quarantine())[0]
