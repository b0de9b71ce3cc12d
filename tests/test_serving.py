"""Serving: SavedModel export, the TF-Serving-protocol server, the gRPC client.

A tiny untrained E2E-GRec model (real encoder, ranker and SubgraphSampler on
hand-made node tables and edges) is exported once; the server runs on
127.0.0.1 with ephemeral ports and is queried with the real
tensorflow-serving-api stubs and over REST.
"""
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import grpc
import numpy as np
import pytest
import tensorflow as tf
import yaml
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, prediction_service_pb2_grpc)

from e2e_grec import config as config_lib
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.graph.sampler import SubgraphSampler
from e2e_grec.graph.sampling_index import EdgeArrays, SamplingIndex
import toy_data
from e2e_grec.models.e2e_grec import E2EGRec
from e2e_grec.serving import client, export, requests, server as server_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "e2e_grec"
DAY = 19120  # every toy edge is on a day in [DAY - 20, DAY)
USER = 101  # toy raw ids: users 100..111, videos 100..119, tabs 100..102
CANDIDATES = [100, 103, 107, 111, 119]
MAX_CANDIDATES = 64
TOL = 1e-5
CONFIG = config_lib.Config().replace(**{
    "model.gnn_hidden_dim": 8, "model.embedding_dim": 4, "model.bottom_units": [16],
    "model.tower_units": [8], "model.cross_layers": 1,
    "sampling.fanouts": [3, 2], "model.gnn_layers": 2,
    "export.max_candidates": MAX_CANDIDATES, "serving.host": "127.0.0.1",
    "serving.grpc_port": 0, "serving.rest_port": 0, "serving.poll_seconds": 0.2})


def _index() -> SamplingIndex:
  sizes = toy_data.TOY_SIZES
  rng = np.random.default_rng(0)

  def user_video(n):
    return ("user", "video", rng.integers(1, sizes["user"] + 1, n),
            rng.integers(1, sizes["video"] + 1, n), rng.integers(DAY - 20, DAY, n),
            rng.integers(1, sizes["tab"] + 1, n))

  videos = np.arange(1, sizes["video"] + 1)
  links = toy_data.toy_node_table_arrays()
  edges = {
      "click": EdgeArrays(*user_video(150)),
      "like": EdgeArrays(*user_video(40)),
      "authored_by": EdgeArrays("video", "author", videos, links["video/author"][1:],
                                np.full(len(videos), DAY - 30)),
      "co_engage": EdgeArrays("video", "video", rng.integers(1, sizes["video"] + 1, 40),
                              rng.integers(1, sizes["video"] + 1, 40),
                              rng.integers(DAY - 20, DAY, 40)),
  }
  return SamplingIndex.from_edges(
      edges, {ns: sizes[ns] + 1 for ns in ("user", "video", "author", "tag", "music")})


def _rank_rows(user, videos, tab=100, hour=9, day=DAY) -> dict[str, list[int]]:
  """`rank` inputs as JSON-ready lists: one row per candidate."""
  return {k: v.tolist() for k, v in requests.rank_rows(user, videos, tab, hour, day).items()}


def _features(user, videos, tab=100, hour=9, day=DAY) -> dict[str, tf.Tensor]:
  n = len(videos)
  return {"user_id": tf.fill([n], tf.constant(user, tf.int64)),
          "video_id": tf.constant(videos, tf.int64),
          "tab": tf.fill([n], tf.constant(tab, tf.int64)),
          "hour": tf.fill([n], tf.constant(hour, tf.int64)),
          "day": tf.fill([n], tf.constant(day, tf.int64))}


@pytest.fixture(scope="session")
def bundle():
  """(model, sampler, tables) of a tiny untrained E2E-GRec model."""
  tables = NodeTables(toy_data.toy_node_table_arrays())
  sampler = SubgraphSampler(_index(), tables, CONFIG.sampling)
  model = E2EGRec(tables, CONFIG)
  features = _features(USER, CANDIDATES)
  model({**features, "graph": sampler(features["user_id"], features["video_id"],
                                      features["day"])})
  return model, sampler, tables


@pytest.fixture(scope="session")
def model_dir(bundle, tmp_path_factory) -> str:
  """A serving dir with version 1 of the model, as the Pusher leaves it."""
  base = str(tmp_path_factory.mktemp("serving"))
  model, sampler, tables = bundle
  export.export_saved_model(model, sampler, tables, CONFIG, os.path.join(base, MODEL, "1"))
  return base


