"""`e2e-grec serve`: a TF-Serving-protocol server over a versioned model directory.

It speaks TF Serving's gRPC API (PredictionService Predict and
GetModelMetadata, ModelService GetModelStatus, from `tensorflow_serving.apis`)
and its REST API (`POST /v1/models/<name>[/versions/<v>]:predict` with the row
"instances" and columnar "inputs" formats, `GET /v1/models/<name>[/metadata]`),
so clients written for TF Serving work unchanged against it and against the
official `tensorflow/serving` image in production (see serving/README.md).

Models live in `<model_dir>/<model_name>/<version>/` (what the Pusher writes).
Like TF Serving's default version policy, the newest version is served; the
directory is polled every `serving.poll_seconds` and a newly pushed version
replaces the old one once it has loaded. SavedModels load through the TF1
loader (`tf.compat.v1.saved_model.loader.load`), the path TF Serving's C++
loader takes, and this module never imports tensorflow_gnn: what it serves,
stock TF Serving serves.
"""
from __future__ import annotations

import base64
import binascii
import concurrent.futures
import dataclasses
import http.server
import json
import logging
import math
import os
import re
import signal
import threading
import urllib.parse
from typing import Any, Callable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import any_pb2, json_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import error_codes_pb2, meta_graph_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from e2e_grec import config as config_lib

