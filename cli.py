"""The `e2e-grec` command line: one subcommand per step, all sharing one config.

Every subcommand accepts `--config FILE` and repeated `--set section.key=value`;
the work itself lives in the module each command names, imported lazily so
that `e2e-grec --help` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable

from e2e_grec import config as config_lib

DEFAULT_DATA = "synthetic data generated under the pipeline root"


def _add_common(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", help="YAML config file (see configs/).")
  parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="Override one config value, e.g. --set model.mode=no_graph.")


def _data_option(parser: argparse.ArgumentParser, default_help: str) -> None:
  parser.add_argument(
      "--data", help=f"Directory in the KuaiRand-Pure layout, or 'synthetic'. "
      f"Default: {default_help}.")


def _commands() -> dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]]:
  """name -> (module:function, help, argument adder)."""

  def generate(p):
    p.add_argument("--out", required=True, help="Directory for the generated CSV files.")

  def prepare(p):
    _data_option(p, "synthetic data generated under --out")
    p.add_argument("--out", required=True, help="Directory for examples, node tables, report.")

  def build_graph(p):
    _data_option(p, "synthetic (only its pre-period history file is read)")
    p.add_argument("--examples", required=True, help="Output directory of `prepare`.")
    p.add_argument("--out", required=True, help="Directory for the graph.")

  def train(p):
    p.add_argument("--examples", required=True, help="Output directory of `prepare`.")
    p.add_argument("--graph", required=True, help="Output directory of `build-graph`.")
    p.add_argument("--out", required=True, help="Directory for checkpoints, logs, metrics.")

  def run(p):
    _data_option(p, DEFAULT_DATA)
    p.add_argument("--root", help="Pipeline root (default: pipeline.root).")

  def compile_kubeflow(p):
    p.add_argument("--out", default="kubeflow/e2e_grec_pipeline.json",
                   help="Where to write the KFP v2 pipeline spec.")

  def serve(p):
    p.add_argument("--model-dir", default=None,
                   help="Versioned model base directory (default: pipeline.serving_dir).")

  def score(p):
    p.add_argument("--user", type=int, required=True, help="Raw user id.")
    p.add_argument("--candidates", required=True, help="Comma-separated raw video ids.")
    p.add_argument("--tab", type=int, default=0, help="App surface of the request.")
    p.add_argument("--hour", type=int, default=None, help="Hour of day (default: now).")
    p.add_argument("--target", default=None, help="host:port of the gRPC server.")

  return {
      "generate": ("e2e_grec.datasets.synthetic:command",
                   "Write synthetic logs in the KuaiRand-Pure file layout.", generate),
      "prepare": ("e2e_grec.datasets.prepare:command",
                  "Validate logs, split by date, derive labels, write tf.Examples.", prepare),
      "build-graph": ("e2e_grec.graph.builder:command",
                      "Build the heterogeneous graph with Beam (extra args go to Beam).",
                      build_graph),
      "train": ("e2e_grec.models.train:command",
                "Train and evaluate one model (model.mode: e2e, two_stage, no_graph).", train),
      "run": ("e2e_grec.pipeline.run:command",
              "Run the whole TFX pipeline locally (the main job).", run),
      "compile-kubeflow": ("e2e_grec.pipeline.kubeflow:command",
                           "Compile the pipeline to a Kubeflow Pipelines v2 spec.",
                           compile_kubeflow),
      "serve": ("e2e_grec.serving.server:command",
                "Serve pushed models over TF Serving's gRPC and REST APIs.", serve),
      "score": ("e2e_grec.serving.client:command",
                "Rank candidate videos for a user through the gRPC API.", score),
  }


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="e2e-grec",
      description="E2E-GRec: end-to-end GNN + multi-task ranking on TensorFlow.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  for name, (_, help_text, add_args) in _commands().items():
    command_parser = sub.add_parser(name, help=help_text, description=help_text)
    _add_common(command_parser)
    add_args(command_parser)
  return parser


def main(argv: list[str] | None = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      datefmt="%H:%M:%S")
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  if extra and args.command != "build-graph":
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  args.beam_args = extra
  try:
    config = config_lib.load(args.config, args.set)
  except (config_lib.ConfigError, OSError) as e:
    parser.error(str(e))
  target, _, _ = _commands()[args.command]
  module_name, function_name = target.split(":")
  command = getattr(importlib.import_module(module_name), function_name)
  return int(command(args, config) or 0)


if __name__ == "__main__":
  sys.exit(main())
