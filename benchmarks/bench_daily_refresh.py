"""Daily refresh (issue 10): what each mode pays per day to stay fresh, and what it buys.

    nice python -m benchmarks.bench_daily_refresh --streams kuairand synthetic:100000

The production loop the paper argues about. Every mode warm-starts on the
first days of a stream, then each following day D arrives whole and is
processed, and the model is scored on day D + 1:

  graph update      the graph is rebuilt through D (`graph.builder`, Beam; there
                    is no incremental builder, so this grows with the history).
                    Both graph modes need it; no_graph does not.
  two_stage         updates its ranker on D's examples with the embeddings that
                    were served on D (the previous refresh: no example sees its
                    own day), fine-tunes its GNN on D's examples
                    (`two_stage.pretrain`; their subgraphs only see edges
                    before D), then recomputes the embedding of every user and
                    video known through D on the new graph (cutoff D + 1:
                    tomorrow's serving table, `two_stage.precompute`).
  e2e               continues training GNN + ranker on D's examples over the
                    updated graph (one pass; day-D examples see edges < D).
  no_graph          continues training on D's examples (the reference).

Streams: `kuairand` (warm start 04-25..04-30, days 05-01..05-04, the last one
scored on the eval day 05-05) and `synthetic:N` (N impressions a day, users,
videos, authors and music in proportion to N; warm start 2 days, 3 stream days).
Vocabularies come from the whole training window, so node tables do not
change shape between days (a node first seen later is an untrained row until
then, which is what an OOV bucket gives).

Resumable: each (stream, mode, day) writes `<work>/<stream>/days/<mode>_<day>.json`
plus the model's checkpoint (two_stage: also its embedding table); a rerun
skips finished days and continues from the last checkpoint; graphs are built
once per (stream, day). Writes `benchmarks/results/bench_daily_refresh.json`
with the crossover analysis (`crossover`) that `benchmarks.report` renders.
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import glob
import json
import logging
import os
import time

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import tensorflow as tf

from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.datasets import examples as examples_lib
from e2e_grec.datasets import prepare, synthetic
from e2e_grec.datasets.dates import date_of, day_of
from e2e_grec.graph import builder
from e2e_grec.graph.manifest import GraphManifest
from e2e_grec.models import modes as modes_lib
from e2e_grec.models import two_stage
from e2e_grec.models.e2e_grec import E2EGRec
from e2e_grec.training import inputs as inputs_lib, loop

RESULTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                            "bench_daily_refresh.json")
MODES = ("no_graph", "e2e", "two_stage")
PHASES = ("graph_update", "gnn_refresh", "embedding_precompute", "ranker_update")
WARM = "warm"
# The synthetic generator's defaults are the size-1 world that `synthetic:N` scales.
_BASE = config_lib.SyntheticConfig()
SYNTHETIC_WARM_DAYS, SYNTHETIC_STREAM_DAYS = 2, 3


@dataclasses.dataclass(frozen=True)
class Stream:
  """One dataset as a daily stream: warm-start window, then one day at a time."""
  name: str
  data_dir: str
  config: config_lib.Config  # train window = warm start + stream days; eval = the day after
  warm_end: int
  impressions_per_day: int | None = None  # synthetic only

  @property
  def days(self) -> list[int]:
    return list(range(self.warm_end + 1, day_of(self.config.data.train_end) + 1))


def kuairand_stream(data_dir: str) -> Stream:
  config = config_lib.Config().replace(**{"data.data_dir": data_dir})
  return Stream("kuairand", data_dir, config, day_of("2022-04-30"))


def synthetic_stream(per_day: int, work: str) -> Stream:
  """N impressions a day; users, videos, authors, music scaled from the defaults."""
  scale = per_day / (_BASE.impressions / _BASE.days)
  days = SYNTHETIC_WARM_DAYS + SYNTHETIC_STREAM_DAYS + 1
  first = day_of(_BASE.start_date)
  config = config_lib.Config().replace(**{
      "synthetic.impressions": per_day * days, "synthetic.days": days,
      **{f"synthetic.{k}": max(1, round(getattr(_BASE, k) * scale))
         for k in ("users", "videos", "authors", "musics")},
      "data.train_start": str(date_of(first)),
      "data.train_end": str(date_of(first + days - 2)),
      "data.eval_start": str(date_of(first + days - 1)),
      "data.eval_end": str(date_of(first + days - 1))})
  name = f"synthetic_{per_day}"
  logs = os.path.join(work, name, "logs")
  if not glob.glob(os.path.join(logs, "log_standard_*.csv")):
    synthetic.generate(config.synthetic, logs)
  return Stream(name, logs, config.replace(**{"data.data_dir": logs}),
                first + SYNTHETIC_WARM_DAYS - 1, per_day)


@dataclasses.dataclass
class Prepared:
  """A stream's examples (train + eval together, sliced by day) and node tables."""
  examples_dir: str
  columns: dict[str, np.ndarray]
  tables: object

  def days(self, first: int, last: int) -> dict[str, np.ndarray]:
    day = self.columns[contracts.DAY]
    keep = (day >= first) & (day <= last)
    return {k: v[keep] for k, v in self.columns.items()}


