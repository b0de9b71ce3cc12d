"""The prepare step: validate the logs, split by date, derive labels, write examples.

Output (the TFX `Examples` artifact layout, see docs/ARCHITECTURE.md):

  <out>/Split-train/data_tfrecord-00000-of-00001.gz
  <out>/Split-eval/data_tfrecord-00000-of-00001.gz
  <out>/node_tables.npz        vocabularies + side features from the training split
  <out>/history.npz            the validated pre-period history (datasets/history.py)
  <out>/prepare_report.json    rows in / out / quarantined per file, step and split
  <out>/quarantine.csv         every malformed row with file, line, reason, raw text

File names are those of `e2e_grec.contracts`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from typing import Any

import numpy as np
import pandas as pd

from e2e_grec import contracts
from e2e_grec.config import Config
from e2e_grec.datasets import examples, history as history_lib, kuairand, labels
from e2e_grec.datasets import node_tables, split, vocab
from e2e_grec.datasets.dates import date_of, day_of


@dataclasses.dataclass
class PrepareReport:
  """What `prepare` read, kept and dropped; `rows_in` of the logs always equals
  `rows_out + quarantined + out_of_window`."""
  data_dir: str
  out_dir: str
  rows_in: int
  rows_out: int
  quarantined: int
  out_of_window: int
  files: list[dict[str, Any]]
  splits: dict[str, dict[str, Any]]
  node_tables: dict[str, int]
  seconds: float

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2)

  @classmethod
  def load(cls, path: str) -> "PrepareReport":
    with open(path) as f:
      return cls(**json.load(f))


def _split_summary(rows: pd.DataFrame, task_labels: dict[str, np.ndarray],
                   arrays: dict[str, np.ndarray]) -> dict[str, Any]:
  days = rows["day"].to_numpy()
  summary: dict[str, Any] = {"rows": int(len(rows))}
  if len(rows):
    summary["first_day"] = str(date_of(days.min()))
    summary["last_day"] = str(date_of(days.max()))
    summary["positive_rate"] = {t: round(float(task_labels[t].mean()), 4)
                                for t in labels.BINARY_TASKS}
    summary["mean_stay"] = round(float(task_labels["stay"].mean()), 4)
    summary["oov_rate"] = {
        ns: round(float((vocab.index(arrays, ns, rows[column].to_numpy()) == 0).mean()), 4)
        for ns, column in (("user", "user_id"), ("video", "video_id"), ("tab", "tab"))}
  return summary


def prepare(config: Config, data_dir: str, out_dir: str) -> PrepareReport:
  """Turns a KuaiRand-Pure directory into examples, node tables and a report."""
  start = time.time()
  data = config.data
  layout = kuairand.discover(data_dir)
  os.makedirs(out_dir, exist_ok=True)
  quarantine = kuairand.Quarantine()
  quarantine_path = os.path.join(out_dir, contracts.QUARANTINE_FILE)
  try:
    log_paths = layout.logs + (layout.random_logs if data.include_random_log else ())
    if layout.random_logs and not data.include_random_log:
      logging.info("ignoring %d random-exposure log(s); set data.include_random_log=true "
                   "to add them", len(layout.random_logs))
    log, log_stats = kuairand.read_logs(log_paths, quarantine, data.max_rows)
    users, user_stats = kuairand.read_table(layout.user_features, kuairand.USER_SPEC,
                                            quarantine)
    videos, video_stats = kuairand.read_table(layout.video_features,
                                              kuairand.VIDEO_SPEC, quarantine)
    history, history_stats = kuairand.read_history(layout.user_history, quarantine)
  finally:
    quarantine.write(quarantine_path)
  all_stats = log_stats + [user_stats, video_stats] + history_stats
  for stats in all_stats:
    kuairand.check_bad_fraction(stats, data.max_bad_fraction, quarantine_path)

  names = split.assign(log["day"].to_numpy(), data)
  task_labels = labels.derive(log, data.skip_threshold_ms)
  train_rows = log[names == "train"]
  if not len(train_rows):
    raise kuairand.DataError(
        f"no log rows of {data_dir} fall in the training window "
        f"{data.train_start}..{data.train_end}; the logs cover "
        f"{_date_range(log)} (set data.train_start/train_end)")
  arrays = vocab.build(train_rows, users, videos, history, day_of(data.train_start))
  node_tables.save_arrays(os.path.join(out_dir, contracts.NODE_TABLES_FILE), arrays)
  history_lib.save(os.path.join(out_dir, contracts.HISTORY_FILE), history)

  splits = {}
  for name in contracts.SPLITS:
    mask = names == name
    rows = log[mask]
    split_labels = {t: v[mask] for t, v in task_labels.items()}
    columns = {f: rows[f].to_numpy() for f in contracts.ID_FEATURES + contracts.CONTEXT_FEATURES}
    logging.info("writing %d %s examples", len(rows), name)
    examples.write(contracts.split_file(out_dir, name), {**columns, **split_labels})
    splits[name] = _split_summary(rows, split_labels, arrays)
  out_of_window = int((names == split.OUT_OF_WINDOW).sum())
  log_in = sum(s.rows_in for s in log_stats)
  log_quarantined = sum(s.quarantined for s in log_stats)
  report = PrepareReport(
      data_dir=os.path.abspath(data_dir), out_dir=os.path.abspath(out_dir),
      rows_in=log_in, rows_out=sum(s["rows"] for s in splits.values()),
      quarantined=log_quarantined, out_of_window=out_of_window,
      files=[dataclasses.asdict(s) for s in all_stats], splits=splits,
      node_tables=vocab.sizes(arrays), seconds=round(time.time() - start, 2))
  with open(os.path.join(out_dir, contracts.PREPARE_REPORT_FILE), "w") as f:
    f.write(report.to_json())
  logging.info("prepared %s: %d log rows in, %d examples out (train %d, eval %d), "
               "%d quarantined, %d out of window, %.1f s", data_dir, report.rows_in,
               report.rows_out, splits["train"]["rows"], splits["eval"]["rows"],
               report.quarantined, report.out_of_window, report.seconds)
  return report


def _date_range(log: pd.DataFrame) -> str:
  if not len(log):
    return "no valid rows"
  days = log["day"].to_numpy()
  return f"{date_of(days.min())}..{date_of(days.max())}"


def command(args: argparse.Namespace, config: Config) -> int:
  """`e2e-grec prepare`: --data DIR|synthetic (default config.data.data_dir) --out DIR."""
  data_dir = args.data or config.data.data_dir
  if not data_dir or data_dir == "synthetic":
    from e2e_grec.datasets import synthetic
    data_dir = os.path.join(args.out, "raw")
    logging.info("no data directory given: generating synthetic data in %s", data_dir)
    synthetic.generate(config.synthetic, data_dir)
  prepare(config, data_dir, args.out)
  return 0