@pytest.fixture(scope="module")
def loaded(model_dir):
  """The exported SavedModel loaded in this process (no server)."""
  return tf.saved_model.load(os.path.join(model_dir, MODEL, "1"))


@pytest.fixture(scope="module")
def served(model_dir):
  server = server_lib.ModelServer(model_dir, CONFIG.serving).start()
  yield server
  server.stop()


@pytest.fixture(scope="module")
def stubs(served):
  channel = grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}")
  yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
         model_service_pb2_grpc.ModelServiceStub(channel))
  channel.close()


@pytest.fixture(scope="module")
def examples(bundle) -> list[bytes]:
  return export.request_examples(bundle[1], USER, CANDIDATES, 100, 9, DAY)


def _outputs(response) -> dict[str, np.ndarray]:
  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def _expected(model, sampler, features) -> dict[str, np.ndarray]:
  """The in-process model on the in-process sampler's graph, with the score.

  The sampler runs in graph mode, as in the training input pipeline.
  """
  graph = tf.function(lambda u, v, d: sampler(u, v, d))(
      features["user_id"], features["video_id"], features["day"])
  out = {k: v.numpy() for k, v in model({**features, "graph": graph}).items()}
  out["score"] = sum(w * out[t] for t, w in CONFIG.export.task_weights.items())
  return out


def _assert_close(actual: dict, expected: dict) -> None:
  assert set(requests.OUTPUTS) <= set(actual)
  for name in requests.OUTPUTS:
    np.testing.assert_allclose(actual[name], expected[name], atol=TOL, rtol=0, err_msg=name)


# ---- export ----------------------------------------------------------------

