"""The Beam graph builder on a hand-computed toy graph.

The toy prepared-examples directory is written here with tf.io.TFRecordWriter
in the documented format (docs/ARCHITECTURE.md), independent of `prepare`.
"""
import os

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_gnn as tfgnn
from tensorflow_gnn.data import unigraph

from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.datasets import node_tables
from e2e_grec.graph import builder, columnar
from e2e_grec.graph import manifest as manifest_lib
from e2e_grec.graph import sampling_index

D0 = 19107  # 2022-04-25
D1 = D0 + 1
HISTORY_DAY = 19104  # 2022-04-22, the day of the users' newest history event
# Node index = position in these sorted raw ids + 1.
USERS, VIDEOS, TABS = (10, 20, 30), (100, 200, 300, 400), (0, 1)
# user, video, day, time_ms, tab, click, long_view, like  (raw ids)
ROWS = [
    (10, 100, D0, 1000, 0, 1, 1, 0),
    (10, 100, D0, 2000, 1, 0, 0, 0),
    (10, 200, D0, 3000, 0, 1, 1, 1),
    (10, 300, D1, 5000, 0, 1, 0, 1),
    (20, 100, D0, 1500, 1, 1, 1, 0),
    (20, 200, D1, 6000, 1, 0, 1, 0),
    (20, 100, D1, 7000, 0, 1, 0, 0),
    (99, 100, D0, 1200, 0, 1, 1, 0),   # unknown user
    (30, 999, D1, 8000, 0, 0, 0, 0),   # unknown video
    (30, 400, D1, 9000, 0, 0, 0, 0),
]
# (source, target, day, tab, count) in node indices; tab index 1 = raw 0, 2 = raw 1.
EXPECTED = {
    "impression": {(1, 1, D0, 2, 2), (1, 2, D0, 1, 1), (1, 3, D1, 1, 1), (2, 1, D0, 2, 1),
                   (2, 2, D1, 2, 1), (2, 1, D1, 1, 1), (3, 4, D1, 1, 1)},
    "click": {(1, 1, D0, 1, 1), (1, 2, D0, 1, 1), (1, 3, D1, 1, 1), (2, 1, D0, 2, 1),
              (2, 1, D1, 1, 1)},
    "long_view": {(1, 1, D0, 1, 1), (1, 2, D0, 1, 1), (2, 1, D0, 2, 1), (2, 2, D1, 2, 1)},
    "like": {(1, 2, D0, 1, 1), (1, 3, D1, 1, 1)},
    # watch "100 100 500" + like "200": video 500 is unknown; user 77 is unknown.
    "history": {(1, 1, HISTORY_DAY, 0, 2), (1, 2, HISTORY_DAY, 0, 1)},
    # video index -> author / tag / music index (0 = unknown: dropped).
    "authored_by": {(1, 1, 0), (2, 1, 0), (3, 2, 0)},
    "tagged": {(1, 1, 0), (2, 2, 0), (3, 1, 0), (4, 2, 0)},
    "with_music": {(1, 1, 0), (4, 1, 0)},
    # Events (long_view or like): user 1: v1@D0, v2@D0, v3@D1; user 2: v1@D0, v2@D1.
    # Pairs: {1,2}@D0, {2,3}@D1, {1,3}@D1, {1,2}@D1, each count 1. Top-1 per
    # (video, day), ties to the smaller target: 1->2@D0, 2->1@D0, 1->2@D1,
    # 2->1@D1, 3->1@D1; symmetry adds 1->3@D1; {2,3}@D1 is in no top-1.
    "co_engage": {(1, 2, D0, 1), (2, 1, D0, 1), (1, 2, D1, 1), (2, 1, D1, 1),
                  (3, 1, D1, 1), (1, 3, D1, 1)},
}
EXPECTED_DROPPED = {
    "impression": {"unknown_user": 1, "unknown_video": 1},
    "click": {"unknown_user": 1},
    "long_view": {"unknown_user": 1},
    "co_engage": {"unknown_user": 1},
    "history": {"unknown_user": 1, "unknown_video": 1},
    "authored_by": {"unknown_author": 1},
    "with_music": {"unknown_music": 2},
}


