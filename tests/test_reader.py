"""The KuaiRand CSV reader on broken inputs: every bad row is quarantined with its
line, column and reason, or the file is refused with a one-line DataError."""
import gzip
import os

import e2e_grec  # noqa: F401
import numpy as np
import pytest

from e2e_grec.datasets import kuairand

LOG = "log_standard_4_25_to_5_06_pure.csv"
LOG_HEADER = ",".join(kuairand.LOG_COLUMNS)
VIDEO_HEADER = ",".join(kuairand.VIDEO_COLUMNS)


def _log_row(user="1", video="5", duration="30000", tab="1") -> str:
  return (f"{user},{video},20220425,100,1650816300000,1,0,0,0,0,0,1,20000,{duration},"
          f"0,0,0,0,{tab}")


def _video_row(video="1", video_type="NORMAL", author="7", duration="87433.0") -> str:
  return (f"{video},{author},{video_type},2022-04-10,Kmovie,0.0,{duration},720.0,1280.0,"
          f"91,9.0,39")


GOOD = [_log_row(user=str(i)) for i in range(10, 20)]


def _write(path, header: str, lines: list, prefix: bytes = b"", compress=False) -> str:
  data = prefix + b"\n".join(
      line if isinstance(line, bytes) else line.encode() for line in [header, *lines]) + b"\n"
  with open(path, "wb") as f:
    f.write(gzip.compress(data) if compress else data)
  return str(path)


def _read_log(path: str, **kwargs):
  quarantine = kuairand.Quarantine()
  log, stats = kuairand.read_logs((path,), quarantine, **kwargs)
  return log, stats[0], quarantine.rows


def test_a_line_that_does_not_parse_on_its_own_is_quarantined_alone(tmp_path):
  """No record spans lines: an open quote, an embedded newline, a NUL or a stray
  CR quarantines its line, and the next line is read afresh."""
  rest = [_log_row(user=str(i)) for i in range(100, 2100)]  # > the csv field limit
  lines = [_log_row(tab='"1'), "1,2,3", _log_row(video='"5'), '5",20220425', *GOOD,
           _log_row(user="1\x002"), _log_row(duration="3\r0"),
           _log_row(tab='"' + "9" * 200_000),
           _log_row(video='"' + "9" * 200_000 + '"', duration="3\x00"), *rest]
  log, stats, rows = _read_log(_write(tmp_path / LOG, LOG_HEADER, lines))
  assert [(line, reason.split(" (")[0]) for _, line, reason, _ in rows] == [
      (2, "unbalanced quote: tab"), (3, "wrong column count: expected 19, got 3"),
      (4, "unbalanced quote: video_id"), (5, "wrong column count: expected 19, got 2"),
      (16, "binary data: NUL byte"), (17, "stray carriage return"),
      (18, "unparsable CSV: field larger than field limit"),
      (19, "binary data: NUL byte")]
  assert [raw for *_, raw in rows[:2]] == lines[:2]
  assert len(log) == stats.rows_out == len(GOOD) + len(rest)
  assert stats.columns == {"tab": 1, "video_id": 1, "user_id": 1, "duration_ms": 2}


def test_invalid_utf8_is_quarantined_naming_the_column(tmp_path):
  bad = _video_row(video="3").encode().replace(b"NORMAL", b"NOR\xffMAL")
  path = _write(tmp_path / kuairand.VIDEO_FEATURES, VIDEO_HEADER,
                [_video_row("1"), _video_row("2", video_type="AD"), bad])
  quarantine = kuairand.Quarantine()
  videos, stats = kuairand.read_table(path, kuairand.VIDEO_SPEC, quarantine)
  assert sorted(videos["video_type"]) == ["AD", "NORMAL"]  # no U+FFFD category
  assert quarantine.rows == [(kuairand.VIDEO_FEATURES, 4,
                              "invalid UTF-8: video_type (byte 0xff)",
                              bad.decode("utf-8", "backslashreplace"))]
  assert stats.columns == {"video_type": 1}


def test_ids_are_exact_int64_and_bad_ids_say_why(tmp_path):
  cases = {str(2**53 + 1): 2**53 + 1, str(2**63 - 1): 2**63 - 1, "12.0": 12,
           "0007": 7, str(2**63): "id out of int64 range", "1e300": "id out of int64 range",
           "1.5": "non-integer id", "1e3": "id not written as an integer",
           "-4": "negative id", "abc": "non-numeric id", "\u0661\u0662": "non-numeric id",
           "": "missing id"}
  lines = [_log_row(user=user, video=str(i)) for i, user in enumerate(cases)]
  log, _, rows = _read_log(_write(tmp_path / LOG, LOG_HEADER, lines))
  assert log["user_id"].dtype == np.int64
  assert sorted(log["user_id"]) == sorted(v for v in cases.values() if isinstance(v, int))
  assert [reason for _, _, reason, _ in rows] == [
      f"{why}: user_id" + (f"={user}" if user else "")
      for user, why in cases.items() if isinstance(why, str)]


