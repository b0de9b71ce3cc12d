"""`e2e-grec run`: the whole pipeline on this machine (LocalDagRunner, MLMD in SQLite).

The console shows one line when each component starts and one when it ends
(ran or cached, with its wall time), read from the executions in MLMD, then the
metrics table and where everything is. TFX's and Beam's own logging goes to
`<root>/logs/run-*.log`. Reruns reuse TFX's cache: a run killed midway reruns
only what did not finish, and the executions it left RUNNING are marked
abandoned. One run at a time per root: a second one stops at once (`run.lock`).

`--refresh-from RUN_OR_ROOT` runs the graph refresh pipeline instead
(pipeline/graph_refresh.py): the trained model of a training run directory, or
the newest Trainer's of a pipeline root, served on a graph of newer logs.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import fcntl
import logging
import os
import sys
import threading
import traceback
from typing import Any, Iterator, TextIO

from absl import logging as absl_logging
from ml_metadata.proto import metadata_store_pb2
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.compiler import constants as compiler_constants
from tfx.dsl.components.common import resolver
from tfx.orchestration import metadata
from tfx.orchestration.local import local_dag_runner

from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.config import Config
from e2e_grec.pipeline import graph_refresh
from e2e_grec.pipeline import pipeline as pipeline_lib

METADATA_FILE = "metadata.sqlite"
# Longer errors (Keras call traces) are cut on the console; the log has them whole.
MAX_ERROR_LINES = 30
LOCK_FILE = "run.lock"
# Custom property set on executions found RUNNING with no live run to own them.
ABANDONED_PROPERTY = "abandoned_reason"
# Loggers whose INFO output is for the log file, not the console.
QUIET_LOGGERS = ("absl", "apache_beam", "tensorflow")

_STATE_NAMES = {
    metadata_store_pb2.Execution.COMPLETE: "ran",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "failed",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.CANCELED: "abandoned",
}


@dataclasses.dataclass
class NodeRun:
  """One component of this run, as its executions in MLMD show it."""
  node_id: str
  status: str = "pending"  # running | ran | cached | resolved | failed | interrupted
  seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class NodeExecution:
  """A component's latest execution in MLMD and its output artifacts."""
  node_id: str
  state: str  # ran | cached | failed | running | abandoned
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


class RootInUse(RuntimeError):
  """Another live `e2e-grec run` holds the pipeline root's lock."""


@contextlib.contextmanager
def root_lock(root: str) -> Iterator[None]:
  """Holds `<root>/run.lock` (with this pid in it) for the run, or raises RootInUse.

  An flock, so the kernel releases it when the holder dies, even by kill -9:
  a stale lock file never blocks a rerun.
  """
  path = os.path.join(root, LOCK_FILE)
  with open(path, "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "unknown"
      raise RootInUse(f"the pipeline root {root} is in use by another `e2e-grec run` "
                      f"(pid {holder}, lock {path}); wait for it to end or choose "
                      "another root") from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    try:
      yield
    finally:
      f.truncate(0)
      fcntl.flock(f, fcntl.LOCK_UN)


def _node_executions(store: Any, pipeline_name: str,
                     node_id: str) -> list[metadata_store_pb2.Execution]:
  context = store.get_context_by_type_and_name(
      compiler_constants.NODE_CONTEXT_TYPE_NAME, f"{pipeline_name}.{node_id}")
  return store.get_executions_by_context(context.id) if context else []


def abandon_dead_executions(metadata_path: str, pipeline_name: str,
                            node_ids: list[str], reason: str) -> list[str]:
  """Marks every RUNNING execution CANCELED (`abandoned_reason`); returns `node_id (id)`s.

  Called with the root's lock held, so no live run owns them: their process died.
  """
  if not os.path.exists(metadata_path):
    return []
  abandoned = []
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(metadata_path)) as m:
    for node_id in node_ids:
      for execution in _node_executions(m.store, pipeline_name, node_id):
        if execution.last_known_state == metadata_store_pb2.Execution.RUNNING:
          execution.last_known_state = metadata_store_pb2.Execution.CANCELED
          execution.custom_properties[ABANDONED_PROPERTY].string_value = reason
          m.store.put_executions([execution])
          abandoned.append(f"{node_id} (execution {execution.id})")
  return abandoned


