"""The `e2e-grec` command line: one subcommand per step, all sharing one config.

Every subcommand accepts `--config FILE` and repeated `--set section.key=value`;
flags that stand for a config key (`serve --port` is `serving.grpc_port`) are
applied on top, so the command itself reads one resolved config. Naming: a
command writes where `--out` says; inputs are named after what they read
(`--data`, `--examples`, `--graph`, `--model`, `--models`). The work lives in
the module each command names, imported lazily so that `--help` is instant.

A failure the user can fix (a bad config key, a malformed data file, a missing
directory: `ValueError` and `OSError`, which `ConfigError` and the data layer's
`DataError` are) prints one line and exits 1; the traceback goes to the log
file that line names, never to the console.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import logging
import os
import sys
import tempfile
import traceback
from typing import Any, Callable

import e2e_grec
from e2e_grec import config as config_lib
from e2e_grec import contracts

# Where each invocation's log (with any traceback) goes; overridable for CI.
LOG_DIR_ENV = "E2E_GREC_LOG_DIR"
# Commands that pass the arguments after `--` to Apache Beam.
BEAM_COMMANDS = ("build-graph",)


@dataclasses.dataclass(frozen=True)
class Command:
  """A subcommand: the `module:function(args, config)` doing the work, and its flags."""
  target: str
  help: str
  add_arguments: Callable[[argparse.ArgumentParser], None]


def _config_flag(parser: argparse.ArgumentParser, flag: str, key: str, help_text: str,
                 **kwargs: Any) -> None:
  """A flag that sets config key `key` (section.key) when given."""
  action = parser.add_argument(flag, default=None, help=f"{help_text} (config {key}).",
                               **kwargs)
  keys = dict(parser.get_default("config_flags") or {})
  keys[action.dest] = key
  parser.set_defaults(config_flags=keys)


def _data(parser: argparse.ArgumentParser, default_help: str) -> None:
  parser.add_argument("--data", help="Directory in the KuaiRand-Pure layout, or 'synthetic'. "
                      f"Default: {default_help}.")


def _generate(p):
  p.add_argument("--out", required=True, help="Directory for the generated CSV files.")


def _prepare(p):
  _data(p, "data.data_dir, or synthetic data generated under --out/raw")
  p.add_argument("--out", required=True, help="Directory for examples, node tables, report.")


def _build_graph(p):
  p.add_argument("--examples", required=True, help="Output directory of `prepare`.")
  p.add_argument("--out", required=True, help="Directory for the graph.")


def _train(p):
  p.add_argument("--examples", required=True, help="Output directory of `prepare`.")
  p.add_argument("--graph", help="Output directory of `build-graph` (not for no_graph).")
  p.add_argument("--out", required=True, help="Directory for checkpoints, logs, metrics.")


def _tune(p):
  p.add_argument("--examples", required=True, help="Output directory of `prepare`.")
  p.add_argument("--graph", required=True, help="Output directory of `build-graph`.")
  p.add_argument("--out", required=True, help="Study directory (study.db, trials, "
                 "tensorboard/ for the HParams dashboard); rerun to resume.")
  p.add_argument("--trials", type=int, default=20, help="Finished trials to reach in all.")
  p.add_argument("--max-epochs", type=int, default=2, help="Most epochs a trial may train.")
  p.add_argument("--seed", type=int, default=0, help="Seed of the sampler (TPE).")
  p.add_argument("--summary", default=None, help="Also write the summary JSON here.")


def _export(p):
  p.add_argument("--model", required=True, help="Output directory of `train`.")
  p.add_argument("--examples", required=True, help="The examples it was trained on.")
  p.add_argument("--graph", help="The graph it was trained on (not for no_graph).")
  p.add_argument("--out", required=True, help="Serving directory: the SavedModel goes to "
                 "<out>/<serving.model_name>/<version>, the layout `serve` and TF Serving read.")


def _refresh_graph(p):
  p.add_argument("--model", required=True, help="Output directory of `train`.")
  p.add_argument("--data", required=True, help="Logs in the KuaiRand-Pure layout from the "
                 "model's training start through the newest day.")
  p.add_argument("--out", required=True, help="Serving directory: the refreshed SavedModel "
                 "goes to <out>/<serving.model_name>/<version>, next to the served versions.")
  p.add_argument("--through", default=None, metavar="YYYY-MM-DD",
                 help="Last day of the refreshed graph (default: the newest day in the logs).")


def _run(p):
  _data(p, "synthetic data generated under the pipeline root")
  _config_flag(p, "--out", "pipeline.root", "Pipeline root: artifacts, MLMD, logs")
  p.add_argument("--refresh-from", default=None, metavar="RUN_OR_ROOT",
                 help="Run the graph refresh pipeline instead: serve this trained model "
                 "(a `train --out` directory, or a pipeline root's newest Trainer) on a "
                 "graph rebuilt from --data, which must reach back to its training start. "
                 "No training step runs.")
  p.add_argument("--through", default=None, metavar="YYYY-MM-DD",
                 help="With --refresh-from: last day of the refreshed graph (default: the "
                 "newest day in the logs).")


def _compile_kubeflow(p):
  p.add_argument("--out", default=None,
                 help="Where to write the spec (default: kubeflow/e2e_grec_pipeline_<target>, "
                 "or e2e_grec_graph_refresh_<target>; .yaml for kfp, .json for vertex).")
  p.add_argument("--target", choices=("kfp", "vertex"), default="kfp",
                 help="kfp: open-source Kubeflow Pipelines 2.x; vertex: Vertex AI Pipelines.")
  p.add_argument("--pipeline", choices=("training", "graph_refresh"), default="training",
                 help="training: the full pipeline; graph_refresh: a trained run served on "
                 "a graph of newer logs (run-time parameter model_run), no training.")
  _config_flag(p, "--image", "pipeline.kubeflow_image", "Image every component runs in")
  _config_flag(p, "--root", "pipeline.kubeflow_root",
               "Default pipeline root (remote storage); a run-time parameter too")


def _submit_kubeflow(p):
  p.add_argument("--spec", required=True, help="The compiled spec (compile-kubeflow --out).")
  p.add_argument("--host", required=True, help="Kubeflow Pipelines API endpoint URL.")
  p.add_argument("--experiment", default=None, help="KFP experiment name.")
  p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                 help="Run-time parameter, e.g. --param data_dir=gs://b/kuairand.")


def _serve(p):
  p.add_argument("--models", dest="model_dir", default=None, metavar="DIR",
                 help="Serving directory holding <model_name>/<version>/ "
                 "(default: pipeline.serving_dir).")
  _config_flag(p, "--host", "serving.host", "Address to bind")
  _config_flag(p, "--port", "serving.grpc_port", "gRPC port (0: any free port)", type=int)
  _config_flag(p, "--rest-port", "serving.rest_port", "REST port (0: any free port)", type=int)
  p.add_argument("--batching-parameters-file", default=None, metavar="FILE",
                 help="TF Serving batching parameters (e.g. serving/batching_parameters.txt); "
                 "default: merge up to export.max_candidates rows per model run.")
  p.add_argument("--request-timeout", type=float, default=None, metavar="SECONDS",
                 help="Per-request deadline of both front ends (default 30).")


def _score(p):
  p.add_argument("--user", type=int, required=True, help="Raw user id.")
  p.add_argument("--candidates", required=True, help="Comma-separated raw video ids.")
  p.add_argument("--tab", type=int, default=0, help="App surface of the request.")
  p.add_argument("--hour", type=int, default=None, help="Hour of day (default: now).")
  p.add_argument("--day", type=int, default=None,
                 help="Request day, days since 1970-01-01; the subgraph sees only edges "
                 "before it (default: today).")
  p.add_argument("--timeout", type=float, default=10.0, help="Request deadline in seconds.")
  _config_flag(p, "--host", "serving.host", "Server address")
  _config_flag(p, "--port", "serving.grpc_port", "Server gRPC port", type=int)
  _config_flag(p, "--model-name", "serving.model_name", "Served model name")


COMMANDS: dict[str, Command] = {
    "generate": Command("e2e_grec.datasets.synthetic:command",
                        "Write synthetic logs in the KuaiRand-Pure file layout.", _generate),
    "prepare": Command("e2e_grec.datasets.prepare:command",
                       "Validate logs, split by date, derive labels, write tf.Examples.",
                       _prepare),
    "build-graph": Command("e2e_grec.graph.builder:command",
                           "Build the heterogeneous graph with Beam (Beam options after `--`).",
                           _build_graph),
    "train": Command("e2e_grec.training.run:command",
                     "Train and evaluate one model (model.mode: e2e, two_stage, no_graph).",
                     _train),
    "tune": Command("e2e_grec.tuning.search:command",
                    "Search hyperparameters with Optuna over `train` runs (resumable).", _tune),
    "export": Command("e2e_grec.cli:export",
                      "Export a trained model as a versioned SavedModel for serving.", _export),
    "refresh-graph": Command("e2e_grec.serving.graph_refresh:command",
                             "Export a trained model with a graph rebuilt from newer logs "
                             "(no training).", _refresh_graph),
    "run": Command("e2e_grec.pipeline.run:command",
                   "Run the whole TFX pipeline locally (the main job).", _run),
    "compile-kubeflow": Command("e2e_grec.pipeline.kubeflow:command",
                                "Compile the pipeline for Kubeflow Pipelines or Vertex AI.",
                                _compile_kubeflow),
    "submit-kubeflow": Command("e2e_grec.pipeline.kubeflow:submit_command",
                               "Submit a compiled spec to a Kubeflow Pipelines endpoint.",
                               _submit_kubeflow),
    "serve": Command("e2e_grec.serving.server:command",
                     "Serve exported models over TF Serving's gRPC and REST APIs.", _serve),
    "score": Command("e2e_grec.serving.client:command",
                     "Rank candidate videos for a user through the gRPC API.", _score),
}


def export(args: argparse.Namespace, config: config_lib.Config) -> int:
  """`e2e-grec export`: restores the run in `--model` and writes the next version.

  The model is rebuilt from the run's own saved config and last checkpoint (in
  a scratch copy of the run, so its metrics stay as training wrote them); only
  the serving section comes from this command's config. The version directory
  appears whole (written aside, then renamed), so a polling server never loads
  half a model.
  """
  import shutil  # pylint: disable=g-import-not-at-top
  from e2e_grec.training import run as run_lib  # pylint: disable=g-import-not-at-top  (heavy)
  from e2e_grec.serving import export as export_lib  # pylint: disable=g-import-not-at-top

  saved = os.path.join(args.model, contracts.RUN_CONFIG_FILE)
  if not os.path.exists(saved):
    raise FileNotFoundError(f"{saved} does not exist: --model must be the --out of `train`")
  trained = config_lib.load(saved).replace(serving=config.serving, export=config.export)
  base = os.path.join(args.out, config.serving.model_name)
  os.makedirs(base, exist_ok=True)
  version = str(export_lib.next_version(base))
  with tempfile.TemporaryDirectory(dir=args.out, prefix=".export-") as scratch:
    run_copy = os.path.join(scratch, "run")
    shutil.copytree(args.model, run_copy, ignore=shutil.ignore_patterns("tensorboard"))
    result = run_lib.run(trained, args.examples, args.graph, run_copy)
    staged = os.path.join(scratch, version)
    export_lib.export_saved_model(result.model, result.sampler, result.tables, trained, staged)
    os.replace(staged, os.path.join(base, version))
  print(f"exported {trained.model.mode} model version {version} to {os.path.join(base, version)}"
        f"\nserve it with: e2e-grec serve --models {args.out}")
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="e2e-grec",
      description="E2E-GRec: end-to-end GNN + multi-task ranking on TensorFlow.",
      epilog=f"Each run logs to {log_dir()} (set {LOG_DIR_ENV} to change).")
  parser.add_argument("--version", action="version", version=f"%(prog)s {e2e_grec.__version__}")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  for name, command in COMMANDS.items():
    command_parser = sub.add_parser(name, help=command.help, description=command.help)
    command_parser.add_argument("--config", help="YAML config file (see configs/).")
    command_parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="Override one config value, e.g. --set model.mode=no_graph.")
    command.add_arguments(command_parser)
  return parser


def log_dir() -> str:
  return os.environ.get(LOG_DIR_ENV) or os.path.join(tempfile.gettempdir(), "e2e-grec-logs")


def _log_file(command: str) -> str:
  os.makedirs(log_dir(), exist_ok=True)
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  return os.path.join(log_dir(), f"{command}-{stamp}-{os.getpid()}.log")


def _start_logging(log_file: str) -> logging.Handler:
  """INFO to the console and `log_file`; returns the file's handler."""
  file_handler = logging.FileHandler(log_file)
  file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      datefmt="%H:%M:%S")
  logging.getLogger().addHandler(file_handler)
  return file_handler


