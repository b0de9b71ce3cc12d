"""`e2e-grec serve`: a TF-Serving-protocol server over a versioned model directory.

It speaks TF Serving's gRPC API (PredictionService Predict and
GetModelMetadata, ModelService GetModelStatus, from `tensorflow_serving.apis`)
and its REST API (`serving/rest.py`), so clients written for TF Serving work
unchanged against it and against the official `tensorflow/serving` image in
production (see serving/README.md). `serving/models.py` loads and swaps model
versions; `serving/batching.py` merges concurrent requests into one model run,
as TF Serving's `--enable_batching` does.

Both front ends run on one asyncio event loop in a background thread (grpc.aio
and aiohttp): an open connection costs no thread, model runs go to the
batcher's `num_batch_threads` threads, and every request has a timeout.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import logging
import os
import signal
import sys
import threading
from typing import Any, Awaitable, Callable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from e2e_grec import config as config_lib
from e2e_grec.serving import rest
from e2e_grec.serving.batching import Batcher, BatchingParameters, load_batching_parameters
from e2e_grec.serving.models import ModelManager, Servable
from e2e_grec.serving.protocol import (DEFAULT_SIGNATURE, MAX_MESSAGE_BYTES, ServingError,
                                       invalid, rest_inputs, rest_outputs, rest_signature_name,
                                       tensor_to_array)


@dataclasses.dataclass(frozen=True)
class ServerLimits:
  """How much one server takes on before it refuses or times out."""
  # Seconds a request may take, from its first byte to its answer (gRPC clients
  # may ask for less with their deadline); also how long an idle connection stays open.
  request_timeout: float = 30.0
  # Requests decoded and waiting for or running in the model, over both APIs;
  # more are refused (RESOURCE_EXHAUSTED / 429) instead of queueing without bound.
  max_in_flight: int = 1024
  # Largest request body or gRPC message.
  max_message_bytes: int = MAX_MESSAGE_BYTES

  def __post_init__(self):
    if self.request_timeout <= 0 or self.max_in_flight < 1 or self.max_message_bytes < 1:
      raise ValueError(f"server limits must be positive, got {self}")


class ServerStartError(RuntimeError):
  """The server could not start (a port in use, a bad address)."""


def _spec_version(model_spec) -> tuple[int | None, str]:
  version = model_spec.version.value if model_spec.HasField("version") else None
  return version, model_spec.version_label


class ServingApi:
  """TF Serving's Predict, GetModelMetadata and GetModelStatus, for both front ends."""

  def __init__(self, manager: ModelManager, batcher: Batcher, limits: ServerLimits):
    self.manager = manager
    self.batcher = batcher
    self.limits = limits
    self._in_flight = 0

  async def _run(self, servable: Servable, signature_name: str,
                 inputs: Mapping[str, np.ndarray | None], output_filter: tuple[str, ...],
                 timeout: float | None) -> dict[str, np.ndarray]:
    outputs = servable.check_call(signature_name, inputs, output_filter)
    if self._in_flight >= self.limits.max_in_flight:
      raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"{self._in_flight} requests in flight, at most "
                         f"{self.limits.max_in_flight}; retry later")
    timeout = self.limits.request_timeout if timeout is None else min(
        timeout, self.limits.request_timeout)
    self._in_flight += 1
    try:
      return await asyncio.wait_for(
          self.batcher.run(servable, signature_name, inputs, outputs), timeout)
    except asyncio.TimeoutError:
      raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                         f"the model did not answer within {timeout:.3g} s") from None
    finally:
      self._in_flight -= 1

  async def predict(self, request: predict_pb2.PredictRequest,
                    timeout: float | None = None) -> predict_pb2.PredictResponse:
    """TF Serving's Predict over protos."""
    version, label = _spec_version(request.model_spec)
    servable = self.manager.servable(request.model_spec.name, version, label)
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = servable.signature(signature_name)
    inputs = {name: (tensor_to_array(name, proto, signature.inputs[name])
                     if name in signature.inputs else None)  # check_call names it
              for name, proto in request.inputs.items()}
    outputs = await self._run(servable, signature_name, inputs,
                              tuple(request.output_filter), timeout)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature_name
    for name, value in outputs.items():
      response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    return response

  async def rest_predict(self, name: str, version: int | None, label: str,
                         body: Any) -> dict:
    """TF Serving's REST predict: row or columnar JSON in, the same format out."""
    servable = self.manager.servable(name, version, label)
    signature_name = rest_signature_name(body)
    inputs, row_format = rest_inputs(body, servable.signature(signature_name))
    return rest_outputs(await self._run(servable, signature_name, inputs, (), None),
                        row_format)

  def model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                     ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    fields = list(request.metadata_field)
    if fields != ["signature_def"]:
      raise invalid(f"metadata_field must be ['signature_def'] (the only metadata served), "
                    f"got {fields}")
    version, label = _spec_version(request.model_spec)
    servable = self.manager.servable(request.model_spec.name, version, label)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in servable.signatures.items():
      signature_map.signature_def[key].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    response.metadata["signature_def"].CopyFrom(packed)
    return response

  def model_status(self, request: get_model_status_pb2.GetModelStatusRequest
                   ) -> get_model_status_pb2.GetModelStatusResponse:
    version, label = _spec_version(request.model_spec)
    if label:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model {request.model_spec.name!r} has no version label {label!r}")
    response = get_model_status_pb2.GetModelStatusResponse()
    response.model_version_status.extend(
        self.manager.statuses(request.model_spec.name, version))
    return response


