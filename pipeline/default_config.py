"""Renders `configs/default.yaml` from the `Config` defaults and their comments.

The file is generated, so it never drifts from config.py (a test compares
them): `python -m e2e_grec.pipeline.default_config > configs/default.yaml`.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import sys

import yaml

from e2e_grec import config as config_lib

HEADER = """# E2E-GRec configuration: every key with its default value.
# Generated from config.py by `python -m e2e_grec.pipeline.default_config`; do
# not edit by hand. Use it as a starting point (`--config my.yaml`) or override
# single keys on the command line: `--set model.mode=no_graph`."""
_FIELD = re.compile(r"^\s+(\w+)\s*:")
_COMMENT = re.compile(r"^\s+#\s?(.*)$")


def field_comments(cls: type) -> dict[str, list[str]]:
  """The `#` comment lines directly above each field in the class source."""
  comments: dict[str, list[str]] = {}
  pending: list[str] = []
  for line in inspect.getsource(cls).splitlines()[1:]:
    if match := _COMMENT.match(line):
      pending.append(match.group(1))
    elif (match := _FIELD.match(line)) and match.group(1) in {f.name for f in
                                                              dataclasses.fields(cls)}:
      comments[match.group(1)] = pending
      pending = []
    else:
      pending = []
  return comments


def render(config: config_lib.Config) -> str:
  """`config` as YAML, each section and key preceded by its comments."""
  out = [HEADER]
  values = config.to_dict()
  for section in dataclasses.fields(config):
    cls = type(getattr(config, section.name))
    out.append("")
    out += [f"# {line}".rstrip() for line in inspect.getdoc(cls).splitlines()]
    out.append(f"{section.name}:")
    comments = field_comments(cls)
    for key, value in values[section.name].items():
      out += [f"  # {line}".rstrip() for line in comments.get(key, [])]
      out.append(f"  {_line(key, value)}")
  return "\n".join(out) + "\n"


def _line(key: str, value: object) -> str:
  """`key: value` with lists and mappings inline, as one would type them."""
  if isinstance(value, (list, dict)):
    return f"{key}: {yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip()}"
  return yaml.safe_dump({key: value}, default_flow_style=False, width=1000).strip()


if __name__ == "__main__":
  sys.stdout.write(render(config_lib.Config()))
