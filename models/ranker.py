"""The multi-task ranker: feature embeddings -> shared bottom -> per-task towers.

`ExampleFeatures` turns an example's ids into one vector: ID embeddings of
user, video and the video's author, tag and music (via the node tables' video
links), the surface (`tab`) and hour, plus user and video side features.
The shared bottom is DCN (cross layers, then an MLP) or MMoE (experts mixed
by one softmax gate per task). Each task has its own MLP tower and one logit.
Optional GNN embeddings enter through the two fusion levels (`fusion.py`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

from e2e_grec.config import ModelConfig
from e2e_grec.datasets.node_tables import VIDEO_LINKS, NodeTables
from e2e_grec.models import fusion

HOURS = 24


def _mlp(units: Sequence[int], name: str) -> tf.keras.Sequential:
  return tf.keras.Sequential([tf.keras.layers.Dense(u, activation="relu") for u in units],
                             name=name)


class ExampleFeatures(tf.keras.layers.Layer):
  """Ids of one example -> [B, F] embeddings and side features."""

  def __init__(self, tables: NodeTables, embedding_dim: int, **kwargs):
    super().__init__(**kwargs)
    self._tables = tables
    self._links = tuple(link for link in VIDEO_LINKS if link in tables.sizes)
    self._id = {ns: tf.keras.layers.Embedding(tables.sizes[ns], embedding_dim, name=f"{ns}_id")
                for ns in ("user", "video") + self._links}
    self._has_tab_vocab = "tab" in tables.sizes
    self._tab = tf.keras.layers.Embedding(
        tables.sizes["tab"] if self._has_tab_vocab else 64, embedding_dim, name="tab")
    self._hour = tf.keras.layers.Embedding(HOURS, embedding_dim, name="hour")
    self._side = {ns: [tf.keras.layers.Embedding(size, min(embedding_dim, 8),
                                                 name=f"{ns}_{col}")
                       for col, size in zip(tables.categorical_names.get(ns, ()),
                                            tables.categorical_sizes.get(ns, ()))]
                  for ns in ("user", "video")}

  def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
    flat = {k: tf.reshape(inputs[k], [-1]) for k in ("user_id", "video_id", "tab", "hour")}
    index = {"user": self._tables.lookup("user", flat["user_id"]),
             "video": self._tables.lookup("video", flat["video_id"])}
    for link in self._links:
      index[link] = self._tables.video_link(link, index["video"])
    parts = [self._id[ns](i) for ns, i in index.items()]
    tab = (self._tables.lookup("tab", flat["tab"]) if self._has_tab_vocab
           else tf.clip_by_value(flat["tab"], 0, 63))
    parts += [self._tab(tab), self._hour(tf.clip_by_value(flat["hour"], 0, HOURS - 1))]
    for ns in ("user", "video"):
      if self._tables.has_dense(ns):
        parts.append(self._tables.dense(ns, index[ns]))
      if self._side[ns]:
        codes = self._tables.categorical(ns, index[ns])
        parts.extend(emb(codes[:, i]) for i, emb in enumerate(self._side[ns]))
    return tf.concat(parts, axis=-1)


class DCNBottom(tf.keras.layers.Layer):
  """DCN-v2 cross layers over the input, then an MLP; one output for all tasks."""

  def __init__(self, cross_layers: int, units: Sequence[int], **kwargs):
    super().__init__(**kwargs)
    self._cross = [tfrs.layers.dcn.Cross(name=f"cross_{i}") for i in range(cross_layers)]
    self._mlp = [tf.keras.layers.Dense(u, activation="relu", name=f"dense_{i}")
                 for i, u in enumerate(units)]

  @property
  def shared_layers(self) -> list[tf.keras.layers.Layer]:
    """The last layer every task depends on."""
    return [self._mlp[-1]]

  def call(self, x0: tf.Tensor, tasks: Sequence[str]) -> dict[str, tf.Tensor]:
    x = x0
    for cross in self._cross:
      x = cross(x0, x)
    for dense in self._mlp:
      x = dense(x)
    return {t: x for t in tasks}


class MMoEBottom(tf.keras.layers.Layer):
  """Multi-gate mixture of experts (Ma et al., KDD 2018)."""

  def __init__(self, num_experts: int, units: Sequence[int], tasks: Sequence[str],
               **kwargs):
    super().__init__(**kwargs)
    self._experts = [_mlp(units, f"expert_{i}") for i in range(num_experts)]
    self._gates = {t: tf.keras.layers.Dense(num_experts, activation="softmax",
                                            name=f"{t}_gate") for t in tasks}

  @property
  def shared_layers(self) -> list[tf.keras.layers.Layer]:
    """Every expert's last layer: each task's output mixes all of them."""
    return [expert.layers[-1] for expert in self._experts]

  def call(self, x0: tf.Tensor, tasks: Sequence[str]) -> dict[str, tf.Tensor]:
    experts = tf.stack([expert(x0) for expert in self._experts], axis=1)  # [B, E, d]
    return {t: tf.einsum("be,bed->bd", self._gates[t](x0), experts) for t in tasks}


class MultiTaskRanker(tf.keras.layers.Layer):
  """Features (+ optional GNN user/video embeddings) -> one logit per task."""

  def __init__(self, tables: NodeTables, config: ModelConfig, tasks: Sequence[str],
               use_graph: bool, **kwargs):
    super().__init__(**kwargs)
    self.tasks = tuple(tasks)
    self._features = ExampleFeatures(tables, config.embedding_dim)
    if config.bottom == "dcn":
      self.bottom = DCNBottom(config.cross_layers, config.bottom_units)
    elif config.bottom == "mmoe":
      self.bottom = MMoEBottom(config.num_experts, config.bottom_units, self.tasks)
    else:
      raise ValueError(f"model.bottom: unknown bottom {config.bottom!r}; use dcn or mmoe")
    self._level1 = fusion.InputFusion() if use_graph and config.fusion_level1 else None
    self._level2 = (fusion.GatedTaskFusion(self.tasks, config.tower_units[0])
                    if use_graph and config.fusion_level2 else None)
    self._towers = {t: _mlp(config.tower_units, f"{t}_tower") for t in self.tasks}
    self._logits = {t: tf.keras.layers.Dense(1, name=f"{t}_logit") for t in self.tasks}

  def call(self, inputs: Mapping[str, tf.Tensor],
           graph_embeddings: Mapping[str, tf.Tensor] | None = None) -> dict[str, tf.Tensor]:
    x = self._features(inputs)
    if self._level1 is not None:
      x = self._level1(x, graph_embeddings["user"], graph_embeddings["video"])
    hidden = self.bottom(x, self.tasks)
    if self._level2 is not None:
      hidden = self._level2(hidden, graph_embeddings["user"], graph_embeddings["video"])
    return {t: tf.squeeze(self._logits[t](self._towers[t](hidden[t])), -1)
            for t in self.tasks}
