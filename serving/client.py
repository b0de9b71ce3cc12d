"""`e2e-grec score`: rank candidate videos for one user through TF Serving's gRPC API.

Uses only `tensorflow-serving-api` stubs and the `rank` signature, so it works
against `e2e-grec serve` and the official `tensorflow/serving` image alike.
"""
from __future__ import annotations

import dataclasses
import datetime
import sys
from typing import Any, Sequence

import grpc
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from e2e_grec import config as config_lib
from e2e_grec.serving import requests


@dataclasses.dataclass(frozen=True)
class Ranked:
  """One candidate with its ranking score and per-task predictions."""
  video_id: int
  score: float
  tasks: dict[str, float]


@dataclasses.dataclass(frozen=True)
class Ranking:
  model_name: str
  version: int
  candidates: list[Ranked]


def rank(stub: prediction_service_pb2_grpc.PredictionServiceStub, model_name: str,
         user_id: int, video_ids: Sequence[int], tab: int, hour: int, day: int,
         timeout: float = 30.0) -> Ranking:
  """Scores the candidates with the `rank` signature (one row each); best first."""
  response = stub.Predict(
      requests.rank_request(model_name, user_id, video_ids, tab, hour, day), timeout=timeout)
  outputs = {name: tf.make_ndarray(response.outputs[name]).reshape(-1)
             for name in requests.OUTPUTS}
  candidates = [Ranked(int(v), float(outputs[requests.SCORE][i]),
                       {t: float(outputs[t][i]) for t in requests.TASKS})
                for i, v in enumerate(video_ids)]
  candidates.sort(key=lambda c: -c.score)
  return Ranking(response.model_spec.name, response.model_spec.version.value, candidates)


def format_ranking(ranking: Ranking) -> str:
  header = f"{'rank':>4}  {'video_id':>12}  {'score':>8}" + "".join(
      f"  {t:>9}" for t in requests.TASKS)
  lines = [header]
  for i, c in enumerate(ranking.candidates, 1):
    lines.append(f"{i:>4}  {c.video_id:>12}  {c.score:>8.4f}" + "".join(
        f"  {c.tasks[t]:>9.4f}" for t in requests.TASKS))
  return "\n".join(lines)


def parse_candidates(text: str) -> list[int]:
  """'1,2, 3' -> [1, 2, 3]; names the first entry that is not an integer id."""
  ids = []
  for part in text.split(","):
    part = part.strip()
    if not part:
      continue
    try:
      ids.append(int(part))
    except ValueError:
      raise ValueError(f"--candidates: {part!r} is not an integer video id") from None
  if not ids:
    raise ValueError("--candidates: give at least one video id, e.g. --candidates 11,42,7")
  return ids


def command(args: Any, config: config_lib.Config) -> int:
  """`e2e-grec score` (its --host/--port/--model-name flags are already applied
  to `config.serving`); `--day` defaults to today, in days since 1970-01-01."""
  target = f"{config.serving.host}:{config.serving.grpc_port}"
  model_name = config.serving.model_name
  timeout = args.timeout
  try:
    candidates = parse_candidates(args.candidates)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  hour = datetime.datetime.now().hour if args.hour is None else args.hour
  day = requests.today() if args.day is None else args.day
  with grpc.insecure_channel(target) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
      ranking = rank(stub, model_name, args.user, candidates, args.tab, hour, day, timeout)
    except grpc.RpcError as e:
      print(f"error: {target} answered {e.code().name}: {e.details()}", file=sys.stderr)
      return 1
  print(f"{len(candidates)} candidates for user {args.user} (tab {args.tab}, hour {hour}, "
        f"day {day}) ranked by model {ranking.model_name} version {ranking.version} "
        f"at {target}:")
  print(format_ranking(ranking))
  return 0
