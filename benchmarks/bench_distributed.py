"""Training throughput with 2 local MultiWorkerMirroredStrategy workers against 1 process.

    python -m benchmarks.bench_distributed [--examples EX --graph GRAPH] \
        [--steps 24] [--batch-size 64] [--set section.key=value ...]

Both runs train the same e2e model on the same data, seeds and global batch
for `--steps` steps, each process a subprocess of this script: `1_process`
with `train.strategy=default`, `2_workers` as two MWMS workers on 127.0.0.1
(their own TF_CONFIG, as `tests/test_distributed.py` launches them).
Reported: the chief's median logged examples/s (global batch; the first,
tracing, window excluded by the median) and each run's wall time.

On a 2-core machine the two workers share the cores the single process had,
so this measures the overhead of distribution (all-reduce over gRPC, twice
the input pipelines and process start-up), not a speed-up. Without
`--examples/--graph` it trains on toy data (tests/toy_data.py) written to --work.

Writes benchmarks/results/bench_distributed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.experiments import RESULTS_DIR
from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.training import distribute

RESULT_FILE = os.path.join(RESULTS_DIR, "bench_distributed.json")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toy_inputs(work: str, examples: int) -> tuple[str, str]:
  sys.path.insert(0, os.path.join(_REPO, "tests"))
  import toy_data
  root = os.path.join(work, f"toy_{examples}")
  if not os.path.exists(os.path.join(root, "graph", contracts.SAMPLING_INDEX_FILE)):
    toy_data.write_toy_run_inputs(root, train_examples=examples)
  return os.path.join(root, "examples"), os.path.join(root, "graph")


def _train_task(args: argparse.Namespace) -> None:
  """One process of a run (TF_CONFIG set by the parent for a worker)."""
  config = config_lib.Config().replace(**json.loads(args.task_config))
  distribute.train(config, args.examples, args.graph, args.out)


def _run(name: str, workers: int, args: argparse.Namespace, overrides: dict) -> dict:
  out = os.path.join(args.work, "runs", name)
  if os.path.exists(out):
    subprocess.run(["rm", "-rf", out], check=True)
  strategy = "multi_worker_mirrored" if workers > 1 else "default"
  task_config = json.dumps({**overrides, "train.strategy": strategy})
  cluster = distribute.local_cluster(worker=workers)
  command = [sys.executable, "-m", "benchmarks.bench_distributed", "--task-config",
             task_config, "--examples", args.examples, "--graph", args.graph, "--out", out]
  started = time.time()
  procs = []
  for index in range(workers):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    if workers > 1:
      env["TF_CONFIG"] = distribute.tf_config(cluster, "worker", index)
    procs.append(subprocess.Popen(command, env=env, cwd=_REPO))
  codes = [p.wait() for p in procs]
  if any(codes):
    raise RuntimeError(f"{name}: a process failed with exit codes {codes}")
  wall = time.time() - started
  with open(os.path.join(out, contracts.RUN_METRICS_FILE)) as f:
    metrics = json.load(f)
  return {"processes": workers, "strategy": strategy,
          "train_examples_per_s": metrics["train_examples_per_s"],
          "wall_s_including_start_up": wall}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples")
  parser.add_argument("--graph")
  parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(),
                                                     "bench_distributed"))
  parser.add_argument("--steps", type=int, default=24)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--toy-examples", type=int, default=4096)
  parser.add_argument("--set", action="append", default=[], dest="overrides")
  parser.add_argument("--out", help=argparse.SUPPRESS)  # A task's run directory.
  parser.add_argument("--task-config", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.task_config:
    _train_task(args)
    return
  if not (args.examples and args.graph):
    args.examples, args.graph = _toy_inputs(args.work, args.toy_examples)
  overrides = {"train.batch_size": args.batch_size, "train.max_train_steps": args.steps,
               "train.log_every_steps": 4, "train.checkpoint_every_steps": 1000,
               "sampling.fanouts": [3], "model.gnn_layers": 1}
  overrides.update(config_lib.parse_override(text) for text in args.overrides)
  runs = {"1_process": _run("1_process", 1, args, overrides),
          "2_workers": _run("2_workers", 2, args, overrides)}
  result = {"what": "e2e training examples/s, 2 local MWMS workers vs 1 process",
            "note": ("2 cores shared by both runs: this measures distribution "
                     "overhead, not speed-up"),
            "cpus": os.cpu_count(), "config": overrides, "runs": runs}
  os.makedirs(RESULTS_DIR, exist_ok=True)
  with open(RESULT_FILE, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
