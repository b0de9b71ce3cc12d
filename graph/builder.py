"""Builds the heterogeneous E2E-GRec graph from the training split with Apache Beam.

Inputs: the output of `prepare` only -- its training split, its node tables and
its validated pre-period history (file names in `e2e_grec.contracts`). Output:
the `Graph` directory of docs/ARCHITECTURE.md -- the graph schema, the TF-GNN
unigraph files `nodes/<set>.tfrecord` and `edges/<set>.tfrecord`, the sampling
index, the manifest and the degree plot.

How the pipeline scales: rows travel as columnar NumPy chunks, never one Beam
element per impression. Impressions are keyed into `graph.shards` shards by
user; each shard is aggregated with NumPy sorts (one edge per (user, video,
day) and behaviour, and the user's co-engagement event pairs). The pairs are
re-keyed by video for the per-(video, day) top-K, then by video again to make
the kept set symmetric. Only the final edges become one element each, to be
written as tf.Examples. Shards are the unit of parallelism on any runner.

Leakage: an edge's `day` is the day of the newest event it was built from and
nothing is aggregated across days (counts are per day, top-K is per day), so a
later day's events never change an earlier-dated edge. The sampler only uses
edges with `day < D` for an example on day D. Static video links carry day 0
and the history edges the day of the history's newest event, both before any
log day.

Bad input: edges whose endpoint is not in the node tables (index 0) are
dropped and counted per edge set and reason in the manifest; a dropped edge is
counted once, under its source if that is unknown, else under its target.
Missing or empty inputs raise `GraphBuildError` naming what is missing.

Runner: the DirectRunner is pinned to Beam's classic FnApi runner (Prism, which
newer Beam picks by default, breaks TF-GNN's Beam sampler); every Beam option
(`--direct_running_mode=multi_processing`, `--runner=FlinkRunner`, ...) passes
through from `graph.beam_args` and the command line.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import time
import uuid
from typing import Iterable, Iterator, Mapping, Sequence

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow, also in Beam workers)
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
import numpy as np
import tensorflow as tf
import tensorflow_gnn as tfgnn
from tensorflow_gnn.data import unigraph

from e2e_grec import contracts
from e2e_grec.config import Config, GraphConfig
from e2e_grec.datasets import history as history_lib
from e2e_grec.datasets import node_tables as node_tables_lib
from e2e_grec.datasets import vocab
from e2e_grec.graph import manifest as manifest_lib
from e2e_grec.graph import sampling_index as index_lib
from e2e_grec.graph.columnar import Columns, by_shard, concat, length, take

STATS_FILE = "_build_stats.jsonl"
# Temporary columnar copy of every table, for the sampling index.
COLUMNS_DIR = "_columns"

BEHAVIOURS = ("impression", "click", "long_view", "like")
HISTORY = "history"
CO_ENGAGE = "co_engage"
SYMMETRIC = (CO_ENGAGE,)
# Video link array in the node tables -> edge set.
LINK_EDGE_SETS = {"author": "authored_by", "tag": "tagged", "music": "with_music"}
# Day of the static video links: before any log day.
STATIC_DAY = 0
# Edge features written per edge set (the schema declares the same).
USER_VIDEO_FEATURES = ("day", "tab", "count")
EDGE_FEATURES = {**{name: USER_VIDEO_FEATURES for name in BEHAVIOURS + (HISTORY,)},
                 **{name: ("day",) for name in LINK_EDGE_SETS.values()},
                 CO_ENGAGE: ("day", "count")}

_PARSE_BATCH = 65_536
_SLICE_ROWS = 262_144
_STATS = "stats"
_PAIRS = "co_engage_pairs"

class GraphBuildError(ValueError):
  """An input of the graph build is missing, empty or inconsistent."""


# ----------------------------------------------------------------------------
# Beam element helpers (columnar chunks: graph/columnar.py).


def _slices(key: str, table: Columns) -> Iterator[tuple[str, Columns]]:
  """(key, table) in slices of `_SLICE_ROWS` rows: Beam elements stay small."""
  for begin in range(0, max(length(table), 1), _SLICE_ROWS):
    yield key, {name: values[begin:begin + _SLICE_ROWS] for name, values in table.items()}


def _runs(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(starts, ends) of the runs of equal key tuples in lexicographically sorted keys."""
  n = len(keys[0])
  same = np.ones(max(n - 1, 0), bool)
  for key in keys:
    same &= key[1:] == key[:-1]
  starts = np.flatnonzero(np.r_[n > 0, ~same])
  return starts, np.append(starts[1:], n)[:len(starts)]


