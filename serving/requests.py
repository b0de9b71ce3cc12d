"""The wire contract of the exported model: signature names, inputs, outputs.

Shared by the exporter, the client and the benchmark; it imports neither
tensorflow_gnn nor the model, so a client needs only TensorFlow and
tensorflow-serving-api.
"""
from __future__ import annotations

import datetime
from typing import Sequence

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from e2e_grec.contracts import DAY, HOUR, TAB, USER_ID, VIDEO_ID
from e2e_grec.datasets import dates, labels

EXAMPLES_SIGNATURE = "serving_default"
RANK_SIGNATURE = "rank"
EXAMPLES_INPUT = "examples"
# Request features of every example (int64 scalars); see docs/ARCHITECTURE.md.
REQUEST_FEATURES = (USER_ID, VIDEO_ID, TAB, HOUR, DAY)
# Inputs of `rank`, each int64 [N]: one row per candidate, the user and the
# request context repeated on every row, so requests batch along dimension 0.
RANK_INPUTS = (USER_ID, "video_ids", TAB, HOUR, DAY)
# Where TF Serving looks for the requests it replays when it loads a version.
WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
TASKS = labels.TASKS
SCORE = "score"
OUTPUTS = TASKS + (SCORE,)

def today() -> int:
  """Days since 1970-01-01 of the local date: the `day` feature of a live request."""
  return dates.day_of(datetime.date.today())


def rank_rows(user_id: int | Sequence[int], video_ids: Sequence[int],
              tab: int | Sequence[int], hour: int | Sequence[int],
              day: int | Sequence[int]) -> dict[str, np.ndarray]:
  """The `rank` inputs as int64 [N] rows; a single value applies to every candidate."""
  values = {"user_id": user_id, "video_ids": video_ids, "tab": tab, "hour": hour, "day": day}
  arrays = {k: np.asarray(v, np.int64).reshape(-1) for k, v in values.items()}
  n = arrays["video_ids"].shape[0]
  for name, array in arrays.items():
    if array.shape[0] not in (1, n):
      raise ValueError(f"{name} has {array.shape[0]} values; give one, or one per "
                       f"candidate ({n})")
  return {k: np.broadcast_to(arrays[k], [n]) for k in RANK_INPUTS}


def rank_request(model_name: str, user_id: int | Sequence[int], video_ids: Sequence[int],
                 tab: int | Sequence[int], hour: int | Sequence[int],
                 day: int | Sequence[int], version: int | None = None
                 ) -> predict_pb2.PredictRequest:
  """A Predict request for the `rank` signature: one row per candidate."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = RANK_SIGNATURE
  if version is not None:
    request.model_spec.version.value = version
  for name, rows in rank_rows(user_id, video_ids, tab, hour, day).items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(rows, dtype=tf.int64))
  return request


def examples_request(model_name: str, examples: Sequence[bytes],
                     version: int | None = None) -> predict_pb2.PredictRequest:
  """A Predict request for `serving_default` (see `export.request_examples`)."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = EXAMPLES_SIGNATURE
  if version is not None:
    request.model_spec.version.value = version
  request.inputs[EXAMPLES_INPUT].CopyFrom(
      tf.make_tensor_proto(list(examples), dtype=tf.string, shape=[len(examples)]))
  return request
