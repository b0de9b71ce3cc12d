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
# Inputs of `rank`: `video_ids` [N]; the others hold one value (scalar or [1])
# for the whole request, or one value per candidate ([N]).
RANK_INPUTS = (USER_ID, "video_ids", TAB, HOUR, DAY)
TASKS = labels.TASKS
SCORE = "score"
OUTPUTS = TASKS + (SCORE,)

def today() -> int:
  """Days since 1970-01-01 of the local date: the `day` feature of a live request."""
  return dates.day_of(datetime.date.today())


def rank_request(model_name: str, user_id: int, video_ids: Sequence[int], tab: int,
                 hour: int, day: int, version: int | None = None) -> predict_pb2.PredictRequest:
  """A Predict request for the `rank` signature: one user, N candidates."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = RANK_SIGNATURE
  if version is not None:
    request.model_spec.version.value = version
  values = {"user_id": user_id, "video_ids": np.asarray(video_ids, np.int64).reshape(-1),
            "tab": tab, "hour": hour, "day": day}
  for name in RANK_INPUTS:
    request.inputs[name].CopyFrom(tf.make_tensor_proto(values[name], dtype=tf.int64))
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