def write_toy_prepared(root: str, rows=ROWS) -> str:
  """A prepared-examples dir: train split, node tables and pre-period history."""
  examples_dir = os.path.join(root, "examples")
  path = contracts.split_file(examples_dir, contracts.TRAIN_SPLIT)
  os.makedirs(os.path.dirname(path))
  names = ("user_id", "video_id", "day", "time_ms", "tab", "click", "long_view", "like")
  with tf.io.TFRecordWriter(path, options="GZIP") as writer:
    for row in rows:
      values = dict(zip(names, row), hour=0, skip=0)
      features = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
                  for k, v in values.items()}
      features["stay"] = tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))
      writer.write(tf.train.Example(
          features=tf.train.Features(feature=features)).SerializeToString())
  arrays = {
      "user/ids": np.array(USERS), "video/ids": np.array(VIDEOS),
      "author/ids": np.array([7, 8]), "tag/ids": np.array([1, 2]),
      "music/ids": np.array([5]), "tab/ids": np.array(TABS),
      "user/dense": np.arange(8, dtype=np.float32).reshape(4, 2),
      "user/dense_names": np.array(["a", "b"]),
      "video/author": np.array([0, 1, 1, 2, 0]), "video/tag": np.array([0, 1, 2, 1, 2]),
      "video/music": np.array([0, 1, 0, 0, 1]),
  }
  node_tables.save_arrays(os.path.join(examples_dir, contracts.NODE_TABLES_FILE), arrays)
  # User 10 watched 100, 100, 500 and liked 200; user 77 watched 100.
  np.savez(os.path.join(examples_dir, contracts.HISTORY_FILE),
           user_id=np.array([10, 10, 10, 10, 77]), video_id=np.array([100, 100, 500, 200, 100]),
           day=np.full(5, HISTORY_DAY))
  return examples_dir


def toy_config(**graph) -> config_lib.Config:
  return config_lib.Config().replace(**{
      "graph.co_engage_top_k": 1, "graph.shards": 3,
      **{f"graph.{k}": v for k, v in graph.items()}})


def read_edge_file(graph_dir: str, name: str) -> set[tuple[int, ...]]:
  """An edge set's unigraph file as (source, target, features...) tuples."""
  schema = unigraph.read_schema(os.path.join(graph_dir, contracts.GRAPH_SCHEMA_FILE))
  records = unigraph.DictStreams.iter_edges_via_schema(schema)[name]
  out = set()
  for source, target, example in records:
    values = [int(source), int(target)]
    values += [example.features.feature[f].int64_list.value[0]
               for f in builder.EDGE_FEATURES[name.removeprefix("rev_")]]
    out.add(tuple(values))
  return out


@pytest.fixture(scope="module")
def toy_graph(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("toy"))
  examples_dir = write_toy_prepared(root)
  out = os.path.join(root, "graph")
  manifest = builder.build_graph(toy_config(), examples_dir, out)
  return out, manifest, examples_dir


def test_edge_sets_match_hand_computed_graph(toy_graph):
  graph_dir, manifest, _ = toy_graph
  for name, expected in EXPECTED.items():
    assert read_edge_file(graph_dir, name) == expected, name
    assert manifest.edge_sets[name].edges == len(expected), name
  # Reverse sets read the same file with endpoints swapped.
  assert read_edge_file(graph_dir, "rev_click") == {
      (t, s, *rest) for s, t, *rest in EXPECTED["click"]}
  assert "rev_co_engage" not in manifest.edge_sets
  index = sampling_index.SamplingIndex.load(graph_dir)
  click = index.edge_sets["rev_click"]
  assert click.num_edges == len(EXPECTED["click"])
  assert np.diff(click.row_splits).tolist() == [0, 3, 1, 1, 0]  # videos 1..4
  assert manifest.inputs["examples"] == len(ROWS)
  assert manifest.inputs["history_users"] == 2
  assert manifest.edge_sets["click"].day_min == D0
  assert manifest.edge_sets["click"].day_max == D1


def test_unknown_endpoints_are_counted_not_fatal(toy_graph):
  graph_dir, manifest, _ = toy_graph
  assert manifest.dropped == EXPECTED_DROPPED
  assert manifest_lib.GraphManifest.load(graph_dir) == manifest


def test_schema_is_valid_and_unigraph_parses(toy_graph):
  graph_dir, manifest, _ = toy_graph
  schema = tfgnn.read_schema(os.path.join(graph_dir, contracts.GRAPH_SCHEMA_FILE))
  tfgnn.validate_schema(schema)
  assert set(schema.node_sets) == {"user", "video", "author", "tag", "music"}
  assert schema.node_sets["user"].features["dense"].shape.dim[0].size == 2
  assert schema.edge_sets["co_engage"].metadata.cardinality == len(EXPECTED["co_engage"])
  graph = unigraph.DictStreams.iter_graph_via_path(graph_dir)
  for name, records in graph[tfgnn.NODES].items():
    node_schema = schema.node_sets[name]
    spec = {f: tf.io.FixedLenFeature(
        [d.size for d in feature.shape.dim], tf.dtypes.as_dtype(feature.dtype))
            for f, feature in node_schema.features.items()}
    records = list(records)
    assert len(records) == node_schema.metadata.cardinality == manifest.node_sets[name].nodes
    parsed = tf.io.parse_example([e.SerializeToString() for _, e in records], spec)
    assert parsed["id"].numpy().tolist() == [int(i) for i, _ in records]
    if name == "user":
      np.testing.assert_array_equal(parsed["dense"].numpy()[np.argsort(parsed["id"])],
                                    np.arange(8).reshape(4, 2))
  for name in schema.edge_sets:
    assert len(list(graph[tfgnn.EDGES][name])) == manifest.edge_sets[name].edges
  assert os.path.getsize(os.path.join(graph_dir, contracts.DEGREES_PLOT_FILE)) > 0


