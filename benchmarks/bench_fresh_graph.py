"""Fresh graph without retraining (issue 12): stale vs refreshed vs two-stage vs retrained.

    python -m benchmarks.bench_fresh_graph --data ../shared/data/kuairand_pure --seeds 0

Every model trains on 2022-04-25..05-02 except (d), and all are scored on the
eval window 05-05..05-06:

  (a) stale      e2e, graph through 05-02 (what it trained with)
  (b) refreshed  the same e2e weights, graph refreshed through 05-04
                 (`serving.graph_refresh.refresh_graph`: no training step)
  (c) two_stage  two_stage trained through 05-02, its refresh: the same graph
                 rebuild through 05-04, then every user's and video's embedding
                 recomputed (full-graph inference, what two-stage pays daily)
  (d) retrained  e2e trained through 05-04 (the upper bound)

Reported per arm: mean GAUC / AUC over the binary tasks, on all eval impressions
and on those whose user or video is new since 05-02 (not in the 05-02 model's
vocabulary), and for (b) and (c) the wall time of the refresh. Every (seed, arm)
writes `<work>/arms/seed<s>_<arm>.json`; a rerun skips finished ones, and
training runs resume from their checkpoints. Writes
`benchmarks/results/bench_fresh_graph.json` and `.md` (quoted by
`benchmarks.report`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import time

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np

from benchmarks import result_files
from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.datasets import prepare
from e2e_grec.datasets.dates import day_of
from e2e_grec.datasets.labels import BINARY_TASKS, REGRESSION_TASKS
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.graph import builder
from e2e_grec.graph.sampler import SubgraphSampler
from e2e_grec.graph.sampling_index import SamplingIndex
from e2e_grec.models import metrics as metrics_lib
from e2e_grec.models import two_stage
from e2e_grec.serving import graph_refresh
from e2e_grec.training import inputs as inputs_lib, loop, run as run_lib

STALE_END, FRESH_END = "2022-05-02", "2022-05-04"
# Every arm runs the default config (the experiment runner's CPU-sized
# settings); these of its keys are recorded with the results.
REPORTED_SETTINGS = ("train.batch_size", "train.epochs", "sampling.fanouts",
                     "model.gnn_layers", "model.gnn_hidden_dim",
                     "train.gradnorm_every_steps")
ARMS = ("stale", "refreshed", "two_stage", "retrained")


@dataclasses.dataclass(frozen=True)
class Inputs:
  """Prepared examples + graph of one training window."""
  config: config_lib.Config
  examples: str
  graph: str


def inputs_through(end: str, data: str, work: str) -> Inputs:
  """prepare + build-graph of the window 04-25..`end` (eval stays 05-05..05-06)."""
  config = config_lib.Config().replace(**{"data.data_dir": data, "data.train_end": end})
  examples, graph = (os.path.join(work, f"{what}_{end}") for what in ("examples", "graph"))
  if not os.path.exists(os.path.join(examples, contracts.PREPARE_REPORT_FILE)):
    prepare.prepare(config, data, examples)
  if not os.path.exists(os.path.join(graph, contracts.MANIFEST_FILE)):
    builder.build_graph(config, examples, graph)
  return Inputs(config, examples, graph)


def trained(inputs: Inputs, mode: str, seed: int, work: str) -> run_lib.RunResult:
  """Trains (or resumes, or re-evaluates a finished run) one model."""
  config = inputs.config.replace(**{"model.mode": mode, "train.seed": seed})
  run_dir = os.path.join(work, "runs", f"{mode}_{os.path.basename(inputs.examples)}_s{seed}")
  result = run_lib.run(config, inputs.examples, inputs.graph, run_dir)
  result.metrics["run_dir"] = run_dir
  return result


def scores(model, sampler, tables: NodeTables, config: config_lib.Config,
           eval_cols: dict, cache: two_stage.EmbeddingCache | None = None) -> dict:
  pipeline = inputs_lib.Inputs(config, eval_cols, eval_cols, sampler, tables)
  if cache is not None:
    pipeline.use_cache(cache.lookup_fn(tables))
  return loop.predict(model, pipeline.eval())


def quality(eval_cols: dict, predictions: dict, new: np.ndarray) -> dict:
  """Mean GAUC / AUC on every eval impression and on those with a new user or video."""
  out = {}
  for name, mask in (("all", np.ones_like(new)), ("new", new)):
    metrics = metrics_lib.evaluate(
        eval_cols["user_id"][mask], {k: v[mask] for k, v in eval_cols.items()},
        {k: v[mask] for k, v in predictions.items()}, BINARY_TASKS, REGRESSION_TASKS)
    out[name] = {"mean_gauc": metrics["mean_gauc"], "mean_auc": metrics["mean_auc"],
                 "examples": int(mask.sum())}
  return out


def two_stage_refresh(run_dir: str, data: str, work: str,
                      config: config_lib.Config) -> tuple[dict, dict]:
  """(c)'s refresh: the graph rebuild, then every user and video embedded anew.

  The embeddings are computed once, with cutoff FRESH_END + 1; the graph ends
  at FRESH_END, so they are also those of every later eval day.
  """
  started = time.time()
  model = graph_refresh.TrainedModel.load(run_dir)
  refreshed = graph_refresh.build_refreshed_graph(
      model, data, os.path.join(work, "examples"), os.path.join(work, "graph"), FRESH_END,
      config)
  graph_s = time.time() - started
  tables = NodeTables(refreshed.arrays)
  sampler = SubgraphSampler(SamplingIndex.load(refreshed.graph_dir), tables,
                            model.config.sampling)
  ranker = graph_refresh.transplant(model, refreshed.arrays, sampler)
  weights_s = time.time() - started - graph_s
  users, videos = refreshed.arrays["user/ids"], refreshed.arrays["video/ids"]
  cutoff = day_of(FRESH_END) + 1
  columns = [{"user_id": users, "video_id": -np.ones_like(users),
              "day": np.full_like(users, cutoff)},
             {"user_id": -np.ones_like(videos), "video_id": videos,
              "day": np.full_like(videos, cutoff)}]
  cache = two_stage.precompute(ranker, sampler, tables, columns,
                               model.config.train.batch_size)
  seconds = time.time() - started
  eval_days = range(cutoff, day_of(config.data.eval_end) + 1)
  keys, values = {}, {}
  for ns, k in cache.keys.items():  # Keyed node * DAY_RADIX + day, sorted.
    day_keys = np.concatenate([k + d - cutoff for d in eval_days])
    order = np.argsort(day_keys, kind="stable")
    keys[ns] = day_keys[order]
    values[ns] = np.concatenate([cache.values[ns] for _ in eval_days])[order]
  embedded = two_stage.EmbeddingCache(keys, values)
  return ({"model": ranker, "sampler": sampler, "tables": tables, "cache": embedded},
          {"refresh_s": round(seconds, 2),
           "phase_s": {"graph": round(graph_s, 2), "weights": round(weights_s, 2),
                       "embeddings": round(seconds - graph_s - weights_s, 2)},
           "embedded_nodes": int(len(users) + len(videos))})


def run_arms(seed: int, data: str, work: str, stale: Inputs, fresh: Inputs) -> None:
  arms_dir = os.path.join(work, "arms")
  os.makedirs(arms_dir, exist_ok=True)
  path = lambda arm: os.path.join(arms_dir, f"seed{seed}_{arm}.json")
  eval_cols = inputs_lib.load_split(stale.examples, contracts.EVAL_SPLIT)
  known = NodeTables.load(os.path.join(stale.examples, contracts.NODE_TABLES_FILE))
  new = np.zeros(len(eval_cols["user_id"]), bool)
  for ns in ("user", "video"):
    new |= known.lookup(ns, eval_cols[f"{ns}_id"]).numpy() == 0

  def record(arm: str, result: dict) -> None:
    result.update(arm=arm, seed=seed)
    with open(path(arm), "w") as f:
      json.dump(result, f, indent=2)
    logging.info("seed %d %s: %s", seed, arm, result)

  todo = [arm for arm in ARMS if not os.path.exists(path(arm))]
  if {"stale", "refreshed"} & set(todo):
    e2e = trained(stale, "e2e", seed, work)
    if "stale" in todo:
      record("stale", quality(eval_cols, scores(e2e.model, e2e.sampler, e2e.tables,
                                                stale.config, eval_cols), new))
    if "refreshed" in todo:
      serving = os.path.join(work, f"serving_s{seed}", "e2e_grec")
      shutil.rmtree(serving, ignore_errors=True)
      started = time.time()
      fresh_model = graph_refresh.refresh_graph(e2e.metrics["run_dir"], data, serving,
                                                stale.config, through=FRESH_END)
      seconds = time.time() - started
      result = quality(eval_cols, scores(fresh_model.model, fresh_model.sampler,
                                         fresh_model.tables, stale.config, eval_cols), new)
      result.update(refresh_s=round(seconds, 2), phase_s=fresh_model.report["phase_seconds"],
                    new_nodes=fresh_model.report["new_nodes"])
      record("refreshed", result)
  if "two_stage" in todo:
    run = trained(stale, "two_stage", seed, work)
    refresh_dir = os.path.join(work, f"two_stage_refresh_s{seed}")
    shutil.rmtree(refresh_dir, ignore_errors=True)
    parts, timing = two_stage_refresh(run.metrics["run_dir"], data, refresh_dir, stale.config)
    shutil.rmtree(refresh_dir, ignore_errors=True)
    result = quality(eval_cols, scores(parts["model"], parts["sampler"], parts["tables"],
                                       stale.config, eval_cols, parts["cache"]), new)
    result.update(timing)
    record("two_stage", result)
  if "retrained" in todo:
    run = trained(fresh, "e2e", seed, work)
    record("retrained", quality(eval_cols, scores(run.model, run.sampler, run.tables,
                                                  fresh.config, eval_cols), new))


def _mean_std(values: list[float]) -> dict:
  return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4),
          "n": len(values)}


def _settings() -> dict:
  values = config_lib.Config().to_dict()
  return {key: values[key.split(".")[0]][key.split(".")[1]] for key in REPORTED_SETTINGS}


def summarize(work: str, seeds: list[int]) -> dict:
  runs = {arm: [] for arm in ARMS}
  for seed in seeds:
    for arm in ARMS:
      path = os.path.join(work, "arms", f"seed{seed}_{arm}.json")
      if os.path.exists(path):
        with open(path) as f:
          runs[arm].append(json.load(f))
  arms = {}
  for arm, results in runs.items():
    if not results:
      continue
    arms[arm] = {"seeds": [r["seed"] for r in results],
                 "examples": results[0]["all"]["examples"],
                 "new_examples": results[0]["new"]["examples"],
                 **{f"{subset}_{metric}": _mean_std([r[subset][metric] for r in results])
                    for subset in ("all", "new") for metric in ("mean_gauc", "mean_auc")}}
    if "refresh_s" in results[0]:
      # Totals and phases over the same seeds: every timed result has both.
      missing = [r["seed"] for r in results if "phase_s" not in r]
      if missing:
        raise ValueError(f"{work}/arms: {arm} of seed(s) {missing} has no phase_s (written "
                         "by an older version of this benchmark); delete it and rerun")
      arms[arm]["refresh_s"] = _mean_std([r["refresh_s"] for r in results])
      arms[arm]["phase_s"] = {k: _mean_std([r["phase_s"][k] for r in results])
                              for k in results[0]["phase_s"]}
  return {"train_window": ["2022-04-25", STALE_END], "refresh_through": FRESH_END,
          "eval_window": ["2022-05-05", "2022-05-06"], "config": _settings(),
          "cpu_count": os.cpu_count(), "arms": arms, "checks": checks(arms)}


def checks(arms: dict) -> dict:
  """The issue's "must show" items, each as measured (None if an arm is missing)."""
  if not {"stale", "refreshed"} <= set(arms):
    return {}
  g = lambda arm, key="all_mean_gauc": arms[arm][key]["mean"]
  stats = [arms[arm]["all_mean_gauc"] for arm in ("stale", "refreshed")]
  # The spread needs two seeds per arm; with fewer the comparison is open.
  spread = max(s["std"] for s in stats) if min(s["n"] for s in stats) > 1 else None
  out = {"refreshed_minus_stale_gauc": round(g("refreshed") - g("stale"), 4),
         "seed_spread": spread,
         "refreshed_beats_stale_by_more_than_spread": (
             None if spread is None else g("refreshed") - g("stale") > spread),
         "refreshed_minus_stale_gauc_new": round(g("refreshed", "new_mean_gauc")
                                                 - g("stale", "new_mean_gauc"), 4)}
  if "retrained" in arms:
    gain = g("retrained") - g("stale")
    out["share_of_retraining_gain"] = (round((g("refreshed") - g("stale")) / gain, 3)
                                       if gain > 0 else None)
  if "two_stage" in arms:
    out["refresh_s_refreshed_vs_two_stage"] = [arms["refreshed"]["refresh_s"]["mean"],
                                               arms["two_stage"]["refresh_s"]["mean"]]
  return out