def _known(name: str, columns: Columns, source_set: str, target_set: str
           ) -> tuple[Columns, list[tuple[str, int]]]:
  """Drops edges with an OOV endpoint; returns the rest and (stat key, count) pairs."""
  unknown_source = columns["source"] == 0
  unknown_target = ~unknown_source & (columns["target"] == 0)
  stats = [(f"dropped/{name}/unknown_{source_set}", int(unknown_source.sum())),
           (f"dropped/{name}/unknown_{target_set}", int(unknown_target.sum()))]
  return take(columns, ~(unknown_source | unknown_target)), [s for s in stats if s[1]]


def behaviour_edges(rows: Columns, mask: np.ndarray) -> Columns:
  """One edge per (user, video, day) of the masked rows: count, tab of the latest."""
  rows = take(rows, np.flatnonzero(mask))
  rows = take(rows, np.lexsort((rows["time"], rows["day"], rows["video"], rows["user"])))
  starts, ends = _runs(rows["user"], rows["video"], rows["day"])
  return {"source": rows["user"][starts], "target": rows["video"][starts],
          "day": rows["day"][starts], "tab": rows["tab"][ends - 1],
          "count": (ends - starts).astype(np.int64)}


def co_engage_pairs(rows: Columns, window: int) -> Columns:
  """Directed video pairs (both directions) of each user's long-view/like events.

  Every such event is paired with the same user's previous `window` events;
  a pair's day is the later event's day.
  """
  events = take(rows, np.flatnonzero((rows["long_view"] == 1) | (rows["like"] == 1)))
  events = take(events, np.lexsort((events["video"], events["time"], events["user"])))
  user, video, day = events["user"], events["video"], events["day"]
  sources, targets, days = [], [], []
  for lag in range(1, window + 1):
    later = np.arange(lag, len(user))
    earlier = later - lag
    keep = (user[later] == user[earlier]) & (video[later] != video[earlier])
    later, earlier = later[keep], earlier[keep]
    pair_day = np.maximum(day[later], day[earlier])
    sources += [video[later], video[earlier]]
    targets += [video[earlier], video[later]]
    days += [pair_day, pair_day]
  empty = np.zeros([0], np.int64)
  return {"source": np.concatenate(sources or [empty]),
          "target": np.concatenate(targets or [empty]),
          "day": np.concatenate(days or [empty])}


def top_k_pairs(pairs: Columns, k: int) -> Columns:
  """Counts pairs per (source, target, day); keeps the top `k` per (source, day).

  Ties are broken by the smaller target index, so the result is deterministic.
  `pairs` must hold every pair of its sources (one key shard).
  """
  pairs = take(pairs, np.lexsort((pairs["target"], pairs["day"], pairs["source"])))
  starts, ends = _runs(pairs["source"], pairs["day"], pairs["target"])
  edges = {**take(pairs, starts), "count": (ends - starts).astype(np.int64)}
  order = np.lexsort((edges["target"], -edges["count"], edges["day"], edges["source"]))
  edges = take(edges, order)
  group_starts, group_ends = _runs(edges["source"], edges["day"])
  rank = np.arange(length(edges)) - np.repeat(group_starts, group_ends - group_starts)
  return take(edges, np.flatnonzero(rank < k))


def unique_edges(edges: Columns) -> Columns:
  """Edges de-duplicated by (source, target, day), sorted."""
  edges = take(edges, np.lexsort((edges["day"], edges["target"], edges["source"])))
  return take(edges, _runs(edges["source"], edges["target"], edges["day"])[0])


