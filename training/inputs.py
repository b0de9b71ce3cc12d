"""The tf.data pipelines of one run: TF-GNN's `DatasetProvider` role.

Training batches are shuffled per epoch with seed `train.seed * 1000 + epoch`
(so a resumed run replays the same order and skips what it had done), then
the sampler adds `graph` inside tf.data (neighbours re-drawn every epoch), or,
once two_stage has precomputed them, the cached embeddings are added instead.
Eval batches keep file order and are sampled with the serving seed.

With `sampling.where=beam` the subgraphs come pre-sampled (graph/beam_sampling.py,
one per example, leak-free by the same rule) from `sampling.subgraphs_dir`:
`PresampledSubgraphs` reads them instead of sampling in tf.data. Their
neighbours are drawn once (with the first epoch's seed), not every epoch, and
the graph's sampling index is never loaded (`Inputs.sampler` is None): the
trainer's memory holds the node tables, not the graph's edges.
"""
from __future__ import annotations

import math
import os
from typing import Callable

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import tensorflow as tf

from e2e_grec import contracts
from e2e_grec.config import Config, ConfigError
from e2e_grec.datasets import examples as examples_lib
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.graph import example_subgraphs
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
    self._dir = subgraphs_dir
    self._spec = example_subgraphs.read_spec(subgraphs_dir)

  @classmethod
  def of(cls, config: Config) -> "PresampledSubgraphs":
    """The subgraphs `sampling.where=beam` trains on; ConfigError for what needs a sampler."""
    mode = modes.of(config)
    if mode.reads_precomputed:
      raise ConfigError(f"model.mode={mode.name} does not run with sampling.where=beam: it "
                        "precomputes per-node embeddings with the in-memory sampler; use "
                        "sampling.where=trainer")
    if config.train.strategy != "default":
      raise ConfigError(f"sampling.where=beam: pre-sampled subgraphs are not yet sharded over "
                        f"tf.distribute workers (train.strategy={config.train.strategy}); "
                        "use train.strategy=default")
    if not config.sampling.subgraphs_dir:
      raise ConfigError("sampling.where=beam needs sampling.subgraphs_dir, the "
                        "pre-sampled subgraphs (BeamSubgraphSampler output)")
    return cls(config.sampling.subgraphs_dir)

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
    ds = example_subgraphs.records(self._dir, split)
    if shuffle_seed is not None:
      ds = ds.shuffle(self.SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=False)
    spec = self._spec
    return ds.batch(batch_size).map(
        lambda records: {**examples_lib.parse(records),
                         contracts.GRAPH_INPUT: example_subgraphs.parse(spec, records)},
        num_parallel_calls=tf.data.AUTOTUNE)


def make_sampler(config: Config, graph_dir: str, tables: NodeTables):
  from e2e_grec.graph.sampler import SubgraphSampler
  from e2e_grec.graph.sampling_index import SamplingIndex
  return SubgraphSampler(SamplingIndex.load(graph_dir), tables, config.sampling)


def shard_batches(ds: tf.data.Dataset, shard: tf.distribute.InputContext) -> tf.data.Dataset:
  """Each global batch of `ds` -> one batch per local replica of this input pipeline."""
  replicas = shard.num_replicas_in_sync
  local = replicas // shard.num_input_pipelines
  first = shard.input_pipeline_id * local
  return ds.flat_map(lambda batch: tf.data.Dataset.range(first, first + local).map(
      lambda r: tf.nest.map_structure(lambda column: column[r::replicas], batch)))


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
    """Reads `prepare`'s examples and node tables and, if the mode has a GNN, the
    graph's sampling index (sampling.where=trainer) or the pre-sampled subgraphs
    (sampling.where=beam, which need no `graph_dir`)."""
    mode = modes.of(config)
    tables = load_tables(examples_dir)
    sampler = presampled = None
    if mode.has_encoder and config.sampling.where == "beam":
      presampled = PresampledSubgraphs.of(config)
    elif mode.has_encoder:
      if not graph_dir:
        raise ValueError(f"model.mode={mode.name} needs the graph directory "
                         "(build-graph output)")
      sampler = make_sampler(config, graph_dir, tables)
    # Pre-sampled examples carry their own features and labels, in their own order.
    read = presampled.columns if presampled else lambda split: load_split(examples_dir, split)
    train, eval_ = read(contracts.TRAIN_SPLIT), read(contracts.EVAL_SPLIT)
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

  def graph_fn(self, seed: int, use_cache: bool = True) -> Callable[[dict], dict] | None:
    """batch -> batch + `graph` (or cached embeddings); None when the mode needs neither."""
    if use_cache and self._cache_fn is not None:
      return self._cache_fn
    if self.sampler is None:
      return None
    sampler = self.sampler
    return lambda b: {**b, contracts.GRAPH_INPUT: sampler(
        b[contracts.USER_ID], b[contracts.VIDEO_ID], b[contracts.DAY], seed=seed)}

  def _add_graph(self, ds: tf.data.Dataset, seed: int, use_cache: bool) -> tf.data.Dataset:
    add = self.graph_fn(seed, use_cache)
    if add is not None:
      ds = ds.map(add, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)

  def train(self, epoch: int, skip: int = 0, use_cache: bool = True,
            shard: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Epoch `epoch`'s batches from batch `skip` on.

    With `shard` (a `tf.distribute` input pipeline), the pipeline yields, for
    every global batch, the rows of its local replicas only (rows r::replicas
    for replica r), so the replicas of all workers together train on exactly
    the batches of one process, and each worker samples only its own rows.
    """
    if self._presampled is not None:
      return self._presampled.dataset(contracts.TRAIN_SPLIT, self._config.train.batch_size,
                                      self._config.train.seed * 1000 + epoch
                                      ).skip(skip).prefetch(tf.data.AUTOTUNE)
    ds = self.train_examples(epoch, skip)
    if shard is not None:
      ds = shard_batches(ds, shard)
    return self._add_graph(ds, self.train_sampling_seed(epoch), use_cache)

  def train_examples(self, epoch: int, skip: int = 0) -> tf.data.Dataset:
    """Epoch `epoch`'s example batches, before `graph_fn` (which parameter_server runs in the step)."""
    return self._batched(self._train, self._config.train.seed * 1000 + epoch).skip(skip)

  def train_sampling_seed(self, epoch: int) -> int:
    return self._config.sampling.seed + 1 + epoch

  def eval(self) -> tf.data.Dataset:
    """Eval batches in file order, sampled with the serving seed."""
    if self._presampled is not None:
      return self._presampled.dataset(contracts.EVAL_SPLIT, self._config.train.batch_size,
                                      None).prefetch(tf.data.AUTOTUNE)
    return self._add_graph(self._batched(self._eval, None), self._config.sampling.seed, True)

  def steps_per_epoch(self) -> int:
    return math.ceil(len(self._train["user_id"]) / self._config.train.batch_size)