DEFAULT_SIGNATURE = "serving_default"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# Larger inputs are refused before any memory is allocated for them.
MAX_INPUT_ELEMENTS = 1 << 24
MAX_MESSAGE_BYTES = 64 << 20
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val", types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val", types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val", types_pb2.DT_STRING: "string_val",
    types_pb2.DT_HALF: "half_val", types_pb2.DT_BFLOAT16: "half_val",
}
_HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
                grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
                grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 503,
                grpc.StatusCode.RESOURCE_EXHAUSTED: 429}
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
  """A request error with the gRPC status code it is answered with."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


def _invalid(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _dtype_name(dtype: int) -> str:
  return types_pb2.DataType.Name(dtype) if dtype in types_pb2.DataType.values() else str(dtype)


def check_model_name(name: str) -> str:
  """Rejects empty names and names that could be read as a path."""
  if not name:
    raise _invalid("model_spec.name is empty: name the model to query")
  if not _NAME_RE.match(name) or ".." in name:
    raise _invalid(f"model name {name!r} is invalid: only letters, digits, '_', '-' and "
                   "'.' are allowed (no path characters)")
  return name


def tensor_to_array(name: str, proto: tensor_pb2.TensorProto,
                    expected: meta_graph_pb2.TensorInfo) -> np.ndarray:
  """A request TensorProto as an array, checked against the signature's input.

  Stricter than `tf.make_ndarray`, which silently zero-fills values given in
  the wrong field: a request whose values do not match its dtype and shape is
  refused with a message naming the input.
  """
  if proto.dtype != expected.dtype:
    raise _invalid(f"input {name!r} must be {_dtype_name(expected.dtype)}, got "
                   f"{_dtype_name(proto.dtype)}")
  if proto.tensor_shape.unknown_rank:
    raise _invalid(f"input {name!r} has an unknown rank; give its shape")
  shape = [d.size for d in proto.tensor_shape.dim]
  if any(d < 0 for d in shape):
    raise _invalid(f"input {name!r} has a negative dimension in shape {shape}")
  count = math.prod(shape)
  if count > MAX_INPUT_ELEMENTS:
    raise _invalid(f"input {name!r} has {count} elements, more than {MAX_INPUT_ELEMENTS}")
  _check_shape(name, shape, expected)
  field = _VALUE_FIELDS.get(proto.dtype)
  if field is None:
    raise _invalid(f"input {name!r}: dtype {_dtype_name(proto.dtype)} is not supported")
  given = [f.name for f, _ in proto.ListFields()
           if f.name.endswith("_val") and f.name != field]
  if given:
    raise _invalid(f"input {name!r} is {_dtype_name(proto.dtype)} but has values in "
                   f"{', '.join(given)} (expected {field})")
  if proto.tensor_content:
    if proto.dtype == types_pb2.DT_STRING:
      raise _invalid(f"input {name!r}: string tensors cannot use tensor_content")
    itemsize = tf.dtypes.as_dtype(proto.dtype).size
    if len(proto.tensor_content) != count * itemsize:
      raise _invalid(f"input {name!r}: tensor_content has {len(proto.tensor_content)} "
                     f"bytes, shape {shape} needs {count * itemsize}")
  else:
    n = len(getattr(proto, field))
    if proto.dtype in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
      pass  # half_val packs values as ints; TF accepts fewer and pads.
    elif n != count and not (n == 1 and count > 0):
      raise _invalid(f"input {name!r}: shape {shape} needs {count} values, "
                     f"got {n} in {field}")
  try:
    return tf.make_ndarray(proto)
  except (ValueError, TypeError) as e:
    raise _invalid(f"input {name!r} is not a valid tensor: {e}") from None


def _check_shape(name: str, shape: list[int], expected: meta_graph_pb2.TensorInfo) -> None:
  if expected.tensor_shape.unknown_rank:
    return
  want = [d.size for d in expected.tensor_shape.dim]
  if len(want) != len(shape) or any(w >= 0 and w != s for w, s in zip(want, shape)):
    readable = [None if w < 0 else w for w in want]
    raise _invalid(f"input {name!r} has shape {shape}, the signature expects {readable} "
                   "(None = any size)")


def _op_error(error: tf.errors.OpError) -> ServingError:
  """A TensorFlow runtime error's message, without the graph node context."""
  lines = [line.strip() for line in error.message.split("\n")]
  lines = [line for line in lines if line and not line.startswith("[[")
           and line != "Graph execution error:"]
  message = lines[0] if lines else error.message
  return ServingError(_GRPC_CODES.get(error.error_code, grpc.StatusCode.INTERNAL), message)


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

  def close(self) -> None:
    self._session.close()

  def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
    key = name or DEFAULT_SIGNATURE
    if key not in self.signatures:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"signature {key!r} not found in model {self.name!r} version "
                         f"{self.version}; it has {', '.join(sorted(self.signatures))}")
    return self.signatures[key]

  def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
          output_filter: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Runs one signature; inputs must already match its dtypes and shapes."""
    signature = self.signature(signature_name)
    missing = sorted(set(signature.inputs) - set(inputs))
    if missing:
      raise _invalid(f"missing input(s) {', '.join(missing)}; signature "
                     f"{signature_name or DEFAULT_SIGNATURE!r} takes "
                     f"{', '.join(sorted(signature.inputs))}")
    extra = sorted(set(inputs) - set(signature.inputs))
    if extra:
      raise _invalid(f"unknown input(s) {', '.join(extra)}; signature "
                     f"{signature_name or DEFAULT_SIGNATURE!r} takes "
                     f"{', '.join(sorted(signature.inputs))}")
    unknown = sorted(set(output_filter) - set(signature.outputs))
    if unknown:
      raise _invalid(f"output_filter names unknown output(s) {', '.join(unknown)}; "
                     f"outputs are {', '.join(sorted(signature.outputs))}")
    names = list(output_filter or sorted(signature.outputs))
    feeds = {signature.inputs[k].name: v for k, v in inputs.items()}
    fetches = [signature.outputs[k].name for k in names]
    try:
      values = self._session.run(fetches, feed_dict=feeds)
    except tf.errors.OpError as e:
      raise _op_error(e) from None
    return dict(zip(names, values))


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
    logging.info("serving model %s version %d from %s (signatures: %s)", self.name,
                 newest, path, ", ".join(sorted(servable.signatures)))

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


def _spec_version(model_spec) -> tuple[int | None, str]:
  version = model_spec.version.value if model_spec.HasField("version") else None
  return version, model_spec.version_label


def predict(manager: ModelManager, request: predict_pb2.PredictRequest
            ) -> predict_pb2.PredictResponse:
  """TF Serving's Predict over protos."""
  version, label = _spec_version(request.model_spec)
  servable = manager.servable(request.model_spec.name, version, label)
  signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
  signature = servable.signature(signature_name)
  inputs = {}
  for name, proto in request.inputs.items():
    if name in signature.inputs:
      inputs[name] = tensor_to_array(name, proto, signature.inputs[name])
    else:
      inputs[name] = None  # Servable.run names it as unknown.
  outputs = servable.run(signature_name, inputs, tuple(request.output_filter))
  response = predict_pb2.PredictResponse()
  response.model_spec.name = servable.name
  response.model_spec.version.value = servable.version
  response.model_spec.signature_name = signature_name
  for name, value in outputs.items():
    response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
  return response