# ----------------------------------------------------------------------------
# Beam DoFns. Each loads the node tables in `setup` (per worker, no globals).


class _WithNodeTables(beam.DoFn):
  """Base of the DoFns that look ids up in (or read) the node tables."""

  def __init__(self, node_tables_path: str):
    self._path = node_tables_path
    self._arrays: dict[str, np.ndarray] = {}

  def setup(self):
    self._arrays = node_tables_lib.load_arrays(self._path)

  def _index(self, node_set: str, raw_ids: np.ndarray) -> np.ndarray:
    """Raw ids -> node index (0 = unknown or no such vocabulary)."""
    if f"{node_set}/ids" not in self._arrays:
      return np.zeros(np.shape(raw_ids), np.int64)
    return vocab.index(self._arrays, node_set, raw_ids)


class _ParseExamples(_WithNodeTables):
  """A GZIP example file -> (user shard, columnar rows as node indices)."""

  FEATURES = ("user_id", "video_id", "tab", "day", "time_ms", "click", "long_view", "like")

  def __init__(self, node_tables_path: str, behaviours: Sequence[str], shards: int):
    super().__init__(node_tables_path)
    self._behaviours = tuple(behaviours)
    self._shards = shards

  def process(self, path: str):
    spec = {name: tf.io.FixedLenFeature([], tf.int64) for name in self.FEATURES}
    dataset = (tf.data.TFRecordDataset(path, compression_type=_compression(path))
               .batch(_PARSE_BATCH)
               .map(lambda s: tf.io.parse_example(s, spec)))
    read = 0
    try:
      for batch in dataset.as_numpy_iterator():
        rows = {"user": self._index("user", batch["user_id"]),
                "video": self._index("video", batch["video_id"]),
                "tab": self._index("tab", batch["tab"]), "day": batch["day"],
                "time": batch["time_ms"], "click": batch["click"],
                "long_view": batch["long_view"], "like": batch["like"]}
        read += len(batch["day"])
        yield from self._drop_unknown(rows)
    except tf.errors.OpError as e:
      raise GraphBuildError(f"{path}: not a GZIP TFRecord of tf.Examples with int64 "
                            f"{', '.join(self.FEATURES)}: {e.message}") from None
    logging.info("graph build: read %d examples from %s", read, path)
    yield beam.pvalue.TaggedOutput(_STATS, ("input/examples", read))

  def _drop_unknown(self, rows: Columns):
    unknown_user = rows["user"] == 0
    unknown_video = ~unknown_user & (rows["video"] == 0)
    unknown = unknown_user | unknown_video
    masks = {"impression": np.ones_like(unknown), "click": rows["click"] == 1,
             "long_view": rows["long_view"] == 1, "like": rows["like"] == 1}
    masks[CO_ENGAGE] = masks["long_view"] | masks["like"]
    for name in self._behaviours + (CO_ENGAGE,):
      for reason, bad in (("unknown_user", unknown_user), ("unknown_video", unknown_video)):
        count = int((masks[name] & bad).sum())
        if count:
          yield beam.pvalue.TaggedOutput(_STATS, (f"dropped/{name}/{reason}", count))
    yield from by_shard(take(rows, np.flatnonzero(~unknown)),
                         rows["user"][~unknown], self._shards)


class _UserShardEdges(beam.DoFn):
  """All rows of a user shard -> behaviour edges and co-engagement pairs by video shard."""

  def __init__(self, behaviours: Sequence[str], window: int, shards: int):
    self._behaviours = tuple(behaviours)
    self._window = window
    self._shards = shards

  def process(self, element: tuple[int, Iterable[Columns]]):
    _, chunks = element
    rows = concat(chunks)
    for name in self._behaviours:
      mask = np.ones(length(rows), bool) if name == "impression" else rows[name] == 1
      yield edge_table(name, behaviour_edges(rows, mask))
    pairs = co_engage_pairs(rows, self._window)
    for shard, chunk in by_shard(pairs, pairs["source"], self._shards):
      yield beam.pvalue.TaggedOutput(_PAIRS, (shard, chunk))


