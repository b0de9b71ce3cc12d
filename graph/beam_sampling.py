"""Leak-free per-example subgraph sampling with Apache Beam, for graphs beyond one machine.

`sample_subgraphs(config, examples_dir, graph_dir, out_dir)` writes, for every
example of each split, the subgraph that the in-memory `SubgraphSampler`
(graph/sampler.py) returns for that example alone (a batch of one): the same
`SamplingPlan`, the same day cutoff, the same SplitMix64 keys and the same
rotated stratified neighbour choice, so the two paths draw the same
neighbours. Nothing holds the whole graph: edges stay in Beam, sharded by
source node. TF-GNN 1.0's Beam sampler has no time filter (its edge samplers
are uniform and top-k), hence this transform.

How it scales (columnar NumPy chunks keyed by shard, as in graph/builder.py):

* Adjacency: each traversed edge set is read from its unigraph file
  (`rev_<name>` swapped, `co_engage` in both directions), keyed by
  `source % graph.shards` and sorted per shard by (edge set, source, day,
  target): the CSR row order of the sampling index.
* Hop h: every example's frontier nodes become queries (step, node, cutoff),
  joined with the adjacency shard of the node; each distinct query is sampled
  once (the draw depends only on the seed, the step, the node and the cutoff).
  The sampled edges go back to the example's shard, where the nodes not yet in
  the example's subgraph form its next frontier.
* Leakage: a node only follows edges with `day < cutoff`, the cutoff being the
  example's day at every hop, so the example's own interaction and anything
  on or after its day are never sampled.

Output (the `Subgraphs` artifact of components/beam_subgraph_sampler):
`<out>/Split-<split>/*.gz`, GZIP TFRecords of the split's tf.Examples, each
the example's own features plus its subgraph in TF-GNN's tf.Example encoding
(the request format of the SavedModel's `serving_default`), and
`<out>/graph_schema.pbtxt`, the subgraphs' schema. Train examples are sampled
with the in-trainer path's first-epoch seed, eval examples with the serving
seed (`split_seed`).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Iterable, Iterator, Sequence

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow, also in Beam workers)
import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_gnn as tfgnn
from tensorflow_gnn.data import unigraph

from e2e_grec import contracts
from e2e_grec.config import Config
from e2e_grec.datasets import node_tables as node_tables_lib
from e2e_grec.datasets import vocab
from e2e_grec.graph import builder
from e2e_grec.graph import sampling_index as index_lib
from e2e_grec.graph.columnar import Columns, by_shard, concat, length, take
from e2e_grec.graph.sampling_plan import SamplingPlan, schema_endpoints

_RADIX = index_lib.DAY_RADIX
_PARSE_BATCH = 65_536

# SplitMix64 (graph/sampler.py) on uint64, whose arithmetic wraps like the sampler's int64.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def split_seed(config: Config, split: str) -> int:
  """The sampling seed of a split: the in-trainer path's first epoch, or the serving seed."""
  return config.sampling.seed + (1 if split == contracts.TRAIN_SPLIT else 0)


def _mix(z: np.ndarray) -> np.ndarray:
  z = np.asarray(z, np.uint64) + _GOLDEN
  z = (z ^ (z >> np.uint64(30))) * _MIX_1
  z = (z ^ (z >> np.uint64(27))) * _MIX_2
  return z ^ (z >> np.uint64(31))


def _floor_times(h: np.ndarray, n: np.ndarray) -> np.ndarray:
  """floor(u * n) for the uniform u of hash h (its top 53 bits), as graph/sampler.py."""
  u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
  return np.minimum(np.floor(u * n.astype(np.float64)).astype(np.int64),
                    np.maximum(n - 1, 0))


