"""Writes the README's result tables from `benchmarks/results/`, never by hand.

    python -m benchmarks.report

Each README section between `<!-- BEGIN name -->` and `<!-- END name -->` is
replaced. A benchmark that writes `<name>.md` beside its JSON is quoted as is;
the others are rendered here from their JSON. Missing results say which
command produces them.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Callable

from e2e_grec.datasets.labels import BINARY_TASKS

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
README = os.path.join(os.path.dirname(HERE), "README.md")


def _load(name: str) -> dict[str, Any] | None:
  path = os.path.join(RESULTS, f"{name}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _markdown(name: str) -> str | None:
  path = os.path.join(RESULTS, f"{name}.md")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return f.read().strip()


def _generator(result: dict[str, Any]) -> str:
  rows = ["| impressions | seconds | rows/s |", "|---|---|---|"]
  rows += [f"| {r['impressions']:,} | {r['seconds']:.1f} | {r['rows_per_second']:,} |"
           for r in result["runs"]]
  return "\n".join(rows)


def _sampler(result: dict[str, Any]) -> str:
  same = result["same_graph"]
  eps = same["examples_per_second"]
  lines = [
      f"Same graph and spec ({same['spec']}; {same['seeds']}):",
      "",
      "| sampler | examples/s (user + video subgraphs) |",
      "|---|---|",
      f"| this project's batched sampler | {eps['ours']:,} |",
      f"| TF-GNN `create_sampling_model_from_spec` | {eps['tfgnn']:,} |",
      f"| **ratio** | **{same['ratio_ours_over_tfgnn']:.1f}x** |",
  ]
  default = result.get("default_config")
  if default:
    lines += ["", "Default sampling config (all edge sets, fan-outs "
              f"{default['sampling']['fanouts']}): " + ", ".join(
                  f"{k.replace('_', ' ')}: {v:,} examples/s"
                  for k, v in default["examples_per_second"].items())]
  return "\n".join(lines)


def _training_cost(result: dict[str, Any]) -> str:
  overrides = " ".join(result["config"])
  lines = [f"Config: {f'`{overrides}` on ' if overrides else ''}the shipped defaults "
           "(`configs/default.yaml`); batches of the training split, measured side by side "
           "in one process.", "",
           "| mode | examples/s | cost per example vs no_graph: wall | CPU |",
           "|---|---|---|---|"]
  lines += [f"| {mode} | {r['examples_per_s']:,.0f} | {r['cost_per_example_vs_no_graph']:.2f}x "
            f"| {r['cpu_cost_per_example_vs_no_graph']:.2f}x |"
            for mode, r in result["throughput"].items()]
  lines += ["", "Wall time lets the input pipeline's threads overlap the step; CPU time "
            "(all threads) is what the work costs on a busy or larger fleet."]
  profile = result.get("profile") or {}
  if profile:
    parts = list(next(iter(profile.values()))["share"])
    lines += ["", "Where a training step's time goes (share of the summed parts; each part is "
              "the difference between two step variants on the same batches, so a part "
              "within noise can come out slightly negative):", "",
              "| mode | CPU s per step | " + " | ".join(parts) + " |", "|---|---|" + "---|" * len(parts)]
    lines += [f"| {mode} | {p['train_step_s']:.3f} | "
              + " | ".join(f"{p['share'][k]:.0%}" for k in parts) + " |"
              for mode, p in profile.items()]
  if result["wall_time_to_best"]:
    lines += ["", "| mode | median wall time to best eval GAUC | per run: pretrain + precompute + "
              "train s (best GAUC) |", "|---|---|---|"]
  for mode, r in result["wall_time_to_best"].items():
    runs = "; ".join(
        " + ".join(f"{run[k]:.0f}" for k in ("pretrain_s", "precompute_s", "train_s")
                   if run[k] is not None) + f" ({run['best_mean_gauc']:.4f})"
        for run in r["runs"])
    lines.append(f"| {mode} | {r['median_time_to_best_s']:.0f} s | {runs} |")
  return "\n".join(lines)


def _serving(result: dict[str, Any]) -> str:
  model = result.get("model", {})
  sampling = result.get("sampling", {})
  lines = [f"1 user x {result['candidates_per_request']} candidates per request (one row per "
           f"candidate); {model.get('gnn', '?')} with {model.get('gnn_layers', '?')} layer(s), "
           f"fan-outs {sampling.get('fanouts', '?')}; load average "
           f"{result['load_average_at_start'][0]} at start, "
           f"{result.get('load_average_at_end', ['?'])[0]} at end, on {result['cpu_count']} cores.",
           "", "| concurrency | case | p50 ms | p99 ms | candidates/s |", "|---|---|---|---|---|"]
  for concurrency, by_case in result["results"].items():
    for case, r in by_case.items():
      lines.append(f"| {concurrency.split('_')[-1]} | {case} | {r['p50_ms']:.1f} | "
                   f"{r['p99_ms']:.1f} | {r['candidates_per_second']:,} |")
  target = result["target_p99_ms_at_concurrency_1"]
  met = [s for s, ok in result["meets_target"].items() if ok]
  lines += ["", f"Target p99 < {target:.0f} ms at concurrency 1: "
            + (f"met by {', '.join(met)}." if met else "**not met** in this run.")]
  speedup = result.get("speedup_concurrency_8_over_1")
  if speedup:
    lines += ["", f"Candidates/s at concurrency 8 over concurrency 1 (target "
              f"{result['target_speedup_concurrency_8_over_1']}x): "
              + ", ".join(f"{case} {x:.2f}x" for case, x in speedup.items()) + "."]
  if "max_score_change_merged_with_7_other_users" in result:
    lines += ["", "Merging requests changes scores slightly (the sampler shares nodes across "
              "the rows of one run): at most "
              f"{result['max_score_change_merged_with_7_other_users']:.3f} when one request "
              "is merged with 7 other users' requests."]
  return "\n".join(lines)


def _tuning(result: dict[str, Any]) -> str:
  states = ", ".join(f"{n} {state}" for state, n in result["trials"].items())
  head = ["trial", "mean GAUC", "mean AUC", *(f"{t} GAUC" for t in BINARY_TASKS), "stay RMSE",
          "parameters"]
  lines = [f"Objective: {result['objective']}; one seed per trial. Trials: {states}.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  baseline = result.get("baseline")
  rows = result["best"] + ([baseline] if baseline and baseline not in result["best"] else [])
  for trial in rows:
    m = trial["metrics"]
    name = f"{trial['number']}" + (" (starting config)" if baseline and trial == baseline else "")
    params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in trial["params"].items())
    cells = [name, *(f"{m[k]:.4f}" for k in ("mean_gauc", "mean_auc",
                                             *(f"{t}/gauc" for t in BINARY_TASKS), "stay/rmse")),
             f"`{params}`"]
    lines.append("| " + " | ".join(cells) + " |")
  importances = result.get("param_importances") or {}
  if importances:
    lines += ["", "Parameter importance for mean GAUC (Optuna fANOVA, few trials: indicative): "
              + ", ".join(f"{k} {v:.2f}" for k, v in list(importances.items())[:6]) + "."]
  return "\n".join(lines)


def _daily_refresh(result: dict[str, Any]) -> str:
  config = result["config"]
  lines = [f"Each stream warm-starts ({config['warm_start_epochs']} epochs), then takes one "
           f"day at a time: {config['daily_update_epochs']} pass over the day's examples, "
           "the graph rebuilt through the day (both graph modes pay it), two_stage's GNN "
           "fine-tuned on the day and every known user and video re-embedded; each day is "
           f"scored on the next one. Shipped model config (fan-outs "
           f"{config['sampling.fanouts']}, batch {config['batch_size']}), "
           f"{config['cpu_count']} shared cores; seconds include each day's tf.function "
           "tracing, as a fresh daily job pays it.", "",
           "| stream | mode | days | day examples | graph update s | GNN refresh s | embedding "
           "precompute s | ranker update s | total s/day | next-day mean GAUC | next-day "
           "mean AUC |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, stream in result["streams"].items():
    for mode, m in stream["modes"].items():
      phases = " | ".join(f"{m['mean_phase_s'][p]:.1f}" for p in
                          ("graph_update", "gnn_refresh", "embedding_precompute",
                           "ranker_update"))
      lines.append(f"| {name} | {mode} | {', '.join(d['step'][5:] for d in m['days'])} | "
                   f"{m['mean_day_examples']:,.0f} | {phases} | "
                   f"{m['mean_total_s']:.1f} | {m['mean_next_day_gauc']:.4f} | "
                   f"{m['mean_next_day_auc']:.4f} |")
  c = result.get("crossover") or {}
  if not c:
    return "\n".join(lines + ["", "Crossover: not measured yet (needs e2e and two_stage days)."])
  ms = lambda key: f"{c[key] * 1e3:.2f} ms"
  lines += ["", f"**Crossover.** Fitted over the streams' mean days (fixed + rate x size; "
            f"{len(result['streams'])} stream(s), so indicative): "
            f"e2e's update costs {ms('e2e_update_s_per_example')} per day example; two_stage "
            f"pays {ms('two_stage_gnn_refresh_s_per_example')} (GNN fine-tune) + "
            f"{ms('two_stage_ranker_s_per_example')} (ranker) per day example and "
            f"{ms('two_stage_precompute_s_per_node')} per known node re-embedded. "]
  rates = ("e2e_update_s_per_example", "two_stage_ranker_s_per_example",
           "two_stage_gnn_refresh_s_per_example", "two_stage_precompute_s_per_node")
  if any(c[k] < 0 for k in rates):
    lines[-1] += ("A negative rate means the fit cannot tell fixed from per-example cost "
                  "here: on this loaded machine each day's seconds are mostly fixed "
                  "(tracing) and load, so read the verdict below with that caveat. ")
  ratio = c["nodes_per_day_example"]
  measured = ", ".join(f"{name} {stream['known_nodes_per_day_example']:.2f}"
                       for name, stream in result["streams"].items()
                       if stream.get("known_nodes_per_day_example") is not None)
  if ratio is not None and ratio <= 0:
    verdict = ("two_stage's fine-tune and ranker update alone cost more per day example than "
               "e2e's update: e2e's day is cheaper at any graph size"
               + (f" once a day brings more than {c['break_even_day_examples']:,.0f} examples "
                  "(below that, e2e's larger fixed cost per day, mostly tracing, is not repaid)"
                  if c.get("break_even_day_examples") else "")
               + ", and two_stage's re-embedding of every node widens the gap as the graph grows")
  elif ratio is not None:
    verdict = (f"e2e's day becomes cheaper than two_stage's once the graph holds more than "
               f"{ratio:.2f} known users + videos per day example (fixed costs aside); "
               "below that two_stage is cheaper")
  else:
    verdict = "the precompute cost did not grow with the node count, so no crossover follows"
  at_ratio = c.get("break_even_day_examples_at_stream_ratio") or {}
  if at_ratio:
    verdict += ("; counting the re-embedding at each stream's own known nodes per day "
                "example, e2e's day is cheaper from " + ", ".join(
                    f"{n:,.0f} examples a day ({s})" for s, n in at_ratio.items()))
  days = ", ".join(f"{s} {v}" for s, v in c["e2e_cheaper_days"].items())
  lines[-1] += (f"Hence {verdict}. Measured known nodes per day example: {measured}. Days on "
                f"which e2e's total was below two_stage's: {days}.")
  return "\n".join(lines)


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "bench_daily_refresh": _daily_refresh,
    "tuning": _tuning,
    "bench_generator": _generator,
    "bench_sampler": _sampler,
    "bench_training_cost": _training_cost,
    "bench_serving": _serving,
}

SECTIONS = {
    "results": [("experiments", "Model quality on KuaiRand-Pure (eval 2022-05-05..06)",
                 "python -m benchmarks.experiments"),
                ("tuning", "Hyperparameter search on KuaiRand-Pure (eval 2022-05-05..06)",
                 "e2e-grec tune --summary benchmarks/results/tuning.json"),
                ("bench_fresh_graph", "Fresh graph without retraining",
                 "python -m benchmarks.bench_fresh_graph")],
    "benchmarks": [
        ("bench_training_cost", "Training cost per mode", "python -m benchmarks.bench_training_cost"),
        ("bench_sampler", "Subgraph sampling throughput", "python -m benchmarks.bench_sampler"),
        ("bench_graph_build", "Graph build time", "python -m benchmarks.bench_graph_build"),
        ("bench_serving", "Serving latency over gRPC and REST", "python -m benchmarks.bench_serving"),
        ("bench_generator", "Synthetic generator throughput", "python -m benchmarks.bench_generator"),
    ],
    "daily_refresh": [
        ("bench_daily_refresh", "Cost per day and next-day quality per mode",
         "python -m benchmarks.bench_daily_refresh"),
    ],
    "scaling": [("bench_scaling", "Scaling with the graph on one machine",
                 "nice python -m benchmarks.bench_scaling")],
}


def render_section(entries: list[tuple[str, str, str]]) -> str:
  parts = []
  for name, title, command in entries:
    body = _markdown(name)
    if body is None:
      result = _load(name)
      body = (RENDERERS[name](result) if result is not None and name in RENDERERS
              else None)
    if body is None:
      body = f"*Not measured yet: run `{command}`.*"
    parts.append(f"### {title}\n\nMeasured by `{command}` "
                 f"(`benchmarks/results/{name}.json`).\n\n{body}")
  return "\n\n".join(parts)


def main() -> None:
  with open(README) as f:
    text = f.read()
  for section, entries in SECTIONS.items():
    pattern = re.compile(rf"(<!-- BEGIN {section} -->\n).*?(\n<!-- END {section} -->)", re.S)
    if not pattern.search(text):
      raise SystemExit(f"README.md has no <!-- BEGIN {section} --> marker")
    body = render_section(entries)
    text = pattern.sub(lambda m: m.group(1) + body + m.group(2), text)
  with open(README, "w") as f:
    f.write(text)
  print(f"updated {README}")


if __name__ == "__main__":
  main()
