"""The two-stage baseline: pretrain the GNN, precompute embeddings, freeze them.

1. `pretrain`: the encoder learns on the same sampled subgraphs as e2e, from
   the GFAE loss plus link prediction of user-video clicks: each clicked
   training example (u, v, day D) is a positive, the other clicked videos in
   the batch are negatives (in-batch softmax over cosine / temperature). The
   sampler only shows edges before D, so the click being predicted is never
   in the graph that predicts it.
2. `precompute`: one embedding per (node, day) the ranker needs (every user
   and video of the train and eval examples, with that example's day as the
   cutoff), computed with the frozen encoder on a subgraph sampled with the
   serving seed: the embedding for day D only ever used edges before D.
3. The ranker trains on `EmbeddingCache.lookup` results (inputs `user_gnn`,
   `video_gnn`), so no GNN runs and no gradient reaches it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable, Mapping

import numpy as np
import tensorflow as tf

from e2e_grec.contracts import GRAPH_INPUT
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.graph.sampling_index import DAY_RADIX
from e2e_grec.models import encoder as encoder_lib
from e2e_grec.models.e2e_grec import PRECOMPUTED, E2EGRec

# In-batch softmax temperature over cosine similarities (a common choice).
LINK_TEMPERATURE = 0.1
CACHE_FILE = "embedding_cache.npz"


def link_prediction_loss(user: tf.Tensor, video: tf.Tensor, click: tf.Tensor) -> tf.Tensor:
  """In-batch softmax over the clicked (user, video) pairs of a batch."""
  positive = tf.cast(click, tf.bool)
  u = tf.math.l2_normalize(tf.boolean_mask(user, positive), -1)
  v = tf.math.l2_normalize(tf.boolean_mask(video, positive), -1)
  logits = tf.matmul(u, v, transpose_b=True) / LINK_TEMPERATURE
  labels = tf.range(tf.shape(logits)[0])
  loss = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
  return tf.reduce_mean(loss) if loss.shape.rank else loss


def pretrain(model: E2EGRec, batches: Callable[[int], tf.data.Dataset], epochs: int,
             learning_rate: float, log: Callable[[int, dict], None] | None = None) -> int:
  """Trains `model.encoder` (+ GFAE decoder) on GFAE + link prediction.

  `batches(epoch)` yields training batches with `graph`. Returns the number
  of steps. The encoder trains here whatever its `trainable` flag, which is
  restored afterwards: two_stage's stays frozen, a warm-started e2e one trains on.
  """
  if model.encoder is None:
    raise ValueError("pretraining needs a model with a GNN encoder (mode two_stage or e2e)")
  layers = [model.encoder] + ([model.gfae] if model.gfae is not None else [])
  trainable = [layer.trainable for layer in layers]
  for layer in layers:
    layer.trainable = True
  optimizer = tf.keras.optimizers.Adam(learning_rate)

  @tf.function(input_signature=[batches(0).element_spec], autograph=False)
  def step(inputs):
    with tf.GradientTape() as tape:
      graph = inputs[GRAPH_INPUT]
      masks = model.gfae.sample_masks(graph) if model.gfae is not None else None
      encoded = model.encoder(graph, masks=masks, training=True)
      emb = encoder_lib.readout(encoded)
      losses = {"link": link_prediction_loss(emb["user"], emb["video"], inputs["click"])}
      if masks is not None:
        losses["gfae"] = model.gfae(encoded, masks)
      total = tf.add_n(list(losses.values()))
    variables = [v for layer in layers for v in layer.trainable_variables]
    grads = tape.gradient(total, variables)
    optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
    return {f"pretrain/{k}": v for k, v in losses.items()}

  steps = 0
  for epoch in range(epochs):
    for inputs in batches(epoch):
      logs = step(inputs)
      steps += 1
      if log is not None:
        log(steps, logs)
  for layer, flag in zip(layers, trainable):
    layer.trainable = flag
  return steps


@dataclasses.dataclass
class EmbeddingCache:
  """Frozen GNN embeddings keyed by node index * 2**20 + day, per node set."""
  keys: Mapping[str, np.ndarray]
  values: Mapping[str, np.ndarray]

  def save(self, out_dir: str) -> str:
    path = os.path.join(out_dir, CACHE_FILE)
    np.savez(path, **{f"{ns}/keys": k for ns, k in self.keys.items()},
             **{f"{ns}/values": v for ns, v in self.values.items()})
    return path

  @classmethod
  def load(cls, out_dir: str) -> "EmbeddingCache":
    with np.load(os.path.join(out_dir, CACHE_FILE)) as data:
      sets = {k.split("/")[0] for k in data.files}
      return cls({ns: data[f"{ns}/keys"] for ns in sets},
                 {ns: data[f"{ns}/values"] for ns in sets})

  def lookup_fn(self, tables: NodeTables) -> Callable[[dict], dict]:
    """A tf.data map function adding `user_gnn` and `video_gnn` (zeros if unseen)."""
    keys = {ns: tf.constant(k) for ns, k in self.keys.items()}
    values = {ns: tf.constant(np.concatenate([v, np.zeros_like(v[:1])]))
              for ns, v in self.values.items()}

    def add(batch):
      out = dict(batch)
      day = tf.cast(batch["day"], tf.int64)
      for ns, name in PRECOMPUTED.items():
        key = tables.lookup(ns, batch[f"{ns}_id"]) * DAY_RADIX + day
        pos = tf.searchsorted(keys[ns], key, out_type=tf.int64)
        n = tf.size(keys[ns], out_type=tf.int64)
        found = tf.logical_and(pos < n, tf.gather(keys[ns], tf.minimum(pos, n - 1)) == key)
        out[name] = tf.gather(values[ns], tf.where(found, pos, n))
      return out
    return add


def precompute(model: E2EGRec, sampler, tables: NodeTables,
               columns: list[Mapping[str, np.ndarray]], batch_size: int) -> EmbeddingCache:
  """Embeds every (user, day) and (video, day) of `columns` with the frozen encoder.

  Each pass seeds only one node set with real ids; the other side gets the
  OOV id -1 (index 0: an isolated node), so every node gets its own cutoff.
  """
  started = time.time()
  infer = tf.function(lambda g: encoder_lib.readout(model.encoder(g, training=False)),
                      input_signature=[sampler.graph_tensor_spec()], autograph=False)
  keys, values = {}, {}
  for ns in ("user", "video"):
    raw = np.concatenate([c[f"{ns}_id"] for c in columns]).astype(np.int64)
    day = np.concatenate([c["day"] for c in columns]).astype(np.int64)
    pairs = np.unique(np.stack([raw, day], 1), axis=0)
    chunks = []
    for start in range(0, len(pairs), batch_size):
      ids, days = (tf.constant(pairs[start:start + batch_size, i]) for i in (0, 1))
      dummy = -tf.ones_like(ids)
      users, videos = (ids, dummy) if ns == "user" else (dummy, ids)
      chunks.append(infer(sampler(users, videos, days))[ns].numpy())
    index = tables.lookup(ns, tf.constant(pairs[:, 0])).numpy()
    node_keys = index * DAY_RADIX + pairs[:, 1]
    order = np.argsort(node_keys, kind="stable")
    keys[ns], values[ns] = node_keys[order], np.concatenate(chunks)[order]
    logging.info("two_stage: embedded %d (%s, day) pairs", len(pairs), ns)
  logging.info("two_stage: precomputed embeddings in %.1fs", time.time() - started)
  return EmbeddingCache(keys, values)
