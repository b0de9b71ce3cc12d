"""Scaling curve: what one machine does as the synthetic graph grows, and where it stops.

    nice python -m benchmarks.bench_scaling [--sizes 100k,1m,3m,10m] [--work DIR]
        [--runner-sizes 1m,3m,10m] [--beam-train-sizes 1m] [--report-only]

Per synthetic size (bench_graph_build's generator settings and work layout):

  data       synthetic logs generated and prepared (not timed here).
  build      `build_graph` on the classic DirectRunner, one process: seconds by
             phase, nodes, edges.
  sampler    bytes of the sampler's tables (the `tf.Variable`s the trainer and
             the server hold) and sampler throughput (bench_sampler's
             default-config measurement).
  train      e2e training examples/s over a short run (bench_training_cost).
  serve      an untrained default-config model exported (SavedModel bytes),
             served by `e2e-grec serve`, `rank` latency at concurrency 1
             (bench_serving's client), and the server's peak memory.
  beam_train (sizes in --beam-train-sizes) `e2e-grec train` twice on the
             same examples (the first BEAM_TRAIN_EXAMPLES of each split) and
             graph, each in its own process: sampling.where=trainer (loads the
             graph's sampling index) and sampling.where=beam (reads subgraphs
             that `beam_sampling.sample_subgraphs` wrote first; no graph
             directory given): peak memory, seconds, eval metrics of each.
  build_multiprocess (sizes in --runner-sizes) the build again with
             `--direct_num_workers=2 --direct_running_mode=multi_processing`.

Every stage runs in its own process, so its peak resident memory (from
`wait4`) is its own; each stage writes <work>/<size>/<stage>.json and a later
run skips what is there (kill it any time and start it again). A stage is
stopped if the shared machine's available memory runs low, and reported as
not finished with its peak so far. Peak memory per
stage is fitted linearly against the graph's edges (incl. reverse sets) and
extrapolated to the edges at which the single-machine stage would need 24 GB:
an extrapolation from the measured sizes, not a measurement. Writes
benchmarks/results/bench_scaling.json and .md (the README table).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np

from benchmarks import bench_graph_build, result_files
from e2e_grec import config as config_lib
from e2e_grec import contracts

MULTIPROCESS_ARGS = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
# Data first, apart, so no later stage's peak memory is the generator's; the
# 2-process build last: on a busy machine it is the first to drop for time.
STAGES = ("data", "build", "sampler", "train", "serve", "beam_train", "build_multiprocess")
MEMORY_BUDGET_BYTES = 24 * 2**30
# A stage is stopped below this much available memory: the machine is shared.
MIN_AVAILABLE_BYTES = 3 * 2**29
# Short measurements: the curve's shape matters, not the last digit.
SAMPLER_BATCHES, SAMPLER_ROUNDS = 20, 2
TRAIN_STEPS, TRAIN_WARMUP = 20, 3
SERVE_REQUESTS = 200
# Examples per split both beam_train runs train and evaluate on: Beam sampling
# costs per example, the in-trainer path's memory per graph edge.
BEAM_TRAIN_EXAMPLES = {contracts.TRAIN_SPLIT: 30_000, contracts.EVAL_SPLIT: 5_000}


def _graph_dir(work: str, size: str, stage: str = "build") -> str:
  return os.path.join(work, size, "graph" if stage == "build" else f"graph_{stage}")


def _build(size: str, examples_dir: str, work: str, stage: str, config) -> dict:
  from e2e_grec.graph import builder
  out = _graph_dir(work, size, stage)
  shutil.rmtree(out, ignore_errors=True)
  beam_args = MULTIPROCESS_ARGS if stage == "build_multiprocess" else ()
  manifest = builder.build_graph(config, examples_dir, out, beam_args=beam_args)
  if stage == "build_multiprocess":
    shutil.rmtree(out)  # only its time is wanted; the single-process graph is used
  return {"seconds": round(manifest.build_seconds, 1),
          "phase_seconds": {k: round(v, 1) for k, v in manifest.phase_seconds.items()},
          "beam_args": list(manifest.beam_args),
          "training_examples": manifest.inputs["examples"],
          "nodes": sum(ns.nodes for ns in manifest.node_sets.values()),
          "edges_incl_reverse": manifest.num_edges}


def _variable_bytes(module) -> int:
  return sum(v.shape.num_elements() * v.dtype.size
             for v in {id(v): v for v in module.variables}.values())


def _sampler(examples_dir: str, graph_dir: str, config) -> dict:
  from benchmarks import bench_sampler
  from e2e_grec.datasets.node_tables import NodeTables
  from e2e_grec.graph.sampler import SubgraphSampler
  from e2e_grec.graph.sampling_index import SamplingIndex
  tables = NodeTables.load(os.path.join(examples_dir, contracts.NODE_TABLES_FILE))
  index = SamplingIndex.load(graph_dir)
  sampler = SubgraphSampler(index, tables, config.sampling)
  table_bytes = _variable_bytes(tables)
  measured = bench_sampler.default_config_throughput(examples_dir, graph_dir, config,
                                                     SAMPLER_BATCHES, SAMPLER_ROUNDS)
  return {"graph_table_bytes": _variable_bytes(sampler) - table_bytes,
          "node_table_bytes": table_bytes,
          "sampled_edges": sum(index.edge_sets[n].num_edges for n in sampler.edge_set_names),
          "nodes": sum(index.node_set_sizes.values()),
          "examples_per_second": measured["examples_per_second"],
          "per_example": measured["per_example"]}


def _train(examples_dir: str, graph_dir: str, config) -> dict:
  from benchmarks import bench_training_cost
  measured = bench_training_cost.throughput(config.replace(**{"model.mode": "e2e"}),
                                            examples_dir, graph_dir, TRAIN_STEPS, TRAIN_WARMUP)
  return {"examples_per_second": round(measured["examples_per_s"]),
          "steps": TRAIN_STEPS, "batch_size": measured["batch_size"]}


def _peak_bytes(pid: int) -> int:
  """Peak resident memory of a running process (VmHWM)."""
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def _serve(examples_dir: str, graph_dir: str, work: str, size: str, config) -> dict:
  """Exports an untrained model (weights do not change size or latency) and serves it."""
  import tensorflow as tf
  from benchmarks import bench_serving
  from e2e_grec.datasets.node_tables import NodeTables
  from e2e_grec.graph.sampler import SubgraphSampler
  from e2e_grec.graph.sampling_index import SamplingIndex
  from e2e_grec.models.e2e_grec import E2EGRec
  from e2e_grec.serving import export, requests
  tables_path = os.path.join(examples_dir, contracts.NODE_TABLES_FILE)
  tables = NodeTables.load(tables_path)
  sampler = SubgraphSampler(SamplingIndex.load(graph_dir), tables, config.sampling)
  context = bench_serving.request_contexts(examples_dir, tables_path, users=1)[0]
  features = {("video_id" if k == "video_ids" else k): tf.constant(v)
              for k, v in requests.rank_rows(**context).items()}
  model = E2EGRec(tables, config)
  model({**features, "graph": sampler(features["user_id"], features["video_id"],
                                      features["day"])})
  model_dir = os.path.join(work, size, "serving")
  shutil.rmtree(model_dir, ignore_errors=True)
  version_dir = os.path.join(model_dir, config.serving.model_name, "1")
  started = time.time()
  export.export_saved_model(model, sampler, tables, config, version_dir)
  export_seconds = time.time() - started
  saved_model_bytes = sum(os.path.getsize(os.path.join(d, f))
                          for d, _, files in os.walk(version_dir) for f in files)
  process, grpc_port, _ = bench_serving.start_server(model_dir, config)
  try:
    case = bench_serving.grpc_case(f"127.0.0.1:{grpc_port}", requests.rank_request(
        config.serving.model_name, **context))
    bench_serving.run_round(case, 1, 20)  # warm-up
    latencies, wall = bench_serving.run_round(case, 1, SERVE_REQUESTS)
    server_peak = _peak_bytes(process.pid)
  finally:
    process.terminate()
    process.wait(30)
  shutil.rmtree(model_dir)
  return {"saved_model_bytes": saved_model_bytes, "export_seconds": round(export_seconds, 1),
          "server_peak_rss_bytes": server_peak,
          "rank_grpc_concurrency_1": bench_serving.summarize(latencies, len(latencies), wall)}


def _example_subset(examples_dir: str, out: str) -> str:
  """`out` as a prepared-examples directory: the node tables and the first
  BEAM_TRAIN_EXAMPLES records of each split, byte for byte."""
  import tensorflow as tf
  os.makedirs(out, exist_ok=True)
  shutil.copy(os.path.join(examples_dir, contracts.NODE_TABLES_FILE), out)
  for split, count in BEAM_TRAIN_EXAMPLES.items():
    os.makedirs(contracts.split_dir(out, split), exist_ok=True)
    records = tf.data.TFRecordDataset(contracts.split_file(examples_dir, split),
                                      compression_type="GZIP").take(count)
    with tf.io.TFRecordWriter(contracts.split_file(out, split), "GZIP") as writer:
      for record in records.as_numpy_iterator():
        writer.write(record)
  return out


def _train_process(out: str, examples_dir: str, overrides: list[str],
                   graph_dir: str | None) -> dict:
  """`e2e-grec train` in a child process: seconds, peak memory, eval metrics.

  The peak comes from GNU time, whose child it is: a child forked from this
  (large) process would report this process's peak as its own (Linux keeps
  the forked copy's high-water mark across exec).
  """
  timer = shutil.which("time", path="/usr/bin:/bin")
  if timer is None:
    raise RuntimeError("beam_train needs GNU time (/usr/bin/time) to measure peak memory")
  args = [sys.executable, "-m", "e2e_grec.cli", "train", "--examples", examples_dir,
          "--out", out] + [a for o in overrides for a in ("--set", o)]
  if graph_dir:
    args += ["--graph", graph_dir]
  started = time.time()
  with open(out + ".log", "w") as log:
    code = subprocess.call([timer, "-f", "%M", "-o", out + ".peak_kib", *args], stdout=log,
                           stderr=subprocess.STDOUT)
  if code != 0:
    raise RuntimeError(f"{' '.join(args)} failed (exit {code}); see {out}.log")
  with open(out + ".peak_kib") as f:
    peak_kib = int(f.read().split()[-1])
  with open(os.path.join(out, contracts.RUN_METRICS_FILE)) as f:
    metrics = json.load(f)
  return {"seconds": round(time.time() - started, 1), "peak_rss_bytes": peak_kib * 1024,
          "train_examples_per_s": metrics["train_examples_per_s"],
          **{k: metrics[k] for k in ("examples", "mean_auc", "mean_gauc")}}


def _beam_train(examples_dir: str, graph_dir: str, work: str, size: str, config) -> dict:
  """Peak memory of training with sampling.where=beam against where=trainer."""
  from e2e_grec.graph import beam_sampling
  out = os.path.join(work, size, "beam_train")
  shutil.rmtree(out, ignore_errors=True)
  subset = _example_subset(examples_dir, os.path.join(out, "examples"))
  subgraphs = os.path.join(out, "subgraphs")
  started = time.time()
  beam_sampling.sample_subgraphs(config, subset, graph_dir, subgraphs)
  sampling = {"seconds": round(time.time() - started, 1),
              # This process did nothing heavier before (ru_maxrss is in KiB).
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
  common = ["model.mode=e2e", "train.epochs=1"]
  result = {
      "examples": dict(BEAM_TRAIN_EXAMPLES), "beam_sampling": sampling,
      "where_trainer": _train_process(os.path.join(out, "run_trainer"), subset,
                                      common + ["sampling.where=trainer"], graph_dir),
      "where_beam": _train_process(os.path.join(out, "run_beam"), subset, common + [
          "sampling.where=beam", f"sampling.subgraphs_dir={subgraphs}"], None)}
  shutil.rmtree(out)  # only the measurements are wanted
  return result


def run_stage(stage: str, size: str, work: str) -> dict:
  """One stage of one size, in this process (the child of `main`)."""
  config = config_lib.Config()
  examples_dir, _ = bench_graph_build.prepared(size, work, config)
  if stage == "data":
    return {"examples_dir": examples_dir}
  if stage in ("build", "build_multiprocess"):
    return _build(size, examples_dir, work, stage, config)
  graph_dir = _graph_dir(work, size)
  if stage == "sampler":
    return _sampler(examples_dir, graph_dir, config)
  if stage == "train":
    return _train(examples_dir, graph_dir, config)
  if stage == "beam_train":
    return _beam_train(examples_dir, graph_dir, work, size, config)
  return _serve(examples_dir, graph_dir, work, size, config)


def _stage_file(work: str, size: str, stage: str) -> str:
  return os.path.join(work, size, f"{stage}.json")


def _available_memory_bytes() -> int:
  with open("/proc/meminfo") as f:
    for line in f:
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  raise RuntimeError("no MemAvailable in /proc/meminfo")


def _run_child(stage: str, size: str, work: str) -> dict | None:
  """Runs a stage in a fresh process; adds its wall time and peak resident memory.

  The stage is stopped when the machine's available memory falls below
  MIN_AVAILABLE_BYTES (others share it), which is recorded in
  <stage>.failed.json with its peak so far; a failed stage returns None and
  is tried again by the next run.
  """
  path = _stage_file(work, size, stage)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  logging.info("%s: %s", size, stage)
  started, load = time.time(), os.getloadavg()[0]
  process = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_scaling", "--stage",
                              stage, "--size", size, "--work", work], start_new_session=True)
  stopped_for_memory = False
  while True:
    pid, status, usage = os.wait4(process.pid, os.WNOHANG)
    if pid:
      break
    if not stopped_for_memory and _available_memory_bytes() < MIN_AVAILABLE_BYTES:
      stopped_for_memory = True
      logging.error("%s %s: stopped, the machine's available memory is below %s GiB",
                    size, stage, _gib(MIN_AVAILABLE_BYTES))
      os.killpg(process.pid, signal.SIGTERM)  # the stage and its Beam workers
    time.sleep(1)
  # ru_maxrss is in KiB on Linux.
  measured = {"stage_seconds": round(time.time() - started, 1),
              "load_average_at_start": load, "peak_rss_bytes": usage.ru_maxrss * 1024}
  code = os.waitstatus_to_exitcode(status)
  if code != 0:
    reason = (f"stopped when the machine's available memory fell below "
              f"{_gib(MIN_AVAILABLE_BYTES)} GiB" if stopped_for_memory else f"exit {code}")
    logging.error("%s %s failed (%s); finished stages are kept", size, stage, reason)
    with open(_stage_file(work, size, f"{stage}.failed"), "w") as f:
      json.dump({"reason": reason, **measured}, f, indent=2)
    return None
  with open(path + ".partial") as f:
    result = json.load(f)
  result.update(measured)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  os.remove(path + ".partial")
  return result


def _limit(edges: list[int], peaks: list[int]) -> dict:
  """Least-squares peak = fixed + per_edge * edges, solved for the 24 GB budget."""
  per_edge, fixed = np.polyfit(np.asarray(edges, float), np.asarray(peaks, float), 1)
  limit = (MEMORY_BUDGET_BYTES - fixed) / per_edge if per_edge > 0 else None
  return {"bytes_per_edge": round(float(per_edge), 1), "fixed_bytes": round(float(fixed)),
          "edges_at_24_gib": None if limit is None else int(limit)}


def summarize(sizes: list[str], work: str) -> dict:
  """Collects the finished stages into the result and its 24 GB extrapolation."""
  rows, failed = [], []
  for size in sizes:
    stages = {s: _read(work, size, s) for s in STAGES}
    failed += [{"input": size, "stage": s, **_read(work, size, f"{s}.failed")}
               for s in STAGES if stages[s] is None and _read(work, size, f"{s}.failed")]
    if stages["build"] is None:
      continue
    rows.append({"input": size,
                 "impressions": bench_graph_build.SYNTHETIC[size],
                 **{s: r for s, r in stages.items() if r is not None}})
  limits, breaks_first = {}, None
  # The three single-machine roles whose memory grows with the graph.
  roles = {"graph_build": ("build", "peak_rss_bytes"),
           "trainer": ("train", "peak_rss_bytes"),
           "server": ("serve", "server_peak_rss_bytes")}
  for role, (stage, key) in roles.items():
    points = [(r["build"]["edges_incl_reverse"], r[stage][key]) for r in rows if stage in r]
    if len(points) >= 2:
      limits[role] = _limit(*map(list, zip(*points)))
  if limits:
    role = min(limits, key=lambda k: limits[k]["edges_at_24_gib"] or float("inf"))
    largest = max(rows, key=lambda r: r["build"]["edges_incl_reverse"])
    impressions_per_edge = largest["impressions"] / largest["build"]["edges_incl_reverse"]
    edges = limits[role]["edges_at_24_gib"]
    breaks_first = {"role": role, "edges_at_24_gib": edges,
                    "impressions_at_24_gib": (None if edges is None
                                              else int(edges * impressions_per_edge))}
  table_bytes = [(r["sampler"]["graph_table_bytes"], r["sampler"]["sampled_edges"],
                  r["sampler"]["nodes"]) for r in rows if "sampler" in r]
  return {
      "runs": rows, "failed": failed, "memory_budget_bytes": MEMORY_BUDGET_BYTES,
      "graph_table_bytes_per_sampled_edge": (
          round(table_bytes[-1][0] / table_bytes[-1][1], 1) if table_bytes else None),
      "extrapolated_limits": limits, "breaks_first": breaks_first,
      "multiprocess_args": list(MULTIPROCESS_ARGS),
      "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                  "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")},
  }


def _read(work: str, size: str, stage: str) -> dict | None:
  path = _stage_file(work, size, stage)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _gib(n: float) -> str:
  return f"{n / 2**30:.2f}"


def _mib(n: float) -> str:
  return f"{n / 2**20:,.0f}"


def _beam_train_line(impressions: int, beam: dict) -> str:
  trainer, presampled = beam["where_trainer"], beam["where_beam"]
  examples = sum(beam["examples"].values())
  return (f"Beam-sampled training at {impressions:,} impressions: `e2e-grec train` with "
          f"`sampling.where=beam` peaks at {_gib(presampled['peak_rss_bytes'])} GiB, with the "
          f"in-trainer sampler at {_gib(trainer['peak_rss_bytes'])} GiB, on the same "
          f"{beam['examples'][contracts.TRAIN_SPLIT]:,} train and "
          f"{beam['examples'][contracts.EVAL_SPLIT]:,} eval examples (mean AUC "
          f"{presampled['mean_auc']:.4f} vs {trainer['mean_auc']:.4f}; "
          f"{presampled['train_examples_per_s']:,.0f} vs {trainer['train_examples_per_s']:,.0f} "
          f"train examples/s). Sampling them in Beam first took "
          f"{beam['beam_sampling']['seconds']:.0f} s "
          f"({1000 * beam['beam_sampling']['seconds'] / examples:.1f} ms per example, "
          f"{_gib(beam['beam_sampling']['peak_rss_bytes'])} GiB peak).")


def markdown(result: dict) -> str:
  lines = ["| impressions | edges (+ reverse) | build s (1 / 2 processes) | graph tables MiB "
           "| sampler ex/s (batch 128 / train batch) | train ex/s | SavedModel MiB "
           "| rank p99 ms | peak GiB: build / train / server |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in result["runs"]:
    build, multi = r["build"], r.get("build_multiprocess")
    sampler, train, serve = r.get("sampler", {}), r.get("train", {}), r.get("serve", {})
    cell = lambda value, fmt: "-" if value is None else fmt(value)
    lines.append(
        f"| {r['impressions']:,} | {build['edges_incl_reverse']:,} | {build['seconds']:.0f} / "
        + cell(multi and multi["seconds"], lambda v: f"{v:.0f}") + " | "
        + cell(sampler.get("graph_table_bytes"), _mib) + " | "
        + cell(sampler.get("examples_per_second"),
               lambda v: " / ".join(f"{x:,}" for x in v.values())) + " | "
        + cell(train.get("examples_per_second"), lambda v: f"{v:,}") + " | "
        + cell(serve.get("saved_model_bytes"), _mib) + " | "
        + cell(serve.get("rank_grpc_concurrency_1", {}).get("p99_ms"), lambda v: f"{v:.1f}")
        + f" | {_gib(build['peak_rss_bytes'])} / "
        + cell(train.get("peak_rss_bytes"), _gib) + " / "
        + cell(serve.get("server_peak_rss_bytes"), _gib) + " |")
  per_edge = result["graph_table_bytes_per_sampled_edge"]
  lines.append(f"\nSampler: the default sampling config; training: e2e at the default "
               f"config ({TRAIN_STEPS} steps); `rank`: 1 user x 100 candidates over gRPC at "
               "concurrency 1. Graph tables: the sampler's `tf.Variable`s"
               + (f", {per_edge} bytes per sampled edge at the largest size." if per_edge
                  else "."))
  for r in result["runs"]:
    if "beam_train" in r:
      lines.append("\n" + _beam_train_line(r["impressions"], r["beam_train"]))
  limits = result["extrapolated_limits"]
  if limits:
    lines.append("\nExtrapolated (a linear fit of peak memory against edges, not a "
                 "measurement) to a 24 GiB machine:\n")
    for role, fit in limits.items():
      edges = fit["edges_at_24_gib"]
      lines.append(f"- {role.replace('_', ' ')}: {fit['bytes_per_edge']:.0f} bytes per edge "
                   f"+ {_gib(fit['fixed_bytes'])} GiB -> "
                   + (f"~{edges / 1e6:,.0f}M edges" if edges else "no limit in range"))
  for f in result["failed"]:
    lines.append(f"\nDid not finish: {f['input']} {f['stage'].replace('_', ' ')}, "
                 f"{f['reason']} after {f['stage_seconds']:.0f} s, at "
                 f"{_gib(f['peak_rss_bytes'])} GiB peak.")
  first = result["breaks_first"]
  if first and first["edges_at_24_gib"]:
    lines.append(f"\nFirst to run out: the {first['role'].replace('_', ' ')}, at about "
                 f"{first['edges_at_24_gib'] / 1e6:,.0f}M edges "
                 f"(~{first['impressions_at_24_gib'] / 1e6:,.0f}M impressions of this "
                 "generator).")
  loads = [s["load_average_at_start"] for r in result["runs"] for s in r.values()
           if isinstance(s, dict) and "load_average_at_start" in s]
  load_range = (f" (load average {min(loads):.1f} to {max(loads):.1f} at the stages' "
                "starts)" if loads else "")
  lines.append(f"\n{result['machine']['cpu_count']} CPUs shared with other jobs{load_range}; "
               "2 processes = " + " ".join(result["multiprocess_args"]) + ".")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="100k,1m,3m,10m",
                      help=f"Comma-separated synthetic sizes: {', '.join(bench_graph_build.SYNTHETIC)}.")
  parser.add_argument("--runner-sizes", default="1m,3m,10m",
                      help="Sizes whose build is also timed on 2 DirectRunner processes.")
  parser.add_argument("--beam-train-sizes", default="1m",
                      help="Sizes whose training is also measured with sampling.where=beam.")
  parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(),
                                                     "e2e_grec_bench_scaling"),
                      help="Generated data, graphs and finished stages, kept between runs.")
  parser.add_argument("--report-only", action="store_true",
                      help="Write the JSON and table from the finished stages; run nothing.")
  parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
  parser.add_argument("--size", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  if args.stage:
    result = run_stage(args.stage, args.size, args.work)
    with open(_stage_file(args.work, args.size, args.stage) + ".partial", "w") as f:
      json.dump(result, f, indent=2)
    return None
  sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
  selected = {stage: {s.strip().lower() for s in sizes_arg.split(",") if s.strip()}
              for stage, sizes_arg in (("build_multiprocess", args.runner_sizes),
                                       ("beam_train", args.beam_train_sizes))}
  unknown = sorted(set(sizes).union(*selected.values()) - set(bench_graph_build.SYNTHETIC))
  if unknown:
    parser.error(f"unknown sizes {unknown}; choose from {', '.join(bench_graph_build.SYNTHETIC)}")
  if not args.report_only:
    for size in sizes:
      for stage in STAGES:
        wanted = size in selected.get(stage, {size})
        if wanted and _run_child(stage, size, args.work) is None:
          break  # later stages need this one's output
  result = summarize(sizes, args.work)
  result_files.write("bench_scaling", result, markdown(result))
  print(markdown(result))
  return result


if __name__ == "__main__":
  main()