def test_co_engagement_weights_window_and_days():
  # Events in time order; user 1 alternates v1, v2, v1, v2 on day 5; user 2
  # sees v1, v2 on day 5; user 3 sees v1 on day 5 and v3 on day 6.
  rows = {"user": np.array([1, 1, 1, 1, 2, 2, 3, 3]),
          "video": np.array([1, 2, 1, 2, 1, 2, 1, 3]),
          "day": np.array([5, 5, 5, 5, 5, 5, 5, 6]),
          "time": np.arange(8), "long_view": np.ones(8, np.int64),
          "like": np.zeros(8, np.int64)}
  edges = builder.top_k_pairs(builder.co_engage_pairs(rows, window=2), k=10)
  got = {(s, t, d): c for s, t, d, c in zip(*(edges[k].tolist() for k in
                                              ("source", "target", "day", "count")))}
  # User 1: lag 1 gives 3 {1,2} pairs, lag 2 pairs a video with itself (skipped);
  # user 2 adds one. User 3's pair is dated by the later event (day 6).
  assert got == {(1, 2, 5): 4, (2, 1, 5): 4, (1, 3, 6): 1, (3, 1, 6): 1}
  # Window 1 still sees every adjacent pair; a window of 0 lags pairs nothing.
  assert builder.co_engage_pairs(rows, window=1)["source"].size == 10
  assert builder.co_engage_pairs(rows, window=0)["source"].size == 0


def test_later_days_never_change_earlier_edges():
  rng = np.random.default_rng(0)
  n = 3000
  rows = {"user": rng.integers(1, 40, n), "video": rng.integers(1, 30, n),
          "day": rng.integers(10, 14, n), "tab": rng.integers(0, 3, n),
          "long_view": rng.integers(0, 2, n), "like": rng.integers(0, 2, n)}
  rows["time"] = rows["day"] * 1000 + rng.integers(0, 1000, n)

  def graph(rows):
    """(day, source, target, count) of the co-engagement and like edges."""
    edges = {"co_engage": builder.top_k_pairs(builder.co_engage_pairs(rows, window=3), k=3),
             "like": builder.behaviour_edges(rows, rows["like"] == 1)}
    return {name: set(zip(*(e[k].tolist() for k in ("day", "source", "target", "count"))))
            for name, e in edges.items()}

  full = graph(rows)
  for cutoff in (11, 12, 13):
    early = graph(columnar.take(rows, np.flatnonzero(rows["day"] < cutoff)))
    for name, edges in early.items():
      assert edges == {e for e in full[name] if e[0] < cutoff}, (name, cutoff)


def test_empty_or_missing_inputs_give_clear_errors(tmp_path):
  config = toy_config()
  with pytest.raises(builder.GraphBuildError, match="no training examples.*Split-train"):
    builder.build_graph(config, str(tmp_path), str(tmp_path / "g"))
  examples_dir = write_toy_prepared(str(tmp_path / "empty"), rows=[])
  with pytest.raises(builder.GraphBuildError, match="hold no records"):
    builder.build_graph(config, examples_dir, str(tmp_path / "g"))
  examples_dir = write_toy_prepared(str(tmp_path / "no_tables"))
  os.remove(os.path.join(examples_dir, contracts.NODE_TABLES_FILE))
  with pytest.raises(builder.GraphBuildError, match="node tables not found"):
    builder.build_graph(config, examples_dir, str(tmp_path / "g"))
  with pytest.raises(builder.GraphBuildError, match="graph.behaviours: unknown"):
    builder.build_graph(toy_config(behaviours=["share"]), examples_dir, str(tmp_path / "g"))
  examples_dir = write_toy_prepared(str(tmp_path / "no_history"))
  os.remove(os.path.join(examples_dir, contracts.HISTORY_FILE))
  with pytest.raises(builder.GraphBuildError, match="no pre-period history.*rerun"):
    builder.build_graph(config, examples_dir, str(tmp_path / "g"))


def test_multi_process_runner_builds_the_same_graph(toy_graph, tmp_path):
  graph_dir, manifest, examples_dir = toy_graph
  out = str(tmp_path / "mp")
  mp_manifest = builder.build_graph(
      toy_config(), examples_dir, out,
      beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
  assert "--direct_running_mode=multi_processing" in mp_manifest.beam_args
  for name in EXPECTED:
    assert read_edge_file(out, name) == read_edge_file(graph_dir, name), name
  assert mp_manifest.edge_sets == manifest.edge_sets
  assert mp_manifest.dropped == manifest.dropped