def prepared(stream: Stream, work: str) -> Prepared:
  examples = os.path.join(work, stream.name, "examples")
  if not os.path.exists(os.path.join(examples, contracts.PREPARE_REPORT_FILE)):
    prepare.prepare(stream.config, stream.data_dir, examples)
  splits = [inputs_lib.load_split(examples, s) for s in contracts.SPLITS]
  columns = {k: np.concatenate([s[k] for s in splits]) for k in splits[0]}
  return Prepared(examples, columns, inputs_lib.load_tables(examples))


def graph_through(stream: Stream, data: Prepared, last: int, work: str) -> tuple[str, float]:
  """The graph of the training examples through day `last` (+ history), and its build s.

  Built once: a per-day example file is written once and an examples
  directory through `last` links the files up to it with the stream's node
  tables and history, so a rerun reads the build time from the manifest.
  """
  root = os.path.join(work, stream.name)
  graph_dir = os.path.join(root, "graphs", str(date_of(last)))
  os.makedirs(os.path.dirname(graph_dir), exist_ok=True)
  with open(graph_dir + ".lock", "w") as lock:  # Runs of other modes may share the stream.
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(os.path.join(graph_dir, contracts.MANIFEST_FILE)):
      _build_graph_through(stream, data, last, root, graph_dir)
  return graph_dir, GraphManifest.load(graph_dir).build_seconds


def _build_graph_through(stream: Stream, data: Prepared, last: int, root: str,
                         graph_dir: str) -> None:
  day_dir = os.path.join(root, "day_examples")
  examples = os.path.join(root, "graph_inputs", str(date_of(last)))
  split = contracts.split_dir(examples, contracts.TRAIN_SPLIT)
  os.makedirs(split, exist_ok=True)
  for day in range(day_of(stream.config.data.train_start), last + 1):
    path = os.path.join(day_dir, f"{date_of(day)}.gz")
    if not os.path.exists(path):
      examples_lib.write(path + ".tmp", data.days(day, day))
      os.replace(path + ".tmp", path)
    link = os.path.join(split, os.path.basename(path))
    if not os.path.lexists(link):
      os.symlink(path, link)
  for name in (contracts.NODE_TABLES_FILE, contracts.HISTORY_FILE):
    if not os.path.lexists(os.path.join(examples, name)):
      os.symlink(os.path.join(data.examples_dir, name), os.path.join(examples, name))
  builder.build_graph(stream.config, examples, graph_dir)


def train_pass(model: E2EGRec, inputs: inputs_lib.Inputs, epochs: int) -> int:
  """`epochs` passes of the model's own train step over `inputs.train`; returns steps."""
  step_fn = tf.function(model.train_step, input_signature=[inputs.train(0).element_spec])
  steps = 0
  for epoch in range(epochs):
    for batch in inputs.train(epoch):
      steps += 1
      loop.check_finite(steps, step_fn(batch))
  return steps


def known_nodes_cache(model: E2EGRec, inputs: inputs_lib.Inputs, data: Prepared,
                      through: int, batch_size: int) -> two_stage.EmbeddingCache:
  """Every user and video seen through day `through`, embedded with cutoff `through` + 1."""
  seen = data.days(0, through)
  columns = []
  for ns, other in (("user", "video"), ("video", "user")):
    ids = np.unique(seen[f"{ns}_id"])
    columns.append({f"{ns}_id": ids, f"{other}_id": -np.ones_like(ids),
                    contracts.DAY: np.full_like(ids, through + 1)})
  return two_stage.precompute(model, inputs.sampler, inputs.tables, columns, batch_size)


