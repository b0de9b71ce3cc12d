"""The CSR sampling index: every edge set as rows sorted by (source, day).

The in-memory sampler (`graph/sampler.py`) enforces the leakage rule with it:
an example on day D may only see edges with `day < D`. Because each CSR row is
sorted by day, the admissible edges of source node `s` are a *prefix* of its
row, and the prefix end is one `searchsorted` over the composite keys
`s * 2**20 + day` (`composite_keys`) for a whole batch of (node, cutoff) pairs.

Saved as `sampling_index.npz` (arrays keyed `<edge_set>/<name>`):

  <es>/row_splits   int64 [N_src+1]  CSR offsets; row s = edges of source index s
  <es>/targets      int64 [E]        target node index of each edge
  <es>/days         int64 [E]        day of each edge (days since 1970-01-01)
  <es>/tab          int64 [E]        optional edge feature (user-video sets)
  <es>/endpoints    str [2]          source and target node-set names
  node_set_names    str [K], node_set_sizes int64 [K]   sizes incl. OOV index 0

Typical use by the graph builder:

  index = SamplingIndex.from_edges(
      {"click": EdgeArrays("user", "video", src, tgt, day, tab), ...},
      node_set_sizes={"user": 27286, ...}, symmetric=("co_engage",))
  index.save(out_dir)            # writes <out_dir>/sampling_index.npz
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import numpy as np

from e2e_grec import contracts

# Composite key `source * DAY_RADIX + day`: days must be in [0, DAY_RADIX).
DAY_RADIX = 2**20
DEFAULT_SYMMETRIC = ("co_engage",)


@dataclasses.dataclass(frozen=True)
class EdgeArrays:
  """One edge set as parallel numpy arrays in any order (builder input)."""
  source_set: str
  target_set: str
  source: np.ndarray
  target: np.ndarray
  day: np.ndarray
  tab: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class EdgeIndex:
  """One edge set in CSR form, rows sorted by (source, day, target)."""
  source_set: str
  target_set: str
  row_splits: np.ndarray
  targets: np.ndarray
  days: np.ndarray
  tab: np.ndarray | None = None

  @property
  def num_edges(self) -> int:
    return int(self.targets.shape[0])

  def composite_keys(self) -> np.ndarray:
    """`source * DAY_RADIX + day` per edge, ascending: the searchsorted keys."""
    sources = np.repeat(np.arange(self.row_splits.shape[0] - 1, dtype=np.int64),
                        np.diff(self.row_splits))
    return sources * DAY_RADIX + self.days


@dataclasses.dataclass(frozen=True)
class SamplingIndex:
  """CSR edges of every edge set plus the node-set sizes they index into."""
  edge_sets: Mapping[str, EdgeIndex]
  node_set_sizes: Mapping[str, int]

  @classmethod
  def from_edges(cls, edge_sets: Mapping[str, EdgeArrays],
                 node_set_sizes: Mapping[str, int],
                 symmetric: Sequence[str] = DEFAULT_SYMMETRIC) -> "SamplingIndex":
    """Sorts edges into CSR rows and adds `rev_<name>` for non-symmetric sets.

    A symmetric set (e.g. `co_engage`) gets no reverse set: instead both
    directions are stored under its own name, with exact duplicates of
    (source, target, day) dropped, so it does not matter whether the caller
    passes one or both directions.
    """
    sizes = {ns: int(n) for ns, n in node_set_sizes.items()}
    out: dict[str, EdgeIndex] = {}
    for name, edges in edge_sets.items():
      if name.startswith(contracts.REVERSE_PREFIX):
        raise ValueError(f"edge set {name!r}: names starting with "
                         f"{contracts.REVERSE_PREFIX!r} are reserved for reverse sets")
      source, target, day, tab = _checked(name, edges, sizes)
      if name in symmetric:
        if edges.source_set != edges.target_set:
          raise ValueError(f"edge set {name!r} is declared symmetric but links "
                           f"{edges.source_set!r} to {edges.target_set!r}")
        source, target = (np.concatenate([source, target]),
                          np.concatenate([target, source]))
        day = np.concatenate([day, day])
        tab = None if tab is None else np.concatenate([tab, tab])
        _, keep = np.unique(np.stack([source, target, day]), axis=1, return_index=True)
        keep = np.sort(keep)
        source, target, day = source[keep], target[keep], day[keep]
        tab = None if tab is None else tab[keep]
      out[name] = _csr(edges.source_set, edges.target_set, source, target, day, tab,
                       sizes[edges.source_set])
      if name not in symmetric:
        out[contracts.REVERSE_PREFIX + name] = _csr(edges.target_set, edges.source_set, target,
                                          source, day, tab, sizes[edges.target_set])
    return cls(edge_sets=out, node_set_sizes=sizes)

  def save(self, path: str) -> str:
    """Writes the npz to `path` (a directory gets `sampling_index.npz`)."""
    path = _file_path(path)
    names = sorted(self.node_set_sizes)
    arrays: dict[str, np.ndarray] = {
        "node_set_names": np.array(names, dtype=str),
        "node_set_sizes": np.array([self.node_set_sizes[n] for n in names], np.int64),
    }
    for name, es in self.edge_sets.items():
      arrays[f"{name}/endpoints"] = np.array([es.source_set, es.target_set], dtype=str)
      arrays[f"{name}/row_splits"] = es.row_splits
      arrays[f"{name}/targets"] = es.targets
      arrays[f"{name}/days"] = es.days
      if es.tab is not None:
        arrays[f"{name}/tab"] = es.tab
    np.savez(path, **arrays)
    return path

  @classmethod
  def load(cls, path: str) -> "SamplingIndex":
    """Reads an index written by `save` (a file or the directory holding it)."""
    path = _file_path(path)
    if not os.path.exists(path):
      raise FileNotFoundError(f"no sampling index at {path}; run build-graph first")
    with np.load(path, allow_pickle=False) as data:
      arrays = {key: data[key] for key in data.files}
    sizes = {str(n): int(s) for n, s in zip(arrays["node_set_names"],
                                            arrays["node_set_sizes"])}
    edge_sets = {}
    for key in arrays:
      if key.endswith("/endpoints"):
        name = key[:-len("/endpoints")]
        source_set, target_set = (str(s) for s in arrays[key])
        edge_sets[name] = EdgeIndex(source_set, target_set,
                                    arrays[f"{name}/row_splits"],
                                    arrays[f"{name}/targets"], arrays[f"{name}/days"],
                                    arrays.get(f"{name}/tab"))
    return cls(edge_sets=edge_sets, node_set_sizes=sizes)


def _file_path(path: str) -> str:
  return path if path.endswith(".npz") else os.path.join(path, contracts.SAMPLING_INDEX_FILE)


def _checked(name: str, edges: EdgeArrays, sizes: Mapping[str, int]):
  """Validated int64 copies of an edge set's arrays; errors name what is wrong."""
  for role in ("source_set", "target_set"):
    ns = getattr(edges, role)
    if ns not in sizes:
      raise ValueError(f"edge set {name!r}: {role} {ns!r} has no size in "
                       f"node_set_sizes (known: {', '.join(sorted(sizes))})")
  columns = {"source": edges.source, "target": edges.target, "day": edges.day}
  if edges.tab is not None:
    columns["tab"] = edges.tab
  columns = {k: np.asarray(v).astype(np.int64, copy=False).reshape(-1)
             for k, v in columns.items()}
  lengths = {k: v.shape[0] for k, v in columns.items()}
  if len(set(lengths.values())) > 1:
    raise ValueError(f"edge set {name!r}: arrays differ in length: {lengths}")
  for role, ns in (("source", edges.source_set), ("target", edges.target_set)):
    bad = (columns[role] < 0) | (columns[role] >= sizes[ns])
    if bad.any():
      raise ValueError(f"edge set {name!r}: {int(bad.sum())} {role} indices outside "
                       f"[0, {sizes[ns]}) of node set {ns!r}, e.g. "
                       f"{int(columns[role][bad][0])}")
  bad = (columns["day"] < 0) | (columns["day"] >= DAY_RADIX)
  if bad.any():
    raise ValueError(f"edge set {name!r}: {int(bad.sum())} days outside "
                     f"[0, {DAY_RADIX}), e.g. {int(columns['day'][bad][0])}")
  return columns["source"], columns["target"], columns["day"], columns.get("tab")


def _csr(source_set: str, target_set: str, source: np.ndarray, target: np.ndarray,
         day: np.ndarray, tab: np.ndarray | None, num_sources: int) -> EdgeIndex:
  order = np.lexsort((target, day, source))
  counts = np.bincount(source, minlength=num_sources)
  row_splits = np.zeros(num_sources + 1, np.int64)
  np.cumsum(counts, out=row_splits[1:])
  return EdgeIndex(source_set, target_set, row_splits, target[order].copy(),
                   day[order].copy(), None if tab is None else tab[order].copy())
