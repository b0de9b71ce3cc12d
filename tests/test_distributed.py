"""Multi-worker training on 127.0.0.1: workers are subprocesses with their own TF_CONFIG.

Run as a script, this file is one task of such a cluster (see `_task_main`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf

from e2e_grec import config as config_lib
from e2e_grec.config import ConfigError
from e2e_grec.training import distribute

# One GNN round over 1-hop subgraphs and no dropout or GFAE masks: a batch's
# forward pass is then the same whether one process or two workers compute it.
_OVERRIDES = {"model.mode": "e2e", "model.gfae": False, "model.gnn_dropout": 0.0,
              "sampling.fanouts": [3], "model.gnn_layers": 1, "train.batch_size": 32,
              "train.epochs": 1, "train.gradnorm_every_steps": 1,
              "train.checkpoint_every_steps": 2, "train.log_every_steps": 1}
_TRAIN_EXAMPLES = 128  # 4 steps of 32
_TIMEOUT_S = 900  # Generous: a hang guard, not a speed check (shared CPUs).


def _config(**overrides) -> config_lib.Config:
  return config_lib.Config().replace(**{**_OVERRIDES, **overrides})


def _values(model) -> list[float]:
  """Every trainable value, in order: the same whether variables are whole or sharded
  (a sharded one is listed as its shards, consecutive row ranges, in order)."""
  return np.concatenate([v.numpy().ravel() for v in model.trainable_variables]).tolist()


def _sharded(*modules) -> dict[str, int]:
  """Name -> shard count of every ShardedVariable that `modules` hold (shard i of
  variable `name` is `name/part_i`)."""
  is_sharded = lambda v: isinstance(v, tf.__internal__.distribute.ShardedVariable)
  return {v.variables[0].name.split("/part_")[0]: len(v.variables) for m in modules
          for v in m._flatten(predicate=is_sharded)}  # pylint: disable=protected-access


class _ServingExport:
  """The serving SavedModel, as the TFX Trainer exports it."""

  def save(self, result, export_dir: str) -> None:
    from e2e_grec.serving import export
    export.export_saved_model(result.model, result.sampler, result.tables, result.config,
                              export_dir)


def _task_main(argv: list[str]) -> None:
  """examples graph out result.json overrides.json die_at: one task; writes its result."""
  examples, graph, out, result_path, overrides, die_at = argv
  config = _config(**json.loads(overrides))

  def on_step(step: int) -> None:
    if step == int(die_at):
      os._exit(3)  # Dies like a killed process: no cleanup, no final checkpoint.

  result = distribute.train(config, examples, graph, out, on_step=on_step,
                            model_exporters=[_ServingExport()], export_dir=out + "_export")
  if result is not None:
    model = result.model
    with open(result_path, "w") as f:
      json.dump({"loss_weights": model.balancer.loss_weights().numpy().tolist(),
                 "variables": _values(model),
                 "sharded": _sharded(result.tables, result.sampler, model)}, f)


def _launch(cluster: dict, task_type: str, index: int, args: list[str], log: str):
  env = dict(os.environ, TF_CONFIG=distribute.tf_config(cluster, task_type, index),
             PYTHONPATH=os.pathsep.join(sys.path), TF_USE_LEGACY_KERAS="1",
             TF_CPP_MIN_LOG_LEVEL="2")
  with open(log, "ab") as f:
    return subprocess.Popen([sys.executable, __file__, *args], env=env, stdout=f,
                            stderr=subprocess.STDOUT)


def _tail(log: str) -> str:
  with open(log, errors="replace") as f:
    return f.read()[-3000:]


@pytest.fixture(scope="module")
def toy_inputs(tmp_path_factory):
  import toy_data
  return toy_data.write_toy_run_inputs(str(tmp_path_factory.mktemp("toy")),
                                       train_examples=_TRAIN_EXAMPLES)


@pytest.fixture(scope="module")
def single_process(toy_inputs, tmp_path_factory):
  """The reference: the same run in one process."""
  from e2e_grec.training import run
  examples, graph = toy_inputs
  model = run.run(_config(), examples, graph, str(tmp_path_factory.mktemp("single"))).model
  return {"loss_weights": model.balancer.loss_weights().numpy().tolist(),
          "variables": _values(model)}


def _run_workers(toy_inputs, tmp_path, die_at: dict[int, int]) -> list[dict]:
  """2 MWMS workers to the end; returns each worker's result."""
  examples, graph = toy_inputs
  cluster = distribute.local_cluster(worker=2)
  overrides = json.dumps({"train.strategy": "multi_worker_mirrored"})
  results = [str(tmp_path / f"worker{i}.json") for i in range(2)]
  logs = [str(tmp_path / f"worker{i}.log") for i in range(2)]
  procs = [_launch(cluster, "worker", i,
                   [examples, graph, str(tmp_path / "run"), results[i], overrides,
                    str(die_at.get(i, -1))], logs[i]) for i in range(2)]
  try:
    for i in die_at:  # A worker dies: its peers stall or fail, the job restarts.
      assert procs[i].wait(timeout=_TIMEOUT_S) == 3, _tail(logs[i])
      return []
    for proc, log in zip(procs, logs):
      assert proc.wait(timeout=_TIMEOUT_S) == 0, _tail(log)
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  out = []
  for path in results:
    with open(path) as f:
      out.append(json.load(f))
  return out