def _ragged_range(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Flat (row, j) for j in range(lengths[row])."""
  row = np.repeat(np.arange(len(lengths)), lengths)
  starts = np.cumsum(lengths) - lengths
  return row, np.arange(len(row)) - starts[row]


class _Layout:
  """The in-memory sampler's global node numbering and the plan's steps, as arrays."""

  def __init__(self, plan: SamplingPlan, node_set_sizes: dict[str, int], seed: int,
               with_tab: Sequence[str]):
    self.plan = plan
    sizes = [node_set_sizes.get(ns, 1) for ns in contracts.NODE_SETS]
    self.node_offset = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    self.set_id = {ns: i for i, ns in enumerate(contracts.NODE_SETS)}
    self.edge_set_names = plan.edge_set_names
    self.with_tab = tuple(with_tab)
    steps = plan.steps
    self.step_edge_set = np.array([self.edge_set_names.index(s.edge_set) for s in steps])
    self.step_source = np.array([self.set_id[s.source_set] for s in steps])
    self.step_target = np.array([self.set_id[s.target_set] for s in steps])
    self.step_fanout = np.array([s.fanout for s in steps], np.int64)
    self.step_hop = np.array([s.hop for s in steps])
    with np.errstate(over="ignore"):
      self.streams = _mix(np.uint64(seed % 2**64) + np.array([s.stream for s in steps],
                                                             np.uint64))
    # Rows of the fused adjacency: edge set * row_radix + local source node.
    self.row_radix = int(max(sizes))

  def node_set_of(self, node: np.ndarray) -> np.ndarray:
    return np.searchsorted(self.node_offset[1:-1], node, side="right")


def _read_edge_set(element: tuple[int, str], graph_dir: str, layout: _Layout,
                   shards: int) -> Iterator[tuple[int, Columns]]:
  """One traversed edge set's unigraph file -> (source shard, columnar edges)."""
  edge_set_id, name = element
  path = os.path.join(graph_dir, builder.edge_path(name))
  with_tab = name in layout.with_tab
  spec = {unigraph.SOURCE_ID: tf.io.FixedLenFeature([], tf.string),
          unigraph.TARGET_ID: tf.io.FixedLenFeature([], tf.string),
          "day": tf.io.FixedLenFeature([], tf.int64)}
  if with_tab:
    spec["tab"] = tf.io.FixedLenFeature([], tf.int64)
  to_int = lambda s: tf.strings.to_number(s, tf.int64)
  dataset = (tf.data.TFRecordDataset(path).batch(_PARSE_BATCH)
             .map(lambda s: tf.io.parse_example(s, spec)))
  reverse = name.startswith(contracts.REVERSE_PREFIX)
  symmetric = name in builder.SYMMETRIC
  try:
    for batch in dataset:
      source, target = to_int(batch[unigraph.SOURCE_ID]).numpy(), to_int(
          batch[unigraph.TARGET_ID]).numpy()
      if reverse:
        source, target = target, source
      day = batch["day"].numpy()
      tab = batch["tab"].numpy() if with_tab else np.zeros_like(day)
      if symmetric:  # both directions; duplicates go once the shard is grouped
        source, target = np.concatenate([source, target]), np.concatenate([target, source])
        day, tab = np.concatenate([day, day]), np.concatenate([tab, tab])
      edges = {"edge_set": np.full(len(day), edge_set_id, np.int64), "source": source,
               "target": target, "day": day, "tab": tab}
      yield from by_shard(edges, source, shards)
  except tf.errors.OpError as e:
    raise ValueError(f"{path}: not a unigraph edge file with #source, #target, day"
                     f"{', tab' if with_tab else ''}: {e.message}") from None


def _adjacency(element: tuple[int, Iterable[Columns]], layout: _Layout) -> tuple[int, Columns]:
  """A shard's edges as CSR-ordered rows with their composite (row, day) keys."""
  shard, chunks = element
  edges = concat(chunks)
  symmetric = np.isin(edges["edge_set"], [layout.edge_set_names.index(n)
                                          for n in builder.SYMMETRIC
                                          if n in layout.edge_set_names])
  if symmetric.any():  # as SamplingIndex.from_edges: (source, target, day) once
    keyed = np.stack([edges["edge_set"], edges["source"], edges["target"], edges["day"]])
    _, first = np.unique(keyed[:, symmetric], axis=1, return_index=True)
    keep = np.concatenate([np.flatnonzero(~symmetric), np.flatnonzero(symmetric)[first]])
    edges = take(edges, keep)
  row = edges["edge_set"] * layout.row_radix + edges["source"]
  edges = take(edges, np.lexsort((edges["target"], edges["day"], row)))
  key = (edges["edge_set"] * layout.row_radix + edges["source"]) * _RADIX + edges["day"]
  return shard, {"key": key, "target": edges["target"], "tab": edges["tab"]}


class _ReadExamples(beam.DoFn):
  """A split's example file -> (example shard, examples with their seed node indices)."""

  def __init__(self, node_tables_path: str, shards: int):
    self._path, self._shards = node_tables_path, shards
    self._arrays: dict[str, np.ndarray] = {}

  def setup(self):
    self._arrays = node_tables_lib.load_arrays(self._path)

  def process(self, element: tuple[int, str]):
    file_index, path = element
    spec = {name: tf.io.FixedLenFeature([], tf.int64)
            for name in (contracts.USER_ID, contracts.VIDEO_ID, contracts.DAY)}
    dataset = tf.data.TFRecordDataset(path, compression_type="GZIP").batch(_PARSE_BATCH)
    read = 0
    try:
      for records in dataset.as_numpy_iterator():
        features = {k: v.numpy() for k, v in tf.io.parse_example(records, spec).items()}
        count = len(records)
        rows = {"example": (file_index << 40) + read + np.arange(count, dtype=np.int64),
                "user": vocab.index(self._arrays, "user", features[contracts.USER_ID]),
                "video": vocab.index(self._arrays, "video", features[contracts.VIDEO_ID]),
                "day": np.clip(features[contracts.DAY], 0, _RADIX - 1),
                "record": np.asarray(records, object)}
        read += count
        yield from by_shard(rows, rows["example"], self._shards)
    except tf.errors.OpError as e:
      raise ValueError(f"{path}: not a GZIP TFRecord of tf.Examples with int64 "
                       f"user_id, video_id, day: {e.message}") from None


def _seed_nodes(element: tuple[int, Iterable[Columns]], layout: _Layout
                ) -> tuple[int, Columns]:
  """An example shard's examples -> their subgraph nodes so far: the two seeds."""
  shard, chunks = element
  rows = concat(chunks)
  offset = layout.node_offset
  nodes = {"example": np.repeat(rows["example"], 2),
           "node": np.stack([rows["user"] + offset[layout.set_id["user"]],
                             rows["video"] + offset[layout.set_id["video"]]], 1).reshape(-1),
           "cutoff": np.repeat(rows["day"], 2)}
  return shard, _unique_nodes(nodes)


def _unique_nodes(nodes: Columns) -> Columns:
  """(example, node) pairs once (a node of an example always has the example's cutoff)."""
  if not length(nodes):
    return nodes
  _, first = np.unique(np.stack([nodes["example"], nodes["node"]]), axis=1, return_index=True)
  return take(nodes, np.sort(first))


def _queries(nodes: Columns, hop: int, layout: _Layout, shards: int
             ) -> Iterator[tuple[int, Columns]]:
  """Frontier nodes -> (node shard, the hop's (step, node, cutoff, example) queries)."""
  node_set = layout.node_set_of(nodes["node"])
  steps = np.flatnonzero(layout.step_hop == hop)
  matches = node_set[:, None] == layout.step_source[steps][None, :]
  which, step = np.nonzero(matches)
  queries = {**take(nodes, which), "step": steps[step]}
  local = queries["node"] - layout.node_offset[node_set[which]]
  yield from by_shard(queries, local, shards)


def _sample(element: tuple[int, dict[str, list[Columns]]], layout: _Layout, shards: int
            ) -> Iterator[tuple[int, Columns]]:
  """One node shard: samples every distinct query from the shard's adjacency.

  The neighbour choice of graph/sampler.py `SubgraphSampler._expand`, in NumPy.
  """
  _, groups = element
  if not groups["queries"]:
    return
  queries = concat(groups["queries"])
  adjacency = (concat(groups["adjacency"]) if groups["adjacency"]
               else {"key": np.zeros([0], np.int64), "target": np.zeros([0], np.int64),
                     "tab": np.zeros([0], np.int64)})
  distinct, inverse = np.unique(np.stack([queries["step"], queries["node"], queries["cutoff"]]),
                                axis=1, return_inverse=True)
  inverse = inverse.reshape(-1)
  step, node, cutoff = distinct
  source_set = layout.step_source[step]
  local = node - layout.node_offset[source_set]
  row = layout.step_edge_set[step] * layout.row_radix + local
  start = np.searchsorted(adjacency["key"], row * _RADIX, side="left")
  end = np.searchsorted(adjacency["key"], row * _RADIX + cutoff, side="left")
  degree = np.where(local == 0, 0, end - start)  # the OOV node is isolated
  k = layout.step_fanout[step]
  with np.errstate(over="ignore"):
    pair_keys = (node * _RADIX + cutoff).astype(np.uint64)
    pair_hash = _mix(layout.streams[step] ^ pair_keys)
    rotation = _floor_times(_mix(pair_hash), degree)
    pick, draw = _ragged_range(np.minimum(degree, k))
    d, kk = degree[pick], k[pick]
    width = d.astype(np.float64) / kk.astype(np.float64)
    bound = lambda i: np.floor(i.astype(np.float64) * width).astype(np.int64)
    stratum_start = bound(draw)
    draw_hash = _mix(pair_hash[pick] + (draw + 1).astype(np.uint64) * _GOLDEN)
  offset = rotation[pick] + stratum_start + _floor_times(draw_hash,
                                                         bound(draw + 1) - stratum_start)
  offset = np.where(offset >= d, offset - d, offset)
  edge = start[pick] + np.where(d > kk, offset, draw)
  target = adjacency["target"][edge] + layout.node_offset[layout.step_target[step[pick]]]
  sampled = {"step": step[pick], "source": node[pick], "target": target,
             "tab": adjacency["tab"][edge]}
  # Back to every example that asked: query q asked for distinct query inverse[q],
  # whose draws are sampled[first[inverse[q]]:][:per_distinct[inverse[q]]].
  per_distinct = np.bincount(pick, minlength=distinct.shape[1])
  first = np.cumsum(per_distinct) - per_distinct
  asked, j = _ragged_range(per_distinct[inverse])
  edges = take(sampled, first[inverse[asked]] + j)
  edges["example"] = queries["example"][asked]
  edges["cutoff"] = queries["cutoff"][asked]
  yield from by_shard(edges, edges["example"], shards)


def _extend(element: tuple[int, dict[str, list[Columns]]], hop: int, layout: _Layout,
            shards: int):
  """One example shard: adds a hop's sampled targets; the new ones are the next frontier."""
  shard, groups = element
  nodes = concat(groups["nodes"])
  if groups["edges"]:
    edges = concat(groups["edges"])
    reached = _unique_nodes({"example": edges["example"], "node": edges["target"],
                             "cutoff": edges["cutoff"]})
    known = np.isin(_pair_keys(reached), _pair_keys(nodes))
    new = take(reached, np.flatnonzero(~known))
    nodes = concat([nodes, new])
    if hop + 1 < layout.plan.hops:
      yield from (beam.pvalue.TaggedOutput("queries", q)
                  for q in _queries(new, hop + 1, layout, shards))
  yield shard, nodes


def _pair_keys(nodes: Columns) -> np.ndarray:
  """(example, node) as one structured key per row, for set membership."""
  pairs = np.empty(length(nodes), dtype=[("example", np.int64), ("node", np.int64)])
  pairs["example"], pairs["node"] = nodes["example"], nodes["node"]
  return pairs


def _encode(element: tuple[int, dict[str, list[Columns]]], layout: _Layout
            ) -> Iterator[bytes]:
  """One example shard -> each example's record with its subgraph's features added.

  Positions, node sets and edge sets are found for the whole shard at once;
  the per-example loop only slices them into the record.
  """
  _, groups = element
  if not groups["examples"]:
    return
  examples = concat(groups["examples"])
  nodes = concat(groups["nodes"])
  edges = (concat(groups["edges"]) if groups["edges"] else
           {name: np.zeros([0], np.int64) for name in ("example", "step", "source", "target",
                                                         "tab")})
  examples = take(examples, np.argsort(examples["example"]))
  num, total = len(examples["example"]), int(layout.node_offset[-1])
  rank = lambda example: np.searchsorted(examples["example"], example)
  # Nodes sorted by (example, global node): node sets are contiguous in each example.
  node_key = np.sort(rank(nodes["example"]) * total + nodes["node"])
  node = node_key % total
  node_set = layout.node_set_of(node)
  group = node_key // total * len(layout.set_id) + node_set
  starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
  position = np.arange(len(group)) - np.repeat(starts, np.diff(np.r_[starts, len(group)]))
  local = node - layout.node_offset[node_set]
  node_splits = _splits(group, num * len(layout.set_id))
  position_of = lambda ranks, n: position[np.searchsorted(node_key, ranks * total + n)]
  edge_rank = rank(edges["example"])
  edge_group = edge_rank * len(layout.edge_set_names) + layout.step_edge_set[edges["step"]]
  order = np.argsort(edge_group, kind="stable")
  source = position_of(edge_rank[order], edges["source"][order])
  target = position_of(edge_rank[order], edges["target"][order])
  tab = edges["tab"][order]
  edge_splits = _splits(edge_group[order], num * len(layout.edge_set_names))
  seeds = {ns: position_of(np.arange(num), examples[ns] + layout.node_offset[layout.set_id[ns]])
           for ns in contracts.SEED_NODE_SETS}
  node_names = [(f"nodes/{ns}.#size", f"nodes/{ns}.{contracts.NODE_ID_FEATURE}")
                for ns in layout.set_id]
  edge_names = [(f"edges/{name}.", name in layout.with_tab) for name in layout.edge_set_names]
  for i, record in enumerate(examples["record"]):
    example = tf.train.Example.FromString(record)
    feature = example.features.feature
    for j, (size_name, id_name) in enumerate(node_names):
      begin, end = node_splits[i * len(node_names) + j: i * len(node_names) + j + 2]
      feature[size_name].int64_list.value.append(end - begin)
      feature[id_name].int64_list.value.extend(local[begin:end].tolist())
    feature[f"nodes/{contracts.READOUT}.#size"].int64_list.value.append(1)
    for j, (prefix, with_tab) in enumerate(edge_names):
      begin, end = edge_splits[i * len(edge_names) + j: i * len(edge_names) + j + 2]
      feature[prefix + "#size"].int64_list.value.append(end - begin)
      feature[prefix + "#source"].int64_list.value.extend(source[begin:end].tolist())
      feature[prefix + "#target"].int64_list.value.extend(target[begin:end].tolist())
      if with_tab:
        feature[prefix + contracts.EDGE_TAB_FEATURE].int64_list.value.extend(
            tab[begin:end].tolist())
    for ns in contracts.SEED_NODE_SETS:
      prefix = f"edges/{contracts.readout_edge_set(ns)}."
      feature[prefix + "#size"].int64_list.value.append(1)
      feature[prefix + "#source"].int64_list.value.append(int(seeds[ns][i]))
      feature[prefix + "#target"].int64_list.value.append(0)
    yield example.SerializeToString()


def _splits(sorted_groups: np.ndarray, num_groups: int) -> list[int]:
  """Row splits of rows sorted by group id in [0, num_groups)."""
  return np.concatenate([[0], np.cumsum(np.bincount(sorted_groups, minlength=num_groups))]
                        ).tolist()


def subgraph_schema(layout: _Layout) -> tfgnn.GraphSchema:
  """The schema of the written subgraphs: the in-memory sampler's GraphTensor layout."""
  schema = tfgnn.GraphSchema()
  for ns in list(contracts.NODE_SETS) + [contracts.READOUT]:
    node_set = schema.node_sets[ns]
    if ns != contracts.READOUT:
      node_set.features[contracts.NODE_ID_FEATURE].dtype = tf.int64.as_datatype_enum
  by_name = {s.edge_set: s for s in layout.plan.steps}
  for name in layout.edge_set_names:
    edge_set = schema.edge_sets[name]
    edge_set.source, edge_set.target = by_name[name].source_set, by_name[name].target_set
    if name in layout.with_tab:
      edge_set.features[contracts.EDGE_TAB_FEATURE].dtype = tf.int64.as_datatype_enum
  for ns in contracts.SEED_NODE_SETS:
    edge_set = schema.edge_sets[contracts.readout_edge_set(ns)]
    edge_set.source, edge_set.target = ns, contracts.READOUT
  return schema


def _layout(config: Config, examples_dir: str, graph_dir: str, seed: int) -> _Layout:
  schema_path = os.path.join(graph_dir, contracts.GRAPH_SCHEMA_FILE)
  if not tf.io.gfile.exists(schema_path):
    raise FileNotFoundError(f"no graph schema at {schema_path}; run build-graph first")
  schema = unigraph.read_schema(schema_path)
  arrays = node_tables_lib.load_arrays(os.path.join(examples_dir, contracts.NODE_TABLES_FILE))
  sizes = {ns: len(arrays[f"{ns}/ids"]) + 1 for ns in contracts.NODE_SETS
           if f"{ns}/ids" in arrays}
  sizes.update({name: int(ns.metadata.cardinality) for name, ns in schema.node_sets.items()})
  plan = SamplingPlan.build(schema_endpoints(schema), config.sampling)
  with_tab = [name for name in plan.edge_set_names
              if contracts.EDGE_TAB_FEATURE in schema.edge_sets[name].features]
  return _Layout(plan, sizes, seed, with_tab)


def sample_subgraphs(config: Config, examples_dir: str, graph_dir: str, out_dir: str,
                     splits: Sequence[str] = contracts.SPLITS,
                     beam_args: Sequence[str] = ()) -> dict[str, int]:
  """Writes every example's leak-free subgraph of `splits` (see the module docstring).

  One Beam pipeline reads the graph once for all splits. Returns the number of
  examples written per split.
  """
  started = time.time()
  files, layouts = {}, {}
  for split in splits:
    files[split] = sorted(tf.io.gfile.glob(contracts.split_glob(examples_dir, split)))
    if not files[split]:
      raise FileNotFoundError(f"no {split} examples match "
                              f"{contracts.split_glob(examples_dir, split)}")
    layouts[split] = _layout(config, examples_dir, graph_dir, split_seed(config, split))
    if tf.io.gfile.exists(contracts.split_dir(out_dir, split)):
      tf.io.gfile.rmtree(contracts.split_dir(out_dir, split))
  _run(layouts, files, os.path.join(examples_dir, contracts.NODE_TABLES_FILE), graph_dir,
       out_dir, config.graph.shards, tuple(config.graph.beam_args) + tuple(beam_args))
  counts = {split: sum(1 for _ in tf.data.TFRecordDataset(
      tf.io.gfile.glob(contracts.split_glob(out_dir, split)), compression_type="GZIP"))
            for split in splits}
  tfgnn.write_schema(subgraph_schema(next(iter(layouts.values()))),
                     os.path.join(out_dir, contracts.GRAPH_SCHEMA_FILE))
  logging.info("beam sampling: %s examples in %.1f s -> %s", counts, time.time() - started,
               out_dir)
  return counts


def _run(layouts: dict[str, _Layout], files: dict[str, Sequence[str]], tables_path: str,
         graph_dir: str, out_dir: str, shards: int, beam_args: Sequence[str]) -> None:
  """The Beam pipeline: the adjacency once, then each split's hops (its own seed)."""
  # The adjacency depends on the edge sets only, which every split's layout shares.
  layout = next(iter(layouts.values()))
  with builder.beam_pipeline(beam_args) as p:
    adjacency = (p
                 | "EdgeSets" >> beam.Create(list(enumerate(layout.edge_set_names)))
                 | "ReadEdges" >> beam.FlatMap(_read_edge_set, graph_dir, layout, shards)
                 | "GroupEdgesByShard" >> beam.GroupByKey()
                 | "Adjacency" >> beam.Map(_adjacency, layout))
    for split, layout in layouts.items():
      _sample_split(p, adjacency, layout, files[split], tables_path,
                    contracts.split_dir(out_dir, split), shards, split)


def _sample_split(p: beam.Pipeline, adjacency: beam.PCollection, layout: _Layout,
                  files: Sequence[str], tables_path: str, out_split: str, shards: int,
                  split: str) -> None:
  """One split's examples -> their subgraphs, written under `out_split`."""
  examples = (p
              | f"ExampleFiles/{split}" >> beam.Create(list(enumerate(files)))
              | f"ReadExamples/{split}" >> beam.ParDo(_ReadExamples(tables_path, shards))
              | f"GroupExamplesByShard/{split}" >> beam.GroupByKey())
  nodes = examples | f"Seeds/{split}" >> beam.Map(_seed_nodes, layout)
  queries = nodes | f"SeedQueries/{split}" >> beam.FlatMap(
      lambda element: _queries(element[1], 0, layout, shards))
  edges = []
  for hop in range(layout.plan.hops):
    sampled = ({"adjacency": adjacency, "queries": queries}
               | f"JoinAdjacency{hop}/{split}" >> beam.CoGroupByKey()
               | f"Sample{hop}/{split}" >> beam.FlatMap(_sample, layout, shards))
    edges.append(sampled)
    extended = ({"nodes": nodes, "edges": sampled}
                | f"JoinExamples{hop}/{split}" >> beam.CoGroupByKey()
                | f"Extend{hop}/{split}" >> beam.FlatMap(_extend, hop, layout, shards
                                                         ).with_outputs("queries", main="nodes"))
    nodes, queries = extended.nodes, extended.queries
  all_edges = tuple(edges) | f"AllEdges/{split}" >> beam.Flatten()
  _ = ({"examples": examples | f"ExampleRows/{split}" >> beam.FlatMapTuple(
            lambda shard, chunks: [(shard, c) for c in chunks]),
        "nodes": nodes, "edges": all_edges}
       | f"JoinSubgraphs/{split}" >> beam.CoGroupByKey()
       | f"Encode/{split}" >> beam.FlatMap(_encode, layout)
       | f"Write/{split}" >> beam.io.WriteToTFRecord(
           os.path.join(out_split, "data_tfrecord"), file_name_suffix=".gz",
           compression_type=beam.io.filesystem.CompressionTypes.GZIP))
