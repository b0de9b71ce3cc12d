"""Batched, leakage-free subgraph sampler that runs inside tf.data and serving.

`SubgraphSampler(user_id, video_id, day)` turns a batch of B examples (raw ids)
into one `tfgnn.GraphTensor` as specified in docs/ARCHITECTURE.md ("Sampled
subgraph"). How it works:

* Seeds. Each example contributes its user and its video, each with the
  example's day as *cutoff*. A subgraph node is a (node set, node index,
  cutoff) triple; equal triples are merged across the whole batch (one
  `tf.unique` on `global node * 2**20 + cutoff`), so shared users, videos and
  neighbours are expanded once. The same node under two cutoffs stays two
  nodes: they may see different edges.
* Leakage. A node with cutoff D only follows edges with `day < D`. CSR rows are
  sorted by day, so the admissible edges are a row prefix, whose end is one
  `tf.searchsorted` of `row * 2**20 + D` over the composite edge keys (see
  `sampling_index.py`). An example's own interaction (day D) and anything
  later are therefore never reachable, at any hop.
* Expansion. Hop h follows the steps of the `SamplingPlan` (every configured
  edge set and its `rev_` set whose source set is in the hop's frontier, with
  fan-out `fanouts[h]` or the per-edge-set override). Neighbours already in
  the subgraph are linked, not duplicated; only newly reached nodes form the
  next frontier.
* Neighbour choice: rotated stratified sampling without replacement. With d
  admissible neighbours and fan-out k: if d <= k all are taken; otherwise the
  prefix is rotated by a random offset, cut into k contiguous strata of
  floor/ceil(d/k) positions, and one uniform position is drawn per stratum.
  This is O(k) per node, never duplicates, gives every admissible neighbour
  inclusion probability exactly k/d (the rotation averages out unequal stratum
  sizes), and spreads the sample over the node's history (rows are in day
  order) instead of clustering it.
* Randomness is stateless and keyed per node: the uniforms are a counter-based
  hash (SplitMix64) of (seed, hop, edge set, node, cutoff, draw). So a node's
  neighbours depend only on the seed and the node itself -- not on the batch
  it came in or its position -- and the same request always gets the same
  subgraph (serving relies on this); another seed gives another sample.
  `seed=None` uses `SamplingConfig.seed`. The hash runs on int64 bit patterns,
  never uint64, so eager calls, `tf.function` and tf.data return the same
  subgraph.
* Speed. All traversed edge sets are fused into one CSR whose rows are
  (edge set, source node) pairs, and node sets share one global numbering, so
  a hop is a single chain of vectorised ops whatever the number of edge sets.
  Per-op overhead, not data, dominates batched sampling (inside tf.data even
  more so), so this keeps the graph at a few hundred ops.

Everything is stock TensorFlow ops over `tf.Variable` tables (no py_function,
no TF-GNN custom ops), so the sampler can be exported in a SavedModel. Tables
are read through `table_lookup`, so they may be sharded over parameter servers.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_gnn as tfgnn

from e2e_grec.config import SamplingConfig
from e2e_grec.contracts import (EDGE_TAB_FEATURE, NODE_ID_FEATURE, NODE_SETS, READOUT,
                                SEED_NODE_SETS, readout_edge_set)
from e2e_grec.datasets import table_lookup
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.graph import sampling_index as index_lib
from e2e_grec.graph.sampling_plan import SamplingPlan

_RADIX = index_lib.DAY_RADIX
_SHIFT = _RADIX.bit_length() - 1
_INDICES = tf.int32
# Edge target and tab share one int64: target * 2**16 + tab.
_TAB_SHIFT = 16
_TAB_RADIX = 2**_TAB_SHIFT


def _int64(value: int) -> int:
  """A 64-bit pattern as the int64 of the same bits (two's complement)."""
  return value - 2**64 if value >= 2**63 else value


# SplitMix64 constants as int64 bit patterns. The hash runs on int64 (whose
# add and multiply wrap exactly like uint64's) with logical shifts: no uint64
# tensor in the graph, whose constant folding made tf.function and eager differ.
_GOLDEN = _int64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio, the SplitMix64 increment
_MIX_1 = _int64(0xBF58476D1CE4E5B9)
_MIX_2 = _int64(0x94D049BB133111EB)


class SubgraphSampler(tf.Module):
  """Samples the per-batch GraphTensor of (user, video, day) examples."""

  def __init__(self, index: index_lib.SamplingIndex, node_tables: NodeTables,
               config: SamplingConfig = SamplingConfig(), name: str = "subgraph_sampler"):
    super().__init__(name=name)
    for ns in SEED_NODE_SETS:
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
    self.plan = SamplingPlan.build(
        {name: (es.source_set, es.target_set) for name, es in index.edge_sets.items()},
        config)
    self.steps = self.plan.steps
    self.edge_set_names = self.plan.edge_set_names
    self.endpoints = {s.edge_set: (s.source_set, s.target_set) for s in self.steps}
    self._with_tab = tuple(n for n in self.edge_set_names
                           if index.edge_sets[n].tab is not None)
    # One global node numbering: node set i occupies [offset[i], offset[i+1]).
    sizes = [index.node_set_sizes.get(ns, node_tables.sizes.get(ns, 1)) for ns in NODE_SETS]
    self._node_offset = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    self._fuse(index)
    self._spec = None

  def _fuse(self, index: index_lib.SamplingIndex) -> None:
    """Concatenates the traversed edge sets into one CSR over (edge set, node) rows."""
    offset = {ns: int(self._node_offset[i]) for i, ns in enumerate(NODE_SETS)}
    starts, keys, targets, tabs, row_offset = [], [], [], [], {}
    rows = edges = 0
    for name in self.edge_set_names:
      es = index.edge_sets[name]
      row_offset[name] = rows
      starts.append(es.row_splits[:-1] + edges)
      keys.append(es.composite_keys() + rows * _RADIX)
      targets.append(es.targets + offset[es.target_set])
      tabs.append(es.tab if es.tab is not None else np.zeros(es.num_edges, np.int64))
      rows += len(es.row_splits) - 1
      edges += es.num_edges
    tabs = np.concatenate(tabs)
    if tabs.size and (tabs.min() < 0 or tabs.max() >= _TAB_RADIX):
      raise ValueError(f"edge feature tab must be in [0, {_TAB_RADIX}), got "
                       f"[{tabs.min()}, {tabs.max()}]")
    # Row-local binary search in `_prefix_end`: enough halving steps for the
    # longest row, and sentinels so probes past the last row stay in bounds.
    longest = max(int(np.diff(index.edge_sets[n].row_splits).max(initial=0))
                  for n in self.edge_set_names)
    self._search_steps = longest.bit_length()
    sentinel = np.full(2**self._search_steps, np.iinfo(np.int64).max, np.int64)
    var = lambda value, what: tf.Variable(value.astype(np.int64), trainable=False, name=what)
    self._row_starts = var(np.concatenate(starts), "row_starts")
    self._keys = var(np.concatenate(keys + [sentinel]), "edge_keys")
    # Target (global node) and tab packed in one int64: one gather per edge.
    self._edges = var(np.concatenate(targets) * _TAB_RADIX + tabs, "edge_targets_tab")
    # Per step: global row of a global source node, fan-out, edge set id.
    self._step_row = np.array([row_offset[s.edge_set] - offset[s.source_set]
                               for s in self.steps], np.int64)
    self._step_fanout = np.array([s.fanout for s in self.steps], np.int64)
    self._step_stream = np.array([s.stream for s in self.steps], np.int64)
    self._step_edge_set = np.array([self.edge_set_names.index(s.edge_set)
                                    for s in self.steps], np.int32)
    # Per hop: the steps leaving each node set, as a [node sets, max steps] table.
    self._hops = []
    for hop in range(self.plan.hops):
      by_set = [[i for i, s in enumerate(self.steps) if s.hop == hop and s.source_set == ns]
                for ns in NODE_SETS]
      width = max(1, max(len(b) for b in by_set))
      table = np.zeros([len(NODE_SETS), width], np.int64)
      for i, b in enumerate(by_set):
        table[i, :len(b)] = b
      self._hops.append((np.array([len(b) for b in by_set], np.int64), table.reshape(-1),
                         width))

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
    num_examples = tf.size(user_id, out_type=tf.int64)
    offset = {ns: int(self._node_offset[i]) for i, ns in enumerate(NODE_SETS)}
    seed_keys = [(self.node_tables.lookup(ns, raw) + offset[ns]) * _RADIX + cutoff
                 for ns, raw in (("user", user_id), ("video", video_id))]
    # Composite keys (global node * RADIX + cutoff) of all subgraph nodes so far.
    keys, where = tf.unique(tf.concat(seed_keys, 0), out_idx=tf.int64)
    readout = dict(zip(SEED_NODE_SETS, tf.split(where, 2)))
    frontier = tf.range(tf.size(keys, out_type=tf.int64))
    # Mixed once per call: the random stream of each step under this seed.
    streams = _mix(seed + tf.constant(self._step_stream))

    edges = []  # per hop: (step, source position, target position, tab)
    for hop in range(self.plan.hops):
      step, source, target_keys, tab = self._expand(hop, frontier, keys, streams)
      known = tf.size(keys, out_type=tf.int64)
      keys, where = tf.unique(tf.concat([keys, target_keys], 0), out_idx=tf.int64)
      edges.append((step, source, where[known:], tab))
      frontier = tf.range(known, tf.size(keys, out_type=tf.int64))
    return self._graph_tensor(keys, edges, readout, num_examples)

  def _expand(self, hop: int, frontier: tf.Tensor, keys: tf.Tensor, streams: tf.Tensor):
    """Samples the hop's edges of every frontier node in one vectorised pass.

    Returns, per sampled edge: its step, the source's position in `keys`, the
    target's composite key (global neighbour, inherited cutoff) and `tab`.
    """
    counts, table, width = self._hops[hop]
    node_keys = tf.gather(keys, frontier)
    node = tf.bitwise.right_shift(node_keys, _SHIFT)
    node_set = _set_of(node, self._node_offset)
    # (frontier node, step) pairs: every edge set this hop follows from its set.
    parent, j = _ragged_range(tf.gather(tf.constant(counts), node_set))
    step = tf.gather(tf.constant(table), tf.gather(node_set, parent) * width + j)
    node = tf.gather(node, parent)
    pair_keys = tf.gather(node_keys, parent)
    row = tf.gather(tf.constant(self._step_row), step) + node
    k = tf.gather(tf.constant(self._step_fanout), step)

    start = table_lookup.gather(self._row_starts, row)
    end = self._prefix_end(start, row * _RADIX + tf.bitwise.bitwise_and(pair_keys, _RADIX - 1))
    # The OOV bucket (local index 0) is an isolated node, whatever the index holds.
    is_oov = tf.equal(node, tf.gather(tf.constant(self._node_offset), tf.gather(node_set, parent)))
    degree = tf.where(is_oov, tf.zeros_like(start), end - start)

    # Keyed by (seed, step, node, cutoff) only: independent of the batch.
    pair_hash = _mix(tf.bitwise.bitwise_xor(tf.gather(streams, step), pair_keys))
    rotation = _floor_times(_unit(_mix(pair_hash)), degree)
    pick, draw = _ragged_range(tf.minimum(degree, k))
    d, k = tf.gather(degree, pick), tf.gather(k, pick)
    # Stratum j of the rotated prefix is [floor(j*d/k), floor((j+1)*d/k)); float64
    # is exact here and, unlike int64 division, fast.
    width_f = tf.cast(d, tf.float64) / tf.cast(k, tf.float64)
    bound = lambda i: tf.cast(tf.floor(tf.cast(i, tf.float64) * width_f), tf.int64)
    stratum_start = bound(draw)
    draw_hash = _mix(tf.gather(pair_hash, pick) + (draw + 1) * _GOLDEN)
    offset = tf.gather(rotation, pick) + stratum_start + _floor_times(
        _unit(draw_hash), bound(draw + 1) - stratum_start)
    offset = tf.where(offset >= d, offset - d, offset)  # undo the rotation: < 2d
    edge = tf.gather(start, pick) + tf.where(d > k, offset, draw)

    packed = table_lookup.gather(self._edges, edge)
    target_keys = (tf.bitwise.right_shift(packed, _TAB_SHIFT) * _RADIX +
                   tf.bitwise.bitwise_and(tf.gather(pair_keys, pick), _RADIX - 1))
    source = tf.gather(frontier, tf.gather(parent, pick))
    tab = tf.bitwise.bitwise_and(packed, _TAB_RADIX - 1)
    return tf.gather(step, pick), source, target_keys, tab

  def _prefix_end(self, start: tf.Tensor, row_cutoff: tf.Tensor) -> tf.Tensor:
    """First edge of each row whose key `row * 2**20 + day` is >= `row_cutoff`.

    A branchless binary search inside the row (halving steps from the longest
    row's power of two): after the first probe all probes stay within one short
    row, which is far more cache-friendly than a searchsorted over all edges.
    Keys of later rows (and the sentinels) exceed any cutoff of this row, so
    the search never leaves it.
    """
    end = start
    for i in reversed(range(self._search_steps)):
      probe = end + (2**i - 1)
      end = tf.where(table_lookup.gather(self._keys, probe) < row_cutoff, probe + 1, end)
    return end

  def _graph_tensor(self, keys, edges, readout, num_examples) -> tfgnn.GraphTensor:
    node = tf.bitwise.right_shift(keys, _SHIFT)
    node_set = _set_of(node, self._node_offset)
    partition = tf.cast(node_set, tf.int32)
    local = node - tf.gather(tf.constant(self._node_offset), node_set)
    node_ids = tf.dynamic_partition(local, partition, len(NODE_SETS))
    # Position of each node within its own node set (keys are in first-seen order).
    members = tf.dynamic_partition(tf.range(tf.size(keys)), partition, len(NODE_SETS))
    position = tf.cast(tf.dynamic_stitch(
        members, [tf.range(tf.size(m, out_type=tf.int64)) for m in members]), tf.int64)
    node_sets = {
        ns: tfgnn.NodeSet.from_fields(
            sizes=tf.reshape(tf.size(ids, out_type=_INDICES), [1]),
            features={NODE_ID_FEATURE: _items(ids)})
        for ns, ids in zip(NODE_SETS, node_ids)}
    node_sets[READOUT] = tfgnn.NodeSet.from_fields(
        sizes=tf.reshape(tf.cast(num_examples, _INDICES), [1]), features={})

    step, source, target, tab = (tf.concat(list(part), 0) for part in zip(*edges))
    edge_set = tf.gather(tf.constant(self._step_edge_set), step)
    indices = lambda pos: tf.cast(tf.gather(position, pos), _INDICES)
    split = lambda values: tf.dynamic_partition(values, edge_set, len(self.edge_set_names))
    sources, targets, tabs = split(indices(source)), split(indices(target)), split(tab)
    edge_sets = {}
    for i, name in enumerate(self.edge_set_names):
      source_set, target_set = self.endpoints[name]
      edge_sets[name] = tfgnn.EdgeSet.from_fields(
          sizes=tf.reshape(tf.size(sources[i], out_type=_INDICES), [1]),
          adjacency=tfgnn.Adjacency.from_indices((source_set, _items(sources[i])),
                                                 (target_set, _items(targets[i]))),
          features={EDGE_TAB_FEATURE: _items(tabs[i])} if name in self._with_tab else {})
    readout_index = _items(tf.range(tf.cast(num_examples, _INDICES)))
    for ns in SEED_NODE_SETS:
      edge_sets[readout_edge_set(ns)] = tfgnn.EdgeSet.from_fields(
          sizes=tf.reshape(tf.cast(num_examples, _INDICES), [1]),
          adjacency=tfgnn.Adjacency.from_indices(
              (ns, _items(indices(readout[ns]))), (READOUT, readout_index)))
    return tfgnn.GraphTensor.from_pieces(node_sets=node_sets, edge_sets=edge_sets)


def _set_of(node: tf.Tensor, node_offset: np.ndarray) -> tf.Tensor:
  """Node set number of global node ids."""
  return tf.searchsorted(tf.constant(node_offset[1:-1]), node, side="right",
                         out_type=tf.int64)


def _ragged_range(lengths: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Flat (row, j) for j in range(lengths[row]): a ragged range in linear time.

  Row of item i = (number of rows starting at or before i) - 1; an empty row
  shares its start with the next row, so it is never the last such row.
  """
  starts = tf.cumsum(lengths, exclusive=True)
  total = tf.reduce_sum(lengths)
  marks = tf.math.unsorted_segment_sum(tf.ones_like(starts), starts, total + 1)
  row = tf.cumsum(marks[:-1]) - 1
  return row, tf.range(total) - tf.gather(starts, row)


def _items(x: tf.Tensor) -> tf.Tensor:
  """Drops a static item count so the spec is the same for every batch size."""
  return tf.raw_ops.PlaceholderWithDefault(input=x, shape=[None])


def _shift_right(x: tf.Tensor, n: int) -> tf.Tensor:
  """Logical right shift of int64 bits (zeros in from the left, as on uint64)."""
  return tf.bitwise.bitwise_and(tf.bitwise.right_shift(x, n), 2**(64 - n) - 1)


def _mix(z: tf.Tensor) -> tf.Tensor:
  """SplitMix64 finaliser on int64 bit patterns: a bijective 64-bit hash."""
  shift = lambda x, n: tf.bitwise.bitwise_xor(x, _shift_right(x, n))
  z = shift(z + _GOLDEN, 30) * _MIX_1
  z = shift(z, 27) * _MIX_2
  return shift(z, 31)


def _unit(h: tf.Tensor) -> tf.Tensor:
  """The top 53 bits of a hash as a float64 uniform in [0, 1)."""
  return tf.cast(_shift_right(h, 11), tf.float64) * (2.0 ** -53)


def _floor_times(u: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
  """floor(u * n) for u in [0, 1): a uniform integer in [0, n) (0 when n is 0)."""
  return tf.minimum(tf.cast(tf.floor(u * tf.cast(n, tf.float64)), tf.int64),
                    tf.maximum(n - 1, 0))