class ModeRun:
  """One mode's model carried through the stream, checkpointed after every day."""

  def __init__(self, stream: Stream, data: Prepared, mode: str, work: str):
    self.stream, self.data, self.mode = stream, data, mode
    self.config = stream.config.replace(**{"model.mode": mode})
    self.has_graph = modes_lib.of(self.config).has_encoder
    self.root = os.path.join(work, stream.name)
    self.work = work
    self.model: E2EGRec | None = None
    self.cache: two_stage.EmbeddingCache | None = None

  def _paths(self, step: str) -> tuple[str, str]:
    """(result JSON, state directory) of one step (WARM or a date)."""
    return (os.path.join(self.root, "days", f"{self.mode}_{step}.json"),
            os.path.join(self.root, "state", self.mode, step))

  def done(self, step: str) -> dict | None:
    path = self._paths(step)[0]
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def _inputs(self, train: dict, eval_: dict, through: int) -> tuple[inputs_lib.Inputs, float]:
    """Inputs over the graph through `through` (or none); the graph update s it cost."""
    if not self.has_graph:
      return inputs_lib.Inputs(self.config, train, eval_, None, self.data.tables), 0.0
    graph_dir, build_s = graph_through(self.stream, self.data, through, self.work)
    started = time.time()
    sampler = inputs_lib.make_sampler(self.config, graph_dir, self.data.tables)
    return (inputs_lib.Inputs(self.config, train, eval_, sampler, self.data.tables),
            build_s + time.time() - started)

  def _ensure_model(self, inputs: inputs_lib.Inputs, restore_from: str | None) -> None:
    if self.model is not None:
      return
    tf.keras.utils.set_random_seed(self.config.train.seed)
    model = E2EGRec(self.data.tables, self.config)
    model.compile(optimizer=tf.keras.optimizers.Adam(self.config.train.learning_rate))
    model(next(iter(inputs.train(0, use_cache=False).take(1))))
    model.balancer.loss_weights()
    if restore_from:
      self._checkpoint(model).read(os.path.join(restore_from, "ckpt")).expect_partial()
      if self.mode == "two_stage":
        self.cache = two_stage.EmbeddingCache.load(restore_from)
    self.model = model

  @staticmethod
  def _checkpoint(model: E2EGRec) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer)

  def _finish(self, step: str, record: dict) -> dict:
    result_path, state = self._paths(step)
    os.makedirs(state, exist_ok=True)
    self._checkpoint(self.model).write(os.path.join(state, "ckpt"))
    if self.cache is not None:
      self.cache.save(state)
    record.update(stream=self.stream.name, mode=self.mode, step=step)
    os.makedirs(os.path.dirname(result_path), exist_ok=True)
    with open(result_path + ".tmp", "w") as f:
      json.dump(record, f, indent=2)
    os.replace(result_path + ".tmp", result_path)
    logging.info("%s %s %s: %s", self.stream.name, self.mode, step, record)
    return record

  def _score(self, inputs: inputs_lib.Inputs) -> dict:
    metrics = loop.evaluate(self.model, inputs)
    return {"examples": len(inputs.eval_columns["user_id"]),
            "mean_gauc": metrics["mean_gauc"], "mean_auc": metrics["mean_auc"]}

  def warm_start(self) -> dict:
    """Trains from scratch on the warm-start window (two_stage: pretrain, precompute, rank)."""
    if (done := self.done(WARM)) is not None:
      return done
    first = day_of(self.config.data.train_start)
    warm = self.data.days(first, self.stream.warm_end)
    next_day = self.data.days(self.stream.warm_end + 1, self.stream.warm_end + 1)
    inputs, _ = self._inputs(warm, next_day, self.stream.warm_end)
    self._ensure_model(inputs, None)
    started, train = time.time(), self.config.train
    if self.mode == "two_stage":
      two_stage.pretrain(self.model, lambda e: inputs.train(e, use_cache=False),
                         train.pretrain_epochs, train.learning_rate)
      inputs.use_cache(two_stage.precompute(self.model, inputs.sampler, inputs.tables,
                                            [warm], train.batch_size).lookup_fn(inputs.tables))
    train_pass(self.model, inputs, train.epochs)
    if self.mode == "two_stage":  # Day 1's serving table: every known node, cutoff day 1.
      self.cache = known_nodes_cache(self.model, inputs, self.data, self.stream.warm_end,
                                     train.batch_size)
    return self._finish(WARM, {"examples": len(warm["user_id"]),
                               "seconds": round(time.time() - started, 2)})

  def day(self, day: int, restore_from: str | None) -> dict:
    """Processes day `day` (see the module docstring) and scores day + 1."""
    if (done := self.done(str(date_of(day)))) is not None:
      return done
    today, tomorrow = self.data.days(day, day), self.data.days(day + 1, day + 1)
    inputs, graph_s = self._inputs(today, tomorrow, day)
    self._ensure_model(inputs, restore_from)
    phase = dict.fromkeys(PHASES, 0.0)
    phase["graph_update"] = graph_s
    known = None
    if self.mode == "two_stage":
      # The ranker learns from what was served on `day`: yesterday's table.
      inputs.use_cache(self.cache.lookup_fn(inputs.tables))
    started = time.time()
    steps = train_pass(self.model, inputs, 1)
    phase["ranker_update"] = time.time() - started
    if self.mode == "two_stage":
      started = time.time()
      two_stage.pretrain(self.model, lambda e: inputs.train(e, use_cache=False), 1,
                         self.config.train.learning_rate)
      phase["gnn_refresh"] = time.time() - started
      started = time.time()
      self.cache = known_nodes_cache(self.model, inputs, self.data, day,
                                     self.config.train.batch_size)
      phase["embedding_precompute"] = time.time() - started
      known = int(sum(len(v) for v in self.cache.keys.values()))
      inputs.use_cache(self.cache.lookup_fn(inputs.tables))
    return self._finish(str(date_of(day)), {
        "examples": len(today["user_id"]), "steps": steps, "known_nodes": known,
        "history_examples": len(self.data.days(0, day)["user_id"]),
        "phase_s": {k: round(v, 2) for k, v in phase.items()},
        "total_s": round(sum(phase.values()), 2), "next_day": self._score(inputs)})

  def run(self) -> list[dict]:
    records = [self.warm_start()]
    previous = self._paths(WARM)[1]
    for day in self.stream.days:
      records.append(self.day(day, previous))
      previous = self._paths(str(date_of(day)))[1]
    return records


