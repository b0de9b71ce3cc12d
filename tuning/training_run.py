"""One `e2e-grec train` run in its own process, keyed by its resolved config.

The search and the results table (`benchmarks/experiments.py`) both drive
training through the command line, the interface that stays stable while the
trainer changes: a run is `--config` + `--set` overrides, its output is
`metrics.json`. A run's directory is named by a digest of the resolved config,
so rerunning the same config reuses a finished run or resumes a killed one
from its checkpoints, and a changed default never reuses a stale run.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from typing import Callable, Sequence

from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.datasets.labels import BINARY_TASKS

# The eval metrics that tables and searches report, as keys of metrics.json.
HEADLINE_METRICS = ("mean_gauc", "mean_auc", *(f"{t}/gauc" for t in BINARY_TASKS),
                    *(f"{t}/auc" for t in BINARY_TASKS), "stay/rmse", "train_examples_per_s",
                    "time_to_best_s")
METRICS_FILE = contracts.RUN_METRICS_FILE
# The trainer appends one JSON object per log step; eval rows carry this key.
TRAIN_LOG = contracts.RUN_LOG_FILE
EVAL_KEY = "eval/mean_gauc"


class TrainingFailed(RuntimeError):
  """The training process exited with an error; its log says why."""


def run_dir(root: str, config_path: str | None, overrides: Sequence[str]) -> str:
  """`root/<digest of the resolved config>`: equal configs share a directory."""
  resolved = config_lib.load(config_path, overrides).to_yaml()
  return os.path.join(root, hashlib.sha1(resolved.encode()).hexdigest()[:12])


def cli_command(*args: str) -> list[str]:
  """`e2e-grec ARGS` with this interpreter (and so this checkout of the package)."""
  return [sys.executable, "-m", "e2e_grec.cli", *args]


def train_command(examples: str, graph: str, out: str, config_path: str | None,
                  overrides: Sequence[str]) -> list[str]:
  args = cli_command("train", "--examples", examples, "--graph", graph, "--out", out)
  if config_path:
    args += ["--config", config_path]
  for override in overrides:
    args += ["--set", override]
  return args


def read_evals(out: str) -> list[float]:
  """Eval mean GAUC after each epoch so far, from the run's train log."""
  path = os.path.join(out, TRAIN_LOG)
  if not os.path.exists(path):
    return []
  by_step = {}
  with open(path) as f:
    for line in f:
      record = json.loads(line) if line.strip() else {}
      if EVAL_KEY in record:
        by_step[record["step"]] = record[EVAL_KEY]
  return [by_step[s] for s in sorted(by_step)]


def run_training(examples: str, graph: str, out: str, *, config_path: str | None = None,
                 overrides: Sequence[str] = (),
                 on_eval: Callable[[int, float], None] | None = None,
                 poll_seconds: float = 5.0) -> dict:
  """Trains in a child process (unless `out` holds a finished run); returns its metrics.

  `on_eval(epoch, mean_gauc)` is called once per new epoch eval while the
  child runs; if it raises (e.g. `optuna.TrialPruned`), the child is stopped
  and the exception propagates. The child's output goes to `out/train.log`.
  """
  metrics_path = os.path.join(out, METRICS_FILE)
  if not os.path.exists(metrics_path):
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(out, "train.log")
    with open(log_path, "a") as log:
      child = subprocess.Popen(train_command(examples, graph, out, config_path, overrides),
                               stdout=log, stderr=subprocess.STDOUT)
      reported = 0
      try:
        while child.poll() is None:
          try:
            child.wait(timeout=poll_seconds)
          except subprocess.TimeoutExpired:
            evals = read_evals(out)
            for epoch in range(reported + 1, len(evals) + 1):
              reported = epoch
              if on_eval is not None:
                on_eval(epoch, evals[epoch - 1])
      finally:
        if child.poll() is None:
          child.terminate()
          child.wait()
    if child.returncode != 0:
      raise TrainingFailed(f"training in {out} exited with code {child.returncode}; "
                           f"see {log_path}")
  with open(metrics_path) as f:
    return json.load(f)