def _resolve_config(args: argparse.Namespace) -> config_lib.Config:
  """`--config`, then `--set`, then the flags that stand for config keys."""
  config = config_lib.load(args.config, args.set)
  given = {key: getattr(args, dest) for dest, key in (getattr(args, "config_flags", None)
                                                      or {}).items()
           if getattr(args, dest) is not None}
  return config.replace(**given) if given else config


def _fail(command: str, log_file: str, message: str, code: int = 1) -> int:
  """Prints one line for the user; the log keeps the traceback."""
  with open(log_file, "a") as f:
    f.write(traceback.format_exc())
  print(f"e2e-grec {command}: error: {message} (details: {log_file})", file=sys.stderr)
  return code


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  beam_args: list[str] = []
  if "--" in argv:
    argv, beam_args = argv[:argv.index("--")], argv[argv.index("--") + 1:]
  parser = build_parser()
  args = parser.parse_args(argv)  # unknown flags: usage and a message, exit 2
  if beam_args and args.command not in BEAM_COMMANDS:
    parser.error(f"{args.command} takes no arguments after `--` (only "
                 f"{', '.join(BEAM_COMMANDS)} passes them to Beam)")
  args.beam_args = beam_args
  log_file = _log_file(args.command)
  file_handler = _start_logging(log_file)
  try:
    config = _resolve_config(args)
    module_name, function_name = COMMANDS[args.command].target.split(":")
    command = getattr(importlib.import_module(module_name), function_name)
    return int(command(args, config) or 0)
  except KeyboardInterrupt:
    return _fail(args.command, log_file, "interrupted", 130)
  except (ValueError, OSError) as error:  # ConfigError, DataError, missing files, ...
    return _fail(args.command, log_file, " ".join(str(error).split()) or type(error).__name__)
  except Exception as error:  # a bug: still one line here, the traceback in the log
    return _fail(args.command, log_file, f"unexpected {type(error).__name__}: {error}")
  finally:
    logging.getLogger().removeHandler(file_handler)
    file_handler.close()


if __name__ == "__main__":
  sys.exit(main())