# -- summary -----------------------------------------------------------------

def _fit(days: list[dict], size, seconds) -> tuple[float, float]:
  """(fixed s, s per unit) of `seconds(day)` against `size(day)`.

  One point per stream (its mean day): the days of one stream differ too
  little in size to separate a fixed cost from a rate. Least squares over the
  streams, or through the origin with a single stream.
  """
  streams = sorted({d["stream"] for d in days})
  x = np.array([np.mean([size(d) for d in days if d["stream"] == s]) for s in streams])
  y = np.array([np.mean([seconds(d) for d in days if d["stream"] == s]) for s in streams])
  if len(streams) < 2:
    return 0.0, float(y.sum() / max(x.sum(), 1e-9))
  slope, intercept = np.polyfit(x, y, 1)
  return float(intercept), float(slope)


def crossover(days: list[dict], nodes_per_example: dict[str, float] | None = None) -> dict:
  """Where e2e's day becomes cheaper than two_stage's, from how each phase grows.

  Both graph modes pay the same graph update, so it cancels. Per day,
  two_stage - e2e = (fixed) + (fine-tune + ranker - e2e update) s per day
  example + precompute s per known node. e2e is cheaper once the known
  nodes per day example exceed `nodes_per_day_example`.
  """
  by_mode = {m: [d for d in days if d["mode"] == m] for m in ("e2e", "two_stage")}
  if not all(by_mode.values()):
    return {}
  examples, nodes = (lambda d: d["examples"]), (lambda d: d["known_nodes"])
  phase = lambda p: lambda d: d["phase_s"][p]
  e2e = _fit(by_mode["e2e"], examples, phase("ranker_update"))
  ranker = _fit(by_mode["two_stage"], examples, phase("ranker_update"))
  refresh = _fit(by_mode["two_stage"], examples, phase("gnn_refresh"))
  precompute = _fit(by_mode["two_stage"], nodes, phase("embedding_precompute"))
  per_example = refresh[1] + ranker[1] - e2e[1]
  fixed = refresh[0] + ranker[0] + precompute[0] - e2e[0]
  cheaper = {}
  for d in by_mode["e2e"]:
    match = [t for t in by_mode["two_stage"]
             if (t["stream"], t["step"]) == (d["stream"], d["step"])]
    if match:
      cheaper.setdefault(d["stream"], []).append(d["total_s"] < match[0]["total_s"])
  return {
      "e2e_update_s_per_example": e2e[1], "two_stage_ranker_s_per_example": ranker[1],
      "two_stage_gnn_refresh_s_per_example": refresh[1],
      "two_stage_precompute_s_per_node": precompute[1],
      "two_stage_minus_e2e_fixed_s": fixed,
      "two_stage_minus_e2e_s_per_day_example": per_example,
      # e2e cheaper when fixed + per_example * n + per_node * N > 0, i.e. N / n above this
      # (for large n); <= 0 means e2e is cheaper at any graph size.
      "nodes_per_day_example": (-per_example / precompute[1] if precompute[1] > 0 else None),
      # With e2e's larger fixed cost (mostly tracing), the day size from which the
      # per-example saving alone repays it.
      "break_even_day_examples": (-fixed / per_example if fixed < 0 < per_example else None),
      # The same with the re-embedding counted, at each stream's known nodes per day example.
      "break_even_day_examples_at_stream_ratio": {
          s: -fixed / (per_example + precompute[1] * r)
          for s, r in (nodes_per_example or {}).items()
          if fixed < 0 < per_example + precompute[1] * r},
      "e2e_cheaper_days": {s: f"{sum(v)}/{len(v)}" for s, v in cheaper.items()},
  }


