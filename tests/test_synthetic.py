"""The synthetic generator: layout and columns of the real files, determinism, signal."""
import argparse
import csv
import dataclasses
import filecmp
import os

import e2e_grec  # noqa: F401
import numpy as np
import pandas as pd
import pytest

from e2e_grec import config as config_lib
from e2e_grec.datasets import kuairand, synthetic
from e2e_grec.datasets.dates import day_of, day_of_ms

SMALL = config_lib.SyntheticConfig(users=600, videos=400, authors=80, tags=30, musics=60,
                                   impressions=20000, history_length=20, seed=1)
LOG_NAME = "log_standard_4_25_to_5_06_pure.csv"
HISTORY_NAME = "user_history_before_4_25.csv"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[str, dict]:
  out = str(tmp_path_factory.mktemp("synthetic"))
  return out, synthetic.generate(SMALL, out)


def _header(path: str) -> list[str]:
  with open(path, newline="") as f:
    return next(csv.reader(f))


def test_writes_the_kuairand_pure_layout(generated):
  out, result = generated
  assert sorted(result["files"]) == sorted([LOG_NAME, kuairand.USER_FEATURES,
                                            kuairand.VIDEO_FEATURES, HISTORY_NAME])
  layout = kuairand.discover(out)
  assert [os.path.basename(p) for p in layout.logs] == [LOG_NAME]
  expected = {LOG_NAME: kuairand.LOG_COLUMNS,
              kuairand.USER_FEATURES: kuairand.USER_COLUMNS,
              kuairand.VIDEO_FEATURES: kuairand.VIDEO_COLUMNS,
              HISTORY_NAME: kuairand.HISTORY_COLUMNS}
  for name, columns in expected.items():
    assert _header(os.path.join(out, name)) == list(columns), name
  assert result["rows"][LOG_NAME] == SMALL.impressions


def test_columns_equal_the_real_files(generated, kuairand_dir):
  out, _ = generated
  real = {os.path.basename(p): p for p in
          [os.path.join(kuairand_dir, n) for n in os.listdir(kuairand_dir)]}
  pairs = {LOG_NAME: "log_standard_4_25_to_5_06_pure.csv",
           kuairand.USER_FEATURES: kuairand.USER_FEATURES,
           kuairand.VIDEO_FEATURES: kuairand.VIDEO_FEATURES,
           HISTORY_NAME: "user_history_before_4_25.csv"}
  for ours, theirs in pairs.items():
    assert _header(os.path.join(out, ours)) == _header(real[theirs]), ours


def test_is_deterministic_under_the_seed(generated, tmp_path):
  out, result = generated
  again = synthetic.generate(SMALL, str(tmp_path / "again"))
  for name, path in result["files"].items():
    assert filecmp.cmp(path, again["files"][name], shallow=False), name
  other = synthetic.generate(dataclasses.replace(SMALL, seed=2), str(tmp_path / "other"))
  assert not filecmp.cmp(result["files"][LOG_NAME], other["files"][LOG_NAME],
                         shallow=False)


def test_reads_back_without_quarantine(generated):
  out, _ = generated
  quarantine = kuairand.Quarantine()
  layout = kuairand.discover(out)
  log, _ = kuairand.read_logs(layout.logs, quarantine)
  kuairand.read_table(layout.user_features, kuairand.USER_SPEC, quarantine)
  kuairand.read_table(layout.video_features, kuairand.VIDEO_SPEC, quarantine)
  kuairand.read_history(layout.user_history, quarantine)
  assert not quarantine.rows
  assert log["day"].min() == day_of(SMALL.start_date)
  assert log["day"].max() == day_of(SMALL.start_date) + SMALL.days - 1
  # `date` and the timestamp agree (China Standard Time), hour and hourmin too.
  np.testing.assert_array_equal(day_of_ms(log["time_ms"].to_numpy()), log["day"])
  assert (log["time_ms"].diff().dropna() >= 0).all()


def test_rates_match_the_real_data(generated):
  out, _ = generated
  log = pd.read_csv(os.path.join(out, LOG_NAME))
  assert 0.40 < log["is_click"].mean() < 0.48
  assert 0.26 < log["long_view"].mean() < 0.36
  assert 0.010 < log["is_like"].mean() < 0.025
  assert 0.37 < (log["play_time_ms"] < 3000).mean() < 0.47
  # A long view implies a click almost always, as in KuaiRand.
  assert log.loc[log["long_view"] == 1, "is_click"].mean() > 0.95


def test_popularity_and_activity_are_skewed(generated):
  out, _ = generated
  log = pd.read_csv(os.path.join(out, LOG_NAME))
  per_video = log["video_id"].value_counts().to_numpy()
  top_decile = per_video[: max(1, len(per_video) // 10)].sum() / per_video.sum()
  assert top_decile > 0.3
  per_user = log["user_id"].value_counts()
  assert per_user.max() > 5 * per_user.median()
  assert log["tab"].value_counts().idxmax() == 1  # the main feed, as in KuaiRand


def test_history_precedes_the_log_and_is_consistent(generated):
  out, _ = generated
  history = kuairand.read_user_history(out)
  assert (history["day"] < day_of(SMALL.start_date)).all()
  assert history["watch"].map(len).max() <= SMALL.history_length
  assert all(set(like) <= set(watch) for like, watch in zip(history["like"], history["watch"]))
  assert all(set(lv) <= set(watch) for lv, watch in zip(history["long_view"], history["watch"]))


def test_graph_structure_carries_signal(generated):
  """Engagement is higher with authors a user watched before (a 2-hop graph path)."""
  out, _ = generated
  log = pd.read_csv(os.path.join(out, LOG_NAME))
  videos = pd.read_csv(os.path.join(out, kuairand.VIDEO_FEATURES))
  author_of = videos.set_index("video_id")["author_id"]
  history = kuairand.read_user_history(out)
  seen = {(u, a) for u, watch in zip(history["user_id"], history["long_view"])
          for a in author_of.reindex(watch).dropna().astype(int)}
  known = np.array([(u, a) in seen for u, a in
                    zip(log["user_id"], author_of.reindex(log["video_id"]).to_numpy())])
  assert known.mean() > 0.05
  lift = log["long_view"][known].mean() / log["long_view"][~known].mean()
  assert lift > 1.3


def test_generate_command(tmp_path):
  config = config_lib.Config().replace(synthetic=dataclasses.replace(SMALL, impressions=500))
  assert synthetic.command(argparse.Namespace(out=str(tmp_path)), config) == 0
  assert os.path.isfile(tmp_path / LOG_NAME)
