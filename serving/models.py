"""The served model: versions on disk, loaded through TF Serving's loader path.

Models live in `<model_dir>/<model_name>/<version>/` (what the Pusher writes).
Like TF Serving's default version policy, the newest version is served; the
directory is polled every `serving.poll_seconds` and a newly pushed version
replaces the old one once it has loaded. SavedModels load through the TF1
loader (`tf.compat.v1.saved_model.loader.load`), the path TF Serving's C++
loader takes, and this module never imports tensorflow_gnn: what it serves,
stock TF Serving serves.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Callable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import error_codes_pb2, meta_graph_pb2
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2

from e2e_grec.serving.protocol import (DEFAULT_SIGNATURE, GRPC_CODES, ServingError,
                                       check_model_name, invalid, tensor_to_array)
from e2e_grec.serving.requests import (EXAMPLES_SIGNATURE, RANK_SIGNATURE, WARMUP_DIR,
                                       WARMUP_FILE)


def op_error(error: tf.errors.OpError) -> ServingError:
  """A TensorFlow runtime error's message, without the graph node context."""
  lines = [line.strip() for line in error.message.split("\n")]
  lines = [line for line in lines if line and not line.startswith("[[")
           and line != "Graph execution error:"]
  message = lines[0] if lines else error.message
  return ServingError(GRPC_CODES.get(error.error_code, grpc.StatusCode.INTERNAL), message)