def model_metadata(manager: ModelManager, request: get_model_metadata_pb2.GetModelMetadataRequest
                   ) -> get_model_metadata_pb2.GetModelMetadataResponse:
  fields = list(request.metadata_field)
  if fields != ["signature_def"]:
    raise _invalid(f"metadata_field must be ['signature_def'] (the only metadata served), "
                   f"got {fields}")
  version, label = _spec_version(request.model_spec)
  servable = manager.servable(request.model_spec.name, version, label)
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


def model_status(manager: ModelManager, request: get_model_status_pb2.GetModelStatusRequest
                 ) -> get_model_status_pb2.GetModelStatusResponse:
  version, label = _spec_version(request.model_spec)
  if label:
    raise ServingError(grpc.StatusCode.NOT_FOUND,
                       f"model {request.model_spec.name!r} has no version label {label!r}")
  response = get_model_status_pb2.GetModelStatusResponse()
  response.model_version_status.extend(manager.statuses(request.model_spec.name, version))
  return response


def _grpc_handler(function: Callable[[ModelManager, Any], Any]) -> Callable:
  """Answers ServingErrors with their status code; the server keeps serving."""

  def handle(self, request, context):
    try:
      return function(self.manager, request)
    except ServingError as e:
      context.abort(e.code, e.message)
    except Exception as e:  # Never let one request take the server down.
      logging.exception("request failed")
      context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")

  return handle


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, manager: ModelManager):
    self.manager = manager

  Predict = _grpc_handler(predict)
  GetModelMetadata = _grpc_handler(model_metadata)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, manager: ModelManager):
    self.manager = manager

  GetModelStatus = _grpc_handler(model_status)


# ---- REST ------------------------------------------------------------------

_REST_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]*)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>[A-Za-z]+)|/(?P<metadata>metadata))?$")


def _json_leaf(value: Any, dtype: int, name: str) -> Any:
  if dtype == types_pb2.DT_STRING:
    if isinstance(value, dict):
      if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise _invalid(f"input {name!r}: a bytes value is written {{\"b64\": \"...\"}}, "
                       f"got {value!r:.80}")
      try:
        return base64.b64decode(value["b64"], validate=True)
      except binascii.Error as e:
        raise _invalid(f"input {name!r}: invalid base64: {e}") from None
    if isinstance(value, str):
      return value.encode("utf-8")
    raise _invalid(f"input {name!r} is {_dtype_name(dtype)}: expected strings, got {value!r:.80}")
  if dtype == types_pb2.DT_BOOL:
    if isinstance(value, bool):
      return value
    raise _invalid(f"input {name!r} is DT_BOOL: expected true/false, got {value!r:.80}")
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise _invalid(f"input {name!r} is {_dtype_name(dtype)}: expected numbers, "
                   f"got {value!r:.80}")
  if tf.dtypes.as_dtype(dtype).is_integer and not isinstance(value, int):
    raise _invalid(f"input {name!r} is {_dtype_name(dtype)}: expected integers, got {value!r}")
  return value


def _json_nested(value: Any, dtype: int, name: str) -> Any:
  if isinstance(value, list):
    return [_json_nested(v, dtype, name) for v in value]
  return _json_leaf(value, dtype, name)


def json_to_array(name: str, value: Any, expected: meta_graph_pb2.TensorInfo) -> np.ndarray:
  """A JSON value (nested lists, b64 objects for bytes) as a checked array."""
  nested = _json_nested(value, expected.dtype, name)
  np_dtype = object if expected.dtype == types_pb2.DT_STRING else (
      tf.dtypes.as_dtype(expected.dtype).as_numpy_dtype)
  try:
    array = np.array(nested, dtype=np_dtype)
  except (ValueError, OverflowError) as e:
    raise _invalid(f"input {name!r} is not a rectangular {_dtype_name(expected.dtype)} "
                   f"tensor: {e}") from None
  if expected.dtype == types_pb2.DT_STRING and array.size and any(
      not isinstance(v, bytes) for v in array.reshape(-1)):
    raise _invalid(f"input {name!r} is not a rectangular tensor of strings")
  if array.size > MAX_INPUT_ELEMENTS:
    raise _invalid(f"input {name!r} has {array.size} elements, more than {MAX_INPUT_ELEMENTS}")
  _check_shape(name, list(array.shape), expected)
  return array


