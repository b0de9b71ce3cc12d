"""SavedModel export with the two TF Serving signatures of E2E-GRec.

`serving_default` takes a batch of serialized `tf.Example`s. Each carries the
request features (`user_id`, `video_id`, `tab`, `hour`, `day`) and its own
pre-sampled subgraph in TF-GNN's `tf.Example` encoding (`tfgnn.write_example`),
so a caller that samples elsewhere (a feature service, a batch job) sends
everything the model needs. `request_examples` builds such requests.

`rank` takes raw ids, one row per candidate (`user_id`, `video_ids`, `tab`,
`hour`, `day`, each int64 [N]: the user and context repeated on every row), and
samples the subgraph inside the model with the `SubgraphSampler`, whose tables
are variables: stock TF Serving then serves the whole path end to end and the
graph tables load as checkpoint variables, not GraphDef constants. Every input
of both signatures has the same batch dimension, so TF Serving's request
batching (`--enable_batching`) concatenates concurrent requests into one run.

A model trained on pre-sampled subgraphs (`sampling.where=beam`) never loaded
the graph's sampling index, so it has no sampler to put in the graph: its
export has `serving_default` only, and the subgraphs come with the requests
(from the BeamSubgraphSampler, or any sampler that writes the same encoding).
A `rank` request to it fails with NOT_FOUND, naming the signatures it has.

Both return the per-task predictions (`click`, `long_view`, `like`, `skip`
probabilities and `stay`), each float32 [N], and `score`, the weighted sum with
`config.export.task_weights` that ranks candidates. Only stock TensorFlow ops
are in the exported graphs, so the SavedModel loads without tensorflow_gnn.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Sequence

import tensorflow as tf
import tensorflow_gnn as tfgnn

from tensorflow_serving.apis import prediction_log_pb2

from e2e_grec import config as config_lib
from e2e_grec.contracts import EVAL_SPLIT, GRAPH_INPUT
from e2e_grec.graph import example_subgraphs
from e2e_grec.serving.requests import (EXAMPLES_INPUT, EXAMPLES_SIGNATURE, RANK_INPUTS,
                                       RANK_SIGNATURE, REQUEST_FEATURES, SCORE, TASKS,
                                       WARMUP_DIR, WARMUP_FILE, examples_request,
                                       rank_request, rank_rows)

def example_graph_spec(spec: tfgnn.GraphTensorSpec) -> tfgnn.GraphTensorSpec:
  """One example's subgraph spec (the sampler's or the pre-sampled one), with free sizes."""
  if spec.rank != 0:
    raise ValueError(f"an example's graph spec must be scalar, got rank {spec.rank}")
  return spec.relax(num_components=True, num_nodes=True, num_edges=True)


class Scorer:
  """Builds the signature functions around one model and where its subgraphs come from.

  `sampler` (the in-memory `SubgraphSampler`) samples inside `rank`. A graph
  model trained on pre-sampled subgraphs has none: `graph_spec` (theirs) then
  gives it `serving_default` alone.
  """

  def __init__(self, model: tf.keras.Model, sampler: Any | None,
               serving: config_lib.ExportConfig,
               graph_spec: tfgnn.GraphTensorSpec | None = None):
    unknown = sorted(set(serving.task_weights) - set(TASKS))
    if unknown:
      raise ValueError(f"export.task_weights has unknown task(s) {unknown}; "
                       f"tasks are {', '.join(TASKS)}")
    if sampler is not None:
      graph_spec = sampler.graph_tensor_spec()
    if model.mode.has_encoder != (graph_spec is not None):
      needs = "a sampler or a graph_spec" if model.mode.has_encoder else "no sampler"
      raise ValueError(f"a {model.mode.name} model needs {needs}")
    self.model = model
    # None for a no_graph model (requests carry no subgraph) or pre-sampled subgraphs.
    self.sampler = sampler
    self.task_weights = tuple(sorted(serving.task_weights.items()))
    self.max_candidates = serving.max_candidates
    self.graph_spec = None if graph_spec is None else example_graph_spec(graph_spec)
    # `rank` samples inside the model: a graph model needs the sampler for it.
    self.ranks = sampler is not None or not model.mode.has_encoder

  def signatures(self) -> dict[str, Any]:
    """Concrete functions of `serving_default` and (if `ranks`) `rank`."""
    examples = tf.function(self.serve_examples, input_signature=[
        tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    signatures = {EXAMPLES_SIGNATURE: examples.get_concrete_function()}
    if self.ranks:
      rank = tf.function(self.rank, input_signature=[
          tf.TensorSpec([None], tf.int64, name=name) for name in RANK_INPUTS])
      signatures[RANK_SIGNATURE] = rank.get_concrete_function()
    return signatures

  def predict(self, features: dict[str, tf.Tensor],
              graph: tfgnn.GraphTensor | None) -> dict[str, tf.Tensor]:
    """The model's task outputs as float32 [N] each, plus the ranking score."""
    inputs = dict(features)
    if graph is not None:
      inputs[GRAPH_INPUT] = graph
    predictions = self.model(inputs, training=False)
    missing = [t for t in TASKS if t not in predictions]
    if missing:
      raise ValueError(f"the model's outputs lack task(s) {missing}; got {sorted(predictions)}")
    outputs = {t: tf.reshape(tf.cast(predictions[t], tf.float32), [-1]) for t in TASKS}
    score = tf.zeros_like(outputs[TASKS[0]])
    for task, weight in self.task_weights:
      score += weight * outputs[task]
    outputs[SCORE] = score
    return outputs

  def _check_batch(self, n: tf.Tensor, signature: str, what: str) -> list[tf.Operation]:
    return [
        tf.debugging.assert_positive(n, message=f"{signature}: no {what} given"),
        tf.debugging.assert_less_equal(
            n, tf.constant(self.max_candidates, n.dtype),
            message=f"{signature}: too many {what}, at most {self.max_candidates} "
            "(export.max_candidates) per request")]

  def serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
    """Scores serialized tf.Examples, each with its own pre-sampled subgraph."""
    with tf.control_dependencies(self._check_batch(tf.size(examples), EXAMPLES_SIGNATURE,
                                                   "examples")):
      examples = tf.identity(examples)
    features = tf.io.parse_example(
        examples, {name: tf.io.FixedLenFeature([], tf.int64) for name in REQUEST_FEATURES})
    graph = None
    if self.graph_spec is not None:
      graph = example_subgraphs.parse(self.graph_spec, examples)
    return self.predict(features, graph)

  def rank(self, user_id: tf.Tensor, video_ids: tf.Tensor, tab: tf.Tensor,
           hour: tf.Tensor, day: tf.Tensor) -> dict[str, tf.Tensor]:
    """Scores N (user, video, context) rows from raw ids, sampling in the graph.

    Rows may come from several requests (TF Serving's batching concatenates
    them): each row is scored with its own user, context and day.
    """
    n = tf.size(video_ids, out_type=tf.int64)
    checks = self._check_batch(n, RANK_SIGNATURE, "candidates (video_ids)")
    for name, value in (("user_id", user_id), ("tab", tab), ("hour", hour), ("day", day)):
      checks.append(tf.debugging.assert_equal(
          tf.size(value, out_type=tf.int64), n,
          message=f"rank: {name} must hold one value per candidate (one row per video_ids "
          "entry: repeat the user and context on every row)"))
    with tf.control_dependencies(checks):
      features = {"user_id": tf.identity(user_id), "video_id": tf.identity(video_ids),
                  "tab": tf.identity(tab), "hour": tf.identity(hour), "day": tf.identity(day)}
    graph = None
    if self.sampler is not None:
      graph = self.sampler(features["user_id"], features["video_id"], features["day"])
    return self.predict(features, graph)


