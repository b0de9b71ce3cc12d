"""The server under bad input and load: HTTP framing, timeouts, ports, batching.

Runs against the tiny exported model of test_serving.py (its session fixtures),
on 127.0.0.1 with ephemeral ports and short timeouts. Raw sockets send what
well-behaved HTTP clients never would.
"""
import asyncio
import dataclasses
import os
import re
import socket
import threading
import time

import aiohttp
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from e2e_grec import config as config_lib
from e2e_grec.serving import batching, export, requests, server as server_lib
from test_serving import (CANDIDATES, CONFIG, DAY, MODEL, USER, bundle,  # noqa: F401
                          model_dir, _rank_rows)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 1.0  # the test servers' request timeout, seconds
MAX_BYTES = 1 << 16
PREDICT = f"/v1/models/{MODEL}:predict"


def _server(model_dir: str, timeout: float = TIMEOUT,  # noqa: F811
            **batching_parameters) -> server_lib.ModelServer:
  return server_lib.ModelServer(
      model_dir, CONFIG.serving, batching.BatchingParameters(
          max_batch_size=CONFIG.export.max_candidates, **batching_parameters),
      server_lib.ServerLimits(request_timeout=timeout, max_message_bytes=MAX_BYTES),
      CONFIG.export.max_candidates).start()


@pytest.fixture(scope="module")
def served(model_dir):  # noqa: F811
  """A server with a 1 s request timeout and a 64 KB body limit."""
  server = _server(model_dir)
  yield server
  server.stop()


@pytest.fixture(scope="module")
def batching_server(model_dir):  # noqa: F811
  """One batch thread that waits up to 0.3 s for company: merging is certain."""
  server = _server(model_dir, timeout=60, num_batch_threads=1, batch_timeout_micros=300_000)
  yield server
  server.stop()


def _raw(port: int, data: bytes, wait: float = 10.0) -> bytes:
  """Sends raw bytes and reads one answer (up to its Content-Length, or to the close)."""
  with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
    sock.sendall(data)
    answer = b""
    while chunk := sock.recv(65536):
      answer += chunk
      head, _, body = answer.partition(b"\r\n\r\n")
      length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
      if length and len(body) >= int(length.group(1)):
        break
  return answer


def _status(answer: bytes) -> int:
  return int(answer.split(b" ", 2)[1])


def _post(headers: str, body: bytes = b"") -> bytes:
  return (f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
          .encode() + body)


RANK_BODY = ('{"signature_name": "rank", "inputs": {"user_id": [101], "video_ids": [100], '
             f'"tab": [100], "hour": [9], "day": [{DAY}]}}}}').encode()


@pytest.mark.parametrize("headers,body,status,fragment", [
    ("", b"", 411, b"Content-Length"),
    ("", RANK_BODY, 400, b""),  # without a length, the body reads as a bad next request
    ("Content-Length: -1\r\n", RANK_BODY, 400, b""),
    ("Content-Length: abc\r\n", RANK_BODY, 400, b""),
    ("Content-Length: 1e3\r\n", RANK_BODY, 400, b""),
    (f"Content-Length: {MAX_BYTES + 1}\r\n", RANK_BODY, 413, b"exceeds the limit"),
    ("Transfer-Encoding: chunked\r\n",
     b"%x\r\n" % (MAX_BYTES + 10) + b"[" * (MAX_BYTES + 10) + b"\r\n0\r\n\r\n", 413, b""),
    (f"Content-Length: {len(RANK_BODY)}\r\n", RANK_BODY, 200, b"score"),
    ("Content-Length: 0\r\n", b"", 400, b"empty"),
    ("Content-Length: 9\r\n", b"{not json", 400, b"not valid JSON"),
])
def test_content_length_and_body_limits(served, headers, body, status, fragment):
  answer = _raw(served.rest_port, _post(headers, body))
  assert _status(answer) == status, answer[:300]
  assert fragment in answer


