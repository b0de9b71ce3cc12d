"""Tiny node tables, batches and sampled subgraphs that follow the data contracts.

Model tests and smoke runs build these by hand instead of running `prepare`
and the sampler, so the shapes the model relies on are written down in one
place: node sets `user`, `video`, `author`, `tag`, `music` with feature `id`,
edges in traversal direction (away from the seeds), and the `_readout`
structure whose `_readout/user` and `_readout/video` sources are the seeds
(see docs/ARCHITECTURE.md, "Sampled subgraph").
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_gnn as tfgnn

from e2e_grec import contracts
from e2e_grec.contracts import NODE_ID_FEATURE, READOUT, readout_edge_set
from e2e_grec.datasets.node_tables import NodeTables

TOY_SIZES = {"user": 12, "video": 20, "author": 5, "tag": 4, "music": 3, "tab": 3}


def toy_node_table_arrays(seed: int = 0) -> dict[str, np.ndarray]:
  """Arrays in the node-tables layout (raw ids = 100 + index)."""
  rng = np.random.default_rng(seed)
  arrays: dict[str, np.ndarray] = {}
  for ns, n in TOY_SIZES.items():
    arrays[f"{ns}/ids"] = np.arange(100, 100 + n, dtype=np.int64)
  for ns, dims, cat_sizes in (("user", 3, (4, 3)), ("video", 2, (5,))):
    n = TOY_SIZES[ns] + 1
    dense = rng.normal(size=(n, dims)).astype(np.float32)
    dense[0] = 0.0
    arrays[f"{ns}/dense"] = dense
    arrays[f"{ns}/dense_names"] = np.array([f"d{i}" for i in range(dims)])
    arrays[f"{ns}/categorical"] = np.stack(
        [rng.integers(0, s, size=n) for s in cat_sizes], axis=1).astype(np.int64)
    arrays[f"{ns}/categorical_names"] = np.array([f"c{i}" for i in range(len(cat_sizes))])
    arrays[f"{ns}/categorical_sizes"] = np.array(cat_sizes, np.int64)
  for link in ("author", "tag", "music"):
    arrays[f"video/{link}"] = rng.integers(
        1, TOY_SIZES[link] + 1, size=TOY_SIZES["video"] + 1).astype(np.int64)
  return arrays


def toy_node_tables(seed: int = 0) -> NodeTables:
  return NodeTables(toy_node_table_arrays(seed))


def toy_batch(batch_size: int = 8, seed: int = 0) -> dict[str, tf.Tensor]:
  """Example features and labels as parsed from the prepared tf.Examples."""
  rng = np.random.default_rng(seed)
  user = rng.integers(0, TOY_SIZES["user"], size=batch_size)
  video = rng.integers(0, TOY_SIZES["video"], size=batch_size)
  # A learnable signal: clicks and long views depend on (user + video) parity.
  signal = ((user + video) % 2).astype(np.int64)
  return {
      "user_id": tf.constant(100 + user, tf.int64),
      "video_id": tf.constant(100 + video, tf.int64),
      "tab": tf.constant(100 + rng.integers(0, TOY_SIZES["tab"], size=batch_size), tf.int64),
      "hour": tf.constant(rng.integers(0, 24, size=batch_size), tf.int64),
      "day": tf.constant(np.full(batch_size, 19120), tf.int64),
      "click": tf.constant(signal, tf.int64),
      "long_view": tf.constant(signal * rng.integers(0, 2, size=batch_size), tf.int64),
      "like": tf.constant(rng.integers(0, 2, size=batch_size), tf.int64),
      "skip": tf.constant(1 - signal, tf.int64),
      "stay": tf.constant(signal * 2.0 + rng.random(batch_size), tf.float32),
  }


def toy_graph(user_index: np.ndarray, video_index: np.ndarray, *, fanout: int = 3,
              seed: int = 0) -> tfgnn.GraphTensor:
  """A sampled-subgraph GraphTensor for seeds given as node *indices*.

  Seeds are de-duplicated; every seed user gets `fanout` clicked videos, every
  video node its author and tag, every seed video `fanout` clicking users and
  `fanout` co-engaged videos; hop-1 videos get their own authors (2 hops).
  """
  rng = np.random.default_rng(seed)
  user_index, video_index = np.asarray(user_index), np.asarray(video_index)
  users, user_seed_pos = np.unique(user_index, return_inverse=True)
  videos, video_seed_pos = np.unique(video_index, return_inverse=True)
  user_ids, video_ids = list(users), list(videos)
  click_src, click_tgt, rev_src, rev_tgt, co_src, co_tgt = [], [], [], [], [], []
  for u in range(len(users)):
    for v in rng.integers(1, TOY_SIZES["video"] + 1, size=fanout):
      click_src.append(u)
      click_tgt.append(len(video_ids))
      video_ids.append(v)
  for v in range(len(videos)):
    for u in rng.integers(1, TOY_SIZES["user"] + 1, size=fanout):
      rev_src.append(v)
      rev_tgt.append(len(user_ids))
      user_ids.append(u)
    for w in rng.integers(1, TOY_SIZES["video"] + 1, size=fanout):
      co_src.append(v)
      co_tgt.append(len(video_ids))
      video_ids.append(w)
  arrays = toy_node_table_arrays()
  author_ids = [arrays["video/author"][v] for v in video_ids]
  tag_ids = [arrays["video/tag"][v] for v in video_ids]
  music_ids = [arrays["video/music"][v] for v in video_ids[:2]]
  n_video = len(video_ids)

  def edges(source_set, src, target_set, tgt):
    return tfgnn.EdgeSet.from_fields(
        sizes=tf.constant([len(src)]),
        adjacency=tfgnn.Adjacency.from_indices(
            source=(source_set, tf.constant(src, tf.int32)),
            target=(target_set, tf.constant(tgt, tf.int32))))

  def nodes(ids):
    return tfgnn.NodeSet.from_fields(
        sizes=tf.constant([len(ids)]),
        features={NODE_ID_FEATURE: tf.constant(np.asarray(ids, np.int64).reshape(-1), tf.int64)})

  batch = len(user_index)
  return tfgnn.GraphTensor.from_pieces(
      node_sets={
          "user": nodes(user_ids), "video": nodes(video_ids), "author": nodes(author_ids),
          "tag": nodes(tag_ids), "music": nodes(music_ids),
          READOUT: tfgnn.NodeSet.from_fields(sizes=tf.constant([batch]), features={}),
      },
      edge_sets={
          "click": edges("user", click_src, "video", click_tgt),
          "rev_click": edges("video", rev_src, "user", rev_tgt),
          "co_engage": edges("video", co_src, "video", co_tgt),
          "authored_by": edges("video", list(range(n_video)), "author", list(range(n_video))),
          "tagged": edges("video", list(range(n_video)), "tag", list(range(n_video))),
          "with_music": edges("video", [0, 1], "music", [0, 1]),
          readout_edge_set("user"): edges("user", list(user_seed_pos), READOUT,
                                          list(range(batch))),
          readout_edge_set("video"): edges("video", list(video_seed_pos), READOUT,
                                           list(range(batch))),
      })


def toy_graph_for_batch(tables: NodeTables, batch: dict[str, tf.Tensor],
                        seed: int = 0) -> tfgnn.GraphTensor:
  """`toy_graph` around the seeds of a `toy_batch`, looked up like the sampler does."""
  return toy_graph(tables.lookup("user", batch["user_id"]).numpy(),
                   tables.lookup("video", batch["video_id"]).numpy(), seed=seed)


def write_toy_run_inputs(root: str, *, train_examples: int = 256, eval_examples: int = 64,
                         seed: int = 0) -> tuple[str, str]:
  """Writes `prepare`- and `build-graph`-shaped toy inputs; returns (examples, graph).

  Days 19100..19109 are training, 19110..19111 eval; the graph holds click,
  long_view and static video edges of the training examples only.
  """
  import os

  from e2e_grec.datasets import examples as examples_lib
  from e2e_grec.datasets.node_tables import save_arrays
  from e2e_grec.graph.sampling_index import EdgeArrays, SamplingIndex

  rng = np.random.default_rng(seed)
  arrays = toy_node_table_arrays(seed)
  examples_dir, graph_dir = os.path.join(root, "examples"), os.path.join(root, "graph")
  os.makedirs(examples_dir, exist_ok=True)
  os.makedirs(graph_dir, exist_ok=True)
  save_arrays(os.path.join(examples_dir, contracts.NODE_TABLES_FILE), arrays)

  def columns(n, first_day, days):
    user = rng.integers(0, TOY_SIZES["user"], size=n)
    video = rng.integers(0, TOY_SIZES["video"], size=n)
    signal = ((user + video) % 2).astype(np.int64)
    return {"user_id": 100 + user, "video_id": 100 + video,
            "tab": 100 + rng.integers(0, TOY_SIZES["tab"], size=n),
            "hour": rng.integers(0, 24, size=n), "day": first_day + rng.integers(0, days, n),
            "time_ms": np.zeros(n, np.int64), "click": signal,
            "long_view": signal * rng.integers(0, 2, size=n),
            "like": rng.integers(0, 2, size=n), "skip": 1 - signal,
            "stay": (signal * 2.0 + rng.random(n)).astype(np.float32)}

  train = columns(train_examples, 19100, 10)
  examples_lib.write(contracts.split_file(examples_dir, contracts.TRAIN_SPLIT), train)
  examples_lib.write(contracts.split_file(examples_dir, contracts.EVAL_SPLIT),
                     columns(eval_examples, 19110, 2))
  user, video = train["user_id"] - 99, train["video_id"] - 99  # node index = raw - 99
  videos = np.arange(1, TOY_SIZES["video"] + 1)
  edges = {
      "click": EdgeArrays("user", "video", user[train["click"] == 1],
                          video[train["click"] == 1], train["day"][train["click"] == 1]),
      "long_view": EdgeArrays("user", "video", user[train["long_view"] == 1],
                              video[train["long_view"] == 1],
                              train["day"][train["long_view"] == 1]),
      "authored_by": EdgeArrays("video", "author", videos, arrays["video/author"][videos],
                                np.full(len(videos), 19000)),
      "tagged": EdgeArrays("video", "tag", videos, arrays["video/tag"][videos],
                           np.full(len(videos), 19000)),
  }
  sizes = {ns: TOY_SIZES[ns] + 1 for ns in ("user", "video", "author", "tag", "music")}
  SamplingIndex.from_edges(edges, sizes).save(graph_dir)
  return examples_dir, graph_dir
