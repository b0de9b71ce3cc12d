"""The results table: baselines, E2E-GRec and its ablations over several seeds.

    python -m benchmarks.experiments --data ../shared/data/kuairand_pure --seeds 0 1 2

Prepares the data and builds the graph once under `--work` (or reuses
`--examples` / `--graph`), then trains every experiment for every seed at the
shipped config (`configs/default.yaml`, or `--config`) with only the
experiment's own overrides, the seeds and any `--set` on top, each run in its
own process (`e2e-grec train`), and writes `benchmarks/results/experiments.json`
and `experiments.md`: mean +- std over seeds of the mean GAUC / AUC over the
binary tasks, per-task GAUC and AUC, stay RMSE of the exported model (each task
from the eval `export.task_selection` picks), and a second table of what every
selection policy would score. `base_overrides` in the JSON
is the `--set` list: empty means the table is the shipped config's.

Resumable per (experiment, seed): a run's directory is named by its resolved
config, so a rerun reuses finished runs, resumes killed ones from their
checkpoints, and never reuses a run of a different config. Only the eval
window (the temporal split of `DataConfig`) is ever used to compare settings.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np

from e2e_grec import contracts
from e2e_grec.datasets.labels import BINARY_TASKS
from e2e_grec.tuning import training_run

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

EXPERIMENTS: dict[str, tuple[str, ...]] = {
    "e2e": ("model.mode=e2e",),
    "no_graph": ("model.mode=no_graph",),
    "two_stage": ("model.mode=two_stage",),
    "e2e_no_gfae": ("model.mode=e2e", "model.gfae=false"),
    "e2e_fixed_weights": ("model.mode=e2e", "train.loss_balancer=fixed"),
    "e2e_fusion_level1_only": ("model.mode=e2e", "model.fusion_level2=false"),
    "e2e_fusion_level2_only": ("model.mode=e2e", "model.fusion_level1=false"),
}


def prepare_inputs(data: str, work: str) -> tuple[str, str]:
  examples, graph = os.path.join(work, "examples"), os.path.join(work, "graph")
  if not os.path.exists(os.path.join(examples, contracts.NODE_TABLES_FILE)):
    subprocess.run(training_run.cli_command("prepare", "--data", data, "--out", examples),
                   check=True)
  if not os.path.exists(os.path.join(graph, contracts.SAMPLING_INDEX_FILE)):
    subprocess.run(training_run.cli_command("build-graph", "--examples", examples,
                                            "--out", graph), check=True)
  return examples, graph


def run_one(name: str, seed: int, examples: str, graph: str, work: str,
            config_path: str | None, extra: list[str], train: bool = True) -> dict | None:
  """The run's metrics, training it first if needed (`train=False`: None if unfinished)."""
  overrides = [*EXPERIMENTS[name], f"train.seed={seed}", f"sampling.seed={seed}", *extra]
  out = training_run.run_dir(os.path.join(work, "runs", name), config_path, overrides)
  if not train and not os.path.exists(os.path.join(out, contracts.RUN_METRICS_FILE)):
    logging.info("%s seed %d: not run yet (%s)", name, seed, out)
    return None
  logging.info("%s seed %d: %s", name, seed, out)
  started = time.time()
  try:
    metrics = training_run.run_training(examples, graph, out, config_path=config_path,
                                        overrides=overrides)
  except training_run.TrainingFailed as e:
    logging.error("%s seed %d failed: %s", name, seed, e)
    return None
  logging.info("%s seed %d: %.0fs", name, seed, time.time() - started)
  return metrics


def _mean_std(runs: list[dict], keys) -> dict:
  """Key -> mean and std over the runs that report it."""
  out = {}
  for k in keys:
    values = np.array([r[k] for r in runs if r.get(k) is not None], np.float64)
    if values.size:
      out[k] = {"mean": float(values.mean()), "std": float(values.std())}
  return out


