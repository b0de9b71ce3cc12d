"""The sampling index and the in-training subgraph sampler on a hand-made graph."""
import collections

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_gnn as tfgnn

from e2e_grec.config import SamplingConfig
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.graph import sampler as sampler_lib
from e2e_grec.graph.sampler import SubgraphSampler
from e2e_grec.graph.sampling_index import EdgeArrays, SamplingIndex

USERS = np.arange(100, 112)  # raw ids; node index = position + 1
VIDEOS = np.arange(500, 520)
AUTHORS = np.arange(7000, 7004)
DAY = 20  # every edge of the toy graph is on a day in [1, DAY)
CONFIG = SamplingConfig(fanouts=(3, 2), edge_sets=("click", "authored_by", "co_engage"),
                        fanout_overrides={"authored_by": 1}, seed=7)


def _toy_edges() -> dict[str, EdgeArrays]:
  """Unique (source, target) pairs per edge set, so a pair names one edge and day."""
  rng = np.random.default_rng(0)
  pairs = rng.permutation([(u, v) for u in range(1, 13) for v in range(1, 21)])[:120]
  click = EdgeArrays("user", "video", pairs[:, 0], pairs[:, 1],
                     rng.integers(1, DAY, len(pairs)), rng.integers(0, 3, len(pairs)))
  videos = np.arange(1, 21)
  authored = EdgeArrays("video", "author", videos, videos % 4 + 1, np.zeros(20))
  co = np.array([(a, b) for a in range(1, 21) for b in range(a + 1, 21)])
  co = co[rng.permutation(len(co))[:40]]
  co_engage = EdgeArrays("video", "video", co[:, 0], co[:, 1], rng.integers(1, DAY, 40))
  return {"click": click, "authored_by": authored, "co_engage": co_engage}


@pytest.fixture(scope="module")
def index() -> SamplingIndex:
  return SamplingIndex.from_edges(_toy_edges(), {"user": 13, "video": 21, "author": 5})


@pytest.fixture(scope="module")
def sampler(index) -> SubgraphSampler:
  tables = NodeTables({"user/ids": USERS, "video/ids": VIDEOS, "author/ids": AUTHORS})
  return SubgraphSampler(index, tables, CONFIG)


def _call(sampler, users, videos, days, seed=None) -> tfgnn.GraphTensor:
  as64 = lambda x: tf.constant(x, tf.int64)
  return sampler(as64(users), as64(videos), as64(days), seed=seed)


def _edge_days(index: SamplingIndex) -> dict[str, dict[tuple[int, int], int]]:
  """edge set -> (source index, target index) -> day, from the CSR arrays."""
  out = {}
  for name, es in index.edge_sets.items():
    sources = np.repeat(np.arange(len(es.row_splits) - 1), np.diff(es.row_splits))
    out[name] = {(int(s), int(t)): int(d) for s, t, d in zip(sources, es.targets, es.days)}
  return out


def _edges(graph: tfgnn.GraphTensor, name: str) -> tuple[np.ndarray, np.ndarray]:
  adj = graph.edge_sets[name].adjacency
  return adj.source.numpy(), adj.target.numpy()


def _node_cutoffs(graph, days) -> dict[tuple[str, int], int]:
  """Each node's cutoff, propagated from the readout seeds along traversal edges.

  Fails if a node is reachable from seeds of two different days: nodes must be
  distinct per cutoff, or a neighbour sampled for day D could leak into day D' < D.
  """
  cutoff, queue = {}, collections.deque()
  for ns in ("user", "video"):
    for example, pos in enumerate(_edges(graph, f"_readout/{ns}")[0]):
      assert cutoff.setdefault((ns, int(pos)), days[example]) == days[example]
      queue.append((ns, int(pos)))
  out_edges = collections.defaultdict(list)
  for name, es in graph.edge_sets.items():
    if not name.startswith("_readout"):
      for s, t in zip(*_edges(graph, name)):
        out_edges[(es.adjacency.source_name, int(s))].append(
            (es.adjacency.target_name, int(t)))
  while queue:
    node = queue.popleft()
    for nxt in out_edges[node]:
      if nxt not in cutoff:
        cutoff[nxt] = cutoff[node]
        queue.append(nxt)
      assert cutoff[nxt] == cutoff[node], f"{nxt} reached under two cutoffs"
  return cutoff


