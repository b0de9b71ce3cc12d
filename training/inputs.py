"""The tf.data pipelines of one run: TF-GNN's `DatasetProvider` role.

Training batches are shuffled per epoch with seed `train.seed * 1000 + epoch`
(so a resumed run replays the same order and skips what it had done), then
the sampler adds `graph` inside tf.data (neighbours re-drawn every epoch), or,
once two_stage has precomputed them, the cached embeddings are added instead.
Eval batches keep file order and are sampled with the serving seed.

With `sampling.where=beam` the subgraphs come pre-sampled (graph/beam_sampling.py,
one per example, leak-free by the same rule) from `sampling.subgraphs_dir`:
`PresampledSubgraphs` reads them instead of sampling in tf.data. Their
neighbours are drawn once (with the first epoch's seed), not every epoch.
"""
from __future__ import annotations

import math
import os
from typing import Callable

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import tensorflow as tf
import tensorflow_gnn as tfgnn

from e2e_grec import contracts
from e2e_grec.config import Config
from e2e_grec.datasets import examples as examples_lib
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.models import modes


def load_split(examples_dir: str, split: str) -> dict[str, np.ndarray]:
  path = contracts.split_file(examples_dir, split)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no {split} examples at {path}; run `e2e-grec prepare` first")
  columns = examples_lib.read_examples(path)
  if not len(columns["user_id"]):
    raise ValueError(f"{path} holds no examples")
  return columns


def load_tables(examples_dir: str) -> NodeTables:
  path = os.path.join(examples_dir, contracts.NODE_TABLES_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no node tables at {path}; run `e2e-grec prepare` first")
  return NodeTables.load(path)


class PresampledSubgraphs:
  """The BeamSubgraphSampler's examples, each with its subgraph, as model batches."""

  # Records shuffled at a time: bounded, since pre-sampled splits may not fit in memory.
  SHUFFLE_BUFFER = 65_536

  def __init__(self, subgraphs_dir: str):
    from e2e_grec.graph import beam_sampling
    self._dir = subgraphs_dir
    self._spec = beam_sampling.graph_spec(subgraphs_dir)

  def columns(self, split: str) -> dict[str, np.ndarray]:
    """The split's features and labels, in the order `dataset` yields them."""
    pattern = contracts.split_glob(self._dir, split)
    columns = examples_lib.read_examples(pattern)
    if not len(columns[contracts.USER_ID]):
      raise ValueError(f"no pre-sampled {split} examples match {pattern} "
                       "(sampling.subgraphs_dir: BeamSubgraphSampler output)")
    return columns

  def dataset(self, split: str, batch_size: int, shuffle_seed: int | None) -> tf.data.Dataset:
    """Batches of features plus `graph` (one component per batch, as the sampler's)."""
    from e2e_grec.serving.export import _single_component  # pylint: disable=protected-access
    files = sorted(tf.io.gfile.glob(contracts.split_glob(self._dir, split)))
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if shuffle_seed is not None:
      ds = ds.shuffle(self.SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=False)
    spec = self._spec
    return ds.batch(batch_size).map(
        lambda records: {**examples_lib.parse(records), contracts.GRAPH_INPUT: _single_component(
            tfgnn.parse_example(spec, records).merge_batch_to_components())},
        num_parallel_calls=tf.data.AUTOTUNE)


def make_sampler(config: Config, graph_dir: str, tables: NodeTables):
  from e2e_grec.graph.sampler import SubgraphSampler
  from e2e_grec.graph.sampling_index import SamplingIndex
  return SubgraphSampler(SamplingIndex.load(graph_dir), tables, config.sampling)


class Inputs:
  """Train and eval batches of one run: features, then `graph` or cached embeddings."""

  def __init__(self, config: Config, train: dict, eval_: dict, sampler, tables: NodeTables,
               presampled: PresampledSubgraphs | None = None):
    self._config, self._train, self._eval = config, train, eval_
    self.sampler, self.tables = sampler, tables
    self._presampled = presampled
    self._cache_fn: Callable | None = None

  @classmethod
  def from_dirs(cls, config: Config, examples_dir: str, graph_dir: str | None) -> "Inputs":
    """Reads `prepare`'s examples and node tables and, if the mode has a GNN, the graph."""
    mode = modes.of(config)
    tables = load_tables(examples_dir)
    train, eval_ = load_split(examples_dir, contracts.TRAIN_SPLIT), load_split(examples_dir, contracts.EVAL_SPLIT)
    sampler = presampled = None
    if mode.has_encoder:
      if not graph_dir:
        raise ValueError(f"model.mode={mode.name} needs the graph directory "
                         "(build-graph output)")
      # Kept with where=beam too: the export's `rank` signature samples with it.
      sampler = make_sampler(config, graph_dir, tables)
      if config.sampling.where == "beam":
        if not config.sampling.subgraphs_dir:
          raise ValueError("sampling.where=beam needs sampling.subgraphs_dir, the "
                           "pre-sampled subgraphs (BeamSubgraphSampler output)")
        presampled = PresampledSubgraphs(config.sampling.subgraphs_dir)
        train = presampled.columns(contracts.TRAIN_SPLIT)
        eval_ = presampled.columns(contracts.EVAL_SPLIT)
    return cls(config, train, eval_, sampler, tables, presampled)

  @property
  def train_columns(self) -> dict[str, np.ndarray]:
    return self._train

  @property
  def eval_columns(self) -> dict[str, np.ndarray]:
    return self._eval

  def use_cache(self, cache_fn: Callable[[dict], dict]) -> None:
    """From now on, batches get precomputed embeddings instead of a subgraph."""
    self._cache_fn = cache_fn

  def _batched(self, columns: dict, shuffle_seed: int | None) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle_seed is not None:
      ds = ds.shuffle(len(columns["user_id"]), seed=shuffle_seed,
                      reshuffle_each_iteration=False)
    return ds.batch(self._config.train.batch_size)

  def _add_graph(self, ds: tf.data.Dataset, seed: int, use_cache: bool) -> tf.data.Dataset:
    if use_cache and self._cache_fn is not None:
      ds = ds.map(self._cache_fn, num_parallel_calls=tf.data.AUTOTUNE)
    elif self.sampler is not None:
      sampler = self.sampler
      ds = ds.map(lambda b: {**b, contracts.GRAPH_INPUT: sampler(
          b[contracts.USER_ID], b[contracts.VIDEO_ID], b[contracts.DAY], seed=seed)},
                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)

  def train(self, epoch: int, skip: int = 0, use_cache: bool = True) -> tf.data.Dataset:
    """Epoch `epoch`'s batches from batch `skip` on."""
    seed = self._config.train.seed * 1000 + epoch
    if self._presampled is not None and not (use_cache and self._cache_fn is not None):
      return self._presampled.dataset(contracts.TRAIN_SPLIT, self._config.train.batch_size,
                                      seed).skip(skip).prefetch(tf.data.AUTOTUNE)
    ds = self._batched(self._train, seed).skip(skip)
    return self._add_graph(ds, self._config.sampling.seed + 1 + epoch, use_cache)

  def eval(self) -> tf.data.Dataset:
    """Eval batches in file order, sampled with the serving seed."""
    if self._presampled is not None and self._cache_fn is None:
      return self._presampled.dataset(contracts.EVAL_SPLIT, self._config.train.batch_size,
                                      None).prefetch(tf.data.AUTOTUNE)
    return self._add_graph(self._batched(self._eval, None), self._config.sampling.seed, True)

  def steps_per_epoch(self) -> int:
    return math.ceil(len(self._train["user_id"]) / self._config.train.batch_size)