def markdown(summary: dict) -> str:
  labels = {"stale": "(a) e2e, graph through 05-02 (stale)",
            "refreshed": "(b) same weights, graph refreshed through 05-04",
            "two_stage": "(c) two_stage, embeddings recomputed through 05-04",
            "retrained": "(d) e2e retrained through 05-04"}
  fmt = lambda s: f"{s['mean']:.4f} ± {s['std']:.4f}"
  arms = summary["arms"]
  any_arm = next(iter(arms.values()), None)
  # `benchmarks.report` heads it with the command and the JSON it came from.
  lines = [
      f"Train 04-25..05-02 (except (d)), eval 05-05..05-06"
      + (f": {any_arm['examples']:,} impressions, {any_arm['new_examples']:,} of them with "
         "a user or video new since 05-02" if any_arm else "")
      + ". Config: `" + " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}"
                                 for k, v in summary["config"].items()) + "`.", "",
      "| arm | seeds | mean GAUC | mean AUC | mean GAUC, new user/video | mean AUC, new "
      "user/video | refresh wall s |",
      "|---|---|---|---|---|---|---|"]
  for arm in ARMS:
    if arm not in arms:
      lines.append(f"| {labels[arm]} | not run | | | | | |")
      continue
    a = arms[arm]
    refresh = (f"{a['refresh_s']['mean']:.0f} (graph {a['phase_s']['graph']['mean']:.0f})"
               if "refresh_s" in a else "")
    lines.append(f"| {labels[arm]} | {len(a['seeds'])} | {fmt(a['all_mean_gauc'])} | "
                 f"{fmt(a['all_mean_auc'])} | {fmt(a['new_mean_gauc'])} | "
                 f"{fmt(a['new_mean_auc'])} | {refresh} |")
  phases = [f"{labels[arm].split(' ')[0]} " + ", ".join(f"{k} {v['mean']:.0f} s" for k, v in
                                                       arms[arm]["phase_s"].items())
            for arm in ARMS if "phase_s" in arms.get(arm, {})]
  if phases:
    lines += ["", "Refresh phases (mean wall time): " + "; ".join(phases) + "."]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", default=config_lib.default_shared_data_dir(),
                      help="KuaiRand-Pure directory (default: the shared copy).")
  parser.add_argument("--work", default="/tmp/e2e_grec_bench_fresh_graph",
                      help="Prepared data, graphs, runs and per-arm results.")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  parser.add_argument("--summarize-only", action="store_true",
                      help="Only write the results from the finished arms under --work.")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  if not args.data:
    parser.error("no KuaiRand data: pass --data")
  if not args.summarize_only:
    stale = inputs_through(STALE_END, args.data, args.work)
    fresh = inputs_through(FRESH_END, args.data, args.work)
    for seed in args.seeds:
      run_arms(seed, args.data, args.work, stale, fresh)
  summary = summarize(args.work, args.seeds)
  result_files.write("bench_fresh_graph", summary, markdown(summary))
  print(markdown(summary))
  return summary


if __name__ == "__main__":
  main()
