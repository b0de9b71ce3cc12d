"""Request batching: concurrent calls of one signature merged into one model run.

The local server's counterpart of TF Serving's `--enable_batching`, read from
the same `--batching_parameters_file` (a text `BatchingParameters` proto, see
serving/batching_parameters.txt). Every input of a batchable call has the same
size N along dimension 0 (the exported signatures take one row per candidate),
so calls are concatenated along it, run once and split back by their N. On two
cores the sampler and the model are dominated by per-op overhead, not data, so
one run over 8 requests costs far less than 8 runs.

Scheduling follows TF Serving's shared batch scheduler: a batch thread that is
free takes the oldest queue's calls up to `max_batch_size` rows, waiting at most
`batch_timeout_micros` for more to arrive (0: take what is queued, so a lone
request never waits); at most `max_enqueued_batches` batches of rows wait, and
beyond that a call is refused with UNAVAILABLE. A call that cannot be batched
(an input without dimension 0, sizes that differ, more rows than
`max_batch_size`) runs alone. When a merged run fails, each call is rerun alone
so that only the offending request gets the error.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
from typing import Any, Mapping

import grpc
import numpy as np
from google.protobuf import (descriptor_pb2, descriptor_pool, message_factory, text_format,
                             wrappers_pb2)

from e2e_grec.serving.protocol import ServingError

# The fields of tensorflow_serving/servables/tensorflow/session_bundle_config.proto's
# BatchingParameters (not in the tensorflow-serving-api wheel): name -> (number, type).
_PROTO_FIELDS = {
    "max_batch_size": (1, ".google.protobuf.Int64Value"),
    "batch_timeout_micros": (2, ".google.protobuf.Int64Value"),
    "max_enqueued_batches": (3, ".google.protobuf.Int64Value"),
    "num_batch_threads": (4, ".google.protobuf.Int64Value"),
    "thread_pool_name": (5, ".google.protobuf.StringValue"),
    "allowed_batch_sizes": (6, "repeated int64"),
    "pad_variable_length_inputs": (7, "bool"),
}


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
  """What the local batcher reads of a TF Serving batching parameters file."""
  # Rows (candidates) per merged run; keep it <= export.max_candidates, which
  # the exported graph enforces on every run, merged or not.
  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 100
  num_batch_threads: int = 2

  def __post_init__(self):
    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
      if getattr(self, name) < 1:
        raise ValueError(f"batching parameter {name} must be >= 1, got {getattr(self, name)}")
    if self.batch_timeout_micros < 0:
      raise ValueError(f"batching parameter batch_timeout_micros must be >= 0, got "
                       f"{self.batch_timeout_micros}")


def _batching_parameters_message() -> type:
  """TF Serving's BatchingParameters message class, built from its field list."""
  pool = descriptor_pool.DescriptorPool()
  wrappers = descriptor_pb2.FileDescriptorProto()
  wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
  pool.Add(wrappers)
  proto = descriptor_pb2.FileDescriptorProto(
      name="tensorflow_serving/batching_parameters.proto", package="tensorflow.serving",
      syntax="proto3", dependency=[wrappers.name])
  message = proto.message_type.add(name="BatchingParameters")
  types = {"int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
           "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL}
  for name, (number, kind) in _PROTO_FIELDS.items():
    field = message.field.add(name=name, number=number)
    repeated = kind.startswith("repeated ")
    kind = kind.removeprefix("repeated ")
    field.label = (descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated
                   else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    if kind in types:
      field.type = types[kind]
    else:
      field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
      field.type_name = kind
  pool.Add(proto)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def load_batching_parameters(path: str) -> BatchingParameters:
  """Reads a TF Serving batching parameters file; errors name the file and field."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError as e:
    raise ValueError(f"batching parameters file {path}: {e.strerror}") from None
  message = _batching_parameters_message()()
  try:
    text_format.Parse(text, message)
  except text_format.ParseError as e:
    raise ValueError(f"batching parameters file {path}: {e}") from None
  given = {f.name: getattr(message, f.name).value for f in message.DESCRIPTOR.fields
           if f.name in BatchingParameters.__dataclass_fields__ and message.HasField(f.name)}
  ignored = sorted(f.name for f, _ in message.ListFields() if f.name not in given)
  if ignored:
    logging.info("batching parameters file %s: %s apply to TF Serving only", path,
                 ", ".join(ignored))
  try:
    return BatchingParameters(**given)
  except ValueError as e:
    raise ValueError(f"batching parameters file {path}: {e}") from None


def batch_rows(inputs: Mapping[str, np.ndarray]) -> int | None:
  """The common size of dimension 0 of all inputs, or None if they have none."""
  sizes = {a.shape[0] if a.ndim else None for a in inputs.values()}
  return sizes.pop() if len(sizes) == 1 and None not in sizes else None


@dataclasses.dataclass
class _Call:
  inputs: Mapping[str, np.ndarray]
  rows: int
  mergeable: bool
  enqueued: float
  future: asyncio.Future


class Batcher:
  """Runs model calls on `num_batch_threads` threads, merging concurrent ones.

  Lives on one asyncio event loop: `run` must be awaited there.
  """

  def __init__(self, parameters: BatchingParameters):
    self.parameters = parameters
    self._executor = concurrent.futures.ThreadPoolExecutor(
        parameters.num_batch_threads, thread_name_prefix="batch")
    self._queues: dict[tuple, collections.deque[_Call]] = {}
    self._idle_threads = parameters.num_batch_threads
    self._queued_rows = 0
    self._wakeup: asyncio.TimerHandle | None = None
    self._running: set[asyncio.Task] = set()
    # Calls answered and model runs made: calls / runs is the mean merge factor.
    self.calls = 0
    self.runs = 0

  async def run(self, servable: Any, signature_name: str, inputs: Mapping[str, np.ndarray],
                outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`servable.run(signature_name, inputs, outputs)`, merged with concurrent calls."""
    loop = asyncio.get_running_loop()
    rows = batch_rows(inputs)
    mergeable = rows is not None and 0 < rows <= self.parameters.max_batch_size
    rows = rows or 1
    capacity = self.parameters.max_enqueued_batches * self.parameters.max_batch_size
    if self._queued_rows + rows > capacity:
      raise ServingError(grpc.StatusCode.UNAVAILABLE,
                         f"the batch queue is full ({self._queued_rows} rows waiting, at most "
                         f"{capacity}); retry later")
    # Calls merge only with calls of the same version, signature, outputs and row shapes.
    key = (servable, signature_name, outputs,
           tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(inputs.items()))
           if mergeable else object())
    call = _Call(inputs, rows, mergeable, loop.time(), loop.create_future())
    self._queues.setdefault(key, collections.deque()).append(call)
    self._queued_rows += rows
    self._dispatch()
    return await call.future

  async def close(self) -> None:
    """Cancels queued calls and waits for the running batches."""
    for queue in self._queues.values():
      for call in queue:
        call.future.cancel()
    self._queues.clear()
    if self._wakeup is not None:
      self._wakeup.cancel()
    await asyncio.gather(*self._running, return_exceptions=True)
    self._executor.shutdown(wait=False)

  def _dispatch(self) -> None:
    """Gives free batch threads the oldest queues' calls."""
    loop = asyncio.get_running_loop()
    timeout = self.parameters.batch_timeout_micros * 1e-6
    for key in sorted(self._queues, key=lambda k: self._queues[k][0].enqueued):
      if not self._idle_threads:
        return
      queue = self._queues[key]
      wait = queue[0].enqueued + timeout - loop.time()
      if wait > 0 and queue[0].mergeable and (
          sum(c.rows for c in queue) < self.parameters.max_batch_size):
        self._wake_in(wait)
        continue
      batch = self._take(queue)
      if not queue:
        del self._queues[key]
      if batch:
        self._idle_threads -= 1
        task = loop.create_task(self._run_batch(key[0], key[1], key[2], batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

  def _take(self, queue: collections.deque[_Call]) -> list[_Call]:
    """The queue's first calls up to max_batch_size rows, skipping cancelled ones."""
    batch, rows = [], 0
    while queue and (not batch or (queue[0].mergeable and
                                   rows + queue[0].rows <= self.parameters.max_batch_size)):
      call = queue.popleft()
      self._queued_rows -= call.rows
      if not call.future.done():  # done: its request timed out or went away
        batch.append(call)
        rows += call.rows
    return batch

  def _wake_in(self, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    if self._wakeup is None or self._wakeup.when() > loop.time() + seconds:
      if self._wakeup is not None:
        self._wakeup.cancel()
      self._wakeup = loop.call_later(seconds, self._woken)

  def _woken(self) -> None:
    self._wakeup = None
    self._dispatch()

  async def _run_batch(self, servable: Any, signature_name: str, outputs: tuple[str, ...],
                       batch: list[_Call]) -> None:
    loop = asyncio.get_running_loop()

    def call(inputs: Mapping[str, np.ndarray]) -> asyncio.Future:
      self.runs += 1
      return loop.run_in_executor(self._executor, servable.run, signature_name, inputs,
                                  outputs)

    try:
      self.calls += len(batch)
      if len(batch) == 1:
        results = [await _result(call(batch[0].inputs))]
      else:
        merged = {k: np.concatenate([c.inputs[k] for c in batch]) for k in batch[0].inputs}
        try:
          results = _split(await call(merged), [c.rows for c in batch])
        except ServingError:  # Find which request it was: run each alone.
          results = [await _result(call(c.inputs)) for c in batch]
      for c, result in zip(batch, results):
        if not c.future.done():
          if isinstance(result, Exception):
            c.future.set_exception(result)
          else:
            c.future.set_result(result)
    except Exception as e:  # Unexpected: fail the batch's requests, keep serving.
      for c in batch:
        if not c.future.done():
          c.future.set_exception(e)
    finally:
      self._idle_threads += 1
      self._dispatch()


async def _result(future: asyncio.Future) -> Any:
  """The call's outputs, or its ServingError as a value."""
  try:
    return await future
  except ServingError as e:
    return e


def _split(outputs: dict[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
  total = sum(rows)
  for name, value in outputs.items():
    if value.ndim == 0 or value.shape[0] != total:
      raise ServingError(grpc.StatusCode.INTERNAL,
                         f"output {name!r} of shape {list(value.shape)} has no batch "
                         f"dimension of {total} rows")
  bounds = np.cumsum(rows)[:-1]
  parts = {name: np.split(value, bounds) for name, value in outputs.items()}
  return [{name: parts[name][i] for name in outputs} for i in range(len(rows))]