class Progress:
  """Follows this run's executions in MLMD; one console line per component event.

  Polls the store from a thread (LocalDagRunner has no callbacks): an execution
  newer than those before the run that is RUNNING has started, one that is
  COMPLETE or CACHED has ended, and its MLMD timestamps give its wall time.
  """

  def __init__(self, metadata_path: str, pipeline_name: str, node_ids: list[str],
               resolver_ids: set[str], out: TextIO, poll_seconds: float = 1.0):
    self.nodes = {node_id: NodeRun(node_id) for node_id in node_ids}
    self._config = metadata.sqlite_metadata_connection_config(metadata_path)
    self._pipeline_name, self._resolvers = pipeline_name, resolver_ids
    self._out, self._width, self._poll_seconds = out, max(map(len, node_ids)), poll_seconds
    self._first_id = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

  def __enter__(self) -> "Progress":
    with metadata.Metadata(self._config) as m:
      self._first_id = max((e.id for e in m.store.get_executions()), default=0) + 1
    self._thread.start()
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self._stop.set()
    self._thread.join()
    self.poll()

  def _loop(self) -> None:
    while not self._stop.wait(self._poll_seconds):
      try:
        self.poll()
      except Exception:  # a busy SQLite store: the next tick reads it
        logging.getLogger("absl").debug("progress poll failed", exc_info=True)

  def poll(self) -> None:
    """Reads each component's newest execution of this run and reports changes."""
    with metadata.Metadata(self._config) as m:
      latest = {}
      for node_id in self.nodes:
        ours = [e for e in _node_executions(m.store, self._pipeline_name, node_id)
                if e.id >= self._first_id]
        if ours:
          latest[node_id] = max(ours, key=lambda e: e.id)
    for node_id, execution in latest.items():
      node = self.nodes[node_id]
      status = _STATE_NAMES.get(execution.last_known_state, "unknown")
      if status == node.status or node.status in ("failed", "interrupted"):
        continue
      if node.status == "pending" and status == "running":
        self._print(f"▶ {self._tag(node)}  started")
      node.status = status
      node.seconds = (execution.last_update_time_since_epoch
                      - execution.create_time_since_epoch) / 1000
      if status in ("ran", "cached"):
        self._print(f"✓ {self._tag(node)}  {status} in {node.seconds:.1f} s")

  def finish(self) -> None:
    """After a successful run: resolvers have no execution of their own."""
    for node_id in self._resolvers:
      self.nodes[node_id].status = "resolved"

  def fail(self, status: str = "failed") -> NodeRun | None:
    """Marks the component this run stopped in `status`; returns it.

    That is the one whose execution did not complete, or, when the launcher
    failed before registering one, the first that has none.
    """
    stopped = [n for n in self.nodes.values() if n.status in ("running", "failed")]
    stopped = stopped or [n for n in self.nodes.values()
                          if n.status == "pending" and n.node_id not in self._resolvers]
    if not stopped:
      return None
    node = stopped[0]
    node.status = status
    self._print(f"✗ {self._tag(node)}  {status} after {node.seconds:.1f} s")
    return node

  def _tag(self, node: NodeRun) -> str:
    return f"[{list(self.nodes).index(node.node_id) + 1:2d}/{len(self.nodes)}] " \
           f"{node.node_id:<{self._width}}"

  def _print(self, line: str) -> None:
    print(line, file=self._out, flush=True)


@contextlib.contextmanager
def _logging_to(log_file: str) -> Iterator[None]:
  """Routes TFX/Beam/TF logging to `log_file` instead of the console."""
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
      executions = _node_executions(store, pipeline_name, node_id)
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


def trained_run_dir(run_or_root: str) -> str:
  """The training run directory to refresh: `run_or_root` itself, or, for a
  pipeline root, the ModelRun of its newest Trainer execution."""
  metadata_path = os.path.join(run_or_root, METADATA_FILE)
  if not os.path.exists(metadata_path):
    if not os.path.exists(os.path.join(run_or_root, contracts.RUN_CONFIG_FILE)):
      raise FileNotFoundError(f"{run_or_root} is neither a training run directory (no "
                              f"{contracts.RUN_CONFIG_FILE}) nor a pipeline root (no "
                              f"{METADATA_FILE})")
    return os.path.abspath(run_or_root)
  name = config_lib.load(os.path.join(run_or_root, contracts.RUN_CONFIG_FILE)).pipeline.name
  trainer = latest_executions(metadata_path, name, ["Trainer"]).get("Trainer")
  if trainer is None or trainer.state not in ("ran", "cached"):
    raise FileNotFoundError(f"the pipeline root {run_or_root} has no completed Trainer "
                            f"execution of pipeline {name!r} to refresh")
  return trainer.uri("model_run")