_LOAD_WITHOUT_TFGNN = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    path, feeds = sys.argv[1], json.loads(sys.argv[2])
    with open(path + "/saved_model.pb", "rb") as f:
      saved = saved_model_pb2.SavedModel.FromString(f.read())
    graph_def = saved.meta_graphs[0].graph_def
    functions = {f.signature.name: f for f in graph_def.library.function}
    nodes = {n.name: n for n in graph_def.node}

    def node_ops(node, ops, seen):
      if node.op in functions:
        function_ops(node.op, ops, seen)
      else:
        ops.add(node.op)
      for attr in node.attr.values():
        names = [attr.func.name] if attr.HasField("func") else [f.name for f in attr.list.func]
        for name in names:
          function_ops(name, ops, seen)

    def function_ops(name, ops, seen):
      if name and name not in seen:
        seen.add(name)
        for node in functions[name].node_def:
          node_ops(node, ops, seen)

    report = {"ops": {}}
    for key, signature in saved.meta_graphs[0].signature_def.items():
      if key.startswith("__"):
        continue
      ops, seen, visited = set(), set(), set()
      stack = [t.name.split(":")[0] for t in signature.outputs.values()]
      while stack:
        name = stack.pop().lstrip("^").split(":")[0]
        if name in visited:
          continue
        visited.add(name)
        node_ops(nodes[name], ops, seen)
        stack.extend(nodes[name].input)
      report["ops"][key] = sorted(ops)
    all_ops = set().union(*report["ops"].values())
    report["unregistered"] = sorted(op for op in all_ops if op_def_registry.get(op) is None)
    report["python_ops"] = sorted(all_ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"})

    with tf.compat.v1.Session(graph=tf.Graph()) as session:
      meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
      signature = meta_graph.signature_def["rank"]
      result = session.run(
          {k: v.name for k, v in signature.outputs.items()},
          {signature.inputs[k].name: v for k, v in feeds.items()})
    report["rank"] = {k: v.tolist() for k, v in result.items()}
    report["tensorflow_gnn_imported"] = "tensorflow_gnn" in sys.modules
    print(json.dumps(report))
""")


def test_signatures_use_stock_ops_and_load_without_tensorflow_gnn(bundle, model_dir):
  model, sampler, _ = bundle
  feeds = _rank_rows(USER, CANDIDATES)
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  result = subprocess.run(
      [sys.executable, "-c", _LOAD_WITHOUT_TFGNN, os.path.join(model_dir, MODEL, "1"),
       json.dumps(feeds)], capture_output=True, text=True, timeout=240, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert set(report["ops"]) == {requests.EXAMPLES_SIGNATURE, requests.RANK_SIGNATURE}
  # The examples path parses tf.Examples; the rank path samples in the graph.
  assert "ParseExampleV2" in report["ops"][requests.EXAMPLES_SIGNATURE]
  assert {"LowerBound", "ReadVariableOp"} <= set(report["ops"][requests.RANK_SIGNATURE])
  assert report["unregistered"] == []
  assert report["python_ops"] == []
  assert report["tensorflow_gnn_imported"] is False
  _assert_close({k: np.array(v) for k, v in report["rank"].items()},
                _expected(model, sampler, _features(USER, CANDIDATES)))


def test_graph_tables_are_variables_not_constants(bundle, model_dir):
  """The sampling index is restored from the checkpoint, not baked into the graph."""
  path = os.path.join(model_dir, MODEL, "1")
  shapes = [tuple(shape) for _, shape in tf.train.list_variables(
      os.path.join(path, "variables", "variables"))]
  tables = [v for v in bundle[1].variables if v.shape.num_elements() >= 100]
  assert tables
  for table in tables:
    assert tuple(table.shape) in shapes, table.name
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    graph_def = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0].graph_def
  consts = [n for f in graph_def.library.function for n in f.node_def
            if n.op == "Const" and n.attr["dtype"].type != types_pb2.DT_STRING]
  largest = max(np.prod([d.size for d in n.attr["value"].tensor.tensor_shape.dim])
                for n in consts)
  assert largest < 100


def test_export_rejects_unknown_task_weights(bundle, tmp_path):
  config = CONFIG.replace(**{"export.task_weights": {"click": 1.0, "follow": 1.0}})
  with pytest.raises(ValueError, match="follow"):
    export.export_saved_model(*bundle, config, str(tmp_path / "1"))


def test_no_graph_model_exports_without_a_sampler(bundle, tmp_path):
  """The no_graph baseline: requests carry no subgraph, rank samples nothing."""
  tables = bundle[2]
  config = CONFIG.replace(**{"model.mode": "no_graph"})
  model = E2EGRec(tables, config)
  features = _features(USER, CANDIDATES)
  expected = {k: v.numpy() for k, v in model(features).items()}
  expected["score"] = sum(w * expected[t] for t, w in config.export.task_weights.items())
  export.export_saved_model(model, None, tables, config, str(tmp_path / "1"))
  signatures = tf.saved_model.load(str(tmp_path / "1")).signatures
  ranked = signatures[requests.RANK_SIGNATURE](
      **{k: tf.constant(v, tf.int64) for k, v in _rank_rows(USER, CANDIDATES).items()})
  _assert_close({k: v.numpy() for k, v in ranked.items()}, expected)
  examples = export.request_examples(None, USER, CANDIDATES, 100, 9, DAY)
  scored = signatures[requests.EXAMPLES_SIGNATURE](examples=tf.constant(examples))
  _assert_close({k: v.numpy() for k, v in scored.items()}, expected)


def test_request_examples_broadcast_and_errors(bundle):
  parsed = tf.io.parse_example(
      export.request_examples(bundle[1], USER, [100, 103], [100, 101], 9, DAY),
      {k: tf.io.FixedLenFeature([], tf.int64) for k in requests.REQUEST_FEATURES})
  assert parsed["tab"].numpy().tolist() == [100, 101]
  assert parsed["user_id"].numpy().tolist() == [USER, USER]
  with pytest.raises(ValueError, match="tab has 3 values"):
    export.request_examples(bundle[1], USER, [100, 103], [1, 2, 3], 9, DAY)


# ---- gRPC ------------------------------------------------------------------

def test_rank_matches_in_process_model_and_saved_model(bundle, loaded, stubs):
  model, sampler, _ = bundle
  response = stubs[0].Predict(
      requests.rank_request(MODEL, USER, CANDIDATES, 100, 9, DAY), timeout=30)
  assert response.model_spec.name == MODEL
  assert response.model_spec.version.value == 1
  assert response.model_spec.signature_name == requests.RANK_SIGNATURE
  served = _outputs(response)
  _assert_close(served, _expected(model, sampler, _features(USER, CANDIDATES)))
  in_process = loaded.signatures[requests.RANK_SIGNATURE](
      **{k: tf.constant(v, tf.int64) for k, v in _rank_rows(USER, CANDIDATES).items()})
  _assert_close(served, {k: v.numpy() for k, v in in_process.items()})


def test_examples_signature_matches_in_process(bundle, loaded, stubs, examples):
  model, sampler, _ = bundle
  response = stubs[0].Predict(requests.examples_request(MODEL, examples), timeout=30)
  assert response.model_spec.signature_name == requests.EXAMPLES_SIGNATURE
  served = _outputs(response)
  in_process = loaded.signatures[requests.EXAMPLES_SIGNATURE](examples=tf.constant(examples))
  _assert_close(served, {k: v.numpy() for k, v in in_process.items()})
  # Each example's own subgraph, scored alone, gives the same prediction.
  for i, candidate in enumerate(CANDIDATES[:2]):
    alone = _expected(model, sampler, _features(USER, [candidate]))
    np.testing.assert_allclose(served["score"][i], alone["score"][0], atol=TOL)


def test_unknown_ids_are_scored_as_cold_start(stubs, bundle):
  unknown = [900001, 900002]
  response = stubs[0].Predict(
      requests.rank_request(MODEL, 999999, unknown + [103], 55, 9, DAY), timeout=30)
  out = _outputs(response)
  assert np.isfinite(out["score"]).all()
  # Both unseen videos (and the unseen user and tab) map to the OOV index.
  np.testing.assert_allclose(out["score"][0], out["score"][1], atol=TOL)
  examples = export.request_examples(bundle[1], 999999, unknown, 55, 9, DAY)
  out = _outputs(stubs[0].Predict(requests.examples_request(MODEL, examples), timeout=30))
  np.testing.assert_allclose(out["score"][0], out["score"][1], atol=TOL)


def test_output_filter_and_explicit_version(stubs):
  request = requests.rank_request(MODEL, USER, CANDIDATES, 100, 9, DAY, version=1)
  request.output_filter.append("score")
  response = stubs[0].Predict(request, timeout=30)
  assert list(response.outputs) == ["score"]


def test_get_model_metadata(stubs):
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  request.model_spec.name = MODEL
  response = stubs[0].GetModelMetadata(request, timeout=30)
  assert response.model_spec.version.value == 1
  signatures = get_model_metadata_pb2.SignatureDefMap()
  response.metadata["signature_def"].Unpack(signatures)
  defs = signatures.signature_def
  assert set(defs) == {requests.EXAMPLES_SIGNATURE, requests.RANK_SIGNATURE}
  assert set(defs[requests.RANK_SIGNATURE].inputs) == set(requests.RANK_INPUTS)
  assert set(defs[requests.EXAMPLES_SIGNATURE].inputs) == {requests.EXAMPLES_INPUT}
  for signature in defs.values():
    assert set(signature.outputs) == set(requests.OUTPUTS)


def test_get_model_status(stubs):
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = MODEL
  response = stubs[1].GetModelStatus(request, timeout=30)
  (status,) = response.model_version_status
  assert status.version == 1
  assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
  assert status.status.error_code == 0


def _bad(kind: str, examples: list[bytes]):
  """A Predict request that is wrong in one way."""
  request = requests.rank_request(MODEL, USER, CANDIDATES, 100, 9, DAY)
  if kind == "unknown model":
    request.model_spec.name = "nope"
  elif kind == "unknown version":
    request.model_spec.version.value = 7
  elif kind == "version label":
    request.model_spec.version_label = "stable"
  elif kind == "unknown signature":
    request.model_spec.signature_name = "nope"
  elif kind == "path characters":
    request.model_spec.name = "../e2e_grec"
  elif kind == "empty model name":
    request.model_spec.name = ""
  elif kind == "wrong dtype":
    request.inputs["user_id"].CopyFrom(tf.make_tensor_proto([USER], dtype=tf.int32))
  elif kind == "missing input":
    del request.inputs["day"]
  elif kind == "unknown input":
    request.inputs["follow"].CopyFrom(tf.make_tensor_proto(1, dtype=tf.int64))
  elif kind == "malformed tensor":
    request.inputs["video_ids"].tensor_content = b"12345"
  elif kind == "values in the wrong field":
    request.inputs["video_ids"].ClearField("tensor_content")
    request.inputs["video_ids"].float_val.extend([1.0] * len(CANDIDATES))
  elif kind == "too few values":
    request.inputs["video_ids"].ClearField("tensor_content")
    request.inputs["video_ids"].int64_val.extend([100, 101])
  elif kind == "wrong rank":
    request.inputs["video_ids"].CopyFrom(tf.make_tensor_proto([[100, 101]], dtype=tf.int64))
  elif kind == "too many candidates":
    request = requests.rank_request(MODEL, USER, list(range(MAX_CANDIDATES + 1)), 100, 9, DAY)
  elif kind == "no candidates":
    request = requests.rank_request(MODEL, USER, [], 100, 9, DAY)
  elif kind == "context per candidate mismatch":
    request.inputs["hour"].CopyFrom(tf.make_tensor_proto([1, 2], dtype=tf.int64))
  elif kind == "unknown output":
    request.output_filter.append("follow")
  elif kind == "not a tf.Example":
    request = requests.examples_request(MODEL, [b"not an example"])
  elif kind == "example without day":
    example = tf.train.Example.FromString(examples[0])
    del example.features.feature["day"]
    request = requests.examples_request(MODEL, [example.SerializeToString()])
  elif kind == "too many examples":
    request = requests.examples_request(MODEL, examples[:1] * (MAX_CANDIDATES + 1))
  else:
    raise AssertionError(kind)
  return request


NOT_FOUND, INVALID = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("kind,code,fragment", [
    ("unknown model", NOT_FOUND, "'nope' not found"),
    ("unknown version", NOT_FOUND, "version 7"),
    ("version label", NOT_FOUND, "stable"),
    ("unknown signature", NOT_FOUND, "signature 'nope' not found"),
    ("path characters", INVALID, "path characters"),
    ("empty model name", INVALID, "empty"),
    ("wrong dtype", INVALID, "must be DT_INT64, got DT_INT32"),
    ("missing input", INVALID, "missing input(s) day"),
    ("unknown input", INVALID, "unknown input(s) follow"),
    ("malformed tensor", INVALID, "tensor_content has 5 bytes"),
    ("values in the wrong field", INVALID, "float_val"),
    ("too few values", INVALID, "needs 5 values, got 2"),
    ("wrong rank", INVALID, "shape [1, 2]"),
    ("too many candidates", INVALID, f"at most {MAX_CANDIDATES}"),
    ("no candidates", INVALID, "no candidates"),
    ("context per candidate mismatch", INVALID, "hour must hold one value per candidate"),
    ("unknown output", INVALID, "output_filter"),
    ("not a tf.Example", INVALID, "parse"),
    ("example without day", INVALID, "day"),
    ("too many examples", INVALID, f"at most {MAX_CANDIDATES}"),
])
def test_bad_request_is_refused_and_server_keeps_serving(stubs, examples, kind, code,
                                                         fragment):
  with pytest.raises(grpc.RpcError) as error:
    stubs[0].Predict(_bad(kind, examples), timeout=30)
  assert error.value.code() == code, error.value.details()
  assert fragment in error.value.details()
  response = stubs[0].Predict(
      requests.rank_request(MODEL, USER, CANDIDATES[:2], 100, 9, DAY), timeout=30)
  assert len(tf.make_ndarray(response.outputs["score"])) == 2


def test_metadata_and_status_errors(stubs):
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["graph"])
  request.model_spec.name = MODEL
  with pytest.raises(grpc.RpcError) as error:
    stubs[0].GetModelMetadata(request, timeout=30)
  assert error.value.code() == INVALID
  status = get_model_status_pb2.GetModelStatusRequest()
  status.model_spec.name = "a/b"
  with pytest.raises(grpc.RpcError) as error:
    stubs[1].GetModelStatus(status, timeout=30)
  assert error.value.code() == INVALID
  status.model_spec.name = MODEL
  status.model_spec.version.value = 9
  with pytest.raises(grpc.RpcError) as error:
    stubs[1].GetModelStatus(status, timeout=30)
  assert error.value.code() == NOT_FOUND


# ---- REST ------------------------------------------------------------------

def _rest(served, path: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
  data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
  request = urllib.request.Request(f"http://127.0.0.1:{served.rest_port}{path}", data=data)
  try:
    with urllib.request.urlopen(request, timeout=30) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_rest_predict_columnar_and_row_formats(bundle, served, stubs, examples):
  expected = _outputs(stubs[0].Predict(
      requests.rank_request(MODEL, USER, CANDIDATES, 100, 9, DAY), timeout=30))
  status, body = _rest(served, f"/v1/models/{MODEL}:predict", {
      "signature_name": "rank",
      "inputs": _rank_rows(USER, CANDIDATES)})
  assert status == 200, body
  _assert_close({k: np.array(v) for k, v in body["outputs"].items()}, expected)
  # Row format: one instance per candidate; per-candidate context is allowed.
  status, body = _rest(served, f"/v1/models/{MODEL}/versions/1:predict", {
      "signature_name": "rank",
      "instances": [{"user_id": USER, "video_ids": v, "tab": 100, "hour": 9, "day": DAY}
                    for v in CANDIDATES]})
  assert status == 200, body
  rows = body["predictions"]
  assert len(rows) == len(CANDIDATES)
  np.testing.assert_allclose([r["score"] for r in rows], expected["score"], atol=TOL)
  # serving_default with bytes in b64, the row format TF Serving documents.
  status, body = _rest(served, f"/v1/models/{MODEL}:predict", {
      "instances": [{"b64": base64.b64encode(e).decode()} for e in examples]})
  assert status == 200, body
  by_examples = _outputs(stubs[0].Predict(requests.examples_request(MODEL, examples),
                                          timeout=30))
  np.testing.assert_allclose([r["score"] for r in body["predictions"]],
                             by_examples["score"], atol=TOL)


def test_rest_status_and_metadata(served):
  status, body = _rest(served, f"/v1/models/{MODEL}")
  assert status == 200
  assert body["model_version_status"] == [
      {"version": "1", "state": "AVAILABLE",
       "status": {"error_code": "OK", "error_message": ""}}]
  status, body = _rest(served, f"/v1/models/{MODEL}/versions/1")
  assert status == 200 and body["model_version_status"][0]["version"] == "1"
  status, body = _rest(served, f"/v1/models/{MODEL}/metadata")
  assert status == 200
  assert set(body["metadata"]["signature_def"]["signature_def"]) == {
      requests.EXAMPLES_SIGNATURE, requests.RANK_SIGNATURE}


@pytest.mark.parametrize("path,body,raw,code,fragment", [
    (f"/v1/models/{MODEL}:predict", None, b"{not json", 400, "not valid JSON"),
    ("/v1/models/nope:predict", {"inputs": {}}, None, 404, "not found"),
    ("/v1/models/..%2Fetc:predict", {"inputs": {}}, None, 400, "path characters"),
    (f"/v1/models/{MODEL}/versions/x:predict", {"inputs": {}}, None, 400, "not a number"),
    (f"/v1/models/{MODEL}:predict", {"signature_name": "rank", "inputs": {
        "user_id": ["u1"], "video_ids": [1], "tab": [1], "hour": [1], "day": [DAY]}}, None, 400,
     "expected numbers"),
    (f"/v1/models/{MODEL}:predict", {"signature_name": "rank", "inputs": {
        "user_id": [1.5], "video_ids": [1], "tab": [1], "hour": [1], "day": [DAY]}}, None, 400,
     "expected integers"),
    (f"/v1/models/{MODEL}:predict", {"signature_name": "rank", "inputs": {
        "user_id": [1], "video_ids": [[1], [2, 3]], "tab": [1], "hour": [1], "day": [DAY]}}, None,
     400, "rectangular"),
    (f"/v1/models/{MODEL}:predict", {"signature_name": "rank", "inputs": _rank_rows(
        1, list(range(MAX_CANDIDATES + 1)))}, None, 400, "too many candidates"),
    (f"/v1/models/{MODEL}:predict", {"signature_name": "rank", "inputs": {"user_id": [1]}},
     None, 400, "missing input(s)"),
    (f"/v1/models/{MODEL}:predict", {"instances": [{"b64": "***"}]}, None, 400, "base64"),
    (f"/v1/models/{MODEL}:predict", {"signature_name": "nope", "inputs": {}}, None, 404,
     "signature 'nope'"),
    (f"/v1/models/{MODEL}:predict", {"rows": []}, None, 400, "exactly one of"),
    ("/v2/anything", {"inputs": {}}, None, 404, "no such endpoint"),
    (f"/v1/models/{MODEL}/versions/7", None, None, 404, "no version 7"),
    (f"/v1/models/{MODEL}/labels/stable", None, None, 404, "label 'stable'"),
])
def test_rest_bad_requests(served, path, body, raw, code, fragment):
  status, reply = _rest(served, path, body, raw)
  assert status == code, reply
  assert fragment in reply["error"]
  status, _ = _rest(served, f"/v1/models/{MODEL}")
  assert status == 200


# ---- client ----------------------------------------------------------------

def _client_config(served) -> config_lib.Config:
  return CONFIG.replace(**{"serving.grpc_port": served.grpc_port})


def test_score_command_prints_ranked_candidates(served, capsys):
  args = argparse.Namespace(user=USER, candidates=",".join(map(str, CANDIDATES)), tab=100,
                            hour=9, day=None, timeout=10.0)
  assert client.command(args, _client_config(served)) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert "ranked by model e2e_grec version 1" in lines[0]
  assert lines[1].split() == ["rank", "video_id", "score", *requests.TASKS]
  rows = [line.split() for line in lines[2:]]
  assert sorted(int(r[1]) for r in rows) == sorted(CANDIDATES)
  scores = [float(r[2]) for r in rows]
  assert scores == sorted(scores, reverse=True)


def test_score_command_reports_errors(served, capsys):
  args = argparse.Namespace(user=USER, candidates="1,x", tab=100, hour=9, day=None,
                            timeout=10.0)
  assert client.command(args, _client_config(served)) == 2
  assert "'x' is not an integer video id" in capsys.readouterr().err
  args.candidates = ",".join(str(i) for i in range(MAX_CANDIDATES + 1))
  assert client.command(args, _client_config(served)) == 1
  assert "INVALID_ARGUMENT" in capsys.readouterr().err


# ---- versions --------------------------------------------------------------

def _wait_for(predicate, what: str, timeout: float = 60.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = predicate()
    if value:
      return value
    time.sleep(0.1)
  raise AssertionError(f"timed out waiting for {what}")


def test_new_versions_are_picked_up_and_broken_ones_skipped(model_dir, tmp_path):
  base = tmp_path / MODEL
  shutil.copytree(os.path.join(model_dir, MODEL, "1"), base / "1")
  server = server_lib.ModelServer(str(tmp_path), CONFIG.serving).start()
  try:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    request = requests.rank_request(MODEL, USER, CANDIDATES, 100, 9, DAY)
    before = predict.Predict(request, timeout=30)
    assert before.model_spec.version.value == 1

    def states():
      status_request = get_model_status_pb2.GetModelStatusRequest()
      status_request.model_spec.name = MODEL
      return {s.version: (s.state, s.status.error_message)
              for s in models.GetModelStatus(status_request, timeout=30).model_version_status}

    # A broken push (a truncated saved_model.pb) is reported and skipped.
    (base / "3").mkdir()
    (base / "3" / "saved_model.pb").write_bytes(b"\x08truncated")
    _wait_for(lambda: states().get(3, (0, ""))[1], "the broken version's error")
    assert predict.Predict(request, timeout=30).model_spec.version.value == 1
    shutil.rmtree(base / "3")
    _wait_for(lambda: 3 not in states(), "the broken version to be forgotten")

    # A complete push, renamed into place as the Pusher does.
    shutil.copytree(base / "1", tmp_path / "staging")
    os.rename(tmp_path / "staging", base / "2")
    _wait_for(lambda: states().get(2, (0,))[0] ==
              get_model_status_pb2.ModelVersionStatus.AVAILABLE, "version 2")
    assert states()[1][0] == get_model_status_pb2.ModelVersionStatus.END
    after = predict.Predict(request, timeout=30)
    assert after.model_spec.version.value == 2
    np.testing.assert_allclose(_outputs(after)["score"], _outputs(before)["score"], atol=TOL)
    old = requests.rank_request(MODEL, USER, CANDIDATES, 100, 9, DAY, version=1)
    with pytest.raises(grpc.RpcError) as error:
      predict.Predict(old, timeout=30)
    assert error.value.code() == NOT_FOUND
    channel.close()
  finally:
    server.stop()


# ---- production files --------------------------------------------------------

def test_kserve_manifest_serves_the_pushed_directory():
  with open(os.path.join(ROOT, "kubeflow", "kserve.yaml")) as f:
    manifest = yaml.safe_load(f)
  assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
  assert manifest["kind"] == "InferenceService"
  model = manifest["spec"]["predictor"]["model"]
  assert model["modelFormat"]["name"] == "tensorflow"
  assert model["storageUri"].rstrip("/").endswith(f"/{MODEL}")
  assert any(p["containerPort"] == 9000 for p in model.get("ports", []))
