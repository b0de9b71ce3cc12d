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


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "bench_generator": _generator,
    "bench_sampler": _sampler,
}

SECTIONS = {
    "results": [("experiments", "Model quality on KuaiRand-Pure (eval 2022-05-05..06)",
                 "python -m benchmarks.experiments")],
    "benchmarks": [
        ("bench_training_cost", "Training cost per mode", "python -m benchmarks.bench_training_cost"),
        ("bench_sampler", "Subgraph sampling throughput", "python -m benchmarks.bench_sampler"),
        ("bench_graph_build", "Graph build time", "python -m benchmarks.bench_graph_build"),
        ("bench_serving", "Serving latency over gRPC", "python -m benchmarks.bench_serving"),
        ("bench_generator", "Synthetic generator throughput", "python -m benchmarks.bench_generator"),
    ],
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
