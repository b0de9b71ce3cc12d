"""What a run leaves behind as it goes: logged scalars and the eval history.

Both are append-only files, so they survive any number of kills and resumes;
everything derived from them (best epoch, time to best, the weights plot) is
recomputed from the whole file, never from what one process saw.
"""
from __future__ import annotations

import json
import math
import os

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import matplotlib
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the backend)

from e2e_grec import contracts  # noqa: E402

LOG_FILE = contracts.RUN_LOG_FILE
EVAL_HISTORY_FILE = contracts.RUN_EVAL_HISTORY_FILE
# What `tf.summary.scalar` writes, without needing the tensorboard package
# installed: TensorBoard's scalars plugin reads these events.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    # A kill mid-write leaves at most one partial last line: skip it.
    records = []
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
    return records


def _append_jsonl(path: str, record: dict) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


class RunLog:
  """Scalars to TensorBoard and train_log.jsonl (appended across resumes)."""

  def __init__(self, out_dir: str):
    self._writer = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard"))
    self._path = os.path.join(out_dir, LOG_FILE)

  def write(self, step: int, values: dict) -> None:
    plain = {k: float(np.asarray(v)) for k, v in values.items()}
    with self._writer.as_default(step=step):
      for k, v in plain.items():
        if math.isfinite(v):
          tf.summary.write(k, tf.constant(v, tf.float32), metadata=_SCALAR_METADATA)
    with open(self._path, "a") as f:
      f.write(json.dumps({"step": step, **plain}) + "\n")

  def records(self) -> list[dict]:
    return _read_jsonl(self._path)


class EvalHistory:
  """Every evaluation of the run, one JSON line each, kept across resumes.

  A record holds the eval metrics, `step`, `epoch` and `wall_s` (the run's
  accumulated wall time, see `loop.Trainer`). A step evaluated twice (a kill
  between the eval and the next checkpoint) counts once: the last record wins.
  """

  def __init__(self, out_dir: str):
    self.directory = out_dir
    self._path = os.path.join(out_dir, EVAL_HISTORY_FILE)

  def append(self, record: dict) -> None:
    _append_jsonl(self._path, record)

  def records(self) -> list[dict]:
    by_step = {r["step"]: r for r in _read_jsonl(self._path)}
    return [by_step[s] for s in sorted(by_step)]

  def evaluated_steps(self) -> set[int]:
    return {r["step"] for r in self.records()}

  def summary(self) -> dict:
    """The last eval's metrics plus best_mean_gauc, best_epoch, time_to_best_s, history."""
    history = self.records()
    if not history:
      raise ValueError(f"{self._path}: no evaluation recorded")
    best = max(history, key=lambda r: r["mean_gauc"]
               if not math.isnan(r["mean_gauc"]) else -math.inf)
    return {**history[-1], "best_mean_gauc": best["mean_gauc"], "best_epoch": best["epoch"],
            "time_to_best_s": best["wall_s"], "history": history}


def plot_weights(records: list[dict], path: str) -> None:
  """The loss weights over training (GradNorm's, or constant ones)."""
  names = sorted({k for r in records for k in r if k.startswith("weight/")})
  fig, ax = plt.subplots(figsize=(7, 4))
  for name in names:
    points = [(r["step"], r[name]) for r in records if name in r]
    ax.plot([p[0] for p in points], [p[1] for p in points], label=name.split("/", 1)[1])
  ax.set_xlabel("step")
  ax.set_ylabel("loss weight")
  ax.set_title("Loss weights over training")
  if names:
    ax.legend(loc="best", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