def _arrays(graph) -> dict[str, np.ndarray]:
  out = {}
  for name, ns in graph.node_sets.items():
    out[f"nodes/{name}"] = ns.sizes.numpy()
    out.update({f"nodes/{name}/{k}": v.numpy() for k, v in ns.features.items()})
  for name, es in graph.edge_sets.items():
    src, tgt = _edges(graph, name)
    out[f"edges/{name}/src"], out[f"edges/{name}/tgt"] = src, tgt
    out.update({f"edges/{name}/{k}": v.numpy() for k, v in es.features.items()})
  return out


def _id_edges(graph, seeds_of: int | None = None) -> set[tuple[str, int, int]]:
  """(edge set, source id, target id) of all edges, or of one example's subgraph."""
  keep = None
  if seeds_of is not None:
    days = [0] * graph.node_sets["_readout"].sizes.numpy()[0]
    days[seeds_of] = 1
    keep = {n for n, d in _node_cutoffs(graph, days).items() if d == 1}
  out = set()
  for name, es in graph.edge_sets.items():
    if name.startswith("_readout"):
      continue
    src_set, tgt_set = es.adjacency.source_name, es.adjacency.target_name
    src_ids = graph.node_sets[src_set]["id"].numpy()
    tgt_ids = graph.node_sets[tgt_set]["id"].numpy()
    for s, t in zip(*_edges(graph, name)):
      if keep is None or (src_set, int(s)) in keep:
        out.add((name, int(src_ids[s]), int(tgt_ids[t])))
  return out


# --- sampling index ---------------------------------------------------------


def test_index_rows_sorted_with_reverse_and_symmetric_sets(index, tmp_path):
  assert set(index.edge_sets) == {"click", "rev_click", "authored_by", "rev_authored_by",
                                  "co_engage"}
  for es in index.edge_sets.values():
    keys = es.composite_keys()
    assert np.all(np.diff(keys) >= 0), "rows must be sorted by (source, day)"
  days = _edge_days(index)
  assert {(t, s): d for (s, t), d in days["click"].items()} == days["rev_click"]
  co = days["co_engage"]
  assert len(co) == 80 and all(co[(t, s)] == d for (s, t), d in co.items())
  loaded = SamplingIndex.load(index.save(str(tmp_path)))
  assert loaded.node_set_sizes == index.node_set_sizes
  for name, es in index.edge_sets.items():
    other = loaded.edge_sets[name]
    assert (other.source_set, other.target_set) == (es.source_set, es.target_set)
    for field in ("row_splits", "targets", "days", "tab"):
      a, b = getattr(es, field), getattr(other, field)
      assert (a is None and b is None) or np.array_equal(a, b)


def test_index_rejects_bad_edges():
  edges = EdgeArrays("user", "video", np.array([1, 5]), np.array([1, 1]), np.array([3, 3]))
  with pytest.raises(ValueError, match="source indices outside"):
    SamplingIndex.from_edges({"click": edges}, {"user": 3, "video": 3})
  with pytest.raises(ValueError, match="has no size"):
    SamplingIndex.from_edges({"click": edges}, {"user": 9})
  with pytest.raises(FileNotFoundError, match="build-graph"):
    SamplingIndex.load("/nonexistent/dir")


# --- sampler ------------------------------------------------------------------


def test_fanout_bounds_and_no_duplicates(sampler, index):
  days = _edge_days(index)
  graph = _call(sampler, USERS[:6], VIDEOS[:6], [DAY] * 6)
  seeds = {(ns, int(p)) for ns in ("user", "video")
           for p in _edges(graph, f"_readout/{ns}")[0]}
  # Level = hop at which a node is expanded: BFS distance from the seeds.
  level, frontier = {n: 0 for n in seeds}, sorted(seeds)
  edges = {n: _edges(graph, n) for n in graph.edge_sets if not n.startswith("_")}
  for hop in range(3):
    nxt = []
    for name, (src, tgt) in edges.items():
      es = graph.edge_sets[name].adjacency
      for s, t in zip(src, tgt):
        node = (es.target_name, int(t))
        if level.get((es.source_name, int(s))) == hop and node not in level:
          level[node] = hop + 1
          nxt.append(node)
    frontier = nxt
  assert not frontier
  expanded = 0
  for name, (src, tgt) in edges.items():
    es = graph.edge_sets[name].adjacency
    ids = {role: graph.node_sets[getattr(es, f"{role}_name")]["id"].numpy()
           for role in ("source", "target")}
    pairs = list(zip(ids["source"][src], ids["target"][tgt]))
    assert len(pairs) == len(set(pairs)), f"{name}: a neighbour was sampled twice"
    out_degree = collections.Counter(int(s) for s in src)
    for (ns, pos), hop in level.items():
      if ns != es.source_name:
        continue
      node_id = int(graph.node_sets[ns]["id"].numpy()[pos])
      admissible = sum(1 for (s, _), d in days[name].items() if s == node_id and d < DAY)
      fanout = (0 if hop >= len(CONFIG.fanouts) else
                1 if name.endswith("authored_by") else CONFIG.fanouts[hop])
      assert out_degree[pos] == min(fanout, admissible), (name, ns, node_id, hop)
      expanded += out_degree[pos] > 0
  assert expanded > 10