def test_optional_ids_and_id_lists_are_range_checked(tmp_path):
  path = _write(tmp_path / kuairand.VIDEO_FEATURES, VIDEO_HEADER,
                [_video_row("1", author=""), _video_row("2", author=str(2**64))])
  quarantine = kuairand.Quarantine()
  videos, _ = kuairand.read_table(path, kuairand.VIDEO_SPEC, quarantine)
  assert list(videos["author_id"]) == [-1]  # empty optional id = -1
  assert [r[2] for r in quarantine.rows] == [f"id out of int64 range: author_id={2**64}"]
  path = _write(tmp_path / "user_history_before_4_25.csv",
                ",".join(kuairand.HISTORY_COLUMNS),
                [f"1,1650615878629,3 {2**63 - 1},,3", f"2,1650615878629,3 {2**63},,",
                 "3,1650615878629,3 x,,", "4,1650615878629,\u0661\u0662,,"])
  history, _ = kuairand.read_history((path,), quarantine)
  assert list(history["user_id"]) == [1] and history["watch"][0] == [3, 2**63 - 1]
  assert [r[2].split("=")[0] for r in quarantine.rows[1:]] == [
      "id out of int64 range: watch_seq", "non-numeric id: watch_seq",
      "non-numeric id: watch_seq"]


def test_non_numeric_feature_values_are_quarantined_per_column(tmp_path):
  lines = [*GOOD, _log_row(duration="abc"), _log_row(duration="inf"), _log_row(duration="")]
  log, stats, rows = _read_log(_write(tmp_path / LOG, LOG_HEADER, lines))
  assert [r[2] for r in rows] == ["non-numeric value: duration_ms=abc",
                                  "non-numeric value: duration_ms=inf"]
  assert stats.columns == {"duration_ms": 2}
  assert len(log) == len(GOOD) + 1 and log["duration_ms"].isna().sum() == 1  # "" = missing


def test_exact_duplicate_log_lines_are_counted_and_kept_unless_dropped(tmp_path):
  first = _write(tmp_path / LOG, LOG_HEADER, [*GOOD, GOOD[0], GOOD[0]])
  second = _write(tmp_path / "log_standard_5_07_to_5_08_pure.csv", LOG_HEADER,
                  [GOOD[1] + "\r", _log_row(user="99")])
  for drop, rows_out in ((False, (12, 2)), (True, (10, 1))):
    quarantine = kuairand.Quarantine()
    log, stats = kuairand.read_logs((first, second), quarantine, drop_duplicates=drop)
    assert [(s.duplicates, s.rows_out, s.quarantined) for s in stats] == [
        (2, rows_out[0], 0), (1, rows_out[1], 0)]
    assert len(log) == sum(rows_out) and not quarantine.rows


def test_bom_gzip_and_gzip_named_csv_are_read(tmp_path):
  plain = _read_log(_write(tmp_path / LOG, LOG_HEADER, GOOD))[0]
  for name, kwargs in (("bom.csv", {"prefix": b"\xef\xbb\xbf"}),
                       ("gzip_named.csv", {"compress": True}),
                       ("log.csv.gz", {"compress": True, "prefix": b"\xef\xbb\xbf"})):
    log, stats, rows = _read_log(_write(tmp_path / name, LOG_HEADER, GOOD, **kwargs))
    assert log.equals(plain) and not rows, name


def test_gzip_logs_are_discovered_and_a_name_in_both_forms_is_refused(tmp_path):
  _write(tmp_path / LOG, LOG_HEADER, GOOD)
  _write(tmp_path / "log_standard_5_07_to_5_08_pure.csv.gz", LOG_HEADER, GOOD,
         compress=True)
  _write(tmp_path / (kuairand.USER_FEATURES + ".gz"), ",".join(kuairand.USER_COLUMNS), [],
         compress=True)
  _write(tmp_path / kuairand.VIDEO_FEATURES, VIDEO_HEADER, [])
  layout = kuairand.discover(str(tmp_path))
  assert [os.path.basename(p) for p in layout.logs] == [
      LOG, "log_standard_5_07_to_5_08_pure.csv.gz"]
  assert layout.user_features.endswith(kuairand.USER_FEATURES + ".gz")
  _write(tmp_path / (kuairand.VIDEO_FEATURES + ".gz"), VIDEO_HEADER, [], compress=True)
  with pytest.raises(kuairand.DataError, match=r"video_features_basic_pure\.csv and "
                     r"video_features_basic_pure\.csv\.gz both exist"):
    kuairand.discover(str(tmp_path))


@pytest.mark.parametrize("content, message", [
    (gzip.compress((LOG_HEADER + "\n" + "\n".join(GOOD * 50)).encode())[:200],
     "cannot read the gzip data: Compressed file ended"),
    (bytes(range(256)) * 4, "line 1 is not a CSV header in UTF-8"),
    ("\ufeffuser_id".encode("utf-16"), "line 1 is not a CSV header in UTF-8"),
    ((LOG_HEADER + ",user_id\n").encode(), "column(s) user_id appear more than once"),
])
def test_unreadable_files_fail_with_one_printable_line(tmp_path, content, message):
  path = tmp_path / LOG
  path.write_bytes(content)
  with pytest.raises(kuairand.DataError) as error:
    _read_log(str(path))
  text = str(error.value)
  assert text.startswith(f"{path}: ") and message in text
  assert text.isprintable()


def test_bad_fraction_error_names_file_first_line_and_column(tmp_path):
  path = _write(tmp_path / LOG, LOG_HEADER, [*GOOD, _log_row(user="-1"), "1,2"])
  _, stats, _ = _read_log(path)
  with pytest.raises(kuairand.DataError) as error:
    kuairand.check_bad_fraction(stats, 0.01, "out/quarantine.csv")
  assert str(error.value) == (
      f"{LOG}: 2 of 12 rows (16.67%) are malformed, more than data.max_bad_fraction=0.01; "
      "first at line 12: negative id: user_id=-1; reasons {'negative id': 1, "
      "'wrong column count': 1}, per column {'user_id': 1}; every bad row is listed "
      "in out/quarantine.csv")