def _grpc_handler(method: Callable[[ServingApi, Any, grpc.aio.ServicerContext], Any]
                  ) -> Callable:
  """Answers ServingErrors with their status code; the server keeps serving."""

  async def handle(self, request, context: grpc.aio.ServicerContext):
    try:
      response = method(self.api, request, context)
      return await response if inspect.isawaitable(response) else response
    except ServingError as e:
      await context.abort(e.code, e.message)
    except Exception as e:  # Never let one request take the server down.
      logging.exception("request failed")
      await context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")

  return handle


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, api: ServingApi):
    self.api = api

  Predict = _grpc_handler(
      lambda api, request, context: api.predict(request, context.time_remaining()))
  GetModelMetadata = _grpc_handler(lambda api, request, _: api.model_metadata(request))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, api: ServingApi):
    self.api = api

  GetModelStatus = _grpc_handler(lambda api, request, _: api.model_status(request))


class ModelServer:
  """gRPC and REST front ends over one ModelManager, on an event loop thread.

    server = ModelServer(model_dir, config.serving).start()  # raises ServerStartError
    ... server.grpc_port, server.rest_port ...
    server.stop()
  """

  def __init__(self, model_dir: str, serving: config_lib.ServingConfig,
               batching: BatchingParameters | None = None,
               limits: ServerLimits = ServerLimits(),
               max_rows: int = config_lib.ExportConfig().max_candidates):
    """`max_rows` is the models' `export.max_candidates`, the most rows one model
    run takes; `batching` defaults to batches of up to that many rows."""
    if batching is None:
      batching = BatchingParameters(max_batch_size=max_rows)
    if batching.max_batch_size > max_rows:
      raise ValueError(f"batching max_batch_size {batching.max_batch_size} exceeds "
                       f"export.max_candidates {max_rows}, the most rows the "
                       "exported model takes per run: lower max_batch_size")
    self.serving = serving
    self.batching = batching
    self.limits = limits
    self.manager = ModelManager(serving.model_name,
                                os.path.join(model_dir, serving.model_name),
                                serving.poll_seconds)
    self.grpc_port = self.rest_port = 0
    self.batcher: Batcher | None = None
    self._loop: asyncio.AbstractEventLoop | None = None
    self._thread: threading.Thread | None = None
    self._stopping: Callable[[], Awaitable[None]] | None = None

  def start(self) -> "ModelServer":
    """Loads the newest version and binds both ports; returns once serving."""
    started: concurrent.futures.Future = concurrent.futures.Future()
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._serve, args=(started,), name="serving",
                                    daemon=True)
    self._thread.start()
    try:
      started.result()
    except BaseException:
      self._thread.join()
      self._loop.close()
      raise
    self.manager.start()
    return self

  def stop(self) -> None:
    if self._loop is None or self._thread is None:
      return
    asyncio.run_coroutine_threadsafe(self._stopping(), self._loop).result()
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join()
    self._loop.close()
    self.manager.stop()

  def _serve(self, started: concurrent.futures.Future) -> None:
    asyncio.set_event_loop(self._loop)
    self._loop.set_exception_handler(_ignore_spurious_grpc_wakeups)
    try:
      self._loop.run_until_complete(self._start_front_ends())
    except BaseException as e:
      started.set_exception(e)
      return
    started.set_result(None)
    self._loop.run_forever()

  async def _start_front_ends(self) -> None:
    host = self.serving.host
    self.batcher = batcher = Batcher(self.batching)
    api = ServingApi(self.manager, batcher, self.limits)
    size = self.limits.max_message_bytes
    # so_reuseport 0: gRPC's default on Linux lets a second server bind the same
    # port and silently take half of its connections.
    grpc_server = grpc.aio.server(options=[
        ("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size)],
        maximum_concurrent_rpcs=self.limits.max_in_flight)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(api), grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(api), grpc_server)
    try:
      self.grpc_port = grpc_server.add_insecure_port(f"{host}:{self.serving.grpc_port}")
    except RuntimeError:  # newer grpc raises where older versions return 0
      self.grpc_port = 0
    if self.grpc_port == 0:
      await batcher.close()
      raise ServerStartError(f"cannot serve gRPC on {host}:{self.serving.grpc_port}: the "
                             "port is in use (or the address is not local); choose another "
                             "with serving.grpc_port")
    await grpc_server.start()
    try:
      runner, self.rest_port = await rest.start(api, host, self.serving.rest_port)
    except BaseException as e:
      await grpc_server.stop(None)
      await batcher.close()
      if isinstance(e, OSError):
        raise ServerStartError(f"cannot serve REST on {host}:{self.serving.rest_port}: "
                               f"{e.strerror or e}; choose another port with "
                               "serving.rest_port") from None
      raise

    async def stopping() -> None:
      await runner.cleanup()
      await grpc_server.stop(grace=1)
      await batcher.close()
      # What is left (a connection still draining an unread body) ends with the loop.
      left = asyncio.all_tasks() - {asyncio.current_task()}
      for task in left:
        task.cancel()
      await asyncio.gather(*left, return_exceptions=True)

    self._stopping = stopping


def _ignore_spurious_grpc_wakeups(loop: asyncio.AbstractEventLoop, context: dict) -> None:
  """Drops grpc.aio's harmless BlockingIOError when several loops share its queue.

  With more than one event loop in a process (several servers, as in the
  tests), every loop is woken for a gRPC completion and all but one find
  nothing to read (grpc/grpc#25364); anything else goes to the default handler.
  """
  if isinstance(context.get("exception"), BlockingIOError) and "PollerCompletionQueue" in repr(
      context.get("handle")):
    return
  loop.default_exception_handler(context)


def serve(model_dir: str, serving: config_lib.ServingConfig, max_rows: int,
          batching_parameters_file: str | None = None,
          limits: ServerLimits = ServerLimits()) -> int:
  """Serves until SIGTERM or Ctrl-C; a server that cannot start is one error line."""
  try:
    batching = (None if batching_parameters_file is None
                else load_batching_parameters(batching_parameters_file))
    server = ModelServer(model_dir, serving, batching, limits, max_rows).start()
  except (ServerStartError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  logging.info("model %s from %s: gRPC on %s:%d, REST on http://%s:%d/v1/models/%s "
               "(batches of up to %d rows on %d threads)", serving.model_name,
               server.manager.base_path, serving.host, server.grpc_port, serving.host,
               server.rest_port, serving.model_name, server.batching.max_batch_size,
               server.batching.num_batch_threads)
  stopped = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stopped.set())
  try:
    stopped.wait()
  except KeyboardInterrupt:
    pass
  logging.info("shutting down")
  server.stop()
  return 0


def command(args: Any, config: config_lib.Config) -> int:
  """`e2e-grec serve` (its --host/--port flags are already applied to `config.serving`)."""
  limits = (ServerLimits() if args.request_timeout is None
            else ServerLimits(request_timeout=args.request_timeout))
  return serve(args.model_dir or config.pipeline.serving_dir, config.serving,
               config.export.max_candidates, args.batching_parameters_file, limits)