def test_no_edge_on_or_after_the_example_day(sampler, index):
  days = _edge_days(index)
  rng = np.random.default_rng(1)
  example_days = rng.integers(1, DAY + 2, 16).tolist()
  users, videos = rng.choice(USERS, 16), rng.choice(VIDEOS, 16)
  graph = _call(sampler, users, videos, example_days)
  cutoff = _node_cutoffs(graph, example_days)
  checked = 0
  for name, es in graph.edge_sets.items():
    if name.startswith("_readout"):
      continue
    src_ids = graph.node_sets[es.adjacency.source_name]["id"].numpy()
    tgt_ids = graph.node_sets[es.adjacency.target_name]["id"].numpy()
    for s, t in zip(*_edges(graph, name)):
      day = days[name][(int(src_ids[s]), int(tgt_ids[t]))]
      assert day < cutoff[(es.adjacency.source_name, int(s))], (name, s, t, day)
      checked += 1
  assert checked > 50


def test_own_interaction_is_never_sampled(sampler, index):
  # One example per click edge, on that click's own day.
  es = index.edge_sets["click"]
  users = np.repeat(np.arange(1, 13), np.diff(es.row_splits)[1:])
  graph = _call(sampler, USERS[users - 1], VIDEOS[es.targets - 1], es.days)
  user_ids = graph.node_sets["user"]["id"].numpy()
  video_ids = graph.node_sets["video"]["id"].numpy()
  seed_user = _edges(graph, "_readout/user")[0]
  seed_video = _edges(graph, "_readout/video")[0]
  clicked = set(zip(*(a.tolist() for a in _edges(graph, "click"))))
  clicked_by = set(zip(*(a.tolist() for a in _edges(graph, "rev_click"))))
  for example, (user, video) in enumerate(zip(users, es.targets)):
    assert not any((seed_user[example], t) in clicked
                   for t in np.flatnonzero(video_ids == video))
    assert not any((seed_video[example], t) in clicked_by
                   for t in np.flatnonzero(user_ids == user))
  assert clicked and clicked_by  # earlier clicks are still sampled


def test_deterministic_under_a_seed_and_different_across_seeds(sampler):
  args = (USERS[:8], VIDEOS[:8], [DAY] * 8)
  first, again = _arrays(_call(sampler, *args, seed=3)), _arrays(_call(sampler, *args, seed=3))
  assert first.keys() == again.keys()
  assert all(np.array_equal(first[k], again[k]) for k in first)
  default = _arrays(_call(sampler, *args))  # seed=None: config.seed
  assert all(np.array_equal(default[k], _arrays(_call(sampler, *args, seed=7))[k])
             for k in default)
  other = _id_edges(_call(sampler, *args, seed=4))
  assert other != _id_edges(_call(sampler, *args, seed=3))


def test_subgraph_does_not_depend_on_the_rest_of_the_batch(sampler):
  # Distinct days: no node is shared, so each example's subgraph is its own.
  alone = _id_edges(_call(sampler, [USERS[2]], [VIDEOS[5]], [DAY]))
  batch = _call(sampler, [USERS[0], USERS[2], USERS[4]], [VIDEOS[1], VIDEOS[5], VIDEOS[9]],
                [DAY - 3, DAY, DAY - 1])
  assert _id_edges(batch, seeds_of=1) == alone


