"""Lookups into table variables that `train.strategy: parameter_server` may shard.

Under a variable partitioner (`training/distribute.py`) a big table is a
`ShardedVariable`: consecutive row ranges ("div" sharding), one per PS task.
`tf.gather` reads one through `ShardedVariable.sparse_read`, which (TF 2.21)
returns the rows grouped by shard, not in index order, and `tf.searchsorted`
would first copy every shard to the worker. These send each shard only its
part of the work, on its own PS task, and put the answers in order. Plain
variables and tensors take the ordinary op: one process and
`multi_worker_mirrored` run exactly what they ran before.
"""
from __future__ import annotations

import tensorflow as tf

_ShardedVariable = tf.__internal__.distribute.ShardedVariable


def gather(table, indices: tf.Tensor) -> tf.Tensor:
  """Rows `table[indices]` (indices of any shape), like `tf.gather` on axis 0."""
  if isinstance(table, _ShardedVariable):
    return tf.nn.embedding_lookup(table, indices)  # "div" lookup, per-shard gathers.
  return tf.gather(table, indices)


def searchsorted(table, values: tf.Tensor, side: str = "left") -> tf.Tensor:
  """`tf.searchsorted` (int64) of 1-D `values` in an ascending 1-D `table`."""
  if not isinstance(table, _ShardedVariable):
    return tf.searchsorted(table, values, side=side, out_type=tf.int64)
  # The shards are consecutive pieces of one ascending array, so a value's
  # position in the whole is the sum of its positions in the pieces. Each
  # search runs where its shard is (colocated, like embedding_lookup's gathers:
  # no device name that a SavedModel would carry to its server).
  positions = []
  for shard in table.variables:
    with tf.compat.v1.colocate_with(shard):
      positions.append(tf.searchsorted(shard, values, side=side, out_type=tf.int64))
  return tf.add_n(positions)