def _top_k_both_directions(element: tuple[int, Iterable[Columns]], k: int,
                           shards: int) -> Iterator[tuple[int, Columns]]:
  """Top-K of a video shard; every kept edge is also emitted reversed (symmetry)."""
  _, chunks = element
  kept = top_k_pairs(concat(chunks), k)
  reverse = {**kept, "source": kept["target"], "target": kept["source"]}
  both = concat([kept, reverse])
  yield from by_shard(both, both["source"], shards)


def _symmetric_edges(element: tuple[int, Iterable[Columns]]) -> tuple[str, Columns]:
  _, chunks = element
  return edge_table(CO_ENGAGE, unique_edges(concat(chunks)))


class _HistoryEdges(_WithNodeTables):
  """`prepare`'s validated pre-period history events -> history edges."""

  def process(self, path: str):
    events = history_lib.load(path)
    edges = {"source": self._index("user", events[contracts.USER_ID]),
             "target": self._index("video", events[contracts.VIDEO_ID]),
             "day": events[contracts.DAY]}
    yield beam.pvalue.TaggedOutput(_STATS, ("input/history_users",
                                            len(np.unique(events[contracts.USER_ID]))))
    edges, stats = _known(HISTORY, edges, "user", "video")
    for stat in stats:
      yield beam.pvalue.TaggedOutput(_STATS, stat)
    edges = take(edges, np.lexsort((edges["day"], edges["target"], edges["source"])))
    starts, ends = _runs(edges["source"], edges["target"], edges["day"])
    yield from _slices(*edge_table(HISTORY, {
        **take(edges, starts), "tab": np.zeros(len(starts), np.int64),
        "count": (ends - starts).astype(np.int64)}))


class _LinkEdges(_WithNodeTables):
  """A video link array of the node tables (e.g. `video/author`) -> static edges."""

  def process(self, link: str):
    targets = self._arrays[f"video/{link}"][1:].astype(np.int64)
    edges = {"source": np.arange(1, len(targets) + 1, dtype=np.int64), "target": targets,
             "day": np.full(len(targets), STATIC_DAY, np.int64)}
    edges, stats = _known(LINK_EDGE_SETS[link], edges, "video", link)
    for stat in stats:
      yield beam.pvalue.TaggedOutput(_STATS, stat)
    yield from _slices(*edge_table(LINK_EDGE_SETS[link], edges))


class _NodeTable(_WithNodeTables):
  """A node set of the node tables -> its unigraph table (`#id`, `id`, side features)."""

  def process(self, node_set: str):
    index = np.arange(len(self._arrays[f"{node_set}/ids"]) + 1, dtype=np.int64)
    table = {unigraph.NODE_ID: index, "id": index}
    for name in ("dense", "categorical"):
      values = _side_feature(self._arrays, node_set, name)
      if values is not None:
        table[name] = values
    yield from _slices(node_path(node_set), table)


class _WriteTable(beam.DoFn):
  """(file, table chunks) -> one TFRecord file of tf.Examples, replaced atomically.

  Each chunk is also saved as columns under `_columns/<file>/<i>.npz` (names
  are deterministic, so a retried bundle overwrites them), from which the
  driver builds the sampling index without parsing the records again.
  """

  def __init__(self, out_dir: str):
    self._out_dir = out_dir

  def process(self, element: tuple[str, Iterable[Columns]]):
    relative_path, chunks = element
    path = os.path.join(self._out_dir, relative_path)
    columns_dir = os.path.join(self._out_dir, COLUMNS_DIR, relative_path)
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(os.path.dirname(path))
    tf.io.gfile.makedirs(columns_dir)
    with tf.io.TFRecordWriter(temporary) as writer:
      for i, chunk in enumerate(chunks):
        buffer = io.BytesIO()
        np.savez(buffer, **chunk)
        with tf.io.gfile.GFile(os.path.join(columns_dir, f"{i:06d}.npz"), "wb") as f:
          f.write(buffer.getvalue())
        for record in serialize_table(chunk):
          writer.write(record)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def _side_feature(arrays: Mapping[str, np.ndarray], node_set: str, name: str
                  ) -> np.ndarray | None:
  values = arrays.get(f"{node_set}/{name}")
  return values if values is not None and values.ndim == 2 and values.shape[1] else None