def test_uniform_inclusion_probability(sampler, index):
  # Cutoffs past every edge all see the same neighbours but draw independently.
  user = 1
  es = index.edge_sets["click"]
  neighbours = es.targets[es.row_splits[user]:es.row_splits[user + 1]]
  degree, k, draws = len(neighbours), CONFIG.fanouts[0], 4000
  assert degree > k
  graph = _call(sampler, [USERS[user - 1]] * draws, [VIDEOS[0]] * draws,
                np.arange(DAY, DAY + draws))
  src, tgt = _edges(graph, "click")
  seed_positions = set(_edges(graph, "_readout/user")[0].tolist())
  picked = graph.node_sets["video"]["id"].numpy()[tgt[np.isin(src, list(seed_positions))]]
  counts = collections.Counter(picked.tolist())
  assert set(counts) == set(neighbours.tolist())
  for video in neighbours:
    assert abs(counts[int(video)] / draws - k / degree) < 0.04, (video, counts)


def test_oov_and_isolated_nodes_give_valid_subgraphs(sampler):
  graph = _call(sampler, [999_999, USERS[0]], [VIDEOS[0], 123], [DAY, 1])
  tfgnn.validate_graph_tensor_for_readout(graph, ["user", "video"])
  assert graph.node_sets["user"]["id"].numpy()[_edges(graph, "_readout/user")[0][0]] == 0
  assert graph.node_sets["video"]["id"].numpy()[_edges(graph, "_readout/video")[0][1]] == 0
  # Day 1: nothing happened before it, so example 1 is two isolated seeds.
  assert not _id_edges(graph, seeds_of=1)
  for name in ("click", "rev_click"):
    src, _ = _edges(graph, name)
    source_ids = graph.node_sets[graph.edge_sets[name].adjacency.source_name]["id"].numpy()
    assert not np.any(source_ids[src] == 0), "the OOV node must stay isolated"


def test_readout_follows_input_order_and_seeds_are_deduplicated(sampler):
  users = [USERS[3], USERS[1], USERS[3], USERS[3], USERS[1]]
  videos = [VIDEOS[2], VIDEOS[2], VIDEOS[7], VIDEOS[2], VIDEOS[2]]
  days = [DAY, DAY, DAY, DAY, DAY - 5]
  graph = _call(sampler, users, videos, days)
  hidden = {ns: {"hidden_state": tf.cast(graph.node_sets[ns]["id"], tf.float32)[:, None]}
            for ns in ("user", "video")}
  with_state = graph.replace_features(node_sets=hidden)
  for ns, raw, offset in (("user", users, USERS[0]), ("video", videos, VIDEOS[0])):
    read = tfgnn.keras.layers.StructuredReadout(ns)(with_state).numpy()[:, 0]
    np.testing.assert_array_equal(read, np.array(raw) - offset + 1)
  positions = _edges(graph, "_readout/user")[0]
  assert positions[0] == positions[2] == positions[3] != positions[1] != positions[4]
  # Same day everywhere but the last example: ids are unique per cutoff.
  same_day = _call(sampler, users[:4], videos[:4], days[:4])
  for ns in ("user", "video", "author"):
    ids = same_day.node_sets[ns]["id"].numpy()
    assert len(ids) == len(set(ids.tolist())), ns


def test_spec_tf_data_tf_function_and_example_round_trip(sampler):
  spec = sampler.graph_tensor_spec()
  assert set(spec.node_sets_spec) == {"user", "video", "author", "tag", "music", "_readout"}
  assert "tab" in spec.edge_sets_spec["click"].features_spec
  tfgnn.validate_graph_tensor_spec_for_readout(spec, ["user", "video"])

  examples = {"user_id": np.tile(USERS, 2), "video_id": np.tile(VIDEOS, 2)[:24],
              "day": np.arange(24) % 5 + DAY - 4}
  for drop in (False, True):
    ds = tf.data.Dataset.from_tensor_slices(examples).batch(5, drop_remainder=drop)
    ds = ds.map(lambda ex: sampler(ex["user_id"], ex["video_id"], ex["day"]))
    assert ds.element_spec == spec
    assert sum(int(g.node_sets["_readout"].sizes[0]) for g in ds) == (20 if drop else 24)

  ids = tf.TensorSpec([None], tf.int64)
  fn = tf.function(sampler.__call__, input_signature=[ids, ids, ids])
  graph = fn(tf.constant(USERS[:1]), tf.constant(VIDEOS[:1]), tf.constant([DAY], tf.int64))
  serialized = tfgnn.write_example(graph).SerializeToString()
  parsed = tfgnn.parse_single_example(spec, tf.constant(serialized))
  a, b = _arrays(graph), _arrays(parsed)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  parsed_batch = tfgnn.keras.layers.ParseExample(spec)(tf.constant([serialized] * 2))
  assert parsed_batch.merge_batch_to_components().node_sets["_readout"].sizes.shape == [2]


