"""Synthetic logs in the KuaiRand-Pure file layout, with signal a graph model can find.

The generated world has co-watching communities: every user, author and video
belongs to one. Users see mostly their community's videos and their followed
authors' videos, and engage more with them; engagement also depends on latent
user/video factors, video popularity, the app surface (tab) and a user bias.
Popularity and activity are heavy-tailed. Positive rates are calibrated to the
real data (click ~0.44, long_view ~0.31, like ~0.017, ~42% plays under 3 s).
Everything is vectorised NumPy and deterministic under `SyntheticConfig.seed`.

Files (same names and columns as the official release):
  log_standard_<m>_<dd>_to_<m>_<dd>_pure.csv, user_features_pure.csv,
  video_features_basic_pure.csv, user_history_before_<m>_<dd>.csv
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import csv as pa_csv

from e2e_grec.config import Config, SyntheticConfig
from e2e_grec.datasets import kuairand
from e2e_grec.datasets.dates import date_of, day_of, ms_of_day

LATENT_DIM = 8
# Target rates of the real shared copy.
CLICK_RATE, LONG_VIEW_MS, LIKE_RATE, SKIP_RATE, SKIP_MS = 0.44, 18_000, 0.017, 0.42, 3_000
CLICK_GIVEN_SKIP = 0.03
RARE_FLAGS = {"is_follow": 0.0013, "is_comment": 0.0025, "is_forward": 0.0009,
              "is_hate": 0.0009, "is_profile_enter": 0.018}
# Hour-of-day weights: quiet nights, evening peak.
HOUR_WEIGHTS = np.array([4, 2, 1, 1, 1, 1, 2, 3, 4, 5, 5, 6, 7, 6, 6, 6, 6, 7, 8, 9, 10,
                         10, 9, 7], dtype=np.float64)
UPLOAD_TYPES = ("LongImport", "ShortImport", "Kmovie", "FollowShoot", "Web",
                "PhotoCopy", "LongPicture", "ShortPicture", "LipsSync", "Solitaire")
RESOLUTIONS = ((720.0, 1280.0), (1080.0, 1920.0), (960.0, 1280.0), (540.0, 960.0),
               (1280.0, 720.0), (720.0, 720.0))
ACTIVE_DEGREES = ("full_active", "high_active", "middle_active", "2_14_day_new",
                  "low_active", "UNKNOWN")
# (upper bounds, labels) of the *_range columns, as in the real file.
RANGES = {
    "follow_user_num": ((0, 10, 50, 100, 150, 250, 500),
                        ("0", "(0,10]", "(10,50]", "(50,100]", "(100,150]", "(150,250]",
                         "(250,500]", "500+")),
    "fans_user_num": ((0, 9, 99, 999, 4999, 9999),
                      ("0", "[1,10)", "[10,100)", "[100,1k)", "[1k,5k)", "[5k,1w)",
                       "[1w,10w)")),
    "friend_user_num": ((0, 4, 29, 59, 119, 249),
                        ("0", "[1,5)", "[5,30)", "[30,60)", "[60,120)", "[120,250)",
                         "250+")),
    "register_days": ((30, 60, 90, 180, 365, 730),
                      ("15-30", "31-60", "61-90", "91-180", "181-365", "366-730", "730+")),
}


@dataclasses.dataclass
class World:
  """Latent structure behind the logs."""
  user_community: np.ndarray
  user_factor: np.ndarray
  user_bias: np.ndarray
  user_activity: np.ndarray
  video_author: np.ndarray
  video_community: np.ndarray
  video_factor: np.ndarray
  video_popularity: np.ndarray
  video_duration_ms: np.ndarray
  tab_bias: np.ndarray
  tab_weights: np.ndarray
  follows: np.ndarray  # sorted keys user * authors + author


def _zipf(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
  """Heavy-tailed weights (rank^-exponent) in random order, summing to one."""
  weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
  return rng.permutation(weights / weights.sum())


def _lognormal_weights(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
  """Skewed weights with a bounded head (like per-user activity), summing to one."""
  weights = rng.lognormal(0.0, sigma, n)
  return weights / weights.sum()


def _grouped_sampler(groups: np.ndarray, weights: np.ndarray, num_groups: int):
  """Samples items of a given group in proportion to `weights`, vectorised.

  Items are laid out per group on [g, g + 1) by their normalised cumulative
  weight, so sampling in group g is one searchsorted of g + uniform.
  """
  order = np.argsort(groups, kind="stable")
  sorted_groups = groups[order]
  w = weights[order]
  totals = np.bincount(sorted_groups, weights=w, minlength=num_groups)
  cumulative = np.cumsum(w) - np.repeat(np.cumsum(totals) - totals,
                                        np.bincount(sorted_groups, minlength=num_groups))
  keys = sorted_groups + cumulative / totals[sorted_groups]
  has_items = np.bincount(sorted_groups, minlength=num_groups) > 0

  def sample(group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    position = np.searchsorted(keys, group + rng.random(group.shape) * (1 - 1e-12))
    return order[np.minimum(position, len(order) - 1)]

  return sample, has_items


def make_world(config: SyntheticConfig, rng: np.random.Generator) -> World:
  """Communities, latent factors, popularity, authorship and follows."""
  k = max(1, config.communities)
  centroids = rng.normal(size=(k, LATENT_DIM))
  user_community = rng.integers(0, k, config.users)
  author_community = rng.integers(0, k, config.authors)
  user_factor = 0.8 * centroids[user_community] + rng.normal(0, 0.6, (config.users, LATENT_DIM))
  author_factor = (0.8 * centroids[author_community]
                   + rng.normal(0, 0.6, (config.authors, LATENT_DIM)))
  video_author = rng.choice(config.authors, config.videos, p=_zipf(rng, config.authors, 1.0))
  video_factor = 0.7 * author_factor[video_author] + rng.normal(
      0, 0.5, (config.videos, LATENT_DIM))
  duration = np.clip(rng.lognormal(np.log(70_000), 0.9, config.videos), 5_000, 1_200_000)
  tab_weights = np.sort(_zipf(rng, config.tabs, 2.0))[::-1].copy()
  if config.tabs > 1:  # the main feed is tab 1, as in KuaiRand
    tab_weights[[0, 1]] = tab_weights[[1, 0]]
  # Follows: a few authors per user, mostly of the user's own community.
  follow_count = rng.poisson(3, config.users)
  follower = np.repeat(np.arange(config.users), follow_count)
  same = rng.random(len(follower)) < 0.8
  author_sampler, has_authors = _grouped_sampler(
      author_community, np.bincount(video_author, minlength=config.authors) + 1.0, k)
  own = np.where(has_authors[user_community[follower]],
                 author_sampler(user_community[follower], rng), 0)
  followed = np.where(same, own, rng.integers(0, config.authors, len(follower)))
  return World(
      user_community=user_community, user_factor=user_factor,
      user_bias=rng.normal(0, 0.5, config.users),
      user_activity=_lognormal_weights(rng, config.users, 0.9),
      video_author=video_author, video_community=author_community[video_author],
      video_factor=video_factor, video_popularity=_zipf(rng, config.videos, 0.85),
      video_duration_ms=np.round(duration),
      tab_bias=rng.normal(0, 0.8, config.tabs), tab_weights=tab_weights,
      follows=np.unique(follower.astype(np.int64) * config.authors + followed))


def _follows(world: World, config: SyntheticConfig, user: np.ndarray,
             author: np.ndarray) -> np.ndarray:
  key = user.astype(np.int64) * config.authors + author
  position = np.minimum(np.searchsorted(world.follows, key), len(world.follows) - 1)
  return (world.follows[position] == key) if len(world.follows) else np.zeros(len(key), bool)


def _pick_videos(world: World, config: SyntheticConfig, user: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
  """Exposure: global popularity, the user's community, or a followed author."""
  n = len(user)
  video = rng.choice(config.videos, n, p=world.video_popularity)
  k = max(1, config.communities)
  by_community, community_ok = _grouped_sampler(world.video_community,
                                                world.video_popularity, k)
  source = rng.random(n)
  community = world.user_community[user]
  use = (source < 0.4) & community_ok[community]
  video[use] = by_community(community[use], rng)
  # Followed authors: a random followed author of the user, then one of its videos.
  follow_user = world.follows // config.authors
  starts = np.searchsorted(follow_user, user)
  counts = np.searchsorted(follow_user, user, side="right") - starts
  by_author, author_ok = _grouped_sampler(world.video_author, world.video_popularity,
                                          config.authors)
  use = (source >= 0.4) & (source < 0.55) & (counts > 0)
  pick = starts[use] + (rng.random(use.sum()) * counts[use]).astype(np.int64)
  author = world.follows[pick] % config.authors
  chosen = by_author(author, rng)
  video[np.flatnonzero(use)[author_ok[author]]] = chosen[author_ok[author]]
  return video