def next_version(model_base_dir: str) -> int:
  """The number of the next version under `<serving dir>/<model name>`: the
  current time, or one past the newest version if that is later. TF Serving
  (and `e2e-grec serve`) loads the highest number."""
  versions = [int(e) for e in os.listdir(model_base_dir) if e.isdigit()]
  return max([int(time.time())] + [v + 1 for v in versions])


def export_saved_model(model: tf.keras.Model, sampler: Any | None, node_tables: tf.Module,
                       config: config_lib.Config, export_dir: str) -> str:
  """Writes the SavedModel with `serving_default` (and `rank`) to `export_dir`.

  `sampler` is the `SubgraphSampler`: None for a no_graph model, and for a
  model trained with `sampling.where=beam`, whose export then has
  `serving_default` only, with the spec of `sampling.subgraphs_dir`'s subgraphs.
  Only the variables the signatures read are saved, plus `node_tables` (so a
  loaded SavedModel still exposes the vocabularies), not the Keras model
  object: its Keras serialization would trace every layer again and demand
  weights that serving never uses (the GFAE decoder). Returns `export_dir`.
  """
  graph_spec, warmup = None, None
  if sampler is None and model.mode.has_encoder and config.sampling.where == "beam":
    subgraphs_dir = config.sampling.subgraphs_dir
    graph_spec = example_subgraphs.read_spec(subgraphs_dir)
    # A real request: the first pre-sampled eval example (it carries its subgraph).
    warmup = list(example_subgraphs.records(subgraphs_dir, EVAL_SPLIT).take(1)
                  .as_numpy_iterator())
  scorer = Scorer(model, sampler, config.export, graph_spec)
  signatures = scorer.signatures()
  root = tf.Module(name="e2e_grec_serving")
  root.captured = list({id(v): v for fn in signatures.values() for v in fn.variables}.values())
  root.node_tables = node_tables
  tf.saved_model.save(root, export_dir, signatures=signatures)
  write_warmup_requests(export_dir, sampler, config.serving.model_name, warmup)
  logging.info("exported SavedModel with signatures %s (%d variables) to %s",
               ", ".join(sorted(signatures)), len(root.captured), export_dir)
  return export_dir