def summarize(work: str) -> dict:
  """Every stream under `work` with finished days (so concurrent runs each write all)."""
  days, out = [], {"streams": {}, "config": {}}
  names = sorted(os.path.basename(os.path.dirname(p))
                 for p in glob.glob(os.path.join(work, "*", "days")))
  for name in sorted(names, key=lambda n: (n != "kuairand", len(n), n)):
    records = []
    for path in sorted(glob.glob(os.path.join(work, name, "days", "*.json"))):
      with open(path) as f:
        records.append(json.load(f))
    stream_days = [r for r in records if r["step"] != WARM]
    days += stream_days
    warm = {r["mode"]: r for r in records if r["step"] == WARM}
    modes = {}
    for mode in MODES:
      mine = [r for r in stream_days if r["mode"] == mode]
      if not mine:
        continue
      modes[mode] = {
          "days": [{k: r[k] for k in ("step", "examples", "known_nodes", "history_examples",
                                      "phase_s", "total_s", "next_day")} for r in mine],
          "mean_day_examples": float(np.mean([r["examples"] for r in mine])),
          "mean_phase_s": {p: float(np.mean([r["phase_s"][p] for r in mine])) for p in PHASES},
          "mean_total_s": float(np.mean([r["total_s"] for r in mine])),
          "mean_next_day_gauc": float(np.mean([r["next_day"]["mean_gauc"] for r in mine])),
          "mean_next_day_auc": float(np.mean([r["next_day"]["mean_auc"] for r in mine])),
          "warm_start_s": warm.get(mode, {}).get("seconds")}
    if modes:
      refreshed = modes.get("two_stage", {}).get("days", [])
      out["streams"][name] = {
          "known_nodes_per_day_example": (float(np.mean(
              [d["known_nodes"] / d["examples"] for d in refreshed])) if refreshed else None),
          "modes": modes}
  out["crossover"] = crossover(days, {s: v["known_nodes_per_day_example"]
                                     for s, v in out["streams"].items()
                                     if v["known_nodes_per_day_example"] is not None})
  config = config_lib.Config()
  out["config"] = {"daily_update_epochs": 1, "gnn_refresh_epochs": 1,
                   "warm_start_epochs": config.train.epochs,
                   "batch_size": config.train.batch_size,
                   "sampling.fanouts": list(config.sampling.fanouts),
                   "model.gnn_layers": config.model.gnn_layers,
                   "cpu_count": os.cpu_count()}
  return out


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--streams", nargs="+", default=["kuairand", "synthetic:100000"],
                      help="kuairand and/or synthetic:N (N impressions a day).")
  parser.add_argument("--data", default=config_lib.default_shared_data_dir(),
                      help="KuaiRand-Pure directory (default: the shared copy).")
  parser.add_argument("--work", default="/tmp/e2e_grec_bench_daily_refresh",
                      help="Generated logs, prepared data, graphs, checkpoints, per-day results.")
  parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
  parser.add_argument("--summarize-only", action="store_true",
                      help="Only write the results from the finished days under --work.")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  for spec in args.streams:
    kind, _, size = spec.partition(":")
    if kind == "kuairand":
      if not args.data:
        parser.error("no KuaiRand data: pass --data")
      stream = None if args.summarize_only else kuairand_stream(args.data)
    elif kind == "synthetic" and size.isdigit() and int(size) > 0:
      stream = None if args.summarize_only else synthetic_stream(int(size), args.work)
    else:
      parser.error(f"--streams: {spec!r} is neither 'kuairand' nor 'synthetic:N' (N > 0)")
    if stream is not None:
      data = prepared(stream, args.work)
      for mode in args.modes:
        ModeRun(stream, data, mode, args.work).run()
        write(summarize(args.work))
  summary = summarize(args.work)
  write(summary)
  return summary


def write(summary: dict) -> None:
  os.makedirs(os.path.dirname(RESULTS_FILE), exist_ok=True)
  tmp = f"{RESULTS_FILE}.{os.getpid()}.tmp"  # Concurrent runs each replace it whole.
  with open(tmp, "w") as f:
    json.dump(summary, f, indent=2)
  os.replace(tmp, RESULTS_FILE)


if __name__ == "__main__":
  main()