@pytest.mark.parametrize("depth", [50, 10_000, 30_000])
def test_deeply_nested_json_is_400(served, depth):
  nested = "[" * depth + "1" + "]" * depth
  body = ('{"signature_name": "rank", "inputs": {"user_id": ' + nested +
          ', "video_ids": [1], "tab": [1], "hour": [1], "day": [1]}}').encode()
  assert len(body) < MAX_BYTES
  answer = _raw(served.rest_port, _post(f"Content-Length: {len(body)}\r\n", body))
  assert _status(answer) == 400, answer[:300]
  assert b"nested too deeply" in answer or b"shape" in answer


def test_short_body_times_out_with_408_and_closes(served):
  started = time.monotonic()
  answer = _raw(served.rest_port, _post("Content-Length: 100\r\n", b"{}"))
  assert _status(answer) == 408, answer[:300]
  assert b"did not arrive within" in answer
  assert time.monotonic() - started < 10 * TIMEOUT


def test_half_open_connections_hold_no_thread_and_are_closed(served):
  predict = _post(f"Content-Length: {len(RANK_BODY)}\r\n", RANK_BODY)
  assert _status(_raw(served.rest_port, predict)) == 200
  threads = threading.active_count()
  sockets = [socket.create_connection(("127.0.0.1", served.rest_port)) for _ in range(150)]
  try:
    for i, sock in enumerate(sockets):  # half a request line, or nothing at all
      if i % 2:
        sock.sendall(b"POST /v1/mod")
    assert _status(_raw(served.rest_port, predict)) == 200  # served while 150 hang
    assert threading.active_count() == threads
    for sock in sockets:  # the server closes them after the request timeout
      sock.settimeout(10 * TIMEOUT)
      assert sock.recv(1024) == b""
  finally:
    for sock in sockets:
      sock.close()


def test_busy_ports_fail_at_start_with_one_clear_message(served, model_dir, capsys):  # noqa: F811
  # Two servers on one gRPC port: gRPC's SO_REUSEPORT default would let both
  # bind and split the connections between them.
  config = dataclasses.replace(CONFIG.serving, grpc_port=served.grpc_port)
  with pytest.raises(server_lib.ServerStartError, match=f"gRPC on 127.0.0.1:{served.grpc_port}"
                     ".*port is in use"):
    server_lib.ModelServer(model_dir, config).start()
  config = dataclasses.replace(CONFIG.serving, rest_port=served.rest_port)
  with pytest.raises(server_lib.ServerStartError,
                     match=f"REST on 127.0.0.1:{served.rest_port}.*in use"):
    server_lib.ModelServer(model_dir, config).start()
  # `e2e-grec serve` prints that one line and exits non-zero.
  assert server_lib.serve(model_dir, config, CONFIG.export.max_candidates) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: cannot serve REST") and "\n" not in err
  # The running server still answers on both ports.
  channel = grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}")
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  assert stub.Predict(requests.rank_request(MODEL, USER, CANDIDATES, 100, 9, DAY),
                      timeout=30).model_spec.version.value == 1
  channel.close()


def test_concurrent_requests_are_merged_into_one_model_run(batching_server, bundle):  # noqa: F811
  server = batching_server
  channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = requests.rank_request(MODEL, USER, CANDIDATES, 100, 9, DAY)
  alone = tf.make_ndarray(stub.Predict(request, timeout=30).outputs["score"])
  batcher = server.batcher
  calls, runs = batcher.calls, batcher.runs
  futures = [stub.Predict.future(request, timeout=30) for _ in range(8)]
  merged = [tf.make_ndarray(f.result().outputs["score"]) for f in futures]
  assert batcher.calls - calls == 8
  assert batcher.runs - runs <= 2
  # The same rows in one run sample the same subgraph: the same scores.
  for scores in merged:
    np.testing.assert_allclose(scores, alone, atol=1e-6)
  # A bad request merged with good ones fails alone.
  good = requests.examples_request(
      MODEL, export.request_examples(bundle[1], USER, CANDIDATES, 100, 9, DAY))
  bad = requests.examples_request(MODEL, [b"not an example"])
  runs = batcher.runs
  futures = [stub.Predict.future(r, timeout=30) for r in (good, bad, good)]
  for i in (0, 2):
    assert len(tf.make_ndarray(futures[i].result().outputs["score"])) == len(CANDIDATES)
  with pytest.raises(grpc.RpcError) as error:
    futures[1].result()
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert batcher.runs - runs >= 3  # a merged run, then one run per request
  channel.close()


