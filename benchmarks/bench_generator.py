"""Synthetic generator throughput: 1M impressions must take under 60 s here.

Runs the generator at two sizes in one process and reports rows/s, the
scaling ratio between them, and the 1M run's share of the 60 s budget.
Writes benchmarks/results/bench_generator.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import e2e_grec  # noqa: F401
from e2e_grec.config import SyntheticConfig
from e2e_grec.datasets import synthetic

BUDGET_SECONDS = 60.0
SIZES = (100_000, 1_000_000)


def _config(impressions: int) -> SyntheticConfig:
  """A world that grows with the log, as in KuaiRand (~8 impressions per user)."""
  return SyntheticConfig(users=impressions // 8, videos=impressions // 30,
                         authors=impressions // 40, tags=100, musics=impressions // 30,
                         impressions=impressions, seed=0)


def main() -> dict:
  runs = []
  for impressions in SIZES:
    with tempfile.TemporaryDirectory() as out_dir:
      result = synthetic.generate(_config(impressions), out_dir)
      size_mb = sum(os.path.getsize(p) for p in result["files"].values()) / 2**20
    runs.append({"impressions": impressions, "seconds": result["seconds"],
                 "rows_per_second": round(impressions / result["seconds"]),
                 "csv_megabytes": round(size_mb, 1),
                 "config": dataclasses.asdict(_config(impressions))})
  small, large = runs
  summary = {
      "runs": runs,
      "scaling_ratio_seconds_1m_over_100k": round(large["seconds"] / small["seconds"], 2),
      "budget_seconds": BUDGET_SECONDS,
      "share_of_budget_1m": round(large["seconds"] / BUDGET_SECONDS, 3),
      "within_budget": large["seconds"] < BUDGET_SECONDS,
      "cpu_count": os.cpu_count(),
  }
  for run in runs:
    print(f"{run['impressions']:>9,} impressions: {run['seconds']:6.1f} s  "
          f"{run['rows_per_second']:>9,} rows/s  {run['csv_megabytes']} MB")
  print(f"1M / 100k time ratio: {summary['scaling_ratio_seconds_1m_over_100k']}x; "
        f"1M uses {summary['share_of_budget_1m']:.0%} of the {BUDGET_SECONDS:.0f} s budget")
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                      "bench_generator.json")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(summary, f, indent=2)
  return summary


if __name__ == "__main__":
  main()