def _rest_inputs(body: Any, signature: meta_graph_pb2.SignatureDef) -> tuple[dict, bool]:
  """Decodes a REST predict body; returns (inputs, row_format)."""
  if not isinstance(body, dict):
    raise _invalid("the request body must be a JSON object with \"instances\" or \"inputs\"")
  unknown = sorted(set(body) - {"signature_name", "instances", "inputs"})
  if unknown or ("instances" in body) == ("inputs" in body):
    raise _invalid("the request body needs exactly one of \"instances\" (row format) or "
                   "\"inputs\" (columnar format), plus optional \"signature_name\""
                   + (f"; unknown key(s) {unknown}" if unknown else ""))
  names = sorted(signature.inputs)
  if "inputs" in body:
    columns = body["inputs"]
    if not (isinstance(columns, dict) and "b64" not in columns):
      if len(names) != 1:
        raise _invalid(f"\"inputs\" must be an object naming the inputs {names}")
      columns = {names[0]: columns}
    return _decode_columns(columns, signature), False
  rows = body["instances"]
  if not isinstance(rows, list) or not rows:
    raise _invalid("\"instances\" must be a non-empty list")
  named = all(isinstance(r, dict) and "b64" not in r for r in rows)
  if not named:
    if len(names) != 1:
      raise _invalid(f"each instance must be an object naming the inputs {names}")
    return _decode_columns({names[0]: rows}, signature), True
  keys = set(rows[0])
  for i, row in enumerate(rows):
    if set(row) != keys:
      raise _invalid(f"instance {i} has inputs {sorted(row)}, instance 0 has {sorted(keys)}; "
                     "every instance needs the same inputs")
  return _decode_columns({k: [row[k] for row in rows] for k in keys}, signature), True


def _decode_columns(columns: dict, signature: meta_graph_pb2.SignatureDef) -> dict:
  return {name: (json_to_array(name, value, signature.inputs[name])
                 if name in signature.inputs else None)
          for name, value in columns.items()}


def _json_value(name: str, array: np.ndarray) -> Any:
  if array.dtype == object or array.dtype.kind == "S":
    def encode(v: bytes) -> Any:
      if name.endswith("_bytes"):
        return {"b64": base64.b64encode(v).decode("ascii")}
      try:
        return v.decode("utf-8")
      except UnicodeDecodeError:
        return {"b64": base64.b64encode(v).decode("ascii")}
    return np.vectorize(encode, otypes=[object])(array).tolist() if array.size else []
  return array.tolist()


def rest_predict(manager: ModelManager, name: str, version: int | None, label: str,
                 body: Any) -> dict:
  """TF Serving's REST predict: row or columnar JSON in, the same format out."""
  servable = manager.servable(name, version, label)
  signature_name = (body.get("signature_name") if isinstance(body, dict) else None) \
      or DEFAULT_SIGNATURE
  if not isinstance(signature_name, str):
    raise _invalid("\"signature_name\" must be a string")
  signature = servable.signature(signature_name)
  inputs, rows = _rest_inputs(body, signature)
  outputs = servable.run(signature_name, inputs)
  values = {k: _json_value(k, v) for k, v in outputs.items()}
  if not rows:
    return {"outputs": values if len(values) > 1 else next(iter(values.values()))}
  sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in outputs.items()}
  if len(set(sizes.values())) != 1 or None in sizes.values():
    raise _invalid(f"the row format needs outputs with one batch size, got {sizes}; "
                   "use the columnar \"inputs\" format")
  n = next(iter(sizes.values()))
  if len(values) == 1:
    return {"predictions": next(iter(values.values()))}
  return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(n)]}


def _status_json(response: get_model_status_pb2.GetModelStatusResponse) -> dict:
  return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                   always_print_fields_with_no_presence=True)


