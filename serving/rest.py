"""TF Serving's REST API on aiohttp: `POST /v1/models/<name>[/versions/<v>]:predict`,
`GET /v1/models/<name>[/versions/<v>]` (status) and `GET .../metadata`.

aiohttp's HTTP parser refuses malformed requests (a negative or non-numeric
Content-Length, bad chunking) with 400 before any handler runs. On top of it:
a predict body needs a Content-Length or chunked encoding (411), is at most
`ServerLimits.max_message_bytes` (413) and must arrive within
`ServerLimits.request_timeout` (408, and the connection is closed); a connection
idle for that long, including one that never completes its headers, is closed.
Every error answered here is a JSON `{"error": ...}` body; no request can
make the server answer 500 with a traceback or take it down.
"""
from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from e2e_grec.serving.protocol import (HTTP_STATUS, ServingError, check_model_name, invalid,
                                       parse_json)

_REST_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]*)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>[A-Za-z]+)|/(?P<metadata>metadata))?$")
_USAGE = "use GET /v1/models/<name>[/metadata] or POST /v1/models/<name>:predict"


def _error(status: int, message: str, close: bool = False) -> web.Response:
  response = web.json_response({"error": message}, status=status)
  if close:
    response.force_close()
  return response


def _route(raw_path: str) -> tuple[str, int | None, str, str, bool]:
  """(model name, version, label, verb, metadata?) of a /v1/models/... path."""
  match = _REST_PATH.match(raw_path)
  if match is None:
    raise ServingError(grpc.StatusCode.NOT_FOUND,
                       f"no such endpoint {raw_path!r}; use /v1/models/<name>[/versions/<v>]"
                       "[:predict|/metadata]")
  name = check_model_name(urllib.parse.unquote(match["name"]))
  version = None
  if match["version"] is not None:
    if not match["version"].isdigit():
      raise invalid(f"version {match['version']!r} is not a number")
    version = int(match["version"])
  label = urllib.parse.unquote(match["label"] or "")
  return name, version, label, match["verb"] or "", bool(match["metadata"])


class RestApi:
  """The aiohttp handler of every REST request."""

  def __init__(self, api: Any):
    self.api = api  # server.ServingApi
    self.limits = api.limits

  async def handle(self, request: web.Request) -> web.StreamResponse:
    try:
      name, version, label, verb, metadata = _route(request.rel_url.raw_path)
      if request.method == "GET" and not verb:
        return web.json_response(self._get(name, version, label, metadata))
      if request.method == "POST" and verb == "predict" and not metadata:
        body = await self._body(request)
        return web.json_response(await self.api.rest_predict(name, version, label, body))
      raise ServingError(
          grpc.StatusCode.NOT_FOUND if request.method == "POST" else
          grpc.StatusCode.INVALID_ARGUMENT,
          f"{request.method} {request.rel_url.raw_path} is not supported; {_USAGE}")
    except ServingError as e:
      return _error(HTTP_STATUS.get(e.code, 500), e.message)
    except web.HTTPException as e:  # raised by aiohttp while reading the body
      return _error(e.status, e.text, close=True)
    except asyncio.TimeoutError:
      return _error(408, f"the request body did not arrive within "
                    f"{self.limits.request_timeout:.3g} s", close=True)
    except Exception as e:  # Never let one request take the server down.
      logging.exception("REST request failed")
      return _error(500, f"{type(e).__name__}: {e}")

  def _get(self, name: str, version: int | None, label: str, metadata: bool) -> dict:
    if metadata:
      request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    else:
      request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
      request.model_spec.version.value = version
    elif label:  # `version` and `version_label` are a oneof.
      request.model_spec.version_label = label
    if metadata:
      return json_format.MessageToDict(self.api.model_metadata(request),
                                       preserving_proto_field_name=True)
    return json_format.MessageToDict(self.api.model_status(request),
                                     preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)

  async def _body(self, request: web.Request) -> Any:
    """The JSON body, read within the request timeout and the size limit."""
    length = request.content_length
    limit = self.limits.max_message_bytes
    if length is None and "chunked" not in request.headers.get("Transfer-Encoding", ""):
      raise web.HTTPLengthRequired(text="a predict request needs a Content-Length header "
                                   "(or chunked transfer encoding)")
    if length is not None and length > limit:
      raise web.HTTPRequestEntityTooLarge(
          max_size=limit, actual_size=length,
          text=f"the request body of {length} bytes exceeds the limit of {limit} bytes")
    raw = await asyncio.wait_for(request.read(), self.limits.request_timeout)
    if not raw:
      raise invalid("the request body is empty; send a JSON object with \"instances\" or "
                    "\"inputs\"")
    return parse_json(raw)


async def start(api: Any, host: str, port: int) -> tuple[web.AppRunner, int]:
  """Serves the REST API on host:port (0: any free port); returns (runner, port).

  A port in use raises OSError.
  """
  app = web.Application(client_max_size=api.limits.max_message_bytes)
  app.router.add_route("*", "/{path:.*}", RestApi(api).handle)
  runner = web.AppRunner(app, access_log=None,
                         keepalive_timeout=api.limits.request_timeout,
                         shutdown_timeout=1.0)
  await runner.setup()
  # Never reuse_port: a second server on a busy port must fail, not share it.
  site = web.TCPSite(runner, host, port, reuse_port=False)
  try:
    await site.start()
  except OSError:
    await runner.cleanup()
    raise
  return runner, runner.addresses[0][1]
