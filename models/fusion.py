"""Two-level fusion of the GNN's user/video embeddings into the ranker.

Level 1 (`InputFusion`) appends the (layer-normalised) GNN embeddings to the
ranker's own feature embeddings at the shared-bottom input, so feature
crosses can use them. Level 2 (`GatedTaskFusion`) injects them again just
before every task tower through a learned per-task gate, so each task decides
how much graph signal it takes, however much the shared bottom kept. Either
level can be switched off (`model.fusion_level1`, `model.fusion_level2`).
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf


class InputFusion(tf.keras.layers.Layer):
  """Level 1: [features, LN(user_gnn), LN(video_gnn)]."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._norm_user = tf.keras.layers.LayerNormalization(name="user_norm")
    self._norm_video = tf.keras.layers.LayerNormalization(name="video_norm")

  def call(self, features: tf.Tensor, user: tf.Tensor, video: tf.Tensor) -> tf.Tensor:
    return tf.concat([features, self._norm_user(user), self._norm_video(video)], axis=-1)


class GatedTaskFusion(tf.keras.layers.Layer):
  """Level 2: per task t, [h_t, sigmoid(G_t [h_t, e]) * P_t e] with e = [user, video]."""

  def __init__(self, tasks: Sequence[str], units: int, **kwargs):
    super().__init__(**kwargs)
    self._tasks = tuple(tasks)
    self._norm = tf.keras.layers.LayerNormalization(name="graph_norm")
    self._gates = {t: tf.keras.layers.Dense(units, activation="sigmoid", name=f"{t}_gate")
                   for t in self._tasks}
    self._projections = {t: tf.keras.layers.Dense(units, name=f"{t}_projection")
                         for t in self._tasks}

  def call(self, task_inputs: dict[str, tf.Tensor], user: tf.Tensor,
           video: tf.Tensor) -> dict[str, tf.Tensor]:
    graph = self._norm(tf.concat([user, video], axis=-1))
    out = {}
    for t in self._tasks:
      h = task_inputs[t]
      gate = self._gates[t](tf.concat([h, graph], axis=-1))
      out[t] = tf.concat([h, gate * self._projections[t](graph)], axis=-1)
    return out
