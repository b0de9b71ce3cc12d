"""Where benchmarks write their results: `results/<name>.json` (+ `.md`).

`report.py` regenerates the README tables from these files, so every
benchmark writes them the same way.
"""
from __future__ import annotations

import json
import os
from typing import Any

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write(name: str, result: Any, markdown: str | None = None) -> None:
  """Writes `result` as `results/<name>.json` and `markdown` as `results/<name>.md`."""
  os.makedirs(RESULTS_DIR, exist_ok=True)
  with open(os.path.join(RESULTS_DIR, f"{name}.json"), "w") as f:
    json.dump(result, f, indent=2)
  if markdown is not None:
    with open(os.path.join(RESULTS_DIR, f"{name}.md"), "w") as f:
      f.write(markdown + "\n")