def node_path(node_set: str) -> str:
  return f"{contracts.NODES_DIR}/{node_set}.tfrecord"


def edge_path(edge_set: str) -> str:
  """The unigraph file of an edge set; `rev_<name>` reads the file of `<name>`."""
  return f"{contracts.EDGES_DIR}/{edge_set.removeprefix(contracts.REVERSE_PREFIX)}.tfrecord"


def edge_table(name: str, edges: Columns) -> tuple[str, Columns]:
  """Columnar edges -> (file, unigraph table with `#source`, `#target`, features)."""
  table = {unigraph.SOURCE_ID: edges["source"], unigraph.TARGET_ID: edges["target"]}
  table.update((feature, edges[feature]) for feature in EDGE_FEATURES[name])
  return edge_path(name), table


def serialize_table(table: Columns) -> Iterator[bytes]:
  """A unigraph table chunk -> serialized tf.Examples, one per row.

  `#`-columns (ids) become decimal bytes; other columns int64 or float
  features, one value per row or, for 2-D columns, a fixed-size vector.
  One Example is reused and its values overwritten in place (about 2x faster
  than building an Example per row).
  """
  if not length(table):
    return
  example = tf.train.Example()
  values_of, rows_of, scalar = [], [], []
  for name, values in table.items():
    feature = example.features.feature[name]
    if name.startswith("#"):
      target, rows = feature.bytes_list.value, [b"%d" % v for v in values.tolist()]
    elif values.dtype.kind == "f":
      target, rows = feature.float_list.value, values.tolist()
    else:
      target, rows = feature.int64_list.value, values.tolist()
    if values.ndim == 1:
      target.append(rows[0])
    values_of.append(target)
    rows_of.append(rows)
    scalar.append(values.ndim == 1)
  for row in zip(*rows_of):
    for target, value, is_scalar in zip(values_of, row, scalar):
      if is_scalar:
        target[0] = value
      else:
        target[:] = value
    yield example.SerializeToString()


def _compression(path: str) -> str:
  return "GZIP" if path.endswith(".gz") else ""


# ----------------------------------------------------------------------------
# The pipeline and its driver.


def beam_pipeline(beam_args: Sequence[str]) -> beam.Pipeline:
  """A Beam pipeline for `beam_args`; the DirectRunner is pinned to the classic one.

  `--runner=DirectRunner` (or no runner) gives Beam's FnApi runner, honouring
  `--direct_running_mode` and `--direct_num_workers`, never Prism. Any other
  runner is used as the options say.
  """
  options = PipelineOptions(list(beam_args))
  runner_name = options.view_as(StandardOptions).runner
  if runner_name not in (None, "DirectRunner", "direct", "FnApiRunner"):
    return beam.Pipeline(options=options)
  from apache_beam.portability.api import beam_provision_api_pb2  # pylint: disable=g-import-not-at-top
  from apache_beam.runners.portability import portable_runner  # pylint: disable=g-import-not-at-top
  from apache_beam.runners.portability.fn_api_runner import fn_runner  # pylint: disable=g-import-not-at-top
  encoded = portable_runner.JobServiceHandle.encode_pipeline_options(
      options.get_all_options())
  runner = fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
      beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))
  return beam.Pipeline(runner=runner, options=options)


def _check_graph_config(config: GraphConfig) -> None:
  """What config validation cannot know: the behaviours this builder makes edges of."""
  unknown = sorted(set(config.behaviours) - set(BEHAVIOURS))
  if unknown:
    raise GraphBuildError(f"graph.behaviours: unknown {unknown}; known: {list(BEHAVIOURS)}")


