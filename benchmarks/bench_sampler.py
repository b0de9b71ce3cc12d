"""Sampling throughput: `SubgraphSampler` against TF-GNN's in-memory sampling model.

    python -m benchmarks.bench_sampler [--data DIR] [--graph DIR --examples DIR]

1. Same graph, same spec, side by side. The click graph of the training window
   (user -> video, one edge per (user, video, day), plus its reverse) is built
   from the raw log. An example needs a user-rooted and a video-rooted 2-hop
   [15, 10] subgraph (click then rev_click, and rev_click then click). Seeds
   are eval-window impressions, so every training edge is admissible for our
   time-filtered sampler and both samplers see the same neighbourhoods. Both
   are fed the same seeds through `tf.data` in batches of 128: ours with
   `.map(sampler)`, TF-GNN's `create_sampling_model_from_spec` +
   `InMemUniformEdgesSampler` with `.map(sampling_model)` on ragged seeds, as in
   its in-memory sampler guide (one model per seed node set).
2. The default `SamplingConfig` on the full graph (`prepare` + `build-graph`
   output, built into --work when --graph is not given), at batch 128 and the
   trainer's batch size, for comparison with the trainer's 2-20k examples/s.

Rounds alternate between the samplers and the best round of each is kept, so
load from other processes on a shared machine hurts both alike. Writes
benchmarks/results/bench_sampler.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import os
import time

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_gnn as tfgnn
from tensorflow_gnn.experimental import sampler as tfgnn_sampler

from benchmarks import inputs
from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.datasets import vocab
from e2e_grec.datasets.dates import day_of
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.graph.sampler import SubgraphSampler
from e2e_grec.graph.sampling_index import EdgeArrays, SamplingIndex

BATCH = 128
FANOUTS = (15, 10)
RESULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                      "bench_sampler.json")


def _log(data_dir: str) -> pd.DataFrame:
  paths = sorted(glob.glob(os.path.join(data_dir, "log_standard_*.csv")))
  if not paths:
    raise SystemExit(f"no log_standard_*.csv in {data_dir}")
  columns = ["user_id", "video_id", "date", "is_click", "tab"]
  log = pd.concat([pd.read_csv(p, usecols=columns) for p in paths], ignore_index=True)
  dates = pd.to_datetime(log["date"].astype(str), format="%Y%m%d")
  log["day"] = (dates - pd.Timestamp("1970-01-01")).dt.days
  return log


def click_graph(data_dir: str, data: config_lib.DataConfig, num_seeds: int, rng):
  """Vocabularies, click-graph index and eval seeds (raw ids and indices)."""
  log = _log(data_dir)
  train = log[log["day"].between(day_of(data.train_start), day_of(data.train_end))]
  seeds = log[log["day"].between(day_of(data.eval_start), day_of(data.eval_end))]
  if not len(train) or not len(seeds):
    raise SystemExit(f"{data_dir}: empty training or eval window in the log")
  ids = {ns: np.unique(train[f"{ns}_id"].to_numpy()) for ns in ("user", "video")}
  clicks = train[train["is_click"] == 1].drop_duplicates(["user_id", "video_id", "day"])
  arrays = {f"{ns}/ids": v for ns, v in ids.items()}
  index_of = lambda ns, raw: vocab.index(arrays, ns, np.asarray(raw))
  edges = EdgeArrays("user", "video", index_of("user", clicks["user_id"]),
                     index_of("video", clicks["video_id"]), clicks["day"].to_numpy(),
                     clicks["tab"].to_numpy())
  sizes = {ns: len(v) + 1 for ns, v in ids.items()}
  index = SamplingIndex.from_edges({"click": edges}, sizes)
  seeds = seeds.iloc[rng.choice(len(seeds), num_seeds, replace=num_seeds > len(seeds))]
  raw = {"user_id": seeds["user_id"].to_numpy(np.int64),
         "video_id": seeds["video_id"].to_numpy(np.int64),
         "day": seeds["day"].to_numpy(np.int64)}
  indices = {"user": index_of("user", raw["user_id"]),
             "video": index_of("video", raw["video_id"])}
  tables = NodeTables(arrays)
  return index, tables, raw, indices


def tfgnn_models(index: SamplingIndex) -> dict[str, tf.keras.Model]:
  """TF-GNN sampling models over the same edges: user-rooted and video-rooted."""
  click = index.edge_sets["click"]
  source = np.repeat(np.arange(len(click.row_splits) - 1), np.diff(click.row_splits))
  sizes = index.node_set_sizes
  as_tensor = lambda x: tf.constant(np.asarray(x, np.int64))
  full_graph = tfgnn.GraphTensor.from_pieces(
      node_sets={ns: tfgnn.NodeSet.from_fields(sizes=as_tensor([sizes[ns]]))
                 for ns in ("user", "video")},
      edge_sets={
          "click": tfgnn.EdgeSet.from_fields(
              sizes=as_tensor([len(source)]),
              adjacency=tfgnn.Adjacency.from_indices(("user", as_tensor(source)),
                                                     ("video", as_tensor(click.targets)))),
          "rev_click": tfgnn.EdgeSet.from_fields(
              sizes=as_tensor([len(source)]),
              adjacency=tfgnn.Adjacency.from_indices(("video", as_tensor(click.targets)),
                                                     ("user", as_tensor(source))))})
  schema = tfgnn.create_schema_pb_from_graph_spec(full_graph.spec)

  def edge_sampler(op):
    return tfgnn_sampler.InMemUniformEdgesSampler.from_graph_tensor(
        full_graph, op.edge_set_name, sample_size=op.sample_size, name=op.op_name)

  models = {}
  for root, first, second in (("user", "click", "rev_click"),
                              ("video", "rev_click", "click")):
    builder = tfgnn.sampler.SamplingSpecBuilder(
        schema, default_strategy=tfgnn.sampler.SamplingStrategy.RANDOM_UNIFORM)
    builder.seed(root).sample(FANOUTS[0], first).sample(FANOUTS[1], second)
    models[root] = tfgnn_sampler.create_sampling_model_from_spec(
        schema, builder.build(), edge_sampler, seed_node_dtype=tf.int64)
  return models


def _ragged(seeds: tf.Tensor) -> tf.RaggedTensor:
  return tf.RaggedTensor.from_row_lengths(seeds, tf.ones_like(seeds))


def _time(dataset: tf.data.Dataset, examples: int) -> float:
  """Examples/s of one full pass, after a warm-up element."""
  next(iter(dataset))
  start = time.perf_counter()
  for _ in dataset:
    pass
  return examples / (time.perf_counter() - start)


def _subgraph_size(graph: tfgnn.GraphTensor) -> dict[str, int]:
  """Sampled nodes and edges of a (batch of) graph(s), readout structure excluded."""
  nodes = sum(int(tf.reduce_sum(ns.sizes)) for n, ns in graph.node_sets.items()
              if not n.startswith("_"))
  edges = sum(int(tf.reduce_sum(es.sizes)) for n, es in graph.edge_sets.items()
              if not n.startswith("_"))
  return {"nodes": nodes, "edges": edges}


def compare_with_tfgnn(data_dir: str, config: config_lib.Config, batches: int,
                       rounds: int) -> dict:
  rng = np.random.default_rng(0)
  num = batches * BATCH
  index, tables, raw, indices = click_graph(data_dir, config.data, num, rng)
  sampling = config_lib.SamplingConfig(fanouts=FANOUTS, edge_sets=("click",))
  ours = SubgraphSampler(index, tables, sampling)
  models = tfgnn_models(index)
  raw_ds = tf.data.Dataset.from_tensor_slices(raw).batch(BATCH)
  index_ds = tf.data.Dataset.from_tensor_slices(indices).batch(BATCH)
  pipelines = {
      "ours": raw_ds.map(lambda b: ours(b["user_id"], b["video_id"], b["day"])),
      "tfgnn": index_ds.map(lambda b: (models["user"](_ragged(b["user"])),
                                       models["video"](_ragged(b["video"])))),
      "tfgnn_user_rooted_only": index_ds.map(lambda b: models["user"](_ragged(b["user"]))),
  }
  best = {name: 0.0 for name in pipelines}
  for r in range(rounds):
    for name, ds in pipelines.items():
      best[name] = max(best[name], _time(ds, num))
    logging.info("round %d: %s", r + 1, {k: round(v) for k, v in best.items()})

  one = next(iter(pipelines["ours"]))
  theirs = next(iter(pipelines["tfgnn"]))
  size = {"ours": _subgraph_size(one),
          "tfgnn": {k: _subgraph_size(g) for k, g in zip(("user", "video"), theirs)}}
  per_example = lambda s: {k: round(s[k] / BATCH, 1) for k in ("nodes", "edges")}
  return {
      "graph": {"edges": {n: es.num_edges for n, es in index.edge_sets.items()},
                "nodes": dict(index.node_set_sizes)},
      "spec": f"user- and video-rooted 2-hop {list(FANOUTS)} over click/rev_click",
      "seeds": f"{num} eval-window impressions, batches of {BATCH} through tf.data",
      "examples_per_second": {k: round(v) for k, v in best.items()},
      "ratio_ours_over_tfgnn": round(best["ours"] / best["tfgnn"], 2),
      "tfgnn_user_rooted_subgraphs_per_second": round(best["tfgnn_user_rooted_only"]),
      "per_example_ours": per_example(size["ours"]),
      "per_example_tfgnn": {k: per_example(v) for k, v in size["tfgnn"].items()},
  }


def _eval_examples(examples_dir: str, limit: int) -> dict[str, np.ndarray]:
  files = sorted(glob.glob(contracts.split_glob(examples_dir, contracts.EVAL_SPLIT)))
  if not files:
    raise SystemExit(f"no eval examples under "
                     f"{contracts.split_dir(examples_dir, contracts.EVAL_SPLIT)}")
  spec = {k: tf.io.FixedLenFeature([], tf.int64) for k in ("user_id", "video_id", "day")}
  ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit).batch(limit)
  batch = tf.io.parse_example(next(iter(ds)), spec)
  return {k: v.numpy() for k, v in batch.items()}


def default_config_throughput(examples_dir: str, graph_dir: str, config: config_lib.Config,
                              batches: int, rounds: int) -> dict:
  index = SamplingIndex.load(graph_dir)
  tables = NodeTables.load(os.path.join(examples_dir, contracts.NODE_TABLES_FILE))
  sampler = SubgraphSampler(index, tables, config.sampling)
  out = {"sampling": dataclasses.asdict(config.sampling),
         "sampled_edge_sets": list(sampler.edge_set_names),
         "graph_edges": {n: es.num_edges for n, es in index.edge_sets.items()},
         "examples_per_second": {}, "per_example": {}}
  for batch in (BATCH, config.train.batch_size):
    seeds = _eval_examples(examples_dir, batches * batch)
    num = len(seeds["day"])
    ds = tf.data.Dataset.from_tensor_slices(seeds).batch(batch).map(
        lambda b: sampler(b["user_id"], b["video_id"], b["day"]))
    out["examples_per_second"][f"batch_{batch}"] = round(
        max(_time(ds, num) for _ in range(rounds)))
    size = _subgraph_size(next(iter(ds)))
    out["per_example"][f"batch_{batch}"] = {k: round(size[k] / batch, 1)
                                            for k in ("nodes", "edges")}
  return out


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  inputs.add_arguments(parser, "e2e_grec_bench_sampler")
  parser.add_argument("--batches", type=int, default=40, help="Batches per timed pass.")
  parser.add_argument("--rounds", type=int, default=3, help="Timed passes per sampler.")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  config = config_lib.Config()

  data_dir = inputs.data_dir(args, config)

  # Load from other processes depresses absolute numbers; the ratio is robust.
  result = {"data": data_dir, "cpu_count": os.cpu_count(), "batch": BATCH,
            "load_average_at_start": os.getloadavg()[0]}
  result["same_graph"] = compare_with_tfgnn(data_dir, config, args.batches, args.rounds)
  same = result["same_graph"]
  print(f"same graph ({same['spec']}; {same['seeds']}):")
  for name, value in same["examples_per_second"].items():
    print(f"  {name:24s} {value:>9,} examples/s")
  print(f"  ratio ours / TF-GNN: {same['ratio_ours_over_tfgnn']}x "
        f"(target >= 3x); TF-GNN user-rooted alone: "
        f"{same['tfgnn_user_rooted_subgraphs_per_second']:,} subgraphs/s")

  examples_dir, graph_dir = inputs.prepared(args, config)
  result["default_config"] = default_config_throughput(
      examples_dir, graph_dir, config, max(args.batches // 4, 5), args.rounds)
  default = result["default_config"]
  print(f"default sampling config {default['sampling']['fanouts']} over "
        f"{len(default['sampled_edge_sets'])} edge sets (with rev_):")
  for name, value in default["examples_per_second"].items():
    print(f"  {name:24s} {value:>9,} examples/s  ({default['per_example'][name]} per example)")

  result["load_average_at_end"] = os.getloadavg()[0]
  print(f"load average {result['load_average_at_start']:.1f} at start, "
        f"{result['load_average_at_end']:.1f} at end, on {os.cpu_count()} cores")
  os.makedirs(os.path.dirname(RESULT), exist_ok=True)
  with open(RESULT, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {RESULT}")
  return result


if __name__ == "__main__":
  main()