class _RestHandler(http.server.BaseHTTPRequestHandler):
  """TF Serving's REST API; every error is a JSON {"error": ...} body."""
  manager: ModelManager
  protocol_version = "HTTP/1.1"

  def log_message(self, format: str, *args: Any) -> None:
    logging.debug("REST %s " + format, self.address_string(), *args)

  def _reply(self, status: int, body: dict) -> None:
    data = json.dumps(body).encode("utf-8")
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _route(self) -> tuple[str, int | None, str, str, bool]:
    path = urllib.parse.urlsplit(self.path).path
    match = _REST_PATH.match(path)
    if match is None:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"no such endpoint {path!r}; use /v1/models/<name>[/versions/<v>]"
                         "[:predict|/metadata]")
    name = check_model_name(urllib.parse.unquote(match["name"]))
    version = None
    if match["version"] is not None:
      if not match["version"].isdigit():
        raise _invalid(f"version {match['version']!r} is not a number")
      version = int(match["version"])
    label = urllib.parse.unquote(match["label"] or "")
    return name, version, label, match["verb"] or "", bool(match["metadata"])

  def _handle(self, method: str) -> None:
    try:
      name, version, label, verb, metadata = self._route()
      if method == "GET" and not verb:
        if metadata:
          request = get_model_metadata_pb2.GetModelMetadataRequest(
              metadata_field=["signature_def"])
        else:
          request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if version is not None:
          request.model_spec.version.value = version
        elif label:  # `version` and `version_label` are a oneof.
          request.model_spec.version_label = label
        if metadata:
          self._reply(200, json_format.MessageToDict(
              model_metadata(self.manager, request), preserving_proto_field_name=True))
        else:
          self._reply(200, _status_json(model_status(self.manager, request)))
      elif method == "POST" and verb == "predict" and not metadata:
        self._reply(200, rest_predict(self.manager, name, version, label, self._body()))
      else:
        raise ServingError(grpc.StatusCode.NOT_FOUND if method == "POST" else
                           grpc.StatusCode.INVALID_ARGUMENT,
                           f"{method} {self.path} is not supported; use GET "
                           "/v1/models/<name>[/metadata] or POST /v1/models/<name>:predict")
    except ServingError as e:
      self._reply(_HTTP_STATUS.get(e.code, 500), {"error": e.message})
    except Exception as e:  # Never let one request take the server down.
      logging.exception("REST request failed")
      self._reply(500, {"error": f"{type(e).__name__}: {e}"})

  def _body(self) -> Any:
    length = int(self.headers.get("Content-Length") or 0)
    if length > MAX_MESSAGE_BYTES:
      raise _invalid(f"request body of {length} bytes exceeds {MAX_MESSAGE_BYTES}")
    raw = self.rfile.read(length)
    try:
      return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise _invalid(f"the request body is not valid JSON: {e}") from None

  def do_GET(self) -> None:
    self._handle("GET")

  def do_POST(self) -> None:
    self._handle("POST")


class ModelServer:
  """gRPC and REST front ends over one ModelManager."""

  def __init__(self, model_dir: str, serving: config_lib.ServingConfig,
               max_workers: int = 16):
    self.serving = serving
    self.manager = ModelManager(serving.model_name,
                                os.path.join(model_dir, serving.model_name),
                                serving.poll_seconds)
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    self._grpc = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=max_workers),
                             options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(self.manager), self._grpc)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(self.manager), self._grpc)
    self.grpc_port = self._grpc.add_insecure_port(f"{serving.host}:{serving.grpc_port}")
    if self.grpc_port == 0:
      raise OSError(f"cannot bind gRPC to {serving.host}:{serving.grpc_port}")
    handler = type("RestHandler", (_RestHandler,), {"manager": self.manager})
    self._http = http.server.ThreadingHTTPServer((serving.host, serving.rest_port), handler)
    self._http.daemon_threads = True
    self.rest_port = self._http.server_address[1]
    self._http_thread: threading.Thread | None = None

  def start(self) -> "ModelServer":
    self.manager.start()
    self._grpc.start()
    self._http_thread = threading.Thread(target=self._http.serve_forever, name="rest",
                                         daemon=True)
    self._http_thread.start()
    return self

  def stop(self) -> None:
    self._http.shutdown()
    self._http.server_close()
    self._grpc.stop(grace=1).wait()
    self.manager.stop()


def command(args: Any, config: config_lib.Config) -> int:
  """`e2e-grec serve`: serves until interrupted (Ctrl-C or SIGTERM)."""
  model_dir = args.model_dir or config.pipeline.serving_dir
  server = ModelServer(model_dir, config.serving).start()
  logging.info("model %s from %s: gRPC on %s:%d, REST on http://%s:%d/v1/models/%s",
               config.serving.model_name, server.manager.base_path, config.serving.host,
               server.grpc_port, config.serving.host, server.rest_port,
               config.serving.model_name)
  stopped = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stopped.set())
  try:
    stopped.wait()
  except KeyboardInterrupt:
    pass
  logging.info("shutting down")
  server.stop()
  return 0
