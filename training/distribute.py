"""Training on TensorFlow's distributed runtime: `train.strategy` and TF_CONFIG.

    train(config, examples_dir, graph_dir, out_dir) -> RunResult

runs `training.run.run` under the strategy `train.strategy` names, in every
process of a cluster that the `TF_CONFIG` environment variable describes
(TensorFlow's format, set by Kubeflow's TFJob; `tf_config` writes it):

- `default`: one process, no TF_CONFIG needed.
- `multi_worker_mirrored` (`tf.distribute.MultiWorkerMirroredStrategy`):
  synchronous data parallelism. Every worker holds the model, node tables and
  sampler tables (replicated), takes its rows of every global batch
  (`Inputs.train(shard=...)`) and samples their subgraphs; gradients and the
  GradNorm statistics are all-reduced (`E2EGRec.train_step`).
- `parameter_server` (`tf.distribute.ParameterServerStrategy`): every
  variable lives on the PS tasks. A `MinSizePartitioner` splits each one of at
  least 2 x `train.ps_min_shard_bytes` (node tables, the sampler's CSR
  tables, id embeddings, their optimizer slots) into a `ShardedVariable` of
  consecutive row ranges, one shard of at least that size per PS task up to
  all of them; smaller ones stay whole, round robin. Lookups into the tables
  go through `datasets/table_lookup.py` (per-shard gathers and searches on the
  PS tasks; Keras `Embedding` layers use `tf.nn.embedding_lookup`, which does
  the same), so no worker ever holds a whole sharded table. Checkpoints store
  a sharded variable as slices of one tensor, which a single process restores
  whole.
  The chief runs the loop and schedules each step on a worker with a
  `ClusterCoordinator`; the worker samples the batch's subgraphs against the
  PS-held tables and trains. Steps run one at a time, so training equals one
  process's (no asynchronous speed-up yet). A killed worker's step is retried
  on another worker by the coordinator; a killed chief (or PS task) is
  restarted and resumes from the last checkpoint.
  Worker and PS processes only serve (`train` does not return).

Chief-only writing follows TensorFlow's multi-worker guide: the chief writes to
`out_dir`, every other worker to `out_dir/workertemp_<i>` (deleted when it
finishes), and all of them restore the chief's checkpoints.
"""
from __future__ import annotations

import json
import os
import shutil
import socket

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import tensorflow as tf

from e2e_grec.config import Config, ConfigError, TrainConfig

_WORKER_TEMP = "workertemp_"


def tf_config(cluster: dict[str, list[str]], task_type: str, task_index: int) -> str:
  """The TF_CONFIG value of one task, e.g. {"worker": ["host:port", ...]}, "worker", 0."""
  if task_type not in cluster or not 0 <= task_index < len(cluster[task_type]):
    raise ValueError(f"task {task_type}:{task_index} is not in the cluster {cluster}")
  return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": task_index}})


def local_cluster(**tasks: int) -> dict[str, list[str]]:
  """A cluster spec of `tasks` (e.g. worker=2, ps=1) on free ports of 127.0.0.1."""
  sockets = [socket.socket() for _ in range(sum(tasks.values()))]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  addresses = iter([f"127.0.0.1:{s.getsockname()[1]}" for s in sockets])
  for s in sockets:
    s.close()
  return {task: [next(addresses) for _ in range(n)] for task, n in tasks.items()}


def _task() -> tuple[str | None, int]:
  """(task type, index) from TF_CONFIG; (None, 0) without a cluster."""
  text = os.environ.get("TF_CONFIG", "")
  if not text:
    return None, 0
  try:
    task = json.loads(text).get("task", {})
    return task.get("type"), int(task.get("index", 0))
  except (ValueError, AttributeError) as error:
    raise ConfigError(f"TF_CONFIG: not a JSON object with a 'task' "
                      f"{{'type', 'index'}}: {error}") from None


def is_chief() -> bool:
  """Whether this process writes the run's outputs: the chief, else worker 0."""
  task_type, index = _task()
  if task_type is None or task_type == "chief":
    return True
  cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
  return task_type == "worker" and index == 0 and "chief" not in cluster


def write_dir(out_dir: str) -> str:
  """Where this process writes: `out_dir` on the chief, a temp dir inside it elsewhere."""
  return out_dir if is_chief() else os.path.join(out_dir, f"{_WORKER_TEMP}{_task()[1]}")


def chief_dir(directory: str) -> str:
  """The chief's directory of `write_dir`'s result (restore reads the chief's checkpoints)."""
  if os.path.basename(os.path.normpath(directory)).startswith(_WORKER_TEMP):
    return os.path.dirname(os.path.normpath(directory))
  return directory


def make_strategy(train: TrainConfig) -> tf.distribute.Strategy:
  """The strategy `train.strategy` names; the cluster comes from TF_CONFIG."""
  name = train.strategy
  if name == "default":
    return tf.distribute.get_strategy()
  if not os.environ.get("TF_CONFIG"):
    raise ConfigError(f"train.strategy: {name} needs the cluster in the TF_CONFIG "
                      "environment variable (see kubeflow/README.md)")
  _task()  # Fails on a malformed TF_CONFIG with a clear message.
  if name == "multi_worker_mirrored":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "parameter_server":
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    tasks = resolver.cluster_spec().as_dict()
    if not tasks.get("ps") or not tasks.get("chief"):
      raise ConfigError(f"TF_CONFIG: train.strategy=parameter_server needs a 'chief' and "
                        f"at least one 'ps' task, got {sorted(tasks)}")
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=train.ps_min_shard_bytes, max_shards=len(tasks["ps"]))
    return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
  raise ConfigError(f"train.strategy: unknown strategy {name!r}")


def _serve_until_stopped() -> None:
  """A parameter_server worker or PS task: serves the chief's requests (TF's recipe)."""
  task_type, index = _task()
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  tf.distribute.Server(resolver.cluster_spec(), job_name=task_type, task_index=index,
                       protocol=resolver.rpc_layer or "grpc", start=True).join()


def train(config: Config, examples_dir: str, graph_dir: str | None, out_dir: str,
          **run_kwargs):
  """`training.run.run` (same arguments) in this process's role of the cluster.

  Returns the `RunResult` on the chief and on MWMS workers; parameter_server
  worker and PS tasks serve until they are stopped and never return.
  """
  from e2e_grec.training import run as run_lib  # run -> loop -> this module.
  name = config.train.strategy
  if name == "parameter_server" and _task()[0] in ("worker", "ps"):
    _serve_until_stopped()
  strategy = make_strategy(config.train)
  directory = write_dir(out_dir)
  if directory != out_dir:  # Only the chief exports.
    run_kwargs = {k: v for k, v in run_kwargs.items()
                  if k not in ("model_exporters", "export_dir")}
  with strategy.scope():
    result = run_lib.run(config, examples_dir, graph_dir, directory, **run_kwargs)
  if directory != out_dir:
    shutil.rmtree(directory, ignore_errors=True)
  return result
