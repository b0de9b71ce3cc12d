"""The data layer: reading and validation, quarantine, labels, split, vocabularies, examples."""
import argparse
import csv
import os
import shutil

import e2e_grec  # noqa: F401
import numpy as np
import pandas as pd
import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.datasets import examples, kuairand, labels, prepare, split, synthetic, vocab
from e2e_grec.datasets import history as history_lib
from e2e_grec.datasets import node_tables
from e2e_grec.datasets.dates import date_of, day_of, day_of_ms

TINY = config_lib.SyntheticConfig(users=120, videos=90, authors=25, tags=12, musics=20,
                                  impressions=2500, history_length=10, seed=3)
LOG_NAME = "log_standard_4_25_to_5_06_pure.csv"


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> str:
  out = str(tmp_path_factory.mktemp("raw"))
  synthetic.generate(TINY, out)
  return out


@pytest.fixture(scope="module")
def prepared(raw_dir, tmp_path_factory) -> tuple[str, prepare.PrepareReport]:
  out = str(tmp_path_factory.mktemp("prepared"))
  return out, prepare.prepare(config_lib.Config(), raw_dir, out)


def _copy(raw_dir: str, tmp_path) -> str:
  target = str(tmp_path / "data")
  shutil.copytree(raw_dir, target)
  return target


def _append(path: str, lines: list[str]) -> None:
  with open(path, "a") as f:
    f.write("\n".join(lines) + "\n")


def test_days_since_epoch_agree_across_formats():
  assert day_of("1970-01-02") == day_of(19700102) == 1
  assert date_of(day_of("2022-04-25")).isoformat() == "2022-04-25"
  # 2022-04-24T16:05Z is 00:05 on 2022-04-25 in China Standard Time.
  assert day_of_ms(1650816300000) == day_of("2022-04-25")


def test_reads_the_shared_copy(kuairand_dir):
  layout = kuairand.discover(kuairand_dir)
  assert [os.path.basename(p) for p in layout.logs] == [LOG_NAME]
  quarantine = kuairand.Quarantine()
  log, stats = kuairand.read_logs(layout.logs, quarantine, max_rows=5000)
  assert len(log) == stats[0].rows_in == 5000 and not quarantine.rows
  assert log["day"].min() == day_of("2022-04-25")
  assert set(log["hour"]) <= set(range(24))
  users, user_stats = kuairand.read_table(layout.user_features, kuairand.USER_SPEC,
                                          quarantine)
  videos, _ = kuairand.read_table(layout.video_features, kuairand.VIDEO_SPEC, quarantine)
  assert (len(users), len(videos)) == (27285, 7583) and not quarantine.rows
  assert users["is_live_streamer"].isin(["-124", "1"]).all()
  assert videos["video_duration"].isna().sum() > 0  # missing values survive as NaN
  history = kuairand.read_user_history(kuairand_dir)
  assert len(history) == 26469
  assert list(history.columns) == ["user_id", "day", "watch", "like", "long_view"]
  assert (history["day"] < day_of("2022-04-25")).all()
  assert all(isinstance(v, int) for v in history["watch"].iloc[0])


def test_prepare_on_the_shared_copy(kuairand_dir, tmp_path):
  config = config_lib.Config().replace(**{
      "data.max_rows": 20000, "data.train_end": "2022-04-25",
      "data.eval_start": "2022-04-26", "data.eval_end": "2022-04-26"})
  report = prepare.prepare(config, kuairand_dir, str(tmp_path))
  assert report.rows_in == 20000
  assert report.rows_in == report.rows_out + report.quarantined + report.out_of_window
  assert report.splits["train"]["rows"] == 14911  # every row of 2022-04-25
  assert 0.3 < report.splits["train"]["positive_rate"]["click"] < 0.6