def summarise(results: dict[str, list[dict]]) -> dict:
  """Per experiment: the headline metrics of the exported models over seeds,
  and under `task_selection` what each `export.task_selection` policy scores."""
  summary = {}
  for name, runs in results.items():
    if not runs:
      continue
    summary[name] = {"seeds": len(runs),
                     **_mean_std(runs, training_run.HEADLINE_METRICS)}
    policies = [r["task_selection"] for r in runs if "task_selection" in r]
    if policies:
      summary[name]["task_selection"] = {
          policy: _mean_std([p[policy] for p in policies], SELECTION_METRICS)
          for policy in policies[0]}
  return summary


# What the task selection table compares (keys of each policy's metrics).
SELECTION_METRICS = ("mean_gauc", "mean_auc", *(f"{t}/gauc" for t in BINARY_TASKS),
                     "stay/rmse")


def markdown(summary: dict) -> str:
  def cell(stats, key, digits=4):
    if key not in stats:
      return "n/a"
    return f"{stats[key]['mean']:.{digits}f} ± {stats[key]['std']:.{digits}f}"

  head = ["experiment", "seeds", "mean GAUC", "mean AUC"] + \
      [f"{t} GAUC" for t in BINARY_TASKS] + ["stay RMSE", "train ex/s", "wall s to best"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, stats in summary.items():
    row = [name, str(stats["seeds"]), cell(stats, "mean_gauc"), cell(stats, "mean_auc")]
    row += [cell(stats, f"{t}/gauc") for t in BINARY_TASKS]
    row += [cell(stats, "stay/rmse"), cell(stats, "train_examples_per_s", 0),
            cell(stats, "time_to_best_s", 0)]
    lines.append("| " + " | ".join(row) + " |")
  head = ["experiment", "export.task_selection", "mean GAUC", "mean AUC"] + \
      [f"{t} GAUC" for t in BINARY_TASKS] + ["stay RMSE"]
  lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, stats in summary.items():
    for policy, metrics in stats.get("task_selection", {}).items():
      row = [name, policy] + [cell(metrics, k) for k in SELECTION_METRICS]
      lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", help="KuaiRand-Pure directory (default: the shared copy).")
  parser.add_argument("--examples", help="Reuse this `prepare` output.")
  parser.add_argument("--graph", help="Reuse this `build-graph` output.")
  parser.add_argument("--work", default="runs/experiments", help="Where runs are kept.")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS),
                      default=list(EXPERIMENTS))
  parser.add_argument("--config", help="Config file of every run (default: the shipped one).")
  parser.add_argument("--set", action="append", default=[],
                      help="Extra config override for every run (recorded as base_overrides).")
  parser.add_argument("--results", default=RESULTS_DIR, help="Where the tables go.")
  parser.add_argument("--summarize-only", action="store_true",
                      help="Train nothing: tabulate the runs already finished under --work.")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  os.makedirs(os.path.join(args.work, "runs"), exist_ok=True)
  if args.examples and args.graph:
    examples, graph = args.examples, args.graph
  else:
    import e2e_grec  # noqa: F401
    from e2e_grec import config as config_lib
    data = args.data or config_lib.default_shared_data_dir()
    if not data:
      parser.error("no --data given and the shared KuaiRand copy is not present")
    examples, graph = prepare_inputs(data, args.work)
  results: dict[str, list[dict]] = {name: [] for name in args.only}
  os.makedirs(args.results, exist_ok=True)
  for seed in args.seeds:
    for name in args.only:
      metrics = run_one(name, seed, examples, graph, args.work, args.config, args.set,
                        train=not args.summarize_only)
      if metrics is not None:
        results[name].append(metrics)
      summary = summarise(results)
      with open(os.path.join(args.results, "experiments.json"), "w") as f:
        json.dump({"config": args.config, "base_overrides": args.set, "experiments":
                   {k: list(v) for k, v in EXPERIMENTS.items()}, "seeds": args.seeds,
                   "summary": summary,
                   "runs": {k: [{m: r[m] for m in r if m != "history"} for r in v]
                            for k, v in results.items()}}, f, indent=2)
      with open(os.path.join(args.results, "experiments.md"), "w") as f:
        f.write(markdown(summary))
  print(markdown(summarise(results)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