def _example_files(examples_dir: str) -> list[str]:
  """The training split's files; errors if there are none or all are empty."""
  pattern = contracts.split_glob(examples_dir, contracts.TRAIN_SPLIT)
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise GraphBuildError(f"no training examples: nothing matches {pattern} "
                          "(run `e2e-grec prepare` first)")
  for path in files:
    try:
      if next(iter(tf.data.TFRecordDataset(path, _compression(path)).take(1)), None) is not None:
        return files
    except tf.errors.OpError as e:
      raise GraphBuildError(f"{path}: unreadable as a GZIP TFRecord: {e.message}") from None
  raise GraphBuildError(f"no training examples: {', '.join(files)} hold no records")


def _load_node_tables(path: str) -> dict[str, np.ndarray]:
  if not tf.io.gfile.exists(path):
    raise GraphBuildError(f"node tables not found at {path} (written by `e2e-grec prepare`)")
  arrays = node_tables_lib.load_arrays(path)
  for node_set in ("user", "video"):
    if len(arrays.get(f"{node_set}/ids", [])) == 0:
      raise GraphBuildError(f"{path}: the {node_set!r} vocabulary is empty")
  return arrays


def _history_file(examples_dir: str) -> str:
  """`prepare`'s history file (empty when the logs have no pre-period history)."""
  path = os.path.join(examples_dir, contracts.HISTORY_FILE)
  if not tf.io.gfile.exists(path):
    raise GraphBuildError(
        f"no pre-period history at {path}: these examples were prepared by an older "
        "version; rerun `e2e-grec prepare` (or the pipeline with "
        "pipeline.enable_cache=false)")
  return path


def _run_pipeline(config: GraphConfig, files: Sequence[str], tables_path: str,
                  node_sets: Sequence[str], links: Sequence[str], edge_sets: Sequence[str],
                  history_file: str | None, out_dir: str, beam_args: Sequence[str]) -> None:
  """The Beam pipeline: unigraph node and edge files plus a stats file."""
  behaviours = tuple(b for b in BEHAVIOURS if b in config.behaviours)
  with beam_pipeline(beam_args) as p:
    parsed = (p
              | "ExampleFiles" >> beam.Create(list(files))
              | "ParseExamples" >> beam.ParDo(
                  _ParseExamples(tables_path, behaviours, config.shards)
              ).with_outputs(_STATS, main="rows"))
    user_shards = (parsed.rows
                   | "GroupByUserShard" >> beam.GroupByKey()
                   | "UserShardEdges" >> beam.ParDo(
                       _UserShardEdges(behaviours, config.co_engage_window, config.shards)
                   ).with_outputs(_PAIRS, main="tables"))
    co_engage = (user_shards[_PAIRS]
                 | "GroupPairsByVideoShard" >> beam.GroupByKey()
                 | "TopKPerVideoDay" >> beam.FlatMap(
                     _top_k_both_directions, config.co_engage_top_k, config.shards)
                 | "GroupKeptByVideoShard" >> beam.GroupByKey()
                 | "SymmetricCoEngage" >> beam.Map(_symmetric_edges))
    history = (p
               | "HistoryFile" >> beam.Create([history_file] if history_file else [])
               | "HistoryEdges" >> beam.ParDo(_HistoryEdges(tables_path)
                                              ).with_outputs(_STATS, main="tables"))
    static = (p
              | "VideoLinks" >> beam.Create(list(links))
              | "LinkEdges" >> beam.ParDo(_LinkEdges(tables_path)
                                          ).with_outputs(_STATS, main="tables"))
    nodes = (p
             | "NodeSets" >> beam.Create(list(node_sets))
             | "NodeTables" >> beam.ParDo(_NodeTable(tables_path)))
    # An empty chunk per file, so that empty edge sets still get their file.
    empty = {"source": np.zeros([0], np.int64), "target": np.zeros([0], np.int64),
             **{f: np.zeros([0], np.int64) for f in USER_VIDEO_FEATURES}}
    files_to_write = p | "EveryEdgeFile" >> beam.Create(
        [edge_table(name, empty) for name in edge_sets])
    _ = ((user_shards.tables, co_engage, history.tables, static.tables, nodes,
          files_to_write)
         | "FlattenTables" >> beam.Flatten()
         | "GroupByFile" >> beam.GroupByKey()
         | "WriteFiles" >> beam.ParDo(_WriteTable(out_dir)))
    _ = ((parsed[_STATS], history[_STATS], static[_STATS])
         | "FlattenStats" >> beam.Flatten()
         | "SumStats" >> beam.CombinePerKey(sum)
         | "StatsJson" >> beam.MapTuple(lambda key, n: json.dumps([key, n]))
         | "WriteStats" >> beam.io.WriteToText(os.path.join(out_dir, STATS_FILE),
                                               num_shards=1, shard_name_template=""))


