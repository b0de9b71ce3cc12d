"""Training cost: examples/s per mode side by side, where a step's time goes, and wall time to the best metric.

    python -m benchmarks.bench_training_cost [--examples EX --graph GRAPH] \
        [--set section.key=value ...] [--runs runs/experiments/runs]

The config is the DEFAULT one (plus `--set` overrides, recorded in the JSON).

1. Throughput, measured in this process one mode after the other on the same
   data: after warm-up (tracing), `--steps` training steps with the input
   pipeline (sampler or embedding cache) running as in training. Reported as
   examples/s and as cost per example relative to no_graph (target: e2e <= 2.5x).
2. Profile: the seconds per batch of each part of a step, measured apart on
   the same batches held in memory: input (sampling or cache lookup, the
   tf.data pipeline alone), forward (losses without GFAE), backward (gradients
   and the optimizer update), GFAE (its masks, decoder and their gradients)
   and GradNorm's extra per-loss backward passes (amortised over
   `train.gradnorm_every_steps`). Each is the difference between two step
   variants (GradNorm vs fixed weights, with vs without GFAE, step vs forward
   only), so shares are of their sum; input overlaps compute in training.
3. Wall time to the best eval mean GAUC, from finished runs' metrics.json
   (`--runs`, e.g. the experiments' runs/): e2e's whole run against
   two_stage's pretrain + full-graph embedding inference + ranker training.
   `--train-runs DIR` first trains e2e and two_stage at this benchmark's
   config into DIR/<mode>_seed0 (a finished run is reused, a killed one resumes).

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

from benchmarks import inputs as bench_inputs
from benchmarks.experiments import RESULTS_DIR
from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.models import modes, two_stage
from e2e_grec.models.e2e_grec import E2EGRec
from e2e_grec.training import inputs as inputs_lib
from e2e_grec.training import run as run_lib

MODES = ("no_graph", "two_stage", "e2e")
PARTS = ("input", "forward", "backward", "gfae", "gradnorm")


def _seconds_per_call(fn, batches: list, warmup: int) -> float:
  for b in batches[:warmup]:
    fn(b)
  start = time.perf_counter()
  for b in batches[warmup:]:
    result = fn(b)
  tf.nest.map_structure(lambda t: t.numpy(), result)
  return (time.perf_counter() - start) / (len(batches) - warmup)


def _session(config: config_lib.Config, examples: str, graph: str):
  """The model and training batches of one config, as training builds them."""
  provider = inputs_lib.Inputs.from_dirs(config, examples, graph)
  mode = modes.of(config)
  if mode.reads_precomputed:
    # Ranker training reads cached embeddings; the cache's cost is in part 3.
    keys = {ns: np.zeros([1], np.int64) for ns in ("user", "video")}
    values = {ns: np.zeros([1, config.model.gnn_hidden_dim], np.float32)
              for ns in ("user", "video")}
    provider.use_cache(two_stage.EmbeddingCache(keys, values).lookup_fn(provider.tables))
  model = E2EGRec(provider.tables, config)
  model.compile(optimizer=tf.keras.optimizers.Adam(config.train.learning_rate))
  return model, provider


def throughput(config: config_lib.Config, examples: str, graph: str, steps: int,
               warmup: int) -> dict:
  model, provider = _session(config, examples, graph)
  ds = provider.train(0)
  step = tf.function(model.train_step, input_signature=[ds.element_spec])
  it = iter(ds.repeat())
  for _ in range(warmup):
    step(next(it))
  start, n = time.perf_counter(), 0
  for _ in range(steps):
    batch = next(it)
    step(batch)
    n += int(tf.shape(batch["user_id"])[0])
  rate = n / (time.perf_counter() - start)
  logging.info("%s: %.0f examples/s", config.model.mode, rate)
  return {"examples_per_s": rate, "steps": steps, "batch_size": config.train.batch_size}


def profile(config: config_lib.Config, examples: str, graph: str, steps: int,
            warmup: int) -> dict:
  """Seconds per batch of each part of a training step (see the module doc)."""
  def variant(**overrides):
    return _session(config.replace(**overrides), examples, graph)

  model, provider = _session(config, examples, graph)
  ds = provider.train(0).repeat()
  it = iter(ds)
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  batches = [next(it) for _ in range(steps)]
  input_s = (time.perf_counter() - start) / steps
  batches = [next(it) for _ in range(warmup)] + batches
  spec = ds.element_spec

  def train_step_s(m) -> float:
    return _seconds_per_call(tf.function(m.train_step, input_signature=[spec]), batches,
                             warmup)

  balanced = config.train.loss_balancer == "gradnorm"
  with_gfae = modes.of(config).trains_gfae(config.model)
  full = train_step_s(model)
  fixed, _ = variant(**{"train.loss_balancer": "fixed"}) if balanced else (model, None)
  no_gradnorm = train_step_s(fixed) if balanced else full
  plain, _ = (variant(**{"train.loss_balancer": "fixed", "model.gfae": False})
              if with_gfae else (fixed, None))
  no_gfae = train_step_s(plain) if with_gfae else no_gradnorm
  forward = _seconds_per_call(
      tf.function(lambda b: plain.compute_losses(b, training=True), input_signature=[spec]),
      batches, warmup)
  seconds = {"input": input_s, "forward": forward, "backward": no_gfae - forward,
             "gfae": no_gradnorm - no_gfae, "gradnorm": full - no_gradnorm}
  total = sum(seconds.values())
  logging.info("%s profile (s/batch): %s", config.model.mode,
               {k: round(v, 4) for k, v in seconds.items()})
  return {"seconds_per_batch": seconds, "share": {k: v / total for k, v in seconds.items()},
          "train_step_s": full}


def wall_times(runs_dir: str) -> dict:
  out = {}
  for mode in ("e2e", "two_stage"):
    found = []
    # <runs>/<mode>/<run>/: the layout of `benchmarks.experiments`' runs/ and of --train-runs.
    for path in sorted(glob.glob(os.path.join(runs_dir, mode, "*", contracts.RUN_METRICS_FILE))):
      with open(path) as f:
        m = json.load(f)
      found.append({k: m.get(k) for k in ("time_to_best_s", "best_mean_gauc", "pretrain_s",
                                           "precompute_s", "train_s", "wall_s")})
    if found:
      # Median: one run slowed down by other work on the machine must not decide it.
      out[mode] = {"runs": found, "median_time_to_best_s":
                   float(np.median([r["time_to_best_s"] for r in found]))}
  return out


def train_runs(config: config_lib.Config, examples: str, graph: str, runs_dir: str) -> None:
  """Trains e2e and two_stage at `config` into runs_dir/<mode>_seed<seed> (for part 3)."""
  for mode in ("e2e", "two_stage"):
    out = os.path.join(runs_dir, mode, f"seed{config.train.seed}")
    if not os.path.exists(os.path.join(out, contracts.RUN_METRICS_FILE)):
      run_lib.run(config.replace(**{"model.mode": mode}), examples, graph, out)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  bench_inputs.add_arguments(parser, "bench_training_cost")
  parser.add_argument("--set", action="append", default=[], dest="overrides",
                      help="Config override on top of the defaults, e.g. sampling.fanouts=[5].")
  parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
  parser.add_argument("--runs", help="experiments work dir's runs/ (for wall times)")
  parser.add_argument("--train-runs", help="train e2e and two_stage here first (for wall times)")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--no-profile", dest="profile", action="store_false")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  base = config_lib.load(None, args.overrides)
  examples, graph = bench_inputs.prepared(args, base)
  result = {"config": list(args.overrides), "throughput": {}, "profile": {}}
  for mode in args.modes:
    config = base.replace(**{"model.mode": mode})
    result["throughput"][mode] = throughput(config, examples, graph, args.steps, args.warmup)
    if args.profile:
      result["profile"][mode] = profile(config, examples, graph, args.steps, args.warmup)
  reference = result["throughput"].get("no_graph", {}).get("examples_per_s")
  for t in result["throughput"].values():
    t["cost_per_example_vs_no_graph"] = reference / t["examples_per_s"] if reference else None
  if args.train_runs:
    train_runs(base, examples, graph, args.train_runs)
  runs_dir = args.train_runs or args.runs
  result["wall_time_to_best"] = wall_times(runs_dir) if runs_dir else {}
  os.makedirs(RESULTS_DIR, exist_ok=True)
  with open(os.path.join(RESULTS_DIR, "bench_training_cost.json"), "w") as f:
    json.dump(result, f, indent=2)
  print("| mode | examples/s | cost per example vs no_graph | "
        + " | ".join(f"{p} share" for p in PARTS) + " |")
  print("|---|---|---|" + "---|" * len(PARTS))
  for mode, t in result["throughput"].items():
    shares = result["profile"].get(mode, {}).get("share", {})
    cost = t["cost_per_example_vs_no_graph"]
    print(f"| {mode} | {t['examples_per_s']:.0f} | "
          + (f"{cost:.2f}x" if cost else "-") + " | "
          + " | ".join(f"{shares[p]:.0%}" if p in shares else "-" for p in PARTS) + " |")
  for mode, w in result.get("wall_time_to_best", {}).items():
    print(f"{mode}: median wall time to best eval mean GAUC {w['median_time_to_best_s']:.0f}s")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
