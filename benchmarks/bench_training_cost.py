"""Training cost: examples/s per mode side by side, where a step's time goes, and wall time to the best metric.

    python -m benchmarks.bench_training_cost [--examples EX --graph GRAPH] \
        [--set section.key=value ...] [--runs runs/experiments/runs]

The config is the DEFAULT one (plus `--set` overrides, recorded in the JSON).

1. Throughput, measured in this process one mode after the other on the same
   data: after warm-up (tracing), `--steps` training steps with the input
   pipeline (sampler or embedding cache) running as in training. Reported as
   examples/s of wall time and of process CPU time (all threads, tf.data's
   included), each also as cost per example relative to no_graph (target:
   e2e <= 2.5x). On a shared machine the CPU-time figure is the stable one:
   wall time also counts other processes' turns on the cores.
2. Profile: the CPU seconds per batch of each part of a step, on the same
   batches held in memory: input (sampling or cache lookup, the tf.data
   pipeline alone), forward (losses without GFAE), backward (gradients and
   the optimizer update), GFAE (its masks, decoder and their gradients) and
   GradNorm's extra per-loss backward passes (amortised over
   `train.gradnorm_every_steps`). Each is the difference between two step
   variants (GradNorm vs fixed weights, with vs without GFAE, step vs forward
   only), as means, since GradNorm's passes come every few steps. The
   variants take turns batch by batch, so a burst of load hits them all
   alike (timed one variant after the other under load, GradNorm once came
   out at 30% and GFAE at 0%; interleaved, about 6% and a third). Shares are
   of the parts' sum; input overlaps compute in training.
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


def _interleaved_cpu_seconds(fns: dict, batches: list, warmup: int) -> dict[str, float]:
  """Mean process CPU seconds per call of each fn, the fns taking turns on every batch."""
  for fn in fns.values():
    for b in batches[:warmup]:
      tf.nest.map_structure(lambda t: t.numpy(), fn(b))
  seconds = {name: [] for name in fns}
  for b in batches[warmup:]:
    for name, fn in fns.items():
      start = time.process_time()
      tf.nest.map_structure(lambda t: t.numpy(), fn(b))
      seconds[name].append(time.process_time() - start)
  return {name: float(np.mean(s)) for name, s in seconds.items()}


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
  start, cpu_start, n = time.perf_counter(), time.process_time(), 0
  for _ in range(steps):
    batch = next(it)
    step(batch)["loss"].numpy()
    n += int(tf.shape(batch["user_id"])[0])
  rate, cpu_rate = n / (time.perf_counter() - start), n / (time.process_time() - cpu_start)
  logging.info("%s: %.0f examples/s, %.0f examples per CPU second", config.model.mode, rate,
               cpu_rate)
  return {"examples_per_s": rate, "examples_per_cpu_s": cpu_rate, "steps": steps,
          "batch_size": config.train.batch_size}


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
  start = time.process_time()
  batches = [next(it) for _ in range(steps)]
  input_s = (time.process_time() - start) / steps
  batches = [next(it) for _ in range(warmup)] + batches
  spec = ds.element_spec
  train_step = lambda m: tf.function(m.train_step, input_signature=[spec])

  balanced = config.train.loss_balancer == "gradnorm"
  with_gfae = modes.of(config).trains_gfae(config.model)
  plain = (variant(**{"train.loss_balancer": "fixed", "model.gfae": False})[0]
           if balanced or with_gfae else model)
  fns = {"full": train_step(model), "no_gfae": train_step(plain),
         "forward": tf.function(lambda b: plain.compute_losses(b, training=True),
                                input_signature=[spec])}
  if balanced:
    fns["no_gradnorm"] = train_step(variant(**{"train.loss_balancer": "fixed"})[0])
  cpu = _interleaved_cpu_seconds(fns, batches, warmup)
  no_gradnorm = cpu.get("no_gradnorm", cpu["full"])
  seconds = {"input": input_s, "forward": cpu["forward"],
             "backward": cpu["no_gfae"] - cpu["forward"],
             "gfae": no_gradnorm - cpu["no_gfae"], "gradnorm": cpu["full"] - no_gradnorm}
  total = sum(seconds.values())
  logging.info("%s profile (CPU s/batch): %s", config.model.mode,
               {k: round(v, 4) for k, v in seconds.items()})
  return {"clock": "process CPU time", "seconds_per_batch": seconds,
          "share": {k: v / total for k, v in seconds.items()}, "train_step_s": cpu["full"]}


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
  reference_cpu = result["throughput"].get("no_graph", {}).get("examples_per_cpu_s")
  for t in result["throughput"].values():
    t["cost_per_example_vs_no_graph"] = reference / t["examples_per_s"] if reference else None
    t["cpu_cost_per_example_vs_no_graph"] = (reference_cpu / t["examples_per_cpu_s"]
                                             if reference_cpu else None)
  if args.train_runs:
    train_runs(base, examples, graph, args.train_runs)
  runs_dir = args.train_runs or args.runs
  result["wall_time_to_best"] = wall_times(runs_dir) if runs_dir else {}
  os.makedirs(RESULTS_DIR, exist_ok=True)
  with open(os.path.join(RESULTS_DIR, "bench_training_cost.json"), "w") as f:
    json.dump(result, f, indent=2)
  print("| mode | examples/s | cost per example vs no_graph | CPU cost vs no_graph | "
        + " | ".join(f"{p} share" for p in PARTS) + " |")
  print("|---|---|---|---|" + "---|" * len(PARTS))
  ratio = lambda r: f"{r:.2f}x" if r else "-"
  for mode, t in result["throughput"].items():
    shares = result["profile"].get(mode, {}).get("share", {})
    print(f"| {mode} | {t['examples_per_s']:.0f} | {ratio(t['cost_per_example_vs_no_graph'])} | "
          f"{ratio(t['cpu_cost_per_example_vs_no_graph'])} | "
          + " | ".join(f"{shares[p]:.0%}" if p in shares else "-" for p in PARTS) + " |")
  for mode, w in result.get("wall_time_to_best", {}).items():
    print(f"{mode}: median wall time to best eval mean GAUC {w['median_time_to_best_s']:.0f}s")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