def _output_schema(arrays: Mapping[str, np.ndarray], node_sets: Sequence[str],
                   edge_sets: Sequence[str], index: index_lib.SamplingIndex
                   ) -> tfgnn.GraphSchema:
  """The template schema restricted to what was built, with files, sizes, side features."""
  schema = tfgnn.read_schema(contracts.GRAPH_SCHEMA_TEMPLATE_PATH)
  for name in [n for n in schema.node_sets if n not in node_sets]:
    del schema.node_sets[name]
  for name in list(schema.edge_sets):
    if name.removeprefix(contracts.REVERSE_PREFIX) not in edge_sets:
      del schema.edge_sets[name]
  for name, node_set in schema.node_sets.items():
    node_set.metadata.filename = node_path(name)
    node_set.metadata.cardinality = index.node_set_sizes[name]
    for feature, dtype, what in (("dense", tf.float32, "normalised numeric side features"),
                                 ("categorical", tf.int64, "categorical side-feature codes")):
      values = _side_feature(arrays, name, feature)
      if values is not None:
        names = ", ".join(str(n) for n in arrays[f"{name}/{feature}_names"])
        node_set.features[feature].description = f"{what}: {names}"
        node_set.features[feature].dtype = dtype.as_datatype_enum
        node_set.features[feature].shape.dim.add().size = values.shape[1]
  for name, edge_set in schema.edge_sets.items():
    edge_set.metadata.filename = edge_path(name)
    edge_set.metadata.cardinality = index.edge_sets[name].num_edges
  tfgnn.validate_schema(schema)
  return schema


def _read_columns(out_dir: str, edge_set: str, source_set: str, target_set: str
                  ) -> index_lib.EdgeArrays:
  """The columns of an edge file saved beside it by `_WriteTable`."""
  pattern = os.path.join(out_dir, COLUMNS_DIR, edge_path(edge_set), "*.npz")
  chunks = []
  for path in sorted(tf.io.gfile.glob(pattern)):
    with tf.io.gfile.GFile(path, "rb") as f, np.load(io.BytesIO(f.read())) as data:
      chunks.append({name: data[name] for name in data.files})
  columns = concat(chunks)
  return index_lib.EdgeArrays(source_set, target_set, columns[unigraph.SOURCE_ID],
                              columns[unigraph.TARGET_ID], columns["day"],
                              columns.get("tab"))


