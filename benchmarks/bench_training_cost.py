"""Training cost: examples/s per mode side by side, and wall time to the best metric.

    python -m benchmarks.bench_training_cost --examples EX --graph GRAPH \
        [--runs runs/experiments/runs]

1. Throughput, measured in this process one variant after the other on the
   same data and config (`benchmarks.experiments.BASE`): after warm-up (tracing),
   `--steps` training steps with the input pipeline (sampler or embedding
   cache) running as in `train()`. Reported as examples/s and as cost per
   example relative to no_graph (target: e2e <= 2.5x).
2. Wall time to the best eval mean GAUC, from the experiment runs' metrics.json
   (`--runs`): e2e's whole run against two_stage's pretrain + full-graph
   embedding inference + ranker training (both include process start-up work
   such as loading the data).

Writes benchmarks/results/bench_training_cost.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import time

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import tensorflow as tf

from benchmarks.experiments import BASE, RESULTS_DIR
from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.models import train as train_lib
from e2e_grec.models import two_stage
from e2e_grec.models.e2e_grec import E2EGRec

# name -> overrides on top of `BASE`; the first is the reference.
VARIANTS = {
    "no_graph": ("model.mode=no_graph",),
    "two_stage": ("model.mode=two_stage",),
    "e2e": ("model.mode=e2e",),
    "e2e (GradNorm every step)": ("model.mode=e2e", "train.gradnorm_every_steps=1"),
    "e2e (fixed weights)": ("model.mode=e2e", "train.loss_balancer=fixed"),
}


def throughput(name: str, examples: str, graph: str, steps: int, warmup: int) -> dict:
  config = config_lib.load(None, [*BASE, *VARIANTS[name]])
  mode = config.model.mode
  tables = NodeTables.load(os.path.join(examples, contracts.NODE_TABLES_FILE))
  cols = train_lib.load_split(examples, "train")
  sampler = train_lib.make_sampler(config, graph, tables) \
      if mode != "no_graph" else None
  inputs = train_lib.Inputs(config, cols, cols, sampler, tables)
  model = E2EGRec(tables, config)
  model.compile(optimizer=tf.keras.optimizers.Adam(config.train.learning_rate))
  if mode == "two_stage":
    # Ranker training reads cached embeddings; the cache's cost is in part 2.
    keys = {ns: np.zeros([1], np.int64) for ns in ("user", "video")}
    dim = config.model.gnn_hidden_dim
    values = {ns: np.zeros([1, dim], np.float32) for ns in ("user", "video")}
    inputs.cache_fn = two_stage.EmbeddingCache(keys, values).lookup_fn(tables)
  ds = inputs.train(0)
  step = tf.function(model.train_step, input_signature=[ds.element_spec])
  it = iter(ds.repeat())
  for _ in range(warmup):
    step(next(it))
  start, n = time.time(), 0
  for _ in range(steps):
    batch = next(it)
    step(batch)
    n += int(tf.shape(batch["user_id"])[0])
  rate = n / (time.time() - start)
  logging.info("%s: %.0f examples/s", name, rate)
  return {"examples_per_s": rate, "steps": steps, "batch_size": config.train.batch_size}


def wall_times(runs_dir: str) -> dict:
  out = {}
  for mode in ("e2e", "two_stage"):
    found = []
    for path in sorted(glob.glob(os.path.join(runs_dir, f"{mode}_seed*", contracts.RUN_METRICS_FILE))):
      with open(path) as f:
        m = json.load(f)
      found.append({k: m.get(k) for k in ("time_to_best_s", "best_mean_gauc", "pretrain_s",
                                           "precompute_s", "train_s", "wall_s")})
    if found:
      # Median: one run slowed down by other work on the machine must not decide it.
      out[mode] = {"runs": found, "median_time_to_best_s":
                   float(np.median([r["time_to_best_s"] for r in found]))}
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--examples", required=True)
  parser.add_argument("--graph", required=True)
  parser.add_argument("--runs", help="experiments work dir's runs/ (for wall times)")
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--warmup", type=int, default=3)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  result = {"config": list(BASE), "throughput": {}}
  for name in VARIANTS:
    result["throughput"][name] = throughput(name, args.examples, args.graph, args.steps,
                                            args.warmup)
  base = result["throughput"]["no_graph"]["examples_per_s"]
  for t in result["throughput"].values():
    t["cost_per_example_vs_no_graph"] = base / t["examples_per_s"]
  if args.runs:
    result["wall_time_to_best"] = wall_times(args.runs)
  os.makedirs(RESULTS_DIR, exist_ok=True)
  with open(os.path.join(RESULTS_DIR, "bench_training_cost.json"), "w") as f:
    json.dump(result, f, indent=2)
  print("| mode | examples/s | cost per example vs no_graph |")
  print("|---|---|---|")
  for name, t in result["throughput"].items():
    print(f"| {name} | {t['examples_per_s']:.0f} | {t['cost_per_example_vs_no_graph']:.2f}x |")
  for mode, w in result.get("wall_time_to_best", {}).items():
    print(f"{mode}: median wall time to best eval mean GAUC {w['median_time_to_best_s']:.0f}s")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
