"""Batched, leakage-free subgraph sampler that runs inside tf.data and serving.

`SubgraphSampler(user_id, video_id, day)` turns a batch of B examples (raw ids)
into one `tfgnn.GraphTensor` as specified in docs/ARCHITECTURE.md ("Sampled
subgraph"). How it works:

* Seeds. Each example contributes its user and its video, each with the
  example's day as *cutoff*. A subgraph node is a (node set, node index,
  cutoff) triple; equal triples are merged across the whole batch (`tf.unique`
  on `index * 2**20 + cutoff`), so shared users, videos and neighbours are
  expanded once. The same node under two cutoffs stays two nodes: they may see
  different edges.
* Leakage. A node with cutoff D only follows edges with `day < D`. CSR rows are
  sorted by day, so the admissible edges are a row prefix, whose end is one
  `tf.searchsorted` of `index * 2**20 + D` over the edge set's composite keys
  (see `sampling_index.py`). An example's own interaction (day D) and anything
  later are therefore never reachable, at any hop.
* Expansion. Hop h follows every configured edge set (and its `rev_` set)
  whose source set is in the hop's frontier with fan-out `fanouts[h]` (or the
  per-edge-set override). Neighbours already in the subgraph are linked, not
  duplicated; only newly reached nodes form the next frontier.
* Neighbour choice: rotated stratified sampling without replacement. With d
  admissible neighbours and fan-out k: if d <= k all are taken; otherwise the
  prefix is rotated by a random offset, cut into k contiguous strata of
  floor/ceil(d/k) positions, and one uniform position is drawn per stratum.
  This is O(k) per node, never duplicates, gives every admissible neighbour
  inclusion probability exactly k/d (the rotation averages out unequal stratum
  sizes), and spreads the sample over the node's history (rows are in day
  order) instead of clustering it.
* Randomness is stateless and keyed per node: the uniforms are a counter-based
  hash (SplitMix64) of (seed, hop, edge set, node index, cutoff, draw). So a
  node's neighbours depend only on the seed and the node itself -- not on the
  batch it came in or its position -- and the same request always gets the
  same subgraph (serving relies on this); another seed gives another sample.
  `seed=None` uses `SamplingConfig.seed`.

Everything is stock TensorFlow ops over `tf.Variable` tables (no py_function,
no TF-GNN custom ops), so the sampler can be exported in a SavedModel.
"""
from __future__ import annotations

import dataclasses
import logging
import zlib

import tensorflow as tf
import tensorflow_gnn as tfgnn

from e2e_grec.config import SamplingConfig
from e2e_grec.graph import sampling_index as index_lib
from e2e_grec.graph.node_tables import NODE_SETS, NodeTables

READOUT = "_readout"
SEED_SETS = ("user", "video")
EDGE_FEATURE = "tab"
NODE_FEATURE = "id"
_RADIX = index_lib.DAY_RADIX
_INDICES = tf.int32


@dataclasses.dataclass(frozen=True)
class Step:
  """Following one edge set from one hop's frontier."""
  hop: int
  edge_set: str
  source_set: str
  target_set: str
  fanout: int
  # Mixed into the random key so (hop, edge set) draws are independent.
  stream: int


def plan_steps(index: index_lib.SamplingIndex, config: SamplingConfig) -> tuple[Step, ...]:
  """The static traversal: which edge sets each hop follows, with which fan-out."""
  if not config.fanouts or any(k < 0 for k in config.fanouts):
    raise ValueError(f"sampling.fanouts must be non-negative ints, got {config.fanouts}")
  missing = [n for n in config.edge_sets if n not in index.edge_sets]
  if missing:
    logging.warning("sampling.edge_sets %s are not in the sampling index (has: %s); "
                    "they are not sampled", missing, sorted(index.edge_sets))
  names = [n for n in config.edge_sets if n in index.edge_sets]
  names += [index_lib.REVERSE_PREFIX + n for n in names
            if index_lib.REVERSE_PREFIX + n in index.edge_sets]
  known = set(config.edge_sets) | {index_lib.REVERSE_PREFIX + n for n in config.edge_sets}
  unknown = sorted(set(config.fanout_overrides) - known)
  if unknown:
    raise ValueError(f"sampling.fanout_overrides names edge sets that are not sampled: "
                     f"{unknown}; sampled: {sorted(known)}")
  steps, frontier = [], set(SEED_SETS)
  for hop, default in enumerate(config.fanouts):
    reached = set()
    for name in names:
      es = index.edge_sets[name]
      base = name.removeprefix(index_lib.REVERSE_PREFIX)
      fanout = config.fanout_overrides.get(name, config.fanout_overrides.get(base, default))
      if es.source_set in frontier and fanout > 0:
        steps.append(Step(hop, name, es.source_set, es.target_set, int(fanout),
                          zlib.crc32(f"{hop}/{name}".encode())))
        reached.add(es.target_set)
    frontier = reached
  return tuple(steps)