def test_only_stock_tensorflow_ops_and_saved_model(sampler, tmp_path):
  ids = tf.TensorSpec([None], tf.int64)
  fn = tf.function(sampler.__call__).get_concrete_function(ids, ids, ids)
  graph_def = fn.graph.as_graph_def()
  op_types = {n.op for n in graph_def.node}
  op_types |= {n.op for f in graph_def.library.function for n in f.node_def}
  not_stock = sorted(t for t in op_types if not hasattr(tf.raw_ops, t))
  assert not not_stock, f"non-stock ops: {not_stock}"
  assert not op_types & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}

  module = tf.Module()
  module.sampler = sampler
  module.sample = tf.function(
      lambda u, v, d: {"user_nodes": sampler(u, v, d).node_sets["user"]["id"]},
      input_signature=[ids, ids, ids])
  tf.saved_model.save(module, str(tmp_path), signatures={"sample": module.sample})
  loaded = tf.saved_model.load(str(tmp_path)).signatures["sample"]
  args = [tf.constant(x, tf.int64) for x in (USERS[:4], VIDEOS[:4], [DAY] * 4)]
  np.testing.assert_array_equal(loaded(u=args[0], v=args[1], d=args[2])["user_nodes"],
                                sampler(*args).node_sets["user"]["id"])


def test_config_errors_name_the_problem(index):
  tables = NodeTables({"user/ids": USERS, "video/ids": VIDEOS})
  with pytest.raises(ValueError, match="fanout_overrides"):
    SubgraphSampler(index, tables, SamplingConfig(fanout_overrides={"nope": 3}))
  with pytest.raises(ValueError, match="different vocabularies"):
    SubgraphSampler(index, NodeTables({"user/ids": USERS[:3], "video/ids": VIDEOS}))


def _splitmix64(z: int) -> int:
  """The SplitMix64 finaliser on Python ints (the reference for `_mix`)."""
  mask = 2**64 - 1
  z = (z + 0x9E3779B97F4A7C15) & mask
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
  return z ^ (z >> 31)


def test_hash_is_splitmix64_on_int64_bits():
  values = [0, 1, 7, 2**62, 2**63 - 1, 2**63, 2**63 + 5, 2**64 - 1, 12345678901234567890]
  as_int64 = np.array(values, np.uint64).view(np.int64)
  expected = np.array([_splitmix64(v) for v in values], np.uint64).view(np.int64)
  np.testing.assert_array_equal(sampler_lib._mix(tf.constant(as_int64)).numpy(), expected)
  units = sampler_lib._unit(tf.constant(expected)).numpy()
  np.testing.assert_array_equal(units, (expected.view(np.uint64) >> 11) * 2.0**-53)
  assert units.min() >= 0 and units.max() < 1


def test_eager_tf_function_and_tf_data_sample_the_same_subgraph(sampler):
  """Same call, same subgraph: eagerly, traced, fully constant-folded, in tf.data."""
  users, videos, days = USERS[:6], VIDEOS[3:9], [DAY, DAY, 5, 9, DAY, 12]
  as64 = lambda x: tf.constant(x, tf.int64)
  eager = _arrays(sampler(as64(users), as64(videos), as64(days)))
  traced = tf.function(lambda u, v, d: sampler(u, v, d))(as64(users), as64(videos),
                                                          as64(days))
  folded = tf.function(lambda: sampler(as64(users), as64(videos), as64(days)))()
  in_tf_data = next(iter(tf.data.Dataset.from_tensors((users, videos, days)).map(
      lambda u, v, d: sampler(tf.cast(u, tf.int64), tf.cast(v, tf.int64),
                              tf.cast(d, tf.int64)))))
  for graph in (traced, folded, in_tf_data):
    other = _arrays(graph)
    assert eager.keys() == other.keys()
    for key in eager:
      np.testing.assert_array_equal(eager[key], other[key], err_msg=key)
