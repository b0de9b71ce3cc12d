"""TF Serving's wire formats: request tensors (protos and JSON) in, checked arrays out.

Shared by the gRPC and REST front ends. Every malformed input is a
`ServingError` with the gRPC status code (and through `HTTP_STATUS` the HTTP
status) it is answered with, and a message that names the input and the
reason; nothing here touches a model.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

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
HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
               grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
               grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 503,
               grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
               grpc.StatusCode.DEADLINE_EXCEEDED: 504}
GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
  """A request error with the gRPC status code it is answered with."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


def invalid(message: str) -> ServingError:
  """An INVALID_ARGUMENT error: the request, not the server, is wrong."""
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def dtype_name(dtype: int) -> str:
  return types_pb2.DataType.Name(dtype) if dtype in types_pb2.DataType.values() else str(dtype)


def check_model_name(name: str) -> str:
  """Rejects empty names and names that could be read as a path."""
  if not name:
    raise invalid("model_spec.name is empty: name the model to query")
  if not _NAME_RE.match(name) or ".." in name:
    raise invalid(f"model name {name!r} is invalid: only letters, digits, '_', '-' and "
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
    raise invalid(f"input {name!r} must be {dtype_name(expected.dtype)}, got "
                  f"{dtype_name(proto.dtype)}")
  if proto.tensor_shape.unknown_rank:
    raise invalid(f"input {name!r} has an unknown rank; give its shape")
  shape = [d.size for d in proto.tensor_shape.dim]
  if any(d < 0 for d in shape):
    raise invalid(f"input {name!r} has a negative dimension in shape {shape}")
  count = math.prod(shape)
  if count > MAX_INPUT_ELEMENTS:
    raise invalid(f"input {name!r} has {count} elements, more than {MAX_INPUT_ELEMENTS}")
  check_shape(name, shape, expected)
  field = _VALUE_FIELDS.get(proto.dtype)
  if field is None:
    raise invalid(f"input {name!r}: dtype {dtype_name(proto.dtype)} is not supported")
  given = [f.name for f, _ in proto.ListFields()
           if f.name.endswith("_val") and f.name != field]
  if given:
    raise invalid(f"input {name!r} is {dtype_name(proto.dtype)} but has values in "
                  f"{', '.join(given)} (expected {field})")
  if proto.tensor_content:
    if proto.dtype == types_pb2.DT_STRING:
      raise invalid(f"input {name!r}: string tensors cannot use tensor_content")
    itemsize = tf.dtypes.as_dtype(proto.dtype).size
    if len(proto.tensor_content) != count * itemsize:
      raise invalid(f"input {name!r}: tensor_content has {len(proto.tensor_content)} "
                     f"bytes, shape {shape} needs {count * itemsize}")
  else:
    n = len(getattr(proto, field))
    if proto.dtype in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
      pass  # half_val packs values as ints; TF accepts fewer and pads.
    elif n != count and not (n == 1 and count > 0):
      raise invalid(f"input {name!r}: shape {shape} needs {count} values, "
                     f"got {n} in {field}")
  try:
    return tf.make_ndarray(proto)
  except (ValueError, TypeError) as e:
    raise invalid(f"input {name!r} is not a valid tensor: {e}") from None


def check_shape(name: str, shape: list[int], expected: meta_graph_pb2.TensorInfo) -> None:
  if expected.tensor_shape.unknown_rank:
    return
  want = [d.size for d in expected.tensor_shape.dim]
  if len(want) != len(shape) or any(w >= 0 and w != s for w, s in zip(want, shape)):
    readable = [None if w < 0 else w for w in want]
    raise invalid(f"input {name!r} has shape {shape}, the signature expects {readable} "
                  "(None = any size)")



def _json_leaf(value: Any, dtype: int, name: str) -> Any:
  if dtype == types_pb2.DT_STRING:
    if isinstance(value, dict):
      if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise invalid(f"input {name!r}: a bytes value is written {{\"b64\": \"...\"}}, "
                       f"got {value!r:.80}")
      try:
        return base64.b64decode(value["b64"], validate=True)
      except binascii.Error as e:
        raise invalid(f"input {name!r}: invalid base64: {e}") from None
    if isinstance(value, str):
      return value.encode("utf-8")
    raise invalid(f"input {name!r} is {dtype_name(dtype)}: expected strings, got {value!r:.80}")
  if dtype == types_pb2.DT_BOOL:
    if isinstance(value, bool):
      return value
    raise invalid(f"input {name!r} is DT_BOOL: expected true/false, got {value!r:.80}")
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise invalid(f"input {name!r} is {dtype_name(dtype)}: expected numbers, "
                  f"got {value!r:.80}")
  if tf.dtypes.as_dtype(dtype).is_integer and not isinstance(value, int):
    raise invalid(f"input {name!r} is {dtype_name(dtype)}: expected integers, got {value!r}")
  return value


def _json_nested(value: Any, dtype: int, name: str) -> Any:
  if isinstance(value, list):
    return [_json_nested(v, dtype, name) for v in value]
  return _json_leaf(value, dtype, name)


def json_to_array(name: str, value: Any, expected: meta_graph_pb2.TensorInfo) -> np.ndarray:
  """A JSON value (nested lists, b64 objects for bytes) as a checked array."""
  try:
    nested = _json_nested(value, expected.dtype, name)
  except RecursionError:
    raise invalid(f"input {name!r} is nested too deeply") from None
  np_dtype = object if expected.dtype == types_pb2.DT_STRING else (
      tf.dtypes.as_dtype(expected.dtype).as_numpy_dtype)
  try:
    array = np.array(nested, dtype=np_dtype)
  except (ValueError, OverflowError) as e:
    raise invalid(f"input {name!r} is not a rectangular {dtype_name(expected.dtype)} "
                  f"tensor: {e}") from None
  if expected.dtype == types_pb2.DT_STRING and array.size and any(
      not isinstance(v, bytes) for v in array.reshape(-1)):
    raise invalid(f"input {name!r} is not a rectangular tensor of strings")
  if array.size > MAX_INPUT_ELEMENTS:
    raise invalid(f"input {name!r} has {array.size} elements, more than {MAX_INPUT_ELEMENTS}")
  check_shape(name, list(array.shape), expected)
  return array


def rest_inputs(body: Any, signature: meta_graph_pb2.SignatureDef) -> tuple[dict, bool]:
  """Decodes a REST predict body; returns (inputs, row_format)."""
  if not isinstance(body, dict):
    raise invalid("the request body must be a JSON object with \"instances\" or \"inputs\"")
  unknown = sorted(set(body) - {"signature_name", "instances", "inputs"})
  if unknown or ("instances" in body) == ("inputs" in body):
    raise invalid("the request body needs exactly one of \"instances\" (row format) or "
                  "\"inputs\" (columnar format), plus optional \"signature_name\""
                   + (f"; unknown key(s) {unknown}" if unknown else ""))
  names = sorted(signature.inputs)
  if "inputs" in body:
    columns = body["inputs"]
    if not (isinstance(columns, dict) and "b64" not in columns):
      if len(names) != 1:
        raise invalid(f"\"inputs\" must be an object naming the inputs {names}")
      columns = {names[0]: columns}
    return _decode_columns(columns, signature), False
  rows = body["instances"]
  if not isinstance(rows, list) or not rows:
    raise invalid("\"instances\" must be a non-empty list")
  named = all(isinstance(r, dict) and "b64" not in r for r in rows)
  if not named:
    if len(names) != 1:
      raise invalid(f"each instance must be an object naming the inputs {names}")
    return _decode_columns({names[0]: rows}, signature), True
  keys = set(rows[0])
  for i, row in enumerate(rows):
    if set(row) != keys:
      raise invalid(f"instance {i} has inputs {sorted(row)}, instance 0 has {sorted(keys)}; "
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


def parse_json(raw: bytes) -> Any:
  """A request body as JSON; malformed or too deeply nested bodies are INVALID_ARGUMENT."""
  try:
    return json.loads(raw)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise invalid(f"the request body is not valid JSON: {e}") from None
  except RecursionError:
    raise invalid("the request body is nested too deeply") from None


def rest_signature_name(body: Any) -> str:
  name = (body.get("signature_name") if isinstance(body, dict) else None) or DEFAULT_SIGNATURE
  if not isinstance(name, str):
    raise invalid("\"signature_name\" must be a string")
  return name


def rest_outputs(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
  """A predict result as TF Serving's REST answer, in the request's format."""
  values = {k: _json_value(k, v) for k, v in outputs.items()}
  if not row_format:
    return {"outputs": values if len(values) > 1 else next(iter(values.values()))}
  sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in outputs.items()}
  if len(set(sizes.values())) != 1 or None in sizes.values():
    raise invalid(f"the row format needs outputs with one batch size, got {sizes}; "
                  "use the columnar \"inputs\" format")
  n = next(iter(sizes.values()))
  if len(values) == 1:
    return {"predictions": next(iter(values.values()))}
  return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(n)]}
