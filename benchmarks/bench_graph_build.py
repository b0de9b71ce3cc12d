"""Graph build time: the Beam graph builder on KuaiRand and on synthetic 1M / 10M logs.

    python -m benchmarks.bench_graph_build [--sizes kuairand,1m,10m] [--work DIR]
        [--beam-arg=--direct_running_mode=multi_processing ...]

Each input is generated (synthetic) and prepared once into --work (reused by
later runs, never timed); then `build_graph` is timed end to end on the
classic DirectRunner: the Beam pipeline, reading the edges back into the
sampling index, and schema / manifest / plot. Scaling is reported as the
ratio of build times against the ratio of training examples between
consecutive synthetic sizes (1.0 = linear). Writes
benchmarks/results/bench_graph_build.json and .md (the README table).
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
from benchmarks import result_files
from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.config import SyntheticConfig
from e2e_grec.datasets import prepare as prepare_lib
from e2e_grec.datasets import synthetic
from e2e_grec.graph import builder

SYNTHETIC = {"100k": 100_000, "1m": 1_000_000, "3m": 3_000_000, "10m": 10_000_000}


def synthetic_config(impressions: int) -> SyntheticConfig:
  """A world that grows with the log (as bench_generator: ~8 impressions per user)."""
  return SyntheticConfig(users=impressions // 8, videos=impressions // 30,
                         authors=impressions // 40, tags=100, musics=impressions // 30,
                         impressions=impressions, seed=0)


def prepared(name: str, work: str, config: config_lib.Config) -> tuple[str, str]:
  """(examples dir, data dir) of one input, generated and prepared once."""
  data_dir = (config_lib.default_shared_data_dir() if name == "kuairand"
              else os.path.join(work, name, "raw"))
  if data_dir is None:
    raise SystemExit("kuairand: the shared KuaiRand copy is not beside the project")
  examples_dir = os.path.join(work, name, "examples")
  if os.path.exists(os.path.join(examples_dir, contracts.PREPARE_REPORT_FILE)):
    return examples_dir, data_dir
  if name != "kuairand":
    logging.info("generating %s synthetic impressions", f"{SYNTHETIC[name]:,}")
    synthetic.generate(synthetic_config(SYNTHETIC[name]), data_dir)
  logging.info("preparing %s", data_dir)
  prepare_lib.prepare(config, data_dir, examples_dir)
  return examples_dir, data_dir


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="kuairand,1m,10m",
                      help=f"Comma-separated inputs: kuairand, {', '.join(SYNTHETIC)}.")
  parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(),
                                                     "e2e_grec_bench_graph_build"),
                      help="Where generated and prepared inputs are kept between runs.")
  parser.add_argument("--beam-arg", action="append", default=[],
                      help="A Beam option for every build, e.g. "
                      "--beam-arg=--direct_running_mode=multi_processing.")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  names = [n.strip().lower() for n in args.sizes.split(",") if n.strip()]
  unknown = [n for n in names if n != "kuairand" and n not in SYNTHETIC]
  if unknown:
    parser.error(f"unknown sizes {unknown}; choose from kuairand, {', '.join(SYNTHETIC)}")
  config = config_lib.Config()

  runs = []
  for name in names:
    examples_dir, _ = prepared(name, args.work, config)
    graph_dir = os.path.join(args.work, name, "graph")
    shutil.rmtree(graph_dir, ignore_errors=True)
    manifest = builder.build_graph(config, examples_dir, graph_dir,
                                   beam_args=args.beam_arg)
    examples = manifest.inputs["examples"]
    forward = {k: v.edges for k, v in manifest.edge_sets.items() if not k.startswith("rev_")}
    runs.append({
        "input": name, "training_examples": examples,
        "seconds": manifest.build_seconds, "phase_seconds": dict(manifest.phase_seconds),
        "examples_per_second": round(examples / manifest.build_seconds),
        "nodes": sum(ns.nodes for ns in manifest.node_sets.values()),
        "edges_stored": sum(forward.values()), "edges_incl_reverse": manifest.num_edges,
        "edges": forward, "dropped": manifest.num_dropped,
    })
    print(f"{name:>9s}: {examples:>10,} examples  {manifest.build_seconds:7.1f} s  "
          f"({runs[-1]['examples_per_second']:,} examples/s; phases "
          + ", ".join(f"{k} {v:.1f} s" for k, v in manifest.phase_seconds.items())
          + f")  {runs[-1]['edges_stored']:,} edges", flush=True)

  synthetic_runs = [r for r in runs if r["input"] in SYNTHETIC]
  scaling = []
  for small, large in zip(synthetic_runs, synthetic_runs[1:]):
    data_ratio = large["training_examples"] / small["training_examples"]
    time_ratio = large["seconds"] / small["seconds"]
    scaling.append({"from": small["input"], "to": large["input"],
                    "data_ratio": round(data_ratio, 2), "time_ratio": round(time_ratio, 2),
                    "time_per_example_ratio": round(time_ratio / data_ratio, 2)})
    print(f"{small['input']} -> {large['input']}: {data_ratio:.1f}x the examples took "
          f"{time_ratio:.1f}x the time (per-example cost x{time_ratio / data_ratio:.2f})")

  result = {"runs": runs, "scaling": scaling,
            "beam_args": list(config.graph.beam_args) + args.beam_arg,
            "graph_config": config.to_dict()["graph"],
            "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()}}
  result_files.write("bench_graph_build", result, _markdown(result))
  return result


def _markdown(result: dict) -> str:
  lines = ["| input | training examples | build s | examples/s | nodes | edges "
           "(+ reverse) | Beam / index / outputs s |", "|---|---|---|---|---|---|---|"]
  for r in result["runs"]:
    phases = " / ".join(f"{r['phase_seconds'][k]:.1f}" for k in ("beam", "index", "outputs"))
    lines.append(f"| {r['input']} | {r['training_examples']:,} | {r['seconds']:.1f} | "
                 f"{r['examples_per_second']:,} | {r['nodes']:,} | {r['edges_stored']:,} "
                 f"({r['edges_incl_reverse']:,}) | {phases} |")
  for s in result["scaling"]:
    lines.append(f"\n{s['from']} -> {s['to']}: {s['data_ratio']}x the examples, "
                 f"{s['time_ratio']}x the time (per-example cost x{s['time_per_example_ratio']}).")
  lines.append(f"\nRunner: {' '.join(result['beam_args'])} (classic DirectRunner), "
               f"{result['machine']['cpu_count']} CPUs shared with other jobs.")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