class SubgraphSampler(tf.Module):
  """Samples the per-batch GraphTensor of (user, video, day) examples."""

  def __init__(self, index: index_lib.SamplingIndex, node_tables: NodeTables,
               config: SamplingConfig = SamplingConfig(), name: str = "subgraph_sampler"):
    super().__init__(name=name)
    for ns in SEED_SETS:
      if ns not in node_tables.sizes:
        raise ValueError(f"node tables have no {ns!r} vocabulary")
      if index.node_set_sizes.get(ns, node_tables.sizes[ns]) != node_tables.sizes[ns]:
        raise ValueError(
            f"node set {ns!r} has {index.node_set_sizes[ns]} nodes in the sampling index "
            f"but {node_tables.sizes[ns]} in the node tables: they were built from "
            "different vocabularies")
    for name, es in index.edge_sets.items():
      for ns in (es.source_set, es.target_set):
        if ns not in NODE_SETS:
          raise ValueError(f"edge set {name!r} links unknown node set {ns!r}; "
                           f"known: {NODE_SETS}")
    self.config = config
    self.node_tables = node_tables
    self.steps = plan_steps(index, config)
    self.edge_set_names = tuple(dict.fromkeys(s.edge_set for s in self.steps))
    self.endpoints = {n: (index.edge_sets[n].source_set, index.edge_sets[n].target_set)
                      for n in self.edge_set_names}
    self._row_splits, self._keys, self._targets, self._tab = {}, {}, {}, {}
    for n in self.edge_set_names:
      es = index.edge_sets[n]
      var = lambda value, what: tf.Variable(value, trainable=False, name=f"{n}_{what}")
      self._row_splits[n] = var(es.row_splits, "row_splits")
      self._keys[n] = var(es.composite_keys(), "keys")
      self._targets[n] = var(es.targets, "targets")
      if es.tab is not None:
        self._tab[n] = var(es.tab, "tab")
    self._spec = None

  def graph_tensor_spec(self) -> tfgnn.GraphTensorSpec:
    """The (batch-size independent) spec of every GraphTensor this returns."""
    if self._spec is None:
      ids = tf.TensorSpec([None], tf.int64)
      fn = tf.function(self.__call__).get_concrete_function(ids, ids, ids)
      self._spec = fn.structured_outputs.spec
    return self._spec

  # Plain TF ops without data-dependent control flow: autograph only slows tracing.
  @tf.autograph.experimental.do_not_convert
  def __call__(self, user_id: tf.Tensor, video_id: tf.Tensor, day: tf.Tensor,
               seed: tf.Tensor | int | None = None) -> tfgnn.GraphTensor:
    """Samples one GraphTensor (one component) for B examples, int64 [B] each."""
    user_id = tf.reshape(tf.cast(user_id, tf.int64), [-1])
    video_id = tf.reshape(tf.cast(video_id, tf.int64), [-1])
    cutoff = tf.clip_by_value(tf.reshape(tf.cast(day, tf.int64), [-1]), 0, _RADIX - 1)
    seed = tf.cast(self.config.seed if seed is None else seed, tf.int64)
    num_examples = tf.shape(user_id, out_type=tf.int64)[0]

    # Per node set: composite keys (index * RADIX + cutoff) of all nodes so far.
    keys = {ns: tf.zeros([0], tf.int64) for ns in NODE_SETS}
    readout, frontier = {}, {}
    for ns, raw in (("user", user_id), ("video", video_id)):
      keys[ns], readout[ns] = tf.unique(self.node_tables.lookup(ns, raw) * _RADIX + cutoff)
      frontier[ns] = (tf.range(tf.size(keys[ns])), keys[ns])

    edges = {n: [] for n in self.edge_set_names}
    for hop in range(len(self.config.fanouts)):
      steps = [s for s in self.steps if s.hop == hop]
      sampled = {}  # step -> (source position, target keys, tab or None)
      for step in steps:
        positions, node_keys = frontier[step.source_set]
        sampled[step] = self._sample(step, positions, node_keys, seed)
      frontier = {}
      for ns in dict.fromkeys(s.target_set for s in steps):
        ns_steps = [s for s in steps if s.target_set == ns]
        candidates = [sampled[s][1] for s in ns_steps]
        known = tf.size(keys[ns])
        keys[ns], where = tf.unique(tf.concat([keys[ns]] + candidates, 0))
        where = where[known:]
        split = tf.split(where, [tf.size(c) for c in candidates]) if len(candidates) > 1 \
            else [where]
        for s, target_position in zip(ns_steps, split):
          source_position, _, tab = sampled[s]
          edges[s.edge_set].append((source_position, target_position, tab))
        frontier[ns] = (tf.range(known, tf.size(keys[ns])), keys[ns][known:])

    return self._graph_tensor(keys, edges, readout, num_examples)

  def _sample(self, step: Step, positions: tf.Tensor, node_keys: tf.Tensor,
              seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
    """Up to `fanout` admissible neighbours of each frontier node, without replacement.

    Returns, per sampled edge, the source's position in its node set, the
    target's composite key (neighbour index, inherited cutoff) and `tab`.
    """
    name, k = step.edge_set, step.fanout
    node = _node_of(node_keys)
    row_splits = self._row_splits[name]
    start = tf.gather(row_splits, node)
    stop = tf.gather(row_splits, node + 1)
    # First edge of the row with day >= cutoff: the admissible prefix ends there.
    end = tf.searchsorted(self._keys[name], node_keys, side="left", out_type=tf.int64)
    # The OOV bucket (index 0) is an isolated node, whatever the index holds.
    degree = tf.where(node > 0, tf.clip_by_value(end, start, stop) - start, 0)
    take = tf.minimum(degree, k)

    # Ragged [frontier, take] as flat (row, draw) pairs; cheaper than tf.repeat.
    splits = tf.concat([tf.zeros([1], tf.int64), tf.cumsum(take)], 0)
    flat = tf.range(splits[-1])
    row = tf.searchsorted(splits, flat, side="right", out_type=tf.int64) - 1
    draw = flat - tf.gather(splits, row)
    # Keyed by (seed, step, node, cutoff) only: independent of the batch.
    stream = _mix(tf.bitcast(seed, tf.uint64) + tf.constant(step.stream, tf.uint64))
    row_hash = _mix(tf.bitwise.bitwise_xor(stream, tf.bitcast(node_keys, tf.uint64)))
    d = tf.gather(degree, row)
    rotation = tf.gather(_floor_times(_unit(_mix(row_hash)), degree), row)
    # Stratum j of the rotated prefix is [floor(j*d/k), floor((j+1)*d/k)); float64
    # is exact here and, unlike int64 division, fast.
    width = tf.cast(d, tf.float64) / k
    bound = lambda j: tf.cast(tf.floor(tf.cast(j, tf.float64) * width), tf.int64)
    stratum_start = bound(draw)
    draw_hash = _mix(tf.gather(row_hash, row) + tf.bitcast(draw + 1, tf.uint64) *
                     tf.constant(_GOLDEN, tf.uint64))
    offset = rotation + stratum_start + _floor_times(_unit(draw_hash),
                                                     bound(draw + 1) - stratum_start)
    offset = tf.where(offset >= d, offset - d, offset)  # undo the rotation: < 2d
    offset = tf.where(d > k, offset, draw)
    edge = tf.gather(start, row) + offset

    target = tf.gather(self._targets[name], edge)
    target_keys = target * _RADIX + _cutoff_of(tf.gather(node_keys, row))
    tab = tf.gather(self._tab[name], edge) if name in self._tab else None
    return tf.gather(positions, row), target_keys, tab

  def _graph_tensor(self, keys, edges, readout, num_examples) -> tfgnn.GraphTensor:
    node_sets = {
        ns: tfgnn.NodeSet.from_fields(
            sizes=tf.reshape(tf.size(keys[ns], out_type=_INDICES), [1]),
            features={NODE_FEATURE: _items(_node_of(keys[ns]))})
        for ns in NODE_SETS}
    node_sets[READOUT] = tfgnn.NodeSet.from_fields(
        sizes=tf.reshape(tf.cast(num_examples, _INDICES), [1]), features={})
    edge_sets = {}
    for name, parts in edges.items():
      source_set, target_set = self.endpoints[name]
      source = tf.concat([p[0] for p in parts], 0)
      target = tf.concat([p[1] for p in parts], 0)
      features = {}
      if name in self._tab:
        features[EDGE_FEATURE] = _items(tf.concat([p[2] for p in parts], 0))
      edge_sets[name] = tfgnn.EdgeSet.from_fields(
          sizes=tf.reshape(tf.size(source, out_type=_INDICES), [1]),
          adjacency=tfgnn.Adjacency.from_indices(
              (source_set, _items(tf.cast(source, _INDICES))),
              (target_set, _items(tf.cast(target, _INDICES)))),
          features=features)
    readout_index = _items(tf.range(tf.cast(num_examples, _INDICES)))
    for ns in SEED_SETS:
      edge_sets[f"{READOUT}/{ns}"] = tfgnn.EdgeSet.from_fields(
          sizes=tf.reshape(tf.cast(num_examples, _INDICES), [1]),
          adjacency=tfgnn.Adjacency.from_indices(
              (ns, _items(tf.cast(readout[ns], _INDICES))), (READOUT, readout_index)))
    return tfgnn.GraphTensor.from_pieces(node_sets=node_sets, edge_sets=edge_sets)


def _node_of(keys: tf.Tensor) -> tf.Tensor:
  """Node index of composite keys (shift, not int64 division: much faster)."""
  return tf.bitwise.right_shift(keys, tf.constant(_RADIX.bit_length() - 1, tf.int64))


def _cutoff_of(keys: tf.Tensor) -> tf.Tensor:
  return tf.bitwise.bitwise_and(keys, tf.constant(_RADIX - 1, tf.int64))


def _items(x: tf.Tensor) -> tf.Tensor:
  """Drops a static item count so the spec is the same for every batch size."""
  return tf.raw_ops.PlaceholderWithDefault(input=x, shape=[None])


_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, the SplitMix64 increment


def _mix(z: tf.Tensor) -> tf.Tensor:
  """SplitMix64 finaliser: a bijective 64-bit hash, elementwise on uint64."""
  shift = lambda x, n: tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(
      x, tf.constant(n, tf.uint64)))
  z = shift(z + tf.constant(_GOLDEN, tf.uint64), 30) * tf.constant(0xBF58476D1CE4E5B9, tf.uint64)
  z = shift(z, 27) * tf.constant(0x94D049BB133111EB, tf.uint64)
  return shift(z, 31)


def _unit(h: tf.Tensor) -> tf.Tensor:
  """The top 53 bits of a hash as a float64 uniform in [0, 1)."""
  return tf.cast(tf.bitwise.right_shift(h, tf.constant(11, tf.uint64)),
                 tf.float64) * (2.0 ** -53)


def _floor_times(u: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
  """floor(u * n) for u in [0, 1): a uniform integer in [0, n) (0 when n is 0)."""
  return tf.minimum(tf.cast(tf.floor(u * tf.cast(n, tf.float64)), tf.int64),
                    tf.maximum(n - 1, 0))