def _outcomes(world: World, config: SyntheticConfig, user: np.ndarray, video: np.ndarray,
              tab: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Play time and flags from engagement = latent match + graph terms + biases."""
  n = len(user)
  match = np.einsum("ij,ij->i", world.user_factor[user], world.video_factor[video])
  graph = (1.0 * (world.user_community[user] == world.video_community[video])
           + 1.5 * _follows(world, config, user, world.video_author[video]))
  popularity = np.log(world.video_popularity[video] * config.videos)
  engagement = (0.7 * match / np.sqrt(LATENT_DIM) + config.graph_signal * graph
                + 0.3 * popularity + world.tab_bias[tab] + world.user_bias[user])
  noisy = engagement + rng.normal(0, 1.0, n)
  log_play = 1.2 * noisy + rng.normal(0, 0.7, n)
  log_play += np.log(SKIP_MS) - np.quantile(log_play, SKIP_RATE)
  duration = world.video_duration_ms[video]
  play = np.minimum(np.exp(log_play), duration * rng.uniform(1.0, 2.0, n))
  play = np.where(rng.random(n) < 0.01, 0.0, np.round(play)).astype(np.int64)
  skip = play < SKIP_MS
  long_view = play >= np.minimum(LONG_VIEW_MS, duration)
  # Click: implied by a long view, rare after a skip, else decided by engagement.
  middle = ~skip & ~long_view
  click_score = noisy + rng.logistic(0, 1.0, n)
  wanted = CLICK_RATE - long_view.mean() - CLICK_GIVEN_SKIP * skip.mean()
  share = np.clip(wanted / max(middle.mean(), 1e-9), 0, 1)
  threshold = np.quantile(click_score[middle], 1 - share) if middle.any() else np.inf
  click = long_view | (middle & (click_score > threshold)) | (
      skip & (rng.random(n) < CLICK_GIVEN_SKIP))
  like_score = noisy + 0.8 * graph + rng.normal(0, 0.7, n)
  outcome = {
      "is_click": click.astype(np.int64),
      "is_like": (like_score > np.quantile(like_score, 1 - LIKE_RATE)).astype(np.int64),
      "long_view": long_view.astype(np.int64),
      "play_time_ms": play,
      "duration_ms": duration.astype(np.int64),
  }
  for name, rate in RARE_FLAGS.items():
    score = noisy + rng.normal(0, 1.0, n)
    outcome[name] = (score > np.quantile(score, 1 - rate)).astype(np.int64)
  outcome["profile_stay_time"] = np.where(
      outcome["is_profile_enter"] == 1, rng.lognormal(9, 1, n), 0).astype(np.int64)
  outcome["comment_stay_time"] = np.where(
      rng.random(n) < 0.03, rng.lognormal(9, 1, n), 0).astype(np.int64)
  return outcome


def _impressions(world: World, config: SyntheticConfig, n: int, first_day: int,
                 days: int, rng: np.random.Generator,
                 users: np.ndarray | None = None,
                 order: tuple[str, ...] = ("time_ms",)) -> dict[str, np.ndarray]:
  """`n` log rows (the 19 official columns, int64) on days [first_day, first_day + days),
  sorted by the `order` columns."""
  user = users if users is not None else rng.choice(config.users, n, p=world.user_activity)
  tab = rng.choice(config.tabs, n, p=world.tab_weights)
  video = _pick_videos(world, config, user, rng)
  day_weights = 1.0 + 0.4 * ((np.arange(days) + 4) % 7 >= 5) + 0.2 * rng.random(days)
  day = first_day + rng.choice(days, n, p=day_weights / day_weights.sum())
  hour = rng.choice(24, n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
  time_ms = ms_of_day(day) + hour * 3_600_000 + rng.integers(0, 3_600_000, n)
  yyyymmdd = np.array([int(date_of(d).strftime("%Y%m%d"))
                       for d in range(first_day, first_day + days)], np.int64)
  date = yyyymmdd[day - first_day]
  outcome = _outcomes(world, config, user, video, tab, rng)
  columns = {"user_id": user, "video_id": video, "date": date, "hourmin": hour * 100,
             "time_ms": time_ms, **outcome, "is_rand": np.zeros(n, np.int64), "tab": tab}
  rows = np.lexsort([columns[c] for c in reversed(order)])
  return {c: np.asarray(columns[c], np.int64)[rows] for c in kuairand.LOG_COLUMNS}


def _bucket(values: np.ndarray, column: str) -> np.ndarray:
  bounds, labels = RANGES[column]
  return np.asarray(labels, dtype=object)[np.searchsorted(bounds, values, side="left")]


def _with_missing(values: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
  values = values.astype(np.float64)
  values[rng.random(len(values)) < rate] = np.nan
  return values


def _user_features(world: World, config: SyntheticConfig,
                   rng: np.random.Generator) -> pd.DataFrame:
  n = config.users
  activity_rank = np.argsort(np.argsort(-world.user_activity)) / max(1, n)
  degree = np.searchsorted([0.65, 0.87, 0.95, 0.98, 0.99], activity_rank, side="right")
  counts = {
      "follow_user_num": np.round(rng.lognormal(4.5, 1.5, n)).astype(np.int64),
      "fans_user_num": np.round(rng.lognormal(3.5, 1.8, n) * (rng.random(n) > 0.04)
                                ).astype(np.int64),
      "friend_user_num": np.round(rng.lognormal(2.0, 1.6, n) * (rng.random(n) > 0.12)
                                  ).astype(np.int64),
      "register_days": rng.integers(15, 2500, n),
  }
  frame = {
      "user_id": np.arange(n),
      "user_active_degree": np.asarray(ACTIVE_DEGREES, dtype=object)[degree],
      "is_lowactive_period": np.zeros(n, np.int64),
      "is_live_streamer": np.where(rng.random(n) < 0.23, 1, -124),
      "is_video_author": (rng.random(n) < 0.8).astype(np.int64),
  }
  for column, values in counts.items():
    frame[column] = values
    frame[f"{column}_range"] = _bucket(values, column)
  # Anonymised one-hot features; feat1 and feat9 carry community information.
  cardinality = (2, 7, 50, 1400, 15, 34, 3, 118, 454, 7, 5, 5, 2, 2, 2, 2, 2, 2)
  for i, size in enumerate(cardinality):
    values = rng.integers(0, size, n)
    if i in (1, 9):
      values = np.where(rng.random(n) < 0.6, world.user_community % size, values)
    frame[f"onehot_feat{i}"] = (_with_missing(values, 0.03, rng) if i == 4 or i >= 12
                                else values)
  return pd.DataFrame(frame)[list(kuairand.USER_COLUMNS)]


def _video_features(world: World, config: SyntheticConfig, start_day: int,
                    rng: np.random.Generator) -> pd.DataFrame:
  n = config.videos
  k = max(1, config.communities)
  # Tags: mostly one of the community's own tags, sometimes a second one.
  per_community = max(1, config.tags // k)
  own_tag = (world.video_community * per_community
             + rng.geometric(0.5, n) - 1) % config.tags
  primary = np.where(rng.random(n) < 0.75, own_tag,
                     rng.choice(config.tags, n, p=_zipf(rng, config.tags, 1.0)))
  secondary = rng.integers(0, config.tags, n)
  tag = np.where(rng.random(n) < 0.25,
                 pd.Series(primary).astype(str) + "," + pd.Series(secondary).astype(str),
                 pd.Series(primary).astype(str)).astype(object)
  tag[rng.random(n) < 0.01] = None
  upload_day = start_day - 1 - rng.geometric(0.15, n)
  resolution = np.asarray(RESOLUTIONS)[rng.integers(0, len(RESOLUTIONS), n)]
  frame = {
      "video_id": np.arange(n),
      "author_id": world.video_author,
      "video_type": np.where(rng.random(n) < 0.99, "NORMAL", "AD"),
      "upload_dt": [str(date_of(d)) for d in upload_day],
      "upload_type": np.asarray(UPLOAD_TYPES, dtype=object)[
          rng.choice(len(UPLOAD_TYPES), n, p=_zipf(rng, len(UPLOAD_TYPES), 1.2))],
      "visible_status": np.zeros(n, np.float64),
      "video_duration": _with_missing(world.video_duration_ms, 0.03, rng),
      "server_width": resolution[:, 0],
      "server_height": resolution[:, 1],
      "music_id": rng.choice(config.musics, n, p=_zipf(rng, config.musics, 1.0)),
      "music_type": _with_missing(rng.choice([4.0, 8.0, 9.0, 11.0], n,
                                             p=[0.1, 0.1, 0.75, 0.05]), 0.03, rng),
      "tag": tag,
  }
  return pd.DataFrame(frame)[list(kuairand.VIDEO_COLUMNS)]


def _history(world: World, config: SyntheticConfig, start_day: int,
             rng: np.random.Generator) -> pd.DataFrame:
  """Per user the last <= history_length pre-period watches, likes and long views."""
  has_history = rng.random(config.users) < 0.95
  length = np.minimum(config.history_length, 1 + rng.poisson(
      world.user_activity * config.users * config.history_length * 0.3))
  length = np.where(has_history, length, 0)
  users = np.repeat(np.arange(config.users), length)
  log = _impressions(world, config, len(users), start_day - 14, 14, rng, users=users,
                     order=("user_id", "time_ms"))
  watched = log["play_time_ms"] > 0
  user, video = log["user_id"][watched], log["video_id"][watched]
  newest = np.r_[user[1:] != user[:-1], True] if len(user) else np.zeros(0, bool)
  history = pd.DataFrame({"last_time_ms": log["time_ms"][watched][newest]},
                         index=user[newest])
  for column, keep in (("watch_seq", np.ones(len(user), bool)),
                       ("like_seq", log["is_like"][watched] == 1),
                       ("long_watch_seq", log["long_view"][watched] == 1)):
    history[column] = pd.Series(_joined(user[keep], video[keep]), dtype=object)
  return history.rename_axis("user_id").reset_index()[list(kuairand.HISTORY_COLUMNS)]


def _joined(user: np.ndarray, video: np.ndarray) -> dict[int, str]:
  """Space-joined video ids per user (rows already sorted by user, then time)."""
  if not len(user):
    return {}
  tokens = video.astype(str).tolist()
  starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
  ends = np.r_[starts[1:], len(user)]
  return {int(user[a]): " ".join(tokens[a:b]) for a, b in zip(starts, ends)}


def _stamp(day: int) -> str:
  date = date_of(day)
  return f"{date.month}_{date.day:02d}"


def _write_csv(path: str, table: pd.DataFrame) -> None:
  """pandas formatting (like the real files); Arrow's fast writer for all-int tables."""
  if not all(pd.api.types.is_integer_dtype(t) for t in table.dtypes):
    table.to_csv(path, index=False)
    return
  with open(path, "w") as f:
    f.write(",".join(table.columns) + "\n")
  with open(path, "ab") as f:
    pa_csv.write_csv(pa.Table.from_pandas(table, preserve_index=False), f,
                     write_options=pa_csv.WriteOptions(include_header=False))


def generate(config: SyntheticConfig, out_dir: str) -> dict:
  """Writes the four KuaiRand-Pure-layout CSV files; returns their paths and row counts."""
  started = time.time()
  rng = np.random.default_rng(config.seed)
  start_day = day_of(config.start_date)
  end_day = start_day + config.days - 1
  world = make_world(config, rng)
  log = pd.DataFrame(_impressions(world, config, config.impressions, start_day,
                                  config.days, rng))
  tables = {
      f"log_standard_{_stamp(start_day)}_to_{_stamp(end_day)}_pure.csv": log,
      kuairand.USER_FEATURES: _user_features(world, config, rng),
      kuairand.VIDEO_FEATURES: _video_features(world, config, start_day, rng),
      f"user_history_before_{_stamp(start_day)}.csv": _history(world, config, start_day, rng),
  }
  os.makedirs(out_dir, exist_ok=True)
  result = {"out_dir": os.path.abspath(out_dir), "files": {}, "rows": {}}
  for name, table in tables.items():
    path = os.path.join(out_dir, name)
    _write_csv(path, table)
    result["files"][name] = path
    result["rows"][name] = len(table)
  result["seconds"] = round(time.time() - started, 2)
  logging.info("generated %d impressions of %d users and %d videos in %s (%.1f s)",
               len(log), config.users, config.videos, out_dir, result["seconds"])
  return result


def command(args: argparse.Namespace, config: Config) -> int:
  """`e2e-grec generate --out DIR` with config.synthetic."""
  generate(config.synthetic, args.out)
  return 0
