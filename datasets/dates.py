"""Days since 1970-01-01: the one time unit shared by examples, edges and splits.

KuaiRand dates (`date` = YYYYMMDD) are calendar days in China Standard Time
(UTC+8); millisecond timestamps are converted in that zone so that a
timestamp and the `date` column of the same impression give the same day.
"""
from __future__ import annotations

import datetime

import numpy as np

EPOCH = datetime.date(1970, 1, 1)
MS_PER_DAY = 86_400_000
# KuaiRand timestamps are local to China Standard Time.
TIMEZONE_OFFSET_MS = 8 * 3_600_000


def day_of(value: str | int | datetime.date) -> int:
  """Days since epoch of a `YYYY-MM-DD` string, a `YYYYMMDD` int or a date."""
  if isinstance(value, datetime.datetime):
    value = value.date()
  if isinstance(value, datetime.date):
    return (value - EPOCH).days
  text = str(value)
  if len(text) == 8 and text.isdigit():
    return (datetime.date(int(text[:4]), int(text[4:6]), int(text[6:])) - EPOCH).days
  return (datetime.date.fromisoformat(text) - EPOCH).days


def date_of(day: int) -> datetime.date:
  """Inverse of `day_of`."""
  return EPOCH + datetime.timedelta(days=int(day))


def day_of_ms(time_ms: np.ndarray | int) -> np.ndarray:
  """Days since epoch (China Standard Time) of Unix millisecond timestamps."""
  return (np.asarray(time_ms, dtype=np.int64) + TIMEZONE_OFFSET_MS) // MS_PER_DAY


def ms_of_day(day: np.ndarray | int) -> np.ndarray:
  """Unix milliseconds of local midnight starting `day` (inverse of day_of_ms)."""
  return np.asarray(day, dtype=np.int64) * MS_PER_DAY - TIMEZONE_OFFSET_MS

