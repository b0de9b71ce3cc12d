"""The prepared examples and graph a benchmark runs on, built once and reused.

`--examples` and `--graph` name existing `prepare` / `build-graph` outputs;
otherwise the data (`--data`, else the shared KuaiRand copy, else synthetic
logs generated under `--work`) is prepared and built into `--work`, and later
runs reuse what is already there.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import tempfile

from e2e_grec import config as config_lib
from e2e_grec import contracts


def add_arguments(parser: argparse.ArgumentParser, work_name: str) -> None:
  parser.add_argument("--data", help="KuaiRand-layout directory, or 'synthetic' "
                      "(default: the shared KuaiRand copy if present, else synthetic).")
  parser.add_argument("--graph", help="build-graph output (default: built into --work).")
  parser.add_argument("--examples", help="prepare output matching --graph.")
  parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), work_name),
                      help="Where to generate, prepare and build when --graph is absent.")


def data_dir(args: argparse.Namespace, config: config_lib.Config) -> str:
  """The logs to read: --data, the shared copy, or synthetic logs under --work."""
  if args.data and args.data != "synthetic":
    return args.data
  shared = None if args.data == "synthetic" else config_lib.default_shared_data_dir()
  if shared:
    return shared
  from e2e_grec.datasets import synthetic
  synthetic_dir = os.path.join(args.work, "synthetic")
  if not glob.glob(os.path.join(synthetic_dir, "log_standard_*.csv")):
    logging.info("generating synthetic logs into %s", synthetic_dir)
    synthetic.generate(config.synthetic, synthetic_dir)
  return synthetic_dir


def prepared(args: argparse.Namespace, config: config_lib.Config) -> tuple[str, str]:
  """(examples_dir, graph_dir): the given ones, or `prepare` + `build-graph` into --work."""
  if args.examples and args.graph:
    return args.examples, args.graph
  from e2e_grec.datasets import prepare
  from e2e_grec.graph import builder
  logs = data_dir(args, config)
  examples, graph = os.path.join(args.work, "examples"), os.path.join(args.work, "graph")
  if not os.path.exists(os.path.join(examples, contracts.NODE_TABLES_FILE)):
    logging.info("preparing %s into %s", logs, examples)
    prepare.prepare(config, logs, examples)
  if not os.path.exists(os.path.join(graph, contracts.SAMPLING_INDEX_FILE)):
    logging.info("building the graph into %s", graph)
    builder.build_graph(config, examples, graph)
  return examples, graph
