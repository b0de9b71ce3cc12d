"""`make bench`: every benchmark in turn, then the README tables from their results.

Benchmarks are timed comparisons measured side by side in one run; they are
never part of the test suite. Pass names to run a subset:
`python -m benchmarks.run_all bench_sampler bench_serving`.
"""
from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ("bench_generator", "bench_sampler", "bench_graph_build",
              "bench_training_cost", "bench_serving", "experiments")


def main(argv: list[str]) -> int:
  failed = []
  for name in argv or BENCHMARKS:
    print(f"=== benchmarks.{name}", flush=True)
    if subprocess.call([sys.executable, "-m", f"benchmarks.{name}"]) != 0:
      failed.append(name)
  subprocess.check_call([sys.executable, "-m", "benchmarks.report"])
  if failed:
    print(f"failed: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
