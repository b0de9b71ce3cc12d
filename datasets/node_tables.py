"""Node tables: the vocabulary and side features of every node set, as TF variables.

`prepare` builds them from the training split only and saves them as
`contracts.NODE_TABLES_FILE` (arrays keyed `<node_set>/<name>`):

  <ns>/ids                 int64 [N]     sorted unique raw ids; node index = position + 1
  <ns>/dense               float32 [N+1, D]  numeric features, normalised with
                                         training statistics; row 0 (OOV) is zeros
  <ns>/dense_names         str [D]
  <ns>/categorical         int64 [N+1, C]  codes in [0, size); 0 = missing or OOV
  <ns>/categorical_names   str [C]
  <ns>/categorical_sizes   int64 [C]
  video/author, video/tag, video/music   int64 [N+1]  node index of the linked node

Node index 0 is the out-of-vocabulary bucket of every node set: an unseen raw
id maps there, so cold-start users and videos are scored, not rejected.
Tables are variables, not constants, so a SavedModel that captures them stays
far below the 2 GB GraphDef limit and TF Serving loads them as checkpoints.
Every read goes through `table_lookup`, so the tables may be sharded over
parameter servers (`train.strategy: parameter_server`).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from e2e_grec.contracts import NODE_SETS
from e2e_grec.datasets import table_lookup

# Vocabularies that are not graph node sets.
CONTEXT_VOCABULARIES = ("tab",)
VIDEO_LINKS = ("author", "tag", "music")


def load_arrays(path: str) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as data:
    return {key: data[key] for key in data.files}


def save_arrays(path: str, arrays: dict[str, np.ndarray]) -> None:
  np.savez(path, **arrays)


class NodeTables(tf.Module):
  """Maps raw ids to node indices and node indices to side features."""

  def __init__(self, arrays: dict[str, np.ndarray], name: str = "node_tables"):
    super().__init__(name=name)
    self.node_sets = tuple(ns for ns in NODE_SETS + CONTEXT_VOCABULARIES
                           if f"{ns}/ids" in arrays)
    self.sizes = {ns: int(arrays[f"{ns}/ids"].shape[0]) + 1 for ns in self.node_sets}
    self._ids = {ns: tf.Variable(arrays[f"{ns}/ids"].astype(np.int64),
                                 trainable=False, name=f"{ns}_ids")
                 for ns in self.node_sets}
    self._dense, self._categorical = {}, {}
    self.dense_names, self.categorical_names, self.categorical_sizes = {}, {}, {}
    for ns in self.node_sets:
      if f"{ns}/dense" in arrays:
        self._dense[ns] = tf.Variable(arrays[f"{ns}/dense"].astype(np.float32),
                                      trainable=False, name=f"{ns}_dense")
        self.dense_names[ns] = tuple(str(n) for n in arrays[f"{ns}/dense_names"])
      if f"{ns}/categorical" in arrays:
        self._categorical[ns] = tf.Variable(
            arrays[f"{ns}/categorical"].astype(np.int64), trainable=False,
            name=f"{ns}_categorical")
        self.categorical_names[ns] = tuple(
            str(n) for n in arrays[f"{ns}/categorical_names"])
        self.categorical_sizes[ns] = tuple(
            int(s) for s in arrays[f"{ns}/categorical_sizes"])
    self._video_links = {link: tf.Variable(arrays[f"video/{link}"].astype(np.int64),
                                           trainable=False, name=f"video_{link}")
                         for link in VIDEO_LINKS if f"video/{link}" in arrays}

  @classmethod
  def load(cls, path: str) -> "NodeTables":
    return cls(load_arrays(path))

  def lookup(self, node_set: str, raw_ids: tf.Tensor) -> tf.Tensor:
    """Raw ids (any shape, int64) to node indices; unseen ids give 0 (OOV)."""
    ids = self._ids[node_set]
    raw_ids = tf.cast(raw_ids, tf.int64)
    flat = tf.reshape(raw_ids, [-1])
    size = ids.shape[0]
    position = table_lookup.searchsorted(ids, flat)
    safe = tf.minimum(position, max(size - 1, 0))
    found = tf.logical_and(position < size,
                           tf.equal(table_lookup.gather(ids, safe), flat))
    index = tf.where(found, position + 1, tf.zeros_like(position))
    return tf.reshape(index, tf.shape(raw_ids))

  def dense(self, node_set: str, index: tf.Tensor) -> tf.Tensor:
    """Normalised numeric features [..., D] of node indices."""
    return table_lookup.gather(self._dense[node_set], index)

  def categorical(self, node_set: str, index: tf.Tensor) -> tf.Tensor:
    """Categorical codes [..., C] of node indices."""
    return table_lookup.gather(self._categorical[node_set], index)

  def has_dense(self, node_set: str) -> bool:
    return node_set in self._dense and self._dense[node_set].shape[-1] > 0

  def has_categorical(self, node_set: str) -> bool:
    return node_set in self._categorical and self._categorical[node_set].shape[-1] > 0

  def video_link(self, link: str, video_index: tf.Tensor) -> tf.Tensor:
    """Node index of the author, tag or music of each video index."""
    return table_lookup.gather(self._video_links[link], video_index)