def run(config: Config, out: TextIO = sys.stdout, refresh_from: str | None = None,
        through: str = "") -> RunResult:
  """Runs the pipeline at `config.pipeline.root`, or with `refresh_from` (a training
  run directory or pipeline root) the graph refresh pipeline through `through`;
  raises PipelineFailed naming the component, or RootInUse if another run holds
  the root."""
  root = os.path.abspath(config.pipeline.root)
  config = config.replace(**{"pipeline.root": root,
                             "pipeline.serving_dir": os.path.abspath(config.pipeline.serving_dir)})
  where = pipeline_lib.locations(config, root=root, serving_dir=config.pipeline.serving_dir,
                                 schema_file=pipeline_lib.default_schema_file(),
                                 metadata_path=os.path.join(root, METADATA_FILE))
  os.makedirs(os.path.join(root, "logs"), exist_ok=True)
  if refresh_from:
    pipeline = graph_refresh.create_pipeline(config, where, trained_run_dir(refresh_from),
                                             through)
  else:
    pipeline = pipeline_lib.create_pipeline(config, where)
  pipeline_name = pipeline.pipeline_info.pipeline_name
  node_ids = [c.id for c in pipeline.components]
  with root_lock(root):
    config.save(os.path.join(root, contracts.RUN_CONFIG_FILE))
    log_file = os.path.join(
        root, "logs", f"run-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.log")
    print(f"Running pipeline {pipeline_name!r} on "
          f"{'synthetic data' if where.synthetic else where.data_dir}\n"
          f"  root {root}\n  log  {log_file}", file=out, flush=True)
    abandoned = abandon_dead_executions(where.metadata_path, pipeline_name, node_ids,
                                        "its run died (found RUNNING by a later run)")
    if abandoned:
      print(f"  marked abandoned (their run died): {', '.join(abandoned)}", file=out)
    progress = Progress(where.metadata_path, pipeline_name, node_ids,
                        {c.id for c in pipeline.components
                         if isinstance(c, resolver.Resolver)}, out)
    with _logging_to(log_file):
      try:
        with progress:
          local_dag_runner.LocalDagRunner().run(pipeline)
      except Exception as error:  # the failed component and its error, for the user
        logging.getLogger("absl").error("pipeline failed:\n%s", traceback.format_exc())
        node = progress.fail()
        raise PipelineFailed(node.node_id if node else "the pipeline",
                             node.seconds if node else 0.0, log_file, error) from error
      except KeyboardInterrupt:
        progress.fail("interrupted")
        abandon_dead_executions(where.metadata_path, pipeline_name, node_ids, "interrupted")
        raise
    progress.finish()
  return RunResult(root=root, log_file=log_file,
                   serving_dir=os.path.join(where.serving_dir, config.serving.model_name),
                   nodes=list(progress.nodes.values()),
                   executions=latest_executions(where.metadata_path, pipeline_name, node_ids))


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
    blessing = evaluator.outputs["blessing"][0].custom_properties
    blessed = blessing[evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY].int_value
    message = blessing[evaluator_constants.ARTIFACT_PROPERTY_BLESSING_MESSAGE_KEY].string_value
    lines += ["", "Metrics (eval split):",
              _read(os.path.join(evaluator.uri("evaluation"), contracts.EVALUATION_TABLE_FILE)),
              f"{'BLESSED' if blessed else 'NOT BLESSED'}: {message}"]
  where = [("pipeline root (MLMD: metadata.sqlite)", result.root),
           ("resolved config", os.path.join(result.root, contracts.RUN_CONFIG_FILE)),
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
  """`e2e-grec run [--data DIR|synthetic] [--out ROOT] [--refresh-from RUN_OR_ROOT
  [--through YYYY-MM-DD]]` (--out is pipeline.root)."""
  if args.data:
    config = config.replace(**{"data.data_dir": "" if args.data == "synthetic"
                               else os.path.abspath(args.data)})
  data_dir = config.data.data_dir
  if data_dir and "://" not in data_dir and not os.path.isdir(data_dir):
    print(f"e2e-grec run: the data directory {data_dir} does not exist (give a directory "
          "in the KuaiRand-Pure layout, or --data synthetic)", file=sys.stderr)
    return 2
  try:
    result = run(config, refresh_from=args.refresh_from, through=args.through or "")
  except RootInUse as error:
    print(f"e2e-grec run: {error}", file=sys.stderr)
    return 1
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