def write_warmup_requests(export_dir: str, sampler: Any | None, model_name: str,
                          examples: list[bytes] | None = None) -> str:
  """Writes `assets.extra/tf_serving_warmup_requests`: one request per signature.

  TF Serving (and `e2e-grec serve`) replays them when it loads the version,
  before marking it AVAILABLE, so the first real request does not pay for
  graph optimisation and kernel set-up (seconds on the first `rank` call).
  The ids are out-of-vocabulary on purpose: the requests exercise every op
  whatever the vocabulary. `examples`, given for a model without `rank`
  (pre-sampled subgraphs), is its `serving_default` request instead.
  """
  directory = os.path.join(export_dir, WARMUP_DIR)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, WARMUP_FILE)
  row = {"user_id": -1, "video_ids": [-1], "tab": -1, "hour": 0, "day": 0}
  requests = [examples_request(model_name, examples)] if examples is not None else [
      rank_request(model_name, **row),
      examples_request(model_name, request_examples(sampler, **row))]
  with tf.io.TFRecordWriter(path) as writer:
    for request in requests:
      log = prediction_log_pb2.PredictionLog()
      log.predict_log.request.CopyFrom(request)
      writer.write(log.SerializeToString())
  return path


def request_examples(sampler: Any | None, user_id: int | Sequence[int],
                     video_ids: Sequence[int], tab: int | Sequence[int],
                     hour: int | Sequence[int], day: int | Sequence[int]) -> list[bytes]:
  """Serialized `serving_default` requests: one tf.Example per candidate.

  Each example holds the request features and the subgraph the sampler draws
  for that (user, video, day) alone, encoded with `tfgnn.write_example`.
  Scalars apply to every candidate.
  """
  rows = rank_rows(user_id, video_ids, tab, hour, day)
  values = {("video_id" if k == "video_ids" else k): v for k, v in rows.items()}
  ids = tf.TensorSpec([None], tf.int64)
  # Traced once, and in graph mode like the training input pipeline and `rank`.
  sample = None if sampler is None else tf.function(
      lambda u, v, d: sampler(u, v, d), input_signature=[ids, ids, ids])
  serialized = []
  for i in range(values["video_id"].shape[0]):
    if sample is None:
      example = tf.train.Example()
    else:
      one = {k: tf.constant(values[k][i:i + 1]) for k in ("user_id", "video_id", "day")}
      example = tfgnn.write_example(sample(one["user_id"], one["video_id"], one["day"]))
    for name in REQUEST_FEATURES:
      example.features.feature[name].int64_list.value[:] = [int(values[name][i])]
    serialized.append(example.SerializeToString())
  return serialized