def build_graph(config: Config, examples_dir: str, out_dir: str,
                beam_args: Sequence[str] = ()) -> manifest_lib.GraphManifest:
  """Builds the graph of the training split (+ pre-period history) into `out_dir`.

  Args:
    config: `config.graph` selects edge sets, co-engagement window / top-K,
      shards and Beam options.
    examples_dir: the output directory of `prepare` (the `Examples` artifact):
      its training split, node tables and pre-period history.
    out_dir: the graph directory to write (its `nodes/` and `edges/` are replaced).
    beam_args: Beam options, applied after `config.graph.beam_args`.

  Returns:
    The manifest, also saved as `<out_dir>/manifest.json`.
  """
  start = time.time()
  graph_config = config.graph
  _check_graph_config(graph_config)
  files = _example_files(examples_dir)
  tables_path = os.path.join(examples_dir, contracts.NODE_TABLES_FILE)
  arrays = _load_node_tables(tables_path)
  node_sets = [ns for ns in node_tables_lib.NODE_SETS if f"{ns}/ids" in arrays]
  links = [link for link in LINK_EDGE_SETS
           if f"video/{link}" in arrays and link in node_sets]
  edge_sets = ([b for b in BEHAVIOURS if b in graph_config.behaviours]
               + ([HISTORY] if graph_config.include_history else [])
               + [LINK_EDGE_SETS[link] for link in links] + [CO_ENGAGE])
  history_file = _history_file(examples_dir) if graph_config.include_history else None
  all_beam_args = tuple(graph_config.beam_args) + tuple(beam_args)

  for sub in (contracts.NODES_DIR, contracts.EDGES_DIR, COLUMNS_DIR):
    shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
  os.makedirs(out_dir, exist_ok=True)
  logging.info("graph build: %d example file(s), edge sets %s, Beam args %s",
               len(files), edge_sets, list(all_beam_args))
  phases = {}
  _run_pipeline(graph_config, files, tables_path, node_sets, links, edge_sets, history_file,
                out_dir, all_beam_args)
  phases["beam"] = time.time() - start
  stats_path = os.path.join(out_dir, STATS_FILE)
  with open(stats_path) as f:
    stats = dict(json.loads(line) for line in f)
  os.remove(stats_path)

  logging.info("graph build: building the sampling index")
  template = tfgnn.read_schema(contracts.GRAPH_SCHEMA_TEMPLATE_PATH)
  edges = {name: _read_columns(out_dir, name, template.edge_sets[name].source,
                               template.edge_sets[name].target)
           for name in edge_sets}
  tf.io.gfile.rmtree(os.path.join(out_dir, COLUMNS_DIR))
  sizes = {ns: len(arrays[f"{ns}/ids"]) + 1 for ns in node_sets}
  index = index_lib.SamplingIndex.from_edges(edges, sizes, symmetric=SYMMETRIC)
  index.save(out_dir)
  phases["index"] = time.time() - start - phases["beam"]

  schema = _output_schema(arrays, node_sets, edge_sets, index)
  tfgnn.write_schema(schema, os.path.join(out_dir, contracts.GRAPH_SCHEMA_FILE))
  manifest_lib.plot_degrees(index, os.path.join(out_dir, contracts.DEGREES_PLOT_FILE))
  dropped: dict[str, dict[str, int]] = {}
  for key, count in stats.items():
    if key.startswith("dropped/"):
      _, name, reason = key.split("/")
      dropped.setdefault(name, {})[reason] = count
  inputs = {key.split("/", 1)[1]: count for key, count in stats.items()
            if key.startswith("input/")}
  phases["outputs"] = time.time() - start - phases["beam"] - phases["index"]
  manifest = manifest_lib.summarize(
      index, graph_dir=os.path.abspath(out_dir), dropped=dropped, inputs=inputs,
      build_seconds=time.time() - start, phase_seconds=phases, beam_args=all_beam_args)
  manifest.save(out_dir)
  logging.info("graph build: %s nodes, %s edges (incl. reverse sets), %s dropped, "
               "%.1f s -> %s", f"{sum(sizes.values()):,}", f"{manifest.num_edges:,}",
               f"{manifest.num_dropped:,}", manifest.build_seconds, out_dir)
  return manifest


def command(args: argparse.Namespace, config: Config) -> int:
  """`e2e-grec build-graph --examples DIR --out DIR [beam args...]`."""
  manifest = build_graph(config, args.examples, args.out,
                         beam_args=getattr(args, "beam_args", ()) or ())
  print(f"graph: {args.out}")
  for name, es in manifest.edge_sets.items():
    print(f"  {name:18s} {es.source:>6s} -> {es.target:<6s} {es.edges:>12,} edges  "
          f"mean degree {es.degree.mean:.2f}")
  for name, reasons in manifest.dropped.items():
    print(f"  dropped {name}: {reasons}")
  print(f"built in {manifest.build_seconds:.1f} s; manifest {contracts.MANIFEST_FILE}, "
        f"plot {contracts.DEGREES_PLOT_FILE}")
  return 0