def test_read_examples_round_trip(raw_dir, prepared):
  out, report = prepared
  log = pd.read_csv(os.path.join(raw_dir, LOG_NAME))
  train = examples.read_examples(contracts.split_file(out, "train"))
  assert set(train) == set(examples.FEATURES)
  assert len(train["user_id"]) == report.splits["train"]["rows"]
  assert train["stay"].dtype == np.float32 and train["click"].dtype == np.int64
  merged = pd.DataFrame(train).merge(log, on=["user_id", "video_id", "time_ms"])
  assert len(merged) == len(train["user_id"])
  np.testing.assert_array_equal(merged["click"], merged["is_click"])
  np.testing.assert_array_equal(merged["like"], merged["is_like"])
  np.testing.assert_array_equal(merged["hour"], merged["hourmin"] // 100)


def test_split_boundaries():
  data = config_lib.DataConfig()
  days = np.array([day_of(d) for d in ("2022-04-24", "2022-04-25", "2022-05-04",
                                       "2022-05-05", "2022-05-06", "2022-05-07")])
  assert list(split.assign(days, data)) == [
      "out_of_window", "train", "train", "eval", "eval", "out_of_window"]
  with pytest.raises(config_lib.ConfigError, match="splits must satisfy"):
    config_lib.Config().replace(**{"data.eval_start": "2022-05-04"})


def test_prepared_splits_never_share_a_day(prepared):
  out, _ = prepared
  train = examples.read_examples(contracts.split_file(out, "train"))
  evaluation = examples.read_examples(contracts.split_file(out, "eval"))
  assert train["day"].max() == day_of("2022-05-04")
  assert evaluation["day"].min() == day_of("2022-05-05")
  assert evaluation["day"].max() == day_of("2022-05-06")


def test_label_derivation():
  log = pd.DataFrame({"is_click": [1, 0, 1], "long_view": [0, 0, 1], "is_like": [0, 0, 1],
                      "play_time_ms": [2999, 3000, 60000]})
  derived = labels.derive(log, skip_threshold_ms=3000)
  assert tuple(derived) == labels.TASKS
  assert list(derived["click"]) == [1, 0, 1] and list(derived["like"]) == [0, 0, 1]
  assert list(derived["long_view"]) == [0, 0, 1]
  assert list(derived["skip"]) == [1, 0, 0]
  np.testing.assert_allclose(derived["stay"], np.log1p([2.999, 3.0, 60.0]), rtol=1e-6)
  assert list(labels.derive(log, skip_threshold_ms=5000)["skip"]) == [1, 1, 0]


def test_vocabularies_from_training_only_and_oov():
  train = pd.DataFrame({"user_id": [1, 2, 2], "video_id": [10, 11, 10], "tab": [1, 1, 4]})
  users = pd.DataFrame({"user_id": [1, 2, 3, 4],
                        **{c: [5.0, 50.0, 500.0, 1e9] for c in vocab.USER_COUNTS},
                        **{c: ["a", "b", "c", "z"] for c in vocab.USER_CATEGORICAL}})
  videos = pd.DataFrame({"video_id": [10, 11, 12, 99], "author_id": [7, 8, 7, 9],
                         "music_id": [3, 3, 4, 5], "tag": ["5,6", "6", None, "9"],
                         "video_duration": [1e4, np.nan, 3e4, 4e4],
                         "server_width": [720.0] * 4, "server_height": [1280.0] * 4,
                         "upload_dt": ["2022-04-01"] * 4,
                         **{c: ["x", "y", "x", "w"] for c in ("video_type", "upload_type",
                                                             "visible_status", "music_type")}})
  history = pd.DataFrame({"user_id": [3], "day": [5], "watch": [[12]], "like": [[]],
                          "long_view": [[12]]})
  arrays = vocab.build(train, users, videos, history, train_start_day=day_of("2022-04-25"))
  # Pre-period history ids are in; ids seen only outside training (user 4, video 99) are not.
  assert list(vocab.index(arrays, "user", [1, 2, 3, 4, 77])) == [1, 2, 3, 0, 0]
  assert list(vocab.index(arrays, "video", [10, 11, 12, 99])) == [1, 2, 3, 0]
  assert list(arrays["tab/ids"]) == [1, 4]
  assert list(arrays["author/ids"]) == [7, 8] and list(arrays["tag/ids"]) == [5, 6]
  # Row 0 is OOV: zero features; links of video 12 (no tag) -> tag OOV.
  assert not arrays["user/dense"][0].any() and not arrays["user/categorical"][0].any()
  assert list(arrays["video/tag"]) == [0, 1, 2, 0]
  assert list(arrays["video/author"]) == [0, 1, 2, 1]
  # Statistics come from the vocabulary rows only: user 4's 1e9 does not shift them.
  np.testing.assert_allclose(arrays["user/dense"][1:].mean(axis=0), 0, atol=1e-6)
  # Categorical codes: training values only ("z" of user 4 is not a category).
  assert list(arrays["user/categorical_sizes"])[0] == 4
  assert arrays["video/dense"][2, list(vocab.VIDEO_DENSE).index("duration_missing")] > 0


def test_node_tables_follow_the_documented_format(prepared):
  out, report = prepared
  arrays = node_tables.load_arrays(os.path.join(out, contracts.NODE_TABLES_FILE))
  for ns in node_tables.NODE_SETS + node_tables.CONTEXT_VOCABULARIES:
    ids = arrays[f"{ns}/ids"]
    assert ids.dtype == np.int64 and (np.diff(ids) > 0).all()
    assert report.node_tables[ns] == len(ids)
  for ns in ("user", "video"):
    n = len(arrays[f"{ns}/ids"]) + 1
    assert arrays[f"{ns}/dense"].shape == (n, len(arrays[f"{ns}/dense_names"]))
    assert arrays[f"{ns}/dense"].dtype == np.float32
    codes = arrays[f"{ns}/categorical"]
    assert codes.shape == (n, len(arrays[f"{ns}/categorical_names"]))
    assert ((codes >= 0) & (codes < arrays[f"{ns}/categorical_sizes"])).all()
  for link in node_tables.VIDEO_LINKS:
    index = arrays[f"video/{link}"]
    assert index.shape == (len(arrays["video/ids"]) + 1,)
    assert index.max() <= len(arrays[f"{link}/ids"]) and index[0] == 0


def test_report_counts_add_up_with_out_of_window_rows(raw_dir, tmp_path):
  config = config_lib.Config().replace(**{"data.train_start": "2022-04-27",
                                          "data.eval_end": "2022-05-05"})
  report = prepare.prepare(config, raw_dir, str(tmp_path))
  assert report.out_of_window > 0
  assert report.rows_in == report.rows_out + report.quarantined + report.out_of_window
  saved = prepare.PrepareReport.load(str(tmp_path / contracts.PREPARE_REPORT_FILE))
  assert saved == report
  for name in ("Split-train", "Split-eval"):
    assert os.path.isfile(tmp_path / name / "data_tfrecord-00000-of-00001.gz")


BAD_LINES = {
    "wrong column count": "1,2,20220425",
    "non-numeric id": "abc,5,20220425,100,1650816300000,1,0,0,0,0,0,1,20000,30000,0,0,0,0,1",
    "missing label": "1,5,20220425,100,1650816300000,,0,0,0,0,0,1,20000,30000,0,0,0,0,1",
    "bad date": "1,5,20221345,100,1650816300000,1,0,0,0,0,0,1,20000,30000,0,0,0,0,1",
    "bad label": "1,5,20220425,100,1650816300000,7,0,0,0,0,0,1,20000,30000,0,0,0,0,1",
}


def test_each_malformed_row_is_quarantined_with_reason_and_line(raw_dir, tmp_path):
  data = _copy(raw_dir, tmp_path)
  log_path = os.path.join(data, LOG_NAME)
  _append(log_path, list(BAD_LINES.values()))
  config = config_lib.Config().replace(**{"data.max_bad_fraction": 0.5})
  report = prepare.prepare(config, data, str(tmp_path / "out"))
  with open(tmp_path / "out" / contracts.QUARANTINE_FILE) as f:
    rows = list(csv.DictReader(f))
  assert [r["reason"].split(":")[0] for r in rows] == list(BAD_LINES)
  first_bad_line = TINY.impressions + 2  # header + every generated row before
  assert [int(r["line"]) for r in rows] == list(range(first_bad_line,
                                                     first_bad_line + len(BAD_LINES)))
  assert [r["raw"] for r in rows] == list(BAD_LINES.values())
  assert {r["file"] for r in rows} == {LOG_NAME}
  assert rows[1]["reason"] == "non-numeric id: user_id=abc"
  assert report.quarantined == len(BAD_LINES)
  assert report.rows_in == TINY.impressions + len(BAD_LINES)
  assert report.rows_in == report.rows_out + report.quarantined + report.out_of_window
  assert report.files[0]["reasons"] == {reason: 1 for reason in BAD_LINES}


def test_too_many_bad_rows_fail_naming_the_file(raw_dir, tmp_path):
  data = _copy(raw_dir, tmp_path)
  _append(os.path.join(data, kuairand.VIDEO_FEATURES), ["x,1,NORMAL"] * 5)
  config = config_lib.Config().replace(**{"data.max_bad_fraction": 0.01})
  with pytest.raises(kuairand.DataError,
                     match=r"video_features_basic_pure.csv: 5 of 95 rows .*quarantine\.csv"):
    prepare.prepare(config, data, str(tmp_path / "out"))
  assert os.path.isfile(tmp_path / "out" / contracts.QUARANTINE_FILE)


def test_missing_file_and_column_are_named(raw_dir, tmp_path):
  data = _copy(raw_dir, tmp_path)
  os.remove(os.path.join(data, kuairand.USER_FEATURES))
  os.remove(os.path.join(data, LOG_NAME))
  with pytest.raises(kuairand.DataError,
                     match=r"missing log_standard_\*\.csv, user_features_pure\.csv$"):
    kuairand.discover(data)
  data = _copy(raw_dir, tmp_path / "second")
  path = os.path.join(data, kuairand.VIDEO_FEATURES)
  pd.read_csv(path).drop(columns=["tag", "music_id"]).to_csv(path, index=False)
  with pytest.raises(kuairand.DataError, match=r"video_features_basic_pure.csv: missing "
                     r"column\(s\) music_id, tag"):
    prepare.prepare(config_lib.Config(), data, str(tmp_path / "out"))
  with pytest.raises(kuairand.DataError, match="does not exist"):
    kuairand.discover(str(tmp_path / "nowhere"))


def test_optional_history_absent_gives_empty_frame(raw_dir, tmp_path):
  data = _copy(raw_dir, tmp_path)
  for name in os.listdir(data):
    if name.startswith("user_history_before_"):
      os.remove(os.path.join(data, name))
  history = kuairand.read_user_history(data)
  assert len(history) == 0
  assert list(history.columns) == ["user_id", "day", "watch", "like", "long_view"]
  report = prepare.prepare(config_lib.Config(), data, str(tmp_path / "out"))
  assert report.rows_out == TINY.impressions


def test_prepare_hands_the_validated_history_to_the_graph_builder(raw_dir, prepared):
  """history.npz holds one (user, video, day) row per listed history video."""
  out, _ = prepared
  saved = history_lib.load(os.path.join(out, contracts.HISTORY_FILE))
  frame = kuairand.read_user_history(raw_dir)
  lists = [w + l + v for w, l, v in zip(frame["watch"], frame["like"], frame["long_view"])]
  expected = sorted((u, v, d) for u, d, videos in zip(frame["user_id"], frame["day"], lists)
                    for v in videos)
  assert expected  # the synthetic history is not empty
  assert sorted(zip(*(saved[c].tolist() for c in history_lib.COLUMNS))) == expected


def test_schema_file_matches_the_feature_spec():
  schema = text_format.Parse(open(contracts.EXAMPLES_SCHEMA_PATH).read(), schema_pb2.Schema())
  types = {f.name: f.type for f in schema.feature}
  assert tuple(types) == examples.FEATURES
  spec = examples.feature_spec()
  for name, feature_type in types.items():
    expected = schema_pb2.FLOAT if spec[name].dtype.name == "float32" else schema_pb2.INT
    assert feature_type == expected, name


def test_prepare_command_generates_synthetic_data_when_no_directory_given(tmp_path):
  config = config_lib.Config().replace(synthetic=TINY)
  args = argparse.Namespace(data="synthetic", out=str(tmp_path))
  assert prepare.command(args, config) == 0
  assert os.path.isfile(tmp_path / "raw" / LOG_NAME)
  report = prepare.PrepareReport.load(str(tmp_path / contracts.PREPARE_REPORT_FILE))
  assert report.rows_in == TINY.impressions and report.quarantined == 0


def test_duplicate_ids_and_empty_files(raw_dir, tmp_path):
  data = _copy(raw_dir, tmp_path)
  path = os.path.join(data, kuairand.VIDEO_FEATURES)
  with open(path) as f:
    first_row = f.read().splitlines()[1]
  _append(path, [first_row])
  quarantine = kuairand.Quarantine()
  videos, stats = kuairand.read_table(path, kuairand.VIDEO_SPEC, quarantine)
  assert (stats.rows_in, stats.rows_out, stats.quarantined) == (TINY.videos + 1,
                                                               TINY.videos, 1)
  assert quarantine.rows == [(kuairand.VIDEO_FEATURES, TINY.videos + 2,
                              "duplicate id: video_id=0", first_row)]
  header_only = tmp_path / "empty.csv"
  header_only.write_text(",".join(kuairand.VIDEO_COLUMNS) + "\n")
  empty, stats = kuairand.read_table(str(header_only), kuairand.VIDEO_SPEC, quarantine)
  assert len(empty) == 0 and stats.rows_in == 0


def test_reads_several_logs_and_the_random_log_only_on_request(raw_dir, tmp_path):
  """The full release has several log_standard files and a log_random file."""
  data = _copy(raw_dir, tmp_path)
  log = pd.read_csv(os.path.join(data, LOG_NAME))
  os.remove(os.path.join(data, LOG_NAME))
  early = log["date"] <= 20220430
  log[early].to_csv(os.path.join(data, "log_standard_4_25_to_4_30_pure.csv"), index=False)
  log[~early].to_csv(os.path.join(data, "log_standard_5_01_to_5_06_pure.csv"), index=False)
  log.head(100).assign(is_rand=1).to_csv(
      os.path.join(data, "log_random_4_25_to_5_06_pure.csv"), index=False)
  layout = kuairand.discover(data)
  assert [os.path.basename(p) for p in layout.logs] == [
      "log_standard_4_25_to_4_30_pure.csv", "log_standard_5_01_to_5_06_pure.csv"]
  report = prepare.prepare(config_lib.Config(), data, str(tmp_path / "standard"))
  assert report.rows_in == report.rows_out == len(log)
  assert [f["file"] for f in report.files[:2]] == [os.path.basename(p) for p in layout.logs]
  with_random = prepare.prepare(
      config_lib.Config().replace(**{"data.include_random_log": True}), data,
      str(tmp_path / "random"))
  assert with_random.rows_out == len(log) + 100
