"""The prepared tf.Examples: feature spec, writing and reading of the split files.

One example per impression, ids only (side features live in the node tables):
int64 `user_id`, `video_id`, `tab`, `hour`, `day`, `time_ms`, the binary labels
and float32 `stay`. The layout is the TFX `Examples` artifact's, so TFX
components read the output of `prepare` directly.
"""
from __future__ import annotations

import os

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from e2e_grec.contracts import CONTEXT_FEATURES, ID_FEATURES
from e2e_grec.datasets import labels

INT_FEATURES = ID_FEATURES + CONTEXT_FEATURES + labels.BINARY_TASKS
FLOAT_FEATURES = labels.REGRESSION_TASKS
FEATURES = ID_FEATURES + CONTEXT_FEATURES + labels.TASKS



def feature_spec() -> dict[str, tf.io.FixedLenFeature]:
  """`tf.io.parse_example` spec of every feature and label."""
  return {name: tf.io.FixedLenFeature(
              [], tf.float32 if name in FLOAT_FEATURES else tf.int64)
          for name in FEATURES}


def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  """Parses a batch (or one) of serialized examples into dense tensors."""
  return tf.io.parse_example(serialized, feature_spec())


def write(path: str, columns: dict[str, np.ndarray]) -> int:
  """Writes aligned feature columns as GZIP tf.Examples; returns the count."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  ints = [(name, np.asarray(columns[name], np.int64).tolist()) for name in INT_FEATURES]
  floats = [(name, np.asarray(columns[name], np.float32).tolist())
            for name in FLOAT_FEATURES]
  count = len(ints[0][1])
  example = tf.train.Example()
  int_lists = [example.features.feature[name].int64_list for name, _ in ints]
  float_lists = [example.features.feature[name].float_list for name, _ in floats]
  with tf.io.TFRecordWriter(path, options="GZIP") as writer:
    for row in tqdm(range(count), desc=f"writing {os.path.basename(os.path.dirname(path))}",
                    unit=" examples", leave=False, mininterval=2.0, disable=None):
      for target, (_, values) in zip(int_lists, ints):
        target.value[:] = [values[row]]
      for target, (_, values) in zip(float_lists, floats):
        target.value[:] = [values[row]]
      writer.write(example.SerializeToString())
  return count


def dataset(path_glob: str, batch_size: int) -> tf.data.Dataset:
  """Batched, parsed examples of the files matching `path_glob`, in file order."""
  files = sorted(tf.io.gfile.glob(path_glob))
  if not files:
    raise FileNotFoundError(f"no example files match {path_glob}")
  return (tf.data.TFRecordDataset(files, compression_type="GZIP")
          .batch(batch_size)
          .map(parse, num_parallel_calls=tf.data.AUTOTUNE))


def read_examples(path_glob: str) -> dict[str, np.ndarray]:
  """All examples of the matching files as NumPy columns (for small/medium splits)."""
  batches = list(dataset(path_glob, 65536).as_numpy_iterator())
  if not batches:
    return {name: np.zeros([0], np.float32 if name in FLOAT_FEATURES else np.int64)
            for name in FEATURES}
  return {name: np.concatenate([b[name] for b in batches]) for name in FEATURES}