def _rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _rest_burst(port: int, n: int) -> list[int]:
  body = {"signature_name": "rank", "inputs": _rank_rows(USER, CANDIDATES)}
  connector = aiohttp.TCPConnector(limit=n, force_close=True)
  async with aiohttp.ClientSession(connector=connector) as session:

    async def one() -> int:
      async with session.post(f"http://127.0.0.1:{port}{PREDICT}", json=body,
                              timeout=aiohttp.ClientTimeout(total=120)) as response:
        scores = (await response.json())["outputs"]["score"] if response.status == 200 else []
        return response.status if len(scores) == len(CANDIDATES) else -response.status

    return await asyncio.gather(*(one() for _ in range(n)))


def test_200_concurrent_rest_and_grpc_requests_all_succeed_with_flat_memory(batching_server):
  server = batching_server
  channels = [grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") for _ in range(8)]
  stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
  request = requests.rank_request(MODEL, USER, CANDIDATES, 100, 9, DAY)
  try:
    def burst() -> tuple[list[int], list[str]]:
      """Status of 200 concurrent REST requests; failures among 200 gRPC ones."""
      rest = asyncio.run(_rest_burst(server.rest_port, 200))
      futures = [stubs[i % len(stubs)].Predict.future(request, timeout=120) for i in range(200)]
      failures = [str(f.exception()) if f.exception() else "wrong size" for f in futures
                  if f.exception() or len(tf.make_ndarray(f.result().outputs["score"])) !=
                  len(CANDIDATES)]
      return rest, failures

    burst()  # warm-up: callables, connection pools, allocator arenas
    rss = _rss_bytes()
    for _ in range(3):
      rest, failures = burst()
      assert rest == [200] * 200
      assert failures == []
    growth = _rss_bytes() - rss
    assert growth < 64 << 20, f"RSS grew by {growth >> 20} MB over 1,200 requests"
  finally:
    for channel in channels:
      channel.close()


def test_shipped_batching_parameters_file_loads(tmp_path):
  parameters = batching.load_batching_parameters(
      os.path.join(ROOT, "serving", "batching_parameters.txt"))
  assert parameters.max_batch_size <= config_lib.Config().export.max_candidates
  assert parameters.num_batch_threads >= 1
  bad = tmp_path / "batching.txt"
  bad.write_text("max_batch_size { value: 8 }\nmax_batch_sise { value: 8 }\n")
  with pytest.raises(ValueError, match=f"{bad}.*max_batch_sise"):
    batching.load_batching_parameters(str(bad))
  bad.write_text("num_batch_threads { value: 0 }\n")
  with pytest.raises(ValueError, match=f"{bad}.*num_batch_threads must be >= 1"):
    batching.load_batching_parameters(str(bad))


def test_batches_larger_than_the_model_takes_are_refused(tmp_path):
  with pytest.raises(ValueError, match="max_batch_size 65 exceeds export.max_candidates 64"):
    server_lib.ModelServer(str(tmp_path), CONFIG.serving,
                           batching.BatchingParameters(max_batch_size=65),
                           max_rows=CONFIG.export.max_candidates)


def test_shipped_model_and_monitoring_configs_parse():
  from google.protobuf import text_format
  from tensorflow_serving.config import model_server_config_pb2

  with open(os.path.join(ROOT, "serving", "model_config.txt")) as f:
    config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
  (model,) = config.model_config_list.config
  default = config_lib.Config().serving.model_name
  assert model.name == default and model.base_path == f"/models/{default}"
  assert model.model_platform == "tensorflow"
  assert model.model_version_policy.latest.num_versions == 1
  with open(os.path.join(ROOT, "serving", "monitoring_config.txt")) as f:
    text = f.read()
  # monitoring_config.proto is not in the tensorflow-serving-api wheel: check its two fields.
  assert re.search(r"prometheus_config\s*\{[^}]*enable:\s*true", text)
  assert re.search(r'path:\s*"/monitoring/prometheus/metrics"', text)
