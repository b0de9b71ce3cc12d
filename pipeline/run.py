"""`e2e-grec run`: the whole pipeline on this machine (LocalDagRunner, MLMD in SQLite).

The console shows one line when each component starts and one when it ends
(ran or cached, with its wall time), then the metrics table and where
everything is. TFX's and Beam's own logging goes to `<root>/logs/run-*.log`.
Reruns reuse TFX's cache: a run killed midway reruns only what did not finish.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import sys
import time
import traceback
from typing import Any, Iterator, TextIO

from absl import logging as absl_logging
from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.compiler import constants as compiler_constants
from tfx.orchestration import metadata
from tfx.orchestration.local import local_dag_runner

from e2e_grec import contracts
from e2e_grec.config import Config
from e2e_grec.pipeline import pipeline as pipeline_lib

METADATA_FILE = "metadata.sqlite"
# Longer errors (Keras call traces) are cut on the console; the log has them whole.
MAX_ERROR_LINES = 30
CONFIG_FILE = "config.yaml"
# Loggers whose INFO output is for the log file, not the console.
QUIET_LOGGERS = ("absl", "apache_beam", "tensorflow")
# LocalDagRunner's and the launcher's log lines that mark a component's progress.
_STARTED = "Component %s is running."
_FINISHED = "Component %s is finished."
_CACHED = "A cached execution %d is used."
_EXECUTING = "Going to run a new execution %d"

_STATE_NAMES = {
    metadata_store_pb2.Execution.COMPLETE: "ran",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "failed",
    metadata_store_pb2.Execution.RUNNING: "running",
}


@dataclasses.dataclass
class NodeRun:
  """One component of this run as the console reported it."""
  node_id: str
  status: str = "pending"  # running | ran | cached | resolved | failed | interrupted
  seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class NodeExecution:
  """A component's latest execution in MLMD and its output artifacts."""
  node_id: str
  state: str  # ran | cached | failed | running
  outputs: dict[str, list[metadata_store_pb2.Artifact]]

  def uri(self, key: str) -> str:
    return self.outputs[key][0].uri


@dataclasses.dataclass(frozen=True)
class RunResult:
  root: str
  log_file: str
  serving_dir: str  # the Pusher's base directory: <serving_dir>/<model_name>/<version>
  nodes: list[NodeRun]
  executions: dict[str, NodeExecution]


class PipelineFailed(RuntimeError):
  """A component failed; `node_id` says which, `__cause__` what went wrong."""

  def __init__(self, node_id: str, seconds: float, log_file: str, error: BaseException):
    super().__init__(f"{node_id} failed after {seconds:.1f} s: "
                     f"{type(error).__name__}: {error}")
    self.node_id, self.seconds, self.log_file = node_id, seconds, log_file


class Progress(logging.Handler):
  """Turns LocalDagRunner's log lines into one console line per component event."""

  def __init__(self, node_ids: list[str], out: TextIO):
    super().__init__(logging.INFO)
    self.nodes = {node_id: NodeRun(node_id) for node_id in node_ids}
    self.current: NodeRun | None = None
    self._out, self._start, self._width = out, 0.0, max(map(len, node_ids))

  def _tag(self, node: NodeRun) -> str:
    return f"[{list(self.nodes).index(node.node_id) + 1:2d}/{len(self.nodes)}] " \
           f"{node.node_id:<{self._width}}"

  def emit(self, record: logging.LogRecord) -> None:
    if record.msg == _STARTED:
      self.current = self.nodes[record.args[0]]
      self.current.status, self._start = "running", time.time()
      self._print(f"▶ {self._tag(self.current)}  started")
    elif self.current is None:
      return
    elif record.msg == _CACHED:
      self.current.status = "cached"
    elif record.msg == _EXECUTING:
      self.current.status = "ran"
    elif record.msg == _FINISHED:
      node = self.current
      node.seconds = time.time() - self._start
      if node.status == "running":  # a resolver: no execution of its own
        node.status = "resolved"
      self._print(f"✓ {self._tag(node)}  {node.status} in {node.seconds:.1f} s")
      self.current = None

  def fail(self, status: str = "failed") -> NodeRun | None:
    """Marks the running component `status` (failed, interrupted); returns it."""
    node = self.current
    if node is not None:
      node.status, node.seconds = status, time.time() - self._start
      self._print(f"✗ {self._tag(node)}  {status} after {node.seconds:.1f} s")
    return node

  def _print(self, line: str) -> None:
    print(line, file=self._out, flush=True)