class Servable:
  """One loaded version: a TF1 session over the SavedModel's `serve` graph."""

  def __init__(self, name: str, version: int, path: str):
    self.name, self.version, self.path = name, version, path
    self._graph = tf.Graph()
    self._session = tf.compat.v1.Session(graph=self._graph)
    with self._graph.as_default():
      self.meta_graph = tf.compat.v1.saved_model.loader.load(
          self._session, [tf.saved_model.SERVING], path)
    # `__saved_model_init_op` and similar are not callable signatures.
    self.signatures = {k: v for k, v in self.meta_graph.signature_def.items()
                       if not k.startswith("__")}
    self._callables: dict[tuple, Callable] = {}

  def close(self) -> None:
    self._session.close()

  def warm_up(self) -> int:
    """Replays the version's TF Serving warm-up requests (if any); returns how many.

    The first run of a signature optimises its graph and sets up kernels
    (seconds for `rank`); paying that before the version is served keeps it
    out of the first requests' latency, as TF Serving does.
    """
    path = os.path.join(self.path, WARMUP_DIR, WARMUP_FILE)
    if not tf.io.gfile.exists(path):
      return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
      name = request.model_spec.signature_name or DEFAULT_SIGNATURE
      signature = self.signature(name)
      inputs = {k: tensor_to_array(k, v, signature.inputs[k]) for k, v in request.inputs.items()}
      self.run(name, inputs, self.check_call(name, inputs, tuple(request.output_filter)))
      count += 1
    return count

  def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
    if name not in self.signatures:
      hint = ""
      if name == RANK_SIGNATURE:
        hint = (" (a model trained on pre-sampled subgraphs, sampling.where=beam, has no "
                f"sampler to rank with: send {EXAMPLES_SIGNATURE} requests, each example "
                "carrying its subgraph)")
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"signature {name!r} not found in model {self.name!r} version "
                         f"{self.version}; it has {', '.join(sorted(self.signatures))}{hint}")
    return self.signatures[name]

  def check_call(self, signature_name: str, inputs: Mapping[str, np.ndarray | None],
                 output_filter: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Checks a call's input and output names; returns the outputs to fetch.

    An input the signature does not take is passed as None (its value was not
    decoded) and named here.
    """
    signature = self.signature(signature_name)
    takes = f"signature {signature_name!r} takes {', '.join(sorted(signature.inputs))}"
    missing = sorted(set(signature.inputs) - set(inputs))
    if missing:
      raise invalid(f"missing input(s) {', '.join(missing)}; {takes}")
    extra = sorted(set(inputs) - set(signature.inputs))
    if extra:
      raise invalid(f"unknown input(s) {', '.join(extra)}; {takes}")
    unknown = sorted(set(output_filter) - set(signature.outputs))
    if unknown:
      raise invalid(f"output_filter names unknown output(s) {', '.join(unknown)}; "
                    f"outputs are {', '.join(sorted(signature.outputs))}")
    return tuple(output_filter or sorted(signature.outputs))

  def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
          outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Runs one signature on inputs that passed `check_call`."""
    names = tuple(sorted(inputs))
    key = (signature_name, names, outputs)
    run = self._callables.get(key)
    if run is None:  # A callable skips re-resolving feeds and fetches on every call.
      signature = self.signatures[signature_name]
      run = self._session.make_callable(
          [signature.outputs[k].name for k in outputs],
          [signature.inputs[k].name for k in names])
      self._callables[key] = run
    try:
      values = run(*(inputs[k] for k in names))
    except tf.errors.OpError as e:
      raise op_error(e) from None
    return dict(zip(outputs, values))


@dataclasses.dataclass
class VersionState:
  """What GetModelStatus reports for one version."""
  state: int
  error: str = ""


class ModelManager:
  """Keeps the newest loadable version of one model loaded, polling for new ones."""

  def __init__(self, name: str, base_path: str, poll_seconds: float):
    self.name = check_model_name(name)
    self.base_path = base_path
    self.poll_seconds = poll_seconds
    self._lock = threading.Lock()
    self._current: Servable | None = None
    self._states: dict[int, VersionState] = {}
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def versions_on_disk(self) -> list[int]:
    try:
      entries = os.listdir(self.base_path)
    except FileNotFoundError:
      return []
    return sorted(int(e) for e in entries if e.isdigit() and any(
        os.path.exists(os.path.join(self.base_path, e, f))
        for f in ("saved_model.pb", "saved_model.pbtxt")))

  def poll_once(self) -> None:
    """Loads the newest version on disk if it is not the one being served."""
    versions = self.versions_on_disk()
    with self._lock:  # Forget failed pushes that were removed.
      for v in [v for v, s in self._states.items() if v not in versions and
                s.state == get_model_status_pb2.ModelVersionStatus.LOADING]:
        del self._states[v]
    if not versions:
      return
    newest = versions[-1]
    current = self._current
    if current is not None and current.version == newest:
      return
    path = os.path.join(self.base_path, str(newest))
    previous_error = self._states.get(newest, VersionState(0)).error
    with self._lock:
      self._states[newest] = VersionState(get_model_status_pb2.ModelVersionStatus.LOADING)
    try:
      servable = Servable(self.name, newest, path)
      warmed = servable.warm_up()
    except Exception as e:  # A half-copied version: keep serving, retry next poll.
      error = f"{type(e).__name__}: {e}".split("\n")[0]
      if error != previous_error:
        logging.warning("model %s version %d did not load (will retry): %s",
                        self.name, newest, error)
      with self._lock:
        self._states[newest] = VersionState(get_model_status_pb2.ModelVersionStatus.LOADING,
                                            error)
      return
    with self._lock:
      old, self._current = self._current, servable
      self._states[newest] = VersionState(get_model_status_pb2.ModelVersionStatus.AVAILABLE)
      if old is not None:
        self._states[old.version] = VersionState(get_model_status_pb2.ModelVersionStatus.END)
    # An old session still running a request is closed when that request's
    # reference goes away (Session.__del__), so no request is cut off.
    logging.info("serving model %s version %d from %s (signatures: %s; %d warm-up requests)",
                 self.name, newest, path, ", ".join(sorted(servable.signatures)), warmed)

  def start(self) -> None:
    self.poll_once()
    if self._current is None:
      logging.warning("no loadable version of model %s under %s yet; waiting for one",
                      self.name, self.base_path)
    self._thread = threading.Thread(target=self._poll_loop, name=f"poll-{self.name}",
                                    daemon=True)
    self._thread.start()

  def stop(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()

  def _poll_loop(self) -> None:
    while not self._stop.wait(self.poll_seconds):
      try:
        self.poll_once()
      except Exception:  # The poller must survive anything the disk throws at it.
        logging.exception("polling %s failed", self.base_path)

  def servable(self, name: str, version: int | None = None, label: str = "") -> Servable:
    """The servable a request's model_spec names, or NOT_FOUND."""
    self._check_name(name)
    if label:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model {name!r} has no version label {label!r}; version labels "
                         "are not configured, request a version number or the latest")
    current = self._current
    if current is None:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model {name!r} has no loaded version yet (none under "
                         f"{self.base_path})")
    if version is not None and version != current.version:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model {name!r} version {version} is not being served; the "
                         f"served version is {current.version}")
    return current

  def statuses(self, name: str, version: int | None = None
               ) -> list[get_model_status_pb2.ModelVersionStatus]:
    self._check_name(name)
    with self._lock:
      states = dict(self._states)
    if version is not None:
      if version not in states:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"model {name!r} has no version {version}")
      states = {version: states[version]}
    if not states:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model {name!r} has no versions yet (none under {self.base_path})")
    result = []
    for v, s in sorted(states.items(), reverse=True):
      status = get_model_status_pb2.ModelVersionStatus(version=v, state=s.state)
      status.status.error_code = error_codes_pb2.UNKNOWN if s.error else error_codes_pb2.OK
      status.status.error_message = s.error
      result.append(status)
    return result

  def _check_name(self, name: str) -> None:
    check_model_name(name)
    if name != self.name:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model {name!r} not found; this server serves {self.name!r}")