def test_two_workers_match_one_process_and_resume_after_a_killed_worker(
    toy_inputs, single_process, tmp_path):
  assert _run_workers(toy_inputs, tmp_path, die_at={1: 3}) == []
  run_dir = tmp_path / "run"
  # The chief checkpointed step 2 before worker 1 died at step 3.
  assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith("-2")
  results = _run_workers(toy_inputs, tmp_path, die_at={})
  with open(run_dir / "train_log.jsonl") as f:
    steps = [r["step"] for r in map(json.loads, f) if "loss" in r]
  assert steps == [1, 2, 3, 3, 4]  # Resumed from the chief's step-2 checkpoint.
  assert not any(p.name.startswith("workertemp_") for p in run_dir.iterdir())
  chief, worker = results
  # GradNorm aggregated across replicas: the same weights on every worker...
  assert chief["loss_weights"] == worker["loss_weights"]
  assert chief["variables"] == worker["variables"]
  assert os.path.exists(tmp_path / "run_export" / "saved_model.pb")  # The chief exported.
  # ...and those of one process on the same global batches.
  np.testing.assert_allclose(chief["loss_weights"], single_process["loss_weights"],
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(chief["variables"], single_process["variables"],
                             rtol=1e-3, atol=1e-4)


def test_parameter_server_trains_on_sharded_tables_like_one_process_and_resumes(
    toy_inputs, tmp_path):
  from e2e_grec.training import run
  examples, graph = toy_inputs
  cluster = distribute.local_cluster(chief=1, worker=2, ps=2)
  # Small shards, so the toy tables are split over both PS tasks.
  overrides = json.dumps({"train.strategy": "parameter_server",
                          "train.ps_min_shard_bytes": 64})
  result = str(tmp_path / "chief.json")
  run_dir, one_process_dir = tmp_path / "run", tmp_path / "one_process"
  args = lambda die_at: [examples, graph, str(run_dir), result, overrides, str(die_at)]
  servers = [_launch(cluster, task, i, args(-1), str(tmp_path / f"{task}{i}.log"))
             for task in ("worker", "ps") for i in range(len(cluster[task]))]
  log = str(tmp_path / "chief.log")
  chief = _launch(cluster, "chief", 0, args(3), log)
  try:
    assert chief.wait(timeout=_TIMEOUT_S) == 3, _tail(log)  # Killed at step 3...
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith("-2")
    shutil.copytree(run_dir, one_process_dir)
    chief = _launch(cluster, "chief", 0, args(-1), log)  # ...restarted on the same cluster.
    assert chief.wait(timeout=_TIMEOUT_S) == 0, _tail(log)
  finally:
    for proc in [chief, *servers]:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  with open(result) as f:
    trained = json.load(f)
  with open(run_dir / "train_log.jsonl") as f:
    steps = [r["step"] for r in map(json.loads, f) if "loss" in r]
  assert steps == [1, 2, 3, 3, 4]  # Resumed from the step-2 checkpoint.
  sharded = trained["sharded"]
  assert {"edge_keys", "video_ids"} <= set(sharded), sharded  # Sampler and node tables.
  assert set(sharded.values()) == {2}
  # Sharded variables are initialised shard by shard, so one process cannot start
  # where the cluster started; it resumes the same step-2 checkpoint (restoring
  # the shards whole) and, one step at a time in batch order, trains the same.
  one_process_export = str(tmp_path / "one_process_export")
  model = run.run(_config(), examples, graph, str(one_process_dir),
                  model_exporters=[_ServingExport()], export_dir=one_process_export).model
  np.testing.assert_allclose(trained["loss_weights"],
                             model.balancer.loss_weights().numpy(), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(trained["variables"], _values(model), rtol=1e-3, atol=1e-4)
  # The chief's export (of sharded variables) serves here, in one process, alike.
  ids = lambda *values: tf.constant(values, tf.int64)
  request = dict(user_id=ids(100, 101, 100), video_ids=ids(100, 105, 10**9),
                 tab=ids(100, 101, 100), hour=ids(1, 2, 3), day=ids(19110, 19110, 19111))
  scores = [tf.saved_model.load(path).signatures["rank"](**request)
            for path in (str(tmp_path / "run_export"), one_process_export)]
  for task, expected in scores[1].items():
    np.testing.assert_allclose(scores[0][task], expected, rtol=1e-3, atol=1e-4, err_msg=task)


def _shard_in_three(next_creator, **kwargs):
  """A variable creator that splits a table as a 3-shard partitioner would ("div")."""
  value = np.asarray(kwargs["initial_value"])
  if value.ndim == 0 or len(value) < 3:
    return next_creator(**kwargs)
  return tf.__internal__.distribute.ShardedVariable(
      [next_creator(**dict(kwargs, initial_value=part, name=f"{kwargs['name']}/part_{i}"))
       for i, part in enumerate(np.array_split(value, 3))], name=kwargs["name"])


def test_sampling_and_lookups_against_sharded_tables_equal_whole_tables(toy_inputs):
  from e2e_grec.training import inputs
  examples, graph = toy_inputs
  config = _config(**{"sampling.fanouts": [3, 2], "model.gnn_layers": 2})
  tables = inputs.load_tables(examples)
  sampler = inputs.make_sampler(config, graph, tables)
  with tf.variable_creator_scope(_shard_in_three):
    sharded_tables = inputs.load_tables(examples)
    sharded_sampler = inputs.make_sampler(config, graph, sharded_tables)
  sharded = _sharded(sharded_tables, sharded_sampler)
  assert {"edge_keys", "edge_targets_tab", "row_starts", "video_ids", "video_dense"} <= set(
      sharded), sharded
  columns = inputs.load_split(examples, "train")
  users, videos, days = (tf.constant(columns[k][:32]) for k in ("user_id", "video_id", "day"))
  unseen = tf.constant([-5, 10**12], tf.int64)  # Out of vocabulary: index 0.
  for raw in (users, videos, unseen):
    np.testing.assert_array_equal(sharded_tables.lookup("video", raw), tables.lookup("video", raw))
  index = tables.lookup("video", videos)
  np.testing.assert_array_equal(sharded_tables.dense("video", index), tables.dense("video", index))
  flat = lambda graph: tf.nest.flatten(graph, expand_composites=True)
  for expected, got in zip(flat(sampler(users, videos, days)),
                           flat(sharded_sampler(users, videos, days))):
    np.testing.assert_array_equal(got, expected)


def test_strategy_needs_a_cluster_and_valid_tf_config(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ConfigError, match="train.strategy: multi_worker_mirrored needs"):
    distribute.make_strategy(_config(**{"train.strategy": "multi_worker_mirrored"}).train)
  monkeypatch.setenv("TF_CONFIG", "{not json")
  with pytest.raises(ConfigError, match="TF_CONFIG"):
    distribute.make_strategy(_config(**{"train.strategy": "parameter_server"}).train)
  with pytest.raises(ConfigError, match="train.strategy"):
    _config(**{"train.strategy": "horovod"})


def test_only_the_chief_writes_to_the_run_directory(monkeypatch, tmp_path):
  cluster = {"chief": ["h:1"], "worker": ["h:2", "h:3"], "ps": ["h:4"]}
  out = str(tmp_path)
  monkeypatch.setenv("TF_CONFIG", distribute.tf_config(cluster, "chief", 0))
  assert distribute.write_dir(out) == out
  monkeypatch.setenv("TF_CONFIG", distribute.tf_config(cluster, "worker", 0))
  temp = distribute.write_dir(out)
  assert temp == os.path.join(out, "workertemp_0") and distribute.chief_dir(temp) == out
  monkeypatch.setenv("TF_CONFIG", distribute.tf_config({"worker": ["h:1", "h:2"]},
                                                       "worker", 0))
  assert distribute.write_dir(out) == out  # Without a chief task, worker 0 is the chief.


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  _task_main(sys.argv[1:])