@contextlib.contextmanager
def _logging_to(log_file: str, progress: Progress) -> Iterator[None]:
  """Routes TFX/Beam/TF logging to `log_file`, TFX's progress lines to `progress`."""
  file_handler = logging.FileHandler(log_file)
  file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
  root = logging.getLogger()
  saved_root_level = root.level
  root.setLevel(logging.INFO)
  root.addHandler(file_handler)
  saved = {}
  for name in QUIET_LOGGERS:
    logger = logging.getLogger(name)
    saved[name] = (logger.propagate, logger.handlers)
    logger.propagate, logger.handlers = False, [file_handler]
  logging.getLogger("absl").addHandler(progress)
  # Through absl's flag, not the logger: TensorFlow code that parses absl flags
  # mid-run (SavedModel export does) resets the logger to the flag's level.
  saved_verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  try:
    yield
  finally:
    absl_logging.set_verbosity(saved_verbosity)
    for name, (propagate, handlers) in saved.items():
      logger = logging.getLogger(name)
      logger.propagate, logger.handlers = propagate, handlers
    root.removeHandler(file_handler)
    root.setLevel(saved_root_level)
    file_handler.close()


def latest_executions(metadata_path: str, pipeline_name: str,
                      node_ids: list[str]) -> dict[str, NodeExecution]:
  """Each component's newest execution in MLMD, with its output artifacts."""
  result = {}
  with metadata.Metadata(
      metadata.sqlite_metadata_connection_config(metadata_path)) as m:
    store = m.store
    for node_id in node_ids:
      context = store.get_context_by_type_and_name(
          compiler_constants.NODE_CONTEXT_TYPE_NAME, f"{pipeline_name}.{node_id}")
      executions = store.get_executions_by_context(context.id) if context else []
      if not executions:
        continue
      execution = max(executions, key=lambda e: e.id)
      events = [e for e in store.get_events_by_execution_ids([execution.id])
                if e.type in (metadata_store_pb2.Event.OUTPUT,
                              metadata_store_pb2.Event.DECLARED_OUTPUT)]
      artifacts = {a.id: a for a in store.get_artifacts_by_id(
          sorted({e.artifact_id for e in events}))}
      outputs: dict[str, list[metadata_store_pb2.Artifact]] = {}
      for event in events:
        outputs.setdefault(event.path.steps[0].key, []).append(artifacts[event.artifact_id])
      result[node_id] = NodeExecution(
          node_id, _STATE_NAMES.get(execution.last_known_state, "unknown"), outputs)
  return result


def run(config: Config, out: TextIO = sys.stdout) -> RunResult:
  """Runs the pipeline at `config.pipeline.root`; raises PipelineFailed naming the component."""
  root = os.path.abspath(config.pipeline.root)
  config = config.replace(**{"pipeline.root": root,
                             "pipeline.serving_dir": os.path.abspath(config.pipeline.serving_dir)})
  where = pipeline_lib.locations(config, root=root, serving_dir=config.pipeline.serving_dir,
                                 schema_file=pipeline_lib.default_schema_file(),
                                 metadata_path=os.path.join(root, METADATA_FILE))
  os.makedirs(os.path.join(root, "logs"), exist_ok=True)
  config.save(os.path.join(root, CONFIG_FILE))
  log_file = os.path.join(
      root, "logs", f"run-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.log")
  pipeline = pipeline_lib.create_pipeline(config, where)
  node_ids = [c.id for c in pipeline.components]
  print(f"Running pipeline {config.pipeline.name!r} on "
        f"{'synthetic data' if where.synthetic else where.data_dir}\n"
        f"  root {root}\n  log  {log_file}", file=out, flush=True)
  progress = Progress(node_ids, out)
  with _logging_to(log_file, progress):
    try:
      local_dag_runner.LocalDagRunner().run(pipeline)
    except Exception as error:  # the failed component and its error, for the user
      logging.getLogger("absl").error("pipeline failed:\n%s", traceback.format_exc())
      node = progress.fail()
      raise PipelineFailed(node.node_id if node else "the pipeline",
                           node.seconds if node else 0.0, log_file, error) from error
    except KeyboardInterrupt:
      progress.fail("interrupted")
      raise
  return RunResult(root=root, log_file=log_file,
                   serving_dir=os.path.join(where.serving_dir, config.serving.model_name),
                   nodes=list(progress.nodes.values()),
                   executions=latest_executions(where.metadata_path, config.pipeline.name,
                                                node_ids))


