"""Multi-worker training on 127.0.0.1: workers are subprocesses with their own TF_CONFIG.

Run as a script, this file is one task of such a cluster (see `_task_main`).
"""
from __future__ import annotations

import json
import os
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


def _first_values(model) -> list[list[float]]:
  """The first values of every trainable variable, in order (names vary by process)."""
  return [tf.convert_to_tensor(v).numpy().ravel()[:64].tolist()
          for v in model.trainable_variables]


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
                 "variables": _first_values(model)}, f)


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
          "variables": _first_values(model)}


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
  assert len(chief["variables"]) == len(single_process["variables"])
  for i, (values, expected) in enumerate(zip(chief["variables"], single_process["variables"])):
    np.testing.assert_allclose(values, expected, rtol=1e-3, atol=1e-4, err_msg=f"variable {i}")


def test_parameter_server_trains_on_ps_held_tables_like_one_process(
    toy_inputs, single_process, tmp_path):
  examples, graph = toy_inputs
  cluster = distribute.local_cluster(chief=1, worker=2, ps=2)
  overrides = json.dumps({"train.strategy": "parameter_server"})
  result = str(tmp_path / "chief.json")
  args = [examples, graph, str(tmp_path / "run"), result, overrides, "-1"]
  servers = [_launch(cluster, task, i, args, str(tmp_path / f"{task}{i}.log"))
             for task in ("worker", "ps") for i in range(len(cluster[task]))]
  log = str(tmp_path / "chief.log")
  chief = _launch(cluster, "chief", 0, args, log)
  try:
    assert chief.wait(timeout=_TIMEOUT_S) == 0, _tail(log)
  finally:
    for proc in [chief, *servers]:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  with open(result) as f:
    trained = json.load(f)
  assert os.path.exists(tmp_path / "run" / "checkpoints" / "checkpoint")
  assert os.path.exists(tmp_path / "run_export" / "saved_model.pb")
  # The chief runs one step at a time, in batch order: the same training as one process.
  np.testing.assert_allclose(trained["loss_weights"], single_process["loss_weights"],
                             rtol=1e-4, atol=1e-5)
  for i, (values, expected) in enumerate(zip(trained["variables"],
                                             single_process["variables"])):
    np.testing.assert_allclose(values, expected, rtol=1e-3, atol=1e-4, err_msg=f"variable {i}")


def test_strategy_needs_a_cluster_and_valid_tf_config(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ConfigError, match="train.strategy: multi_worker_mirrored needs"):
    distribute.make_strategy("multi_worker_mirrored")
  monkeypatch.setenv("TF_CONFIG", "{not json")
  with pytest.raises(ConfigError, match="TF_CONFIG"):
    distribute.make_strategy("parameter_server")
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