def latest_version(serving_dir: str) -> str | None:
  """The newest numeric version directory under `serving_dir`, as TF Serving picks it."""
  if not os.path.isdir(serving_dir):
    return None
  versions = [int(v) for v in os.listdir(serving_dir) if v.isdigit()]
  return os.path.join(serving_dir, str(max(versions))) if versions else None


def _read(uri: str) -> str:
  with open(uri) as f:
    return f.read()


def summary(result: RunResult) -> str:
  """The closing report: timings, metrics table, blessing, where things are."""
  lines = ["", "Components:"]
  lines += [f"  {n.node_id:<28} {n.status:<9} {n.seconds:8.1f} s" for n in result.nodes]
  lines.append(f"  {'total':<28} {'':<9} {sum(n.seconds for n in result.nodes):8.1f} s")
  executions = result.executions
  evaluator = executions.get("Evaluator")
  if evaluator:
    evaluation_dir = evaluator.uri("evaluation")
    report: dict[str, Any] = json.loads(
        _read(os.path.join(evaluation_dir, contracts.EVALUATION_METRICS_FILE)))
    lines += ["", "Metrics (eval split):",
              _read(os.path.join(evaluation_dir, contracts.EVALUATION_TABLE_FILE)),
              f"{'BLESSED' if report['blessed'] else 'NOT BLESSED'}: {report['message']}"]
  where = [("pipeline root (MLMD: metadata.sqlite)", result.root),
           ("resolved config", os.path.join(result.root, CONFIG_FILE)),
           ("log", result.log_file)]
  for node_id, key, label in (("ExampleGen", "examples", "examples"),
                              ("GraphBuilder", "graph", "graph"),
                              ("Trainer", "model", "model"),
                              ("BaselineTrainer", "model", "baseline model"),
                              ("Evaluator", "evaluation", "evaluation")):
    if node_id in executions and key in executions[node_id].outputs:
      where.append((label, executions[node_id].uri(key)))
  runs = {label: os.path.join(executions[n].uri("model_run"), "tensorboard")
          for n, label in (("Trainer", "model"), ("BaselineTrainer", "baseline"))
          if n in executions and "model_run" in executions[n].outputs}
  if runs:
    where.append(("TensorBoard", "tensorboard --logdir_spec="
                  + ",".join(f"{k}:{v}" for k, v in runs.items())))
  pusher = executions.get("Pusher")
  if pusher and "pushed_model" in pusher.outputs:
    pushed = pusher.outputs["pushed_model"][0].custom_properties
    if pushed.get("pushed") and pushed["pushed"].int_value:
      where.append(("pushed SavedModel", pushed["pushed_destination"].string_value))
    else:
      where.append(("pushed SavedModel", "none by this run (not blessed)"))
  latest = latest_version(result.serving_dir)
  if latest:
    where.append(("newest served version", latest))
  lines += ["", "Where:"] + [f"  {label:<38} {value}" for label, value in where]
  return "\n".join(lines)


def command(args: argparse.Namespace, config: Config) -> int:
  """`e2e-grec run [--data DIR|synthetic] [--root DIR]`."""
  overrides: dict[str, Any] = {}
  if args.data:
    overrides["data.data_dir"] = "" if args.data == "synthetic" else os.path.abspath(args.data)
  if args.root:
    overrides["pipeline.root"] = args.root
  config = config.replace(**overrides)
  data_dir = config.data.data_dir
  if data_dir and "://" not in data_dir and not os.path.isdir(data_dir):
    print(f"e2e-grec run: the data directory {data_dir} does not exist (give a directory "
          "in the KuaiRand-Pure layout, or --data synthetic)", file=sys.stderr)
    return 2
  try:
    result = run(config)
  except PipelineFailed as failure:
    lines = str(failure).splitlines()
    if len(lines) > MAX_ERROR_LINES:
      lines = lines[:MAX_ERROR_LINES] + [f"... ({len(lines) - MAX_ERROR_LINES} more lines "
                                         "in the log)"]
    message = "\n".join(lines)
    print(f"\nThe pipeline stopped: {message}\n"
          f"Full log with the traceback: {failure.log_file}\n"
          "Components that completed stay cached: rerun the same command after the fix.",
          file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("\nInterrupted. Components that completed stay cached: rerun the same command "
          "to continue.", file=sys.stderr)
    return 130
  print(summary(result))
  return 0
